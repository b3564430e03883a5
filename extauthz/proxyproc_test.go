package extauthz_test

import (
	"net"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

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
