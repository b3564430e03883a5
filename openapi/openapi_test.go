package openapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestDocumentDescribesEveryAccountEndpoint(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("document: %v %q", err, doc.OpenAPI)
	}
	for path, method := range map[string]string{
		"/api/auth/register": "post", "/api/auth/login": "post", "/api/auth/verify-mfa": "post",
		"/api/auth/refresh": "post", "/api/auth/logout": "post", "/api/auth/change-password": "post",
		"/api/auth/me": "get", "/api/auth/sessions": "get", "/api/auth/sessions/{id}": "delete",
		"/api/auth/mfa/enable": "post", "/api/auth/mfa/verify": "post", "/api/auth/mfa/disable": "post",
	} {
		if _, ok := doc.Paths[path][method]; !ok {
			t.Errorf("%s %s is not described", method, path)
		}
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/docs", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("/docs: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
}
