package extauthz_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/ratelimit"
)

// caddyBinary finds caddy, or fails the test saying what to install: a missing proxy is
// a failure, never a skip. It returns the binary and its version line.
func caddyBinary(t *testing.T) (bin, version string) {
	t.Helper()
	bin = proxyBinary(t, "caddy", "/usr/bin/caddy",
		"apt-get install -y caddy (Debian bookworm's 2.6.2, as in CI; to try another release, put its caddy first in PATH)")
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy version: %v\n%s", err, out)
	}
	return bin, strings.TrimSpace(string(out))
}

// startCaddy runs a private Caddy (in the foreground, with its own config, HOME and XDG
// directories under t.TempDir(), so its autosave.json and storage stay there; admin
// endpoint off) with deploy/caddy/Caddyfile, its authd and app addresses replaced by
// authdAddr and appAddr (host:port), listening on 127.0.0.1 only, and returns its base
// URL. The test stops it.
func startCaddy(t *testing.T, authdAddr, appAddr string) string {
	t.Helper()
	bin, version := caddyBinary(t)
	t.Logf("caddy %s", version)
	site, err := os.ReadFile(filepath.Join("..", "deploy", "caddy", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := string(site)
	for _, r := range [][2]string{
		{"authd:8000", authdAddr},
		{"app:8080", appAddr},
		// Private instance: no admin endpoint (it would take localhost:2019). Caddy 2.6 has
		// no persist_config option: its autosave.json goes to XDG_CONFIG_HOME, set below.
		{"\tauto_https off\n", "\tauto_https off\n\tadmin off\n"},
		// A site address without a host, so any Host matches, as in the deployment.
		{":10004 {\n", fmt.Sprintf(":%d {\n\tbind 127.0.0.1\n", port)},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("deploy/caddy/Caddyfile no longer holds %q", r[0])
		}
		conf = strings.ReplaceAll(conf, r[0], r[1])
	}
	dir := t.TempDir()
	file := writeFile(t, dir, "Caddyfile", conf)
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+dir,
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
	)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	runProxy(t, "caddy", cmd, addr, nil) // caddy logs to its output
	return "http://" + addr
}

// authCall is what one forward-auth request carried to authd.
type authCall struct {
	method, uri string
	header      http.Header
}

// authCalls records the requests a proxy makes to the forward-auth endpoint.
type authCalls struct {
	mu    sync.Mutex
	calls []authCall
}

func (a *authCalls) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, extauthz.PathForwardAuth) {
			a.mu.Lock()
			a.calls = append(a.calls, authCall{r.Method, r.RequestURI, r.Header.Clone()})
			a.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (a *authCalls) last(t *testing.T) authCall {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.calls) == 0 {
		t.Fatal("no request reached authd's forward-auth endpoint")
	}
	return a.calls[len(a.calls)-1]
}

func (a *authCalls) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

