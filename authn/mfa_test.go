package authn_test

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/base64"
	"image/png"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
)

// decodeQR reads the text of a data:image/png;base64 QR code.
func decodeQR(t testing.TB, dataURI string) string {
	t.Helper()
	b64, ok := strings.CutPrefix(dataURI, "data:image/png;base64,")
	if !ok {
		t.Fatalf("qr_code is not a PNG data URI: %.40q…", dataURI)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("qr_code is not a PNG: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("qr_code does not decode as a QR code: %v", err)
	}
	return res.GetText()
}

// verifyMFA answers /verify-mfa.
func (e *env) verifyMFA(preAuth, code string, opts ...reqOpt) *response {
	e.t.Helper()
	return e.post("/verify-mfa", map[string]string{"pre_auth_token": preAuth, "code": code}, opts...)
}

// TestMFAEndToEnd walks issue 6 from enabling to disabling TOTP.
func TestMFAEndToEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const email = "mfa@example.com"
	a := e.register(email, pw)
	tr := e.login(email, pw)
	other := e.login(email, pw, userAgent("other/1"))

	// Enable: a secret, its otpauth URL, and a QR code of that URL.
	r := e.post("/mfa/enable", nil, bearer(tr.AccessToken))
	wantStatus(t, r, http.StatusOK)
	var setup mfaSetup
	r.decode(t, &setup)
	if got := decodeQR(t, setup.QRCode); got != setup.OTPAuthURL {
		t.Fatalf("the QR code holds %q, want the otpauth_url %q", got, setup.OTPAuthURL)
	}
	u, err := url.Parse(setup.OTPAuthURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/authd-test:"+email || q.Get("secret") != setup.Secret ||
		q.Get("issuer") != "authd-test" || q.Get("algorithm") != "SHA1" || q.Get("digits") != "6" || q.Get("period") != "30" {
		t.Fatalf("otpauth_url = %s", setup.OTPAuthURL)
	}
	if raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(setup.Secret); err != nil || len(raw) != 20 {
		t.Fatalf("secret %q is not 160 bits of base32 (%v)", setup.Secret, err)
	}
	stored := e.user(email)
	if stored.MFAEnabled || stored.MFAPendingSecret == "" || strings.Contains(stored.MFAPendingSecret, setup.Secret) {
		t.Fatalf("after enable: enabled %v, pending %q", stored.MFAEnabled, stored.MFAPendingSecret)
	}
	// Sealed at rest as user_id:secret.
	if plain, err := e.box.Decrypt(stored.MFAPendingSecret, 0, time.Time{}); err != nil || string(plain) != a.ID+":"+setup.Secret {
		t.Fatalf("the pending secret does not open to user_id:secret (%v)", err)
	}
	// Until verified, login is by password alone.
	e.login(email, pw, userAgent("third/1"))

	// Verify: wrong and malformed codes first.
	wantProblem(t, e.post("/mfa/verify", map[string]string{"code": wrongCode(e.code(setup.Secret))}, bearer(tr.AccessToken)),
		http.StatusUnauthorized, "invalid_mfa_code")
	wantProblem(t, e.post("/mfa/verify", map[string]string{"code": "12345"}, bearer(tr.AccessToken)),
		http.StatusUnprocessableEntity, "validation_failed")
	wantProblem(t, e.post("/mfa/verify", `{}`, bearer(tr.AccessToken)), http.StatusUnprocessableEntity, "validation_failed")

	e.clock.Add(time.Second)
	r = e.post("/mfa/verify", map[string]string{"code": e.code(setup.Secret)}, bearer(tr.AccessToken))
	wantStatus(t, r, http.StatusOK)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	var act mfaActivated
	r.decode(t, &act)
	codes := slices.Compact(slices.Sorted(slices.Values(act.RecoveryCodes)))
	if !act.MFAEnabled || len(act.RecoveryCodes) != 10 || len(codes) != 10 {
		t.Fatalf("mfa/verify = %s", r)
	}
	if act.Tokens.SessionID != tr.SessionID || act.Tokens.AccessToken == "" || act.Tokens.RefreshToken == "" {
		t.Fatalf("mfa/verify tokens = %+v", act.Tokens)
	}
	// The stamp rotated: every other session and every older token is dead.
	wantProblem(t, e.me(tr.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.me(other.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(other.RefreshToken, userAgent("other/1")), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.refresh(tr.RefreshToken), http.StatusUnauthorized, "session_revoked")
	tr = act.Tokens
	r = e.me(tr.AccessToken)
	var me account
	r.decode(t, &me)
	if !me.MFAEnabled {
		t.Fatalf("/me after activation = %s", r)
	}
	if !e.hasMessage(revocation.StampRotated(a.ID, e.user(email).SecurityStamp)) || !e.hasMessage(revocation.SessionRevoked(other.SessionID)) {
		t.Fatalf("messages = %+v", e.messages())
	}
	if n, err := e.st.CountUnusedRecoveryCodes(context.Background(), a.ID); err != nil || n != 10 {
		t.Fatalf("unused recovery codes = %d, %v", n, err)
	}

	// Enabling again while active is refused (409 mfa_state, a code of our own: DESIGN
	// lists no code for it), and so is a second activation.
	wantProblem(t, e.post("/mfa/enable", nil, bearer(tr.AccessToken)), http.StatusConflict, "mfa_state")
	wantProblem(t, e.post("/mfa/verify", map[string]string{"code": e.code(setup.Secret)}, bearer(tr.AccessToken)), http.StatusConflict, "mfa_state")

	// Login now stops at the pre-auth step.
	e.clock.Add(30 * time.Second)
	r = e.post("/login", map[string]string{"email": email, "password": pw})
	wantStatus(t, r, http.StatusOK)
	var raw map[string]any
	r.decode(t, &raw)
	if len(raw) != 4 || raw["status"] != "PRE_AUTH" || raw["expires_in"] != float64(300) ||
		!slices.Equal(toStrings(raw["methods"]), []string{"totp", "recovery_code"}) || raw["pre_auth_token"] == "" {
		t.Fatalf("pre-auth answer = %s", r)
	}
	pre := raw["pre_auth_token"].(string)

	// Five wrong codes kill the pre-auth token; they also reach the lockout threshold.
	for range 5 {
		wantProblem(t, e.verifyMFA(pre, wrongCode(e.code(setup.Secret))), http.StatusUnauthorized, "invalid_mfa_code")
	}
	wantProblem(t, e.verifyMFA(pre, e.code(setup.Secret)), http.StatusUnauthorized, "invalid_token")
	wantLocked(t, e.post("/login", map[string]string{"email": email, "password": pw}))
	e.clock.Add(time.Minute)

	// The right code gives tokens whose amr is pwd and otp.
	p := e.loginPreAuth(email, pw)
	code := e.code(setup.Secret)
	r = e.verifyMFA(p.PreAuthToken, code)
	mfaTokens := tokensOf(t, r)
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.Header.Get("Cache-Control"))
	}
	if amr := toStrings(claims(t, mfaTokens.AccessToken)["amr"]); !slices.Equal(amr, []string{"pwd", "otp"}) {
		t.Fatalf("amr = %v, want [pwd otp]", amr)
	}
	// … and keep it across a refresh.
	refreshed := tokensOf(t, e.refresh(mfaTokens.RefreshToken))
	if amr := toStrings(claims(t, refreshed.AccessToken)["amr"]); !slices.Equal(amr, []string{"pwd", "otp"}) {
		t.Fatalf("amr after refresh = %v", amr)
	}
	// The pre-auth token is spent.
	wantProblem(t, e.verifyMFA(p.PreAuthToken, code), http.StatusUnauthorized, "invalid_token")

	// The same code again, on a new login, is a replay.
	p = e.loginPreAuth(email, pw)
	wantProblem(t, e.verifyMFA(p.PreAuthToken, code), http.StatusUnauthorized, "invalid_mfa_code")

	// A recovery code works once and only once; dashes and case do not matter.
	tokensOf(t, e.verifyMFA(p.PreAuthToken, act.RecoveryCodes[0]))
	p = e.loginPreAuth(email, pw)
	wantProblem(t, e.verifyMFA(p.PreAuthToken, act.RecoveryCodes[0]), http.StatusUnauthorized, "invalid_mfa_code")
	tokensOf(t, e.verifyMFA(p.PreAuthToken, strings.ToUpper(strings.ReplaceAll(act.RecoveryCodes[1], "-", ""))))
	if n, _ := e.st.CountUnusedRecoveryCodes(context.Background(), a.ID); n != 8 {
		t.Fatalf("unused recovery codes = %d, want 8", n)
	}

	// Disable needs both the password and a valid code.
	e.clock.Add(31 * time.Second)
	wantProblem(t, e.post("/mfa/disable", `{}`, bearer(tr.AccessToken)), http.StatusUnprocessableEntity, "validation_failed")
	wantProblem(t, e.post("/mfa/disable", map[string]string{"password": "not my password!", "code": e.code(setup.Secret)}, bearer(tr.AccessToken)),
		http.StatusUnauthorized, "invalid_credentials")
	wantProblem(t, e.post("/mfa/disable", map[string]string{"password": pw, "code": wrongCode(e.code(setup.Secret))}, bearer(tr.AccessToken)),
		http.StatusUnauthorized, "invalid_mfa_code")
	r = e.post("/mfa/disable", map[string]string{"password": pw, "code": e.code(setup.Secret)}, bearer(tr.AccessToken))
	wantStatus(t, r, http.StatusOK)
	var off struct {
		MFAEnabled *bool         `json:"mfa_enabled"`
		Tokens     tokenResponse `json:"tokens"`
	}
	r.decode(t, &off)
	if off.MFAEnabled == nil || *off.MFAEnabled || off.Tokens.SessionID != tr.SessionID {
		t.Fatalf("mfa/disable = %s", r)
	}
	wantProblem(t, e.me(tr.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantProblem(t, e.me(refreshed.AccessToken), http.StatusUnauthorized, "session_revoked")
	wantStatus(t, e.me(off.Tokens.AccessToken), http.StatusOK)
	wantProblem(t, e.post("/mfa/disable", map[string]string{"password": pw, "code": e.code(setup.Secret)}, bearer(off.Tokens.AccessToken)),
		http.StatusConflict, "mfa_state")
	u2 := e.user(email)
	if u2.MFAEnabled || u2.MFASecret != "" || u2.MFAPendingSecret != "" {
		t.Fatalf("after disable: %+v", u2)
	}
	if n, _ := e.st.CountUnusedRecoveryCodes(context.Background(), a.ID); n != 0 {
		t.Fatalf("recovery codes left after disable: %d", n)
	}
	final := e.login(email, pw)
	if amr := toStrings(claims(t, final.AccessToken)["amr"]); !slices.Equal(amr, []string{"pwd"}) {
		t.Fatalf("amr after disable = %v", amr)
	}
	for _, ev := range []string{authn.EventMFAEnabled, authn.EventMFADisabled, authn.EventMFAFailed} {
		if len(e.auditOf(ev)) == 0 {
			t.Errorf("no %s audit row", ev)
		}
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// mfaUser registers email with MFA on and returns its TOTP secret and recovery codes.
func (e *env) mfaUser(email string) (secret string, recovery []string) {
	e.t.Helper()
	e.register(email, pw)
	secret, act := e.enableMFA(e.login(email, pw).AccessToken)
	return secret, act.RecoveryCodes
}

// TestMFAPreAuthTokenAllowsFiveTries: the sixth try on one pre-auth token fails even with
// the right code (the lockout is out of the way here).
func TestMFAPreAuthTokenAllowsFiveTries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.opts.LockoutThreshold = 50 })
	secret, _ := e.mfaUser("tries@example.com")
	p := e.loginPreAuth("tries@example.com", pw)
	for range 4 {
		wantProblem(t, e.verifyMFA(p.PreAuthToken, wrongCode(e.code(secret))), http.StatusUnauthorized, "invalid_mfa_code")
	}
	// A recovery-code-shaped guess and a malformed code count as tries too.
	wantProblem(t, e.verifyMFA(p.PreAuthToken, "aaaa-bbbb-cccc-dddd"), http.StatusUnauthorized, "invalid_mfa_code")
	wantProblem(t, e.verifyMFA(p.PreAuthToken, e.code(secret)), http.StatusUnauthorized, "invalid_token")
	// A new login gets a new token.
	p = e.loginPreAuth("tries@example.com", pw)
	tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(secret)))
}

