package extauthz_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/jwks"
)

// A token verified before stays in the verified-token cache, but not past a change of the
// key set: once its key is removed and the set reloaded, the next check verifies it
// again and refuses it, instead of letting it pass until its cache entry ends.
func TestARemovedKeyStopsItsCachedTokensAtOnce(t *testing.T) {
	dir := t.TempDir()
	oldPriv, oldPub, err := jwks.GenerateKeyPair(dir, "RS256", 2048, t0)
	if err != nil {
		t.Fatal(err)
	}
	var m *jwks.Manager
	e := newEnv(t, func(c *extauthz.Config) {
		var err error
		m, err = jwks.New(jwks.Source{Dir: dir}, jwks.Options{Alg: "RS256", Issuer: testIssuer, Audience: testAudience, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Verifier = m
	})
	u := e.newUser()
	tok := sign(t, m, u)
	ctx := context.Background()
	for i := range 2 {
		if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
			t.Fatalf("check %d of a valid token: %d %s", i+1, d.Status, d.Reason)
		}
	}

	// A reload that keeps the key keeps the token valid.
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatalf("after a reload that kept its key: %d %s", d.Status, d.Reason)
	}

	if _, _, err := jwks.GenerateKeyPair(dir, "RS256", 2048, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{oldPriv, oldPub} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.checker.Check(ctx, bearerReq(tok)); d.Allow || d.Reason != "token_unknown_key" {
		t.Fatalf("a cached token of a removed key: allow=%v %s, want token_unknown_key", d.Allow, d.Reason)
	}
	if d := e.checker.Check(ctx, bearerReq(sign(t, m, u))); !d.Allow {
		t.Fatalf("a token of the new key: %d %s", d.Status, d.Reason)
	}
}
