package authn

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"image/png"
	"io"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/authd/authd/jwks"
	"github.com/authd/authd/problem"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
)

// SecretBox encrypts TOTP secrets at rest (Fernet with FERNET_KEY in production).
type SecretBox interface {
	Encrypt(plaintext []byte) (string, error)
	Decrypt(token string) ([]byte, error)
}

// TOTP parameters (DESIGN §3): SHA1, 6 digits, 30 s steps, ±1 step, 160-bit secrets.
const (
	totpPeriod      = 30
	totpSkew        = 1
	totpSecretBytes = 20
	recoveryCodes   = 10
	preAuthMaxTries = 5
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Skew: 0, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// errMFAUnavailable is returned when MFA is used but no FERNET_KEY is configured.
var errMFAUnavailable = errors.New("authn: MFA needs FERNET_KEY to encrypt secrets")

// MFASetup is the answer to /mfa/enable.
type MFASetup struct {
	Secret     string `json:"secret"`
	OTPAuthURL string `json:"otpauth_url"`
	QRCode     string `json:"qr_code"`
}

// EnableMFA creates a new pending TOTP secret, replacing any earlier pending one. It does
// not touch an active secret: with MFA on it answers ErrMFAState.
func (s *Service) EnableMFA(ctx context.Context, p Principal) (MFASetup, error) {
	if s.secrets == nil {
		return MFASetup{}, errMFAUnavailable
	}
	if p.User.MFAEnabled {
		return MFASetup{}, ErrMFAState
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: s.opts.MFAIssuer, AccountName: p.User.Email, Period: totpPeriod,
		SecretSize: totpSecretBytes, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1, Rand: s.rand,
	})
	if err != nil {
		return MFASetup{}, err
	}
	sealed, err := s.seal(p.User.ID, key.Secret())
	if err != nil {
		return MFASetup{}, err
	}
	if _, err := s.st.UpdateUser(ctx, p.User.ID, func(u store.User) (store.User, error) {
		if u.MFAEnabled {
			return u, ErrMFAState
		}
		u.MFAPendingSecret = sealed
		u.UpdatedAt = s.now()
		return u, nil
	}); err != nil {
		return MFASetup{}, err
	}
	img, err := key.Image(256, 256)
	if err != nil {
		return MFASetup{}, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return MFASetup{}, err
	}
	return MFASetup{
		Secret:     key.Secret(),
		OTPAuthURL: key.URL(),
		QRCode:     "data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()),
	}, nil
}

// MFAActivated is the answer to /mfa/verify.
type MFAActivated struct {
	MFAEnabled    bool          `json:"mfa_enabled"`
	RecoveryCodes []string      `json:"recovery_codes"`
	Tokens        TokenResponse `json:"tokens"`
}

// VerifyMFA activates the pending secret with a code from it, returns ten recovery codes
// (shown once), rotates the stamp and ends every other session.
func (s *Service) VerifyMFA(ctx context.Context, p Principal, code string, m requestMeta) (MFAActivated, error) {
	code = strings.TrimSpace(code)
	if err := checkCodeShape(code); err != nil {
		return MFAActivated{}, err
	}
	if p.User.MFAEnabled || p.User.MFAPendingSecret == "" {
		return MFAActivated{}, ErrMFAState
	}
	secret, err := s.open(p.User.ID, p.User.MFAPendingSecret)
	if err != nil {
		return MFAActivated{}, err
	}
	step, ok := matchTOTP(secret, code, s.now())
	if !ok {
		s.audit.async(s.audit.event(EventMFAFailed, p.User.ID, m, riskSignals{}, map[string]any{"stage": "activate"}))
		return MFAActivated{}, ErrInvalidMFACode
	}
	plain, rows, err := s.newRecoveryCodes(p.User.ID)
	if err != nil {
		return MFAActivated{}, err
	}
	tr, u, revoked, err := s.rotateForCaller(ctx, p, m, EventMFAEnabled, func(u *store.User) error {
		if u.MFAEnabled || u.MFAPendingSecret != p.User.MFAPendingSecret {
			return ErrMFAState // changed under us
		}
		u.MFAEnabled = true
		u.MFASecret, u.MFAPendingSecret = u.MFAPendingSecret, ""
		u.MFALastStep = step
		return nil
	}, func(tx store.Tx) error { return tx.ReplaceRecoveryCodes(ctx, p.User.ID, rows) })
	if err != nil {
		return MFAActivated{}, err
	}
	s.publish(append(revokedMessages(revoked), revocation.StampRotated(u.ID, u.SecurityStamp))...)
	return MFAActivated{MFAEnabled: true, RecoveryCodes: plain, Tokens: tr}, nil
}

