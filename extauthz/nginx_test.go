package extauthz_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/ratelimit"
)

// nginxBinary finds nginx with the auth_request module, or fails the test saying what
// to install: a missing proxy is a failure, never a skip.
func nginxBinary(t *testing.T) string {
	t.Helper()
	bin := proxyBinary(t, "nginx", "/usr/sbin/nginx", "apt-get install -y nginx (Debian's build includes the auth_request module)")
	out, err := exec.Command(bin, "-V").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -V: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "http_auth_request_module") {
		t.Fatalf("%s was built without ngx_http_auth_request_module; install Debian's nginx (apt-get install -y nginx)", bin)
	}
	return bin
}

// startNginx runs a private nginx (own prefix, config, port; not a daemon) with
// deploy/nginx/authd.conf, its authd and app addresses replaced by authdURL and appURL,
// and returns its base URL. The test stops it.
func startNginx(t *testing.T, authdURL, appURL string) string {
	t.Helper()
	bin := nginxBinary(t)
	site, err := os.ReadFile(filepath.Join("..", "deploy", "nginx", "authd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := string(site)
	for old, repl := range map[string]string{
		"http://authd:8000": authdURL,
		"http://app:8080":   appURL,
		"listen 10003;":     fmt.Sprintf("listen 127.0.0.1:%d;", port),
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("deploy/nginx/authd.conf no longer holds %q", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	dir := t.TempDir()
	writeFile(t, dir, "authd.conf", conf)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must reach the test's private (0700) directory
	}
	main := writeFile(t, dir, "nginx.conf", fmt.Sprintf(`
%[2]s
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 128; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/authd.conf;
}
`, dir, user))
	args := []string{"-p", dir, "-c", main, "-e", filepath.Join(dir, "error.log")}
	if out, err := exec.Command(bin, append(args, "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t refuses deploy/nginx/authd.conf: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append(args, "-g", "daemon off;")...)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	runProxy(t, "nginx", cmd, addr, func() string {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(log)
	})
	return "http://" + addr
}

func TestNginxAuthRequestEndToEnd(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.Policy = policy(t, "rules:\n  - path_prefix: /public/\n    access: public\n")
		c.UserLimit = ratelimit.Limit{Burst: 3, Period: time.Minute}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/api/auth/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "authd api") })
	authd := httptest.NewServer(extauthz.Mount(mux, e.checker))
	t.Cleanup(authd.Close)
	app, hits := echoUpstream(t)
	base := startNginx(t, authd.URL, app.URL)
	proxy := newProxyClient(base)
	get := proxy.get

	alice := e.newUser()
	alice.email = "" // no email claim: X-User-Email must be removed, not passed through
	tok := e.token(alice)

	t.Run("allowed with identity headers", func(t *testing.T) {
		resp, body := get(t, "/orders?page=2", "Authorization", "Bearer "+tok)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstream(t, body)
		want := map[string][]string{"X-User-Id": {alice.id}, "X-Session-Id": {alice.sid}, "X-Auth-Mfa": {"false"}}
		for k, v := range want {
			if strings.Join(got.Headers[k], "|") != strings.Join(v, "|") {
				t.Errorf("upstream %s = %q, want %q", k, got.Headers[k], v)
			}
		}
		if got.URI != "/orders?page=2" {
			t.Errorf("upstream URI %q", got.URI)
		}
	})
	t.Run("spoofed identity headers are stripped", func(t *testing.T) {
		resp, body := get(t, "/orders", "Authorization", "Bearer "+tok, "X-User-Id", "admin", "X-User-Email", "admin@evil.test", "X-Auth-MFA", "true")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := upstream(t, body)
		if v := got.Headers["X-User-Id"]; len(v) != 1 || v[0] != alice.id {
			t.Errorf("upstream X-User-Id = %q, want only %s", v, alice.id)
		}
		if v, ok := got.Headers["X-User-Email"]; ok {
			t.Errorf("the client's X-User-Email reached the upstream: %q", v)
		}
		if v := got.Headers["X-Auth-Mfa"]; len(v) != 1 || v[0] != "false" {
			t.Errorf("upstream X-Auth-MFA = %q", v)
		}
		// An anonymous allow (public route) strips them all.
		resp, body = get(t, "/public/page", "X-User-Id", "admin", "X-Session-Id", "s")
		if resp.StatusCode != 200 {
			t.Fatalf("public: status %d: %s", resp.StatusCode, body)
		}
		got = upstream(t, body)
		for _, h := range []string{"X-User-Id", "X-Session-Id", "X-User-Email", "X-Auth-Mfa"} {
			if v, ok := got.Headers[h]; ok {
				t.Errorf("public route: the client's %s reached the upstream: %q", h, v)
			}
		}
	})
	t.Run("denied", func(t *testing.T) {
		before := hits.Load()
		resp, _ := get(t, "/orders")
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="authd"` {
			t.Fatalf("no token: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		resp, _ = get(t, "/orders", "Authorization", "Bearer x.y.z", "X-Forwarded-Uri", "/public/x")
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("bad token: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if hits.Load() != before {
			t.Fatal("a denied request reached the upstream")
		}
	})
	t.Run("429 is mapped through with Retry-After", func(t *testing.T) {
		u := e.newUser()
		ut := e.token(u)
		var resp *http.Response
		for range 4 {
			resp, _ = get(t, "/orders", "Authorization", "Bearer "+ut)
		}
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "20" {
			t.Fatalf("over the limit: %d, Retry-After %q; want 429 and 20", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("503 is mapped through", func(t *testing.T) {
		u := e.newUser()
		ut := e.token(u)
		e.src.setDown(true)
		defer e.src.setDown(false)
		resp, _ := get(t, "/orders", "Authorization", "Bearer "+ut)
		if resp.StatusCode != 503 {
			t.Fatalf("store down: %d, want 503", resp.StatusCode)
		}
	})
	t.Run("authd's own routes are not checked", func(t *testing.T) {
		resp, body := get(t, "/api/auth/login")
		if resp.StatusCode != 200 || body != "authd api" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
}
