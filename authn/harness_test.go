package authn_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/authn/fernet"
	"github.com/authd/authd/authn/password"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/migrations"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
	"github.com/authd/authd/store/sqlstore"
	"github.com/authd/authd/testenv"
	"github.com/authd/authd/webserver"
)

const (
	testIssuer   = "https://auth.example.test"
	testAudience = "https://apps.example.test"
	defaultUA    = "authn-test/1.0"
)

// t0 is where every test clock starts: a whole TOTP step (30 s), so codes are easy to reason about.
var t0 = time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)

// The signing key pair, generated once per test binary (RSA generation is slow).
var testKey struct{ private, public []byte }

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "authn-keys-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	priv, pub, err := jwks.GenerateKeyPair(dir, "RS256", 2048, t0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if testKey.private, err = os.ReadFile(priv); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if testKey.public, err = os.ReadFile(pub); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// clock is the fake time shared by the service, the token manager, the Fernet sealer and
// the in-process rate limiter, so windows and expiries are tested without sleeping.
type clock = testenv.Clock

// syncBuffer is a log sink safe for the concurrent writers of a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// config is what a test may change about its stack; newEnv fills the defaults.
type config struct {
	backend       string          // "postgres" (default) or "sqlite"
	params        password.Params // cheap unless a test asks otherwise
	defaultParams bool            // use password.Options{} as production does
	maxConcurrent int
	maxWait       time.Duration
	opts          authn.Options
	limits        authn.Limits
	limiter       func(t testing.TB, c *clock, reg prometheus.Registerer) ratelimit.Limiter
	bus           func(t testing.TB) revocation.Bus
	policyMin     int
}

// rule is a limit rule with the fail-closed setting production gives its class.
func rule(class string, l ratelimit.Limit) ratelimit.Rule {
	r := ratelimit.Rule{Class: class, Limit: l}
	for _, s := range ratelimit.Settings() {
		if s.Class == class {
			r.FailClosed = s.FailClosed
		}
	}
	return r
}

// generousLimits never refuse a test's requests.
func generousLimits() authn.Limits {
	l := ratelimit.Limit{Burst: 100_000, Period: time.Minute}
	return authn.Limits{
		LoginIP: rule(ratelimit.ClassLoginIP, l), LoginEmail: rule(ratelimit.ClassLoginEmail, l),
		VerifyMFAIP: rule(ratelimit.ClassVerifyMFAIP, l), RegisterIP: rule(ratelimit.ClassRegisterIP, l),
		RefreshIP: rule(ratelimit.ClassRefreshIP, l), APIUser: rule(ratelimit.ClassAPIUser, l),
	}
}

// cheapParams keep Argon2id fast in tests; one test runs the defaults.
var cheapParams = password.Params{Memory: 8 * 1024, Time: 1, Threads: 1}

// env is one test's whole stack: a fresh store, the service, the handlers behind the
// production middleware, a fake clock, a metrics registry, a captured JSON log and the
// revocation messages published.
type env struct {
	t      testing.TB
	clock  *clock
	st     *sqlstore.Store
	dbURL  string // the test's own database
	svc    *authn.Service
	h      http.Handler
	reg    *prometheus.Registry
	logs   *syncBuffer
	hasher *password.Hasher
	box    *fernet.Box // the FERNET_KEY TOTP secrets are sealed with

	msgMu sync.Mutex
	msgs  []revocation.Message
}

