package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/authd/authd/testenv"
)

// binary is the authd binary built once for these tests.
var binary string

func TestMain(m *testing.M) {
	if isEmptyServer() {
		if err := serveEmpty(); err != nil {
			fmt.Fprintln(os.Stderr, "empty servers:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "authd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "authd")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building authd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cheap keeps Argon2id fast in these process-level tests.
var cheap = []string{"ARGON2_MEMORY_KIB=8192", "ARGON2_TIME=1", "ARGON2_PARALLELISM=1"}

// authd runs the binary in dir with only the given environment (plus PATH and HOME).
func authd(t *testing.T, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	return cmd
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is a running `authd serve`.
type server struct {
	cmd      *exec.Cmd
	http     string
	grpc     string
	stderr   *bytes.Buffer
	exitCode chan int
}

func startServer(t *testing.T, dir string, env ...string) *server {
	t.Helper()
	s := &server{http: freeAddr(t), grpc: freeAddr(t), stderr: &bytes.Buffer{}, exitCode: make(chan int, 1)}
	env = append(env, "HTTP_ADDR="+s.http, "GRPC_ADDR="+s.grpc)
	env = append(env, cheap...)
	s.cmd = authd(t, dir, env, "serve")
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		s.exitCode <- code
	}()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("authd log:\n%s", s.stderr.String())
		}
	})
	return s
}

// waitReady polls /health/ready until it answers want or the deadline passes.
func (s *server) waitReady(t *testing.T, want int, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.http + "/health/ready")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			if resp.StatusCode == want {
				var doc map[string]any
				_ = json.Unmarshal(body, &doc)
				return doc
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("/health/ready did not answer %d within %v; last: %s", want, within, last)
	return nil
}

func (s *server) call(t *testing.T, method, path, bearer string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+s.http+path, r)
	req.Header.Set("User-Agent", "authd-e2e")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc
}

func (s *server) stop(t *testing.T) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-s.exitCode:
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("authd did not stop within 20 s of SIGTERM")
		return -1
	}
}

func TestBadConfigurationExitsTwoNamingTheVariable(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"bad DATABASE_URL", []string{"DATABASE_URL=mysql://db/authd"}, "DATABASE_URL:"},
		{"unparsable duration", []string{"ACCESS_TOKEN_TTL=fifteen minutes"}, "ACCESS_TOKEN_TTL:"},
		{"missing production secret", []string{"ENV=production", "DATABASE_URL=postgres://db/authd",
			"REDIS_URL=redis://r:6379", "JWT_KEYS_DIR=/keys"}, "FERNET_KEY:"},
		{"bad rate limit", []string{"RATE_LIMIT_LOGIN_IP=twenty"}, "RATE_LIMIT_LOGIN_IP:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := authd(t, t.TempDir(), tt.env, "serve")
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want status 2; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "authd: config: "+tt.want) {
				t.Fatalf("stderr = %q, want one line naming %s", stderr.String(), tt.want)
			}
		})
	}
}

func TestServeOnTheEmbeddedDefaultWithNoSetUp(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	doc := s.waitReady(t, http.StatusOK, 15*time.Second)
	checks, _ := doc["checks"].(map[string]any)
	if checks["database"] != "ok" || checks["redis"] != "disabled" {
		t.Fatalf("ready body: %v", doc)
	}
	for _, f := range []string{"data/authd.db", "data/keys"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("embedded default did not create %s: %v", f, err)
		}
	}
	if code := s.stop(t); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0", code)
	}
}

