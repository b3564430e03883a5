package ratelimit_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authd/authd/clientip"
	"github.com/authd/authd/problem"
	"github.com/authd/authd/ratelimit"
)

// harness is one limiter under test and a way to let time pass: a fake clock for the
// in-process limiter, a real sleep for Redis (whose clock is its own).
type harness struct {
	limiter ratelimit.Limiter
	advance func(time.Duration)
	// slack is added to waits that must cross a refill boundary: zero with a fake clock,
	// a little with a real one.
	slack time.Duration
}

// Limits of the suite. refill is short so that Redis refills in real time within the test;
// its tokens come back every 200 ms. hour never refills during a test.
var (
	refill = ratelimit.Limit{Burst: 5, Period: time.Second}
	hour   = ratelimit.Limit{Burst: 5, Period: time.Hour}
)

// runSuite proves the Limiter contract and the HTTP behaviour built on it. Every limiter
// runs it from a small test function.
func runSuite(t *testing.T, newHarness func(t *testing.T) harness) {
	tests := []struct {
		name string
		run  func(t *testing.T, h harness)
	}{
		{"RefusesTheRequestAfterTheBurst", testRefusesAfterBurst},
		{"RefillsAfterThePeriod", testRefillsAfterPeriod},
		{"RefillsOneTokenAfterRetryAfter", testRefillsOneToken},
		{"ReportsResetAsTimeUntilFull", testReportsReset},
		{"KeepsBucketsApart", testKeepsBucketsApart},
		{"KeepsHostileIDsApart", testHostileIDs},
		{"OffLimitAllowsEverything", testOffLimit},
		{"RefusesInvalidClassAndLimit", testInvalidInput},
		{"ConcurrentTakesNeverOverspend", testConcurrentTakes},
		{"TakeNTakesWhatTheBucketHolds", testTakeN},
		{"ConcurrentTakeNNeverOverspends", testConcurrentTakeN},
		{"HTTPSetsRateLimitHeaders", testHTTPHeaders},
		{"HTTPAnswers429WithRetryAfter", testHTTP429},
		{"HTTPSpoofedForwardedForFromUntrustedPeerKeepsTheBucket", testHTTPSpoofedXFF},
		{"HTTPTrustedProxyBucketsByForwardedClient", testHTTPTrustedProxy},
		{"HTTPRotatingInsideOne64DoesNotEscape", testHTTPIPv6Rotation},
		{"HTTPEveryBucketMustAllowAndTheTightestIsReported", testHTTPSeveralBuckets},
		{"HTTPRefusalByIPDoesNotDrainTheEmailBucket", testHTTPStopsAtFirstRefusal},
		{"HTTPOffRuleSetsNoHeaders", testHTTPOffRule},
		{"HTTPInvalidClassIsRefusedEvenWhenFailOpen", testHTTPInvalidClass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newHarness(t))
		})
	}
}

func take(t *testing.T, l ratelimit.Limiter, class, id string, lim ratelimit.Limit) ratelimit.Result {
	t.Helper()
	res, err := l.Take(context.Background(), class, id, lim)
	if err != nil {
		t.Fatalf("Take(%s, %q, %v): %v", class, id, lim, err)
	}
	return res
}

// drain takes lim.Burst tokens, checking each is allowed with the right remainder.
func drain(t *testing.T, l ratelimit.Limiter, class, id string, lim ratelimit.Limit) {
	t.Helper()
	for i := range lim.Burst {
		res := take(t, l, class, id, lim)
		if !res.Allowed || res.Remaining != lim.Burst-1-i {
			t.Fatalf("take %d of %d = %+v, want allowed with %d left", i+1, lim.Burst, res, lim.Burst-1-i)
		}
	}
}

func testRefusesAfterBurst(t *testing.T, h harness) {
	drain(t, h.limiter, "login-ip", "203.0.113.7", hour)
	res := take(t, h.limiter, "login-ip", "203.0.113.7", hour)
	if res.Allowed || res.Remaining != 0 {
		t.Fatalf("take %d = %+v, want refused with 0 left", hour.Burst+1, res)
	}
	perToken := hour.Period / time.Duration(hour.Burst)
	if res.RetryAfter <= perToken-time.Second || res.RetryAfter > perToken {
		t.Fatalf("RetryAfter = %v, want about %v", res.RetryAfter, perToken)
	}
	// A refusal spends nothing: the next one waits no longer.
	again := take(t, h.limiter, "login-ip", "203.0.113.7", hour)
	if again.Allowed || again.RetryAfter > res.RetryAfter {
		t.Fatalf("second refusal = %+v, want refused with RetryAfter <= %v", again, res.RetryAfter)
	}
}