func newEnv(t testing.TB, changes ...func(*config)) *env {
	t.Helper()
	cfg := config{
		backend:       "postgres",
		params:        cheapParams,
		maxConcurrent: 4,
		maxWait:       30 * time.Second,
		opts: authn.Options{
			RefreshTTL:       30 * 24 * time.Hour,
			SessionTTL:       90 * 24 * time.Hour,
			LockoutThreshold: 5,
			LockoutDurations: []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour},
			MFAIssuer:        "authd-test",
		},
		limits: generousLimits(),
	}
	for _, c := range changes {
		c(&cfg)
	}
	e := &env{t: t, clock: testenv.NewClock(t0), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			logs := e.logs.String()
			if len(logs) > 16<<10 {
				logs = "…" + logs[len(logs)-16<<10:]
			}
			t.Logf("service log:\n%s", logs)
		}
	})
	// Debug level, so the secrets test sees everything; no time, which the fake clock does
	// not drive anyway.
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	ctx := t.Context()

	var dbURL string
	switch cfg.backend {
	case "postgres":
		dbURL = testenv.Postgres(t)
	case "sqlite":
		dbURL = "sqlite://" + filepath.Join(t.TempDir(), "authd.db")
	default:
		t.Fatalf("unknown backend %q", cfg.backend)
	}
	if err := migrations.Up(ctx, dbURL); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	st, err := sqlstore.Open(ctx, dbURL, sqlstore.Options{MaxConns: 6, Logger: log})
	if err != nil {
		t.Fatalf("sqlstore.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.st, e.dbURL = st, dbURL

	keys, err := jwks.New(jwks.Source{PrivatePEM: testKey.private, PublicPEM: testKey.public}, jwks.Options{
		Issuer: testIssuer, Audience: testAudience, Now: e.clock.Now, Logger: log, Registerer: e.reg,
	})
	if err != nil {
		t.Fatalf("jwks.New: %v", err)
	}

	hopts := password.Options{Params: cfg.params, MaxConcurrent: cfg.maxConcurrent, MaxWait: cfg.maxWait, Registerer: e.reg}
	if cfg.defaultParams {
		hopts = password.Options{Registerer: e.reg}
	}
	if e.hasher, err = password.NewHasher(hopts); err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	policy, err := password.NewPolicy(cfg.policyMin)
	if err != nil {
		t.Fatal(err)
	}
	fkey, err := fernet.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	box, err := fernet.ParseKeys(fkey)
	if err != nil {
		t.Fatal(err)
	}
	e.box = box

	var bus revocation.Bus = revocation.NewMemory()
	if cfg.bus != nil {
		bus = cfg.bus(t)
	}
	subCtx, cancel := context.WithCancel(context.Background())
	subscribed := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		bus.Subscribe(subCtx, func(m revocation.Message) {
			e.msgMu.Lock()
			e.msgs = append(e.msgs, m)
			e.msgMu.Unlock()
		}, func(connected bool) {
			if connected {
				once.Do(func() { close(subscribed) })
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-subscribed:
	case <-time.After(10 * time.Second):
		t.Fatal("the revocation subscription did not start")
	}

	e.svc, err = authn.New(authn.Deps{
		Store: st, Hasher: e.hasher, Policy: policy, Tokens: keys, Bus: bus,
		Secrets: fernet.Sealer{Box: box, Now: e.clock.Now}, Logger: log, Registry: e.reg, Now: e.clock.Now,
	}, cfg.opts)
	if err != nil {
		t.Fatalf("authn.New: %v", err)
	}
	t.Cleanup(e.svc.Close)

	var limiter ratelimit.Limiter
	if cfg.limiter != nil {
		limiter = cfg.limiter(t, e.clock, e.reg)
	} else if limiter, err = ratelimit.NewMemory(ratelimit.MemoryOptions{Now: e.clock.Now, Registerer: e.reg}); err != nil {
		t.Fatal(err)
	}
	guard, err := ratelimit.NewGuard(limiter, ratelimit.GuardOptions{Logger: log, Registerer: e.reg, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{Registry: e.reg}))
	authn.NewHandlers(e.svc, guard, cfg.limits,
		func(r *http.Request) string { return webserver.ClientIP(r.Context()) }, log).Register(mux)
	e.h = webserver.Handler(mux, webserver.Options{Logger: log, Registerer: e.reg})
	return e
}

// messages returns the revocation messages published so far.
func (e *env) messages() []revocation.Message {
	e.msgMu.Lock()
	defer e.msgMu.Unlock()
	return slices.Clone(e.msgs)
}

// hasMessage reports whether m was published.
func (e *env) hasMessage(m revocation.Message) bool {
	return slices.Contains(e.messages(), m)
}

// audit flushes the audit queue (Close drains it; later events are written at once) and
// returns the matching rows, newest first.
func (e *env) audit(q store.AuditQuery) []store.AuditEvent {
	e.t.Helper()
	e.svc.Close()
	if q.Limit == 0 {
		q.Limit = 1000
	}
	rows, err := e.st.ListAudit(context.Background(), q)
	if err != nil {
		e.t.Fatalf("ListAudit: %v", err)
	}
	for _, r := range rows {
		if r.RiskScore < 0 || r.RiskScore > 100 {
			e.t.Errorf("audit %s has risk score %d, outside 0–100", r.Event, r.RiskScore)
		}
	}
	return rows
}

// auditOf returns the rows of one event.
func (e *env) auditOf(event string) []store.AuditEvent {
	e.t.Helper()
	return e.audit(store.AuditQuery{Event: event})
}

// response is a recorded answer.
type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r *response) String() string { return fmt.Sprintf("%d %s", r.Code, r.Body) }

// decode reads the body as JSON into v, failing the test on error.
func (r *response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

// problemDoc is an RFC 9457 body.
type problemDoc struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Code   string       `json:"code"`
	Errors []fieldError `json:"errors"`
}

type fieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// wantProblem checks the status, the code and the media type of an error answer.
func wantProblem(t testing.TB, r *response, status int, code string) problemDoc {
	t.Helper()
	var p problemDoc
	if r.Code != status {
		t.Fatalf("want %d %s, got %s", status, code, r)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (%s)", ct, r)
	}
	r.decode(t, &p)
	if p.Code != code || p.Status != status {
		t.Fatalf("want %d %s, got %s", status, code, r)
	}
	return p
}

// wantStatus fails the test unless the answer has status.
func wantStatus(t testing.TB, r *response, status int) {
	t.Helper()
	if r.Code != status {
		t.Fatalf("want %d, got %s", status, r)
	}
}

// reqOpt changes a request.
type reqOpt func(*http.Request)

func bearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func userAgent(ua string) reqOpt { return func(r *http.Request) { r.Header.Set("User-Agent", ua) } }

func fromIP(ip string) reqOpt { return func(r *http.Request) { r.RemoteAddr = ip + ":40000" } }

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// do sends one request through the middleware. body is sent as is when it is a string or
// []byte, as JSON otherwise, and not at all when nil.
func (e *env) do(method, path string, body any, opts ...reqOpt) *response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	r := httptest.NewRequest(method, path, rd)
	if rd != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	r.Header.Set("User-Agent", defaultUA)
	r.RemoteAddr = "198.51.100.7:40000"
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return &response{Code: w.Code, Header: w.Header(), Body: w.Body.Bytes()}
}

func (e *env) post(path string, body any, opts ...reqOpt) *response {
	e.t.Helper()
	return e.do(http.MethodPost, "/api/auth"+path, body, opts...)
}

func (e *env) get(path string, opts ...reqOpt) *response {
	e.t.Helper()
	return e.do(http.MethodGet, "/api/auth"+path, nil, opts...)
}

// tokenResponse is the token response of DESIGN §3.
type tokenResponse struct {
	Status           string `json:"status"`
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
	SessionID        string `json:"session_id"`
}

type preAuthResponse struct {
	Status       string   `json:"status"`
	PreAuthToken string   `json:"pre_auth_token"`
	ExpiresIn    int64    `json:"expires_in"`
	Methods      []string `json:"methods"`
}

type account struct {
	ID          string     `json:"id"`
	Email       string     `json:"email"`
	FullName    string     `json:"full_name"`
	MFAEnabled  bool       `json:"mfa_enabled"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
}

// register creates an account and returns it.
func (e *env) register(email, pw string) account {
	e.t.Helper()
	r := e.post("/register", map[string]string{"email": email, "password": pw, "full_name": "Test User"})
	wantStatus(e.t, r, http.StatusCreated)
	var a account
	r.decode(e.t, &a)
	return a
}

// tokens reads an AUTHENTICATED token response.
func tokensOf(t testing.TB, r *response) tokenResponse {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var tr tokenResponse
	r.decode(t, &tr)
	if tr.Status != "AUTHENTICATED" || tr.AccessToken == "" || tr.RefreshToken == "" || tr.TokenType != "Bearer" {
		t.Fatalf("not a token response: %s", r)
	}
	return tr
}

// login logs in with a password and returns the tokens.
func (e *env) login(email, pw string, opts ...reqOpt) tokenResponse {
	e.t.Helper()
	return tokensOf(e.t, e.post("/login", map[string]string{"email": email, "password": pw}, opts...))
}

// loginPreAuth logs in an MFA account and returns the pre-auth step.
func (e *env) loginPreAuth(email, pw string, opts ...reqOpt) preAuthResponse {
	e.t.Helper()
	r := e.post("/login", map[string]string{"email": email, "password": pw}, opts...)
	wantStatus(e.t, r, http.StatusOK)
	var p preAuthResponse
	r.decode(e.t, &p)
	if p.Status != "PRE_AUTH" || p.PreAuthToken == "" {
		e.t.Fatalf("not a pre-auth response: %s", r)
	}
	return p
}

func (e *env) refresh(rt string, opts ...reqOpt) *response {
	e.t.Helper()
	return e.post("/refresh", map[string]string{"refresh_token": rt}, opts...)
}

func (e *env) me(access string, opts ...reqOpt) *response {
	e.t.Helper()
	return e.get("/me", append([]reqOpt{bearer(access)}, opts...)...)
}

// mfaSetup is the answer of /mfa/enable.
type mfaSetup struct {
	Secret     string `json:"secret"`
	OTPAuthURL string `json:"otpauth_url"`
	QRCode     string `json:"qr_code"`
}

type mfaActivated struct {
	MFAEnabled    bool          `json:"mfa_enabled"`
	RecoveryCodes []string      `json:"recovery_codes"`
	Tokens        tokenResponse `json:"tokens"`
}

// code is the TOTP code of secret at the test clock.
func (e *env) code(secret string) string {
	e.t.Helper()
	c, err := totp.GenerateCode(secret, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// enableMFA turns MFA on for the caller and returns the secret, the recovery codes and
// the caller's fresh tokens. The clock moves to the next TOTP step, so the next code is
// not a replay of the activation code.
func (e *env) enableMFA(access string) (secret string, act mfaActivated) {
	e.t.Helper()
	r := e.post("/mfa/enable", nil, bearer(access))
	wantStatus(e.t, r, http.StatusOK)
	var s mfaSetup
	r.decode(e.t, &s)
	r = e.post("/mfa/verify", map[string]string{"code": e.code(s.Secret)}, bearer(access))
	wantStatus(e.t, r, http.StatusOK)
	r.decode(e.t, &act)
	e.clock.Add(30 * time.Second)
	return s.Secret, act
}

// wrongCode is a 6-digit code that is not right.
func wrongCode(right string) string {
	b := []byte(right)
	b[5] = '0' + (b[5]-'0'+1)%10
	return string(b)
}

// claims decodes a JWT's payload without verifying it.
func claims(t testing.TB, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// hashCount is how many Argon2id computations of op ("hash" or "verify") the hasher ran.
func (e *env) hashCount(op string) uint64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "authd_password_hash_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// counter is the value of a counter without labels (0 when it was never touched).
func (e *env) counter(name string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// user reads a user straight from the store.
func (e *env) user(email string) store.User {
	e.t.Helper()
	u, err := e.st.GetUserByEmail(context.Background(), authn.NormalizeEmail(email))
	if err != nil {
		e.t.Fatalf("GetUserByEmail(%q): %v", email, err)
	}
	return u
}

// parallel runs fn n times at once, released together, and waits for all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn(i)
		}()
	}
	close(start)
	wg.Wait()
}