// MFADeactivated is the answer to /mfa/disable.
type MFADeactivated struct {
	MFAEnabled bool          `json:"mfa_enabled"`
	Tokens     TokenResponse `json:"tokens"`
}

// DisableMFA needs the password and a valid TOTP or recovery code; it deletes the secret
// and the recovery codes, rotates the stamp and ends every other session.
func (s *Service) DisableMFA(ctx context.Context, p Principal, pw, code string, m requestMeta) (MFADeactivated, error) {
	var errs []problem.FieldError
	if pw == "" {
		errs = append(errs, problem.FieldError{Field: "password", Message: "is required"})
	}
	if code == "" {
		errs = append(errs, problem.FieldError{Field: "code", Message: "is required"})
	}
	if len(errs) > 0 {
		return MFADeactivated{}, &ValidationError{Fields: errs}
	}
	if !p.User.MFAEnabled {
		return MFADeactivated{}, ErrMFAState
	}
	// One attempt is counted for the pair, before either is checked, and cleared only
	// when both are right: a known password does not reset the count for code guesses.
	att, err := s.reserveAttempt(ctx, p.User.Email, m)
	if err != nil {
		return MFADeactivated{}, err
	}
	if err := s.verifyPassword(ctx, p.User, pw, m, att); err != nil {
		return MFADeactivated{}, err
	}
	if err := s.verifySecondFactor(ctx, p.User, code, m, "disable"); err != nil {
		return MFADeactivated{}, err
	}
	if err := s.clearLockout(ctx, p.User.Email); err != nil {
		return MFADeactivated{}, err
	}
	tr, u, revoked, err := s.rotateForCaller(ctx, p, m, EventMFADisabled, func(u *store.User) error {
		u.MFAEnabled = false
		u.MFASecret, u.MFAPendingSecret = "", ""
		u.MFALastStep = 0
		return nil
	}, func(tx store.Tx) error { return tx.ReplaceRecoveryCodes(ctx, p.User.ID, nil) })
	if err != nil {
		return MFADeactivated{}, err
	}
	s.publish(append(revokedMessages(revoked), revocation.StampRotated(u.ID, u.SecurityStamp))...)
	return MFADeactivated{MFAEnabled: false, Tokens: tr}, nil
}

// startPreAuth issues the pre-auth token of an MFA login. Only the newest pre-auth token
// of a user is valid; it carries the login's device fingerprint.
func (s *Service) startPreAuth(ctx context.Context, u store.User, m requestMeta) (PreAuthResponse, error) {
	jti := newID()
	if _, err := s.st.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		cur.PreAuthJTI, cur.PreAuthTries = jti, 0
		return cur, nil
	}); err != nil {
		return PreAuthResponse{}, err
	}
	tok, exp, err := s.tokens.SignPreAuth(jwks.PreAuthClaims{Subject: u.ID, JTI: jti, Fingerprint: m.Fingerprint, Stamp: u.SecurityStamp})
	if err != nil {
		return PreAuthResponse{}, err
	}
	return PreAuthResponse{
		Status: "PRE_AUTH", PreAuthToken: tok,
		ExpiresIn: int64(exp.Sub(s.now()).Round(time.Second) / time.Second),
		Methods:   []string{"totp", "recovery_code"},
	}, nil
}

