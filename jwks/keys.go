// Package jwks loads signing keys, signs and verifies tokens, and serves the key set.
package jwks

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// MinRSABits is the smallest RSA modulus accepted for signing or verifying.
const MinRSABits = 2048

// ErrNoKeys means no key source was configured and generating one is not allowed
// (production): the process must not start with keys it made up.
var ErrNoKeys = errors.New("jwks: no signing key configured: set JWT_PRIVATE_KEY (or JWT_PRIVATE_KEY_FILE), JWT_KEYS_DIR or AWS_SSM_ENABLED; keys are generated only outside production")

// Source says where the keys come from. The first one configured wins:
//
//  1. PEM: PrivatePEM/PublicPEM (from JWT_PRIVATE_KEY/JWT_PUBLIC_KEY or SSM), or
//     PrivateFile/PublicFile (the *_FILE variants, re-read on every Reload, so a
//     replaced file is picked up by Watch or a SIGHUP). The private key signs; it
//     and every key in the public PEM (one or more blocks) verify.
//  2. Dir (JWT_KEYS_DIR): every *.pem file; the private key whose file name sorts
//     last signs and every key verifies. Public-only files verify only.
//  3. DevDir, when AllowGenerate: a key pair generated once (2048-bit RSA for the
//     RSA algorithms) and kept there, then read like Dir.
//
// With none of these, New fails with ErrNoKeys.
type Source struct {
	PrivatePEM  []byte
	PublicPEM   []byte
	PrivateFile string
	PublicFile  string

	Dir string

	DevDir        string
	AllowGenerate bool
}

// watchedFiles lists the files the keys are read from, for Watch to poll: the
// *_FILE paths, or the key files of the directory.
func (s Source) watchedFiles() ([]string, error) {
	if s.hasPEM() {
		var files []string
		for _, f := range []string{s.PrivateFile, s.PublicFile} {
			if f != "" {
				files = append(files, f)
			}
		}
		return files, nil
	}
	if d := s.dir(); d != "" {
		return pemFiles(d)
	}
	return nil, nil
}

// dir is the directory the keys are read from, if any.
func (s Source) dir() string {
	switch {
	case s.hasPEM():
		return ""
	case s.Dir != "":
		return s.Dir
	case s.AllowGenerate:
		return s.DevDir
	}
	return ""
}

func (s Source) hasPEM() bool {
	return len(s.PrivatePEM) > 0 || len(s.PublicPEM) > 0 || s.PrivateFile != "" || s.PublicFile != ""
}

// parsedKey is one key read from PEM; priv is nil for a verify-only key.
type parsedKey struct {
	priv crypto.Signer
	pub  crypto.PublicKey
	kid  string
	from string // file or variable name, for messages
}

// loadKeys reads the keys of src in order; the signing key is the last private one
// (nil when there is none).
func loadKeys(src Source, alg jwa.SignatureAlgorithm, now time.Time) (keys []parsedKey, signer *parsedKey, err error) {
	switch {
	case src.hasPEM():
		keys, err = loadPEMSource(src, alg)
	case src.Dir != "":
		keys, err = loadDir(src.Dir, alg)
	case src.AllowGenerate:
		if src.DevDir == "" {
			return nil, nil, errors.New("jwks: no key configured and no directory to keep a generated one in")
		}
		if err = ensureDevKey(src.DevDir, alg, now); err == nil {
			keys, err = loadDir(src.DevDir, alg)
		}
	default:
		return nil, nil, ErrNoKeys
	}
	if err != nil {
		return nil, nil, err
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("jwks: no key found in %s", src.dir())
	}
	for i := range keys {
		if keys[i].priv != nil {
			signer = &keys[i]
		}
	}
	return keys, signer, nil
}

func loadPEMSource(src Source, alg jwa.SignatureAlgorithm) ([]parsedKey, error) {
	privPEM, pubPEM := src.PrivatePEM, src.PublicPEM
	var err error
	if src.PrivateFile != "" {
		if privPEM, err = os.ReadFile(src.PrivateFile); err != nil {
			return nil, fmt.Errorf("jwks: JWT_PRIVATE_KEY_FILE: %w", err)
		}
	}
	if src.PublicFile != "" {
		if pubPEM, err = os.ReadFile(src.PublicFile); err != nil {
			return nil, fmt.Errorf("jwks: JWT_PUBLIC_KEY_FILE: %w", err)
		}
	}
	privPEM, pubPEM = unescapeNewlines(privPEM), unescapeNewlines(pubPEM)
	var keys []parsedKey
	if len(pubPEM) > 0 {
		pubs, err := parsePEM(pubPEM, alg, "JWT_PUBLIC_KEY")
		if err != nil {
			return nil, err
		}
		for _, k := range pubs {
			if k.priv != nil {
				return nil, errors.New("jwks: JWT_PUBLIC_KEY holds a private key")
			}
		}
		keys = append(keys, pubs...)
	}
	if len(privPEM) > 0 {
		privs, err := parsePEM(privPEM, alg, "JWT_PRIVATE_KEY")
		if err != nil {
			return nil, err
		}
		if len(privs) != 1 || privs[0].priv == nil {
			return nil, errors.New("jwks: JWT_PRIVATE_KEY must hold exactly one private key")
		}
		// Last, so that it is the one that signs.
		keys = append(keys, privs[0])
	}
	return keys, nil
}

