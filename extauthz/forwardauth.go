package extauthz

import "net/http"

// ForwardAuthHandler serves Traefik's forwardAuth and Caddy's forward_auth (PROXIES §5,
// §7) on PathForwardAuth, any method. The original request is read only from
// X-Forwarded-Method, -Proto, -Host and -Uri, and the client from the right-most
// X-Forwarded-For entry (the one the proxy wrote; left of it only while that is a
// trusted proxy, see Config.ClientIPs); never from X-Original-*,
// X-Forwarded-Prefix, -Port or Forwarded, and the endpoint's own query string (Caddy
// passes the client's along) is ignored. Without X-Forwarded-Method, -Host or -Uri the
// request did not come from a correctly configured proxy: 400.
//
// Allow is 200 with the identity headers; Traefik (authResponseHeaders) and Caddy ≥
// 2.11.2 (copy_headers) delete each listed header before copying it, so an identity
// header left out is removed.
func (c *Checker) ForwardAuthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := baseRequest(r, AdapterForwardAuth)
		req.Method = r.Header.Get("X-Forwarded-Method")
		req.Host = r.Header.Get("X-Forwarded-Host")
		req.Path = r.Header.Get("X-Forwarded-Uri")
		req.Scheme = r.Header.Get("X-Forwarded-Proto")
		req.ClientIP = c.ips.FromForwarded(r.Header.Values("X-Forwarded-For"))
		var d Decision
		if req.Method == "" || req.Host == "" || req.Path == "" {
			d = c.Reject(req, "forward-auth needs X-Forwarded-Method, X-Forwarded-Host and X-Forwarded-Uri")
		} else {
			d = c.Check(r.Context(), req)
		}
		writeDecision(w, &d, "")
	})
}
