package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of LeaseOptions.
const (
	// DefaultMaxLease bounds the tokens a replica holds for one bucket.
	DefaultMaxLease = 64
	// DefaultLeaseTTL is how long tokens held by a replica stay usable.
	DefaultLeaseTTL = time.Second
	// leaseShare is the part of a bucket one lease may hold at most: a tenth.
	leaseShare = 10
	// DefaultMaxLeases bounds the buckets a Leases keeps state for.
	DefaultMaxLeases = 100_000
)

// leaseShards spread the buckets over locks.
const leaseShards = 64

// LeaseOptions configures NewLeases.
type LeaseOptions struct {
	// MaxLease bounds the tokens taken from the shared bucket at once, and so held by
	// this replica (DefaultMaxLease if 0). A lease is also at most a tenth of the bucket's
	// burst. 1 takes one token per request: the shared bucket is exact, and only refusals
	// are remembered.
	MaxLease int
	// TTL is how long held tokens stay usable (DefaultLeaseTTL if 0); those not handed out
	// by then are dropped.
	TTL time.Duration
	// MaxBuckets bounds the buckets state is kept for (DefaultMaxLeases if 0).
	MaxBuckets int
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Registerer gets the lease metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Leases is a Limiter for the check path, which takes a token on every request a proxy
// forwards: it takes tokens from a shared Reserver (Redis) several at a time and hands
// them out from this process, so most checks do not wait on Redis; and it remembers a
// refusal until its Retry-After, so a client over its limit costs Redis nothing either.
// It is safe for concurrent use.
//
// What stays exact, on any number of replicas: no bucket hands out more tokens than it
// holds, since every token handed out here was first taken from the shared bucket; and a
// remembered refusal is one the shared bucket would repeat, since tokens only come back
// with time and Retry-After is when the first one does.
//
// What it trades: tokens taken but not handed out within TTL are dropped, not returned. A
// lease starts at one token and doubles only while each is used up within TTL (it halves
// when one expires unused), it is at most MaxLease and a tenth of the burst, and never
// more than the bucket holds; so a client whose requests spread over R replicas may be
// refused at most R × that many requests early while at its limit, and a client well
// under its limit meets no difference. Result.Remaining of a take served from the
// reserve counts the tokens this replica still holds for the bucket, not the bucket's.
type Leases struct {
	src      Reserver
	max      int
	ttl      int64 // ns
	now      func() time.Time
	seed     maphash.Seed
	perShard int
	shards   [leaseShards]leaseShard
	takes    *prometheus.CounterVec
	reserve  prometheus.Counter // pre-resolved children of takes
	shared   prometheus.Counter
	refused  prometheus.Counter
}

type leaseShard struct {
	mu        sync.Mutex
	m         map[leaseKey]*lease
	lastSweep int64
}

type leaseKey struct{ class, id string }

// lease is what this replica knows of one bucket. Times are Unix ns of Leases.now.
type lease struct {
	left    int   // tokens held
	until   int64 // when they are dropped
	want    int   // tokens the next take from the shared bucket asks for
	pending bool  // a take asking for want is out
	refused int64 // refused without asking until then
	seen    int64 // last take
}

var _ Limiter = (*Leases)(nil)

// NewLeases returns a Limiter that keeps reserves of src's tokens.
func NewLeases(src Reserver, opts LeaseOptions) (*Leases, error) {
	switch {
	case src == nil:
		return nil, fmt.Errorf("ratelimit: NewLeases needs a Reserver")
	case opts.MaxLease < 0 || opts.MaxLease > MaxTakeN:
		return nil, fmt.Errorf("ratelimit: lease size %d is not between 1 and %d", opts.MaxLease, MaxTakeN)
	case opts.TTL < 0:
		return nil, fmt.Errorf("ratelimit: negative lease TTL %v", opts.TTL)
	case opts.MaxBuckets < 0:
		return nil, fmt.Errorf("ratelimit: negative MaxBuckets %d", opts.MaxBuckets)
	}
	if opts.MaxLease == 0 {
		opts.MaxLease = DefaultMaxLease
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultLeaseTTL
	}
	if opts.MaxBuckets == 0 {
		opts.MaxBuckets = DefaultMaxLeases
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Leases{
		src:      src,
		max:      opts.MaxLease,
		ttl:      int64(opts.TTL),
		now:      opts.Now,
		seed:     maphash.MakeSeed(),
		perShard: max(1, opts.MaxBuckets/leaseShards),
		takes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_ratelimit_lease_takes_total",
			Help: "Check-path rate-limit takes by where they were answered: reserve (tokens this replica held), shared (the shared bucket), refused (a refusal remembered until its Retry-After).",
		}, []string{"source"}),
	}
	for i := range l.shards {
		l.shards[i].m = make(map[leaseKey]*lease)
	}
	var err error
	if l.takes, err = register(opts.Registerer, l.takes); err != nil {
		return nil, err
	}
	l.reserve = l.takes.WithLabelValues("reserve")
	l.shared = l.takes.WithLabelValues("shared")
	l.refused = l.takes.WithLabelValues("refused")
	return l, nil
}

