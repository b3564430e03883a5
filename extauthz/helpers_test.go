package extauthz_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/testenv"
)

const (
	testIssuer   = "https://auth.example.test"
	testAudience = "https://apps.example.test"
)

// t0 is the test clock's start: a whole second, as token times are.
var t0 = time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC)

// clock is a settable Now shared by the Manager and the Checker.
type clock = testenv.Clock

func newClock() *clock { return testenv.NewClock(t0) }

// keyDir is one RSA-2048 key pair shared by the package's tests: generating one costs
// more than most tests.
var keyDir = struct {
	once sync.Once
	dir  string
	priv crypto.Signer
	pub  []byte
	err  error
}{}

func TestMain(m *testing.M) {
	code := m.Run()
	if keyDir.dir != "" {
		os.RemoveAll(keyDir.dir)
	}
	os.Exit(code)
}

// keys returns the shared key directory, the private key and the public key PEM.
func keys(t testing.TB) (dir string, priv crypto.Signer, pubPEM []byte) {
	t.Helper()
	keyDir.once.Do(func() {
		keyDir.dir, keyDir.err = os.MkdirTemp("", "extauthz-keys-")
		if keyDir.err != nil {
			return
		}
		var privPath, pubPath string
		privPath, pubPath, keyDir.err = jwks.GenerateKeyPair(keyDir.dir, "RS256", 2048, t0)
		if keyDir.err != nil {
			return
		}
		data, err := os.ReadFile(privPath)
		if err != nil {
			keyDir.err = err
			return
		}
		block, _ := pem.Decode(data)
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			keyDir.err = err
			return
		}
		keyDir.priv = k.(crypto.Signer)
		keyDir.pub, keyDir.err = os.ReadFile(pubPath)
	})
	if keyDir.err != nil {
		t.Fatal(keyDir.err)
	}
	return keyDir.dir, keyDir.priv, keyDir.pub
}

