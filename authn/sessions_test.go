package authn_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
)

// TestRefreshRotatesAndReuseKillsTheSession: each refresh spends its token; presenting a
// spent one is theft, so the whole session ends.
func TestRefreshRotatesAndReuseKillsTheSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("rot@example.com", pw)
	first := e.login("rot@example.com", pw)
	e.clock.Add(time.Minute)
	r := e.refresh(first.RefreshToken)
	second := tokensOf(t, r)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("refresh Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	if second.SessionID != first.SessionID || second.RefreshToken == first.RefreshToken || second.AccessToken == first.AccessToken {
		t.Fatalf("refresh did not rotate: %+v → %+v", first, second)
	}
	wantStatus(t, e.me(second.AccessToken), http.StatusOK)

	r = e.refresh(first.RefreshToken)
	wantProblem(t, r, http.StatusUnauthorized, "token_reused")
	if !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
	}
	// The session is dead: its newest refresh token and its access tokens too.
	wantProblem(t, e.refresh(second.RefreshToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.me(second.AccessToken), http.StatusUnauthorized, "session_revoked")
	if !e.hasMessage(revocation.SessionRevoked(first.SessionID)) {
		t.Errorf("no session_revoked message for the reused session; got %+v", e.messages())
	}
	rows := e.auditOf(authn.EventTokenReuse)
	if len(rows) != 1 || rows[0].RiskScore < 80 {
		t.Fatalf("TOKEN_REUSE_DETECTED rows = %+v, want one with high risk", rows)
	}
	if rows := e.auditOf(authn.EventTokenRefreshed); len(rows) != 1 {
		t.Fatalf("TOKEN_REFRESHED rows = %d, want 1", len(rows))
	}
}

// TestConcurrentRefreshesYieldOneSuccessor: spending is one atomic update.
func TestConcurrentRefreshesYieldOneSuccessor(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"postgres", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *config) { c.backend = backend })
			e.register("conc@example.com", pw)
			tr := e.login("conc@example.com", pw)
			var ok, refused, other atomic.Int32
			parallel(8, func(int) {
				r := e.refresh(tr.RefreshToken)
				switch {
				case r.Code == http.StatusOK:
					ok.Add(1)
				// A loser sees the token spent (token_reused), or, when it read the token
				// before the winner committed, a session another loser already ended.
				case r.Code == http.StatusUnauthorized && (strings.Contains(string(r.Body), `"token_reused"`) ||
					strings.Contains(string(r.Body), `"session_revoked"`)):
					refused.Add(1)
				default:
					other.Add(1)
					t.Errorf("unexpected answer %s", r)
				}
			})
			if ok.Load() != 1 || refused.Load() != 7 {
				t.Fatalf("200: %d, 401: %d, other: %d; want exactly one 200", ok.Load(), refused.Load(), other.Load())
			}
			if rows := e.auditOf(authn.EventTokenReuse); len(rows) == 0 {
				t.Fatal("the race was not audited as a reuse")
			}
		})
	}
}

func TestRefreshRefusesUnknownAndMissingTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantProblem(t, e.refresh("bm90IGEgcmVhbCB0b2tlbg"), http.StatusUnauthorized, "invalid_token")
	wantProblem(t, e.refresh(strings.Repeat("A", 300)), http.StatusUnauthorized, "invalid_token")
	p := wantProblem(t, e.post("/refresh", `{}`), http.StatusUnprocessableEntity, "validation_failed")
	if len(p.Errors) != 1 || p.Errors[0].Field != "refresh_token" {
		t.Fatalf("errors = %+v", p.Errors)
	}
}

