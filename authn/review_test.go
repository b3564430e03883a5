package authn_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authd/authd/authn"
)

// TestHeaderBytesPostgreSQLRefusesAreCleanedNotFatal: a User-Agent with invalid UTF-8, or
// one whose 512-byte cut would split a character, neither breaks a login nor loses the
// audit row, and a theft response still revokes.
func TestHeaderBytesPostgreSQLRefusesAreCleanedNotFatal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("latin1@example.com", pw)
	for _, ua := range []string{"Mozilla\xff/5.0", strings.Repeat("a", 511) + "é"} {
		tokensOf(t, e.post("/login", map[string]string{"email": "latin1@example.com", "password": pw}, userAgent(ua)))
		wantProblem(t, e.post("/login", map[string]string{"email": "latin1@example.com", "password": "wrong " + pw}, userAgent(ua)),
			http.StatusUnauthorized, "invalid_credentials")
	}
	e.svc.Close() // flush the audit queue
	if n := len(e.auditOf(authn.EventLoginFailed)); n != 2 {
		t.Fatalf("LOGIN_FAILED rows = %d, want 2", n)
	}

	ua := "Mozilla\xff/5.0"
	tr := e.login("latin1@example.com", pw, userAgent(ua))
	next := tokensOf(t, e.refresh(tr.RefreshToken, userAgent(ua)))
	wantProblem(t, e.refresh(tr.RefreshToken, userAgent(ua)), http.StatusUnauthorized, "token_reused")
	wantProblem(t, e.me(next.AccessToken), http.StatusUnauthorized, "session_revoked")
}

// TestFreeTextFieldsRefuseControlCharacters: NUL and other control characters in
// full_name and device_name are a 422, not a database error.
func TestFreeTextFieldsRefuseControlCharacters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantProblem(t, e.post("/register", map[string]string{"email": "nul@example.com", "password": pw, "full_name": "a\x00b"}),
		http.StatusUnprocessableEntity, "validation_failed")
	e.register("nul@example.com", pw)
	wantProblem(t, e.post("/login", map[string]string{"email": "nul@example.com", "password": pw, "device_name": "x\x00"}),
		http.StatusUnprocessableEntity, "validation_failed")
}

// TestLoginRefusesMalformedEmailsBeforeCountingThem: a huge or NUL-bearing email is a 422
// (it would not fit the lockout key) and leaves no lockout row.
func TestLoginRefusesMalformedEmailsBeforeCountingThem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, email := range []string{strings.Repeat("x", 4000) + "@example.com", "x@y\x00", "no-at-sign"} {
		wantProblem(t, e.post("/login", map[string]string{"email": email, "password": pw}),
			http.StatusUnprocessableEntity, "validation_failed")
	}
}

// TestMFADisableCannotBeUsedToGuessCodes: the right password with wrong codes still
// reaches the lockout; the password does not reset the count.
func TestMFADisableCannotBeUsedToGuessCodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.mfaUser("disable-guess@example.com")
	p := e.loginPreAuth("disable-guess@example.com", pw)
	tr := tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(secret)))
	e.clock.Add(30 * time.Second)
	for range 5 {
		wantProblem(t, e.post("/mfa/disable", map[string]string{"password": pw, "code": wrongCode(e.code(secret))}, bearer(tr.AccessToken)),
			http.StatusUnauthorized, "invalid_mfa_code")
	}
	wantLocked(t, e.post("/mfa/disable", map[string]string{"password": pw, "code": e.code(secret)}, bearer(tr.AccessToken)))
}

// TestParallelCodeGuessesStopAtFiveTries: forty concurrent wrong codes on one pre-auth
// token get at most five code checks.
func TestParallelCodeGuessesStopAtFiveTries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.opts.LockoutThreshold = 1000 })
	secret, _ := e.mfaUser("parallel-codes@example.com")
	p := e.loginPreAuth("parallel-codes@example.com", pw)
	wrong := wrongCode(e.code(secret))
	var checked atomic.Int32
	parallel(40, func(int) {
		r := e.verifyMFA(p.PreAuthToken, wrong)
		if strings.Contains(string(r.Body), "invalid_mfa_code") {
			checked.Add(1)
		}
	})
	if n := checked.Load(); n > 5 {
		t.Fatalf("%d codes were checked on one pre-auth token, want at most 5", n)
	}
}

// TestPreAuthTokenDiesWithAStampRotation: a pre-auth token taken with a phished password
// is useless once the owner changes the password.
func TestPreAuthTokenDiesWithAStampRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.mfaUser("phished@example.com")
	owner := tokensOf(t, e.verifyMFA(e.loginPreAuth("phished@example.com", pw).PreAuthToken, e.code(secret)))
	e.clock.Add(30 * time.Second)
	attacker := e.loginPreAuth("phished@example.com", pw)
	tokensOf(t, e.post("/change-password", map[string]string{"current_password": pw, "new_password": "a brand new passphrase 42"},
		bearer(owner.AccessToken)))
	e.clock.Add(30 * time.Second)
	wantProblem(t, e.verifyMFA(attacker.PreAuthToken, e.code(secret)), http.StatusUnauthorized, "invalid_token")
}

// TestMFAVerifyTrimsTheCode: a code pasted with spaces around it activates MFA, as it
// logs in.
func TestMFAVerifyTrimsTheCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("spaces@example.com", pw)
	tr := e.login("spaces@example.com", pw)
	r := e.post("/mfa/enable", nil, bearer(tr.AccessToken))
	var s mfaSetup
	r.decode(t, &s)
	wantStatus(t, e.post("/mfa/verify", map[string]string{"code": " " + e.code(s.Secret) + " "}, bearer(tr.AccessToken)), http.StatusOK)
}
