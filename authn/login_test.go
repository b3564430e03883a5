package authn_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/text/unicode/norm"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/authn/password"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/store"
)

const pw = "correct horse battery staple"

func TestLoginReturnsTokensWithNoStoreAndSecurityHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.register("login@example.com", pw)
	r := e.post("/login", map[string]string{"email": "login@example.com", "password": pw, "device_name": "laptop"})
	tr := tokensOf(t, r)
	for k, want := range map[string]string{
		"Cache-Control":          "no-store",
		"Content-Type":           "application/json",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if r.Header.Get("RateLimit-Policy") == "" {
		t.Error("the login answer has no RateLimit-Policy")
	}
	if tr.ExpiresIn != 900 || tr.RefreshExpiresIn != 30*24*3600 {
		t.Errorf("expires_in = %d, refresh_expires_in = %d", tr.ExpiresIn, tr.RefreshExpiresIn)
	}
	c := claims(t, tr.AccessToken)
	if c["sub"] != a.ID || c["sid"] != tr.SessionID || c["email"] != "login@example.com" ||
		c["iss"] != testIssuer || c["aud"] != testAudience || c["sst"] != e.user("login@example.com").SecurityStamp {
		t.Errorf("claims = %v", c)
	}
	if amr, _ := c["amr"].([]any); len(amr) != 1 || amr[0] != "pwd" {
		t.Errorf("amr = %v, want [pwd]", c["amr"])
	}
	r = e.me(tr.AccessToken)
	wantStatus(t, r, http.StatusOK)
	var me account
	r.decode(t, &me)
	if me.ID != a.ID || me.Email != "login@example.com" || me.MFAEnabled || me.LastLoginAt == nil || !me.LastLoginAt.Equal(t0) {
		t.Errorf("/me = %s", r)
	}
	if rows := e.auditOf(authn.EventLoginSuccess); len(rows) != 1 || rows[0].UserID != a.ID {
		t.Errorf("LOGIN_SUCCESS rows = %+v", rows)
	}
	// Error answers carry the security headers too.
	r = failLogin(e, "login@example.com")
	for k, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("on a 401, %s = %q, want %q", k, got, want)
		}
	}
}

func TestLoginRequiresEmailAndPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := wantProblem(t, e.post("/login", `{}`), http.StatusUnprocessableEntity, "validation_failed")
	if len(p.Errors) != 2 || p.Errors[0].Field != "email" || p.Errors[1].Field != "password" {
		t.Fatalf("errors = %+v", p.Errors)
	}
	p = wantProblem(t, e.post("/login", `{"email":"a@example.com"}`), http.StatusUnprocessableEntity, "validation_failed")
	if len(p.Errors) != 1 || p.Errors[0].Field != "password" {
		t.Fatalf("errors = %+v", p.Errors)
	}
}

// TestLoginUnknownEmailAndWrongPasswordLookTheSame: same status and body, and both
// compute one Argon2id verification (the unknown email verifies the dummy hash).
func TestLoginUnknownEmailAndWrongPasswordLookTheSame(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("known@example.com", pw)

	before := e.hashCount("verify")
	unknown := e.post("/login", map[string]string{"email": "nobody@example.com", "password": pw})
	if n := e.hashCount("verify") - before; n != 1 {
		t.Fatalf("an unknown email ran %d Argon2id verifications, want 1 (the dummy hash)", n)
	}
	before = e.hashCount("verify")
	wrong := e.post("/login", map[string]string{"email": "known@example.com", "password": "not the password at all"})
	if n := e.hashCount("verify") - before; n != 1 {
		t.Fatalf("a wrong password ran %d Argon2id verifications, want 1", n)
	}
	wantProblem(t, unknown, http.StatusUnauthorized, "invalid_credentials")
	wantProblem(t, wrong, http.StatusUnauthorized, "invalid_credentials")
	if !bytes.Equal(unknown.Body, wrong.Body) {
		t.Fatalf("bodies differ:\nunknown email:  %s\nwrong password: %s", unknown.Body, wrong.Body)
	}
	for _, h := range []string{"Content-Type", "Cache-Control", "WWW-Authenticate", "Retry-After"} {
		if unknown.Header.Get(h) != wrong.Header.Get(h) {
			t.Errorf("header %s differs: %q vs %q", h, unknown.Header.Get(h), wrong.Header.Get(h))
		}
	}
	// Both failures are audited, with what the caller cannot see.
	rows := e.auditOf(authn.EventLoginFailed)
	var reasons []string
	for _, r := range rows {
		reasons = append(reasons, string(r.Details))
	}
	if len(rows) != 2 || !strings.Contains(strings.Join(reasons, " "), "unknown_email") ||
		!strings.Contains(strings.Join(reasons, " "), "wrong_password") {
		t.Fatalf("LOGIN_FAILED rows: %v", reasons)
	}
}

