package webserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestHandler(t *testing.T, logs *bytes.Buffer) (http.Handler, *prometheus.Registry) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(RequestID(r.Context()) + " " + ClientIP(r.Context())))
	})
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(r.Body); err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		w.Write(buf.Bytes())
	})
	reg := prometheus.NewRegistry()
	h := Handler(mux, Options{
		Logger:      slog.New(slog.NewJSONHandler(logs, nil)),
		Registerer:  reg,
		HSTS:        true,
		CORSOrigins: []string{"https://app.example"},
	})
	return h, reg
}

func TestPanicBecomesProblem500AndIsLogged(t *testing.T) {
	var logs bytes.Buffer
	h, _ := newTestHandler(t, &logs)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/panic", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var p map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p["code"] != "internal" {
		t.Fatalf("body %s", rec.Body)
	}
	if strings.Contains(rec.Body.String(), "boom") {
		t.Error("the panic value leaked into the response")
	}
	if !strings.Contains(logs.String(), "boom") {
		t.Error("the panic was not logged")
	}
}

func TestEveryResponseCarriesSecurityHeadersAndARequestID(t *testing.T) {
	var logs bytes.Buffer
	h, _ := newTestHandler(t, &logs)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/nowhere", nil))
	for k, v := range map[string]string{
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "no-referrer",
		"Strict-Transport-Security": "max-age=31536000; includeSubDomains",
	} {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if rec.Header().Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}
	rec = httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/ok/1", nil)
	req.Header.Set("X-Request-Id", "abc-123")
	h.ServeHTTP(rec, req)
	if rec.Header().Get("X-Request-Id") != "abc-123" || !strings.HasPrefix(rec.Body.String(), "abc-123 ") {
		t.Errorf("request id not propagated: %q / %q", rec.Header().Get("X-Request-Id"), rec.Body)
	}
	req.Header.Set("X-Request-Id", "bad\x01id")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Header().Get("X-Request-Id") == "bad\x01id" {
		t.Error("a control character request id was echoed")
	}
}

func TestBodiesOver64KiBGet413(t *testing.T) {
	var logs bytes.Buffer
	h, _ := newTestHandler(t, &logs)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/echo", strings.NewReader(strings.Repeat("a", MaxBodyBytes+1))))
	if rec.Code != 413 || !strings.Contains(rec.Body.String(), "payload_too_large") {
		t.Fatalf("declared length: got %d %s", rec.Code, rec.Body)
	}
	// Without a declared length the limit still holds while reading.
	req := httptest.NewRequest("POST", "/echo", strings.NewReader(strings.Repeat("a", MaxBodyBytes+1)))
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Fatalf("chunked: got %d", rec.Code)
	}
}

func TestMetricsUseTheRoutePatternNotThePath(t *testing.T) {
	var logs bytes.Buffer
	h, reg := newTestHandler(t, &logs)
	for _, p := range []string{"/ok/1", "/ok/2", "/ok/3"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	n, err := testutil.GatherAndCount(reg, "authd_http_requests_total")
	if err != nil || n != 1 {
		t.Fatalf("series = %d (%v), want one series for three paths of one route", n, err)
	}
	if !strings.Contains(logs.String(), `"route":"GET /ok/{id}"`) {
		t.Errorf("access log lacks the route: %s", logs.String())
	}
}

func TestUnknownMethodsShareOneMetricSeries(t *testing.T) {
	var logs bytes.Buffer
	h, reg := newTestHandler(t, &logs)
	for i := range 50 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(fmt.Sprintf("M%d", i), "/ok/1", nil))
	}
	n, err := testutil.GatherAndCount(reg, "authd_http_requests_total")
	if err != nil || n != 1 {
		t.Fatalf("series = %d (%v), want one for fifty made-up methods", n, err)
	}
}

func TestAccessLogNeverHoldsTheQuery(t *testing.T) {
	var logs bytes.Buffer
	h, _ := newTestHandler(t, &logs)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/ok/1?access_token=secret-token-value", nil))
	if strings.Contains(logs.String(), "secret-token-value") {
		t.Fatalf("query logged: %s", logs.String())
	}
}

func TestCORSOnlyForConfiguredOrigins(t *testing.T) {
	var logs bytes.Buffer
	h, _ := newTestHandler(t, &logs)
	pre := func(origin string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("OPTIONS", "/ok/1", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := pre("https://app.example"); rec.Code != 204 || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("allowed origin: %d %v", rec.Code, rec.Header())
	}
	if rec := pre("https://evil.example"); rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin allowed: %v", rec.Header())
	}
}