// TestMFAFailuresCountTowardTheLockout: wrong codes count with wrong passwords, a new
// login does not reset them, and the right password is not itself a failure.
func TestMFAFailuresCountTowardTheLockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.mfaUser("mlock@example.com")

	p := e.loginPreAuth("mlock@example.com", pw)
	for range 3 {
		wantProblem(t, e.verifyMFA(p.PreAuthToken, wrongCode(e.code(secret))), http.StatusUnauthorized, "invalid_mfa_code")
	}
	p = e.loginPreAuth("mlock@example.com", pw) // does not reset the count
	wantProblem(t, failLogin(e, "mlock@example.com"), http.StatusUnauthorized, "invalid_credentials")
	wantProblem(t, e.verifyMFA(p.PreAuthToken, wrongCode(e.code(secret))), http.StatusUnauthorized, "invalid_mfa_code") // the 5th failure
	r := wantLocked(t, e.verifyMFA(p.PreAuthToken, e.code(secret)))
	if r.Header.Get("Retry-After") != "60" {
		t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
	}
	wantLocked(t, e.post("/login", map[string]string{"email": "mlock@example.com", "password": pw}))
	e.clock.Add(time.Minute)
	// The pre-auth token had 4 tries; the lock did not spend one.
	tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(secret)))

	// Four wrong passwords, then the right one and the right code: 200, as without MFA.
	e.clock.Add(30 * time.Second)
	for range 4 {
		wantProblem(t, failLogin(e, "mlock@example.com"), http.StatusUnauthorized, "invalid_credentials")
	}
	p = e.loginPreAuth("mlock@example.com", pw)
	tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(secret)))

	// Nor do five abandoned pre-auth steps lock the account.
	for range 6 {
		e.loginPreAuth("mlock@example.com", pw)
	}
	e.clock.Add(30 * time.Second)
	p = e.loginPreAuth("mlock@example.com", pw)
	tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(secret)))
}

