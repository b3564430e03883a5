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
// What holds, on any number of replicas: every token handed out here was first taken from
// the shared bucket, so the bucket's count is never overdrawn; and a remembered refusal
// is one the shared bucket would repeat (tokens only come back with time; Retry-After,
// counted from before the shared bucket was asked, is when the first one does).
//
// What it trades, both ways bounded by the tokens replicas hold. A lease starts at one
// token, doubles only while each is used up within TTL, halves when one expires unused,
// and is at most MaxLease and a tenth of the burst, never more than the bucket holds.
// Held tokens are spent later than they were taken: over any interval, a bucket allows at
// most what it would allow alone plus the tokens replicas held when the interval began,
// R × (lease − 1) with R replicas (a tenth of the burst each at most). Tokens not handed
// out within TTL are dropped, not returned: a client spread over R replicas may be
// refused up to R × (lease − 1) requests early at its limit. A client well under its
// limit meets no difference.
//
// Concurrent takes for a bucket whose reserve is empty wait for the one lease already
// being taken rather than each asking Redis. Result.Remaining of a take served here
// counts the tokens this replica still holds, and Reset is 0 (allowed) or the time left
// of the remembered refusal; neither is the shared bucket's.
type Leases struct {
	src      Reserver
	max      int
	ttl      int64 // ns
	now      func() time.Time
	epoch    time.Time // times are ns since epoch: monotonic with time.Now
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

// lease is what this replica knows of one bucket. Times are ns since Leases.epoch.
type lease struct {
	left    int   // tokens held
	until   int64 // when they are dropped; also how long the last lease counts as recent
	want    int   // tokens the next take from the shared bucket asks for
	grow    bool  // the last lease was granted in full: the next may be larger
	waiting int   // takes waiting for the lease on its way
	refused int64 // refused without asking until then
	seen    int64 // last take; a clock earlier than it went backwards
	// landed is non-nil while a take asking for want is out; closed when it lands.
	landed chan struct{}
}

// waitRounds bounds how many leases in flight a take waits for before it asks the shared
// bucket for one token itself. Each lease asks for at least as many tokens as takes wait
// for it (up to the cap), so a second round is rare.
const waitRounds = 4

var _ Limiter = (*Leases)(nil)

// MaxLeaseTTL bounds LeaseOptions.TTL.
const MaxLeaseTTL = time.Minute

// NewLeases returns a Limiter that keeps reserves of src's tokens.
func NewLeases(src Reserver, opts LeaseOptions) (*Leases, error) {
	switch {
	case src == nil:
		return nil, fmt.Errorf("ratelimit: NewLeases needs a Reserver")
	case opts.MaxLease < 0 || opts.MaxLease > MaxTakeN:
		return nil, fmt.Errorf("ratelimit: lease size %d is not between 1 and %d (0: the default)", opts.MaxLease, MaxTakeN)
	case opts.TTL < 0 || opts.TTL > MaxLeaseTTL:
		return nil, fmt.Errorf("ratelimit: lease TTL %v is not between 0 (the default) and %v", opts.TTL, MaxLeaseTTL)
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
		epoch:    opts.Now(),
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

// clock is the time in ns since l.epoch: with time.Now, monotonic, so a step of the
// wall clock neither stretches a remembered refusal nor a lease.
func (l *Leases) clock() int64 { return int64(l.now().Sub(l.epoch)) }

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

// leaseCap is the largest lease for limit lim.
func (l *Leases) leaseCap(lim Limit) int {
	return max(1, min(l.max, lim.Burst/leaseShare))
}

// Take implements Limiter. Errors are src's (or ErrUnavailable when ctx ends while
// waiting for a lease); held tokens and remembered refusals still answer while src fails.
func (l *Leases) Take(ctx context.Context, class, id string, lim Limit) (Result, error) {
	if err := checkTake(class, lim); err != nil {
		return Result{}, err
	}
	if lim.Off() {
		return Result{Allowed: true}, nil
	}
	k := leaseKey{class, id}
	s := &l.shards[maphash.Comparable(l.seed, k)%leaseShards]

	for round := 0; ; round++ {
		s.mu.Lock()
		now := l.clock()
		e := s.m[k]
		if e == nil {
			if len(s.m) >= l.perShard {
				l.makeRoom(s, now)
			}
			e = &lease{want: 1}
			s.m[k] = e
		}
		if now < e.seen { // the clock went backwards: trust no time kept
			e.left, e.until, e.refused = 0, now, now
		}
		e.seen = now
		// Held tokens first: they were taken from the bucket already.
		if e.left > 0 && now < e.until {
			e.left--
			left := e.left
			s.mu.Unlock()
			l.reserve.Inc()
			return Result{Allowed: true, Remaining: left}, nil
		}
		if now < e.refused {
			retry := time.Duration(e.refused - now)
			s.mu.Unlock()
			l.refused.Inc()
			return Result{RetryAfter: retry, Reset: retry}, nil
		}
		if e.landed != nil && round < waitRounds {
			// A lease is on its way: wait for it rather than ask Redis too.
			landed := e.landed
			e.waiting++
			s.mu.Unlock()
			select {
			case <-landed:
			case <-ctx.Done():
				s.mu.Lock()
				e.waiting--
				s.mu.Unlock()
				return Result{}, fmt.Errorf("%w: class %s: %w", ErrUnavailable, class, ctx.Err())
			}
			s.mu.Lock()
			e.waiting--
			s.mu.Unlock()
			continue
		}
		return l.takeShared(ctx, s, e, class, id, lim, now)
	}
}

// takeShared asks the shared bucket for a lease (or, when one is already on its way,
// for the one token this take needs). s.mu is held and is released.
func (l *Leases) takeShared(ctx context.Context, s *leaseShard, e *lease, class, id string, lim Limit, start int64) (Result, error) {
	want, mine := 1, e.landed == nil
	prev := e.want
	if mine {
		// Size the lease by how the last went: used up in time, twice as many; expired
		// unused, half; idle for a while, one again.
		switch {
		case e.until == 0:
		case start-e.until >= l.ttl:
			e.want = 1
		case e.left == 0 && start < e.until && e.grow:
			e.want *= 2
		case start >= e.until && e.until != 0 && e.left > 0:
			e.want /= 2
		}
		e.want = max(1, min(e.want, l.leaseCap(lim)))
		// Enough for the takes already waiting too, if the cap allows.
		want = max(e.want, min(e.waiting+1, l.leaseCap(lim)))
		e.landed = make(chan struct{})
	}
	e.left = 0 // none, or expired
	s.mu.Unlock()

	got, res, err := l.src.TakeN(ctx, class, id, lim, want)
	l.shared.Inc()

	s.mu.Lock()
	now := l.clock()
	switch {
	case err != nil:
		if mine {
			e.want = prev // a failure says nothing about demand
		}
	case got == 0:
		// Redis decided after start: counting from start never outlasts its refusal.
		e.refused = max(e.refused, start+int64(res.RetryAfter))
		e.want, e.grow = 1, false // at the limit: one token at a time
	default:
		if mine {
			e.grow = got == want
		}
		if got > 1 {
			e.left += got - 1
			e.until = now + l.ttl
		} else if e.left == 0 {
			e.until = now + l.ttl // the lease counts as recent, for sizing
		}
	}
	if mine {
		close(e.landed)
		e.landed = nil
	}
	s.mu.Unlock()
	return res, err
}

// makeRoom frees a place in a full shard: the state of buckets idle for a TTL (nothing
// held, nothing remembered), else that of a bucket sampled at random, whose held tokens
// are then dropped. A bucket with a take in flight stays. s.mu is held.
func (l *Leases) makeRoom(s *leaseShard, now int64) {
	if now-s.lastSweep >= l.ttl || now < s.lastSweep {
		s.lastSweep = now
		for k, e := range s.m {
			if e.landed == nil && now-e.seen >= l.ttl && now >= e.until && now >= e.refused {
				delete(s.m, k)
			}
		}
		if len(s.m) < l.perShard {
			return
		}
	}
	for k, e := range s.m { // map order is random: a sample
		if e.landed == nil {
			delete(s.m, k)
			return
		}
	}
}
