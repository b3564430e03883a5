package extauthz_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/ratelimit"
)

// authdServer serves Mount(a mux that answers "mux") for e's Checker.
func authdServer(t testing.TB, e *env) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "mux") })
	srv := httptest.NewServer(extauthz.Mount(mux, e.checker))
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	status int
	header http.Header
	body   string
}

// send sends method target with headers (one line per value, in order) over a raw
// connection, so the request target reaches the server exactly as written.
func send(t testing.TB, srv *httptest.Server, method, target string, headers [][2]string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\n")
	hasHost := false
	for _, h := range headers {
		if strings.EqualFold(h[0], "Host") {
			hasHost = true
		}
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	if !hasHost {
		b.WriteString("Host: authd.internal\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://x/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(body)}
}

func (r response) allowed(t *testing.T) {
	t.Helper()
	if r.status != 200 || r.body != "" {
		t.Fatalf("status %d body %q, want 200 exactly with no body", r.status, r.body)
	}
}

func (r response) denied(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	if err := json.Unmarshal([]byte(r.body), &p); err != nil || p.Status != status {
		t.Errorf("body %q is not a problem document", r.body)
	}
	if len(r.header.Values("X-User-Id")) > 0 {
		t.Errorf("a denial carries X-User-Id")
	}
}

func lastLog(t *testing.T, e *env) map[string]any {
	t.Helper()
	lines := e.dlog.lines(t)
	if len(lines) == 0 {
		t.Fatal("no decision logged")
	}
	return lines[len(lines)-1]
}

// TestEnvoyHTTPAdapter sends what Envoy's HTTP ext_authz sends with deploy/envoy's
// envoy-http.yaml (PROXIES §4.1): the client's method, the prefix followed by the raw
// path and query, the original Host, Authorization, the allow-listed headers and
// x-authz-client-ip.
func TestEnvoyHTTPAdapter(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) { c.Policy = policy(t, tablePolicy) })
	srv := authdServer(t, e)
	alice := e.newUser()
	alice.email = ""
	tok := e.token(alice)
	envoy := func(extra ...[2]string) [][2]string {
		return append([][2]string{
			{"Host", "app.example.test"},
			{"Content-Length", "0"},
			{"x-forwarded-proto", "https"},
			{"x-forwarded-for", "198.51.100.1, 203.0.113.7"},
			{"x-request-id", "5f1c"},
			{"x-authz-client-ip", "203.0.113.9"},
			{"x-envoy-expected-rq-timeout-ms", "500"},
		}, extra...)
	}

	t.Run("allow is 200 with overwrite headers and headers-to-remove", func(t *testing.T) {
		r := send(t, srv, "POST", "/authz/ext-authz/orders?page=2", envoy([2]string{"authorization", "Bearer " + tok}))
		r.allowed(t)
		if got := r.header.Values("X-User-Id"); len(got) != 1 || got[0] != alice.id {
			t.Errorf("X-User-Id = %q", got)
		}
		if got := r.header.Get("X-Envoy-Auth-Headers-To-Remove"); got != "x-user-email" {
			t.Errorf("x-envoy-auth-headers-to-remove = %q, want x-user-email", got)
		}
		l := lastLog(t, e)
		if l["method"] != "POST" || l["host"] != "app.example.test" || l["path"] != "/orders" || l["client_ip"] != "203.0.113.9" || l["adapter"] != "envoy-http" || l["scheme"] != "https" {
			t.Errorf("the adapter misread the request: %v", l)
		}
	})
	t.Run("HEAD and any other method", func(t *testing.T) {
		for _, m := range []string{"HEAD", "PUT", "DELETE", "PATCH"} {
			send(t, srv, m, "/authz/ext-authz/orders", envoy([2]string{"authorization", "Bearer " + tok})).allowed(t)
		}
	})
	t.Run("the original path is taken raw, never redirected", func(t *testing.T) {
		for _, target := range []string{"/authz/ext-authz//admin", "/authz/ext-authz/docs/../admin", "/authz/ext-authz/docs/%2e%2e/admin", "/authz/ext-authz/docs/..%2Fadmin"} {
			r := send(t, srv, "GET", target, envoy([2]string{"authorization", "Bearer " + tok}))
			r.denied(t, 403) // the mfa route, whatever the spelling
		}
		r := send(t, srv, "GET", "/authz/ext-authz/docs//x/./y?a=%2F", envoy())
		r.allowed(t)
		if l := lastLog(t, e); l["path"] != "/docs//x/./y" {
			t.Errorf("logged path %v, want /docs//x/./y", l["path"])
		}
		// "//docs/x" is public once normalised but not as written: the stricter wins.
		send(t, srv, "GET", "/authz/ext-authz//docs/x", envoy()).denied(t, 401)
	})
	t.Run("deny", func(t *testing.T) {
		r := send(t, srv, "GET", "/authz/ext-authz/orders", envoy())
		r.denied(t, 401)
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="authd"` {
			t.Errorf("WWW-Authenticate = %q", got)
		}
		r = send(t, srv, "GET", "/authz/ext-authz/orders", envoy([2]string{"cookie", "access_token=bad"}))
		r.denied(t, 401)
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="authd", error="invalid_token"` {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("cookie", func(t *testing.T) {
		send(t, srv, "GET", "/authz/ext-authz/orders", envoy([2]string{"cookie", "a=1; access_token=" + tok})).allowed(t)
	})
	t.Run("CORS preflight passes without identity", func(t *testing.T) {
		r := send(t, srv, "OPTIONS", "/authz/ext-authz/orders", envoy(
			[2]string{"origin", "https://app.example.test"}, [2]string{"access-control-request-method", "DELETE"}))
		r.allowed(t)
		if got := r.header.Get("X-Envoy-Auth-Headers-To-Remove"); got != "x-user-id, x-user-email, x-session-id, x-auth-mfa" {
			t.Errorf("x-envoy-auth-headers-to-remove = %q", got)
		}
	})
	t.Run("other paths go to the mux", func(t *testing.T) {
		for _, target := range []string{"/health", "/authz/ext-authzz", "/authz/forward-auth/x"} {
			if r := send(t, srv, "GET", target, nil); r.body != "mux" {
				t.Errorf("%s: body %q, want the mux's", target, r.body)
			}
		}
	})
}

// TestForwardAuthAdapter sends what Traefik's forwardAuth (trustForwardHeader: false)
// and Caddy's forward_auth send (PROXIES §5.1, §7.1): GET to the configured address,
// every client header, and X-Forwarded-Method/-Proto/-Host/-Uri/-For written by the
// proxy.
func TestForwardAuthAdapter(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.Policy = policy(t, tablePolicy)
		c.UserLimit = ratelimit.Limit{Burst: 50, Period: time.Second}
	})
	srv := authdServer(t, e)
	alice := e.newUser()
	tok := e.token(alice)
	traefik := func(method, uri string, extra ...[2]string) [][2]string {
		return append([][2]string{
			{"Host", "authd:8000"},
			{"User-Agent", "curl/8.5.0"},
			{"Accept", "*/*"},
			{"X-Forwarded-Method", method},
			{"X-Forwarded-Proto", "https"},
			{"X-Forwarded-Host", "app.example.test"},
			{"X-Forwarded-Uri", uri},
			{"X-Forwarded-Port", "443"},
			{"X-Forwarded-Server", "traefik-1"},
			{"X-Real-Ip", "192.0.2.99"},
			{"X-Forwarded-For", "10.0.0.1, 203.0.113.7"},
		}, extra...)
	}

	t.Run("allow", func(t *testing.T) {
		r := send(t, srv, "GET", "/authz/forward-auth", traefik("DELETE", "/orders/7?force=1",
			[2]string{"Authorization", "Bearer " + tok}, [2]string{"X-User-Id", "admin"}))
		r.allowed(t)
		if got := r.header.Values("X-User-Id"); len(got) != 1 || got[0] != alice.id {
			t.Errorf("X-User-Id = %q", got)
		}
		if r.header.Get("X-User-Email") != alice.email || r.header.Get("X-Session-Id") != alice.sid || r.header.Get("X-Auth-Mfa") != "false" {
			t.Errorf("identity headers: %v", r.header)
		}
		l := lastLog(t, e)
		if l["method"] != "DELETE" || l["host"] != "app.example.test" || l["path"] != "/orders/7" || l["client_ip"] != "203.0.113.7" || l["scheme"] != "https" {
			t.Errorf("the adapter misread the request: %v", l)
		}
	})
	t.Run("Caddy forwards the client's query to the endpoint; it is ignored", func(t *testing.T) {
		caddy := [][2]string{
			{"Host", "app.example.test"},
			{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/orders"},
			{"X-Forwarded-For", "203.0.113.7"}, {"X-Forwarded-Proto", "https"}, {"X-Forwarded-Host", "app.example.test"},
			{"Authorization", "Bearer " + tok},
		}
		send(t, srv, "GET", "/authz/forward-auth?access_token=x&rd=https://evil.test", caddy).allowed(t)
	})
	t.Run("only the forward-auth dialect is read", func(t *testing.T) {
		// A client-sent X-Original-URL naming a public route changes nothing.
		r := send(t, srv, "GET", "/authz/forward-auth", traefik("GET", "/orders",
			[2]string{"X-Original-URL", "https://app.example.test/docs/"}, [2]string{"X-Original-Method", "GET"}))
		r.denied(t, 401)
		r = send(t, srv, "GET", "/authz/forward-auth", traefik("GET", "/admin/x", [2]string{"Authorization", "Bearer " + tok},
			[2]string{"X-Original-URI", "/orders"}))
		r.denied(t, 403)
	})
	t.Run("missing forwarded headers is 400", func(t *testing.T) {
		r := send(t, srv, "GET", "/authz/forward-auth", [][2]string{{"Authorization", "Bearer " + tok}, {"X-Forwarded-Method", "GET"}})
		r.denied(t, 400)
	})
	t.Run("429 carries Retry-After", func(t *testing.T) {
		var r response
		for range 60 {
			r = send(t, srv, "GET", "/authz/forward-auth", traefik("GET", "/orders", [2]string{"Authorization", "Bearer " + tok}))
			if r.status != 200 {
				break
			}
		}
		r.denied(t, 429)
		if r.header.Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
	})
}

// TestAuthRequestAdapter sends what nginx's auth_request sends with deploy/nginx's
// configuration (PROXIES §6.1): GET, every client header copied, and the
// proxy_set_header lines of the auth location.
func TestAuthRequestAdapter(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) { c.Policy = policy(t, tablePolicy) })
	srv := authdServer(t, e)
	alice := e.newUser()
	tok := e.token(alice)
	nginx := func(method, uri string, extra ...[2]string) [][2]string {
		return append([][2]string{
			{"Host", "authd:8000"},
			{"X-Original-Method", method},
			{"X-Original-URI", uri},
			{"X-Original-URL", "https://app.example.test" + uri},
			{"X-Forwarded-Host", "app.example.test"},
			{"X-Forwarded-Proto", "https"},
			{"X-Forwarded-For", "203.0.113.7"},
			{"X-Real-IP", "203.0.113.7"},
			{"User-Agent", "curl/8.5.0"},
		}, extra...)
	}
	t.Run("allow", func(t *testing.T) {
		r := send(t, srv, "GET", "/authz/auth-request", nginx("PATCH", "/orders//7?x=1", [2]string{"Authorization", "Bearer " + tok}))
		r.allowed(t)
		if r.header.Get("X-User-Id") != alice.id {
			t.Errorf("X-User-Id = %q", r.header.Get("X-User-Id"))
		}
		l := lastLog(t, e)
		if l["method"] != "PATCH" || l["host"] != "app.example.test" || l["path"] != "/orders//7" || l["client_ip"] != "203.0.113.7" || l["adapter"] != "auth-request" {
			t.Errorf("the adapter misread the request: %v", l)
		}
	})
	t.Run("X-Original-URI with X-Forwarded-Host", func(t *testing.T) {
		h := [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/orders"}, {"X-Forwarded-Host", "app.example.test"},
			{"X-Real-IP", "203.0.113.7"}, {"Cookie", "access_token=" + tok}}
		send(t, srv, "GET", "/authz/auth-request", h).allowed(t)
	})
	t.Run("only the auth-request dialect is read", func(t *testing.T) {
		// nginx copies client headers into the subrequest: a client's X-Forwarded-Uri
		// naming a public route must change nothing.
		r := send(t, srv, "GET", "/authz/auth-request", nginx("GET", "/orders",
			[2]string{"X-Forwarded-Uri", "/docs/"}, [2]string{"X-Forwarded-Method", "GET"}))
		r.denied(t, 401)
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="authd"` {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("missing original request is 400", func(t *testing.T) {
		send(t, srv, "GET", "/authz/auth-request", [][2]string{{"Authorization", "Bearer " + tok}, {"X-Forwarded-Uri", "/orders"}}).denied(t, 400)
		send(t, srv, "GET", "/authz/auth-request", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/orders"}}).denied(t, 400)
	})
	t.Run("a client's X-Original-URL that disagrees with the proxy's X-Original-URI is 400", func(t *testing.T) {
		// A config that sets only X-Original-URI passes the client's X-Original-URL on.
		h := [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/admin/delete"}, {"X-Forwarded-Host", "app.example.test"},
			{"X-Real-IP", "203.0.113.7"}, {"X-Original-URL", "https://app.example.test/docs/x"}}
		send(t, srv, "GET", "/authz/auth-request", h).denied(t, 400)
	})
	t.Run("missing X-Real-IP is 400", func(t *testing.T) {
		h := [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/orders"}, {"X-Forwarded-Host", "app.example.test"},
			{"Authorization", "Bearer " + tok}}
		send(t, srv, "GET", "/authz/auth-request", h).denied(t, 400)
	})
	t.Run("only GET", func(t *testing.T) {
		if r := send(t, srv, "POST", "/authz/auth-request", nginx("GET", "/")); r.status != 405 {
			t.Errorf("POST = %d, want 405", r.status)
		}
	})
}
