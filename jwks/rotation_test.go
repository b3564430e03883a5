package jwks_test

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/authd/authd/jwks"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// copyFile copies src into dir the way ROTATION.md says: write a hidden temporary
// file, then rename it into place, so a watcher never reads half a key.
func copyFile(t testing.TB, src, dir string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".incoming")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, filepath.Base(src))); err != nil {
		t.Fatal(err)
	}
}

// consumer is a JWKS consumer (Envoy jwt_authn, oauth2-proxy) that fetches the key
// set and keeps it for the Cache-Control max-age before fetching again.
type consumer struct {
	url       string
	keys      map[string]crypto.PublicKey
	fetchedAt time.Time
}

func (c *consumer) keysAt(t *testing.T, now time.Time) map[string]crypto.PublicKey {
	if c.keys == nil || !now.Before(c.fetchedAt.Add(5*time.Minute)) {
		c.keys, c.fetchedAt = fetchJWKS(t, c.url), now
	}
	return c.keys
}

// TestRotationNeverRefusesAValidToken walks through ROTATION.md with a key
// directory: add the new key verify-only, wait one JWKS cache lifetime, promote it,
// wait the longest token lifetime, retire the old key. At every step every token
// issued so far that has not expired verifies, both in authd and in a consumer
// that caches the JWKS for its max-age.
func TestRotationNeverRefusesAValidToken(t *testing.T) {
	c := newClock()
	live := t.TempDir()
	oldPriv, oldPub := keyPair(t, live, "RS256", c.Now())
	m := newManager(t, jwks.Source{Dir: live}, "RS256", c)
	srv := serve(t, m)
	app := &consumer{url: srv.URL + "/.well-known/jwks.json"}

	type issued struct {
		tok string
		exp time.Time
	}
	var tokens []issued
	issue := func() (kid string) {
		tok, exp, err := m.SignAccess(accessClaims())
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, issued{tok, exp})
		hdr, _ := segments(t, tok)
		return hdr["kid"].(string)
	}
	checkAll := func(step string) {
		t.Helper()
		now := c.Now()
		keys := app.keysAt(t, now)
		for i, tk := range tokens {
			if !now.Before(tk.exp.Add(jwks.Leeway)) {
				continue // expired: refusing it is right
			}
			if _, err := m.VerifyAccess(tk.tok); err != nil {
				t.Errorf("%s: authd refuses valid token #%d: %v", step, i, err)
			}
			if _, err := verifyElsewhere(t, keys, "RS256", tk.tok, now); err != nil {
				t.Errorf("%s: the consumer refuses valid token #%d: %v", step, i, err)
			}
		}
	}
	reload := func() {
		t.Helper()
		if err := m.Reload(); err != nil {
			t.Fatal(err)
		}
	}

	oldKid := issue()
	checkAll("before rotation")

	// 1. The new key pair is made outside the live directory; only its public half
	// goes in. It verifies and is published, but the old key still signs.
	c.Add(time.Hour)
	staging := t.TempDir()
	newPriv, newPub := keyPair(t, staging, "RS256", c.Now())
	app.keysAt(t, c.Now()) // the worst case: the consumer fetched just before
	copyFile(t, newPub, live)
	reload()
	if kid := issue(); kid != oldKid {
		t.Fatalf("step 1: a verify-only key signs (kid %s)", kid)
	}
	checkAll("1. new key verify-only")

	// 2. One JWKS cache lifetime later every consumer has fetched the new key, and
	// its private half goes in. Its file name sorts last, so it signs.
	c.Add(5 * time.Minute)
	checkAll("2. after one cache lifetime")
	if _, ok := app.keysAt(t, c.Now())[kidOf(t, newPub)]; !ok {
		t.Fatal("step 2: the consumer has not seen the new key; promoting now would lock it out")
	}
	copyFile(t, newPriv, live)
	reload()
	newKid := issue()
	if newKid == oldKid {
		t.Fatal("step 2: the promoted key does not sign")
	}
	checkAll("2. new key promoted")
	c.Add(10 * time.Minute)
	issue()
	checkAll("2. tokens of both keys in flight")

	// 3. After the longest token lifetime (access 15 min, plus leeway) no valid
	// token carries the old kid; its files go.
	c.Add(15*time.Minute + jwks.Leeway)
	checkAll("3. before retiring")
	for _, f := range []string{oldPriv, oldPub} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	reload()
	if kid := issue(); kid != newKid {
		t.Fatalf("step 3: signing kid %s, want %s", kid, newKid)
	}
	checkAll("3. old key retired")
	if keys := fetchJWKS(t, app.url); len(keys) != 1 {
		t.Errorf("step 3: the JWKS still lists %d keys", len(keys))
	}
}

// kidOf is the RFC 7638 thumbprint of the key in a public key file.
func kidOf(t *testing.T, pubPath string) string {
	t.Helper()
	data, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromRaw(pub)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}
