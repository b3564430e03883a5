package ratelimit_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/testenv"
)

func TestParseLimit(t *testing.T) {
	tests := []struct {
		in   string
		want ratelimit.Limit
		err  string
	}{
		{in: "20/1m", want: ratelimit.Limit{Burst: 20, Period: time.Minute}},
		{in: " 10 / 1h ", want: ratelimit.Limit{Burst: 10, Period: time.Hour}},
		{in: "50/1s", want: ratelimit.Limit{Burst: 50, Period: time.Second}},
		{in: "5/500ms", want: ratelimit.Limit{Burst: 5, Period: 500 * time.Millisecond}},
		{in: "20/m", want: ratelimit.Limit{Burst: 20, Period: time.Minute}},
		{in: "3/1h30m", want: ratelimit.Limit{Burst: 3, Period: 90 * time.Minute}},
		{in: "0", want: ratelimit.Limit{}},
		{in: "0/1m", want: ratelimit.Limit{}},
		{in: "", err: "not N/DURATION"},
		{in: "20", err: "not N/DURATION"},
		{in: "abc", err: "not N/DURATION"},
		{in: "x/1m", err: "not a whole number"},
		{in: "-1/1m", err: "not a whole number"},
		{in: "2.5/1m", err: "not a whole number"},
		{in: "20/", err: "not a duration"},
		{in: "20/1 minute", err: "not a duration"},
		{in: "20/-1m", err: "period"},
		{in: "20/0s", err: "period"},
		{in: "20/1us", err: "period"},
		{in: "20/9000h", err: "period"},
		{in: "2000000000/1m", err: "burst"},
	}
	for _, tt := range tests {
		got, err := ratelimit.ParseLimit(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParseLimit(%q) = %v, %v; want an error naming the input and containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLimit(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestLimitStringRoundTrips(t *testing.T) {
	for _, s := range []string{"0", "20/1m", "10/1h", "50/1s", "5/500ms", "3/90m", "7/25h"} {
		l, err := ratelimit.ParseLimit(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ratelimit.ParseLimit(l.String())
		if err != nil || back != l {
			t.Errorf("%q → %v → %q → %v, %v", s, l, l.String(), back, err)
		}
	}
	if got := (ratelimit.Limit{Burst: 20, Period: time.Minute}).String(); got != "20/1m" {
		t.Errorf("String = %s, want 20/1m", got)
	}
}

func TestSettingsMatchTheDesign(t *testing.T) {
	want := map[string]string{
		"RATE_LIMIT_LOGIN_IP": "20/1m", "RATE_LIMIT_LOGIN_EMAIL": "10/1m", "RATE_LIMIT_VERIFY_MFA_IP": "10/1m",
		"RATE_LIMIT_REGISTER_IP": "10/1h", "RATE_LIMIT_REFRESH_IP": "60/1m", "RATE_LIMIT_API_USER": "120/1m",
		"RATE_LIMIT_CHECK_USER": "50/1s", "RATE_LIMIT_CHECK_IP": "20/1s",
	}
	failOpen := map[string]bool{ratelimit.ClassAPIUser: true}
	seen := map[string]bool{}
	for _, s := range ratelimit.Settings() {
		if !ratelimit.ValidClass(s.Class) || seen[s.Class] {
			t.Errorf("class %q invalid or repeated", s.Class)
		}
		seen[s.Class] = true
		if want[s.Variable] != s.Default {
			t.Errorf("%s default %q, DESIGN §6 says %q", s.Variable, s.Default, want[s.Variable])
		}
		if _, err := ratelimit.ParseLimit(s.Default); err != nil {
			t.Errorf("%s: %v", s.Variable, err)
		}
		if s.FailClosed == failOpen[s.Class] {
			t.Errorf("%s: FailClosed = %v", s.Class, s.FailClosed)
		}
		delete(want, s.Variable)
	}
	if len(want) != 0 {
		t.Errorf("missing settings: %v", want)
	}
}

func TestOutcomeHeadersForTheCheckPath(t *testing.T) {
	clock := newFakeClock()
	g := newGuard(t, newMemory(t, ratelimit.MemoryOptions{Now: clock.Now}))
	user := ratelimit.Rule{Class: ratelimit.ClassCheckUser, Limit: ratelimit.Limit{Burst: 2, Period: 500 * time.Millisecond}, FailClosed: true}
	var o ratelimit.Outcome
	for range 3 {
		var err error
		if o, err = g.Take(context.Background(), user.Bucket("user-1")); err != nil {
			t.Fatal(err)
		}
	}
	if o.Allowed || o.RetryAfter != 250*time.Millisecond || o.RetryAfterSeconds() != "1" {
		t.Fatalf("third take of 2/500ms = %+v (Retry-After %s), want refused, 250ms, \"1\"", o, o.RetryAfterSeconds())
	}
	h := http.Header{}
	o.SetHeaders(h)
	if got, want := h.Get("RateLimit-Policy"), `"check-user";q=2;w=1`; got != want {
		t.Errorf("RateLimit-Policy = %s, want %s (sub-second windows round up)", got, want)
	}
	if got, want := h.Get("RateLimit"), `"check-user";r=0;t=1`; got != want {
		t.Errorf("RateLimit = %s, want %s", got, want)
	}
}

func TestGuardFailOpenWarnsWithoutTheIDAndPacesWarnings(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	r := newRedis(t, c, ratelimit.RedisOptions{Timeout: 50 * time.Millisecond})
	var logs bytes.Buffer
	clock := newFakeClock()
	g, err := ratelimit.NewGuard(r, ratelimit.GuardOptions{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	open := ratelimit.Rule{Class: ratelimit.ClassAPIUser, Limit: hour}
	for range 3 {
		o, err := g.Take(context.Background(), open.Bucket("secret-user@example.com"))
		if err != nil || !o.Allowed {
			t.Fatalf("fail-open take with Redis stopped = %+v, %v; want allowed", o, err)
		}
		h := http.Header{}
		o.SetHeaders(h)
		if h.Get("RateLimit-Policy") != `"api-user";q=5;w=3600` || h.Get("RateLimit") != "" {
			t.Fatalf("headers when the bucket did not answer: %v; want the policy and no state", h)
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Fatalf("%d warnings for 3 failures within 10 s, want 1:\n%s", n, logs.String())
	}
	clock.Add(11 * time.Second)
	if _, err := g.Take(context.Background(), open.Bucket("secret-user@example.com")); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if n := strings.Count(out, "\n"); n != 2 || !strings.Contains(out, `"suppressed_since_last":2`) {
		t.Fatalf("after 10 s, want a second warning counting 2 suppressed:\n%s", out)
	}
	if strings.Contains(out, "secret-user") || !strings.Contains(out, `"class":"api-user"`) {
		t.Fatalf("warnings must name the class and never the bucket id:\n%s", out)
	}
}