func TestCaddyForwardAuthEndToEnd(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.Policy = policy(t, "rules:\n  - path_prefix: /public/\n    access: public\n")
		// Room for every subtest's checks of one user; the 429 subtest takes them all.
		c.UserLimit = ratelimit.Limit{Burst: 10, Period: time.Minute}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/api/auth/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "authd api") })
	calls := &authCalls{}
	authd := httptest.NewServer(calls.wrap(extauthz.Mount(mux, e.checker)))
	t.Cleanup(authd.Close)
	app, hits := echoUpstream(t)
	base := startCaddy(t, authd.Listener.Addr().String(), app.Listener.Addr().String())
	proxy := newProxyClient(base)
	do, get := proxy.do, proxy.get
	// only holds that the upstream got header h exactly once, with value want.
	only := func(t *testing.T, got echoed, h, want string) {
		t.Helper()
		if v := got.Headers[h]; len(v) != 1 || v[0] != want {
			t.Errorf("upstream %s = %q, want only %q", h, v, want)
		}
	}
	// absent holds that the upstream got no header h at all.
	absent := func(t *testing.T, got echoed, h string) {
		t.Helper()
		if v, ok := got.Headers[h]; ok {
			t.Errorf("upstream got %s = %q; authd sent none, so it must be absent", h, v)
		}
	}
	// problemBody holds that a denial is authd's problem+json with status and code.
	problemBody := func(t *testing.T, resp *http.Response, body string, status int, code string) {
		t.Helper()
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type %q, want application/problem+json", ct)
		}
		var p struct {
			Status int    `json:"status"`
			Code   string `json:"code"`
		}
		if err := json.Unmarshal([]byte(body), &p); err != nil || p.Status != status || p.Code != code {
			t.Errorf("body %q, want authd's problem with status %d and code %s", body, status, code)
		}
	}

	alice := e.newUser()
	alice.email = "" // no email claim: authd sends no X-User-Email
	aliceTok := e.token(alice)
	bob := e.newUser("pwd", "otp")
	bobTok := e.token(bob)

	t.Run("allowed with identity headers", func(t *testing.T) {
		resp, body := get(t, "/orders?page=2", "Authorization", "Bearer "+bobTok)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstream(t, body)
		only(t, got, "X-User-Id", bob.id)
		only(t, got, "X-User-Email", bob.email)
		only(t, got, "X-Session-Id", bob.sid)
		only(t, got, "X-Auth-Mfa", "true")
		if got.URI != "/orders?page=2" {
			t.Errorf("upstream URI %q, want /orders?page=2", got.URI)
		}

		resp, body = get(t, "/orders", "Authorization", "Bearer "+aliceTok)
		if resp.StatusCode != 200 {
			t.Fatalf("alice: status %d: %s", resp.StatusCode, body)
		}
		got = upstream(t, body)
		only(t, got, "X-User-Id", alice.id)
		only(t, got, "X-Session-Id", alice.sid)
		only(t, got, "X-Auth-Mfa", "false")
		absent(t, got, "X-User-Email")
	})

	t.Run("original request reaches authd in X-Forwarded-*", func(t *testing.T) {
		resp, body := do(t, "POST", "/orders/7?x=1&access_token=nope",
			"Host", "shop.example.test", "Authorization", "Bearer "+bobTok,
			// Client values under the names Caddy writes: each must be replaced.
			"X-Forwarded-Method", "GET", "X-Forwarded-Uri", "/public/x",
			"X-Forwarded-Host", "evil.test", "X-Forwarded-For", "203.0.113.9")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		c := calls.last(t)
		if c.method != "GET" || c.uri != extauthz.PathForwardAuth {
			t.Errorf("auth request %s %s, want GET %s (the trailing ? in uri drops the client's query)",
				c.method, c.uri, extauthz.PathForwardAuth)
		}
		for h, want := range map[string]string{
			"X-Forwarded-Method": "POST",
			"X-Forwarded-Uri":    "/orders/7?x=1&access_token=nope",
			"X-Forwarded-Host":   "shop.example.test",
			"X-Forwarded-Proto":  "http",
			"X-Forwarded-For":    "127.0.0.1", // the peer; the client's own value is dropped
		} {
			if v := c.header.Values(h); len(v) != 1 || v[0] != want {
				t.Errorf("authd got %s = %q, want only %q", h, v, want)
			}
		}
		// And authd understood it so: its decision line.
		lines := e.dlog.lines(t)
		last := lines[len(lines)-1]
		for k, want := range map[string]string{
			"adapter": extauthz.AdapterForwardAuth, "method": "POST", "scheme": "http",
			"host": "shop.example.test", "path": "/orders/7", "client_ip": "127.0.0.1",
			"decision": "allow", "subject": bob.id,
		} {
			if last[k] != want {
				t.Errorf("decision line %s = %v, want %q (line %v)", k, last[k], want, last)
			}
		}
		got := upstream(t, body)
		if got.URI != "/orders/7?x=1&access_token=nope" {
			t.Errorf("upstream URI %q", got.URI)
		}
	})

	t.Run("spoofed identity headers are stripped", func(t *testing.T) {
		spoof := []string{"X-User-Id", "admin", "X-User-Email", "admin@evil.test",
			"X-Session-Id", "s-evil", "X-Auth-MFA", "true"}
		// alice's token has no email: authd sends no X-User-Email, the case where
		// copy_headers before Caddy 2.11.2 left the client's value in place
		// (GHSA-7r4p-vjf4-gxv4).
		resp, body := get(t, "/orders", append([]string{"Authorization", "Bearer " + aliceTok}, spoof...)...)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstream(t, body)
		only(t, got, "X-User-Id", alice.id)
		only(t, got, "X-Session-Id", alice.sid)
		only(t, got, "X-Auth-Mfa", "false")
		absent(t, got, "X-User-Email")

		// bob has an email: authd's value replaces the client's.
		resp, body = get(t, "/orders", append([]string{"Authorization", "Bearer " + bobTok}, spoof...)...)
		if resp.StatusCode != 200 {
			t.Fatalf("bob: status %d: %s", resp.StatusCode, body)
		}
		got = upstream(t, body)
		only(t, got, "X-User-Id", bob.id)
		only(t, got, "X-User-Email", bob.email)
		only(t, got, "X-Session-Id", bob.sid)
		only(t, got, "X-Auth-Mfa", "true")

		// An anonymous allow (public route) sends no identity: every client value goes.
		resp, body = get(t, "/public/page", spoof...)
		if resp.StatusCode != 200 {
			t.Fatalf("public: status %d: %s", resp.StatusCode, body)
		}
		got = upstream(t, body)
		for _, h := range []string{"X-User-Id", "X-User-Email", "X-Session-Id", "X-Auth-Mfa"} {
			absent(t, got, h)
		}
	})

	t.Run("underscore aliases never reach the app", func(t *testing.T) {
		// CGI, WSGI, PHP and Rails fold X_User_Id into the same variable as X-User-Id.
		resp, body := get(t, "/orders", "Authorization", "Bearer "+aliceTok,
			"X_User_Id", "admin", "X-User_Email", "admin@evil.test", "x_auth_mfa", "true", "X_Custom", "kept?")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstream(t, body)
		for name := range got.Headers {
			if strings.Contains(name, "_") {
				t.Errorf("the app got %s: %q", name, got.Headers[name])
			}
		}
		only(t, got, "X-User-Id", alice.id)
	})

	t.Run("denied", func(t *testing.T) {
		before := hits.Load()
		resp, body := get(t, "/orders", "X-User-Id", "admin")
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="authd"` {
			t.Fatalf("no token: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		problemBody(t, resp, body, 401, "invalid_token")
		// A client's X-Forwarded-Uri naming a public route changes nothing.
		resp, body = get(t, "/orders", "Authorization", "Bearer x.y.z", "X-Forwarded-Uri", "/public/x")
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("bad token: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		problemBody(t, resp, body, 401, "invalid_token")
		if hits.Load() != before {
			t.Fatal("a denied request reached the upstream")
		}
	})

	t.Run("429 is passed through with Retry-After", func(t *testing.T) {
		u := e.newUser()
		ut := e.token(u)
		var resp *http.Response
		var body string
		for range 11 {
			resp, body = get(t, "/orders", "Authorization", "Bearer "+ut)
		}
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "6" {
			t.Fatalf("over the limit: %d, Retry-After %q; want 429 and 6 (a token of 10/1m)", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		problemBody(t, resp, body, 429, "rate_limited")
	})

	t.Run("503 is passed through", func(t *testing.T) {
		u := e.newUser()
		ut := e.token(u)
		e.src.setDown(true)
		defer e.src.setDown(false)
		before := hits.Load()
		resp, body := get(t, "/orders", "Authorization", "Bearer "+ut)
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("store down: %d, Retry-After %q; want 503 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		problemBody(t, resp, body, 503, "session_state_unavailable")
		if hits.Load() != before {
			t.Fatal("a refused request reached the upstream")
		}
	})

	t.Run("authd's own routes are not checked", func(t *testing.T) {
		n := calls.count()
		resp, body := get(t, "/api/auth/login")
		if resp.StatusCode != 200 || body != "authd api" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if calls.count() != n {
			t.Error("an authd route went through forward_auth")
		}
	})
}