// TestRefreshFromAnotherDeviceRevokesTheSession: the fingerprint (User-Agent,
// Accept-Language, X-Device-Fingerprint) must match the login's.
func TestRefreshFromAnotherDeviceRevokesTheSession(t *testing.T) {
	t.Parallel()
	for _, change := range []struct {
		name string
		opt  reqOpt
	}{
		{"User-Agent", userAgent("curl/8.0")},
		{"Accept-Language", header("Accept-Language", "fr-FR")},
		{"X-Device-Fingerprint", header("X-Device-Fingerprint", "other-device")},
	} {
		t.Run(change.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.register("dev@example.com", pw)
			tr := e.login("dev@example.com", pw, header("X-Device-Fingerprint", "phone-1"))
			wantProblem(t, e.refresh(tr.RefreshToken, header("X-Device-Fingerprint", "phone-1"), change.opt),
				http.StatusUnauthorized, "session_revoked")
			// The session is revoked: the right device cannot use it either.
			wantProblem(t, e.refresh(tr.RefreshToken, header("X-Device-Fingerprint", "phone-1")), http.StatusUnauthorized, "session_revoked")
			wantProblem(t, e.me(tr.AccessToken), http.StatusUnauthorized, "session_revoked")
			rows := e.auditOf(authn.EventHijackSuspected)
			if len(rows) != 1 || rows[0].RiskScore < 80 || !strings.Contains(string(rows[0].Details), tr.SessionID) {
				t.Fatalf("SESSION_HIJACK_SUSPECTED rows = %+v", rows)
			}
			if !e.hasMessage(revocation.SessionRevoked(tr.SessionID)) {
				t.Fatalf("no session_revoked message; got %+v", e.messages())
			}
		})
	}
}

// TestSessionLifetimeIsAbsolute: a session ends 90 days after login however often it is
// refreshed; the last refresh tokens are cut to the session's end.
func TestSessionLifetimeIsAbsolute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("life@example.com", pw)
	rt := e.login("life@example.com", pw).RefreshToken
	for _, day := range []int{25, 50, 75, 89} {
		e.clock.Set(t0.Add(time.Duration(day) * 24 * time.Hour))
		tr := tokensOf(t, e.refresh(rt))
		if day == 89 && tr.RefreshExpiresIn != 24*3600 {
			t.Fatalf("on day 89 refresh_expires_in = %d, want one day (the session's end)", tr.RefreshExpiresIn)
		}
		rt = tr.RefreshToken
	}
	e.clock.Set(t0.Add(90 * 24 * time.Hour))
	wantProblem(t, e.refresh(rt), http.StatusUnauthorized, "invalid_token")
}

// TestRefreshTokenExpiresAfter30Days: unused for 30 days, a refresh token is dead.
func TestRefreshTokenExpiresAfter30Days(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("idle@example.com", pw)
	a := e.login("idle@example.com", pw)
	b := e.login("idle@example.com", pw)
	e.clock.Set(t0.Add(30*24*time.Hour - time.Second))
	tokensOf(t, e.refresh(a.RefreshToken))
	e.clock.Set(t0.Add(30 * 24 * time.Hour))
	wantProblem(t, e.refresh(b.RefreshToken), http.StatusUnauthorized, "invalid_token")
}

// TestRefreshAfterTheSessionEndsIsRefused: the session's absolute end applies even to a
// refresh token that would still be valid (a session whose end is sooner than the token's).
func TestRefreshAfterTheSessionEndsIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.opts.SessionTTL = time.Hour })
	e.register("short@example.com", pw)
	tr := e.login("short@example.com", pw)
	if tr.RefreshExpiresIn != 3600 {
		t.Fatalf("refresh_expires_in = %d, want the session's 3600", tr.RefreshExpiresIn)
	}
	e.clock.Add(59 * time.Minute)
	tr = tokensOf(t, e.refresh(tr.RefreshToken))
	e.clock.Add(time.Minute)
	wantProblem(t, e.refresh(tr.RefreshToken), http.StatusUnauthorized, "invalid_token")
	wantProblem(t, e.me(tr.AccessToken), http.StatusUnauthorized, "session_revoked")
}

func TestLogoutEndsTheSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("out@example.com", pw)
	tr := e.login("out@example.com", pw)
	other := e.login("out@example.com", pw, userAgent("other/1"))
	wantStatus(t, e.post("/logout", nil, bearer(tr.AccessToken)), http.StatusNoContent)
	wantProblem(t, e.me(tr.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(tr.RefreshToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.post("/logout", nil, bearer(tr.AccessToken)), http.StatusUnauthorized, "session_revoked")
	// Other sessions live on.
	wantStatus(t, e.me(other.AccessToken), http.StatusOK)
	tokensOf(t, e.refresh(other.RefreshToken, userAgent("other/1")))
	if !e.hasMessage(revocation.SessionRevoked(tr.SessionID)) {
		t.Fatalf("no session_revoked message; got %+v", e.messages())
	}
	if rows := e.auditOf(authn.EventLogout); len(rows) != 1 {
		t.Fatalf("LOGOUT rows = %d", len(rows))
	}
	// An empty object is a body too; anything else is refused.
	tr = e.login("out@example.com", pw)
	wantProblem(t, e.post("/logout", `{"all":true}`, bearer(tr.AccessToken)), http.StatusUnprocessableEntity, "validation_failed")
	wantStatus(t, e.post("/logout", `{}`, bearer(tr.AccessToken)), http.StatusNoContent)
}

// TestLogoutAllSessionsRotatesTheStamp: every session ends and every token issued before
// dies; the stamp rotation is published.
func TestLogoutAllSessionsRotatesTheStamp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.register("all@example.com", pw)
	one := e.login("all@example.com", pw)
	two := e.login("all@example.com", pw, userAgent("two/1"))
	stamp := e.user("all@example.com").SecurityStamp
	wantStatus(t, e.post("/logout", map[string]bool{"all_sessions": true}, bearer(one.AccessToken)), http.StatusNoContent)
	u := e.user("all@example.com")
	if u.SecurityStamp == stamp {
		t.Fatal("logout all_sessions did not rotate the stamp")
	}
	for _, tr := range []tokenResponse{one, two} {
		wantProblem(t, e.me(tr.AccessToken), http.StatusUnauthorized, "session_revoked")
	}
	wantProblem(t, e.refresh(two.RefreshToken, userAgent("two/1")), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(one.RefreshToken), http.StatusUnauthorized, "session_revoked")
	for _, m := range []revocation.Message{
		revocation.SessionRevoked(one.SessionID), revocation.SessionRevoked(two.SessionID),
		revocation.StampRotated(a.ID, u.SecurityStamp),
	} {
		if !e.hasMessage(m) {
			t.Errorf("message %+v not published; got %+v", m, e.messages())
		}
	}
	e.login("all@example.com", pw)
}

// TestChangePasswordRotatesTheStampAndKeepsOnlyTheCaller: fresh tokens for the caller's
// session; every other session and every older token dies.
func TestChangePasswordRotatesTheStampAndKeepsOnlyTheCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.register("chg@example.com", pw)
	mine := e.login("chg@example.com", pw)
	other := e.login("chg@example.com", pw, userAgent("other/1"))
	const newPW = "an entirely new passphrase"
	e.clock.Add(time.Second) // the stamp records its rotation in milliseconds
	r := e.post("/change-password", map[string]string{"current_password": pw, "new_password": newPW}, bearer(mine.AccessToken))
	fresh := tokensOf(t, r)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	if fresh.SessionID != mine.SessionID || fresh.AccessToken == mine.AccessToken || fresh.RefreshToken == mine.RefreshToken {
		t.Fatalf("change-password tokens: %+v (before %+v)", fresh, mine)
	}
	wantStatus(t, e.me(fresh.AccessToken), http.StatusOK)
	wantProblem(t, e.me(mine.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.me(other.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(other.RefreshToken, userAgent("other/1")), http.StatusUnauthorized, "session_revoked")
	// The caller's own older refresh token was issued before the rotation.
	wantProblem(t, e.refresh(mine.RefreshToken), http.StatusUnauthorized, "session_revoked")
	tokensOf(t, e.refresh(fresh.RefreshToken)) // … which does not end the session

	wantProblem(t, e.post("/login", map[string]string{"email": "chg@example.com", "password": pw}), http.StatusUnauthorized, "invalid_credentials")
	e.login("chg@example.com", newPW)
	if !e.hasMessage(revocation.StampRotated(a.ID, e.user("chg@example.com").SecurityStamp)) ||
		!e.hasMessage(revocation.SessionRevoked(other.SessionID)) {
		t.Fatalf("messages = %+v", e.messages())
	}
	if rows := e.auditOf(authn.EventPasswordChanged); len(rows) != 1 {
		t.Fatalf("PASSWORD_CHANGED rows = %d", len(rows))
	}
}

func TestChangePasswordRefusesAWrongOrWeakPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("weak@example.com", pw)
	tr := e.login("weak@example.com", pw)
	stamp := e.user("weak@example.com").SecurityStamp
	wantProblem(t, e.post("/change-password", map[string]string{"current_password": "not my password!", "new_password": "an entirely new passphrase"},
		bearer(tr.AccessToken)), http.StatusUnauthorized, "invalid_credentials")
	for _, tt := range []struct{ body, field string }{
		{`{"current_password":"` + pw + `","new_password":"too short"}`, "new_password"},
		{`{"current_password":"` + pw + `","new_password":"WEAK@example.com"}`, "new_password"},
		{`{"current_password":"` + pw + `","new_password":"123456789987654321"}`, "new_password"},
		{`{"new_password":"an entirely new passphrase"}`, "current_password"},
		{`{"current_password":"` + pw + `"}`, "new_password"},
	} {
		p := wantProblem(t, e.post("/change-password", tt.body, bearer(tr.AccessToken)), http.StatusUnprocessableEntity, "validation_failed")
		if len(p.Errors) != 1 || p.Errors[0].Field != tt.field {
			t.Errorf("%s: errors = %+v, want %s", tt.body, p.Errors, tt.field)
		}
	}
	if e.user("weak@example.com").SecurityStamp != stamp {
		t.Fatal("a refused change rotated the stamp")
	}
	wantStatus(t, e.me(tr.AccessToken), http.StatusOK)
	e.login("weak@example.com", pw)
	// A wrong current password counts toward the lockout like a failed login.
	for range 4 {
		wantProblem(t, e.post("/change-password", map[string]string{"current_password": "not my password!", "new_password": "an entirely new passphrase"},
			bearer(tr.AccessToken)), http.StatusUnauthorized, "invalid_credentials")
	}
	wantProblem(t, failLogin(e, "weak@example.com"), http.StatusUnauthorized, "invalid_credentials")
	wantLocked(t, e.post("/login", map[string]string{"email": "weak@example.com", "password": pw}))
}

