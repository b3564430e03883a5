package extauthz_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// What the end-to-end tests of real proxies (nginx_test.go, caddy_test.go) share: finding
// the proxy, running it, an upstream that echoes what reached it, and a client.

// proxyBinary finds the proxy name in PATH or at debianPath, or fails the test saying
// what to install: a missing proxy is a failure, never a skip.
func proxyBinary(t *testing.T, name, debianPath, install string) string {
	t.Helper()
	if bin, err := exec.LookPath(name); err == nil {
		return bin
	}
	if _, err := os.Stat(debianPath); err != nil {
		t.Fatalf("%s is not installed; its end-to-end test needs it: %s", name, install)
	}
	return debianPath
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echoUpstream answers with the request target and headers it received, as JSON (echoed),
// and counts the requests that reached it.
func echoUpstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	hits := &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"uri": r.RequestURI, "headers": r.Header})
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

type echoed struct {
	URI     string              `json:"uri"`
	Headers map[string][]string `json:"headers"`
}

// upstream decodes what echoUpstream answered through the proxy.
func upstream(t *testing.T, body string) echoed {
	t.Helper()
	var got echoed
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("not the upstream's answer: %q", body)
	}
	return got
}

// proxyClient sends requests to a proxy under test.
type proxyClient struct {
	base   string // the proxy's URL
	client *http.Client
}

func newProxyClient(base string) proxyClient {
	return proxyClient{base, &http.Client{Timeout: 10 * time.Second}}
}

// do sends method path with headers given as name, value pairs ("Host" sets the
// request's host) and returns the answer and its body.
func (c proxyClient) do(t *testing.T, method, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if strings.EqualFold(headers[i], "Host") {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (c proxyClient) get(t *testing.T, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	return c.do(t, "GET", path, headers...)
}

// runProxy starts a real proxy's cmd for an end-to-end test, waits until it listens on
// addr (failing the test, with its output, if it exits or does not within 10 s), and
// stops it when the test ends: SIGTERM, then SIGKILL to its process group after 5 s.
// The proxy dies with this test binary too (a timeout), so none outlives a run. logs,
// when not nil, gives the proxy's log file, shown with its output when the test failed.
func runProxy(t *testing.T, name string, cmd *exec.Cmd, addr string, logs func() string) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once the proxy has been waited for, so the start-up loop and the
	// clean-up can both see it; waitErr is its exit status.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
			if logs != nil {
				t.Logf("%s log:\n%s", name, logs())
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited at start-up: %v", name, waitErr) // output logged at clean-up
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 10 s", name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