func TestMFAPreAuthTokenIsBoundToTheDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.mfaUser("bound@example.com")
	p := e.loginPreAuth("bound@example.com", pw, userAgent("phone/1"))
	wantProblem(t, e.verifyMFA(p.PreAuthToken, e.code(secret), userAgent("laptop/1")), http.StatusUnauthorized, "invalid_token")
	wantProblem(t, e.verifyMFA(p.PreAuthToken, e.code(secret)), http.StatusUnauthorized, "invalid_token")
	tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(secret), userAgent("phone/1")))
}

func TestMFAPreAuthTokenExpiresAfterFiveMinutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.mfaUser("exp@example.com")
	p := e.loginPreAuth("exp@example.com", pw)
	if p.ExpiresIn != 300 {
		t.Fatalf("expires_in = %d", p.ExpiresIn)
	}
	e.clock.Add(6 * time.Minute)
	wantProblem(t, e.verifyMFA(p.PreAuthToken, e.code(secret)), http.StatusUnauthorized, "invalid_token")
}

// TestMFAPreAuthTokenIsSingleUseAndOnlyTheNewestIsValid.
func TestMFAPreAuthTokenIsSingleUseAndOnlyTheNewestIsValid(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, recovery := e.mfaUser("single@example.com")
	older := e.loginPreAuth("single@example.com", pw)
	newer := e.loginPreAuth("single@example.com", pw)
	wantProblem(t, e.verifyMFA(older.PreAuthToken, e.code(secret)), http.StatusUnauthorized, "invalid_token")
	tokensOf(t, e.verifyMFA(newer.PreAuthToken, e.code(secret)))
	wantProblem(t, e.verifyMFA(newer.PreAuthToken, recovery[0]), http.StatusUnauthorized, "invalid_token")
	wantProblem(t, e.post("/verify-mfa", `{}`), http.StatusUnprocessableEntity, "validation_failed")
	wantProblem(t, e.verifyMFA("not-a-token", "123456"), http.StatusUnauthorized, "invalid_token")
}