// TestSingleSessionEndsOtherSessionsOnLogin: SINGLE_SESSION=true.
func TestSingleSessionEndsOtherSessionsOnLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.opts.SingleSession = true })
	a := e.register("single@example.com", pw)
	first := e.login("single@example.com", pw)
	second := e.login("single@example.com", pw, userAgent("second/1"))
	wantProblem(t, e.me(first.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(first.RefreshToken), http.StatusUnauthorized, "session_revoked")
	wantStatus(t, e.me(second.AccessToken), http.StatusOK)
	tokensOf(t, e.refresh(second.RefreshToken, userAgent("second/1")))
	if !e.hasMessage(revocation.SessionRevoked(first.SessionID)) ||
		!e.hasMessage(revocation.StampRotated(a.ID, e.user("single@example.com").SecurityStamp)) {
		t.Fatalf("messages = %+v", e.messages())
	}

	// Without the option, sessions coexist.
	f := newEnv(t)
	f.register("multi@example.com", pw)
	one := f.login("multi@example.com", pw)
	f.login("multi@example.com", pw, userAgent("second/1"))
	wantStatus(t, f.me(one.AccessToken), http.StatusOK)
}

// TestBearerTokensAreRefusedWhenNotValidAccessTokens: missing, malformed, forged,
// expired, or a pre-auth token.
func TestBearerTokensAreRefusedWhenNotValidAccessTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("bearer@example.com", pw)
	tr := e.login("bearer@example.com", pw)

	r := e.get("/me")
	wantProblem(t, r, http.StatusUnauthorized, "invalid_token")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
	}
	parts := strings.Split(tr.AccessToken, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	for _, auth := range []string{
		"Bearer not-a-jwt",
		"Bearer " + forged,
		"Basic " + tr.AccessToken,
		tr.AccessToken,
		"Bearer ",
		"Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + parts[1] + ".",
		"Bearer " + strings.Repeat("a", 9000),
	} {
		wantProblem(t, e.get("/me", header("Authorization", auth)), http.StatusUnauthorized, "invalid_token")
	}

	// A pre-auth token is never an access token.
	_, act := e.enableMFA(tr.AccessToken)
	pre := e.loginPreAuth("bearer@example.com", pw)
	wantProblem(t, e.me(pre.PreAuthToken), http.StatusUnauthorized, "invalid_token")

	// Expiry by the clock: 15 minutes and the 30 s leeway.
	iat := time.Unix(int64(claims(t, act.Tokens.AccessToken)["iat"].(float64)), 0)
	wantStatus(t, e.me(act.Tokens.AccessToken), http.StatusOK)
	e.clock.Set(iat.Add(15*time.Minute + 29*time.Second))
	wantStatus(t, e.me(act.Tokens.AccessToken), http.StatusOK)
	e.clock.Set(iat.Add(15*time.Minute + 30*time.Second))
	wantProblem(t, e.me(act.Tokens.AccessToken), http.StatusUnauthorized, "invalid_token")
}