// TestLoginNormalisesTheEmail: trimming, NFKC and lower-casing apply at login too.
func TestLoginNormalisesTheEmail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("carol@example.com", pw)
	for _, email := range []string{" CAROL@example.com ", "Carol@EXAMPLE.COM", "ｃａｒｏｌ@example.com"} {
		e.login(email, pw)
	}
}

// TestLoginPasswordIsNFKCNormalised: NFC and NFD spellings of one password are one password.
func TestLoginPasswordIsNFKCNormalised(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	nfc := norm.NFC.String("crème brûlée à la française")
	nfd := norm.NFD.String(nfc)
	if nfc == nfd {
		t.Fatal("the two spellings should differ in bytes")
	}
	e.register("dave@example.com", nfc)
	e.login("dave@example.com", nfd)
	e.login("dave@example.com", nfc)

	e.register("erin@example.com", nfd)
	e.login("erin@example.com", nfc)
	// Compatibility characters fold too: the ligature ﬁ is "fi".
	e.register("fred@example.com", "the ﬁnest passphrase")
	e.login("fred@example.com", "the finest passphrase")
}

// failLogin answers one wrong-password login.
func failLogin(e *env, email string, opts ...reqOpt) *response {
	e.t.Helper()
	return e.post("/login", map[string]string{"email": email, "password": "wrong wrong wrong wrong"}, opts...)
}

func TestLoginLocksTheAccountAfterFiveFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("lock@example.com", pw)
	for i := range 5 {
		wantProblem(t, failLogin(e, "lock@example.com"), http.StatusUnauthorized, "invalid_credentials")
		if i < 4 {
			e.clock.Add(time.Second)
		}
	}
	// Locked now: even the right password gets 423 with Retry-After.
	r := e.post("/login", map[string]string{"email": "LOCK@example.com", "password": pw})
	wantProblem(t, r, http.StatusLocked, "account_locked")
	if got := r.Header.Get("Retry-After"); got != "60" {
		t.Fatalf("Retry-After = %q, want 60", got)
	}
	e.clock.Add(30 * time.Second)
	r = failLogin(e, "lock@example.com")
	wantProblem(t, r, http.StatusLocked, "account_locked")
	if got := r.Header.Get("Retry-After"); got != "30" {
		t.Fatalf("Retry-After = %q, want 30", got)
	}
	e.clock.Add(30 * time.Second)
	e.login("lock@example.com", pw)

	if rows := e.auditOf(authn.EventAccountLocked); len(rows) != 1 {
		t.Fatalf("ACCOUNT_LOCKED rows = %d, want 1", len(rows))
	}
	// A lock does not rotate the stamp (anyone could log a user out everywhere).
	u := e.user("lock@example.com")
	tr := e.login("lock@example.com", pw)
	for range 6 {
		failLogin(e, "lock@example.com")
	}
	wantStatus(t, e.me(tr.AccessToken), http.StatusOK)
	if e.user("lock@example.com").SecurityStamp != u.SecurityStamp {
		t.Fatal("a lockout rotated the security stamp")
	}
}