// TestMFACodeIsAcceptedOnceEvenInParallel: the last used step advances atomically.
func TestMFACodeIsAcceptedOnceEvenInParallel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret, _ := e.mfaUser("para@example.com")
	p := e.loginPreAuth("para@example.com", pw)
	code := e.code(secret)
	var ok, refused atomic.Int32
	parallel(6, func(int) {
		r := e.verifyMFA(p.PreAuthToken, code)
		if r.Code == http.StatusOK {
			ok.Add(1)
		} else if r.Code == http.StatusUnauthorized {
			refused.Add(1)
		}
	})
	if ok.Load() != 1 || refused.Load() != 5 {
		t.Fatalf("200: %d, 401: %d; want exactly one 200", ok.Load(), refused.Load())
	}
}

// TestMFATOTPWindowIsOneStepEachWay: codes of the previous and next 30 s step pass, older
// ones do not, and no step is accepted twice.
func TestMFATOTPWindowIsOneStepEachWay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *config) { c.opts.LockoutThreshold = 50 })
	secret, _ := e.mfaUser("window@example.com")
	e.clock.Add(5 * time.Minute)
	at := func(d time.Duration) string {
		c, err := totp.GenerateCode(secret, e.clock.Now().Add(d))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p := e.loginPreAuth("window@example.com", pw)
	wantProblem(t, e.verifyMFA(p.PreAuthToken, at(-60*time.Second)), http.StatusUnauthorized, "invalid_mfa_code")
	wantProblem(t, e.verifyMFA(p.PreAuthToken, at(60*time.Second)), http.StatusUnauthorized, "invalid_mfa_code")
	tokensOf(t, e.verifyMFA(p.PreAuthToken, at(-30*time.Second)))
	p = e.loginPreAuth("window@example.com", pw)
	tokensOf(t, e.verifyMFA(p.PreAuthToken, at(30*time.Second)))
	// The current step is older than the last one accepted: refused.
	p = e.loginPreAuth("window@example.com", pw)
	wantProblem(t, e.verifyMFA(p.PreAuthToken, at(0)), http.StatusUnauthorized, "invalid_mfa_code")
}