func testRefillsAfterPeriod(t *testing.T, h harness) {
	drain(t, h.limiter, "c", "id", refill)
	if res := take(t, h.limiter, "c", "id", refill); res.Allowed {
		t.Fatalf("take after the burst = %+v, want refused", res)
	}
	h.advance(refill.Period + h.slack)
	drain(t, h.limiter, "c", "id", refill)
}

func testRefillsOneToken(t *testing.T, h harness) {
	drain(t, h.limiter, "c", "id", refill)
	res := take(t, h.limiter, "c", "id", refill)
	if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > refill.Period/time.Duration(refill.Burst) {
		t.Fatalf("take after the burst = %+v, want refused within one token's refill", res)
	}
	h.advance(res.RetryAfter + h.slack)
	if res := take(t, h.limiter, "c", "id", refill); !res.Allowed || res.Remaining != 0 {
		t.Fatalf("take after RetryAfter = %+v, want allowed with 0 left", res)
	}
	if res := take(t, h.limiter, "c", "id", refill); res.Allowed {
		t.Fatalf("second take after RetryAfter = %+v, want refused: only one token came back", res)
	}
}

func testReportsReset(t *testing.T, h harness) {
	lim := ratelimit.Limit{Burst: 20, Period: time.Minute}
	res := take(t, h.limiter, "login-ip", "x", lim)
	if res.Reset != 3*time.Second { // one token of 20 per minute
		t.Fatalf("Reset after one take = %v, want 3s", res.Reset)
	}
	for range 19 {
		res = take(t, h.limiter, "login-ip", "x", lim)
	}
	if res.Reset <= time.Minute-time.Second || res.Reset > time.Minute {
		t.Fatalf("Reset of an empty bucket = %v, want about 1m", res.Reset)
	}
	res = take(t, h.limiter, "login-ip", "x", lim)
	if res.Allowed || res.Reset <= time.Minute-time.Second || res.Reset > time.Minute {
		t.Fatalf("refused take = %+v, want Reset about 1m", res)
	}
}

func testKeepsBucketsApart(t *testing.T, h harness) {
	drain(t, h.limiter, "login-ip", "203.0.113.7", hour)
	for _, b := range [][2]string{{"login-ip", "203.0.113.8"}, {"register-ip", "203.0.113.7"}, {"login-ip", "203.0.113.70"}} {
		if res := take(t, h.limiter, b[0], b[1], hour); !res.Allowed || res.Remaining != hour.Burst-1 {
			t.Fatalf("bucket %v = %+v, want a fresh bucket", b, res)
		}
	}
}

func testHostileIDs(t *testing.T, h harness) {
	ids := []string{
		"alice@example.com", "ALICE@example.com", "a{b}c", "{login-ip}", "x:y", "x", "x\n", "x y",
		"", "~", strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("é", 1000),
		"2001:db8::/64", "../../etc", "*",
	}
	for _, id := range ids {
		drain(t, h.limiter, "login-email", id, hour)
	}
	for _, id := range ids {
		if res := take(t, h.limiter, "login-email", id, hour); res.Allowed {
			t.Fatalf("id %q: take after its burst allowed: ids share buckets", id)
		}
	}
}

func testOffLimit(t *testing.T, h harness) {
	for range 100 {
		if res := take(t, h.limiter, "c", "id", ratelimit.Limit{}); !res.Allowed {
			t.Fatal("an off limit refused a take")
		}
	}
	// An off limit touches no state: turning the limit on later starts full.
	drain(t, h.limiter, "c", "id", hour)
}

func testInvalidInput(t *testing.T, h harness) {
	for _, class := range []string{"", "Login", "a:b", "a{b}", "a b", "-a", strings.Repeat("a", 65), `a"b`} {
		if _, err := h.limiter.Take(context.Background(), class, "id", hour); err == nil {
			t.Errorf("class %q accepted", class)
		}
	}
	for _, lim := range []ratelimit.Limit{{Burst: -1, Period: time.Second}, {Burst: 1}, {Burst: 1, Period: time.Microsecond}} {
		if _, err := h.limiter.Take(context.Background(), "c", "id", lim); err == nil {
			t.Errorf("limit %+v accepted", lim)
		}
	}
}

