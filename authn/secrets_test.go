package authn_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/unicode/norm"

	"github.com/authd/authd/store"
)

// TestNoSecretInLogsErrorsOrMetrics runs the password and MFA flows, failures included,
// then looks for every password, token, TOTP secret, TOTP code and recovery code in the
// captured JSON log, the audit log, every error body and the /metrics output.
func TestNoSecretInLogsErrorsOrMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var secrets, codes []string // codes are 6 digits and matched as whole numbers
	var errorBodies []string
	keep := func(ss ...string) {
		for _, s := range ss {
			if s != "" {
				secrets = append(secrets, s)
			}
		}
	}
	check := func(r *response) *response {
		t.Helper()
		if r.Code >= 400 {
			errorBodies = append(errorBodies, string(r.Body))
		}
		return r
	}
	keepTokens := func(tr tokenResponse) tokenResponse {
		keep(tr.AccessToken, tr.RefreshToken)
		return tr
	}

	const (
		pw1   = "sekrit passphrase number one"
		pw2   = "sekrit passphrase number two"
		wrong = "sekrit but wrong passphrase"
		weak  = "sekrit7"
	)
	keep(pw1, pw2, wrong, weak, norm.NFD.String("sekrit pâsse 3"))

	check(e.post("/register", map[string]string{"email": "leak@example.com", "password": weak}))
	check(e.post("/register", `{"email":"leak@example.com","password":"`+pw1+`","password":"`+pw2+`"}`))
	check(e.post("/register", "{\"email\":\"leak@example.com\",\"password\":\""+pw1+"\xff\"}"))
	e.register("leak@example.com", pw1)
	check(e.post("/login", map[string]string{"email": "leak@example.com", "password": wrong}))
	check(e.post("/login", map[string]string{"email": "nobody@example.com", "password": norm.NFD.String("sekrit pâsse 3")}))
	check(e.post("/login", map[string]string{"email": "leak@example.com", "password": pw1, "website_url": "x"}))
	tr := keepTokens(e.login("leak@example.com", pw1))
	tr2 := keepTokens(tokensOf(t, e.refresh(tr.RefreshToken)))
	check(e.refresh(tr.RefreshToken)) // reuse
	tr = keepTokens(e.login("leak@example.com", pw1))
	hij := keepTokens(e.login("leak@example.com", pw1))
	check(e.refresh(hij.RefreshToken, userAgent("thief/1")))
	check(e.me(tr2.AccessToken))

	// MFA on.
	r := e.post("/mfa/enable", nil, bearer(tr.AccessToken))
	var setup mfaSetup
	r.decode(t, &setup)
	keep(setup.Secret, setup.OTPAuthURL, strings.ToLower(setup.Secret))
	e.clock.Add(time.Second)
	code := e.code(setup.Secret)
	codes = append(codes, code, wrongCode(code))
	check(e.post("/mfa/verify", map[string]string{"code": wrongCode(code)}, bearer(tr.AccessToken)))
	r = e.post("/mfa/verify", map[string]string{"code": code}, bearer(tr.AccessToken))
	var act mfaActivated
	r.decode(t, &act)
	keepTokens(act.Tokens)
	for _, c := range act.RecoveryCodes {
		keep(c, strings.ReplaceAll(c, "-", ""), strings.ToUpper(c))
	}
	tr = act.Tokens

	// MFA logins: a wrong code, the right one, a replay, a recovery code twice.
	e.clock.Add(30 * time.Second)
	pre := e.loginPreAuth("leak@example.com", pw1)
	keep(pre.PreAuthToken)
	code = e.code(setup.Secret)
	codes = append(codes, code, wrongCode(code))
	check(e.verifyMFA(pre.PreAuthToken, wrongCode(code)))
	check(e.verifyMFA(pre.PreAuthToken, code, userAgent("elsewhere/1")))
	keepTokens(tokensOf(t, e.verifyMFA(pre.PreAuthToken, code)))
	pre = e.loginPreAuth("leak@example.com", pw1)
	keep(pre.PreAuthToken)
	check(e.verifyMFA(pre.PreAuthToken, code))
	check(e.me(pre.PreAuthToken))
	keepTokens(tokensOf(t, e.verifyMFA(pre.PreAuthToken, act.RecoveryCodes[0])))
	pre = e.loginPreAuth("leak@example.com", pw1)
	keep(pre.PreAuthToken)
	check(e.verifyMFA(pre.PreAuthToken, act.RecoveryCodes[0]))

	// Password change, MFA off, logout.
	check(e.post("/change-password", map[string]string{"current_password": wrong, "new_password": pw2}, bearer(tr.AccessToken)))
	check(e.post("/change-password", map[string]string{"current_password": pw1, "new_password": weak}, bearer(tr.AccessToken)))
	tr = keepTokens(tokensOf(t, e.post("/change-password", map[string]string{"current_password": pw1, "new_password": pw2}, bearer(tr.AccessToken))))
	e.clock.Add(30 * time.Second)
	code = e.code(setup.Secret)
	codes = append(codes, code, wrongCode(code))
	check(e.post("/mfa/disable", map[string]string{"password": wrong, "code": code}, bearer(tr.AccessToken)))
	check(e.post("/mfa/disable", map[string]string{"password": pw2, "code": wrongCode(code)}, bearer(tr.AccessToken)))
	r = e.post("/mfa/disable", map[string]string{"password": pw2, "code": code}, bearer(tr.AccessToken))
	tr = keepTokens(tokensOf(t, jsonField(t, r, "tokens")))
	wantStatus(t, e.post("/logout", map[string]bool{"all_sessions": true}, bearer(tr.AccessToken)), http.StatusNoContent)
	check(e.me(tr.AccessToken))
	check(e.refresh(tr.RefreshToken))
	for range 6 {
		check(e.post("/login", map[string]string{"email": "leak@example.com", "password": wrong}))
	}

	metrics := e.do(http.MethodGet, "/metrics", nil)
	wantStatus(t, metrics, http.StatusOK)
	var audit strings.Builder
	for _, row := range e.audit(store.AuditQuery{}) {
		audit.WriteString(row.UserAgent + " " + string(row.Details) + "\n")
	}
	places := map[string]string{
		"the log":       e.logs.String(),
		"the audit log": audit.String(),
		"an error body": strings.Join(errorBodies, "\n"),
		"/metrics":      string(metrics.Body),
	}
	if len(errorBodies) < 20 || !strings.Contains(places["the log"], `"msg":"request"`) ||
		!strings.Contains(places["/metrics"], "authd_password_hash_duration_seconds") {
		t.Fatalf("the flow did not exercise what it should (%d error bodies)", len(errorBodies))
	}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds a secret: %.24q…", where, s)
			}
		}
		for _, c := range codes {
			// Whole numbers only: a code may occur inside longer digit runs by chance.
			if regexp.MustCompile(`(^|[^0-9.])` + c + `([^0-9]|$)`).MatchString(text) {
				t.Errorf("%s holds the TOTP code %s", where, c)
			}
		}
	}
}
