package authn_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/authn"
)

// BenchmarkLogin measures /login end to end (middleware, store, Argon2id with production's
// default parameters m=64 MiB t=3 p=4, token signing) with ARGON2_MAX_CONCURRENT and the
// queue bounds at their defaults, at concurrency 1, 8 and 64. Each level runs a fixed
// batch of 64 logins of 64 different accounts and reports:
//
//	p50-ms, p99-ms  latency of the logins that succeeded
//	overloaded      logins answered 503 overloaded (the queue was full or the wait too long)
//	base-MiB        the heap in use after a GC before the batch (the baseline)
//	peak-MiB        the highest heap in use seen while the batch ran (sampled every ms)
//	budget-MiB      MaxConcurrent × 64 MiB, what the semaphore lets Argon2 hold at once
//
// The semaphore's point shows in peak-MiB: it stays near budget-MiB plus the baseline
// and the garbage of finished hashes awaiting a GC (with GOGC=100 up to about as much again
// as is live), at concurrency 64 as at 8, instead of growing by 64 MiB per caller (4 GiB at
// 64); the callers beyond the queue get 503.
func BenchmarkLogin(b *testing.B) {
	e := newEnv(b, func(c *config) {
		c.backend = "sqlite"
		c.defaultParams = true
		c.limits = authn.Limits{} // every limit off: this measures hashing, not rate limiting
	})
	const logins = 64
	// 64 accounts sharing one hash, made once. (Parallel logins of a single account would
	// meet the lockout's reservations, which is not what this measures.)
	e.register("bench0@example.com", pw)
	u0 := e.user("bench0@example.com")
	for i := 1; i < logins; i++ {
		u := u0
		u.ID = uuid.Must(uuid.NewV7()).String()
		u.SecurityStamp = uuid.Must(uuid.NewV7()).String()
		u.Email = fmt.Sprintf("bench%d@example.com", i)
		if err := e.st.CreateUser(context.Background(), u); err != nil {
			b.Fatal(err)
		}
	}
	budget := float64(e.hasher.MaxConcurrent() * 64)

	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", c), func(b *testing.B) {
			var ok []time.Duration
			var overloaded, other int
			var base, peak uint64
			// The batch is fixed; b.N stays 1 unless a batch takes less than -benchtime.
			for range b.N {
				res := loginBatch(e, c, logins)
				ok = append(ok, res.ok...)
				overloaded += res.overloaded
				other += res.other
				peak = max(peak, res.peak)
				base = max(base, res.base)
			}
			if other > 0 {
				b.Fatalf("%d logins neither succeeded nor were refused as overloaded", other)
			}
			if len(ok) == 0 {
				b.Fatal("no login succeeded")
			}
			slices.Sort(ok)
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(ms(ok[len(ok)/2]), "p50-ms")
			b.ReportMetric(ms(ok[(len(ok)*99+99)/100-1]), "p99-ms")
			b.ReportMetric(float64(overloaded)/float64(b.N), "overloaded")
			b.ReportMetric(float64(base)/(1<<20), "base-MiB")
			b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
			b.ReportMetric(budget, "budget-MiB")
		})
	}
}

type batchResult struct {
	ok                []time.Duration
	overloaded, other int
	base, peak        uint64
}

// loginBatch logs in accounts bench0 … bench{n-1} with c workers and samples the heap.
func loginBatch(e *env, c, n int) batchResult {
	runtime.GC()
	var res batchResult
	var mu sync.Mutex
	var peak atomic.Uint64
	res.base = heapInUse()
	peak.Store(res.base)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if h := heapInUse(); h > peak.Load() {
					peak.Store(h)
				}
			}
		}
	}()

	next := atomic.Int32{}
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				start := time.Now()
				r := e.post("/login", map[string]string{"email": fmt.Sprintf("bench%d@example.com", i), "password": pw})
				d := time.Since(start)
				mu.Lock()
				switch r.Code {
				case http.StatusOK:
					res.ok = append(res.ok, d)
				case http.StatusServiceUnavailable:
					res.overloaded++
				default:
					res.other++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	res.peak = max(peak.Load(), heapInUse())
	return res
}

// heapInUse is the runtime's HeapInuse (heap spans in use), read without stopping the world.
func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}
