package authn_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
	"github.com/authd/authd/testenv"
)

// TestRedisDownFailClosedEndpointsAnswer503AndSpendNothing: with the Redis limiter's
// server stopped, /login, /register, /refresh and /verify-mfa answer 503
// rate_limiter_unavailable before anything is spent or changed, /logout still revokes,
// and once Redis is back the refused refresh token and pre-auth token still work.
func TestRedisDownFailClosedEndpointsAnswer503AndSpendNothing(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	client := redis.NewClient(&redis.Options{
		Addr: srv.Addr(), ContextTimeoutEnabled: true,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
	})
	t.Cleanup(func() { _ = client.Close() })
	e := newEnv(t, func(c *config) {
		c.limiter = func(t testing.TB, _ *clock, reg prometheus.Registerer) ratelimit.Limiter {
			l, err := ratelimit.NewRedis(client, ratelimit.RedisOptions{
				Prefix: testenv.RandomName("authn:") + ":", Timeout: 200 * time.Millisecond, Registerer: reg,
			})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		c.bus = func(testing.TB) revocation.Bus {
			return revocation.NewRedis(client, testenv.RandomName("authn-revocations-"), nil)
		}
	})

	secret, _ := e.mfaUser("mfa@example.com")
	e.register("plain@example.com", pw)
	keep := e.login("plain@example.com", pw)
	leave := e.login("plain@example.com", pw, userAgent("leave/1"))
	pre := e.loginPreAuth("mfa@example.com", pw)
	code := e.code(secret)

	srv.Stop()
	unavailable := func(r *response) {
		t.Helper()
		wantProblem(t, r, http.StatusServiceUnavailable, "rate_limiter_unavailable")
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
	}
	unavailable(e.post("/login", map[string]string{"email": "plain@example.com", "password": "a wrong password here"}))
	unavailable(e.post("/login", map[string]string{"email": "plain@example.com", "password": pw}))
	unavailable(e.post("/register", map[string]string{"email": "new@example.com", "password": pw}))
	unavailable(e.refresh(keep.RefreshToken))
	unavailable(e.verifyMFA(pre.PreAuthToken, code))
	unavailable(e.verifyMFA(pre.PreAuthToken, wrongCode(code)))

	// The fail-open API still works, and logout revokes in the store.
	wantStatus(t, e.me(keep.AccessToken), http.StatusOK)
	wantStatus(t, e.post("/logout", nil, bearer(leave.AccessToken), userAgent("leave/1")), http.StatusNoContent)
	wantProblem(t, e.me(leave.AccessToken), http.StatusUnauthorized, "session_revoked")

	// Nothing was spent or changed.
	if _, err := e.st.GetUserByEmail(context.Background(), "new@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused registration stored a user (err %v)", err)
	}
	if l, err := e.st.GetLockout(context.Background(), "plain@example.com"); err == nil && l.Failures != 0 {
		t.Fatalf("a refused login counted toward the lockout: %+v", l)
	}
	if e.counter("authd_ratelimit_fail_closed_total") < 6 {
		t.Errorf("authd_ratelimit_fail_closed_total = %v, want ≥ 6", e.counter("authd_ratelimit_fail_closed_total"))
	}

	srv.Start()
	tokensOf(t, e.refresh(keep.RefreshToken))
	tokensOf(t, e.verifyMFA(pre.PreAuthToken, code))
	e.login("plain@example.com", pw)
	e.register("new@example.com", pw)
	wantProblem(t, e.refresh(leave.RefreshToken, userAgent("leave/1")), http.StatusUnauthorized, "session_revoked")

	rows := e.auditOf(authn.EventRateLimited)
	if len(rows) < 6 || !strings.Contains(string(rows[0].Details), "limiter_unavailable") {
		t.Fatalf("RATE_LIMITED rows = %d (%+v)", len(rows), rows)
	}
}
