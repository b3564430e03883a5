package ratelimit_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/testenv"
)

// fakeClock is a clock tests move by hand.
type fakeClock = testenv.Clock

func newFakeClock() *fakeClock { return testenv.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

func newMemory(t testing.TB, opts ratelimit.MemoryOptions) *ratelimit.Memory {
	t.Helper()
	m, err := ratelimit.NewMemory(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMemory(t *testing.T) {
	runSuite(t, func(t *testing.T) harness {
		clock := newFakeClock()
		m := newMemory(t, ratelimit.MemoryOptions{Now: clock.Now, Registerer: prometheus.NewRegistry()})
		return harness{limiter: m, advance: clock.Add}
	})
}

func TestMemoryEvictsIdleBuckets(t *testing.T) {
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	m := newMemory(t, ratelimit.MemoryOptions{Now: clock.Now, Registerer: reg})
	for i := range 1000 {
		take(t, m, "c", strconv.Itoa(i), refill)
	}
	if n := m.Len(); n != 1000 {
		t.Fatalf("Len = %d, want 1000", n)
	}
	clock.Add(time.Minute + refill.Period) // every bucket full again, and a sweep due
	for i := range 1000 {
		take(t, m, "d", strconv.Itoa(i), hour) // touches every shard, so each sweeps
	}
	if n := m.Len(); n != 1000 {
		t.Fatalf("Len after the idle buckets' sweep = %d, want only the 1000 new ones", n)
	}
	if got := counterValue(t, reg, "authd_ratelimit_memory_evictions_total", map[string]string{"reason": "idle"}); got != 1000 {
		t.Fatalf("idle evictions = %v, want 1000", got)
	}
	if got := gaugeValue(t, reg, "authd_ratelimit_memory_buckets"); got != 1000 {
		t.Fatalf("buckets gauge = %v, want 1000", got)
	}
}

func TestMemoryStaysWithinMaxBuckets(t *testing.T) {
	clock := newFakeClock()
	for _, max := range []int{1, 10, 1000, 5000} {
		m := newMemory(t, ratelimit.MemoryOptions{Now: clock.Now, MaxBuckets: max})
		for i := range 3 * max {
			take(t, m, "c", strconv.Itoa(i), hour)
		}
		if n := m.Len(); n > max {
			t.Fatalf("MaxBuckets %d: Len = %d", max, n)
		}
	}
}

func TestMemoryCapacityEvictionPrefersBucketsNearlyFull(t *testing.T) {
	clock := newFakeClock()
	m := newMemory(t, ratelimit.MemoryOptions{Now: clock.Now, MaxBuckets: 2})
	slow := ratelimit.Limit{Burst: 1, Period: time.Hour}
	take(t, m, "c", "drained-for-an-hour", slow)
	take(t, m, "c", "full-in-a-second", ratelimit.Limit{Burst: 1, Period: time.Second})
	take(t, m, "c", "newcomer", slow) // the shard is full: one must go
	if res := take(t, m, "c", "drained-for-an-hour", slow); res.Allowed {
		t.Fatal("the bucket still refilling for an hour was evicted instead of the one full in a second")
	}
}

func TestMemoryClockGoingBackGrantsNothing(t *testing.T) {
	clock := newFakeClock()
	m := newMemory(t, ratelimit.MemoryOptions{Now: clock.Now})
	drain(t, m, "c", "id", refill)
	clock.Add(-time.Hour)
	if res := take(t, m, "c", "id", refill); res.Allowed {
		t.Fatal("a clock stepping back refilled the bucket")
	}
	clock.Add(time.Hour + refill.Period)
	drain(t, m, "c", "id", refill)
}

func TestNewMemoryRefusesNegativeMax(t *testing.T) {
	if _, err := ratelimit.NewMemory(ratelimit.MemoryOptions{MaxBuckets: -1}); err == nil {
		t.Fatal("NewMemory accepted MaxBuckets -1")
	}
}

func TestMetricsShareOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 {
		m := newMemory(t, ratelimit.MemoryOptions{Registerer: reg})
		if _, err := ratelimit.NewGuard(m, ratelimit.GuardOptions{Registerer: reg}); err != nil {
			t.Fatalf("a second guard on one registry: %v", err)
		}
	}
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
