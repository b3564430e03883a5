package ratelimit_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/problem"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/testenv"
)

func newRedis(t testing.TB, c redis.UniversalClient, opts ratelimit.RedisOptions) *ratelimit.Redis {
	t.Helper()
	r, err := ratelimit.NewRedis(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRedis(t *testing.T) {
	runSuite(t, func(t *testing.T) harness {
		c, prefix := testenv.Redis(t)
		r := newRedis(t, c, ratelimit.RedisOptions{Prefix: prefix, Timeout: 2 * time.Second, Registerer: prometheus.NewRegistry()})
		return harness{limiter: r, advance: time.Sleep, slack: 20 * time.Millisecond}
	})
}

// packed is a bucket value as the take script writes it: tokens and µs, two
// little-endian doubles.
func packed(tokens, at float64) string {
	b := binary.LittleEndian.AppendUint64(nil, math.Float64bits(tokens))
	return string(binary.LittleEndian.AppendUint64(b, math.Float64bits(at)))
}

// On a Redis Cluster each take is its own script run (a script cannot span slots): the
// same behaviour, through that path, and the script is reloaded after a flush.
func TestRedisOneScriptPerTake(t *testing.T) {
	runSuite(t, func(t *testing.T) harness {
		c, prefix := testenv.Redis(t)
		r := newRedis(t, c, ratelimit.RedisOptions{Prefix: prefix, Timeout: 2 * time.Second})
		ratelimit.PerTakeScripts(r)
		return harness{limiter: r, advance: time.Sleep, slack: 20 * time.Millisecond}
	})
	srv := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer c.Close()
	r := newRedis(t, c, ratelimit.RedisOptions{Timeout: 2 * time.Second})
	ratelimit.PerTakeScripts(r)
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	take(t, r, "c", "id", lim)
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range 16 {
		wg.Go(func() {
			if res, err := r.Take(context.Background(), "c", "id", lim); err == nil && res.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if res := take(t, r, "c", "id", lim); allowed.Load() != 16 || res.Remaining != lim.Burst-18 {
		t.Fatalf("after SCRIPT FLUSH: %d of 16 concurrent takes allowed, then %+v; want all, and %d left",
			allowed.Load(), res, lim.Burst-18)
	}
}

// Hundreds of takes at once go out in batches as large as the limiter allows (one
// script run over many buckets): each still gets its own exact answer, a bucket named
// many times in one batch is taken from once per take, and none is lost.
func TestRedisLargeBatchesAnswerEveryTakeExactly(t *testing.T) {
	c, prefix := testenv.Redis(t)
	r := newRedis(t, c, ratelimit.RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	shared := ratelimit.Limit{Burst: 100, Period: time.Hour}
	own := ratelimit.Limit{Burst: 3, Period: time.Hour}
	const n = 700
	var sharedAllowed atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if i%2 == 0 {
				res, err := r.Take(context.Background(), "c", "shared", shared)
				if err != nil {
					t.Errorf("take %d from the shared bucket: %v", i, err)
				} else if res.Allowed {
					sharedAllowed.Add(1)
				}
				return
			}
			id := "own-" + strconv.Itoa(i)
			for k := range 2 {
				res, err := r.Take(context.Background(), "c", id, own)
				if err != nil || !res.Allowed || res.Remaining != own.Burst-1-k {
					t.Errorf("take %d from bucket %s = %+v, %v; want allowed with %d left", k+1, id, res, err, own.Burst-1-k)
				}
			}
		})
	}
	wg.Wait()
	if got := sharedAllowed.Load(); got != int64(shared.Burst) {
		t.Fatalf("%d takes from one bucket of %d: %d allowed", n/2, shared.Burst, got)
	}
}

// Two replicas: two limiters, each with its own connection pool, share every bucket.
func TestRedisReplicasShareOneBucket(t *testing.T) {
	c1, prefix := testenv.Redis(t)
	c2, _ := testenv.Redis(t)
	a := newRedis(t, c1, ratelimit.RedisOptions{Prefix: prefix})
	b := newRedis(t, c2, ratelimit.RedisOptions{Prefix: prefix})
	for i := range hour.Burst {
		l := []ratelimit.Limiter{a, b}[i%2]
		if res := take(t, l, "login-ip", "203.0.113.7", hour); !res.Allowed || res.Remaining != hour.Burst-1-i {
			t.Fatalf("take %d on replica %d = %+v, want allowed with %d left", i+1, i%2, res, hour.Burst-1-i)
		}
	}
	for _, l := range []ratelimit.Limiter{a, b} {
		if res := take(t, l, "login-ip", "203.0.113.7", hour); res.Allowed {
			t.Fatal("a replica allowed a take after the shared bucket was empty")
		}
	}

	// Under contention too.
	lim := ratelimit.Limit{Burst: 40, Period: time.Hour}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 32 {
		l := []ratelimit.Limiter{a, b}[i%2]
		wg.Go(func() {
			for range 4 {
				if res, err := l.Take(context.Background(), "c", "hot", lim); err == nil && res.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != int64(lim.Burst) {
		t.Fatalf("128 takes through two replicas from a bucket of %d: %d allowed", lim.Burst, n)
	}
}

func TestRedisKeysAndExpiry(t *testing.T) {
	c, prefix := testenv.Redis(t)
	r := newRedis(t, c, ratelimit.RedisOptions{Prefix: prefix})
	if got, want := newRedis(t, c, ratelimit.RedisOptions{}).Key("login-ip", "203.0.113.7"), "rl2:login-ip:203.0.113.7"; got != want {
		t.Fatalf("unprefixed key = %s, want %s", got, want)
	}
	if got := r.Key("login-ip", "2001:db8:1:2::/64"); got != prefix+"rl2:login-ip:2001:db8:1:2::/64" {
		t.Fatalf("key of an IPv6 bucket = %s", got)
	}
	for _, id := range []string{"alice@example.com", "a{b}", "x y", "a\nb", strings.Repeat("a", 65), "", "x~"} {
		k := strings.TrimPrefix(r.Key("login-email", id), prefix+"rl2:login-email:")
		if strings.ContainsAny(k, "{}@ \n:") || len(k) != 23 || k[0] != '~' {
			t.Errorf("id %q became key part %q, want ~ and 22 base64url characters", id, k)
		}
	}

	ctx := context.Background()
	lim := ratelimit.Limit{Burst: 20, Period: time.Minute}
	take(t, r, "login-ip", "203.0.113.7", lim)
	key := r.Key("login-ip", "203.0.113.7")
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 2*time.Second || ttl > 3*time.Second {
		t.Fatalf("PTTL after one take of 20/min = %v, want about 3s (when the bucket is full again)", ttl)
	}
	v, err := c.Get(ctx, key).Bytes()
	if err != nil || len(v) != 16 {
		t.Fatalf("bucket = %q (%v), want two doubles", v, err)
	}
	tokens := math.Float64frombits(binary.LittleEndian.Uint64(v))
	at := time.UnixMicro(int64(math.Float64frombits(binary.LittleEndian.Uint64(v[8:]))))
	if tokens != 19 || time.Since(at).Abs() > time.Minute {
		t.Fatalf("bucket holds %v tokens at %v, want 19 now", tokens, at)
	}
	// A refused take writes nothing.
	drain(t, r, "c", "id", hour)
	before, _ := c.Get(ctx, r.Key("c", "id")).Result()
	take(t, r, "c", "id", hour)
	after, _ := c.Get(ctx, r.Key("c", "id")).Result()
	if before != after {
		t.Fatalf("a refused take changed the bucket: %q → %q", before, after)
	}
	// A key that is not a bucket (left by anything else) counts as a full bucket.
	for _, junk := range []func(string) error{
		func(k string) error { return c.HSet(ctx, k, "t", "0", "ts", "1").Err() },
		func(k string) error { return c.Set(ctx, k, "garbage", 0).Err() },
		func(k string) error { return c.Set(ctx, k, packed(math.NaN(), 1), 0).Err() },
		func(k string) error { return c.Set(ctx, k, packed(math.Inf(-1), 1), 0).Err() },
		func(k string) error { return c.Set(ctx, k, packed(0, math.Inf(1)), 0).Err() },
	} {
		k := r.Key("junk", "id")
		c.Del(ctx, k)
		if err := junk(k); err != nil {
			t.Fatal(err)
		}
		if res := take(t, r, "junk", "id", lim); !res.Allowed || res.Remaining != lim.Burst-1 {
			t.Fatalf("take from a key that is not a bucket = %+v, want a full bucket", res)
		}
	}
	// The key expires when full again, and a bucket that expired is full.
	short := ratelimit.Limit{Burst: 2, Period: 100 * time.Millisecond}
	take(t, r, "s", "id", short)
	time.Sleep(150 * time.Millisecond)
	if n, _ := c.Exists(ctx, r.Key("s", "id")).Result(); n != 0 {
		t.Fatal("the key outlived its bucket's refill")
	}
}

func TestRedisReloadsTheScriptAfterFlush(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	r := newRedis(t, c, ratelimit.RedisOptions{})
	take(t, r, "c", "id", hour)
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if res := take(t, r, "c", "id", hour); res.Remaining != hour.Burst-2 {
		t.Fatalf("take after SCRIPT FLUSH = %+v", res)
	}
}

// Takes sent together after the script cache was emptied are each run once, through the
// reload, with exact counts.
func TestRedisReloadsTheScriptForConcurrentTakes(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer c.Close()
	r := newRedis(t, c, ratelimit.RedisOptions{Timeout: 2 * time.Second})
	take(t, r, "c", "warm", hour)
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	lim := ratelimit.Limit{Burst: 1000, Period: time.Hour}
	const n = 64
	remaining := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := r.Take(context.Background(), "c", "shared", lim)
			if err != nil || !res.Allowed {
				t.Errorf("take %d after SCRIPT FLUSH: %+v %v", i, res, err)
				return
			}
			remaining[i] = res.Remaining
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for _, rem := range remaining {
		seen[rem] = true
	}
	for want := lim.Burst - n; want < lim.Burst; want++ {
		if !seen[want] {
			t.Fatalf("remaining counts %v: %d missing; every take must run exactly once", remaining, want)
		}
	}
}

// A caller whose context ends first is answered at once, and does not spend a token.
func TestRedisTakeEndsWithTheCallersContext(t *testing.T) {
	c, prefix := testenv.Redis(t)
	r := newRedis(t, c, ratelimit.RedisOptions{Prefix: prefix, Timeout: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Take(ctx, "c", "id", hour); !errors.Is(err, ratelimit.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("take with a cancelled context: %v, want ErrUnavailable wrapping context.Canceled", err)
	}
	if res := take(t, r, "c", "id", hour); res.Remaining != hour.Burst-1 {
		t.Fatalf("after a cancelled take: %+v, want a full bucket less one", res)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	time.Sleep(time.Millisecond)
	if _, err := r.Take(ctx, "c", "id", hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("take past the caller's deadline: %v, want context.DeadlineExceeded", err)
	}
}

// outageServer serves a fail-closed route (/login) and a fail-open route (/me) guarded by a
// Redis limiter on a private redis-server.
func outageServer(t *testing.T, c redis.UniversalClient, timeout time.Duration, reg *prometheus.Registry) http.Handler {
	r := newRedis(t, c, ratelimit.RedisOptions{Timeout: timeout, Registerer: reg})
	g, err := ratelimit.NewGuard(r, ratelimit.GuardOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	res := newResolver(t, "")
	apiUser := ratelimit.Rule{Class: ratelimit.ClassAPIUser, Limit: ratelimit.Limit{Burst: 120, Period: time.Minute}}
	mux := http.NewServeMux()
	mux.Handle("/login", loginHandler(g, res, loginIP, loginEmail))
	mux.Handle("/me", g.Middleware(func(*http.Request) []ratelimit.Bucket {
		return []ratelimit.Bucket{apiUser.Bucket("user-1")}
	})(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })))
	return mux
}

func get(h http.Handler, path string) (*httptest.ResponseRecorder, time.Duration) {
	start := time.Now()
	r, _ := http.NewRequest("POST", path, nil)
	r.RemoteAddr = "203.0.113.7:1"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, time.Since(start)
}

func checkUnavailable(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("fail-closed route: status %d, want 503", w.Code)
	}
	var p problem.Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Code != "rate_limiter_unavailable" {
		t.Fatalf("fail-closed body = %s, want code rate_limiter_unavailable", w.Body)
	}
	if w.Header().Get("RateLimit") != "" {
		t.Fatal("RateLimit header on a 503")
	}
}

func TestRedisStoppedFailsClosedAndOpenThenRecovers(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	// The client's own timeouts are go-redis's defaults (seconds): the limiter's timeout
	// is what bounds the answer.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	reg := prometheus.NewRegistry()
	const timeout = 150 * time.Millisecond
	h := outageServer(t, c, timeout, reg)

	for _, path := range []string{"/login?email=a@example.com", "/me"} {
		if w, _ := get(h, path); w.Code != 200 {
			t.Fatalf("%s with Redis up: status %d", path, w.Code)
		}
	}

	srv.Stop()
	for range 3 {
		w, took := get(h, "/login?email=a@example.com")
		checkUnavailable(t, w)
		t.Logf("fail-closed answer with Redis stopped after %v", took)
		if took > 2*time.Second {
			t.Fatalf("fail-closed answer took %v with a %v timeout", took, timeout)
		}
		if w, _ := get(h, "/me"); w.Code != 200 {
			t.Fatalf("fail-open route with Redis stopped: status %d, want 200", w.Code)
		}
	}
	if got := counterValue(t, reg, "authd_ratelimit_fail_closed_total", map[string]string{"class": "login-ip"}); got != 3 {
		t.Errorf("fail_closed_total{login-ip} = %v, want 3", got)
	}
	if got := counterValue(t, reg, "authd_ratelimit_decisions_total", map[string]string{"class": "api-user", "outcome": "failed_open"}); got != 3 {
		t.Errorf("decisions_total{api-user,failed_open} = %v, want 3", got)
	}

	srv.Start() // empty: no buckets, no script
	restarted := time.Now()
	deadline := restarted.Add(5 * time.Second)
	for {
		w, _ := get(h, "/login?email=a@example.com")
		if w.Code == 200 {
			t.Logf("recovered %v after Redis came back", time.Since(restarted))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Redis came back: status %d %s", w.Code, w.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if w, _ := get(h, "/me"); w.Code != 200 || w.Header().Get("RateLimit") == "" {
		t.Fatalf("fail-open route after recovery: status %d, RateLimit %q", w.Code, w.Header().Get("RateLimit"))
	}
}

func TestRedisHungAnswersWithinTheTimeout(t *testing.T) {
	// Whether or not the client bounds reads by the context (its own ReadTimeout is 3 s,
	// the go-redis default), the limiter's timeout bounds the answer.
	for _, ctxTimeout := range []bool{false, true} {
		t.Run("ContextTimeoutEnabled="+strconv.FormatBool(ctxTimeout), func(t *testing.T) {
			srv := testenv.StartRedisServer(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxTimeout})
			defer c.Close()
			testRedisHung(t, srv, c)
		})
	}
}

func testRedisHung(t *testing.T, srv *testenv.RedisServer, c redis.UniversalClient) {
	const timeout = 100 * time.Millisecond
	h := outageServer(t, c, timeout, prometheus.NewRegistry())
	if w, _ := get(h, "/login"); w.Code != 200 {
		t.Fatalf("status %d with Redis up", w.Code)
	}

	srv.Freeze()
	w, took := get(h, "/login")
	checkUnavailable(t, w)
	t.Logf("fail-closed answer with Redis hung after %v", took)
	// A bound far below the client's 3 s read timeout: it is the limiter's timeout that fired.
	if took > time.Second {
		t.Fatalf("fail-closed answer with Redis hung took %v, timeout %v", took, timeout)
	}
	if w, took := get(h, "/me"); w.Code != 200 || took > time.Second {
		t.Fatalf("fail-open route with Redis hung: status %d after %v", w.Code, took)
	}

	srv.Thaw()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if w, _ := get(h, "/login"); w.Code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no recovery after Redis thawed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisErrorsWrapErrUnavailable(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	r := newRedis(t, c, ratelimit.RedisOptions{Timeout: 100 * time.Millisecond})
	srv.Stop()
	_, err := r.Take(context.Background(), "c", "alice@example.com", hour)
	if !errors.Is(err, ratelimit.ErrUnavailable) {
		t.Fatalf("error with Redis stopped = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "alice") {
		t.Fatalf("error %q names the bucket id", err)
	}
}

func TestNewRedisRefusesBadOptions(t *testing.T) {
	if _, err := ratelimit.NewRedis(nil, ratelimit.RedisOptions{}); err == nil {
		t.Error("nil client accepted")
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := ratelimit.NewRedis(c, ratelimit.RedisOptions{Timeout: -time.Second}); err == nil {
		t.Error("negative timeout accepted")
	}
}
