package ratelimit_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/testenv"
)

// counting is a Reserver that records what Leases asks of the real one under it; with
// gate set, each TakeN waits for it to be closed.
type counting struct {
	ratelimit.Reserver
	mu    sync.Mutex
	asked []int // n of every TakeN
	fail  atomic.Bool
	gate  chan struct{}
}

func (c *counting) TakeN(ctx context.Context, class, id string, l ratelimit.Limit, n int) (int, ratelimit.Result, error) {
	c.mu.Lock()
	c.asked = append(c.asked, n)
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if c.fail.Load() {
		return 0, ratelimit.Result{}, ratelimit.ErrUnavailable
	}
	return c.Reserver.TakeN(ctx, class, id, l, n)
}

func (c *counting) calls() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.asked...)
}

func newLeases(t testing.TB, src ratelimit.Reserver, opts ratelimit.LeaseOptions) *ratelimit.Leases {
	t.Helper()
	l, err := ratelimit.NewLeases(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// leaseHarness is Leases over an in-process bucket, on one fake clock.
func leaseHarness(t *testing.T, opts ratelimit.LeaseOptions) (*ratelimit.Leases, *counting, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	src := &counting{Reserver: newMemory(t, ratelimit.MemoryOptions{Now: clock.Now})}
	opts.Now = clock.Now
	return newLeases(t, src, opts), src, clock
}

func mustTake(t *testing.T, l ratelimit.Limiter, id string, lim ratelimit.Limit) ratelimit.Result {
	t.Helper()
	res, err := l.Take(context.Background(), ratelimit.ClassCheckUser, id, lim)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestLeasesGrowWhileUsedUpAndServeFromTheReserve(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{MaxLease: 8, TTL: time.Second})
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	for range 40 {
		if res := mustTake(t, l, "u1", lim); !res.Allowed {
			t.Fatalf("take refused: %+v", res)
		}
		clock.Add(time.Millisecond)
	}
	// 1, 2, 4, then 8 (MaxLease) at a time: 1+2+4+8+8+8+8 = 39, and one more lease.
	want := []int{1, 2, 4, 8, 8, 8, 8, 8}
	if got := src.calls(); !equalInts(got, want) {
		t.Fatalf("takes from the shared bucket asked for %v, want %v", got, want)
	}
	// The shared bucket was charged for every token handed out or held, no more.
	res := mustTake(t, src.Reserver, "u1", lim)
	if held := 1 + 2 + 4 + 8*5; res.Remaining != lim.Burst-held-1 {
		t.Fatalf("shared bucket has %d left, want %d", res.Remaining, lim.Burst-held-1)
	}
}

func TestLeasesAreATenthOfTheBurstAtMost(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{})
	lim := ratelimit.Limit{Burst: 50, Period: time.Second} // RATE_LIMIT_CHECK_USER's default
	for range 30 {
		mustTake(t, l, "u1", lim)
		clock.Add(time.Millisecond)
	}
	for _, n := range src.calls() {
		if n > 5 {
			t.Fatalf("asked the shared bucket for %d tokens of a 50/1s bucket: %v", n, src.calls())
		}
	}
}

func TestLeasesShrinkWhenTokensExpireUnused(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{MaxLease: 16, TTL: time.Second})
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	for range 1 + 2 + 4 + 8 + 1 { // up to a lease of 16, one of them used
		mustTake(t, l, "u1", lim)
	}
	clock.Add(time.Second) // 15 held tokens expire
	mustTake(t, l, "u1", lim)
	calls := src.calls()
	if last := calls[len(calls)-1]; last != 8 {
		t.Fatalf("after a lease of 16 expired with 15 unused, asked for %d (calls %v), want 8", last, calls)
	}
	res := mustTake(t, src.Reserver, "u1", lim)
	if used := 1 + 2 + 4 + 8 + 16 + 8; res.Remaining != lim.Burst-used-1 {
		t.Fatalf("shared bucket has %d left, want %d: expired tokens are not taken again", res.Remaining, lim.Burst-used-1)
	}
}

