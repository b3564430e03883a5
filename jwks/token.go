package jwks

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	// TypeAccess is the typ header of access tokens (RFC 9068).
	TypeAccess = "at+jwt"
	// TypePreAuth is the typ header of the MFA pre-auth token. With its own typ and
	// audience it can never pass as an access token, nor the reverse.
	TypePreAuth = "authd-pre-auth+jwt"
	// PreAuthAudience is the aud of pre-auth tokens.
	PreAuthAudience = "urn:authd:pre-auth"

	// Leeway is the clock skew allowed on exp, nbf and iat (jwx defaults to none).
	Leeway = 30 * time.Second
	// MaxTokenSize bounds what is even looked at: larger tokens are refused unparsed.
	MaxTokenSize = 8 << 10
)

const (
	kindAccess  = "access"
	kindPreAuth = "pre_auth"
)

// verifyError is a verification refusal; reason is its stable metric label.
type verifyError struct{ reason, msg string }

func (e *verifyError) Error() string { return "jwks: " + e.msg }

// Verification refusals. Callers branch with errors.Is; Reason gives a short label.
var (
	ErrTooLarge    = &verifyError{"too_large", "token larger than 8 KiB"}
	ErrMalformed   = &verifyError{"malformed", "token is not a compact JWS"}
	ErrHeader      = &verifyError{"forbidden_header", "token header names a key or critical extension"}
	ErrAlgorithm   = &verifyError{"algorithm", "token algorithm is not the configured one"}
	ErrUnknownKey  = &verifyError{"unknown_key", "token kid is not in the key set"}
	ErrSignature   = &verifyError{"signature", "token signature does not verify"}
	ErrWrongType   = &verifyError{"wrong_type", "token typ is not the expected one"}
	ErrClaims      = &verifyError{"claims", "token claims are missing or wrong"}
	ErrExpired     = &verifyError{"expired", "token expired"}
	ErrNotYetValid = &verifyError{"not_yet_valid", "token not valid yet"}
)

// verifyErrors lists every refusal, for the metrics.
var verifyErrors = []*verifyError{ErrTooLarge, ErrMalformed, ErrHeader, ErrAlgorithm, ErrUnknownKey, ErrSignature, ErrWrongType, ErrClaims, ErrExpired, ErrNotYetValid}

// ErrNoSigningKey is returned by the Sign methods when the key set has no private key.
var ErrNoSigningKey = errors.New("jwks: no private key in the key set: this replica cannot issue tokens")

// Reason is the stable label of a verification result: "ok" for nil, the refusal's
// reason (e.g. "expired", "signature") or "error" for anything else. It never
// contains token data, so it is safe as a metric label and in logs.
func Reason(err error) string {
	if err == nil {
		return "ok"
	}
	var ve *verifyError
	if errors.As(err, &ve) {
		return ve.reason
	}
	return "error"
}

// refuse wraps a refusal with a detail for logs; detail never holds token data.
func refuse(e *verifyError, detail string) error {
	return fmt.Errorf("%w: %s", e, detail)
}

// AccessClaims are the claims of an access token (DESIGN §4).
type AccessClaims struct {
	Issuer    string
	Audience  string
	Subject   string // user id
	SessionID string
	Stamp     string // the user's security stamp
	Email     string
	AMR       []string // ["pwd"] or ["pwd","otp"]
	JTI       string
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
}

// PreAuthClaims are the claims of the pre-auth token that carries a login from
// the password step to the MFA step.
type PreAuthClaims struct {
	Issuer      string
	Audience    string
	Subject     string // user id
	Stamp       string // the user's security stamp at login, if the caller sets it
	Fingerprint string // device fingerprint of the login, if the caller sets it
	JTI         string // single use: the caller records it when spent
	IssuedAt    time.Time
	NotBefore   time.Time
	Expiry      time.Time
}

// registered are the claims every token carries, as they travel.
type registered struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Nbf int64  `json:"nbf"`
	Iat int64  `json:"iat"`
	Jti string `json:"jti"`
}

type accessWire struct {
	registered
	Sid   string   `json:"sid"`
	Sst   string   `json:"sst"`
	Email string   `json:"email,omitempty"`
	AMR   []string `json:"amr,omitempty"`
}

type preAuthWire struct {
	registered
	Sst string `json:"sst,omitempty"`
	Dfp string `json:"dfp,omitempty"`
}

// SignAccess issues an access token for c.Subject, c.SessionID and c.Stamp (all
// required), with c.Email and c.AMR. It sets iss, aud, iat, nbf, exp (AccessTTL)
// and jti (c.JTI, or a new UUIDv7 when empty), and returns the token and its expiry.
func (m *Manager) SignAccess(c AccessClaims) (string, time.Time, error) {
	if c.Subject == "" || c.SessionID == "" || c.Stamp == "" {
		return "", time.Time{}, errors.New("jwks: access token needs subject, session id and stamp")
	}
	reg, exp, err := m.claimsFor(c.Subject, m.audience, c.JTI, m.accessTTL)
	if err != nil {
		return "", time.Time{}, err
	}
	tok, err := m.sign(TypeAccess, accessWire{registered: reg, Sid: c.SessionID, Sst: c.Stamp, Email: c.Email, AMR: c.AMR})
	return tok, exp, err
}

