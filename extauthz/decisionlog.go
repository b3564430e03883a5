package extauthz

import (
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
	writeDecisionLine(c.dlog, r, d, adapter, end, took)
}

// linePool holds the buffers lines are built in; one larger than maxPooledLine is
// left to the collector.
var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledLine = 16 << 10

// writeDecisionLine writes the line of r and d to w in one Write.
func writeDecisionLine(w io.Writer, r *Request, d *Decision, adapter string, end time.Time, took time.Duration) {
	bp := linePool.Get().(*[]byte)
	b := appendDecisionLine((*bp)[:0], r, d, adapter, end, took)
	_, _ = w.Write(b)
	if cap(b) <= maxPooledLine {
		*bp = b
		linePool.Put(bp)
	}
}

// appendDecisionLine appends the decision-log line of r and d, newline included. It is
// byte for byte the line slog's JSONHandler wrote for this Info record before (log
// pipelines parse it): keys in this order, strings escaped as slog escapes them, the
// time as RFC 3339 with nanoseconds, duration_ms as encoding/json prints a float64.
// TestDecisionLineIsSlogs holds the two side by side.
func appendDecisionLine(b []byte, r *Request, d *Decision, adapter string, end time.Time, took time.Duration) []byte {
	path := r.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i] // the query is never logged: it may hold anything
	}
	decision := "deny"
	if d.Allow {
		decision = "allow"
	}
	b = append(b, '{')
	if !end.IsZero() { // slog leaves out a zero time
		b = append(b, `"time":"`...)
		b = end.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `",`...)
	}
	b = append(b, `"level":"INFO","msg":"authz decision","adapter":`...)
	b = appendJSONString(b, adapter)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, clip(r.Method, 32))
	b = append(b, `,"scheme":`...)
	b = appendJSONString(b, clip(r.Scheme, 16))
	b = append(b, `,"host":`...)
	b = appendJSONString(b, clip(r.Host, 256))
	b = append(b, `,"path":`...)
	b = appendJSONString(b, clip(path, 512))
	b = append(b, `,"client_ip":`...)
	b = appendJSONAddr(b, r.ClientIP)
	b = append(b, `,"decision":`...)
	b = appendJSONString(b, decision)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(d.Status), 10)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, d.Reason)
	b = append(b, `,"subject":`...)
	b = appendJSONString(b, d.Subject)
	b = append(b, `,"session_id":`...)
	b = appendJSONString(b, d.SessionID)
	b = append(b, `,"duration_ms":`...)
	b = appendJSONFloat(b, float64(took.Microseconds())/1000)
	return append(b, "}\n"...)
}

// clip cuts s to at most n bytes. A cut multi-byte character is written as \ufffd.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// appendJSONAddr appends a as a JSON string, "" when it is not valid.
func appendJSONAddr(b []byte, a netip.Addr) []byte {
	b = append(b, '"')
	if a.IsValid() {
		if a.Zone() != "" { // an IPv6 zone is free text
			b = appendEscaped(b, a.String())
		} else {
			b = a.AppendTo(b)
		}
	}
	return append(b, '"')
}

// appendJSONString appends s as a JSON string, escaped as slog's JSONHandler escapes it.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped is log/slog's appendEscapedJSONString (encoding/json's string encoder
// without HTML escaping): '"', '\\' and control characters escaped, each byte of
// invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// appendJSONFloat appends f as encoding/json prints a float64 (slog hands floats to
// it): like strconv's shortest 'f', but 'e' below 1e-6 and from 1e21, with no leading
// zero in a negative exponent. f is finite here.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
