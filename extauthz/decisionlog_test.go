package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// slogDecisionLine writes the line as the Checker wrote it with slog until the encoder
// replaced it: the reference the encoder must equal.
func slogDecisionLine(h slog.Handler, r *Request, d *Decision, adapter string, end time.Time, took time.Duration) {
	decision := "deny"
	if d.Allow {
		decision = "allow"
	}
	path := r.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	client := ""
	if r.ClientIP.IsValid() {
		client = r.ClientIP.String()
	}
	rec := slog.NewRecord(end, slog.LevelInfo, "authz decision", 0)
	rec.AddAttrs(
		slog.String("adapter", adapter),
		slog.String("method", clip(r.Method, 32)),
		slog.String("scheme", clip(r.Scheme, 16)),
		slog.String("host", clip(r.Host, 256)),
		slog.String("path", clip(path, 512)),
		slog.String("client_ip", client),
		slog.String("decision", decision),
		slog.Int("status", d.Status),
		slog.String("reason", d.Reason),
		slog.String("subject", d.Subject),
		slog.String("session_id", d.SessionID),
		slog.Float64("duration_ms", float64(took.Microseconds())/1000),
	)
	_ = h.Handle(context.Background(), rec)
}

// hostile holds every kind of byte the JSON escaping treats apart.
const hostile = "q\"b\\s/ \x00\x01\x08\x0c\x1f\t\n\r\x7f <a>&amp; \u2028\u2029 é€😀 \xff\xc3 \xc0\xaf \xed\xa0\x80 \xef\xbf\xbd end"

func TestDecisionLineIsSlogs(t *testing.T) {
	long := "/" + strings.Repeat("a", 510) + "€" + strings.Repeat("b", 600) // € straddles byte 512
	reqs := []struct {
		name string
		r    Request
		d    Decision
	}{
		{"typical allow", Request{
			Adapter: AdapterEnvoyGRPC, Method: "GET", Scheme: "https", Host: "app.example.test",
			Path: "/orders?page=2&access_token=secret", ClientIP: netip.MustParseAddr("203.0.113.7"),
		}, Decision{Allow: true, Status: 200, Reason: ReasonOK, Subject: "0193f2a4-0000-7000-8000-000000000001", SessionID: "0193f2a4-0001-7000-8000-000000000001"}},
		{"deny, nothing set", Request{}, Decision{Status: 401, Reason: ReasonTokenMissing}},
		{"hostile everywhere", Request{
			Adapter: hostile, Method: hostile, Scheme: hostile, Host: hostile, Path: hostile + "?" + hostile,
			ClientIP: netip.MustParseAddr("2001:db8::1"),
		}, Decision{Status: 503, Reason: hostile, Subject: hostile, SessionID: hostile}},
		{"clipped inside a character", Request{
			Method: strings.Repeat("M", 31) + "é", Scheme: strings.Repeat("s", 15) + "😀",
			Host: strings.Repeat("h", 255) + "€.example", Path: long,
			ClientIP: netip.MustParseAddr("::ffff:192.0.2.1"),
		}, Decision{Status: 403, Reason: ReasonMFARequired}},
		{"a query-only path", Request{Path: "?token=x", ClientIP: netip.MustParseAddr("fe80::1%eth0")}, Decision{Status: 429}},
		{"a zone holding anything", Request{ClientIP: netip.MustParseAddr("fe80::1%" + "\"\\\x01\xff\u2028<z>")}, Decision{Status: -1}},
	}
	times := []time.Time{
		time.Date(2026, 3, 9, 14, 5, 6, 123456789, time.UTC),
		time.Date(2026, 3, 9, 14, 5, 6, 120000000, time.Local), // trailing zeros trimmed
		time.Date(2026, 3, 9, 14, 5, 6, 0, time.FixedZone("IST", 5*3600+1800)),
		time.Date(1999, 12, 31, 23, 59, 59, 1, time.FixedZone("PST", -8*3600)),
		time.Date(2026, 3, 9, 14, 5, 6, 7, time.FixedZone("odd", -(3*3600+25*60+17))),
		time.Now(), // with a monotonic reading
		{},         // slog leaves the key out
	}
	durations := []time.Duration{
		0, 999 * time.Nanosecond, time.Microsecond, 10 * time.Microsecond, 1500 * time.Microsecond,
		1234567 * time.Microsecond, 10 * time.Second, 3 * time.Hour, 1 << 62, -3 * time.Microsecond,
	}
	var want bytes.Buffer
	h := slog.NewJSONHandler(&want, nil)
	n := 0
	for _, c := range reqs {
		adapter := c.r.Adapter
		if adapter == "" {
			adapter = adapterDirect
		}
		for _, end := range times {
			for _, took := range durations {
				want.Reset()
				slogDecisionLine(h, &c.r, &c.d, adapter, end, took)
				got := appendDecisionLine(nil, &c.r, &c.d, adapter, end, took)
				if !bytes.Equal(got, want.Bytes()) {
					t.Fatalf("%s at %v, took %v:\n got %q\nwant %q", c.name, end, took, got, want.Bytes())
				}
				n++
			}
		}
	}
	t.Logf("%d lines equal", n)
}

// The durations a clock gives print in 'f' form; the 'e' cut-offs of encoding/json,
// which slog uses for floats, are held here.
func TestJSONFloatIsEncodingJSONs(t *testing.T) {
	for _, f := range []float64{0, 0.001, -0.003, 1.5, 187.25, 1e-6, 9.99e-7, 1.5e-9, 1e-10, 1e20, 1e21, 1.2345e22, -4e-7, 4611686018427.387} {
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONFloat(nil, f); string(got) != string(want) {
			t.Errorf("%v: got %s, want %s", f, got, want)
		}
	}
}

// BenchmarkDecisionLine is the cost of one decision-log line written to io.Discard:
// before (slog's JSONHandler, as the Checker wrote it until the encoder) and after.
func BenchmarkDecisionLine(b *testing.B) {
	r := Request{
		Adapter: AdapterEnvoyGRPC, Method: "GET", Scheme: "https", Host: "app.example.test",
		Path: "/orders?page=2", ClientIP: netip.MustParseAddr("203.0.113.7"),
	}
	d := Decision{Allow: true, Status: 200, Reason: ReasonOK,
		Subject: "0193f2a4-0000-7000-8000-000000000001", SessionID: "0193f2a4-0001-7000-8000-000000000001"}
	took := 187 * time.Microsecond
	b.Run("slog", func(b *testing.B) {
		h := slog.NewJSONHandler(io.Discard, nil)
		b.ReportAllocs()
		for b.Loop() {
			slogDecisionLine(h, &r, &d, r.Adapter, time.Now(), took)
		}
	})
	b.Run("encoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeDecisionLine(io.Discard, &r, &d, r.Adapter, time.Now(), took)
		}
	})
}