// unescapeNewlines turns a PEM written on one line with literal \n (the usual way
// to put a key in a .env file or an environment variable) back into lines.
func unescapeNewlines(b []byte) []byte {
	if bytes.IndexByte(b, '\n') < 0 && bytes.Contains(b, []byte(`\n`)) {
		return bytes.ReplaceAll(b, []byte(`\n`), []byte("\n"))
	}
	return b
}

// pemFiles lists the key files of dir in file-name order. Hidden files are skipped:
// editors' and our own temporary files, Kubernetes' ..data links.
func pemFiles(dir string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !strings.HasPrefix(filepath.Base(n), ".") {
			out = append(out, n)
		}
	}
	return out, nil
}

func loadDir(dir string, alg jwa.SignatureAlgorithm) ([]parsedKey, error) {
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("jwks: key directory: %w", err)
	}
	files, err := pemFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("jwks: key directory: %w", err)
	}
	var keys []parsedKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		ks, err := parsePEM(data, alg, f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}

// fingerprint summarises the key files of src (names, sizes, modification times)
// so that a poll can tell whether anything changed. It is taken before the files are
// read, so a write that lands during a load changes it again and is picked up.
func fingerprint(src Source) string {
	files, err := src.watchedFiles()
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		b.WriteString(f)
		// Stat follows links, so a Kubernetes secret swapped under its ..data link shows.
		if fi, err := os.Stat(f); err == nil {
			b.WriteByte('|')
			b.WriteString(strconv.FormatInt(fi.Size(), 10))
			b.WriteByte('|')
			b.WriteString(strconv.FormatInt(fi.ModTime().UnixNano(), 10))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// parsePEM reads every PEM block of data. Private keys may be PKCS#8, PKCS#1 or
// SEC1; public keys PKIX or PKCS#1. Anything else in the file is an error rather
// than silently skipped, so a mangled key never leaves a replica without it.
func parsePEM(data []byte, alg jwa.SignatureAlgorithm, from string) ([]parsedKey, error) {
	var keys []parsedKey
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		k, err := parseBlock(block)
		if err != nil {
			return nil, fmt.Errorf("jwks: %s: %w", from, err)
		}
		k.from = from
		if err := checkKey(k.pub, alg); err != nil {
			return nil, fmt.Errorf("jwks: %s: %w", from, err)
		}
		if k.kid, err = thumbprint(k.pub); err != nil {
			return nil, fmt.Errorf("jwks: %s: %w", from, err)
		}
		keys = append(keys, k)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("jwks: %s: data that is not a PEM block", from)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwks: %s: no PEM key", from)
	}
	return keys, nil
}

func parseBlock(b *pem.Block) (parsedKey, error) {
	if _, ok := b.Headers["Proc-Type"]; ok {
		return parsedKey{}, errors.New("encrypted PEM keys are not supported")
	}
	var (
		key any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(b.Bytes)
	default:
		return parsedKey{}, fmt.Errorf("unsupported PEM block %q", b.Type)
	}
	if err != nil {
		return parsedKey{}, fmt.Errorf("%s: %w", b.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return parsedKey{priv: k, pub: &k.PublicKey}, nil
	case *ecdsa.PrivateKey:
		return parsedKey{priv: k, pub: &k.PublicKey}, nil
	case ed25519.PrivateKey:
		return parsedKey{priv: k, pub: k.Public()}, nil
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return parsedKey{pub: k}, nil
	}
	return parsedKey{}, fmt.Errorf("unsupported key type %T", key)
}

// checkKey refuses a key that does not fit the configured algorithm. One algorithm
// per key set keeps verification to exactly one code path (an RSA key can never be
// offered to an EC verifier, nor the reverse). RSA under 2048 bits is refused (NIST
// SP 800-131A; the seed used 2048).
func checkKey(pub crypto.PublicKey, alg jwa.SignatureAlgorithm) error {
	switch alg {
	case jwa.RS256, jwa.PS256:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s needs an RSA key, not %s", alg, keyKind(pub))
		}
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key of %d bits: at least %d are required", k.N.BitLen(), MinRSABits)
		}
	case jwa.ES256:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return fmt.Errorf("%s needs a P-256 key, not %s", alg, keyKind(pub))
		}
	case jwa.EdDSA:
		if _, ok := pub.(ed25519.PublicKey); !ok {
			return fmt.Errorf("%s needs an Ed25519 key, not %s", alg, keyKind(pub))
		}
	default:
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
	return nil
}