func TestLeasesNeverHandOutMoreThanTheBucket(t *testing.T) {
	clock := newFakeClock()
	shared := newMemory(t, ratelimit.MemoryOptions{Now: clock.Now})
	replicas := []*ratelimit.Leases{
		newLeases(t, shared, ratelimit.LeaseOptions{Now: clock.Now}),
		newLeases(t, shared, ratelimit.LeaseOptions{Now: clock.Now}),
		newLeases(t, shared, ratelimit.LeaseOptions{Now: clock.Now}),
	}
	lim := ratelimit.Limit{Burst: 500, Period: time.Hour}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for w := range 48 {
		wg.Go(func() {
			for range 40 {
				res, err := replicas[w%len(replicas)].Take(context.Background(), ratelimit.ClassCheckUser, "u1", lim)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// Every token handed out was taken from the bucket first; held tokens are at most a
	// tenth of the burst per replica.
	if n := allowed.Load(); n > int64(lim.Burst) || n < int64(lim.Burst-len(replicas)*lim.Burst/10) {
		t.Fatalf("1,920 takes over 3 replicas from a bucket of %d: %d allowed", lim.Burst, n)
	}
}

func TestLeasesRememberARefusalUntilRetryAfter(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{})
	lim := ratelimit.Limit{Burst: 2, Period: time.Second} // a token every 500 ms
	mustTake(t, l, "u1", lim)
	mustTake(t, l, "u1", lim)
	refused := mustTake(t, l, "u1", lim)
	if refused.Allowed || refused.RetryAfter <= 0 || refused.RetryAfter > 500*time.Millisecond {
		t.Fatalf("take 3 of a bucket of 2 = %+v, want refused with Retry-After up to 500ms", refused)
	}
	asked := len(src.calls())
	clock.Add(refused.RetryAfter / 2)
	again := mustTake(t, l, "u1", lim)
	if again.Allowed || again.RetryAfter != refused.RetryAfter-refused.RetryAfter/2 {
		t.Fatalf("take before Retry-After = %+v, want refused with the rest of %v", again, refused.RetryAfter)
	}
	if n := len(src.calls()); n != asked {
		t.Fatalf("a remembered refusal asked the shared bucket (%d calls, want %d)", n, asked)
	}
	clock.Add(refused.RetryAfter - refused.RetryAfter/2)
	if res := mustTake(t, l, "u1", lim); !res.Allowed {
		t.Fatalf("take at Retry-After = %+v, want allowed", res)
	}
	// A refusal is the bucket's for everyone: another client's bucket is not refused.
	if res := mustTake(t, l, "u2", lim); !res.Allowed {
		t.Fatalf("another bucket = %+v, want allowed", res)
	}
}

func TestLeasesOfOneTakeEveryTokenFromTheSharedBucket(t *testing.T) {
	l, src, _ := leaseHarness(t, ratelimit.LeaseOptions{MaxLease: 1})
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	for range 20 {
		mustTake(t, l, "u1", lim)
	}
	if got := src.calls(); len(got) != 20 || got[19] != 1 {
		t.Fatalf("MaxLease 1: asked the shared bucket %v, want 20 takes of 1", got)
	}
}

func TestLeasesAnswerFromTheReserveWhileTheSharedBucketFails(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{MaxLease: 4, TTL: time.Second})
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	for range 1 + 2 + 1 { // a lease of 4 is out, 3 held
		mustTake(t, l, "u1", lim)
	}
	// A refusal remembered before the failure.
	tight := ratelimit.Limit{Burst: 1, Period: time.Hour}
	mustTake(t, l, "u3", tight)
	if res := mustTake(t, l, "u3", tight); res.Allowed {
		t.Fatalf("second take of a bucket of 1 = %+v", res)
	}
	src.fail.Store(true)
	for i := range 3 {
		if res := mustTake(t, l, "u1", lim); !res.Allowed {
			t.Fatalf("held token %d while Redis fails = %+v, want allowed", i+1, res)
		}
	}
	if res, err := l.Take(context.Background(), ratelimit.ClassCheckUser, "u3", tight); err != nil || res.Allowed || res.RetryAfter <= 0 {
		t.Fatalf("remembered refusal while Redis fails = %+v, %v; want refused with Retry-After", res, err)
	}
	_, err := l.Take(context.Background(), ratelimit.ClassCheckUser, "u1", lim)
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("take past the reserve while Redis fails: %v, want ErrUnavailable", err)
	}
	// Held tokens do not outlive their TTL, failure or not.
	src.fail.Store(false)
	for range 1 + 2 + 1 {
		mustTake(t, l, "u2", lim)
	}
	clock.Add(time.Second)
	src.fail.Store(true)
	if _, err := l.Take(context.Background(), ratelimit.ClassCheckUser, "u2", lim); err == nil {
		t.Fatal("an expired reserve answered")
	}
}

func TestLeasesRefuseBadInputAndPassOffLimits(t *testing.T) {
	l, src, _ := leaseHarness(t, ratelimit.LeaseOptions{})
	if _, err := l.Take(context.Background(), "Bad Class", "u1", ratelimit.Limit{Burst: 1, Period: time.Second}); err == nil {
		t.Error("invalid class accepted")
	}
	if _, err := l.Take(context.Background(), "c", "u1", ratelimit.Limit{Burst: 1, Period: time.Nanosecond}); err == nil {
		t.Error("invalid limit accepted")
	}
	if res := mustTake(t, l, "u1", ratelimit.Limit{}); !res.Allowed || len(src.calls()) != 0 {
		t.Errorf("off limit = %+v after %d shared takes, want allowed without any", res, len(src.calls()))
	}
	for _, opts := range []ratelimit.LeaseOptions{{MaxLease: -1}, {TTL: -time.Second}, {MaxBuckets: -1}} {
		if _, err := ratelimit.NewLeases(src, opts); err == nil {
			t.Errorf("NewLeases(%+v) accepted", opts)
		}
	}
	if _, err := ratelimit.NewLeases(nil, ratelimit.LeaseOptions{}); err == nil {
		t.Error("NewLeases(nil) accepted")
	}
}

func TestLeasesStayBounded(t *testing.T) {
	l, _, clock := leaseHarness(t, ratelimit.LeaseOptions{MaxBuckets: 640, TTL: time.Second})
	lim := ratelimit.Limit{Burst: 10, Period: time.Second}
	for i := range 5000 {
		mustTake(t, l, "ip-"+strconv.Itoa(i), lim)
		if i%1000 == 999 {
			clock.Add(2 * time.Second)
		}
	}
	if n := l.Len(); n > 640 {
		t.Fatalf("Leases holds state for %d buckets, want at most 640", n)
	}
}

func TestLeasesCountWhereTakesWereAnswered(t *testing.T) {
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	l := newLeases(t, newMemory(t, ratelimit.MemoryOptions{Now: clock.Now}), ratelimit.LeaseOptions{Now: clock.Now, Registerer: reg})
	lim := ratelimit.Limit{Burst: 30, Period: time.Hour} // leases of 3 at most
	for range 40 {
		mustTake(t, l, "u1", lim)
	}
	source := func(s string) float64 {
		return counterValue(t, reg, "authd_ratelimit_lease_takes_total", map[string]string{"source": s})
	}
	shared, reserve, refused := source("shared"), source("reserve"), source("refused")
	if shared+reserve+refused != 40 || reserve < 15 || refused < 9 {
		t.Fatalf("takes: %v shared, %v reserve, %v refused; want 40 in all, most of the 30 allowed from the reserve, the 10 refused mostly remembered",
			shared, reserve, refused)
	}
}

// On Redis, shared by two replicas: no more than the bucket, and most takes local.
func TestLeasesOnRedisAcrossReplicas(t *testing.T) {
	c, prefix := testenv.Redis(t)
	shared := func() *counting {
		return &counting{Reserver: newRedis(t, c, ratelimit.RedisOptions{Prefix: prefix, Timeout: 2 * time.Second})}
	}
	srcA, srcB := shared(), shared()
	a := newLeases(t, srcA, ratelimit.LeaseOptions{})
	b := newLeases(t, srcB, ratelimit.LeaseOptions{})
	lim := ratelimit.Limit{Burst: 2000, Period: time.Hour}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			l := a
			if w%2 == 1 {
				l = b
			}
			for range 100 {
				res, err := l.Take(context.Background(), ratelimit.ClassCheckUser, "u1", lim)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	n := allowed.Load()
	if n > int64(lim.Burst) || n < int64(lim.Burst-2*(ratelimit.DefaultMaxLease-1)) {
		t.Fatalf("3,200 takes over 2 replicas from a bucket of %d: %d allowed", lim.Burst, n)
	}
	calls := len(srcA.calls()) + len(srcB.calls())
	t.Logf("%d takes allowed of %d, %d round trips to Redis", n, 3200, calls)
	if calls > 3200/4 {
		t.Fatalf("%d of 3,200 takes went to Redis, want most answered locally", calls)
	}
	// The bucket in Redis was charged for every token allowed, and for those still held.
	rest, _, err := srcA.Reserver.TakeN(context.Background(), ratelimit.ClassCheckUser, "u1", lim, ratelimit.MaxTakeN)
	if err != nil || rest > lim.Burst-int(n) {
		t.Fatalf("the bucket still held %d tokens (%v) after %d were allowed from %d", rest, err, n, lim.Burst)
	}
}

func TestLeasesFailWhenRedisIsDown(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	defer c.Close()
	l := newLeases(t, newRedis(t, c, ratelimit.RedisOptions{Timeout: 200 * time.Millisecond}), ratelimit.LeaseOptions{MaxLease: 4})
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	for range 1 + 2 + 1 {
		mustTake(t, l, "u1", lim)
	}
	srv.Stop()
	for i := range 3 {
		if res := mustTake(t, l, "u1", lim); !res.Allowed {
			t.Fatalf("held token %d with Redis down = %+v", i+1, res)
		}
	}
	if _, err := l.Take(context.Background(), ratelimit.ClassCheckUser, "u1", lim); !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("take past the reserve with Redis down: %v, want ErrUnavailable", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Takes that find the reserve empty while a lease is on its way wait for it: a flood of
// one client costs a few round trips, not one each.
func TestLeasesConcurrentTakesShareOneRoundTrip(t *testing.T) {
	clock := newFakeClock()
	src := &counting{Reserver: newMemory(t, ratelimit.MemoryOptions{Now: clock.Now}), gate: make(chan struct{})}
	l := newLeases(t, src, ratelimit.LeaseOptions{Now: clock.Now})
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour} // leases of up to 64
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if res, err := l.Take(context.Background(), ratelimit.ClassCheckUser, "u1", lim); err == nil && res.Allowed {
				allowed.Add(1)
			}
		})
	}
	// Let every take arrive while the first lease is held at the gate.
	deadline := time.Now().Add(5 * time.Second)
	for len(src.calls()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	if allowed.Load() != 32 {
		t.Fatalf("%d of 32 takes allowed", allowed.Load())
	}
	if calls := src.calls(); len(calls) > 4 {
		t.Fatalf("32 concurrent takes asked the shared bucket %d times (%v), want a few", len(calls), calls)
	}
}

// After a refusal the next lease is one token, not the doubled size: at the limit the
// shared bucket decides each request.
func TestLeasesTakeOneTokenAfterARefusal(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{})
	lim := ratelimit.Limit{Burst: 40, Period: time.Hour} // leases of up to 4; a token per 90 s
	var refused ratelimit.Result
	for range 60 {
		if res := mustTake(t, l, "u1", lim); !res.Allowed {
			refused = res
			break
		}
		clock.Add(time.Millisecond)
	}
	if refused.RetryAfter == 0 {
		t.Fatal("never refused")
	}
	clock.Add(refused.RetryAfter)
	before := len(src.calls())
	if res := mustTake(t, l, "u1", lim); !res.Allowed {
		t.Fatalf("take at Retry-After = %+v", res)
	}
	if calls := src.calls(); len(calls) != before+1 || calls[before] != 1 {
		t.Fatalf("after a refusal asked the shared bucket for %v, want one token", calls[before:])
	}
}

// A clock stepped back (the fake clock stands for a wall clock; time.Now is monotonic)
// does not stretch a remembered refusal: the shared bucket is asked again.
func TestLeasesForgetTimesWhenTheClockGoesBack(t *testing.T) {
	l, src, clock := leaseHarness(t, ratelimit.LeaseOptions{})
	lim := ratelimit.Limit{Burst: 1, Period: time.Hour}
	mustTake(t, l, "u1", lim)
	if res := mustTake(t, l, "u1", lim); res.Allowed {
		t.Fatalf("second take of a bucket of 1 = %+v", res)
	}
	asked := len(src.calls())
	clock.Add(-time.Hour)
	mustTake(t, l, "u1", lim)
	if n := len(src.calls()); n != asked+1 {
		t.Fatalf("after the clock went back an hour the refusal was still remembered (%d shared takes, want %d)", n, asked+1)
	}
}