// SignPreAuth issues a pre-auth token for c.Subject (required), with c.Stamp and
// c.Fingerprint when set. It sets iss, aud (PreAuthAudience), iat, nbf, exp
// (PreAuthTTL) and jti (c.JTI, which the caller records to spend the token once,
// or a new UUIDv7 when empty), and returns the token and its expiry.
func (m *Manager) SignPreAuth(c PreAuthClaims) (string, time.Time, error) {
	if c.Subject == "" {
		return "", time.Time{}, errors.New("jwks: pre-auth token needs a subject")
	}
	reg, exp, err := m.claimsFor(c.Subject, PreAuthAudience, c.JTI, m.preAuthTTL)
	if err != nil {
		return "", time.Time{}, err
	}
	tok, err := m.sign(TypePreAuth, preAuthWire{registered: reg, Sst: c.Stamp, Dfp: c.Fingerprint})
	return tok, exp, err
}

// claimsFor fills the registered claims of a new token.
func (m *Manager) claimsFor(sub, aud, jti string, ttl time.Duration) (registered, time.Time, error) {
	if jti == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return registered{}, time.Time{}, fmt.Errorf("jwks: jti: %w", err)
		}
		jti = id.String()
	}
	now := m.now().Truncate(time.Second)
	exp := now.Add(ttl)
	return registered{
		Iss: m.issuer, Sub: sub, Aud: aud, Jti: jti,
		Iat: now.Unix(), Nbf: now.Unix(), Exp: exp.Unix(),
	}, exp, nil
}

func (m *Manager) sign(typ string, claims any) (string, error) {
	set := m.set.Load()
	if set.signer == nil {
		return "", ErrNoSigningKey
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("jwks: %w", err)
	}
	// A new header object per token: jws.Sign writes alg into it.
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, typ); err != nil {
		return "", fmt.Errorf("jwks: %w", err)
	}
	if err := hdr.Set(jws.KeyIDKey, set.signer.kid); err != nil {
		return "", fmt.Errorf("jwks: %w", err)
	}
	// The raw key (a crypto.Signer) rather than a jwk.Key: jwx then signs with the
	// precomputed key instead of rebuilding it for every token.
	tok, err := jws.Sign(payload, jws.WithKey(m.alg, set.signer.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("jwks: sign: %w", err)
	}
	return string(tok), nil
}

// VerifyAccess verifies an access token and returns its claims. Every refusal is
// one of the Err* values above (wrapped with a detail); see verify for the rules.
func (m *Manager) VerifyAccess(token string) (AccessClaims, error) {
	var w accessWire
	err := m.verify(token, TypeAccess, m.audience, &w, &w.registered)
	if err == nil && (w.Sid == "" || w.Sst == "") {
		err = refuse(ErrClaims, "sid or sst missing")
	}
	m.metrics.observe(kindAccess, err)
	if err != nil {
		return AccessClaims{}, err
	}
	return AccessClaims{
		Issuer: w.Iss, Audience: w.Aud, Subject: w.Sub, SessionID: w.Sid, Stamp: w.Sst,
		Email: w.Email, AMR: w.AMR, JTI: w.Jti,
		IssuedAt: unixUTC(w.Iat), NotBefore: unixUTC(w.Nbf), Expiry: unixUTC(w.Exp),
	}, nil
}

// VerifyPreAuth verifies a pre-auth token and returns its claims. It does not know
// whether the token was spent: the caller checks JTI.
func (m *Manager) VerifyPreAuth(token string) (PreAuthClaims, error) {
	var w preAuthWire
	err := m.verify(token, TypePreAuth, PreAuthAudience, &w, &w.registered)
	m.metrics.observe(kindPreAuth, err)
	if err != nil {
		return PreAuthClaims{}, err
	}
	return PreAuthClaims{
		Issuer: w.Iss, Audience: w.Aud, Subject: w.Sub, Stamp: w.Sst, Fingerprint: w.Dfp, JTI: w.Jti,
		IssuedAt: unixUTC(w.Iat), NotBefore: unixUTC(w.Nbf), Expiry: unixUTC(w.Exp),
	}, nil
}

// header is the JOSE header as far as verification cares. The fields after Typ are
// only looked at for presence.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`

	JWK  json.RawMessage `json:"jwk"`
	JKU  json.RawMessage `json:"jku"`
	X5U  json.RawMessage `json:"x5u"`
	X5C  json.RawMessage `json:"x5c"`
	Crit json.RawMessage `json:"crit"`
}

// b64 is base64url without padding, strict: a token has exactly one spelling, so
// nothing keyed on the token string (a cache, a deny list) can be sidestepped by
// flipping the unused low bits of the last character.
var b64 = base64.RawURLEncoding.Strict()