func TestLoginLockoutCountsUnknownEmails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for range 5 {
		wantProblem(t, failLogin(e, "ghost@example.com"), http.StatusUnauthorized, "invalid_credentials")
	}
	wantProblem(t, failLogin(e, "Ghost@Example.com "), http.StatusLocked, "account_locked")
	// The lock is per normalised email, so registering then logging in meets it.
	e.register("ghost@example.com", pw)
	wantProblem(t, e.post("/login", map[string]string{"email": "ghost@example.com", "password": pw}), http.StatusLocked, "account_locked")
	// Other emails are not affected.
	wantProblem(t, failLogin(e, "other@example.com"), http.StatusUnauthorized, "invalid_credentials")
}

// TestLoginLockoutEscalates: the second lock lasts 5 minutes, not 1.
func TestLoginLockoutEscalates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("esc@example.com", pw)
	lock := func() *response {
		for range 5 {
			wantProblem(t, failLogin(e, "esc@example.com"), http.StatusUnauthorized, "invalid_credentials")
		}
		return wantLocked(t, failLogin(e, "esc@example.com"))
	}
	if r := lock(); r.Header.Get("Retry-After") != "60" {
		t.Fatalf("first lock Retry-After = %q, want 60", r.Header.Get("Retry-After"))
	}
	e.clock.Add(time.Minute)
	if r := lock(); r.Header.Get("Retry-After") != "300" {
		t.Fatalf("second lock Retry-After = %q, want 300", r.Header.Get("Retry-After"))
	}
	e.clock.Add(4 * time.Minute)
	wantLocked(t, e.post("/login", map[string]string{"email": "esc@example.com", "password": pw}))
	e.clock.Add(time.Minute)
	e.login("esc@example.com", pw)
	// The success reset the escalation: the next lock is 1 minute again.
	if r := lock(); r.Header.Get("Retry-After") != "60" {
		t.Fatalf("lock after a success Retry-After = %q, want 60", r.Header.Get("Retry-After"))
	}
}

func wantLocked(t testing.TB, r *response) *response {
	t.Helper()
	wantProblem(t, r, http.StatusLocked, "account_locked")
	if r.Header.Get("Retry-After") == "" {
		t.Fatalf("423 without Retry-After")
	}
	return r
}

// TestLoginSuccessResetsTheFailureCount: 4 failures, a success, 4 failures: not locked.
func TestLoginSuccessResetsTheFailureCount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("reset@example.com", pw)
	for range 4 {
		failLogin(e, "reset@example.com")
	}
	e.login("reset@example.com", pw)
	for range 4 {
		wantProblem(t, failLogin(e, "reset@example.com"), http.StatusUnauthorized, "invalid_credentials")
	}
	e.login("reset@example.com", pw)
}

// TestLoginHoneypotAnswers401AndDoesNotCount: a filled website_url is refused like a
// wrong password, audited, and never counts toward the lockout.
func TestLoginHoneypotAnswers401AndDoesNotCount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("honey@example.com", pw)
	wrong := failLogin(e, "nobody@example.com")
	before := e.hashCount("verify")
	var last *response
	for range 8 {
		last = e.post("/login", map[string]string{"email": "honey@example.com", "password": pw, "website_url": "x"})
		wantProblem(t, last, http.StatusUnauthorized, "invalid_credentials")
	}
	if !bytes.Equal(last.Body, wrong.Body) {
		t.Fatalf("honeypot body %s differs from a wrong password's %s", last.Body, wrong.Body)
	}
	if n := e.hashCount("verify") - before; n != 8 {
		t.Fatalf("honeypot logins ran %d verifications, want 8 (same cost as a real one)", n)
	}
	if _, err := e.st.GetLockout(context.Background(), "honey@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("honeypot hits touched the lockout (err %v)", err)
	}
	e.login("honey@example.com", pw)
	rows := e.auditOf(authn.EventSuspiciousActivity)
	if len(rows) != 8 || !strings.Contains(string(rows[0].Details), `"login"`) {
		t.Fatalf("SUSPICIOUS_ACTIVITY rows = %d (%+v)", len(rows), rows)
	}
}