// CompleteMFA is /verify-mfa: the pre-auth token and a TOTP or recovery code give the
// token response with amr ["pwd","otp"]. A wrong code counts toward the lockout and the
// token's five tries; a success spends the token.
func (s *Service) CompleteMFA(ctx context.Context, preAuth, code string, m requestMeta) (TokenResponse, error) {
	var errs []problem.FieldError
	if preAuth == "" {
		errs = append(errs, problem.FieldError{Field: "pre_auth_token", Message: "is required"})
	}
	if code == "" {
		errs = append(errs, problem.FieldError{Field: "code", Message: "is required"})
	}
	if len(errs) > 0 {
		return TokenResponse{}, &ValidationError{Fields: errs}
	}
	c, err := s.tokens.VerifyPreAuth(preAuth)
	if err != nil {
		return TokenResponse{}, ErrInvalidToken
	}
	if subtle.ConstantTimeCompare([]byte(c.Fingerprint), []byte(m.Fingerprint)) != 1 {
		return TokenResponse{}, ErrInvalidToken
	}
	u, err := s.st.GetUser(ctx, c.Subject)
	if errors.Is(err, store.ErrNotFound) {
		return TokenResponse{}, ErrInvalidToken
	}
	if err != nil {
		return TokenResponse{}, err
	}
	if !u.MFAEnabled || subtle.ConstantTimeCompare([]byte(c.Stamp), []byte(u.SecurityStamp)) != 1 {
		return TokenResponse{}, ErrInvalidToken // MFA turned off, or the stamp rotated since
	}
	// Both counts are taken before the code is checked, atomically, so parallel guesses
	// cannot overrun the token's tries or the lockout. A dead token is invalid_token
	// whatever the lockout says, and costs no lockout attempt.
	if ok, err := s.reservePreAuthTry(ctx, u.ID, c.JTI); err != nil || !ok {
		if err == nil {
			err = ErrInvalidToken
		}
		return TokenResponse{}, err
	}
	att, err := s.reserveAttempt(ctx, u.Email, m)
	if err != nil {
		return TokenResponse{}, err
	}
	if att.locked {
		return TokenResponse{}, &LockedError{RetryAfter: att.retryAfter}
	}
	// A TOTP code is checked (and its step marked used) first; a recovery code is spent
	// in the session's own transaction, with the pre-auth token, so that a failure (or a
	// crash) before the session exists leaves both usable.
	code = strings.TrimSpace(code)
	var recovery []byte
	switch norm, valid := normalizeRecoveryCode(code); {
	case isTOTPShape(code):
		if err := s.verifySecondFactor(ctx, u, code, m, "login"); err != nil {
			return TokenResponse{}, err
		}
	case valid:
		recovery = s.recoveryHash(u.ID, norm)
	default:
		s.audit.async(s.audit.event(EventMFAFailed, u.ID, m, riskSignals{}, map[string]any{"stage": "login"}))
		return TokenResponse{}, ErrInvalidMFACode
	}
	tr, err := s.startSession(ctx, u, []string{"pwd", "otp"}, m, 0, func(tx store.Tx) error {
		// Spend the token: only one success per pre-auth token, even in parallel. The
		// user row is locked first, as every other transaction on a user does (taking
		// the recovery code's row first could deadlock with /mfa/disable).
		spent := false
		if _, err := tx.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
			spent = cur.PreAuthJTI == c.JTI
			if spent {
				cur.PreAuthJTI, cur.PreAuthTries = "", 0
			}
			return cur, nil
		}); err != nil {
			return err
		}
		if !spent {
			return ErrInvalidToken
		}
		if recovery != nil {
			if err := tx.UseRecoveryCode(ctx, u.ID, recovery, s.now()); errors.Is(err, store.ErrNotFound) {
				return ErrInvalidMFACode // rolls the token's spending back
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrInvalidMFACode) {
		s.audit.async(s.audit.event(EventMFAFailed, u.ID, m, riskSignals{}, map[string]any{"stage": "login"}))
	}
	if err != nil {
		return TokenResponse{}, err
	}
	// Only a completed login clears the lockout; should this fail, the login stands.
	if err := s.clearLockout(ctx, u.Email); err != nil {
		s.log.Warn("lockout not cleared after an MFA login", "error", err)
	}
	return tr, nil
}

// reservePreAuthTry counts one try against the user's live pre-auth token jti; it
// reports false when jti is not the live token or its tries are used up. The fifth try
// is the last: the token dies with it unless it succeeds.
func (s *Service) reservePreAuthTry(ctx context.Context, uid, jti string) (bool, error) {
	ok := false
	_, err := s.st.UpdateUser(ctx, uid, func(cur store.User) (store.User, error) {
		ok = cur.PreAuthJTI != "" && subtle.ConstantTimeCompare([]byte(cur.PreAuthJTI), []byte(jti)) == 1 &&
			cur.PreAuthTries < preAuthMaxTries
		if ok {
			cur.PreAuthTries++
		}
		return cur, nil
	})
	return ok, err
}

// verifySecondFactor accepts a TOTP code (once per time step, by an atomic advance of the
// last used step) or an unused recovery code (spent atomically). The caller has counted the
// attempt toward the lockout already; a failure is audited as MFA_FAILED.
func (s *Service) verifySecondFactor(ctx context.Context, u store.User, code string, m requestMeta, stage string) error {
	code = strings.TrimSpace(code)
	ok := false
	var err error
	if isTOTPShape(code) {
		ok, err = s.useTOTP(ctx, u, code)
	} else if norm, valid := normalizeRecoveryCode(code); valid {
		err = s.st.UseRecoveryCode(ctx, u.ID, s.recoveryHash(u.ID, norm), s.now())
		ok = err == nil
		if errors.Is(err, store.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	s.audit.async(s.audit.event(EventMFAFailed, u.ID, m, riskSignals{}, map[string]any{"stage": stage}))
	return ErrInvalidMFACode
}

// useTOTP accepts code if it matches a step within ±1 of now that is newer than the last
// accepted one, advancing the last step in the same atomic update.
func (s *Service) useTOTP(ctx context.Context, u store.User, code string) (bool, error) {
	secret, err := s.open(u.ID, u.MFASecret)
	if err != nil {
		return false, err
	}
	step, ok := matchTOTP(secret, code, s.now())
	if !ok {
		return false, nil
	}
	accepted := false
	_, err = s.st.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		accepted = step > cur.MFALastStep
		if accepted {
			cur.MFALastStep = step
		}
		return cur, nil
	})
	return accepted && err == nil, err
}

// matchTOTP returns the time step whose code equals code, looking ±1 step around now.
func matchTOTP(secret, code string, now time.Time) (int64, bool) {
	cur := now.Unix() / totpPeriod
	found, step := 0, int64(0)
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		t := time.Unix((cur+d)*totpPeriod, 0)
		want, err := totp.GenerateCodeCustom(secret, t, totpOpts)
		if err != nil {
			return 0, false
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			found, step = 1, cur+d
		}
	}
	return step, found == 1
}

