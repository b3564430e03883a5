// Package webserver wraps authd's HTTP routes in the middleware every response passes
// through: request id, client IP, panic recovery, body limit, security headers, CORS,
// route metrics and one JSON access-log line per request.
package webserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/problem"
)

// MaxBodyBytes is the largest request body authd reads; larger bodies get 413.
const MaxBodyBytes = 64 << 10

// Options configures the middleware.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// ClientIP resolves the client address of a request (X-Forwarded-For is believed
	// only through trusted proxies); nil uses the TCP peer.
	ClientIP func(*http.Request) string
	// HSTS adds Strict-Transport-Security to every response.
	HSTS bool
	// CORSOrigins are the origins allowed to call the API from a browser; "*" allows any
	// origin without credentials.
	CORSOrigins []string
	// Now is the clock for latency; nil uses time.Now.
	Now func() time.Time
}

type ctxKey int

const (
	requestIDKey ctxKey = iota
	clientIPKey
)

// RequestID returns the request id the middleware assigned.
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// ClientIP returns the client address the middleware resolved.
func ClientIP(ctx context.Context) string {
	s, _ := ctx.Value(clientIPKey).(string)
	return s
}

// WithClientIP returns ctx carrying ip, for handlers tested without the middleware.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey, ip)
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_http_requests_total",
			Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "authd_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency)
	}
	return m
}

// Handler wraps next, usually a *http.ServeMux, in the middleware.
func Handler(next http.Handler, o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ClientIP == nil {
		o.ClientIP = peerIP
	}
	m := newMetrics(o.Registerer)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := o.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		ip := o.ClientIP(r)
		ctx := context.WithValue(r.Context(), requestIDKey, id)
		ctx = context.WithValue(ctx, clientIPKey, ip)
		r = r.WithContext(ctx)

		rec := &recorder{ResponseWriter: w}
		h := rec.Header()
		h.Set("X-Request-Id", id)
		securityHeaders(h, o.HSTS)

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				o.Logger.ErrorContext(ctx, "panic serving request",
					"request_id", id, "panic", p, "stack", string(debug.Stack()))
				if !rec.wrote {
					problem.Write(rec, problem.New(http.StatusInternalServerError, "internal", "An internal error occurred; the log has the cause."))
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			status := rec.statusCode()
			elapsed := o.Now().Sub(start)
			m.requests.WithLabelValues(route, methodLabel(r.Method), strconv.Itoa(status)).Inc()
			m.latency.WithLabelValues(route).Observe(elapsed.Seconds())
			// The path is logged without its query: a token must never reach a log.
			o.Logger.LogAttrs(ctx, slog.LevelInfo, "request",
				slog.String("request_id", id),
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.String("path", r.URL.Path),
				slog.Int("status", status),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.String("client_ip", ip),
				slog.String("user_agent", truncate(r.UserAgent(), 256)),
			)
		}()

		if cors(rec, r, o.CORSOrigins) {
			return
		}
		if r.ContentLength > MaxBodyBytes {
			problem.Write(rec, problem.New(http.StatusRequestEntityTooLarge, "payload_too_large",
				"The request body is larger than 64 KiB."))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(rec, r.Body, MaxBodyBytes)
		}
		next.ServeHTTP(rec, r)
	})
}

// methodLabel bounds the method label: any client can send any method token, and each
// new label value would be a series kept forever.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

func securityHeaders(h http.Header, hsts bool) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if hsts {
		h.Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
	}
}

// cors answers preflights for allowed origins and marks allowed cross-origin responses.
// It reports whether the request was fully answered.
func cors(w http.ResponseWriter, r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(allowed) == 0 {
		return false
	}
	wildcard := slices.Contains(allowed, "*")
	if !wildcard && !slices.Contains(allowed, origin) {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	if wildcard {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Device-Fingerprint, X-Request-Id")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

func peerIP(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// recorder remembers the status and size written through it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status = code
		r.wrote = true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) statusCode() int {
	if !r.wrote {
		return http.StatusOK
	}
	return r.status
}

// Unwrap lets http.ResponseController reach the underlying writer (flush, deadlines).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