// TestLoginParallelWrongPasswordsGetAtMostFiveGuesses: counting is atomic, so 20
// simultaneous guesses get 5 verified answers and 15 × 423.
func TestLoginParallelWrongPasswordsGetAtMostFiveGuesses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("race@example.com", pw)
	var unauthorized, locked, other atomic.Int32
	parallel(20, func(int) {
		switch failLogin(e, "race@example.com").Code {
		case http.StatusUnauthorized:
			unauthorized.Add(1)
		case http.StatusLocked:
			locked.Add(1)
		default:
			other.Add(1)
		}
	})
	if unauthorized.Load() != 5 || locked.Load() != 15 || other.Load() != 0 {
		t.Fatalf("401: %d, 423: %d, other: %d; want 5, 15, 0", unauthorized.Load(), locked.Load(), other.Load())
	}
}

// TestUnlockClearsTheLockAndIsAudited: authd user unlock.
func TestUnlockClearsTheLockAndIsAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.register("unlock@example.com", pw)
	for range 6 {
		failLogin(e, "unlock@example.com")
	}
	wantLocked(t, e.post("/login", map[string]string{"email": "unlock@example.com", "password": pw}))
	if err := authn.Unlock(context.Background(), e.st, " UNLOCK@example.com", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	e.login("unlock@example.com", pw)
	rows := e.auditOf(authn.EventAccountUnlocked)
	if len(rows) != 1 || rows[0].UserID != a.ID || !strings.Contains(string(rows[0].Details), "unlock@example.com") {
		t.Fatalf("ACCOUNT_UNLOCKED rows = %+v", rows)
	}
	// Unknown emails can be unlocked too; a malformed one is refused.
	for range 5 {
		failLogin(e, "nouser@example.com")
	}
	if err := authn.Unlock(context.Background(), e.st, "nouser@example.com", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, failLogin(e, "nouser@example.com"), http.StatusUnauthorized, "invalid_credentials")
	var verr *authn.ValidationError
	if err := authn.Unlock(context.Background(), e.st, "not an email", e.clock.Now()); !errors.As(err, &verr) {
		t.Fatalf("Unlock(malformed) = %v, want a validation error", err)
	}
}