// verify is the whole check, on the hot path of every proxied request. It parses
// the compact serialization itself rather than through jwt.Parse (which builds a
// generic message and token object and costs more than the RSA verify) and hands
// the crypto to jwx's verifier for the one configured algorithm, with the public
// key parsed once at load. The rules, in order:
//
//   - over MaxTokenSize: refused before anything is decoded;
//   - exactly three base64url segments and nothing else: no JSON serialization, no
//     whitespace, padding or trailing data (Go's base64 would skip CR/LF);
//   - a header naming its own key (jwk, jku, x5u, x5c) or any crit: refused, since
//     keys come only from our key set and we implement no extension;
//   - alg must equal the configured algorithm: none and HS256 (the classic
//     "public key as HMAC secret" forgery) never reach a verifier;
//   - kid must name a key of the current set; the signature must verify with it;
//   - typ must be the expected one, so a pre-auth token is no access token;
//   - iss and aud must be ours; exp, nbf and iat are checked with Leeway; sub and
//     jti must be present.
//
// dst receives the claims; reg points at its registered part.
func (m *Manager) verify(token, wantTyp, wantAud string, dst any, reg *registered) error {
	if len(token) > MaxTokenSize {
		return ErrTooLarge
	}
	dot1, dot2 := -1, -1
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.' && dot1 < 0:
			dot1 = i
		case c == '.' && dot2 < 0:
			dot2 = i
		default:
			return refuse(ErrMalformed, "not three base64url segments")
		}
	}
	if dot1 <= 0 || dot2 <= dot1+1 {
		return refuse(ErrMalformed, "not three base64url segments")
	}

	// One copy of the token and one buffer for the three decoded segments.
	raw := []byte(token)
	buf := make([]byte, b64.DecodedLen(len(raw)))
	set := m.set.Load()
	h, known := set.header(token[:dot1])
	hn := 0
	if !known {
		var err error
		if hn, err = b64.Decode(buf, raw[:dot1]); err != nil {
			return refuse(ErrMalformed, "header encoding")
		}
		if err := json.Unmarshal(buf[:hn], &h); err != nil {
			return refuse(ErrMalformed, "header is not a JSON object")
		}
		switch {
		case h.JWK != nil:
			return refuse(ErrHeader, "jwk")
		case h.JKU != nil:
			return refuse(ErrHeader, "jku")
		case h.X5U != nil:
			return refuse(ErrHeader, "x5u")
		case h.X5C != nil:
			return refuse(ErrHeader, "x5c")
		case h.Crit != nil:
			return refuse(ErrHeader, "crit")
		}
	}
	if h.Alg != m.alg.String() {
		return refuse(ErrAlgorithm, "alg is not "+m.alg.String())
	}
	key, ok := set.keys[h.Kid]
	if !ok {
		return ErrUnknownKey
	}
	sig := buf[hn:]
	sn, err := b64.Decode(sig, raw[dot2+1:])
	if err != nil || sn == 0 {
		return refuse(ErrMalformed, "signature encoding")
	}
	if err := m.verifier.Verify(raw[:dot2], sig[:sn], key); err != nil {
		return ErrSignature
	}
	if h.Typ != wantTyp {
		return refuse(ErrWrongType, "typ is not "+wantTyp)
	}

	payload := sig[sn:]
	pn, err := b64.Decode(payload, raw[dot1+1:dot2])
	if err != nil {
		return refuse(ErrMalformed, "payload encoding")
	}
	if err := json.Unmarshal(payload[:pn], dst); err != nil {
		return refuse(ErrMalformed, "payload is not a claims object")
	}
	if err := m.checkRegistered(reg, wantAud); err != nil {
		return err
	}
	if !known {
		// A copy: token[:dot1] would keep the whole token (and, from the check path, the
		// header or cookie line it was cut from) in memory as long as the key set.
		set.rememberHeader(strings.Clone(token[:dot1]), h)
	}
	return nil
}

func (m *Manager) checkRegistered(r *registered, wantAud string) error {
	switch {
	case r.Iss != m.issuer:
		return refuse(ErrClaims, "iss")
	case r.Aud != wantAud:
		return refuse(ErrClaims, "aud")
	case r.Sub == "" || r.Jti == "":
		return refuse(ErrClaims, "sub or jti missing")
	case r.Exp == 0 || r.Nbf == 0 || r.Iat == 0:
		return refuse(ErrClaims, "exp, nbf or iat missing")
	}
	now := m.now()
	leeway := int64(Leeway / time.Second)
	// RFC 7519: the token is expired at exp, not after it.
	if now.Unix() >= r.Exp+leeway {
		return ErrExpired
	}
	if now.Unix() < r.Nbf-leeway {
		return refuse(ErrNotYetValid, "nbf")
	}
	if now.Unix() < r.Iat-leeway {
		return refuse(ErrNotYetValid, "iat")
	}
	return nil
}

func unixUTC(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