func testConcurrentTakes(t *testing.T, h harness) {
	lim := ratelimit.Limit{Burst: 50, Period: time.Hour}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 4 {
				res, err := h.limiter.Take(context.Background(), "c", "hot", lim)
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
	if n := allowed.Load(); n != int64(lim.Burst) {
		t.Fatalf("256 concurrent takes from a bucket of %d: %d allowed", lim.Burst, n)
	}
}

func reserver(t *testing.T, h harness) ratelimit.Reserver {
	t.Helper()
	r, ok := h.limiter.(ratelimit.Reserver)
	if !ok {
		t.Fatalf("%T cannot take several tokens at once", h.limiter)
	}
	return r
}

func takeN(t *testing.T, r ratelimit.Reserver, id string, lim ratelimit.Limit, n int) (int, ratelimit.Result) {
	t.Helper()
	got, res, err := r.TakeN(context.Background(), "c", id, lim, n)
	if err != nil {
		t.Fatalf("TakeN(%q, %v, %d): %v", id, lim, n, err)
	}
	return got, res
}

func testTakeN(t *testing.T, h harness) {
	r := reserver(t, h)
	lim := ratelimit.Limit{Burst: 10, Period: time.Hour}
	for _, step := range []struct {
		want, got, left int
	}{
		{4, 4, 6}, // as many as asked
		{1, 1, 5},
		{8, 5, 0}, // as many as there are
		{3, 0, 0}, // none: refused
	} {
		got, res := takeN(t, r, "id", lim, step.want)
		if got != step.got || res.Allowed != (step.got > 0) || res.Remaining != step.left {
			t.Fatalf("TakeN(%d) = %d, %+v; want %d taken, %d left", step.want, got, res, step.got, step.left)
		}
		if got == 0 && (res.RetryAfter <= 0 || res.RetryAfter > lim.Period/time.Duration(lim.Burst)) {
			t.Fatalf("refused TakeN: RetryAfter %v, want up to %v", res.RetryAfter, lim.Period/time.Duration(lim.Burst))
		}
	}
	// A take of one is Take.
	if res := take(t, h.limiter, "c", "id", lim); res.Allowed {
		t.Fatalf("Take after TakeN emptied the bucket = %+v, want refused", res)
	}
	for _, n := range []int{0, -1, ratelimit.MaxTakeN + 1} {
		if _, _, err := r.TakeN(context.Background(), "c", "other", lim, n); err == nil {
			t.Errorf("TakeN(%d) accepted", n)
		}
	}
	if got, res := takeN(t, r, "other", ratelimit.Limit{}, 7); got != 7 || !res.Allowed {
		t.Fatalf("TakeN(7) from an off limit = %d, %+v; want all 7", got, res)
	}
}

func testConcurrentTakeN(t *testing.T, h harness) {
	r := reserver(t, h)
	lim := ratelimit.Limit{Burst: 100, Period: time.Hour}
	var taken atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for range 4 {
				got, _, err := r.TakeN(context.Background(), "c", "hot", lim, 1+w%7)
				if err != nil {
					t.Error(err)
					return
				}
				taken.Add(int64(got))
			}
		})
	}
	wg.Wait()
	if n := taken.Load(); n != int64(lim.Burst) {
		t.Fatalf("concurrent TakeN from a bucket of %d handed out %d tokens", lim.Burst, n)
	}
}

// HTTP behaviour: a handler guarded the way authn guards /login.

var (
	loginIP    = ratelimit.Rule{Class: ratelimit.ClassLoginIP, Limit: ratelimit.Limit{Burst: 20, Period: time.Minute}, FailClosed: true}
	loginEmail = ratelimit.Rule{Class: ratelimit.ClassLoginEmail, Limit: ratelimit.Limit{Burst: 3, Period: time.Minute}, FailClosed: true}
)

