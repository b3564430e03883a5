package extauthz

import (
	"net/http"
	"strings"

	"github.com/authd/authd/problem"
)

// AuthRequestHandler serves nginx's auth_request (PROXIES §6) on PathAuthRequest, GET
// (nginx's subrequest is always GET) or HEAD. nginx copies every client header into the
// subrequest and adds nothing by itself, so the original request is read only from the
// headers deploy/nginx sets with proxy_set_header (which replace the client's):
// X-Original-Method, and X-Original-URL (absolute) or X-Original-URI with
// X-Forwarded-Host and X-Forwarded-Proto; the client from X-Real-IP. Never
// X-Forwarded-Method or -Uri. Without them, or with an X-Original-URL and an
// X-Original-URI that disagree, or without X-Real-IP: 400, which nginx turns into a 500
// (loudly logged here).
//
// nginx passes only 2xx, 401 and 403: deploy/nginx maps 429 (and 503) through an
// error_page. Identity headers reach the upstream through auth_request_set and
// proxy_set_header; an identity header left out becomes an empty variable, and
// proxy_set_header with an empty value removes the header.
func (c *Checker) AuthRequestHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed", "auth_request sends GET."))
			return
		}
		req := baseRequest(r, AdapterAuthRequest)
		req.Method = r.Header.Get("X-Original-Method")
		req.ClientIP = parseIP(r.Header.Get("X-Real-IP"))
		ok := false
		u, uri := r.Header.Get("X-Original-URL"), r.Header.Get("X-Original-URI")
		if u != "" {
			req.Scheme, req.Host, req.Path, ok = splitURL(u)
			// A config that sets only X-Original-URI leaves the client's own X-Original-URL
			// in the subrequest: when both are there they must agree, or neither is believed.
			if ok && uri != "" && uri != req.Path {
				ok = false
			}
		} else if uri != "" {
			req.Scheme = r.Header.Get("X-Forwarded-Proto")
			req.Host = r.Header.Get("X-Forwarded-Host")
			req.Path = uri
			ok = req.Host != "" && strings.HasPrefix(uri, "/")
		}
		var d Decision
		switch {
		case req.Method == "" || !ok:
			d = c.Reject(req, "auth-request needs X-Original-Method and X-Original-URL (or X-Original-URI with X-Forwarded-Host), consistent with each other")
		case !req.ClientIP.IsValid():
			// Without it every client would share one rate-limit bucket.
			d = c.Reject(req, "auth-request needs X-Real-IP (proxy_set_header X-Real-IP $remote_addr)")
		default:
			d = c.Check(r.Context(), req)
		}
		writeDecision(w, &d, "")
	})
}

// splitURL splits an absolute URL into scheme, host and the raw path and query, without
// decoding or normalising anything.
func splitURL(u string) (scheme, host, target string, ok bool) {
	scheme, rest, found := strings.Cut(u, "://")
	if !found || scheme == "" {
		return "", "", "", false
	}
	i := strings.IndexAny(rest, "/?")
	if i < 0 {
		host, target = rest, "/"
	} else {
		host, target = rest[:i], rest[i:]
		if target[0] == '?' {
			target = "/" + target
		}
	}
	if host == "" {
		return "", "", "", false
	}
	return strings.ToLower(scheme), host, target, true
}