// Len is the number of buckets state is kept for.
func (l *Leases) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// leaseCap is the largest lease for limit l.
func (l *Leases) leaseCap(lim Limit) int {
	return max(1, min(l.max, lim.Burst/leaseShare))
}

// Take implements Limiter. Errors are src's; held tokens and remembered refusals still
// answer while src fails.
func (l *Leases) Take(ctx context.Context, class, id string, lim Limit) (Result, error) {
	if err := checkTake(class, lim); err != nil {
		return Result{}, err
	}
	if lim.Off() {
		return Result{Allowed: true}, nil
	}
	k := leaseKey{class, id}
	s := &l.shards[maphash.Comparable(l.seed, k)%leaseShards]

	s.mu.Lock()
	now := l.now().UnixNano()
	e := s.m[k]
	if e == nil {
		if len(s.m) >= l.perShard {
			l.makeRoom(s, now)
		}
		e = &lease{want: 1}
		s.m[k] = e
	}
	e.seen = now
	if now < e.refused {
		retry := time.Duration(e.refused - now)
		s.mu.Unlock()
		l.refused.Inc()
		return Result{RetryAfter: retry, Reset: retry}, nil
	}
	if e.left > 0 && now < e.until {
		e.left--
		left := e.left
		s.mu.Unlock()
		l.reserve.Inc()
		return Result{Allowed: true, Remaining: left}, nil
	}
	// The reserve is empty or expired. Size the next lease by how the last one went:
	// used up in time, twice as many; expired unused, half.
	want := 1
	mine := !e.pending
	if mine {
		switch {
		case e.until == 0: // first take
		case e.left == 0 && now < e.until:
			e.want *= 2
		case e.left > 0:
			e.want /= 2
		}
		e.want = max(1, min(e.want, l.leaseCap(lim)))
		want = e.want
		e.pending = true
	}
	e.left = 0
	s.mu.Unlock()

	got, res, err := l.src.TakeN(ctx, class, id, lim, want)
	l.shared.Inc()

	s.mu.Lock()
	if mine {
		e.pending = false
	}
	if err == nil {
		now = l.now().UnixNano()
		switch {
		case got == 0:
			e.refused = now + int64(res.RetryAfter)
			e.want = 1 // at the limit: one token at a time
		case got > 1:
			e.left += got - 1
			e.until = now + l.ttl
		default:
			e.until = now + l.ttl // used up in time, as far as sizing goes
		}
	}
	s.mu.Unlock()
	return res, err
}

// makeRoom frees a place in a full shard: the state of buckets idle for a TTL (nothing
// held, nothing remembered), else that of a bucket sampled at random, whose held tokens
// are then dropped. s.mu is held.
func (l *Leases) makeRoom(s *leaseShard, now int64) {
	if now-s.lastSweep >= l.ttl {
		s.lastSweep = now
		for k, e := range s.m {
			if !e.pending && now-e.seen >= l.ttl && now >= e.until && now >= e.refused {
				delete(s.m, k)
			}
		}
		if len(s.m) < l.perShard {
			return
		}
	}
	for k, e := range s.m { // map order is random: a sample
		if !e.pending {
			delete(s.m, k)
			return
		}
	}
}
