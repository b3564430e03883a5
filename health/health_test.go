package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func ready(t *testing.T, db, redis Check) (int, readiness) {
	t.Helper()
	mux := http.NewServeMux()
	New("v1", db, redis, 50*time.Millisecond, nil).Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/health/ready", nil))
	var body readiness
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return rec.Code, body
}

func ok(context.Context) error { return nil }

func TestReadyNamesTheFailingCheck(t *testing.T) {
	down := func(context.Context) error { return errors.New("dial tcp 10.0.0.1:5432: secret-password-in-dsn") }
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

	if code, b := ready(t, ok, nil); code != 200 || b.Status != "ready" || b.Checks["redis"] != "disabled" {
		t.Fatalf("healthy: %d %+v", code, b)
	}
	code, b := ready(t, down, ok)
	if code != 503 || b.Status != "not_ready" || b.Checks["database"] != "error: unreachable" || b.Checks["redis"] != "ok" {
		t.Fatalf("database down: %d %+v", code, b)
	}
	code, b = ready(t, ok, hang)
	if code != 503 || b.Checks["redis"] != "error: timed out" {
		t.Fatalf("redis hanging: %d %+v", code, b)
	}
}

func TestLivenessAndVersion(t *testing.T) {
	mux := http.NewServeMux()
	New("v1.2.3", ok, nil, 0, nil).Register(mux)
	for path, want := range map[string]string{"/health": `{"status":"ok","version":"v1.2.3"}`, "/health/live": `{"status":"alive"}`} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || rec.Body.String() != want+"\n" {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body)
		}
	}
}

func TestReadyReportsNotesWithoutFailing(t *testing.T) {
	state := "down"
	mux := http.NewServeMux()
	h := New("v1", ok, ok, time.Second, nil)
	h.Note("revocations", func() string { return state })
	h.Register(mux)
	get := func() (int, readiness) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/health/ready", nil))
		var body readiness
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		return rec.Code, body
	}
	if code, b := get(); code != 200 || b.Status != "ready" || b.Checks["revocations"] != "down" {
		t.Fatalf("note down: %d %+v, want ready with revocations down", code, b)
	}
	state = "subscribed"
	if code, b := get(); code != 200 || b.Checks["revocations"] != "subscribed" {
		t.Fatalf("note up: %d %+v", code, b)
	}
}
