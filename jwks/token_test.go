package jwks_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/jwks"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

func TestIssuedAccessTokenVerifiesWithEveryAlgorithm(t *testing.T) {
	for _, alg := range []string{"RS256", "PS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			c := newClock()
			m, _, _ := dirManager(t, alg, c)
			in := accessClaims()
			tok, exp, err := m.SignAccess(in)
			if err != nil {
				t.Fatal(err)
			}
			if want := t0.Add(15 * time.Minute); !exp.Equal(want) {
				t.Errorf("expiry %v, want %v", exp, want)
			}

			hdr, _ := segments(t, tok)
			if len(hdr) != 3 || hdr["alg"] != alg || hdr["typ"] != "at+jwt" || hdr["kid"] == "" {
				t.Errorf("header %v: want exactly alg %s, typ at+jwt and a kid", hdr, alg)
			}

			got, err := m.VerifyAccess(tok)
			if err != nil {
				t.Fatal(err)
			}
			if got.Issuer != testIssuer || got.Audience != testAudience || got.Subject != in.Subject ||
				got.SessionID != in.SessionID || got.Stamp != in.Stamp || got.Email != in.Email ||
				!reflect.DeepEqual(got.AMR, in.AMR) {
				t.Errorf("claims %+v, want %+v", got, in)
			}
			if !got.IssuedAt.Equal(t0) || !got.NotBefore.Equal(t0) || !got.Expiry.Equal(exp) {
				t.Errorf("times iat %v nbf %v exp %v", got.IssuedAt, got.NotBefore, got.Expiry)
			}
			if len(got.JTI) != 36 || got.JTI[14] != '7' {
				t.Errorf("jti %q is not a UUIDv7", got.JTI)
			}
		})
	}
}

func TestPreAuthTokenRoundTrip(t *testing.T) {
	c := newClock()
	m, _, _ := dirManager(t, "RS256", c)
	tok, exp, err := m.SignPreAuth(jwks.PreAuthClaims{Subject: "u1", Stamp: "s1", Fingerprint: "fp"})
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(5 * time.Minute)) {
		t.Errorf("pre-auth expiry %v, want 5 minutes", exp)
	}
	hdr, claims := segments(t, tok)
	if hdr["typ"] != jwks.TypePreAuth || claims["aud"] != jwks.PreAuthAudience {
		t.Errorf("pre-auth typ %v aud %v", hdr["typ"], claims["aud"])
	}
	got, err := m.VerifyPreAuth(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "u1" || got.Stamp != "s1" || got.Fingerprint != "fp" || len(got.JTI) != 36 {
		t.Errorf("claims %+v", got)
	}

	// The caller may choose the jti, to record it and spend the token once.
	tok, _, err = m.SignPreAuth(jwks.PreAuthClaims{Subject: "u1", JTI: "recorded-jti"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.VerifyPreAuth(tok); err != nil || got.JTI != "recorded-jti" {
		t.Errorf("jti %q (%v), want the caller's", got.JTI, err)
	}
}

func TestTokenWindowAllowsThirtySecondsLeeway(t *testing.T) {
	c := newClock()
	m, _, _ := dirManager(t, "RS256", c)
	tok := signAccess(t, m)

	c.Add(15*time.Minute + 29*time.Second)
	if _, err := m.VerifyAccess(tok); err != nil {
		t.Errorf("29 s after exp: %v, want accepted within leeway", err)
	}
	c.Add(time.Second)
	if _, err := m.VerifyAccess(tok); !errors.Is(err, jwks.ErrExpired) {
		t.Errorf("30 s after exp: %v, want ErrExpired", err)
	}

	// nbf and iat in the future: accepted within the leeway, refused beyond it.
	m, key := refusalManager(t, c)
	now := c.Now()
	for _, skew := range []time.Duration{20 * time.Second, 31 * time.Second} {
		claims := with(validClaims(now), "nbf", now.Add(skew).Unix(), "iat", now.Add(skew).Unix())
		_, err := m.VerifyAccess(craft(t, jwa.RS256, key.signer, key.header(), claims))
		if skew < jwks.Leeway && err != nil {
			t.Errorf("nbf %v ahead: %v, want accepted", skew, err)
		}
		if skew > jwks.Leeway && !errors.Is(err, jwks.ErrNotYetValid) {
			t.Errorf("nbf %v ahead: %v, want ErrNotYetValid", skew, err)
		}
	}
}

// testKey is the key a Manager signs with, for crafting tokens it would accept.
type testKey struct {
	signer crypto.Signer
	kid    string
	pubPEM []byte
}

func (k testKey) header() map[string]any {
	return map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": k.kid}
}

// refusalManager is an RS256 Manager over a fresh key directory, with its key.
func refusalManager(t testing.TB, c *clock) (*jwks.Manager, testKey) {
	t.Helper()
	dir := t.TempDir()
	priv, pub := keyPair(t, dir, "RS256", t0)
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, jwks.Source{Dir: dir}, "RS256", c)
	hdr, _ := segments(t, signAccess(t, m))
	return m, testKey{signer: readSigner(t, priv), kid: hdr["kid"].(string), pubPEM: pubPEM}
}

func validClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testAudience,
		"sub": "u1", "sid": "s1", "sst": "st1", "jti": "j1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
		"email": "ada@example.test", "amr": []string{"pwd"},
	}
}