// TestSessionsListMarksTheCurrentOne.
func TestSessionsListMarksTheCurrentOne(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("list@example.com", pw)
	one := tokensOf(t, e.post("/login", map[string]string{"email": "list@example.com", "password": pw, "device_name": "laptop"},
		fromIP("203.0.113.5")))
	e.clock.Add(time.Second)
	two := tokensOf(t, e.post("/login", map[string]string{"email": "list@example.com", "password": pw, "device_name": "phone"},
		userAgent("phone/2")))
	e.clock.Add(time.Second)
	gone := e.login("list@example.com", pw, userAgent("gone/1"))
	wantStatus(t, e.post("/logout", nil, bearer(gone.AccessToken), userAgent("gone/1")), http.StatusNoContent)

	r := e.get("/sessions", bearer(two.AccessToken))
	wantStatus(t, r, http.StatusOK)
	var list []struct {
		ID         string    `json:"id"`
		DeviceName string    `json:"device_name"`
		UserAgent  string    `json:"user_agent"`
		IP         string    `json:"ip"`
		CreatedAt  time.Time `json:"created_at"`
		LastSeenAt time.Time `json:"last_seen_at"`
		Current    bool      `json:"current"`
	}
	r.decode(t, &list)
	if len(list) != 2 {
		t.Fatalf("sessions = %s, want the two live ones", r)
	}
	byID := map[string]int{list[0].ID: 0, list[1].ID: 1}
	s1, s2 := list[byID[one.SessionID]], list[byID[two.SessionID]]
	if s1.ID != one.SessionID || s2.ID != two.SessionID {
		t.Fatalf("sessions = %s", r)
	}
	if s1.Current || !s2.Current {
		t.Fatalf("current flags: %s", r)
	}
	if s1.DeviceName != "laptop" || s1.IP != "203.0.113.5" || s1.UserAgent != defaultUA || !s1.CreatedAt.Equal(t0) ||
		s2.DeviceName != "phone" || s2.UserAgent != "phone/2" {
		t.Fatalf("sessions = %s", r)
	}
	if list[0].ID != two.SessionID {
		t.Errorf("sessions are not newest first: %s", r)
	}
}

func TestDeleteSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("del@example.com", pw)
	e.register("stranger@example.com", pw)
	mine := e.login("del@example.com", pw)
	other := e.login("del@example.com", pw, userAgent("other/1"))
	theirs := e.login("stranger@example.com", pw)

	wantStatus(t, e.do(http.MethodDelete, "/api/auth/sessions/"+other.SessionID, nil, bearer(mine.AccessToken)), http.StatusNoContent)
	wantProblem(t, e.me(other.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(other.RefreshToken, userAgent("other/1")), http.StatusUnauthorized, "session_revoked")
	wantStatus(t, e.me(mine.AccessToken), http.StatusOK)
	if !e.hasMessage(revocation.SessionRevoked(other.SessionID)) {
		t.Fatalf("messages = %+v", e.messages())
	}
	if rows := e.auditOf(authn.EventSessionRevoked); len(rows) != 1 || !strings.Contains(string(rows[0].Details), other.SessionID) {
		t.Fatalf("SESSION_REVOKED rows = %+v", rows)
	}
	// Deleting it again is fine (already gone).
	wantStatus(t, e.do(http.MethodDelete, "/api/auth/sessions/"+other.SessionID, nil, bearer(mine.AccessToken)), http.StatusNoContent)

	// Another user's session, a random id and a malformed one are all 404, and nothing changes.
	for _, id := range []string{theirs.SessionID, uuid.Must(uuid.NewV7()).String(), "not-a-uuid"} {
		wantProblem(t, e.do(http.MethodDelete, "/api/auth/sessions/"+id, nil, bearer(mine.AccessToken)), http.StatusNotFound, "not_found")
	}
	wantStatus(t, e.me(theirs.AccessToken), http.StatusOK)
	s, err := e.st.GetSession(context.Background(), theirs.SessionID)
	if err != nil || s.RevokedAt != nil {
		t.Fatalf("the stranger's session: %+v, %v", s, err)
	}
}

