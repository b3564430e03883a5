package extauthz

import (
	"net/http"
	"strings"
)

// EnvoyHTTPHandler serves Envoy's ext_authz in HTTP mode (PROXIES §4), mounted on
// PathEnvoyHTTP by Mount. Envoy sends the client's method, PathEnvoyHTTP followed by the
// original path and query, the original Host, Authorization, and only the headers its
// allowed_headers list: deploy/envoy allow-lists cookie, x-forwarded-proto,
// x-forwarded-for, origin and access-control-request-method, and adds x-authz-client-ip
// (%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%).
//
// Allow is 200 exactly (Envoy takes any other 2xx as a denial) with the identity headers,
// which Envoy sets by overwrite (allowed_upstream_headers), and
// x-envoy-auth-headers-to-remove naming the identity headers without a value.
func (c *Checker) EnvoyHTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := baseRequest(r, AdapterEnvoyHTTP)
		req.Method = r.Method
		req.Host = r.Host
		req.Path = originalPath(requestTarget(r))
		req.Scheme = r.Header.Get("X-Forwarded-Proto")
		if req.Scheme == "" {
			req.Scheme = "http"
		}
		if peer := parseIP(r.Header.Get("X-Authz-Client-Ip")); peer.IsValid() {
			req.ClientIP = c.ips.FromChain(peer, r.Header.Values("X-Forwarded-For"))
		} else {
			req.ClientIP = c.ips.FromForwarded(r.Header.Values("X-Forwarded-For"))
		}
		d := c.Check(r.Context(), req)
		writeDecision(w, &d, "X-Envoy-Auth-Headers-To-Remove")
	})
}

// originalPath strips PathEnvoyHTTP once from the raw target: what is left is the
// client's path and query exactly as Envoy forwarded them ("//", ".." and escapes kept).
func originalPath(target string) string {
	rest := strings.TrimPrefix(target, PathEnvoyHTTP)
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return rest
}
