package authn_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/revocation"
)

// TestWholeFlow runs the account life cycle on each backend: register → login → me →
// refresh → reuse of the old refresh token → login again → change-password → logout.
func TestWholeFlow(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"postgres", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *config) { c.backend = backend })
			a := e.register("Flow@Example.com", pw)

			first := e.login("flow@example.com", pw)
			r := e.me(first.AccessToken)
			wantStatus(t, r, http.StatusOK)
			var me account
			r.decode(t, &me)
			if me.ID != a.ID || me.Email != "flow@example.com" {
				t.Fatalf("/me = %s", r)
			}

			e.clock.Add(time.Minute)
			second := tokensOf(t, e.refresh(first.RefreshToken))
			wantStatus(t, e.me(second.AccessToken), http.StatusOK)

			// The old refresh token again: theft; the session dies.
			wantProblem(t, e.refresh(first.RefreshToken), http.StatusUnauthorized, "token_reused")
			wantProblem(t, e.me(second.AccessToken), http.StatusUnauthorized, "session_revoked")
			wantProblem(t, e.refresh(second.RefreshToken), http.StatusUnauthorized, "session_revoked")

			// Log in again, on two devices.
			mine := e.login("flow@example.com", pw)
			other := e.login("flow@example.com", pw, userAgent("tablet/1"))

			e.clock.Add(time.Minute)
			const newPW = "the flow's new passphrase"
			fresh := tokensOf(t, e.post("/change-password",
				map[string]string{"current_password": pw, "new_password": newPW}, bearer(mine.AccessToken)))
			wantProblem(t, e.refresh(other.RefreshToken, userAgent("tablet/1")), http.StatusUnauthorized, "session_revoked")
			wantProblem(t, e.me(other.AccessToken), http.StatusUnauthorized, "session_revoked")
			wantStatus(t, e.me(fresh.AccessToken), http.StatusOK)

			wantStatus(t, e.post("/logout", nil, bearer(fresh.AccessToken)), http.StatusNoContent)
			wantProblem(t, e.refresh(fresh.RefreshToken), http.StatusUnauthorized, "session_revoked")
			wantProblem(t, e.me(fresh.AccessToken), http.StatusUnauthorized, "session_revoked")

			wantProblem(t, e.post("/login", map[string]string{"email": "flow@example.com", "password": pw}),
				http.StatusUnauthorized, "invalid_credentials")
			e.login("flow@example.com", newPW)

			for _, m := range []revocation.Message{
				revocation.SessionRevoked(first.SessionID), revocation.SessionRevoked(other.SessionID),
				revocation.SessionRevoked(fresh.SessionID), revocation.StampRotated(a.ID, e.user("flow@example.com").SecurityStamp),
			} {
				if !e.hasMessage(m) {
					t.Errorf("message %+v not published", m)
				}
			}
			for _, ev := range []string{
				authn.EventRegister, authn.EventLoginSuccess, authn.EventTokenRefreshed, authn.EventTokenReuse,
				authn.EventPasswordChanged, authn.EventLogout, authn.EventLoginFailed,
			} {
				if len(e.auditOf(ev)) == 0 {
					t.Errorf("no %s audit row", ev)
				}
			}
		})
	}
}