// TestEveryAuditEventIsWrittenWithARiskScore walks through every security event and
// checks its row: present, complete, scored 0–100, and high for theft and bots.
func TestEveryAuditEventIsWrittenWithARiskScore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.limits.LoginIP.Limit.Burst = 35 })

	// REGISTER, LOGIN_SUCCESS, LOGIN_FAILED
	e.register("audit@example.com", pw)
	tr := e.login("audit@example.com", pw)
	wantStatus(t, failLogin(e, "audit@example.com"), http.StatusUnauthorized)
	// TOKEN_REFRESHED, TOKEN_REUSE_DETECTED
	tokensOf(t, e.refresh(tr.RefreshToken))
	wantStatus(t, e.refresh(tr.RefreshToken), http.StatusUnauthorized)
	// SESSION_HIJACK_SUSPECTED
	tr = e.login("audit@example.com", pw)
	wantStatus(t, e.refresh(e.login("audit@example.com", pw).RefreshToken, userAgent("thief/1")), http.StatusUnauthorized)
	// SESSION_REVOKED
	del := e.login("audit@example.com", pw)
	wantStatus(t, e.do(http.MethodDelete, "/api/auth/sessions/"+del.SessionID, nil, bearer(tr.AccessToken)), http.StatusNoContent)
	// MFA_ENABLED, MFA_FAILED (a wrong code and an unknown recovery code), MFA_DISABLED
	secret, act := e.enableMFA(tr.AccessToken)
	pre := e.loginPreAuth("audit@example.com", pw)
	wantStatus(t, e.verifyMFA(pre.PreAuthToken, wrongCode(e.code(secret))), http.StatusUnauthorized)
	wantStatus(t, e.verifyMFA(pre.PreAuthToken, "aaaa-bbbb-cccc-dddd"), http.StatusUnauthorized)
	r := e.post("/mfa/disable", map[string]string{"password": pw, "code": e.code(secret)}, bearer(act.Tokens.AccessToken))
	tr = tokensOf(t, jsonField(t, r, "tokens"))
	// PASSWORD_CHANGED, LOGOUT
	tr = tokensOf(t, e.post("/change-password", map[string]string{"current_password": pw, "new_password": "a brand new passphrase"},
		bearer(tr.AccessToken)))
	wantStatus(t, e.post("/logout", nil, bearer(tr.AccessToken)), http.StatusNoContent)
	// SUSPICIOUS_ACTIVITY
	wantStatus(t, e.post("/login", map[string]string{"email": "x@example.com", "password": pw, "website_url": "x"}), http.StatusUnauthorized)
	// ACCOUNT_LOCKED, ACCOUNT_UNLOCKED
	for range 5 {
		failLogin(e, "locked@example.com")
	}
	if err := authn.Unlock(context.Background(), e.st, "locked@example.com", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	// RATE_LIMITED
	for range 36 {
		failLogin(e, "flood@example.com", fromIP("203.0.113.66"))
	}

	seen := map[string][]store.AuditEvent{}
	for _, row := range e.audit(store.AuditQuery{}) {
		seen[row.Event] = append(seen[row.Event], row)
		if row.ID == "" || row.CreatedAt.IsZero() || row.IP == "" && row.Event != authn.EventAccountUnlocked {
			t.Errorf("incomplete row %+v", row)
		}
	}
	for _, ev := range []string{
		authn.EventRegister, authn.EventLoginSuccess, authn.EventLoginFailed, authn.EventAccountLocked,
		authn.EventAccountUnlocked, authn.EventMFAEnabled, authn.EventMFADisabled, authn.EventMFAFailed,
		authn.EventPasswordChanged, authn.EventLogout, authn.EventTokenRefreshed, authn.EventTokenReuse,
		authn.EventSessionRevoked, authn.EventHijackSuspected, authn.EventSuspiciousActivity, authn.EventRateLimited,
	} {
		if len(seen[ev]) == 0 {
			t.Errorf("no %s row", ev)
		}
	}
	for _, ev := range []string{authn.EventTokenReuse, authn.EventHijackSuspected, authn.EventSuspiciousActivity} {
		for _, row := range seen[ev] {
			if row.RiskScore < 80 {
				t.Errorf("%s scored %d, want high (≥ 80)", ev, row.RiskScore)
			}
		}
	}
	// Rows are newest first: the account's first login is no new device and scores 0.
	if ls := seen[authn.EventLoginSuccess]; len(ls) > 0 && ls[len(ls)-1].RiskScore != 0 {
		t.Errorf("the first LOGIN_SUCCESS scored %d, want 0", ls[len(ls)-1].RiskScore)
	}
}

// jsonField returns the object at key of a 200 answer as an answer of its own.
func jsonField(t testing.TB, r *response, key string) *response {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var m map[string]json.RawMessage
	r.decode(t, &m)
	return &response{Code: http.StatusOK, Header: r.Header, Body: m[key]}
}
