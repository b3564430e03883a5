package extauthz

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// record counts d and writes its decision-log line.
func (c *Checker) record(r *Request, d *Decision, start time.Time) {
	end := c.now()
	took := end.Sub(start)
	adapter := r.Adapter
	if adapter == "" {
		adapter = adapterDirect
	}
	c.m.decision(adapter, d, took)
	if c.dlog == nil || (c.sample < 1 && d.Status < 500 && rand.Float64() >= c.sample) {
		return
	}
	h := c.dlog.Handler()
	ctx := context.Background()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	decision := "deny"
	if d.Allow {
		decision = "allow"
	}
	path := r.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i] // the query is never logged: it may hold anything
	}
	// The handler directly, not Logger.LogAttrs, which spends a stack walk on the
	// caller's PC; this line is written on every request.
	rec := slog.NewRecord(end, slog.LevelInfo, "authz decision", 0)
	rec.AddAttrs(
		slog.String("adapter", adapter),
		slog.String("method", clip(r.Method, 32)),
		slog.String("scheme", clip(r.Scheme, 16)),
		slog.String("host", clip(r.Host, 256)),
		slog.String("path", clip(path, 512)),
		slog.String("client_ip", clientIPString(r.ClientIP)),
		slog.String("decision", decision),
		slog.Int("status", d.Status),
		slog.String("reason", d.Reason),
		slog.String("subject", d.Subject),
		slog.String("session_id", d.SessionID),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	)
	_ = h.Handle(ctx, rec)
}

func clientIPString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