func with(base map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// TestVerifyRefuses crafts one token per rule. Unless the rule is about the key,
// each is signed with the Manager's own key and differs from a valid token in that
// one respect, so the refusal can only come from the rule under test.
func TestVerifyRefuses(t *testing.T) {
	c := newClock()
	m, key := refusalManager(t, c)
	hdr := key.header()
	claims := validClaims(t0)
	valid := craft(t, jwa.RS256, key.signer, hdr, claims)
	if _, err := m.VerifyAccess(valid); err != nil {
		t.Fatalf("the baseline token is refused: %v", err)
	}

	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK, err := jwk.FromRaw(&attacker.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	attackerKid := "attacker"
	preAuth, _, err := m.SignPreAuth(jwks.PreAuthClaims{Subject: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	huge, _, err := m.SignAccess(withEmail(accessClaims(), strings.Repeat("a", 8<<10)))
	if err != nil {
		t.Fatal(err)
	}
	jsonSerialized, err := jws.Sign([]byte(`{}`), jws.WithJSON(), jws.WithKey(jwa.RS256, key.signer))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(valid, ".")
	tampered := craft(t, jwa.RS256, nil, hdr, with(claims, "sub", "admin")) + parts[2]
	// RSA-2048 signatures end in a character with 4 unused bits; a lax decoder
	// reads "…A" and "…B" alike.
	last := parts[2][len(parts[2])-1]
	lax := valid[:len(valid)-1] + string(laxTwin(last))
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"alg none", craft(t, "", nil, with(hdr, "alg", "none"), claims), jwks.ErrAlgorithm},
		{"alg none with a signature", craft(t, "", nil, with(hdr, "alg", "none"), claims) + parts[2], jwks.ErrAlgorithm},
		{"HS256 keyed with the public key PEM", craft(t, jwa.HS256, key.pubPEM, with(hdr, "alg", "HS256"), claims), jwks.ErrAlgorithm},
		{"PS256 with the right RSA key", craft(t, jwa.PS256, key.signer, with(hdr, "alg", "PS256"), claims), jwks.ErrAlgorithm},
		{"ES256 with a P-256 key", craft(t, jwa.ES256, p256, with(hdr, "alg", "ES256"), claims), jwks.ErrAlgorithm},
		{"embedded jwk of the attacker", craft(t, jwa.RS256, attacker, with(hdr, "kid", attackerKid, "jwk", attackerJWK), claims), jwks.ErrHeader},
		{"embedded jwk even when signed by us", craft(t, jwa.RS256, key.signer, with(hdr, "jwk", attackerJWK), claims), jwks.ErrHeader},
		{"jku", craft(t, jwa.RS256, key.signer, with(hdr, "jku", "https://evil.test/jwks.json"), claims), jwks.ErrHeader},
		{"x5u", craft(t, jwa.RS256, key.signer, with(hdr, "x5u", "https://evil.test/cert.pem"), claims), jwks.ErrHeader},
		{"x5c", craft(t, jwa.RS256, key.signer, with(hdr, "x5c", []string{"MIIB"}), claims), jwks.ErrHeader},
		{"crit", craft(t, jwa.RS256, key.signer, with(hdr, "crit", []string{"exp"}), claims), jwks.ErrHeader},
		{"crit empty", craft(t, jwa.RS256, key.signer, with(hdr, "crit", []string{}), claims), jwks.ErrHeader},
		{"unknown kid", craft(t, jwa.RS256, attacker, with(hdr, "kid", attackerKid), claims), jwks.ErrUnknownKey},
		{"no kid", craft(t, jwa.RS256, key.signer, with(hdr, "kid", nil), claims), jwks.ErrUnknownKey},
		{"our kid, attacker's signature", craft(t, jwa.RS256, attacker, hdr, claims), jwks.ErrSignature},
		{"tampered claims", tampered, jwks.ErrSignature},
		{"pre-auth token as access token", preAuth, jwks.ErrWrongType},
		{"typ JWT", craft(t, jwa.RS256, key.signer, with(hdr, "typ", "JWT"), claims), jwks.ErrWrongType},
		{"no typ", craft(t, jwa.RS256, key.signer, with(hdr, "typ", nil), claims), jwks.ErrWrongType},
		{"trailing newline", valid + "\n", jwks.ErrMalformed},
		{"trailing space", valid + " ", jwks.ErrMalformed},
		{"trailing dot", valid + ".", jwks.ErrMalformed},
		{"trailing segment", valid + ".e30", jwks.ErrMalformed},
		{"trailing padding", valid + "=", jwks.ErrMalformed},
		{"leading space", " " + valid, jwks.ErrMalformed},
		{"lax base64 spelling", lax, jwks.ErrMalformed},
		{"JSON serialization", string(jsonSerialized), jwks.ErrMalformed},
		{"two segments", parts[0] + "." + parts[1], jwks.ErrMalformed},
		{"empty", "", jwks.ErrMalformed},
		{"header not JSON", enc([]byte("nope")) + "." + parts[1] + "." + parts[2], jwks.ErrMalformed},
		{"over 8 KiB", huge, jwks.ErrTooLarge},
		{"over 8 KiB of garbage", strings.Repeat("a", 8<<10+1), jwks.ErrTooLarge},
		{"wrong iss", craft(t, jwa.RS256, key.signer, hdr, with(claims, "iss", "https://evil.test")), jwks.ErrClaims},
		{"wrong aud", craft(t, jwa.RS256, key.signer, hdr, with(claims, "aud", "other")), jwks.ErrClaims},
		{"pre-auth aud", craft(t, jwa.RS256, key.signer, hdr, with(claims, "aud", jwks.PreAuthAudience)), jwks.ErrClaims},
		{"no iss", craft(t, jwa.RS256, key.signer, hdr, with(claims, "iss", nil)), jwks.ErrClaims},
		{"no exp", craft(t, jwa.RS256, key.signer, hdr, with(claims, "exp", nil)), jwks.ErrClaims},
		{"no nbf", craft(t, jwa.RS256, key.signer, hdr, with(claims, "nbf", nil)), jwks.ErrClaims},
		{"no sub", craft(t, jwa.RS256, key.signer, hdr, with(claims, "sub", nil)), jwks.ErrClaims},
		{"no sid", craft(t, jwa.RS256, key.signer, hdr, with(claims, "sid", nil)), jwks.ErrClaims},
		{"no sst", craft(t, jwa.RS256, key.signer, hdr, with(claims, "sst", nil)), jwks.ErrClaims},
		{"no jti", craft(t, jwa.RS256, key.signer, hdr, with(claims, "jti", nil)), jwks.ErrClaims},
		{"expired", craft(t, jwa.RS256, key.signer, hdr, with(claims, "exp", t0.Add(-time.Minute).Unix())), jwks.ErrExpired},
		{"nbf a minute ahead", craft(t, jwa.RS256, key.signer, hdr, with(claims, "nbf", t0.Add(time.Minute).Unix())), jwks.ErrNotYetValid},
		{"iat a minute ahead", craft(t, jwa.RS256, key.signer, hdr, with(claims, "iat", t0.Add(time.Minute).Unix())), jwks.ErrNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.VerifyAccess(tt.token)
			if !errors.Is(err, tt.want) {
				t.Errorf("VerifyAccess = %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("access token as pre-auth token", func(t *testing.T) {
		if _, err := m.VerifyPreAuth(valid); !errors.Is(err, jwks.ErrWrongType) {
			t.Errorf("VerifyPreAuth = %v, want ErrWrongType", err)
		}
	})
}

func withEmail(c jwks.AccessClaims, email string) jwks.AccessClaims {
	c.Email = email
	return c
}

// laxTwin is another base64url character with the same two high bits as c, so a
// decoder that ignores the unused low bits reads the same bytes.
func laxTwin(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return alphabet[i^1]
}

func TestCritNullIsRefused(t *testing.T) {
	m, key := refusalManager(t, newClock())
	// A present-but-null crit is still a crit the issuer did not write.
	tok := craft(t, jwa.RS256, key.signer, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": key.kid, "crit": nil}, validClaims(t0))
	if _, err := m.VerifyAccess(tok); !errors.Is(err, jwks.ErrHeader) {
		t.Errorf("crit null: %v, want ErrHeader", err)
	}
}

func TestReasonIsAStableLabel(t *testing.T) {
	for err, want := range map[error]string{
		nil:                  "ok",
		jwks.ErrExpired:      "expired",
		jwks.ErrNotYetValid:  "not_yet_valid",
		jwks.ErrMalformed:    "malformed",
		jwks.ErrSignature:    "signature",
		jwks.ErrUnknownKey:   "unknown_key",
		jwks.ErrWrongType:    "wrong_type",
		jwks.ErrClaims:       "claims",
		jwks.ErrTooLarge:     "too_large",
		jwks.ErrHeader:       "forbidden_header",
		jwks.ErrAlgorithm:    "algorithm",
		errors.New("other"):  "error",
		jwks.ErrNoSigningKey: "error",
	} {
		if got := jwks.Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

// FuzzVerifyAccess feeds arbitrary strings to the verifier: it must refuse them
// with one of its errors and never panic. The seeds run with go test; go test
// -fuzz FuzzVerifyAccess explores further.
func FuzzVerifyAccess(f *testing.F) {
	m, key := refusalManager(f, newClock())
	valid := craft(f, jwa.RS256, key.signer, key.header(), validClaims(t0))
	f.Add(valid)
	f.Add(valid + ".")
	f.Add(craft(f, "", nil, map[string]any{"alg": "none"}, validClaims(t0)))
	f.Add("e30.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		_, err := m.VerifyAccess(tok)
		if err != nil && jwks.Reason(err) == "error" {
			t.Errorf("refusal without a reason: %v", err)
		}
		if err == nil && tok != valid {
			t.Errorf("accepted %q", tok)
		}
	})
}