func newResolver(t *testing.T, trusted string) *clientip.Resolver {
	t.Helper()
	ps, err := clientip.ParseTrusted(trusted)
	if err != nil {
		t.Fatal(err)
	}
	res, err := clientip.New(ps, 64)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func newGuard(t *testing.T, l ratelimit.Limiter) *ratelimit.Guard {
	t.Helper()
	g, err := ratelimit.NewGuard(l, ratelimit.GuardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// loginHandler answers 200 after taking from the per-IP bucket and, when the request
// names an email (the ?email= query stands in for the decoded body), the per-email one.
func loginHandler(g *ratelimit.Guard, res *clientip.Resolver, ipRule, emailRule ratelimit.Rule) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buckets := []ratelimit.Bucket{ipRule.Bucket(res.Key(r))}
		if e := r.URL.Query().Get("email"); e != "" {
			buckets = append(buckets, emailRule.Bucket(e))
		}
		if !g.Allow(w, r, buckets...) {
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

type req struct {
	remote, xff, email string
}

func do(h http.Handler, rq req) *httptest.ResponseRecorder {
	target := "/login"
	if rq.email != "" {
		target += "?email=" + rq.email
	}
	r := httptest.NewRequest("POST", target, nil)
	r.RemoteAddr = rq.remote
	if rq.xff != "" {
		r.Header.Set("X-Forwarded-For", rq.xff)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func testHTTPHeaders(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), loginIP, loginEmail)
	w := do(srv, req{remote: "203.0.113.7:1234"})
	if w.Code != 200 {
		t.Fatalf("status %d", w.Code)
	}
	if got, want := w.Header().Get("RateLimit-Policy"), `"login-ip";q=20;w=60`; got != want {
		t.Errorf("RateLimit-Policy = %s, want %s", got, want)
	}
	if got, want := w.Header().Get("RateLimit"), `"login-ip";r=19;t=3`; got != want {
		t.Errorf("RateLimit = %s, want %s", got, want)
	}
	if w.Header().Get("Retry-After") != "" {
		t.Error("Retry-After on an allowed request")
	}
}

func testHTTP429(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), loginIP, loginEmail)
	for i := range loginIP.Limit.Burst {
		if w := do(srv, req{remote: "203.0.113.7:1234"}); w.Code != 200 {
			t.Fatalf("request %d: status %d", i+1, w.Code)
		}
	}
	w := do(srv, req{remote: "203.0.113.7:1234"})
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("request %d: status %d, want 429", loginIP.Limit.Burst+1, w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("Content-Type = %s", ct)
	}
	var p problem.Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Code != "rate_limited" || p.Status != 429 {
		t.Errorf("body = %s (%v), want problem rate_limited", w.Body, err)
	}
	if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 3 {
		t.Errorf("Retry-After = %q, want whole seconds, 1 to 3 (one token of 20/min)", w.Header().Get("Retry-After"))
	}
	if got := w.Header().Get("RateLimit"); !strings.HasPrefix(got, `"login-ip";r=0;t=`) {
		t.Errorf("RateLimit = %s, want login-ip with r=0", got)
	}
}

func testHTTPSpoofedXFF(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, "10.0.0.0/8"), loginIP, loginEmail)
	for i := range loginIP.Limit.Burst {
		spoof := "198.51.100." + strconv.Itoa(i) + ", 10.0.0.1"
		if w := do(srv, req{remote: "203.0.113.7:1234", xff: spoof}); w.Code != 200 {
			t.Fatalf("request %d: status %d", i+1, w.Code)
		}
	}
	if w := do(srv, req{remote: "203.0.113.7:1234", xff: "198.51.100.250"}); w.Code != http.StatusTooManyRequests {
		t.Fatalf("request %d with yet another spoofed X-Forwarded-For: status %d, want 429", loginIP.Limit.Burst+1, w.Code)
	}
}

func testHTTPTrustedProxy(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, "10.0.0.0/8"), loginIP, loginEmail)
	for i := range loginIP.Limit.Burst {
		// The client writes a fake address first; the proxies append the real one.
		proxy := "10.0.0." + strconv.Itoa(1+i%2) + ":80"
		if w := do(srv, req{remote: proxy, xff: "192.0.2." + strconv.Itoa(i) + ", 203.0.113.7, 10.9.9.9"}); w.Code != 200 {
			t.Fatalf("request %d: status %d", i+1, w.Code)
		}
	}
	if w := do(srv, req{remote: "10.0.0.3:80", xff: "203.0.113.7"}); w.Code != http.StatusTooManyRequests {
		t.Fatalf("the same client through another proxy: status %d, want 429", w.Code)
	}
	if w := do(srv, req{remote: "10.0.0.1:80", xff: "203.0.113.8"}); w.Code != 200 {
		t.Fatalf("another client through the same proxy: status %d, want 200", w.Code)
	}
}