// TestMFAEnableAgainReplacesThePendingSecret.
func TestMFAEnableAgainReplacesThePendingSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("again@example.com", pw)
	tr := e.login("again@example.com", pw)
	var first, second mfaSetup
	r := e.post("/mfa/enable", nil, bearer(tr.AccessToken))
	wantStatus(t, r, http.StatusOK)
	r.decode(t, &first)
	r = e.post("/mfa/enable", `{}`, bearer(tr.AccessToken))
	wantStatus(t, r, http.StatusOK)
	r.decode(t, &second)
	if first.Secret == second.Secret {
		t.Fatal("enabling again returned the same secret")
	}
	wantProblem(t, e.post("/mfa/verify", map[string]string{"code": e.code(first.Secret)}, bearer(tr.AccessToken)),
		http.StatusUnauthorized, "invalid_mfa_code")
	wantStatus(t, e.post("/mfa/verify", map[string]string{"code": e.code(second.Secret)}, bearer(tr.AccessToken)), http.StatusOK)
	if u := e.user("again@example.com"); !u.MFAEnabled {
		t.Fatal("MFA is not on after verifying the second secret")
	}
}

// TestMFAVerifyWithoutPendingSecretIs409.
func TestMFAVerifyWithoutPendingSecretIs409(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("none@example.com", pw)
	tr := e.login("none@example.com", pw)
	wantProblem(t, e.post("/mfa/verify", map[string]string{"code": "123456"}, bearer(tr.AccessToken)), http.StatusConflict, "mfa_state")
	wantProblem(t, e.post("/mfa/disable", map[string]string{"password": pw, "code": "123456"}, bearer(tr.AccessToken)), http.StatusConflict, "mfa_state")
	wantProblem(t, e.post("/mfa/enable", `{"extra":1}`, bearer(tr.AccessToken)), http.StatusUnprocessableEntity, "validation_failed")
}

