// Package health serves authd's liveness and readiness endpoints.
package health

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Check reports whether one dependency answers.
type Check func(ctx context.Context) error

// Handler serves /health, /health/live and /health/ready.
type Handler struct {
	version  string
	database Check
	redis    Check // nil when Redis is not configured
	timeout  time.Duration
	logger   *slog.Logger
	notes    []note
}

// note is a state readiness reports without depending on it.
type note struct {
	name  string
	state func() string
}

// Note adds name to the readiness body with state's answer: something an operator wants
// to see beside the checks (the revocation subscription) that must not take the replica
// out of service. Call it before serving.
func (h *Handler) Note(name string, state func() string) {
	h.notes = append(h.notes, note{name, state})
}

// New builds the handler. redis may be nil (reported as "disabled"); timeout bounds each
// check (1 s when zero).
func New(version string, database, redis Check, timeout time.Duration, logger *slog.Logger) *Handler {
	if timeout <= 0 {
		timeout = time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{version: version, database: database, redis: redis, timeout: timeout, logger: logger}
}

// Register mounts the endpoints on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": h.version})
	})
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	})
	mux.HandleFunc("GET /health/ready", h.ready)
}

type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	res := readiness{Status: "ready", Checks: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	run := func(name string, c Check) {
		defer wg.Done()
		if c == nil {
			mu.Lock()
			res.Checks[name] = "disabled"
			mu.Unlock()
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
		defer cancel()
		err := c(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			// The message names the failure class, never a URL or credential.
			res.Checks[name] = "error: " + describe(ctx, err)
			res.Status = "not_ready"
			h.logger.Warn("readiness check failed", "check", name, "error", err)
			return
		}
		res.Checks[name] = "ok"
	}
	wg.Add(2)
	go run("database", h.database)
	go run("redis", h.redis)
	wg.Wait()
	for _, n := range h.notes {
		res.Checks[n.name] = n.state()
	}
	status := http.StatusOK
	if res.Status != "ready" {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, res)
}

func describe(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "timed out"
	}
	return "unreachable"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