func keyKind(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "EC " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// thumbprint is the RFC 7638 SHA-256 thumbprint, the key id.
func thumbprint(pub crypto.PublicKey) (string, error) {
	k, err := jwk.FromRaw(pub)
	if err != nil {
		return "", err
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// jwksDocument renders the public keys as a JWK Set, each with kid, alg and use
// (Ory Oathkeeper ignores keys without use).
func jwksDocument(keys []parsedKey, alg jwa.SignatureAlgorithm) ([]byte, error) {
	set := jwk.NewSet()
	for _, k := range keys {
		jk, err := jwk.FromRaw(k.pub)
		if err != nil {
			return nil, err
		}
		for name, v := range map[string]any{
			jwk.KeyIDKey:     k.kid,
			jwk.AlgorithmKey: alg,
			jwk.KeyUsageKey:  jwk.ForSignature,
		} {
			if err := jk.Set(name, v); err != nil {
				return nil, err
			}
		}
		if err := set.AddKey(jk); err != nil {
			return nil, err
		}
	}
	return json.Marshal(set)
}

// GenerateKeyPair writes a new key pair for alg into dir (created 0700 when
// missing): <time>.pem (PKCS#8 private key) and <time>-public.pem (PKIX), both
// 0600, named by now in UTC (20261128T140000Z) so that file names sort by date
// and the newest private key is the one that signs. bits applies to RS256 and
// PS256 only (2048, 3072 or 4096); ES256 is P-256 and EdDSA Ed25519. Existing
// files are never overwritten.
//
// The public file is written first: a key that signs must already verify.
func GenerateKeyPair(dir, alg string, bits int, now time.Time) (privPath, pubPath string, err error) {
	a, err := parseAlg(alg)
	if err != nil {
		return "", "", err
	}
	var priv crypto.Signer
	switch a {
	case jwa.RS256, jwa.PS256:
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return "", "", fmt.Errorf("jwks: RSA key size %d: use 2048, 3072 or 4096", bits)
		}
		priv, err = rsa.GenerateKey(rand.Reader, bits)
	case jwa.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return "", "", fmt.Errorf("jwks: generate key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", "", fmt.Errorf("jwks: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return "", "", fmt.Errorf("jwks: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("jwks: %w", err)
	}
	name := now.UTC().Format("20060102T150405Z")
	privPath = filepath.Join(dir, name+".pem")
	pubPath = filepath.Join(dir, name+"-public.pem")
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return "", "", fmt.Errorf("jwks: %s exists", p)
		}
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})); err != nil {
		return "", "", err
	}
	if err := writeNew(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})); err != nil {
		return "", "", err
	}
	return privPath, pubPath, nil
}

// writeNew writes data to path with mode 0600 through a hidden temporary file and a
// rename, so a directory watcher never reads half a key.
func writeNew(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("jwks: write %s: %w", path, err)
	}
	return nil
}

// ensureDevKey generates the development key pair in dir unless it already holds one.
func ensureDevKey(dir string, alg jwa.SignatureAlgorithm, now time.Time) error {
	files, err := pemFiles(dir)
	if err != nil || len(files) > 0 {
		return err
	}
	_, _, err = GenerateKeyPair(dir, alg.String(), MinRSABits, now)
	return err
}

// DevFernetKey returns the Fernet key kept in dir/fernet.key, generating it (32
// random bytes, URL-safe base64 as Python's Fernet.generate_key writes it) on first
// use. For development only: the caller must not call it with ENV=production.
func DevFernetKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, "fernet.key")
	if data, err := os.ReadFile(path); err == nil {
		return bytes.TrimSpace(data), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	key := []byte(base64.URLEncoding.EncodeToString(raw[:]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if err := writeNew(path, append(key, '\n')); err != nil {
		return nil, err
	}
	return key, nil
}

// parseAlg maps JWT_ALG to a supported algorithm; empty means RS256.
func parseAlg(s string) (jwa.SignatureAlgorithm, error) {
	switch s {
	case "", "RS256":
		return jwa.RS256, nil
	case "PS256":
		return jwa.PS256, nil
	case "ES256":
		return jwa.ES256, nil
	case "EdDSA":
		return jwa.EdDSA, nil
	}
	return "", fmt.Errorf("jwks: unsupported JWT_ALG %q: use RS256, PS256, ES256 or EdDSA", s)
}
