package jwks_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authd/authd/jwks"
	"github.com/prometheus/client_golang/prometheus"
)

// signingKid is the kid of a token m signs now.
func signingKid(t *testing.T, m *jwks.Manager) string {
	t.Helper()
	hdr, _ := segments(t, signAccess(t, m))
	return hdr["kid"].(string)
}

// eventually polls cond until it holds or a generous deadline passes; the
// watcher runs on real time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchReloadsWhenTheKeyDirectoryChanges(t *testing.T) {
	m, dir, _ := dirManager(t, "RS256", nil)
	oldTok := signAccess(t, m)
	oldKid := signingKid(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Watch(ctx, nil); close(done) }()

	priv, pub := keyPair(t, t.TempDir(), "RS256", t0.Add(time.Hour))
	copyFile(t, pub, dir)
	copyFile(t, priv, dir)
	eventually(t, "signing with the new key", func() bool { return signingKid(t, m) != oldKid })
	if _, err := m.VerifyAccess(oldTok); err != nil {
		t.Errorf("a token of the old key is refused after the reload: %v", err)
	}

	cancel()
	<-done // Watch returns when its context ends
}

// TestKeyFilesReloadOnSIGHUPOrChange replaces the file behind
// JWT_PRIVATE_KEY_FILE: a SIGHUP picks it up at once, and so does the poll.
func TestKeyFilesReloadOnSIGHUPOrChange(t *testing.T) {
	for name, poll := range map[string]time.Duration{"SIGHUP": time.Hour, "poll": 10 * time.Millisecond} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			priv, _ := keyPair(t, dir, "RS256", t0)
			live := filepath.Join(t.TempDir(), "jwt.key")
			copyTo(t, priv, live)
			m, err := jwks.New(jwks.Source{PrivateFile: live}, jwks.Options{
				Issuer: testIssuer, Audience: testAudience, PollInterval: poll,
			})
			if err != nil {
				t.Fatal(err)
			}
			oldKid := signingKid(t, m)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			hup := make(chan os.Signal, 1)
			go m.Watch(ctx, hup)

			next, _ := keyPair(t, dir, "RS256", t0.Add(time.Hour))
			copyTo(t, next, live)
			if name == "SIGHUP" {
				hup <- syscall.SIGHUP // as signal.Notify delivers it
			}
			eventually(t, "signing with the replaced key", func() bool { return signingKid(t, m) != oldKid })
		})
	}
}

func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		t.Fatal(err)
	}
}

func TestABadNewKeyKeepsTheCurrentSet(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(small)
	for name, content := range map[string][]byte{
		"garbage":       []byte("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"),
		"half-written":  []byte("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"),
		"RSA-1024":      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"a certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			keyPair(t, dir, "RS256", t0)
			m, logs := newManagerLog(t, jwks.Source{Dir: dir}, "RS256", newClock())
			tok := signAccess(t, m)
			kid := signingKid(t, m)

			if err := os.WriteFile(filepath.Join(dir, "30000101T000000Z.pem"), content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := m.Reload(); err == nil {
				t.Fatal("Reload accepted a bad key")
			}
			if !strings.Contains(logs.String(), "keeping the current key set") {
				t.Errorf("the failed reload is not logged: %s", logs)
			}
			if _, err := m.VerifyAccess(tok); err != nil {
				t.Errorf("the current set is gone: %v", err)
			}
			if got := signingKid(t, m); got != kid {
				t.Errorf("signing kid %s, want the old %s", got, kid)
			}
		})
	}
}

// TestReloadDropsNoRequest verifies without pause while the key set is swapped
// over and over; under -race this also proves the swap is safe.
func TestReloadDropsNoRequest(t *testing.T) {
	m, dir, _ := dirManager(t, "RS256", nil)
	tok := signAccess(t, m)
	stop := make(chan struct{})
	var failures, verified atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.VerifyAccess(tok); err != nil {
					failures.Add(1)
				}
				verified.Add(1)
			}
		}()
	}
	staging := t.TempDir()
	for i := range 3 {
		_, pub := keyPair(t, staging, "RS256", t0.Add(time.Duration(i+1)*time.Hour))
		copyFile(t, pub, dir)
		if err := m.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "some verifications", func() bool { return verified.Load() > 20 })
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d verifications failed during reloads", n, verified.Load())
	}
}

func TestMetricsCountOutcomesAndReloads(t *testing.T) {
	dir := t.TempDir()
	keyPair(t, dir, "RS256", t0)
	reg := prometheus.NewRegistry()
	c := newClock()
	m, err := jwks.New(jwks.Source{Dir: dir}, jwks.Options{
		Issuer: testIssuer, Audience: testAudience, Now: c.Now, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := signAccess(t, m)
	_, _ = m.VerifyAccess(tok)
	_, _ = m.VerifyAccess(otherSignature(tok))
	_, _ = m.VerifyAccess("garbage")
	c.Add(time.Minute)

	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			name := f.GetName()
			for _, l := range mt.GetLabel() {
				name += "," + l.GetName() + "=" + l.GetValue()
				if strings.Contains(l.GetValue(), tok[:20]) {
					t.Errorf("a label carries the token: %s", name)
				}
			}
			switch {
			case mt.Counter != nil:
				got[name] = mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				got[name] = mt.GetGauge().GetValue()
			}
		}
	}
	for name, want := range map[string]float64{
		"authd_jwks_verify_total,result=ok,token=access":        1,
		"authd_jwks_verify_total,result=signature,token=access": 1,
		"authd_jwks_verify_total,result=malformed,token=access": 1,
		"authd_jwks_reloads_total,result=ok":                    1,
		"authd_jwks_key_set_age_seconds":                        60,
		"authd_jwks_verification_keys":                          1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if _, err := jwks.New(jwks.Source{Dir: dir}, jwks.Options{Issuer: testIssuer, Audience: testAudience, Registerer: reg}); err == nil {
		t.Error("a second Manager registered the same metrics without error")
	}
}

// otherSignature changes the first character of tok's signature.
func otherSignature(tok string) string {
	b := []byte(tok)
	i := strings.LastIndexByte(tok, '.') + 1
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// A key set remembers the header segments of the tokens it verified, so their JSON is
// decoded once; the next set starts empty, so a key removed from the directory takes its
// tokens with it, whatever was remembered.
func TestARemovedKeyRefusesTokensItVerifiedBefore(t *testing.T) {
	dir := t.TempDir()
	oldPriv, oldPub := keyPair(t, dir, "RS256", t0)
	m, _ := newManagerLog(t, jwks.Source{Dir: dir}, "RS256", newClock())
	old := signAccess(t, m)
	for range 3 {
		if _, err := m.VerifyAccess(old); err != nil {
			t.Fatalf("the token of the current key is refused: %v", err)
		}
	}
	keyPair(t, dir, "RS256", t0.Add(time.Hour))
	for _, p := range []string{oldPriv, oldPub} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.VerifyAccess(old); !errors.Is(err, jwks.ErrUnknownKey) {
		t.Fatalf("a token of the removed key after the reload: %v, want ErrUnknownKey", err)
	}
	if _, err := m.VerifyAccess(signAccess(t, m)); err != nil {
		t.Fatalf("a token of the new key is refused: %v", err)
	}
}
