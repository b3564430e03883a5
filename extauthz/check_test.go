package extauthz_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
)

const tablePolicy = `
rules:
  - name: public-docs
    path_prefix: /docs/
    access: public
  - name: admin
    path_regex: ^/admin(/|$)
    access: mfa
`

const (
	wwwAuthBare  = `Bearer realm="authd"`
	wwwAuthToken = `Bearer realm="authd", error="invalid_token"`
)

func policy(t testing.TB, doc string) *extauthz.Policy {
	t.Helper()
	p, err := extauthz.ParsePolicy([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckDecidesEveryReason walks every reason a check can give, each request
// differing from an allowed one in the one respect under test.
func TestCheckDecidesEveryReason(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) { c.Policy = policy(t, tablePolicy) })
	_, priv, pubPEM := keys(t)
	alice := e.newUser()
	mfaUser := e.newUser("pwd", "otp")
	valid := e.token(alice)
	kid := kidOf(t, valid)
	hdr := map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": kid}
	claims := claimsFor(alice, t0)

	late := manager(t, func() time.Time { return t0.Add(-20 * time.Minute) }, testIssuer, testAudience)
	early := manager(t, func() time.Time { return t0.Add(5 * time.Minute) }, testIssuer, testAudience)
	evilIss := manager(t, e.clock.Now, "https://evil.test", testAudience)
	otherAud := manager(t, e.clock.Now, testIssuer, "https://other.test")
	preAuth, _, err := e.mgr.SignPreAuth(jwks.PreAuthClaims{Subject: alice.id})
	if err != nil {
		t.Fatal(err)
	}
	other := e.token(e.newUser())
	parts := strings.Split(valid, ".")
	swappedSig := parts[0] + "." + parts[1] + "." + strings.Split(other, ".")[2]

	revoked := e.newUser()
	e.src.revoke(revoked.sid)
	stale := e.newUser()
	staleTok := e.token(stale)
	e.src.rotate(stale.id, "0193f2a4-0002-7000-8000-999999999999")
	unknown := user{id: alice.id, sid: "0193f2a4-0001-7000-8000-777777777777", stamp: alice.stamp, amr: []string{"pwd"}}
	bob := e.newUser()
	foreign := user{id: alice.id, sid: bob.sid, stamp: alice.stamp, amr: []string{"pwd"}}
	expiring := e.newUser()
	e.src.mu.Lock()
	e.src.sessions[expiring.sid] = extauthz.SessionInfo{UserID: expiring.id, ExpiresAt: t0.Add(-time.Second)}
	e.src.mu.Unlock()
	unicode := e.newUser()
	unicode.email = "zoë@example.test"

	withAuth := func(vs ...string) extauthz.Request {
		r := bearerReq("")
		r.Authorization = vs
		return r
	}
	withCookie := func(vs ...string) extauthz.Request {
		r := bearerReq("")
		r.Authorization = nil
		r.Cookies = vs
		return r
	}
	at := func(r extauthz.Request, method, path string) extauthz.Request {
		r.Method, r.Path = method, path
		return r
	}

	tests := []struct {
		name    string
		req     extauthz.Request
		status  int
		reason  string
		wwwAuth string // on 401
	}{
		{"valid bearer token", bearerReq(valid), 200, extauthz.ReasonOK, ""},
		{"scheme is case-insensitive", withAuth("bEaReR " + valid), 200, extauthz.ReasonOK, ""},
		{"valid cookie", withCookie("theme=dark; access_token=" + valid), 200, extauthz.ReasonOK, ""},
		{"cookie lines joined by Envoy", withCookie("theme=dark,access_token=" + valid), 200, extauthz.ReasonOK, ""},
		{"same cookie twice, same value", withCookie("access_token="+valid, "access_token="+valid), 200, extauthz.ReasonOK, ""},

		{"missing", withAuth(), 401, extauthz.ReasonTokenMissing, wwwAuthBare},
		{"token only in the query", at(withAuth(), "GET", "/orders?access_token="+valid), 401, extauthz.ReasonTokenMissing, wwwAuthBare},
		{"empty cookie", withCookie("access_token="), 401, extauthz.ReasonTokenMissing, wwwAuthBare},
		{"not Bearer", withAuth("Basic YWxpY2U6c2VjcmV0"), 401, extauthz.ReasonAuthScheme, wwwAuthBare},
		{"Bearer without a token", withAuth("Bearer "), 401, extauthz.ReasonAuthMalformed, wwwAuthToken},
		{"Bearer with two tokens", withAuth("Bearer " + valid + " " + valid), 401, extauthz.ReasonAuthMalformed, wwwAuthToken},
		{"two Authorization lines", withAuth("Bearer "+valid, "Bearer "+valid), 401, extauthz.ReasonAuthMultiple, wwwAuthToken},
		{"two Authorization lines joined by Envoy", withAuth("Bearer " + valid + ",Bearer " + valid), 401, extauthz.ReasonAuthMultiple, wwwAuthToken},
		{"bad header, good cookie: no fall-back", func() extauthz.Request {
			r := withAuth("Bearer garbage")
			r.Cookies = []string{"access_token=" + valid}
			return r
		}(), 401, "token_malformed", wwwAuthToken},
		{"cookie twice with different values", withCookie("access_token="+valid, "access_token="+other), 401, extauthz.ReasonCookieAmbiguous, wwwAuthToken},
		{"over 8 KiB", bearerReq(strings.Repeat("a", 8<<10+1)), 401, "token_too_large", wwwAuthToken},
		{"over 8 KiB in a cookie", withCookie("access_token=" + strings.Repeat("a", 8<<10+1)), 401, "token_too_large", wwwAuthToken},
		{"malformed", bearerReq("not.a.jwt!"), 401, "token_malformed", wwwAuthToken},
		{"expired", bearerReq(sign(t, late, alice)), 401, "token_expired", wwwAuthToken},
		{"not yet valid", bearerReq(sign(t, early, alice)), 401, "token_not_yet_valid", wwwAuthToken},
		{"wrong iss", bearerReq(sign(t, evilIss, alice)), 401, "token_claims", wwwAuthToken},
		{"wrong aud", bearerReq(sign(t, otherAud, alice)), 401, "token_claims", wwwAuthToken},
		{"bad signature", bearerReq(swappedSig), 401, "token_signature", wwwAuthToken},
		{"alg none", bearerReq(craft(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": kid}, claims, nil)), 401, "token_algorithm", wwwAuthToken},
		{"HS256 keyed with the public key", bearerReq(craft(t, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": kid}, claims, hs256(pubPEM))), 401, "token_algorithm", wwwAuthToken},
		{"unknown kid", bearerReq(craft(t, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": "attacker"}, claims, rsaSign(t, priv))), 401, "token_unknown_key", wwwAuthToken},
		{"crafted with our key and header is fine", bearerReq(craft(t, hdr, claims, rsaSign(t, priv))), 200, extauthz.ReasonOK, ""},
		{"pre-auth token as access token", bearerReq(preAuth), 401, "token_wrong_type", wwwAuthToken},

		{"revoked session", bearerReq(e.token(revoked)), 401, extauthz.ReasonSessionRevoked, wwwAuthToken},
		{"stale stamp", bearerReq(staleTok), 401, extauthz.ReasonStampStale, wwwAuthToken},
		{"unknown session", bearerReq(e.token(unknown)), 401, extauthz.ReasonSessionUnknown, wwwAuthToken},
		{"someone else's session", bearerReq(e.token(foreign)), 401, extauthz.ReasonSessionUnknown, wwwAuthToken},
		{"session past its absolute end", bearerReq(e.token(expiring)), 401, extauthz.ReasonSessionExpired, wwwAuthToken},

		{"public route without a token", at(withAuth(), "GET", "/docs/intro"), 200, extauthz.ReasonPublic, ""},
		{"public route with a bad token", at(withAuth("Bearer junk"), "POST", "/docs/intro"), 200, extauthz.ReasonPublic, ""},
		{"dot segments cannot make a protected path public", at(withAuth(), "GET", "/docs/../orders"), 401, extauthz.ReasonTokenMissing, wwwAuthBare},
		{"mfa route, password-only login", at(bearerReq(valid), "GET", "/admin/users"), 403, extauthz.ReasonMFARequired, ""},
		{"mfa route reached through an escape", at(bearerReq(valid), "GET", "/docs/..%2Fadmin"), 403, extauthz.ReasonMFARequired, ""},
		{"mfa route, login with otp", at(bearerReq(e.token(mfaUser)), "GET", "/admin/users"), 200, extauthz.ReasonOK, ""},

		{"CORS preflight", func() extauthz.Request {
			r := at(withAuth(), "OPTIONS", "/orders")
			r.Origin, r.AccessControlRequestMethod = "https://app.example.test", "DELETE"
			return r
		}(), 200, extauthz.ReasonPreflight, ""},
		{"OPTIONS that is not a preflight", func() extauthz.Request {
			r := at(withAuth(), "OPTIONS", "/orders")
			r.Origin = "https://app.example.test"
			return r
		}(), 401, extauthz.ReasonTokenMissing, wwwAuthBare},

		{"email that is not ASCII is not sent", bearerReq(e.token(unicode)), 200, extauthz.ReasonOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.checker.Check(context.Background(), tt.req)
			if d.Status != tt.status || d.Reason != tt.reason {
				t.Fatalf("Check = %d %s, want %d %s", d.Status, d.Reason, tt.status, tt.reason)
			}
			if d.Allow != (tt.status == 200) {
				t.Fatalf("Allow = %v with status %d", d.Allow, d.Status)
			}
			if d.Allow {
				checkAllowHeaders(t, d)
				if len(d.Body) != 0 || len(d.Client) != 0 {
					t.Errorf("allow carries a body or client headers: %q %v", d.Body, d.Client)
				}
				return
			}
			if ct, _ := header(t, d.Client, "Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if !strings.Contains(string(d.Body), `"status":`) || !strings.Contains(string(d.Body), `"code":"`+d.Code+`"`) {
				t.Errorf("body %s is not the problem document for %s", d.Body, d.Code)
			}
			www, ok := header(t, d.Client, "WWW-Authenticate")
			if tt.status == 401 && www != tt.wwwAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", www, tt.wwwAuth)
			}
			if tt.status != 401 && ok {
				t.Errorf("WWW-Authenticate on a %d", tt.status)
			}
			if len(d.Upstream) != 0 {
				t.Errorf("a denial sets upstream headers: %v", d.Upstream)
			}
		})
	}

	t.Run("identity headers of an allow", func(t *testing.T) {
		d := e.checker.Check(context.Background(), bearerReq(valid))
		want := map[string]string{"X-User-Id": alice.id, "X-User-Email": alice.email, "X-Session-Id": alice.sid, "X-Auth-MFA": "false"}
		for name, v := range want {
			if got, _ := header(t, d.Upstream, name); got != v {
				t.Errorf("%s = %q, want %q", name, got, v)
			}
		}
		if len(d.Remove) != 0 {
			t.Errorf("Remove = %v, want none", d.Remove)
		}
		d = e.checker.Check(context.Background(), at(bearerReq(e.token(mfaUser)), "GET", "/admin/"))
		if got, _ := header(t, d.Upstream, "X-Auth-MFA"); got != "true" {
			t.Errorf("X-Auth-MFA = %q for an otp login", got)
		}
		d = e.checker.Check(context.Background(), bearerReq(e.token(unicode)))
		if _, ok := header(t, d.Upstream, "X-User-Email"); ok || !contains(d.Remove, "X-User-Email") {
			t.Errorf("a non-ASCII email must be removed, not sent: upstream %v remove %v", d.Upstream, d.Remove)
		}
		d = e.checker.Check(context.Background(), at(withAuth(), "GET", "/docs/"))
		if len(d.Upstream) != 0 || len(d.Remove) != 4 {
			t.Errorf("public allow: upstream %v remove %v, want every identity header removed", d.Upstream, d.Remove)
		}
	})
}

// checkAllowHeaders holds the invariant of every allow: each identity header is set
// once or removed, never both.
func checkAllowHeaders(t *testing.T, d extauthz.Decision) {
	t.Helper()
	for _, name := range []string{"X-User-Id", "X-User-Email", "X-Session-Id", "X-Auth-MFA"} {
		_, set := header(t, d.Upstream, name)
		removed := contains(d.Remove, name)
		if set == removed {
			t.Errorf("%s: set %v, removed %v; want exactly one", name, set, removed)
		}
	}
	for _, h := range d.Upstream {
		if len(h.Value) > extauthz.MaxHeaderValue || strings.ContainsAny(h.Value, "\r\n\x00") {
			t.Errorf("header %s has an unsafe value %q", h.Name, h.Value)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func TestCheckRateLimitsPerUserAndPerIP(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.UserLimit = ratelimit.Limit{Burst: 2, Period: time.Minute}
		c.IPLimit = ratelimit.Limit{Burst: 1, Period: time.Minute}
		c.Policy = policy(t, tablePolicy)
	})
	ctx := context.Background()
	alice, bob := e.newUser(), e.newUser()
	ta, tb := e.token(alice), e.token(bob)
	for i := range 2 {
		if d := e.checker.Check(ctx, bearerReq(ta)); !d.Allow {
			t.Fatalf("request %d of alice: %d %s", i, d.Status, d.Reason)
		}
	}
	d := e.checker.Check(ctx, bearerReq(ta))
	if d.Status != 429 || d.Reason != extauthz.ReasonRateLimited || d.Subject != alice.id {
		t.Fatalf("third request of alice = %d %s (%s), want 429", d.Status, d.Reason, d.Subject)
	}
	if ra, _ := header(t, d.Client, "Retry-After"); ra != "30" {
		t.Errorf("Retry-After = %q, want 30 (one token of 2/1m)", ra)
	}
	if d := e.checker.Check(ctx, bearerReq(tb)); !d.Allow {
		t.Fatalf("bob shares alice's bucket: %d %s", d.Status, d.Reason)
	}

	// Public routes and failed authentication take from the client's IP bucket.
	pub := extauthz.Request{Method: "GET", Host: "app.example.test", Path: "/docs/", ClientIP: mustAddr("203.0.113.7")}
	if d := e.checker.Check(ctx, pub); !d.Allow {
		t.Fatalf("first public request: %d %s", d.Status, d.Reason)
	}
	if d := e.checker.Check(ctx, pub); d.Status != 429 {
		t.Fatalf("second public request from one IP = %d %s, want 429", d.Status, d.Reason)
	}
	bad := bearerReq("junk")
	bad.ClientIP = mustAddr("198.51.100.9")
	if d := e.checker.Check(ctx, bad); d.Status != 401 {
		t.Fatalf("first bad token = %d %s, want 401", d.Status, d.Reason)
	}
	if d := e.checker.Check(ctx, bad); d.Status != 429 {
		t.Fatalf("second bad token from one IP = %d %s, want 429", d.Status, d.Reason)
	}
	pub.ClientIP = mustAddr("2001:db8:1:2::1")
	e.checker.Check(ctx, pub)
	pub.ClientIP = mustAddr("2001:db8:1:2::99")
	if d := e.checker.Check(ctx, pub); d.Status != 429 {
		t.Fatalf("another address of the same IPv6 /64 = %d, want 429 (one bucket per /64)", d.Status)
	}
	e.clock.Add(time.Minute)
	if d := e.checker.Check(ctx, bearerReq(ta)); !d.Allow {
		t.Fatalf("after the refill: %d %s", d.Status, d.Reason)
	}
}

// brokenLimiter cannot answer, as Redis down.
type brokenLimiter struct{}

func (brokenLimiter) Take(context.Context, string, string, ratelimit.Limit) (ratelimit.Result, error) {
	return ratelimit.Result{}, ratelimit.ErrUnavailable
}

func TestCheckFailsClosed(t *testing.T) {
	ctx := context.Background()
	t.Run("store down", func(t *testing.T) {
		e := newEnv(t, nil)
		u := e.newUser()
		tok := e.token(u)
		e.src.setDown(true)
		d := e.checker.Check(ctx, bearerReq(tok))
		if d.Status != 503 || d.Reason != extauthz.ReasonStateUnavailable || d.Code != "session_state_unavailable" {
			t.Fatalf("store down: %d %s %s, want 503 state_unavailable", d.Status, d.Reason, d.Code)
		}
		e.src.setDown(false)
		if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
			t.Fatalf("store back: %d %s", d.Status, d.Reason)
		}
		// Cached state serves while the store is down again.
		e.src.setDown(true)
		if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
			t.Fatalf("cached state with the store down: %d %s", d.Status, d.Reason)
		}
	})
	t.Run("limiter down", func(t *testing.T) {
		e := newEnv(t, func(c *extauthz.Config) { c.Limiter = brokenLimiter{} })
		u := e.newUser()
		d := e.checker.Check(ctx, bearerReq(e.token(u)))
		if d.Status != 503 || d.Reason != extauthz.ReasonLimiterDown || d.Code != "rate_limiter_unavailable" {
			t.Fatalf("limiter down: %d %s %s, want 503", d.Status, d.Reason, d.Code)
		}
		// A request that is denied anyway stays a 401.
		if d := e.checker.Check(ctx, bearerReq("junk")); d.Status != 401 {
			t.Fatalf("bad token with the limiter down = %d, want 401", d.Status)
		}
	})
	t.Run("limiter down, CHECK_FAIL_OPEN_RATE_LIMIT", func(t *testing.T) {
		e := newEnv(t, func(c *extauthz.Config) { c.Limiter = brokenLimiter{}; c.FailOpenRateLimit = true })
		u := e.newUser()
		if d := e.checker.Check(ctx, bearerReq(e.token(u))); !d.Allow {
			t.Fatalf("fail-open limiter: %d %s", d.Status, d.Reason)
		}
	})
}

// countingVerifier counts the verifications that reach the Manager.
type countingVerifier struct {
	v *jwks.Manager
	n atomic.Int64
}

func (c *countingVerifier) VerifyAccess(tok string) (jwks.AccessClaims, error) {
	c.n.Add(1)
	return c.v.VerifyAccess(tok)
}

func TestVerifiedTokensAreCachedButStateIsCheckedEveryTime(t *testing.T) {
	var cv *countingVerifier
	bus := revocation.NewMemory()
	e := newEnv(t, func(c *extauthz.Config) {
		cv = &countingVerifier{v: c.Verifier.(*jwks.Manager)}
		c.Verifier = cv
		c.Bus = bus
	})
	runChecker(t, e.checker)
	ctx := context.Background()
	u := e.newUser()
	tok := e.token(u)
	for range 5 {
		if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
			t.Fatalf("%d %s", d.Status, d.Reason)
		}
	}
	if n := cv.n.Load(); n != 1 {
		t.Fatalf("token verified %d times, want once", n)
	}
	// A refused token is not cached: refusing it again costs a verification.
	for range 2 {
		e.checker.Check(ctx, bearerReq(tok+"x"))
	}
	if n := cv.n.Load(); n != 3 {
		t.Fatalf("verifications = %d, want 3", n)
	}

	e.src.revoke(u.sid)
	if err := bus.Publish(ctx, revocation.SessionRevoked(u.sid)); err != nil {
		t.Fatal(err)
	}
	if d := e.checker.Check(ctx, bearerReq(tok)); d.Reason != extauthz.ReasonSessionRevoked {
		t.Fatalf("cached token of a revoked session: %d %s", d.Status, d.Reason)
	}

	// The cache never outlives the token.
	v := e.newUser()
	tv := e.token(v)
	e.checker.Check(ctx, bearerReq(tv))
	e.clock.Add(15*time.Minute + time.Minute)
	if d := e.checker.Check(ctx, bearerReq(tv)); d.Reason != "token_expired" {
		t.Fatalf("after exp: %d %s, want token_expired", d.Status, d.Reason)
	}
}

// runChecker runs c's subscription until the test ends. closers (the Redis client of a
// Redis bus) are closed at the end after cancelling: go-redis's PubSub.ReceiveMessage
// does not return on a cancelled context, only when its connection closes.
func runChecker(t testing.TB, c *extauthz.Checker, closers ...io.Closer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		for _, cl := range closers {
			_ = cl.Close()
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !c.Subscribed() {
		if time.Now().After(deadline) {
			t.Fatal("the revocation subscription never came up")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRevocationMessagesReachTheCache(t *testing.T) {
	bus := revocation.NewMemory()
	e := newEnv(t, func(c *extauthz.Config) { c.Bus = bus })
	runChecker(t, e.checker)
	ctx := context.Background()
	u := e.newUser()
	tok := e.token(u)
	if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatal(d.Reason)
	}
	// The store changes; the cache still holds the old state...
	newStamp := "0193f2a4-0002-7000-8000-888888888888"
	e.src.rotate(u.id, newStamp)
	if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatalf("before the message the cached state answers: %s", d.Reason)
	}
	// ...until the message arrives.
	if err := bus.Publish(ctx, revocation.StampRotated(u.id, newStamp)); err != nil {
		t.Fatal(err)
	}
	if d := e.checker.Check(ctx, bearerReq(tok)); d.Reason != extauthz.ReasonStampStale {
		t.Fatalf("after stamp_rotated: %d %s", d.Status, d.Reason)
	}
	fresh := u
	fresh.stamp = newStamp
	if d := e.checker.Check(ctx, bearerReq(e.token(fresh))); !d.Allow {
		t.Fatalf("a token with the new stamp: %s", d.Reason)
	}
}

func TestCacheTTLBoundsStalenessWhenMessagesAreLost(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) { c.SessionCacheTTL = 5 * time.Second })
	ctx := context.Background()
	u := e.newUser()
	tok := e.token(u)
	e.checker.Check(ctx, bearerReq(tok))
	e.src.revoke(u.sid) // and the message is lost
	e.clock.Add(4 * time.Second)
	if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatalf("within the TTL the cache answers: %s", d.Reason)
	}
	e.clock.Add(time.Second)
	if d := e.checker.Check(ctx, bearerReq(tok)); d.Reason != extauthz.ReasonSessionRevoked {
		t.Fatalf("after the TTL: %d %s, want session_revoked", d.Status, d.Reason)
	}
}

// ctlBus is a Bus whose connection state the test drives.
type ctlBus struct {
	fn      chan func(revocation.Message)
	onState chan func(bool)
}

func (b *ctlBus) Publish(context.Context, ...revocation.Message) error { return nil }

func (b *ctlBus) Subscribe(ctx context.Context, fn func(revocation.Message), onState func(bool)) {
	b.fn <- fn
	b.onState <- onState
	<-ctx.Done()
}

func TestDisconnectedBusCapsTheCacheTTL(t *testing.T) {
	bus := &ctlBus{fn: make(chan func(revocation.Message), 1), onState: make(chan func(bool), 1)}
	e := newEnv(t, func(c *extauthz.Config) {
		c.Bus = bus
		c.SessionCacheTTL = 5 * time.Second
		c.DisconnectedTTL = time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.checker.Run(ctx)
	<-bus.fn
	onState := <-bus.onState
	u := e.newUser()
	tok := e.token(u)

	// Before the subscription is up, entries live 1 s.
	e.checker.Check(ctx, bearerReq(tok))
	reads := e.src.reads
	e.clock.Add(time.Second)
	e.checker.Check(ctx, bearerReq(tok))
	if e.src.reads == reads {
		t.Fatal("before the subscription is up an entry outlived the 1 s cap")
	}

	onState(true)
	e.checker.Check(ctx, bearerReq(tok))
	e.src.revoke(u.sid) // the message will be lost
	e.clock.Add(2 * time.Second)
	if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatalf("connected: the 5 s entry answers: %s", d.Reason)
	}
	onState(false) // messages may be missed from now on: the cache is dropped
	if d := e.checker.Check(ctx, bearerReq(tok)); d.Reason != extauthz.ReasonSessionRevoked {
		t.Fatalf("after the disconnect: %d %s, want session_revoked", d.Status, d.Reason)
	}
	if e.checker.Subscribed() {
		t.Fatal("Subscribed() after onState(false)")
	}
}

func TestDecisionLogHasOneLinePerCheckAndNeverTheToken(t *testing.T) {
	e := newEnv(t, nil)
	u := e.newUser()
	tok := e.token(u)
	ctx := context.Background()
	req := bearerReq(tok)
	req.Adapter = extauthz.AdapterForwardAuth
	req.Path = "/orders?access_token=" + tok
	req.ClientIP = mustAddr("203.0.113.7")
	e.checker.Check(ctx, req)
	e.checker.Check(ctx, bearerReq("junk"))
	lines := e.dlog.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), e.dlog)
	}
	if strings.Contains(e.dlog.String(), tok) || strings.Contains(e.dlog.String(), strings.Split(tok, ".")[2]) {
		t.Fatal("the decision log holds the token")
	}
	want := map[string]any{
		"msg": "authz decision", "adapter": "forward-auth", "method": "GET", "host": "app.example.test",
		"path": "/orders", "client_ip": "203.0.113.7", "decision": "allow", "status": float64(200),
		"reason": "ok", "subject": u.id,
	}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("%s = %v, want %v", k, lines[0][k], v)
		}
	}
	if lines[1]["decision"] != "deny" || lines[1]["reason"] != "token_malformed" || lines[1]["adapter"] != "direct" {
		t.Errorf("deny line: %v", lines[1])
	}
}

func TestDecisionLogSampling(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) { c.DecisionLogSample = 0.000001 })
	ctx := context.Background()
	u := e.newUser()
	tok := e.token(u)
	for range 200 {
		e.checker.Check(ctx, bearerReq(tok))
	}
	e.src.setDown(true)
	e.checker.Check(ctx, bearerReq(e.token(e.newUser())))
	lines := e.dlog.lines(t)
	if len(lines) != 1 || lines[0]["status"] != float64(503) {
		t.Fatalf("sampled log: %d lines (%v), want only the 503", len(lines), lines)
	}
}

