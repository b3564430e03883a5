package jwks_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authd/authd/jwks"
	"github.com/authd/authd/testenv"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	testIssuer   = "https://auth.example.test"
	testAudience = "https://apps.example.test"
)

// t0 is the test clock's start: a whole second, as token times are.
var t0 = time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC)

// clock is a settable Now for the Manager.
type clock = testenv.Clock

func newClock() *clock { return testenv.NewClock(t0) }

// keyPair generates a key pair for alg into dir and returns the private key file.
func keyPair(t testing.TB, dir, alg string, at time.Time) (privPath, pubPath string) {
	t.Helper()
	privPath, pubPath, err := jwks.GenerateKeyPair(dir, alg, 2048, at)
	if err != nil {
		t.Fatal(err)
	}
	return privPath, pubPath
}

// readSigner parses the private key file written by GenerateKeyPair.
func readSigner(t testing.TB, path string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return key.(crypto.Signer)
}

type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newManager builds a Manager over src with the test issuer and audience.
func newManager(t testing.TB, src jwks.Source, alg string, c *clock) *jwks.Manager {
	t.Helper()
	m, _ := newManagerLog(t, src, alg, c)
	return m
}

func newManagerLog(t testing.TB, src jwks.Source, alg string, c *clock) (*jwks.Manager, *testLog) {
	t.Helper()
	var now func() time.Time
	if c != nil {
		now = c.Now
	}
	logs := &testLog{}
	m, err := jwks.New(src, jwks.Options{
		Alg: alg, Issuer: testIssuer, Audience: testAudience, Now: now,
		Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
		PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, logs
}

// dirManager is a Manager over a fresh key directory with one key pair.
func dirManager(t testing.TB, alg string, c *clock) (m *jwks.Manager, dir string, key crypto.Signer) {
	t.Helper()
	dir = t.TempDir()
	priv, _ := keyPair(t, dir, alg, t0)
	return newManager(t, jwks.Source{Dir: dir}, alg, c), dir, readSigner(t, priv)
}

func accessClaims() jwks.AccessClaims {
	return jwks.AccessClaims{
		Subject:   "0193f2a4-0000-7000-8000-000000000001",
		SessionID: "0193f2a4-0000-7000-8000-000000000002",
		Stamp:     "0193f2a4-0000-7000-8000-000000000003",
		Email:     "ada@example.test",
		AMR:       []string{"pwd", "otp"},
	}
}

func signAccess(t testing.TB, m *jwks.Manager) string {
	t.Helper()
	tok, _, err := m.SignAccess(accessClaims())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// craft builds a compact token from any header and claims, signed with key under
// alg (a nil key leaves the signature empty).
func craft(t testing.TB, alg jwa.SignatureAlgorithm, key any, header, claims any) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := enc(h) + "." + enc(p)
	if key == nil {
		return input + "."
	}
	signer, err := jws.NewSigner(alg)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign([]byte(input), key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + enc(sig)
}

// segments decodes the header and the claims of a compact token.
func segments(t testing.TB, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}
