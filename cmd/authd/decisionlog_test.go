package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDecisionLogLosesNoLineOnSIGTERM sends checks and stops authd right after the last
// answer, before the decision log's flush interval has passed: every line is in stderr.
// LOG_LEVEL above info turns the lines off, as it did when they were slog records.
func TestDecisionLogLosesNoLineOnSIGTERM(t *testing.T) {
	const checks = 40
	for _, tt := range []struct {
		level string
		want  int
	}{
		{"info", checks},
		{"warn", 0},
	} {
		t.Run("LOG_LEVEL="+tt.level, func(t *testing.T) {
			s := startServer(t, t.TempDir(), "LOG_LEVEL="+tt.level, "RATE_LIMIT_CHECK_IP=0")
			s.waitReady(t, http.StatusOK, 15*time.Second)
			for i := range checks {
				req, _ := http.NewRequest("GET", "http://"+s.http+"/authz/forward-auth", nil)
				req.Header.Set("X-Forwarded-Method", "GET")
				req.Header.Set("X-Forwarded-Proto", "https")
				req.Header.Set("X-Forwarded-Host", "app.example")
				req.Header.Set("X-Forwarded-Uri", "/orders/"+strings.Repeat("x", i)+"?token=secret")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("check without a token: %d, want 401", resp.StatusCode)
				}
			}
			if code := s.stop(t); code != 0 {
				t.Fatalf("exit status after SIGTERM = %d, want 0", code)
			}
			var lines []map[string]any
			for _, l := range strings.Split(s.stderr.String(), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "authz decision" {
					lines = append(lines, m)
				}
			}
			if len(lines) != tt.want {
				t.Fatalf("%d decision lines in stderr, want %d", len(lines), tt.want)
			}
			for i, m := range lines {
				if m["adapter"] != "forward-auth" || m["path"] != "/orders/"+strings.Repeat("x", i) || m["status"] != float64(401) {
					t.Fatalf("decision line %d: %v", i, m)
				}
			}
		})
	}
}