func TestServeOnPostgreSQLAndRedis(t *testing.T) {
	dbURL := testenv.Postgres(t)
	s := startServer(t, t.TempDir(), "DATABASE_URL="+dbURL, "REDIS_URL="+testenv.RedisURL())
	doc := s.waitReady(t, http.StatusOK, 15*time.Second)
	if checks, _ := doc["checks"].(map[string]any); checks["database"] != "ok" || checks["redis"] != "ok" {
		t.Fatalf("ready body: %v", doc)
	}
	// Readiness also reports the revocation subscription, once it is up.
	for deadline := time.Now().Add(5 * time.Second); ; {
		doc = s.waitReady(t, http.StatusOK, 5*time.Second)
		if checks, _ := doc["checks"].(map[string]any); checks["revocations"] == "subscribed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready body never reported the revocation subscription: %v", doc)
		}
		time.Sleep(20 * time.Millisecond)
	}

	email := testenv.RandomName("e2e") + "@example.com"
	pw := "a long enough passphrase for e2e"
	code, account := s.call(t, "POST", "/api/auth/register", "", map[string]any{"email": email, "password": pw})
	if code != 201 {
		t.Fatalf("register: %d %v", code, account)
	}
	code, tok := s.call(t, "POST", "/api/auth/login", "", map[string]any{"email": email, "password": pw})
	if code != 200 || tok["status"] != "AUTHENTICATED" {
		t.Fatalf("login: %d %v", code, tok)
	}
	access, _ := tok["access_token"].(string)
	if code, me := s.call(t, "GET", "/api/auth/me", access, nil); code != 200 || me["email"] != email {
		t.Fatalf("me: %d %v", code, me)
	}
	code, next := s.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": tok["refresh_token"]})
	if code != 200 || next["refresh_token"] == tok["refresh_token"] {
		t.Fatalf("refresh: %d %v", code, next)
	}
	access = next["access_token"].(string)

	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authz := authv3.NewAuthorizationClient(conn)
	check := func() *authv3.CheckResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Host: "app.example", Path: "/orders?page=2", Scheme: "https",
				Headers: map[string]string{"authorization": "Bearer " + access, "x-user-id": "spoofed"},
			}},
		}})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return resp
	}
	resp := check()
	if resp.GetStatus().GetCode() != 0 || resp.GetOkResponse() == nil {
		t.Fatalf("Check with a live token: %v", resp)
	}
	var userID string
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), "x-user-id") {
			userID = h.GetHeader().GetValue()
		}
	}
	if userID != account["id"] {
		t.Fatalf("Check did not set X-User-Id: %v", resp.GetOkResponse())
	}

	fa, _ := http.NewRequest("GET", "http://"+s.http+"/authz/forward-auth", nil)
	fa.Header.Set("Authorization", "Bearer "+access)
	fa.Header.Set("X-Forwarded-Method", "GET")
	fa.Header.Set("X-Forwarded-Proto", "https")
	fa.Header.Set("X-Forwarded-Host", "app.example")
	fa.Header.Set("X-Forwarded-Uri", "/orders")
	faResp, err := http.DefaultClient.Do(fa)
	if err != nil {
		t.Fatal(err)
	}
	faResp.Body.Close()
	if faResp.StatusCode != 200 || faResp.Header.Get("X-User-Id") != userID {
		t.Fatalf("forward-auth: %d X-User-Id=%q, want 200 and %q", faResp.StatusCode, faResp.Header.Get("X-User-Id"), userID)
	}

	if code, body := s.call(t, "POST", "/api/auth/logout", access, nil); code != 204 {
		t.Fatalf("logout: %d %v", code, body)
	}
	// The logout reaches the check path's cache through the revocation channel.
	deadline := time.Now().Add(2 * time.Second)
	for {
		resp = check()
		if resp.GetDeniedResponse().GetStatus().GetCode() == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Check still answers %v 2 s after logout", resp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp.GetStatus().GetCode() != int32(codes.Unauthenticated) {
		t.Fatalf("Check after logout: grpc status %d, want UNAUTHENTICATED", resp.GetStatus().GetCode())
	}
	if code, _ := s.call(t, "POST", "/api/auth/refresh", "", map[string]any{"refresh_token": next["refresh_token"]}); code != 401 {
		t.Fatalf("refresh after logout: %d, want 401", code)
	}
	if code, jwks := s.call(t, "GET", "/.well-known/jwks.json", "", nil); code != 200 || len(jwks["keys"].([]any)) == 0 {
		t.Fatalf("jwks: %d %v", code, jwks)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("grpc health: %v %v", hr, err)
	}

	if code := s.stop(t); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0", code)
	}
}