// TestLoginRehashesAHashWithOtherParameters: a hash made with older parameters verifies
// and is replaced by one with the live parameters.
func TestLoginRehashesAHashWithOtherParameters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("old@example.com", pw)
	oldHasher, err := password.NewHasher(password.Options{Params: password.Params{Memory: 4 * 1024, Time: 2, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	oldHash, err := oldHasher.Hash(context.Background(), pw)
	if err != nil {
		t.Fatal(err)
	}
	u := e.user("old@example.com")
	if _, err := e.st.UpdateUser(context.Background(), u.ID, func(u store.User) (store.User, error) {
		u.PasswordHash = oldHash
		return u, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.login("old@example.com", pw)
	now := e.user("old@example.com").PasswordHash
	if now == oldHash || !strings.HasPrefix(now, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Fatalf("stored hash after login = %q, want the live parameters m=8192,t=1,p=1", now)
	}
	if ok, rehash, err := e.hasher.Verify(context.Background(), pw, now); !ok || rehash || err != nil {
		t.Fatalf("the new hash: ok %v rehash %v err %v", ok, rehash, err)
	}
	e.login("old@example.com", pw)
}

// TestLoginOverloadedIs503: with one Argon2 slot and a 1 ms wait, a burst gets 503
// overloaded with Retry-After.
func TestLoginOverloadedIs503(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) {
		c.params = password.Params{Memory: 16 * 1024, Time: 2, Threads: 1} // slow enough to queue behind
		c.maxConcurrent = 1
		c.maxWait = time.Millisecond
	})
	// One account each, so the burst meets no lockout; most are unknown emails, which
	// cost a (dummy) verification all the same.
	e.register("busy0@example.com", pw)
	var ok, overloaded, other atomic.Int32
	var sample atomic.Pointer[response]
	parallel(16, func(i int) {
		r := e.post("/login", map[string]string{"email": fmt.Sprintf("busy%d@example.com", i), "password": pw})
		switch r.Code {
		case http.StatusOK, http.StatusUnauthorized:
			ok.Add(1)
		case http.StatusServiceUnavailable:
			overloaded.Add(1)
			sample.Store(r)
		default:
			other.Add(1)
		}
	})
	if overloaded.Load() == 0 || ok.Load() == 0 || other.Load() != 0 {
		t.Fatalf("answered: %d, 503: %d, other: %d; want some answers and at least one 503", ok.Load(), overloaded.Load(), other.Load())
	}
	r := sample.Load()
	wantProblem(t, r, http.StatusServiceUnavailable, "overloaded")
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 overloaded without Retry-After")
	}
	if e.counter("authd_password_hash_overloaded_total") < float64(overloaded.Load()) {
		t.Error("the overloaded metric did not count the refusals")
	}
}

// TestLoginOverloadedIsNotAFailure: a login refused with 503 overloaded verified nothing,
// so it does not count toward the lockout.
func TestLoginOverloadedIsNotAFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) {
		c.maxConcurrent = 1
		c.maxWait = time.Millisecond
	})
	e.register("queued@example.com", pw)
	// Hold the one slot: verifying a hash made with more memory than the budget takes the
	// whole budget, for about a second (128 MiB, 8 passes).
	salt := base64.RawStdEncoding.EncodeToString(make([]byte, 16))
	tag := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	big := "$argon2id$v=19$m=131072,t=8,p=1$" + salt + "$" + tag
	held := make(chan struct{})
	go func() {
		defer close(held)
		_, _, _ = e.hasher.Verify(context.Background(), "x", big)
	}()
	// Wait until the slot is taken (a probe on another email is refused), then send six
	// logins that are all refused.
	deadline := time.Now().Add(10 * time.Second)
	for e.post("/login", map[string]string{"email": "probe@example.com", "password": pw}).Code != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("the slot never looked taken")
		}
	}
	for i := range 6 {
		r := e.post("/login", map[string]string{"email": "queued@example.com", "password": pw})
		if r.Code != http.StatusServiceUnavailable {
			t.Fatalf("login %d while the slot was held: %s", i, r)
		}
	}
	<-held
	e.login("queued@example.com", pw)
}

// TestLoginRateLimitedIs429WithHeaders: per client IP and per normalised email.
func TestLoginRateLimitedIs429WithHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) {
		c.limits.LoginIP = rule(ratelimit.ClassLoginIP, ratelimit.Limit{Burst: 3, Period: time.Minute})
		c.limits.LoginEmail = rule(ratelimit.ClassLoginEmail, ratelimit.Limit{Burst: 5, Period: time.Hour})
	})
	e.register("rl@example.com", pw)
	for i := range 3 {
		r := e.post("/login", map[string]string{"email": "rl@example.com", "password": pw}, fromIP("203.0.113.1"))
		tokensOf(t, r)
		if got, want := r.Header.Get("RateLimit"), `"login-ip";r=`+strconv.Itoa(2-i)+";"; !strings.HasPrefix(got, want) {
			t.Errorf("RateLimit = %q, want prefix %q", got, want)
		}
	}
	r := e.post("/login", map[string]string{"email": "rl@example.com", "password": pw}, fromIP("203.0.113.1"))
	wantProblem(t, r, http.StatusTooManyRequests, "rate_limited")
	if got := r.Header.Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After = %q, want 20 (one token of 3/1m)", got)
	}
	if got := r.Header.Get("RateLimit-Policy"); got != `"login-ip";q=3;w=60, "login-email";q=5;w=3600` {
		t.Errorf("RateLimit-Policy = %q", got)
	}
	if got := r.Header.Get("RateLimit"); !strings.HasPrefix(got, `"login-ip";r=0;`) {
		t.Errorf("RateLimit = %q", got)
	}
	// Another address has its own bucket; the refused take spent nothing of the email's.
	tokensOf(t, e.post("/login", map[string]string{"email": "RL@example.com", "password": pw}, fromIP("203.0.113.2")))
	// The bucket refills with the clock.
	e.clock.Add(20 * time.Second)
	tokensOf(t, e.post("/login", map[string]string{"email": "rl@example.com", "password": pw}, fromIP("203.0.113.1")))

	// The email bucket (5) is shared by every spelling of the address, from any address.
	r = e.post("/login", map[string]string{"email": " Rl@Example.COM", "password": pw}, fromIP("203.0.113.3"))
	wantProblem(t, r, http.StatusTooManyRequests, "rate_limited")
	if got := r.Header.Get("RateLimit"); !strings.HasPrefix(got, `"login-email";r=0;`) {
		t.Errorf("RateLimit = %q", got)
	}
	if rows := e.auditOf(authn.EventRateLimited); len(rows) != 2 {
		t.Fatalf("RATE_LIMITED rows = %d, want 2", len(rows))
	}
}

