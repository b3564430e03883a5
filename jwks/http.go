package jwks

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// JWKSHandler serves the current key set (every verification key, with kid, alg and
// use "sig") for GET /.well-known/jwks.json, with Cache-Control max-age and a strong
// ETag; a matching If-None-Match gets 304. The document is rendered once per key
// set load, not per request.
func (m *Manager) JWKSHandler() http.Handler {
	cacheControl := m.maxAgeHeader()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set := m.set.Load()
		serveDocument(w, r, set.jwks, set.etag, cacheControl)
	})
}

// DiscoveryHandler serves GET /.well-known/openid-configuration: the issuer, the
// jwks_uri (baseURL, or the issuer when baseURL is empty, plus
// /.well-known/jwks.json) and the fields that JWKS consumers read:
// oauth2-proxy and go-oidc take jwks_uri and id_token_signing_alg_values_supported
// (go-oidc assumes RS256 when the list is missing) and compare issuer exactly;
// Envoy's jwt_authn is given the jwks_uri directly. authd is not an OpenID
// Provider: there is no authorization or token endpoint to announce, so the
// document has only what the OIDC discovery spec requires of any issuer (as the
// Kubernetes service-account issuer does).
func (m *Manager) DiscoveryHandler(baseURL string) http.Handler {
	if baseURL == "" {
		baseURL = m.issuer
	}
	doc := struct {
		Issuer          string   `json:"issuer"`
		JWKSURI         string   `json:"jwks_uri"`
		ResponseTypes   []string `json:"response_types_supported"`
		SubjectTypes    []string `json:"subject_types_supported"`
		SigningAlgs     []string `json:"id_token_signing_alg_values_supported"`
		ClaimsSupported []string `json:"claims_supported"`
	}{
		Issuer:          m.issuer,
		JWKSURI:         strings.TrimSuffix(baseURL, "/") + "/.well-known/jwks.json",
		ResponseTypes:   []string{"id_token"},
		SubjectTypes:    []string{"public"},
		SigningAlgs:     []string{m.alg.String()},
		ClaimsSupported: []string{"iss", "aud", "sub", "sid", "sst", "jti", "iat", "nbf", "exp", "email", "amr"},
	}
	body, _ := json.Marshal(doc) // strings only: cannot fail
	etag := etagOf(body)
	cacheControl := m.maxAgeHeader()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveDocument(w, r, body, etag, cacheControl)
	})
}

func serveDocument(w http.ResponseWriter, r *http.Request, body []byte, etag, cacheControl string) {
	h := w.Header()
	h.Set("Cache-Control", cacheControl)
	h.Set("ETag", etag)
	if noneMatch(r.Header.Values("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// noneMatch reports whether an If-None-Match list matches etag. RFC 9110 §13.1.2
// compares weakly here: W/"x" matches "x".
func noneMatch(values []string, etag string) bool {
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
				return true
			}
		}
	}
	return false
}