func TestReadinessFollowsPostgreSQLWithoutARestart(t *testing.T) {
	pg := testenv.StartPostgresServer(t)
	s := startServer(t, t.TempDir(), "DATABASE_URL="+pg.URL())
	s.waitReady(t, http.StatusOK, 15*time.Second)

	pg.Stop()
	doc := s.waitReady(t, http.StatusServiceUnavailable, 10*time.Second)
	checks, _ := doc["checks"].(map[string]any)
	if doc["status"] != "not_ready" || !strings.HasPrefix(fmt.Sprint(checks["database"]), "error: ") {
		t.Fatalf("not-ready body does not name the database: %v", doc)
	}

	pg.Start()
	s.waitReady(t, http.StatusOK, 15*time.Second)
}

func TestMigrateAndKeysCommands(t *testing.T) {
	dir := t.TempDir()
	out, err := authd(t, dir, nil, "migrate", "up").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "schema version 1") {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	out, err = authd(t, dir, nil, "migrate", "down", "all").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "schema version 0") {
		t.Fatalf("migrate down all: %v\n%s", err, out)
	}
	if out, err := authd(t, dir, nil, "migrate", "sideways").CombinedOutput(); err == nil {
		t.Fatalf("migrate sideways succeeded:\n%s", out)
	}

	keyDir := filepath.Join(dir, "keys")
	out, err = authd(t, dir, nil, "keys", "generate", "--dir", keyDir, "--alg", "ES256").CombinedOutput()
	if err != nil {
		t.Fatalf("keys generate: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(keyDir, "*.pem"))
	if len(files) != 2 {
		t.Fatalf("keys generate wrote %v", files)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", f, fi.Mode().Perm(), err)
		}
	}
	cmd := authd(t, dir, nil, "keys", "generate", "--bits", "1024")
	if err := cmd.Run(); err == nil {
		t.Fatal("a 1024-bit key was generated")
	}
}