// manager is a Manager over the shared keys with the given issuer and audience.
func manager(t testing.TB, now func() time.Time, issuer, audience string) *jwks.Manager {
	t.Helper()
	dir, _, _ := keys(t)
	m, err := jwks.New(jwks.Source{Dir: dir}, jwks.Options{Alg: "RS256", Issuer: issuer, Audience: audience, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// memSource is an in-memory SessionSource: sessions, stamps, and a switch to fail;
// reads counts calls of State.
type memSource struct {
	mu       sync.Mutex
	sessions map[string]extauthz.SessionInfo
	stamps   map[string]string
	down     bool
	reads    int
}

func newMemSource() *memSource {
	return &memSource{sessions: map[string]extauthz.SessionInfo{}, stamps: map[string]string{}}
}

var errStoreDown = errors.New("store is down")

func (s *memSource) State(_ context.Context, sid, uid string) (extauthz.SessionInfo, extauthz.StampInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.down {
		return extauthz.SessionInfo{}, extauthz.StampInfo{}, errStoreDown
	}
	info, ok := s.sessions[sid]
	info.Found = ok
	stamp, ok := s.stamps[uid]
	return info, extauthz.StampInfo{Found: ok, Stamp: stamp}, nil
}

func (s *memSource) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *memSource) revoke(sid string) {
	s.mu.Lock()
	info := s.sessions[sid]
	info.Revoked = true
	s.sessions[sid] = info
	s.mu.Unlock()
}

func (s *memSource) rotate(uid, stamp string) {
	s.mu.Lock()
	s.stamps[uid] = stamp
	s.mu.Unlock()
}

// syncBuffer collects log lines written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines decodes the JSON log lines.
func (b *syncBuffer) lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// env is a Checker over the shared keys, an in-memory source and an in-process limiter,
// on a settable clock.
type env struct {
	t       testing.TB
	clock   *clock
	mgr     *jwks.Manager
	src     *memSource
	checker *extauthz.Checker
	dlog    *syncBuffer
	reg     *prometheus.Registry
	n       int
}

func newEnv(t testing.TB, mutate func(*extauthz.Config)) *env {
	t.Helper()
	e := &env{t: t, clock: newClock(), src: newMemSource(), dlog: &syncBuffer{}, reg: prometheus.NewRegistry()}
	e.mgr = manager(t, e.clock.Now, testIssuer, testAudience)
	lim, err := ratelimit.NewMemory(ratelimit.MemoryOptions{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cfg := extauthz.Config{
		Verifier:    e.mgr,
		Sessions:    e.src,
		Limiter:     lim,
		UserLimit:   ratelimit.Limit{Burst: 1000, Period: time.Second},
		IPLimit:     ratelimit.Limit{Burst: 1000, Period: time.Second},
		DecisionLog: e.dlog,
		Now:         e.clock.Now,
		Registerer:  e.reg,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	e.checker, err = extauthz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// user is a user with one live session in the source.
type user struct {
	id, sid, stamp, email string
	amr                   []string
}

func (e *env) newUser(amr ...string) user {
	e.n++
	u := user{
		id:    fmt.Sprintf("0193f2a4-0000-7000-8000-%012d", e.n),
		sid:   fmt.Sprintf("0193f2a4-0001-7000-8000-%012d", e.n),
		stamp: fmt.Sprintf("0193f2a4-0002-7000-8000-%012d", e.n),
		email: fmt.Sprintf("user%d@example.test", e.n),
		amr:   amr,
	}
	if len(u.amr) == 0 {
		u.amr = []string{"pwd"}
	}
	e.src.mu.Lock()
	e.src.sessions[u.sid] = extauthz.SessionInfo{UserID: u.id, ExpiresAt: e.clock.Now().Add(90 * 24 * time.Hour)}
	e.src.stamps[u.id] = u.stamp
	e.src.mu.Unlock()
	return u
}

// token signs an access token for u with e's Manager.
func (e *env) token(u user) string {
	e.t.Helper()
	return sign(e.t, e.mgr, u)
}

func sign(t testing.TB, m *jwks.Manager, u user) string {
	t.Helper()
	tok, _, err := m.SignAccess(jwks.AccessClaims{Subject: u.id, SessionID: u.sid, Stamp: u.stamp, Email: u.email, AMR: u.amr})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// kidOf returns the kid in a token's header.
func kidOf(t testing.TB, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

// craft builds a compact token from header and claims; sign turns the signing input
// into a signature (nil: empty signature).
func craft(t testing.TB, header, claims map[string]any, sign func(input []byte) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64(h) + "." + b64(c)
	if sign == nil {
		return input + "."
	}
	return input + "." + b64(sign([]byte(input)))
}

// rsaSign signs with key under RS256.
func rsaSign(t testing.TB, key crypto.Signer) func([]byte) []byte {
	return func(input []byte) []byte {
		s, err := jws.NewSigner(jwa.RS256)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.Sign(input, key)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
}

// hs256 is the classic forgery: HMAC keyed with the public key's PEM.
func hs256(key []byte) func([]byte) []byte {
	return func(input []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write(input)
		return m.Sum(nil)
	}
}

func claimsFor(u user, now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": u.id, "sid": u.sid, "sst": u.stamp,
		"jti": "0193f2a4-0003-7000-8000-000000000001", "email": u.email, "amr": u.amr,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
	}
}

func bearerReq(tok string) extauthz.Request {
	return extauthz.Request{Method: "GET", Scheme: "https", Host: "app.example.test", Path: "/orders?page=2",
		Authorization: []string{"Bearer " + tok}}
}

// header returns the value of name in hs and whether it is there (once).
func header(t testing.TB, hs []extauthz.Header, name string) (string, bool) {
	t.Helper()
	var v string
	n := 0
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			v = h.Value
			n++
		}
	}
	if n > 1 {
		t.Errorf("header %s appears %d times", name, n)
	}
	return v, n == 1
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