// TestTOTPSecretCopiedToAnotherUserFailsClosed: secrets are sealed with their owner's id,
// so a row copied to another user does not open as theirs; the login fails rather than
// accepting the copier's codes.
func TestTOTPSecretCopiedToAnotherUserFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mallorySecret, _ := e.mfaUser("mallory@example.com")
	e.mfaUser("victim@example.com")
	mallory := e.user("mallory@example.com")
	victim := e.user("victim@example.com")
	if _, err := e.st.UpdateUser(context.Background(), victim.ID, func(u store.User) (store.User, error) {
		u.MFASecret = mallory.MFASecret
		return u, nil
	}); err != nil {
		t.Fatal(err)
	}
	p := e.loginPreAuth("victim@example.com", pw)
	r := e.verifyMFA(p.PreAuthToken, e.code(mallorySecret))
	wantProblem(t, r, http.StatusInternalServerError, "internal")
	if !strings.Contains(e.logs.String(), "belongs to another user") {
		t.Fatal("the log does not say why the secret was refused")
	}
	// Mallory's own login is unaffected.
	p = e.loginPreAuth("mallory@example.com", pw)
	tokensOf(t, e.verifyMFA(p.PreAuthToken, e.code(mallorySecret)))
}

// TestTOTPRFC6238Vectors: the SHA1 test vectors of RFC 6238 appendix B through
// pquerna/otp, the library the service uses.
func TestTOTPRFC6238Vectors(t *testing.T) {
	t.Parallel()
	secret := base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))
	for _, v := range []struct {
		unix int64
		code string
	}{
		{59, "94287082"},
		{1111111109, "07081804"},
		{1111111111, "14050471"},
		{1234567890, "89005924"},
		{2000000000, "69279037"},
		{20000000000, "65353130"},
	} {
		opts := totp.ValidateOpts{Period: 30, Digits: otp.DigitsEight, Algorithm: otp.AlgorithmSHA1}
		at := time.Unix(v.unix, 0).UTC()
		got, err := totp.GenerateCodeCustom(secret, at, opts)
		if err != nil || got != v.code {
			t.Errorf("T=%d: code %q (%v), want %s", v.unix, got, err, v.code)
		}
		if ok, err := totp.ValidateCustom(v.code, secret, at, opts); !ok || err != nil {
			t.Errorf("T=%d: %s does not validate (%v)", v.unix, v.code, err)
		}
	}
}

// /verify-mfa with a recovery code spends the code, the pre-auth token and creates the
// session in one transaction: when the session cannot be written (here PostgreSQL refuses
// the insert, as a crash or an outage would cut it short), the code and the token are
// both still good, and the retry logs in.
func TestVerifyMFAWithARecoveryCodeSpendsNothingWhenTheSessionFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, recovery := e.mfaUser("atomic@example.com")
	p := e.loginPreAuth("atomic@example.com", pw)

	ctx := context.Background()
	db, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, `
		CREATE FUNCTION refuse_sessions() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN RAISE EXCEPTION 'sessions refused by the test'; END $$;
		CREATE TRIGGER refuse_sessions BEFORE INSERT ON sessions
			FOR EACH ROW EXECUTE FUNCTION refuse_sessions();`); err != nil {
		t.Fatal(err)
	}
	if r := e.verifyMFA(p.PreAuthToken, recovery[0]); r.Code != http.StatusInternalServerError {
		t.Fatalf("verify-mfa while sessions cannot be written: %d %s, want 500", r.Code, r.Body)
	}
	if _, err := db.Exec(ctx, `DROP TRIGGER refuse_sessions ON sessions`); err != nil {
		t.Fatal(err)
	}

	tokensOf(t, e.verifyMFA(p.PreAuthToken, recovery[0])) // same token, same code
	a, err := e.st.GetUserByEmail(ctx, "atomic@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := e.st.CountUnusedRecoveryCodes(ctx, a.ID); n != 9 {
		t.Fatalf("unused recovery codes = %d, want 9: only the login that succeeded spent one", n)
	}
}