func isTOTPShape(code string) bool {
	if len(code) != 6 {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

func checkCodeShape(code string) error {
	if code == "" {
		return invalidField("code", "is required")
	}
	if !isTOTPShape(strings.TrimSpace(code)) {
		return invalidField("code", "must be the 6-digit code from the authenticator app")
	}
	return nil
}

// Recovery codes are 16 base32 characters (80 bits) shown as four groups of four.
var recoveryEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func (s *Service) newRecoveryCodes(uid string) ([]string, []store.RecoveryCode, error) {
	plain := make([]string, recoveryCodes)
	rows := make([]store.RecoveryCode, recoveryCodes)
	now := s.now()
	for i := range plain {
		b := make([]byte, 10)
		if _, err := io.ReadFull(s.rand, b); err != nil {
			return nil, nil, err
		}
		c := strings.ToLower(recoveryEncoding.EncodeToString(b))
		plain[i] = c[0:4] + "-" + c[4:8] + "-" + c[8:12] + "-" + c[12:16]
		rows[i] = store.RecoveryCode{ID: newID(), UserID: uid, CodeHash: s.recoveryHash(uid, c), CreatedAt: now}
	}
	return plain, rows, nil
}

// normalizeRecoveryCode drops dashes and spaces and lower-cases; valid when 16 base32
// characters remain.
func normalizeRecoveryCode(code string) (string, bool) {
	c := strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(code))
	if len(c) != 16 {
		return "", false
	}
	if _, err := recoveryEncoding.DecodeString(strings.ToUpper(c)); err != nil {
		return "", false
	}
	return c, true
}

// recoveryHash binds a code to its user: HMAC-SHA256 keyed by the user id. The codes carry
// 80 random bits, so a fast hash is enough.
func (s *Service) recoveryHash(uid, code string) []byte {
	h := hmac.New(sha256.New, []byte("authd recovery code:"+uid))
	h.Write([]byte(code))
	return h.Sum(nil)
}

// seal encrypts "user_id:secret", so a secret copied into another user's row does not
// decrypt as theirs.
func (s *Service) seal(uid, secret string) (string, error) {
	if s.secrets == nil {
		return "", errMFAUnavailable
	}
	return s.secrets.Encrypt([]byte(uid + ":" + secret))
}

// open decrypts a sealed secret and checks it belongs to uid; any failure is an error
// (MFA fails closed).
func (s *Service) open(uid, sealed string) (string, error) {
	if s.secrets == nil {
		return "", errMFAUnavailable
	}
	plain, err := s.secrets.Decrypt(sealed)
	if err != nil {
		return "", fmt.Errorf("authn: decrypting the TOTP secret of user %s failed: %w", uid, err)
	}
	owner, secret, ok := strings.Cut(string(plain), ":")
	if !ok || owner != uid {
		return "", fmt.Errorf("authn: the TOTP secret stored for user %s belongs to another user", uid)
	}
	return secret, nil
}
