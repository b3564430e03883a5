package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxBuckets bounds the in-process limiter when MemoryOptions.MaxBuckets is zero:
// about 20 MB of buckets.
const DefaultMaxBuckets = 100_000

// sweepEvery is how often (by the injected clock) each shard drops its idle buckets.
const sweepEvery = time.Minute

// evictSample is how many buckets a full shard looks at to choose one to drop.
const evictSample = 8

// MemoryOptions configures NewMemory.
type MemoryOptions struct {
	// Now is the clock (time.Now if nil); tests pass a fake one to refill without sleeping.
	Now func() time.Time
	// MaxBuckets bounds how many buckets are kept (DefaultMaxBuckets if 0).
	MaxBuckets int
	// Registerer gets the in-process limiter's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Memory is a Limiter whose buckets live in this process: correct for one replica only.
// It is safe for concurrent use.
//
// Memory is bounded. A bucket that would be full again is the same as no bucket, so idle
// buckets are dropped (each shard sweeps them once a minute) without changing any answer.
// When MaxBuckets live buckets are all still refilling, making room for a new one drops,
// of a few sampled, the one that will be full soonest: that hands its owner some tokens
// early, the price of a bound on memory.
type Memory struct {
	now       func() time.Time
	seed      maphash.Seed
	shards    []memShard
	perShard  int
	evictions *prometheus.CounterVec
}

type memShard struct {
	mu        sync.Mutex
	buckets   map[string]*memBucket
	lastSweep time.Time
}

type memBucket struct {
	tokens float64
	ts     time.Time // when tokens was computed
	full   time.Time // when the bucket is full again, and so idle
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an in-process limiter.
func NewMemory(opts MemoryOptions) (*Memory, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBuckets < 0 {
		return nil, fmt.Errorf("ratelimit: negative MaxBuckets %d", opts.MaxBuckets)
	}
	if opts.MaxBuckets == 0 {
		opts.MaxBuckets = DefaultMaxBuckets
	}
	n := 1
	for n < 64 && opts.MaxBuckets/(n*2) >= 256 {
		n *= 2
	}
	m := &Memory{
		now:      opts.Now,
		seed:     maphash.MakeSeed(),
		shards:   make([]memShard, n),
		perShard: opts.MaxBuckets / n,
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_ratelimit_memory_evictions_total",
			Help: "Buckets the in-process limiter dropped: idle (full again, no effect) or capacity (still refilling, at MaxBuckets).",
		}, []string{"reason"}),
	}
	for i := range m.shards {
		m.shards[i].buckets = make(map[string]*memBucket)
	}
	var err error
	if m.evictions, err = register(opts.Registerer, m.evictions); err != nil {
		return nil, err
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "authd_ratelimit_memory_buckets",
		Help: "Buckets the in-process limiter holds.",
	}, func() float64 { return float64(m.Len()) })
	if _, err = register(opts.Registerer, gauge); err != nil {
		return nil, err
	}
	return m, nil
}

// Len is the number of buckets held.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

// Take implements Limiter.
func (m *Memory) Take(ctx context.Context, class, id string, l Limit) (Result, error) {
	_, res, err := m.TakeN(ctx, class, id, l, 1)
	return res, err
}

// TakeN implements Reserver.
func (m *Memory) TakeN(_ context.Context, class, id string, l Limit, n int) (int, Result, error) {
	if err := checkTakeN(class, l, n); err != nil {
		return 0, Result{}, err
	}
	if l.Off() {
		return n, Result{Allowed: true}, nil
	}
	key := class + ":" + bucketID(id)
	s := &m.shards[maphash.String(m.seed, key)%uint64(len(m.shards))]
	burst, period := float64(l.Burst), float64(l.Period)

	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.now()
	if now.Sub(s.lastSweep) >= sweepEvery || now.Before(s.lastSweep) {
		m.sweep(s, now)
	}
	tokens := burst
	b := s.buckets[key]
	if b != nil {
		elapsed := max(now.Sub(b.ts), 0)
		tokens = min(b.tokens+float64(elapsed)*burst/period, burst)
	}
	if tokens < 1 {
		return 0, Result{
			RetryAfter: ceilDuration((1 - tokens) * period / burst),
			Reset:      ceilDuration((burst - tokens) * period / burst),
		}, nil
	}
	got := min(n, int(math.Floor(tokens)))
	tokens -= float64(got)
	reset := ceilDuration((burst - tokens) * period / burst)
	if b == nil {
		if len(s.buckets) >= m.perShard {
			m.makeRoom(s, now)
		}
		b = &memBucket{}
		s.buckets[key] = b
	}
	b.tokens, b.ts, b.full = tokens, now, now.Add(reset)
	return got, Result{Allowed: true, Remaining: int(math.Floor(tokens)), Reset: reset}, nil
}

// sweep drops s's idle buckets. s.mu is held.
func (m *Memory) sweep(s *memShard, now time.Time) {
	s.lastSweep = now
	n := 0
	for k, b := range s.buckets {
		if !now.Before(b.full) {
			delete(s.buckets, k)
			n++
		}
	}
	if n > 0 {
		m.evictions.WithLabelValues("idle").Add(float64(n))
	}
}

// makeRoom frees one place in a full shard: the idle buckets if there are any, else the
// sampled bucket that will be full soonest. s.mu is held.
func (m *Memory) makeRoom(s *memShard, now time.Time) {
	m.sweep(s, now)
	if len(s.buckets) < m.perShard {
		return
	}
	var victim string
	var soonest time.Time
	seen := 0
	for k, b := range s.buckets { // map order is random: a sample
		if seen == 0 || b.full.Before(soonest) {
			victim, soonest = k, b.full
		}
		if seen++; seen == evictSample {
			break
		}
	}
	delete(s.buckets, victim)
	m.evictions.WithLabelValues("capacity").Inc()
}

// ceilDuration rounds nanoseconds up to a Duration.
func ceilDuration(ns float64) time.Duration {
	return time.Duration(math.Ceil(ns))
}