// TestOtherEndpointsAreRateLimited: register, refresh and verify-mfa per client IP,
// the authenticated API per user.
func TestOtherEndpointsAreRateLimited(t *testing.T) {
	t.Parallel()
	one := ratelimit.Limit{Burst: 1, Period: time.Hour}
	e := newEnv(t, func(c *config) {
		c.limits.RegisterIP = rule(ratelimit.ClassRegisterIP, ratelimit.Limit{Burst: 2, Period: time.Hour})
		c.limits.RefreshIP = rule(ratelimit.ClassRefreshIP, one)
		c.limits.VerifyMFAIP = rule(ratelimit.ClassVerifyMFAIP, one)
		c.limits.APIUser = rule(ratelimit.ClassAPIUser, ratelimit.Limit{Burst: 2, Period: time.Hour})
	})
	e.register("r1@example.com", pw)
	// A refused registration still takes its token: the limit comes before the body.
	wantProblem(t, e.post("/register", map[string]string{"email": "r2@example.com", "password": "short"}), http.StatusUnprocessableEntity, "validation_failed")
	wantProblem(t, e.post("/register", map[string]string{"email": "r3@example.com", "password": "a long and lovely passphrase"}),
		http.StatusTooManyRequests, "rate_limited")

	tr := e.login("r1@example.com", pw)
	wantProblem(t, e.refresh("unknown-token"), http.StatusUnauthorized, "invalid_token")
	wantProblem(t, e.refresh(tr.RefreshToken), http.StatusTooManyRequests, "rate_limited")
	tokensOf(t, e.refresh(tr.RefreshToken, fromIP("203.0.113.9"))) // nothing was spent by the 429

	wantProblem(t, e.post("/verify-mfa", map[string]string{"pre_auth_token": "x", "code": "123456"}), http.StatusUnauthorized, "invalid_token")
	wantProblem(t, e.post("/verify-mfa", map[string]string{"pre_auth_token": "x", "code": "123456"}), http.StatusTooManyRequests, "rate_limited")

	tr = e.login("r1@example.com", pw, fromIP("203.0.113.10"))
	wantStatus(t, e.me(tr.AccessToken), http.StatusOK)
	wantStatus(t, e.me(tr.AccessToken, fromIP("203.0.113.11")), http.StatusOK)
	wantProblem(t, e.me(tr.AccessToken, fromIP("203.0.113.12")), http.StatusTooManyRequests, "rate_limited")
}

// TestDefaultArgon2ParametersRegisterAndLogin runs production's parameters once
// (m=64 MiB, t=3, p=4).
func TestDefaultArgon2ParametersRegisterAndLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.defaultParams = true })
	e.register("default@example.com", pw)
	if h := e.user("default@example.com").PasswordHash; !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=4$") {
		t.Fatalf("hash = %q, want the default parameters", h)
	}
	tr := e.login("default@example.com", pw)
	wantStatus(t, e.me(tr.AccessToken), http.StatusOK)
	wantProblem(t, failLogin(e, "default@example.com"), http.StatusUnauthorized, "invalid_credentials")
	if n := e.hashCount("verify"); n != 2 {
		t.Fatalf("verifications = %d, want 2", n)
	}
}
