package jwks_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/jwks"
	"github.com/golang-jwt/jwt/v5"
)

// serve mounts the handlers as cmd/authd does.
func serve(t *testing.T, m *jwks.Manager) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /.well-known/jwks.json", m.JWKSHandler())
	mux.Handle("GET /.well-known/openid-configuration", m.DiscoveryHandler(""))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// fetchJWKS gets the key set over HTTP and turns it into public keys with the
// standard library alone, so nothing of jwx takes part on the consumer side.
// Each key's kid is checked against an RFC 7638 thumbprint computed here.
func fetchJWKS(t *testing.T, url string) map[string]crypto.PublicKey {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return jwksKeys(t, doc.Keys)
}

func jwksKeys(t *testing.T, keys []map[string]string) map[string]crypto.PublicKey {
	t.Helper()
	out := map[string]crypto.PublicKey{}
	for _, k := range keys {
		if k["use"] != "sig" || k["alg"] == "" || k["kid"] == "" {
			t.Errorf("key %v lacks use sig, alg or kid", k)
		}
		b := func(name string) []byte {
			v, err := base64.RawURLEncoding.DecodeString(k[name])
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return v
		}
		var (
			pub    crypto.PublicKey
			tpJSON string
		)
		switch k["kty"] {
		case "RSA":
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(b("n")), E: int(new(big.Int).SetBytes(b("e")).Int64())}
			tpJSON = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, k["e"], k["n"])
		case "EC":
			p, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, b("x")...), b("y")...))
			if err != nil {
				t.Fatal(err)
			}
			pub = p
			tpJSON = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k["crv"], k["x"], k["y"])
		case "OKP":
			pub = ed25519.PublicKey(b("x"))
			tpJSON = fmt.Sprintf(`{"crv":%q,"kty":"OKP","x":%q}`, k["crv"], k["x"])
		default:
			t.Fatalf("unexpected kty %q", k["kty"])
		}
		sum := sha256.Sum256([]byte(tpJSON))
		if want := base64.RawURLEncoding.EncodeToString(sum[:]); k["kid"] != want {
			t.Errorf("kid %s is not the RFC 7638 thumbprint %s", k["kid"], want)
		}
		out[k["kid"]] = pub
	}
	return out
}

// verifyElsewhere checks tok as a third party would: golang-jwt, fed only keys.
func verifyElsewhere(t *testing.T, keys map[string]crypto.PublicKey, alg, tok string, now time.Time) (jwt.MapClaims, error) {
	t.Helper()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(tk *jwt.Token) (any, error) {
		kid, _ := tk.Header["kid"].(string)
		if k, ok := keys[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("unknown kid %q", kid)
	}, jwt.WithValidMethods([]string{alg}), jwt.WithIssuer(testIssuer), jwt.WithAudience(testAudience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(jwks.Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }))
	return claims, err
}

func TestIssuedTokenVerifiesInGolangJWTWithTheServedJWKS(t *testing.T) {
	for _, alg := range []string{"RS256", "PS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			m, _, _ := dirManager(t, alg, newClock())
			srv := serve(t, m)
			tok := signAccess(t, m)

			keys := fetchJWKS(t, srv.URL+"/.well-known/jwks.json")
			claims, err := verifyElsewhere(t, keys, alg, tok, t0)
			if err != nil {
				t.Fatalf("golang-jwt refuses the token: %v", err)
			}
			want := accessClaims()
			if claims["sub"] != want.Subject || claims["sid"] != want.SessionID || claims["sst"] != want.Stamp ||
				claims["email"] != want.Email || !reflect.DeepEqual(claims["amr"], []any{"pwd", "otp"}) {
				t.Errorf("claims %v", claims)
			}
			tk, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
			if err != nil || tk.Header["typ"] != "at+jwt" {
				t.Errorf("typ %v (%v), want at+jwt", tk.Header["typ"], err)
			}
		})
	}
}

func TestJWKSIsCacheableWithAStrongETag(t *testing.T) {
	m, dir, _ := dirManager(t, "RS256", newClock())
	srv := serve(t, m)
	url := srv.URL + "/.well-known/jwks.json"

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 10 {
		t.Errorf("ETag %q is not a strong entity tag", etag)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control %q", cc)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}

	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("If-None-Match", inm)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified || resp.Header.Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %s, ETag %q; want 304 with the same ETag", inm, resp.Status, resp.Header.Get("ETag"))
		}
	}

	// A new key changes the document and its tag; the old tag no longer matches.
	_, pub := keyPair(t, t.TempDir(), "RS256", t0.Add(time.Hour))
	copyFile(t, pub, dir)
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]string `json:"keys"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag || len(doc.Keys) != 2 {
		t.Errorf("after adding a key: %s, ETag %q, %d keys; want 200, a new ETag, 2 keys", resp.Status, resp.Header.Get("ETag"), len(doc.Keys))
	}
}

func TestDiscoveryDocumentPointsAtTheJWKS(t *testing.T) {
	m, _, _ := dirManager(t, "ES256", newClock())
	srv := serve(t, m)
	resp, err := http.Get(srv.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"issuer":                                testIssuer,
		"jwks_uri":                              testIssuer + "/.well-known/jwks.json",
		"id_token_signing_alg_values_supported": []any{"ES256"},
		"response_types_supported":              []any{"id_token"},
		"subject_types_supported":               []any{"public"},
	}
	for k, v := range want {
		if !reflect.DeepEqual(doc[k], v) {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	if resp.Header.Get("ETag") == "" || !strings.HasPrefix(resp.Header.Get("Cache-Control"), "public, max-age=") {
		t.Errorf("discovery headers %v", resp.Header)
	}
}