func TestMetricsCountDecisionsAndCacheHits(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	u := e.newUser()
	tok := e.token(u)
	for range 3 {
		e.checker.Check(ctx, bearerReq(tok))
	}
	e.checker.Check(ctx, bearerReq("junk"))
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	find := func(name string, labels map[string]string) float64 {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue next
					}
				}
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				if m.GetHistogram() != nil {
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return -1
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"authd_authz_decisions_total", map[string]string{"adapter": "direct", "outcome": "allow", "reason": "ok"}, 3},
		{"authd_authz_decisions_total", map[string]string{"adapter": "direct", "outcome": "deny", "reason": "token_malformed"}, 1},
		{"authd_authz_cache_lookups_total", map[string]string{"cache": "token", "result": "hit"}, 2},
		{"authd_authz_cache_lookups_total", map[string]string{"cache": "token", "result": "miss"}, 2},
		{"authd_authz_cache_lookups_total", map[string]string{"cache": "session", "result": "hit"}, 2},
		{"authd_authz_state_reads_total", map[string]string{"tier": "store", "result": "read"}, 1}, // session and stamp in one read
		{"authd_authz_check_duration_seconds", map[string]string{"adapter": "direct"}, 4},
	}
	for _, c := range checks {
		if v := find(c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	e := newEnv(t, nil)
	_, err := extauthz.New(extauthz.Config{
		Verifier:          e.mgr,
		Headers:           extauthz.HeaderNames{UserID: "X_User_Id", Email: "X-E", SessionID: "x-e", MFA: "X-M"},
		AccessCookie:      "a;b",
		DecisionLogSample: 2,
	})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{"SessionSource", "X_User_Id", "used twice", "ACCESS_COOKIE", "DECISION_LOG_SAMPLE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestHeaderNamesAreConfigurable(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.Headers = extauthz.HeaderNames{UserID: "x-auth-user", Email: "X-Auth-Email", SessionID: "X-Auth-Session", MFA: "X-Auth-Mfa-Done"}
	})
	u := e.newUser()
	d := e.checker.Check(context.Background(), bearerReq(e.token(u)))
	if v, _ := header(t, d.Upstream, "X-Auth-User"); v != u.id {
		t.Fatalf("upstream %v", d.Upstream)
	}
}
