package extauthz

import (
	"net/http"
	"net/netip"
	"strings"
)

// The HTTP endpoints of the check path (DESIGN §5, PROXIES §0).
const (
	PathEnvoyHTTP   = "/authz/ext-authz" // followed by the original path and query
	PathForwardAuth = "/authz/forward-auth"
	PathAuthRequest = "/authz/auth-request"
)

// Mount serves the check endpoints in front of next and passes every other request to
// it:
//
//	ANY /authz/ext-authz/<original path and query>   Envoy ext_authz, HTTP mode
//	ANY /authz/forward-auth                          Traefik and Caddy forward auth
//	GET /authz/auth-request                          nginx auth_request
//
// It matches on the raw request target, so it must wrap the ServeMux rather than be
// registered on it: ServeMux answers a path holding "//" or ".." (which Envoy's original
// path may hold) with a 307, and Envoy takes any status but 200 as a denial. Put it
// outside middleware that answers CORS preflights too: a preflight must reach the check.
func Mount(next http.Handler, c *Checker) http.Handler {
	envoy, fwd, nginx := c.EnvoyHTTPHandler(), c.ForwardAuthHandler(), c.AuthRequestHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := requestTarget(r)
		switch {
		case hasPathPrefix(target, PathEnvoyHTTP):
			envoy.ServeHTTP(w, r)
		case exactPath(target, PathForwardAuth):
			fwd.ServeHTTP(w, r)
		case exactPath(target, PathAuthRequest):
			nginx.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// requestTarget is the request target as sent, in origin form (path and query).
func requestTarget(r *http.Request) string {
	t := r.RequestURI
	if strings.HasPrefix(t, "/") {
		return t
	}
	// Absolute form (or a request built in a test without RequestURI).
	t = r.URL.EscapedPath()
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		t += "?" + r.URL.RawQuery
	}
	return t
}

// hasPathPrefix reports whether target is prefix itself or continues it with '/' or '?'.
func hasPathPrefix(target, prefix string) bool {
	if !strings.HasPrefix(target, prefix) {
		return false
	}
	rest := target[len(prefix):]
	return rest == "" || rest[0] == '/' || rest[0] == '?'
}

// exactPath reports whether target's path is p (a query is allowed and ignored).
func exactPath(target, p string) bool {
	if !strings.HasPrefix(target, p) {
		return false
	}
	rest := target[len(p):]
	return rest == "" || rest[0] == '?'
}

// writeDecision answers an HTTP adapter's request. Allow is 200 exactly, no body, with
// the identity headers (absent members in removeHeader when the dialect has one); deny
// is the decision's status, client headers and problem+json body.
func writeDecision(w http.ResponseWriter, d *Decision, removeHeader string) {
	h := w.Header()
	if d.Allow {
		h["Cache-Control"] = []string{"no-store"}
		for _, u := range d.Upstream {
			h[u.Name] = []string{u.Value}
		}
		if removeHeader != "" && len(d.Remove) > 0 {
			h[removeHeader] = []string{strings.ToLower(strings.Join(d.Remove, ", "))}
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	for _, c := range d.Client {
		h[c.Name] = []string{c.Value}
	}
	w.WriteHeader(d.Status)
	_, _ = w.Write(d.Body)
}

// parseIP reads "ip", "ip:port", "[ipv6]" or "[ipv6]:port"; the zero Addr otherwise.
func parseIP(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// baseRequest fills what every HTTP dialect carries in the request's own headers.
func baseRequest(r *http.Request, adapter string) Request {
	return Request{
		Adapter:                    adapter,
		Authorization:              r.Header.Values("Authorization"),
		Cookies:                    r.Header.Values("Cookie"),
		Origin:                     r.Header.Get("Origin"),
		AccessControlRequestMethod: r.Header.Get("Access-Control-Request-Method"),
	}
}