// The check path's per-user limit on Redis, as two replicas enforce it: never more than
// the bucket however the checks alternate between them, Retry-After on the refusal, and
// most takes answered from each replica's reserve (the lease metric).
func TestCheckRateLimitAcrossReplicas(t *testing.T) {
	env := []string{"DATABASE_URL=" + testenv.Postgres(t), "REDIS_URL=" + testenv.RedisURL(),
		"RATE_LIMIT_CHECK_USER=40/1h", "RATE_LIMIT_CHECK_IP=0", "RATE_LIMIT_REGISTER_IP=0", "RATE_LIMIT_LOGIN_IP=0"}
	dir := t.TempDir()
	a := startServer(t, dir, env...)
	a.waitReady(t, http.StatusOK, 15*time.Second)
	b := startServer(t, dir, env...) // same keys under dir
	b.waitReady(t, http.StatusOK, 15*time.Second)

	access := newUserToken(t, a)

	allowed, retryAfter := 0, ""
	for i := range 60 {
		s := a
		if i%2 == 1 {
			s = b
		}
		switch ans := forwardAuth(t, s, access, ""); ans.status {
		case 200:
			allowed++
		case 429:
			if retryAfter == "" {
				retryAfter = ans.retryAfter
			}
		default:
			t.Fatalf("check %d: %d %s", i+1, ans.status, ans.code)
		}
	}
	// Leases of at most 4 (a tenth of 40): each replica may end holding 3 unused.
	if allowed > 40 || allowed < 40-2*3 || retryAfter == "" {
		t.Fatalf("60 checks over two replicas against 40/1h: %d allowed, first Retry-After %q; want 34 to 40, then 429 with Retry-After",
			allowed, retryAfter)
	}
	resp, err := http.Get("http://" + a.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	reserve := regexp.MustCompile(`authd_ratelimit_lease_takes_total\{source="reserve"\} (\d+)`).FindSubmatch(metrics)
	if reserve == nil || string(reserve[1]) == "0" {
		t.Fatalf("replica A answered no check from its reserve:\n%s", grepLines(string(metrics), "lease"))
	}
}

// newUserToken registers a new user on s, logs them in and returns their access token.
func newUserToken(t *testing.T, s *server) string {
	t.Helper()
	creds := map[string]any{"email": testenv.RandomName("user") + "@example.com", "password": "a long enough passphrase for e2e"}
	if code, body := s.call(t, "POST", "/api/auth/register", "", creds); code != 201 {
		t.Fatalf("register: %d %v", code, body)
	}
	code, tok := s.call(t, "POST", "/api/auth/login", "", creds)
	access, _ := tok["access_token"].(string)
	if code != 200 || access == "" {
		t.Fatalf("login: %d %v", code, tok)
	}
	return access
}

// checkAnswer is what the forward-auth endpoint answered.
type checkAnswer struct {
	status           int
	code, retryAfter string // the problem code and Retry-After of a denial
}

// forwardAuth asks s's forward-auth endpoint about GET app.example/ as Traefik would,
// with token (none if empty) and X-Forwarded-For xff (none if empty).
func forwardAuth(t *testing.T, s *server, token, xff string) checkAnswer {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.http+"/authz/forward-auth", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	req.Header.Set("X-Forwarded-Method", "GET")
	req.Header.Set("X-Forwarded-Host", "app.example")
	req.Header.Set("X-Forwarded-Uri", "/")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct {
		Code string `json:"code"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&p)
	return checkAnswer{resp.StatusCode, p.Code, resp.Header.Get("Retry-After")}
}

// With Redis gone the check path fails closed (503 rate_limiter_unavailable: the
// per-user limit cannot be taken), and answers again once Redis is back, without a
// restart.
func TestCheckPathFailsClosedWhileRedisIsDown(t *testing.T) {
	rs := testenv.StartRedisServer(t)
	s := startServer(t, t.TempDir(), "DATABASE_URL="+testenv.Postgres(t), "REDIS_URL=redis://"+rs.Addr(),
		"REDIS_TIMEOUT=200ms", "RATE_LIMIT_CHECK_IP=0")
	s.waitReady(t, http.StatusOK, 15*time.Second)
	access := newUserToken(t, s)
	if ans := forwardAuth(t, s, access, ""); ans.status != 200 {
		t.Fatalf("check with Redis up: %+v", ans)
	}

	rs.Stop()
	// Tokens this replica already held may still answer (at most one small lease).
	var ans checkAnswer
	for range 10 {
		if ans = forwardAuth(t, s, access, ""); ans.status != 200 {
			break
		}
	}
	if ans.status != 503 || ans.code != "rate_limiter_unavailable" {
		t.Fatalf("check with Redis down: %+v, want 503 rate_limiter_unavailable", ans)
	}

	rs.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ans = forwardAuth(t, s, access, ""); ans.status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check 10 s after Redis came back: %+v", ans)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The check path believes X-Forwarded-For hops only from CHECK_TRUSTED_PROXIES, never
// from TRUSTED_PROXIES (authd's own peers): two clients behind a balancer get buckets of
// their own only when the balancer is listed there.
func TestCheckPathTrustsOnlyCheckTrustedProxies(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name      string
		env       string
		secondHit int
	}{
		{"TRUSTED_PROXIES alone", "TRUSTED_PROXIES=127.0.0.0/8", 429},
		{"CHECK_TRUSTED_PROXIES", "CHECK_TRUSTED_PROXIES=127.0.0.0/8", 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, dir, tt.env, "RATE_LIMIT_CHECK_IP=1/1h",
				"DATABASE_URL=sqlite://"+filepath.Join(t.TempDir(), "authd.db"))
			s.waitReady(t, http.StatusOK, 15*time.Second)
			status := func(client string) int {
				// Traefik behind a balancer at 127.0.0.1 appended the balancer.
				return forwardAuth(t, s, "", client+", 127.0.0.1").status
			}
			if got := status("203.0.113.1"); got != 401 {
				t.Fatalf("first client without a token: %d, want 401", got)
			}
			if got := status("203.0.113.2"); got != tt.secondHit {
				t.Fatalf("second client without a token: %d, want %d", got, tt.secondHit)
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