func testHTTPIPv6Rotation(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), loginIP, loginEmail)
	for i := range loginIP.Limit.Burst {
		remote := "[2001:db8:1:2:" + strconv.FormatInt(int64(i*7919%0x10000), 16) + "::" + strconv.Itoa(i+1) + "]:443"
		if w := do(srv, req{remote: remote}); w.Code != 200 {
			t.Fatalf("request %d: status %d", i+1, w.Code)
		}
	}
	if w := do(srv, req{remote: "[2001:db8:1:2:ffff:ffff:ffff:fffe]:443"}); w.Code != http.StatusTooManyRequests {
		t.Fatalf("a new address in the same /64: status %d, want 429", w.Code)
	}
	if w := do(srv, req{remote: "[2001:db8:1:3::1]:443"}); w.Code != 200 {
		t.Fatalf("the next /64: status %d, want 200", w.Code)
	}
}

func testHTTPSeveralBuckets(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), loginIP, loginEmail)
	for i := range loginEmail.Limit.Burst {
		w := do(srv, req{remote: "203.0.113.7:1", email: "alice@example.com"})
		if w.Code != 200 {
			t.Fatalf("request %d: status %d", i+1, w.Code)
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"login-ip";q=20;w=60, "login-email";q=3;w=60`; got != want {
			t.Fatalf("RateLimit-Policy = %s, want %s", got, want)
		}
		want := `"login-email";r=` + strconv.Itoa(loginEmail.Limit.Burst-1-i) + ";t="
		if got := w.Header().Get("RateLimit"); !strings.HasPrefix(got, want) {
			t.Fatalf("request %d: RateLimit = %s, want the tighter bucket %s…", i+1, got, want)
		}
	}
	w := do(srv, req{remote: "203.0.113.99:1", email: "alice@example.com"})
	if w.Code != http.StatusTooManyRequests || !strings.HasPrefix(w.Header().Get("RateLimit"), `"login-email";r=0;`) {
		t.Fatalf("the email's bucket is empty, from another IP: status %d, RateLimit %s; want 429 from login-email", w.Code, w.Header().Get("RateLimit"))
	}
	if w := do(srv, req{remote: "203.0.113.7:1", email: "bob@example.com"}); w.Code != 200 {
		t.Fatalf("another email from the same IP: status %d, want 200", w.Code)
	}
}

func testHTTPStopsAtFirstRefusal(t *testing.T, h harness) {
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), loginIP, loginEmail)
	for range loginIP.Limit.Burst {
		do(srv, req{remote: "203.0.113.7:1"})
	}
	for range 5 {
		w := do(srv, req{remote: "203.0.113.7:1", email: "carol@example.com"})
		if w.Code != http.StatusTooManyRequests || !strings.HasPrefix(w.Header().Get("RateLimit"), `"login-ip";r=0;`) {
			t.Fatalf("status %d, RateLimit %s; want 429 from login-ip", w.Code, w.Header().Get("RateLimit"))
		}
		if got, want := w.Header().Get("RateLimit-Policy"), `"login-ip";q=20;w=60, "login-email";q=3;w=60`; got != want {
			t.Fatalf("RateLimit-Policy = %s, want every policy of the endpoint: %s", got, want)
		}
	}
	if res := take(t, h.limiter, loginEmail.Class, "carol@example.com", loginEmail.Limit); res.Remaining != loginEmail.Limit.Burst-1 {
		t.Fatalf("the email bucket after refusals by IP = %+v, want untouched", res)
	}
}

func testHTTPOffRule(t *testing.T, h harness) {
	off := ratelimit.Rule{Class: "register-ip", FailClosed: true}
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), off, off)
	for range 50 {
		w := do(srv, req{remote: "203.0.113.7:1", email: "a@example.com"})
		if w.Code != 200 || w.Header().Get("RateLimit-Policy") != "" || w.Header().Get("RateLimit") != "" {
			t.Fatalf("off rule: status %d, headers %v", w.Code, w.Header())
		}
	}
}

func testHTTPInvalidClass(t *testing.T, h harness) {
	bad := ratelimit.Rule{Class: "Bad Class", Limit: hour}
	srv := loginHandler(newGuard(t, h.limiter), newResolver(t, ""), bad, bad)
	if w := do(srv, req{remote: "203.0.113.7:1"}); w.Code != http.StatusInternalServerError {
		t.Fatalf("invalid class on a fail-open rule: status %d, want 500 (a bug never passes)", w.Code)
	}
}
