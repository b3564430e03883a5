package jwks_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/jwks"
)

func TestGenerateKeyPairWritesOwnerOnlyFilesNamedByDate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	priv, pub := keyPair(t, dir, "RS256", t0)
	if filepath.Base(priv) != "20261128T140000Z.pem" || filepath.Base(pub) != "20261128T140000Z-public.pem" {
		t.Errorf("files %s, %s", priv, pub)
	}
	for _, f := range []string{priv, pub} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	if _, _, err := jwks.GenerateKeyPair(dir, "RS256", 2048, t0); err == nil {
		t.Error("a second pair at the same time overwrote the first")
	}
	later, _ := keyPair(t, dir, "RS256", t0.Add(time.Second))
	names := []string{priv, later}
	if !sort.StringsAreSorted(names) {
		t.Errorf("%v do not sort by date", names)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestGenerateKeyPairRefusesOtherSizesAndAlgorithms(t *testing.T) {
	for _, tt := range []struct {
		alg  string
		bits int
	}{{"RS256", 1024}, {"RS256", 2047}, {"PS256", 1536}, {"HS256", 2048}, {"none", 2048}} {
		if _, _, err := jwks.GenerateKeyPair(t.TempDir(), tt.alg, tt.bits, t0); err == nil {
			t.Errorf("GenerateKeyPair(%s, %d) succeeded", tt.alg, tt.bits)
		}
	}
	if _, _, err := jwks.GenerateKeyPair(t.TempDir(), "PS256", 3072, t0); err != nil {
		t.Errorf("GenerateKeyPair(PS256, 3072): %v", err)
	}
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestRSAKeysUnder2048BitsAreRefused(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(small)
	pubDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "small-public.pem"), pemOf("PUBLIC KEY", pubDER), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]jwks.Source{
		"private PEM":    {PrivatePEM: pemOf("PRIVATE KEY", der)},
		"public PEM":     {PublicPEM: pemOf("PUBLIC KEY", pubDER)},
		"key directory":  {Dir: dir},
		"PKCS#1 private": {PrivatePEM: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(small))},
		"PKCS#1 public":  {PublicPEM: pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&small.PublicKey))},
	} {
		_, err := jwks.New(src, jwks.Options{Issuer: testIssuer, Audience: testAudience})
		if err == nil || !strings.Contains(err.Error(), "at least 2048") {
			t.Errorf("%s: New = %v, want a refusal naming 2048 bits", name, err)
		}
	}
}

func TestKeyFormatsLoad(t *testing.T) {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(e)
	ecPub, _ := x509.MarshalPKIXPublicKey(&e.PublicKey)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&r.PublicKey)
	for _, tt := range []struct {
		name string
		alg  string
		src  jwks.Source
	}{
		{"PKCS#1 private", "RS256", jwks.Source{PrivatePEM: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(r))}},
		{"PKCS#1 private and PKIX public", "PS256", jwks.Source{
			PrivatePEM: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(r)), PublicPEM: pemOf("PUBLIC KEY", rsaPub)}},
		{"one line with literal \\n, as in a .env file", "RS256", jwks.Source{PrivatePEM: []byte(strings.ReplaceAll(
			string(pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(r))), "\n", `\n`))}},
		{"SEC1 private", "ES256", jwks.Source{PrivatePEM: pemOf("EC PRIVATE KEY", ecDER), PublicPEM: pemOf("PUBLIC KEY", ecPub)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, tt.src, tt.alg, newClock())
			if _, err := m.VerifyAccess(signAccess(t, m)); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestKeysThatDoNotFitTheAlgorithmAreRefused(t *testing.T) {
	dir := t.TempDir()
	keyPair(t, dir, "ES256", t0)
	for _, alg := range []string{"RS256", "EdDSA"} {
		if _, err := jwks.New(jwks.Source{Dir: dir}, jwks.Options{Alg: alg, Issuer: testIssuer, Audience: testAudience}); err == nil {
			t.Errorf("%s accepted a P-256 key", alg)
		}
	}
	if _, err := jwks.New(jwks.Source{Dir: dir}, jwks.Options{Alg: "HS256", Issuer: testIssuer, Audience: testAudience}); err == nil {
		t.Error("JWT_ALG=HS256 accepted")
	}
}

func TestTheNewestPrivateKeySignsAndEveryKeyVerifies(t *testing.T) {
	dir := t.TempDir()
	oldPriv, _ := keyPair(t, dir, "EdDSA", t0)
	c := newClock()
	old := newManager(t, jwks.Source{PrivateFile: oldPriv}, "EdDSA", c)
	oldTok := signAccess(t, old)

	keyPair(t, dir, "EdDSA", t0.Add(24*time.Hour))
	m := newManager(t, jwks.Source{Dir: dir}, "EdDSA", c)
	if signingKid(t, m) == signingKid(t, old) {
		t.Error("the older key signs")
	}
	if _, err := m.VerifyAccess(oldTok); err != nil {
		t.Errorf("a token of the older key: %v", err)
	}
}

func TestPublicPEMMayCarrySeveralKeys(t *testing.T) {
	// Rotation without a key directory: JWT_PUBLIC_KEY lists the old and the new key.
	dir := t.TempDir()
	aPriv, aPub := keyPair(t, dir, "RS256", t0)
	bPriv, bPub := keyPair(t, dir, "RS256", t0.Add(time.Hour))
	a := newManager(t, jwks.Source{PrivateFile: aPriv}, "RS256", nil)
	b := newManager(t, jwks.Source{PrivateFile: bPriv}, "RS256", nil)
	both := append(readFile(t, aPub), readFile(t, bPub)...)

	verifier := newManager(t, jwks.Source{PublicPEM: both}, "RS256", nil)
	for _, m := range []*jwks.Manager{a, b} {
		if _, err := verifier.VerifyAccess(signAccess(t, m)); err != nil {
			t.Error(err)
		}
	}
	if _, _, err := verifier.SignAccess(accessClaims()); !errors.Is(err, jwks.ErrNoSigningKey) {
		t.Errorf("a verify-only Manager signs: %v", err)
	}
	if _, err := jwks.New(jwks.Source{PublicPEM: readFile(t, aPriv)}, jwks.Options{Issuer: testIssuer, Audience: testAudience}); err == nil {
		t.Error("a private key in JWT_PUBLIC_KEY is accepted")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDevKeyIsGeneratedOnceAndKept(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "data", "keys")
	src := jwks.Source{DevDir: dev, AllowGenerate: true}
	first := newManager(t, src, "RS256", nil)
	files, _ := filepath.Glob(filepath.Join(dev, "*.pem"))
	if len(files) != 2 {
		t.Fatalf("dev dir holds %v, want one key pair", files)
	}
	second := newManager(t, src, "RS256", nil)
	if signingKid(t, first) != signingKid(t, second) {
		t.Error("a restart generated a new dev key")
	}
	if _, err := second.VerifyAccess(signAccess(t, first)); err != nil {
		t.Error(err)
	}
}

func TestWithoutKeysProductionRefusesToStart(t *testing.T) {
	for name, src := range map[string]jwks.Source{
		"nothing":                      {},
		"a dev dir, generation denied": {DevDir: t.TempDir()},
	} {
		_, err := jwks.New(src, jwks.Options{Issuer: testIssuer, Audience: testAudience})
		if !errors.Is(err, jwks.ErrNoKeys) {
			t.Errorf("%s: New = %v, want ErrNoKeys", name, err)
		}
	}
	if _, err := jwks.New(jwks.Source{Dir: t.TempDir()}, jwks.Options{Issuer: testIssuer, Audience: testAudience}); err == nil {
		t.Error("an empty key directory is accepted")
	}
}

func TestDevFernetKeyIsGeneratedOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := jwks.DevFernetKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.URLEncoding.DecodeString(string(k1))
	if err != nil || len(raw) != 32 {
		t.Errorf("Fernet key %q: %d bytes, %v; want 32 bytes of URL-safe base64", k1, len(raw), err)
	}
	k2, err := jwks.DevFernetKey(dir)
	if err != nil || string(k1) != string(k2) {
		t.Errorf("second call gave %q (%v), want the kept key", k2, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "fernet.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("fernet.key: %v %v, want mode 0600", fi, err)
	}
}
