package fernet

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test keys only: the key of the spec's vectors and two derived by hand.
const (
	specKey = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
	oldKey  = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31
	newKey  = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=" // bytes 32..63
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// counter is a deterministic stand-in for crypto/rand.
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func encrypt(t *testing.T, b *Box, pt []byte, now time.Time) string {
	t.Helper()
	tok, err := b.Encrypt(pt, now, &counter{})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return tok
}

func TestRoundTrip(t *testing.T) {
	box := mustBox(t, specKey)
	for n := 0; n <= 70; n++ {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		tok := encrypt(t, box, pt, t0)
		raw, err := base64.URLEncoding.Strict().DecodeString(tok)
		if err != nil {
			t.Fatalf("token is not padded base64url: %v", err)
		}
		if want := 1 + 8 + 16 + (n/16+1)*16 + 32; len(raw) != want {
			t.Errorf("%d bytes: token of %d bytes, want %d", n, len(raw), want)
		}
		got, err := box.Decrypt(tok, time.Minute, t0)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("%d bytes: Decrypt = %x, %v", n, got, err)
		}
	}
	// nil reader: crypto/rand, so two tokens differ.
	a, err := box.Encrypt([]byte("same"), t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := box.Encrypt([]byte("same"), t0, nil)
	if a == b {
		t.Error("two tokens with random IVs are equal")
	}
	if got, err := box.Decrypt(a, 0, time.Time{}); err != nil || string(got) != "same" {
		t.Errorf("Decrypt = %q, %v", got, err)
	}
}

func TestTimestampIsWholeSeconds(t *testing.T) {
	box := mustBox(t, specKey)
	tok := encrypt(t, box, []byte("x"), t0.Add(999*time.Millisecond))
	_, ts, ok := decodeToken(tok)
	if !ok || int64(ts) != t0.Unix() {
		t.Errorf("timestamp %d, want %d", ts, t0.Unix())
	}
}

func TestKeyRotation(t *testing.T) {
	oldBox := mustBox(t, oldKey)
	newBox := mustBox(t, newKey)
	both := mustBox(t, newKey+","+oldKey)
	pt := []byte("user:JBSWY3DPEHPK3PXP")

	oldTok := encrypt(t, oldBox, pt, t0)
	if got, err := both.Decrypt(oldTok, 0, t0); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("new,old cannot read an old token: %q, %v", got, err)
	}
	if _, err := newBox.Decrypt(oldTok, 0, t0); err != ErrInvalidToken {
		t.Errorf("new key alone read an old token: %v", err)
	}

	newTok := encrypt(t, both, pt, t0)
	if _, err := newBox.Decrypt(newTok, 0, t0); err != nil {
		t.Errorf("the list does not encrypt with its first key: %v", err)
	}
	if _, err := oldBox.Decrypt(newTok, 0, t0); err != ErrInvalidToken {
		t.Errorf("old key read a token made by new,old: %v", err)
	}

	later := t0.Add(48 * time.Hour)
	rot, err := both.Rotate(oldTok, &counter{n: 100})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := newBox.Decrypt(rot, 0, later); err != nil || !bytes.Equal(got, pt) {
		t.Errorf("rotated token: %q, %v", got, err)
	}
	if _, err := oldBox.Decrypt(rot, 0, later); err != ErrInvalidToken {
		t.Errorf("old key read a rotated token: %v", err)
	}
	_, ts, _ := decodeToken(rot)
	if int64(ts) != t0.Unix() {
		t.Errorf("Rotate changed the timestamp to %d, want %d", ts, t0.Unix())
	}
	// Rotating keeps a token's age: a TTL still counts from the first encryption.
	if _, err := both.Decrypt(rot, time.Hour, later); err != ErrInvalidToken {
		t.Errorf("rotation extended the life of a token: %v", err)
	}
	if _, err := newBox.Rotate(oldTok, nil); err != ErrInvalidToken {
		t.Errorf("Rotate with no matching key: %v", err)
	}
	if _, err := both.Rotate("garbage", nil); err != ErrInvalidToken {
		t.Errorf("Rotate of garbage: %v", err)
	}
	if _, err := both.Rotate(oldTok, failingReader{}); err == nil || err == ErrInvalidToken {
		t.Errorf("Rotate with a failing reader: %v", err)
	}
}

func TestTamperedToken(t *testing.T) {
	box := mustBox(t, specKey)
	tok := encrypt(t, box, []byte("a secret of two blocks, 32 byte"), t0)
	raw, _ := base64.URLEncoding.DecodeString(tok)
	for i := range raw {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(raw)
			bad[i] ^= mask
			got, err := box.Decrypt(base64.URLEncoding.EncodeToString(bad), 0, t0)
			if err != ErrInvalidToken || got != nil {
				t.Fatalf("byte %d ^ %#x: got %q, %v", i, mask, got, err)
			}
		}
	}
	// Every character of the text replaced by another of the alphabet.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range len(tok) {
		if tok[i] == '=' {
			continue
		}
		c := alphabet[(strings.IndexByte(alphabet, tok[i])+1)%len(alphabet)]
		bad := tok[:i] + string(c) + tok[i+1:]
		if _, err := box.Decrypt(bad, 0, t0); err != ErrInvalidToken {
			t.Fatalf("character %d changed: %v", i, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	tok := encrypt(t, mustBox(t, oldKey), []byte("x"), t0)
	for _, keys := range []string{newKey, specKey, specKey + "," + newKey} {
		if got, err := mustBox(t, keys).Decrypt(tok, 0, t0); err != ErrInvalidToken || got != nil {
			t.Errorf("keys %d: got %q, %v", len(keys), got, err)
		}
	}
	// Same signing key, another encryption key: the HMAC passes, the padding (almost
	// always) does not; either way nothing is returned.
	raw, _ := base64.URLEncoding.DecodeString(oldKey)
	copy(raw[16:], bytes.Repeat([]byte{0xee}, 16))
	half, _ := ParseKey(base64.URLEncoding.EncodeToString(raw))
	hb, _ := NewBox(half)
	if got, err := hb.Decrypt(tok, 0, t0); err != ErrInvalidToken || got != nil {
		t.Errorf("other encryption key: got %q, %v", got, err)
	}
}

func TestTruncated(t *testing.T) {
	box := mustBox(t, specKey)
	tok := encrypt(t, box, []byte("a secret of two blocks, 32 byte"), t0)
	raw, _ := base64.URLEncoding.DecodeString(tok)
	for n := range len(raw) {
		for _, s := range []string{
			base64.URLEncoding.EncodeToString(raw[:n]),   // shorter token, well encoded
			base64.URLEncoding.EncodeToString(raw[1:]),   // version byte dropped
			base64.URLEncoding.EncodeToString(raw[n+1:]), // head cut off
		} {
			if _, err := box.Decrypt(s, 0, t0); err != ErrInvalidToken {
				t.Fatalf("truncated to %d bytes: %v", n, err)
			}
		}
	}
	for n := range len(tok) {
		if _, err := box.Decrypt(tok[:n], 0, t0); err != ErrInvalidToken {
			t.Fatalf("text cut to %d characters: %v", n, err)
		}
	}
	// Extra bytes appended (before the encoding) are not a valid token either.
	long := base64.URLEncoding.EncodeToString(append(bytes.Clone(raw), 0))
	if _, err := box.Decrypt(long, 0, t0); err != ErrInvalidToken {
		t.Errorf("extended token: %v", err)
	}
}

func TestBadBase64(t *testing.T) {
	box := mustBox(t, specKey)
	tok := encrypt(t, box, []byte("hello"), t0)
	std := strings.NewReplacer("-", "+", "_", "/").Replace(tok)
	if std == tok {
		t.Fatal("test token has no '-' or '_'; pick another plaintext")
	}
	for name, s := range map[string]string{
		"empty":               "",
		"standard alphabet":   std,
		"padding stripped":    strings.TrimRight(tok, "="),
		"extra padding":       tok + "=",
		"trailing data":       tok + "AAAA",
		"newline inside":      tok[:20] + "\n" + tok[20:],
		"CRLF at the end":     tok + "\r\n",
		"space at the end":    tok + " ",
		"space at the start":  " " + tok,
		"percent signs":       "%%%%" + tok[4:],
		"non-ASCII":           "é" + tok[2:],
		"only padding":        "====",
		"non-canonical final": tok[:len(tok)-3] + nextChar(tok[len(tok)-3]) + "==",
	} {
		if got, err := box.Decrypt(s, 0, t0); err != ErrInvalidToken || got != nil {
			t.Errorf("%s: got %q, %v", name, got, err)
		}
	}
}

// nextChar returns the base64url character after c, for changing unused low bits.
func nextChar(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return string(alphabet[(strings.IndexByte(alphabet, c)+1)%64])
}

func TestWrongVersion(t *testing.T) {
	box := mustBox(t, specKey)
	k, _ := ParseKey(specKey)
	for _, v := range []byte{0x00, 0x7f, 0x81, 0xff} {
		tok := encryptParts(k, []byte("x"), uint64(t0.Unix()), make([]byte, 16))
		raw, _ := base64.URLEncoding.DecodeString(tok)
		raw[0] = v
		// Re-sign, so only the version is wrong.
		raw = append(raw[:len(raw)-32], k.sign(raw[:len(raw)-32])...)
		if _, err := box.Decrypt(base64.URLEncoding.EncodeToString(raw), 0, t0); err != ErrInvalidToken {
			t.Errorf("version %#x: %v", v, err)
		}
	}
}

func TestBadPaddingWithValidMAC(t *testing.T) {
	// Only a holder of the signing key can make these; they must fail all the same.
	k, _ := ParseKey(specKey)
	box, _ := NewBox(k)
	iv := make([]byte, 16)
	for _, block := range [][]byte{
		bytes.Repeat([]byte{0}, 16),                   // pad byte 0
		bytes.Repeat([]byte{17}, 16),                  // pad byte > block size
		append(bytes.Repeat([]byte{3}, 14), 2, 3),     // inconsistent pad bytes
		append(bytes.Repeat([]byte{'a'}, 15), 2),      // claims 2, has 'a',2
		append(bytes.Repeat([]byte{'a'}, 14), 16, 16), // claims 16, has 14 others
	} {
		ct := make([]byte, 16)
		cbcEncrypt(k, iv, ct, block)
		raw := append([]byte{version, 0, 0, 0, 0, 0, 0, 0, 1}, iv...)
		raw = append(raw, ct...)
		raw = append(raw, k.sign(raw)...)
		if got, err := box.Decrypt(base64.URLEncoding.EncodeToString(raw), 0, t0); err != ErrInvalidToken || got != nil {
			t.Errorf("last block %x: got %q, %v", block, got, err)
		}
	}
}

func TestUnpad(t *testing.T) {
	for p := 1; p <= 16; p++ {
		b := append(bytes.Repeat([]byte{'x'}, 32-p), bytes.Repeat([]byte{byte(p)}, p)...)
		got, ok := unpad(b)
		if !ok || len(got) != 32-p {
			t.Errorf("pad %d: %d bytes, %v", p, len(got), ok)
		}
	}
	if _, ok := unpad(nil); ok {
		t.Error("unpad(nil) succeeded")
	}
	if _, ok := unpad(make([]byte, 15)); ok {
		t.Error("unpad of a partial block succeeded")
	}
}

func TestTTL(t *testing.T) {
	box := mustBox(t, specKey)
	tok := encrypt(t, box, []byte("x"), t0)
	for _, c := range []struct {
		name  string
		ttl   time.Duration
		now   time.Time
		valid bool
	}{
		{"fresh", time.Minute, t0, true},
		{"exactly ttl old", time.Minute, t0.Add(time.Minute), true},
		{"ttl old plus a fraction of a second", time.Minute, t0.Add(time.Minute + 999*time.Millisecond), true},
		{"a second past ttl", time.Minute, t0.Add(time.Minute + time.Second), false},
		{"a day past ttl", time.Minute, t0.Add(24 * time.Hour), false},
		{"sub-second ttl, same second", 500 * time.Millisecond, t0.Add(900 * time.Millisecond), true},
		{"sub-second ttl, next second", 500 * time.Millisecond, t0.Add(time.Second), false},
		{"no ttl, ten years later", 0, t0.AddDate(10, 0, 0), true},
		{"no ttl, zero time", 0, time.Time{}, true},
		{"clock before 1970 with ttl", time.Hour, time.Unix(-5, 0), false},
		{"huge ttl", time.Duration(1<<63 - 1), t0.AddDate(200, 0, 0), true},
	} {
		got, err := box.Decrypt(tok, c.ttl, c.now)
		if c.valid && (err != nil || string(got) != "x") {
			t.Errorf("%s: got %q, %v", c.name, got, err)
		}
		if !c.valid && (err != ErrInvalidToken || got != nil) {
			t.Errorf("%s: got %q, %v; want ErrInvalidToken", c.name, got, err)
		}
	}
	if _, err := box.Decrypt(tok, -time.Second, t0); err == nil || err == ErrInvalidToken {
		t.Errorf("negative ttl: %v", err)
	}
}

func TestFarFuture(t *testing.T) {
	box := mustBox(t, specKey)
	now := t0
	for _, c := range []struct {
		ahead time.Duration
		valid bool
	}{
		{0, true},
		{59 * time.Second, true},
		{MaxClockSkew, true},
		{MaxClockSkew + time.Second, false},
		{time.Hour, false},
		{100 * 365 * 24 * time.Hour, false},
	} {
		tok := encrypt(t, box, []byte("x"), now.Add(c.ahead))
		_, err := box.Decrypt(tok, time.Hour, now)
		if c.valid != (err == nil) || (err != nil && err != ErrInvalidToken) {
			t.Errorf("%v ahead: %v", c.ahead, err)
		}
		// Without a TTL the timestamp is not checked, as in Python's decrypt(ttl=None).
		if _, err := box.Decrypt(tok, 0, now); err != nil {
			t.Errorf("%v ahead, no ttl: %v", c.ahead, err)
		}
	}
	// The largest timestamps, which no time.Time of Encrypt can make.
	k, _ := ParseKey(specKey)
	for _, ts := range []uint64{1<<63 - 1, 1 << 63, 1<<64 - 1} {
		tok := encryptParts(k, []byte("x"), ts, make([]byte, 16))
		if _, err := box.Decrypt(tok, time.Hour, now); err != ErrInvalidToken {
			t.Errorf("timestamp %d with ttl: %v", ts, err)
		}
		if got, err := box.Decrypt(tok, 0, now); err != nil || string(got) != "x" {
			t.Errorf("timestamp %d without ttl: %q, %v", ts, got, err)
		}
		if _, err := box.Rotate(tok, nil); err != nil {
			t.Errorf("Rotate of timestamp %d: %v", ts, err)
		}
	}
}

func TestEncryptErrors(t *testing.T) {
	box := mustBox(t, specKey)
	if _, err := box.Encrypt([]byte("x"), time.Unix(-1, 0), nil); err == nil {
		t.Error("Encrypt before 1970 succeeded")
	}
	_, err := box.Encrypt([]byte("secret plaintext"), t0, failingReader{})
	if err == nil || strings.Contains(err.Error(), "secret plaintext") {
		t.Errorf("failing reader: %v", err)
	}
	if _, err := box.Encrypt(nil, t0, strings.NewReader("short")); err == nil {
		t.Error("Encrypt with a 5-byte IV source succeeded")
	}
	if _, err := (*Box)(nil).Encrypt(nil, t0, nil); err == nil {
		t.Error("nil Box encrypted")
	}
	if _, err := new(Box).Decrypt("x", 0, t0); err == nil || err == ErrInvalidToken {
		t.Errorf("empty Box Decrypt: %v", err)
	}
	if _, err := new(Box).Rotate("x", nil); err == nil || err == ErrInvalidToken {
		t.Errorf("empty Box Rotate: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	want, _ := base64.URLEncoding.DecodeString(specKey)
	std := base64.StdEncoding.EncodeToString(want)
	for name, s := range map[string]string{
		"urlsafe padded":    specKey,
		"urlsafe unpadded":  strings.TrimRight(specKey, "="),
		"standard padded":   std,
		"standard unpadded": strings.TrimRight(std, "="),
		"surrounding space": " \t" + specKey + "\n",
	} {
		k, err := ParseKey(s)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if encryptParts(k, nil, 0, make([]byte, 16)) != encryptParts(keyFromBytes(want), nil, 0, make([]byte, 16)) {
			t.Errorf("%s: wrong key material", name)
		}
	}

	secretish := "c2VjcmV0LWtleS1tYXRlcmlhbC1zaG91bGQtbm90LWxlYWs" // 35 bytes
	for name, s := range map[string]string{
		"empty":           "",
		"blank":           "   ",
		"31 bytes":        base64.URLEncoding.EncodeToString(want[:31]),
		"33 bytes":        base64.URLEncoding.EncodeToString(append(bytes.Clone(want), 1)),
		"35 bytes":        secretish,
		"bad character":   specKey[:10] + "!" + specKey[11:],
		"inner space":     specKey[:10] + " " + specKey[10:],
		"inner newline":   specKey[:10] + "\n" + specKey[10:],
		"two paddings":    specKey + "=",
		"padding inside":  specKey[:20] + "=" + specKey[20:],
		"hex":             fmt.Sprintf("%x", want),
		"mixed alphabets": "+" + specKey[1:21] + "-" + specKey[22:], // fine per character, but 'c'→'+' changes bytes
	} {
		k, err := ParseKey(s)
		if name == "mixed alphabets" {
			// Python's urlsafe_b64decode accepts both alphabets at once; so do we.
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted as %v", name, k)
			continue
		}
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: %v is not ErrInvalidKey", name, err)
		}
		if len(s) > 8 && strings.Contains(err.Error(), strings.TrimSpace(s)[:8]) {
			t.Errorf("%s: error %q echoes the key", name, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	box, err := ParseKeys(" " + newKey + " ,\t" + oldKey + "\n")
	if err != nil || box.Len() != 2 {
		t.Fatalf("ParseKeys: %v, %d keys", err, box.Len())
	}
	tok := encrypt(t, box, []byte("x"), t0)
	if _, err := mustBox(t, newKey).Decrypt(tok, 0, t0); err != nil {
		t.Errorf("first key does not encrypt: %v", err)
	}
	if b := mustBox(t, specKey); b.Len() != 1 {
		t.Errorf("one key: Len %d", b.Len())
	}
	for name, c := range map[string]struct{ list, wantMsg string }{
		"empty":          {"", "no keys"},
		"blank":          {" \n ", "no keys"},
		"trailing comma": {newKey + ",", "entry 2 of 2: empty"},
		"double comma":   {newKey + ",," + oldKey, "entry 2 of 3: empty"},
		"bad second key": {newKey + "," + oldKey[:40], "entry 2 of 2"},
		"bad first key":  {"not-a-key," + oldKey, "entry 1 of 2"},
	} {
		_, err := ParseKeys(c.list)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("%s: error %q, want ErrInvalidKey mentioning %q", name, err, c.wantMsg)
		}
		for _, k := range []string{newKey[:12], oldKey[:12], "not-a-key"} {
			if strings.Contains(err.Error(), k) {
				t.Errorf("%s: error %q echoes a key", name, err)
			}
		}
	}
}

func TestNewBox(t *testing.T) {
	a, _ := ParseKey(newKey)
	b, _ := ParseKey(oldKey)
	box, err := NewBox(a, b)
	if err != nil || box.Len() != 2 {
		t.Fatalf("NewBox: %v", err)
	}
	tok := encrypt(t, mustBox(t, oldKey), []byte("x"), t0)
	if _, err := box.Decrypt(tok, 0, t0); err != nil {
		t.Errorf("older key not tried: %v", err)
	}
	if _, err := NewBox(Key{}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("zero primary Key: %v", err)
	}
	if _, err := NewBox(a, b, Key{}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("zero older Key: %v", err)
	}
}

func TestGenerateKey(t *testing.T) {
	s, err := GenerateKey(&counter{})
	if err != nil {
		t.Fatal(err)
	}
	if s != oldKey { // bytes 0..31
		t.Errorf("GenerateKey = %s, want %s", s, oldKey)
	}
	r1, _ := GenerateKey(nil)
	r2, _ := GenerateKey(nil)
	if len(r1) != 44 || !strings.HasSuffix(r1, "=") || r1 == r2 {
		t.Errorf("random keys %q, %q", r1, r2)
	}
	if _, err := ParseKey(r1); err != nil {
		t.Errorf("generated key does not parse: %v", err)
	}
	if _, err := GenerateKey(failingReader{}); err == nil {
		t.Error("GenerateKey with a failing reader succeeded")
	}
	if _, err := GenerateKey(strings.NewReader("too short")); err == nil {
		t.Error("GenerateKey with a short reader succeeded")
	}
}

func TestNothingSecretPrints(t *testing.T) {
	k, _ := ParseKey(oldKey)
	box := mustBox(t, oldKey+","+newKey)
	type holder struct {
		key Key
		box *Box
		Key Key
	}
	h := holder{key: k, box: box, Key: k}
	raw, _ := base64.URLEncoding.DecodeString(oldKey)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d", "%T", "%p", "%t", "%08.3f"} {
		for _, v := range []any{k, &k, box, *box, h, &h, []Key{k}} {
			out := fmt.Sprintf(verb, v)
			// The signing half is bytes 0..15: 00 01 02 ... in any rendering.
			for _, leak := range []string{fmt.Sprintf("%x", raw[:8]), fmt.Sprintf("%X", raw[:8]), "[0 1 2 3 4 5 6 7", "0x0, 0x1, 0x2", oldKey[:12]} {
				if strings.Contains(out, leak) {
					t.Errorf("fmt %s of %T prints key material: %s", verb, v, out)
				}
			}
		}
	}
	if got := fmt.Sprint(box); got != "fernet.Box(2 keys)" {
		t.Errorf("Box prints %q", got)
	}
	if got := k.String(); got != "fernet.Key(redacted)" {
		t.Errorf("Key prints %q", got)
	}
}

func TestErrorsAreOpaque(t *testing.T) {
	box := mustBox(t, specKey)
	tok := encrypt(t, box, []byte("plaintext"), t0)
	raw, _ := base64.URLEncoding.DecodeString(tok)
	raw[len(raw)-1] ^= 1
	var errs []error
	for _, s := range []string{"", "%%%", tok[:30], base64.URLEncoding.EncodeToString(raw)} {
		_, err := box.Decrypt(s, 0, t0)
		errs = append(errs, err)
	}
	_, err := mustBox(t, newKey).Decrypt(tok, 0, t0)
	errs = append(errs, err)
	_, err = box.Decrypt(tok, time.Second, t0.Add(time.Hour))
	errs = append(errs, err)
	for i, err := range errs {
		if err != ErrInvalidToken {
			t.Errorf("case %d: %v is not ErrInvalidToken itself", i, err)
		}
	}
}

func TestSealer(t *testing.T) {
	// The method set of authn.SecretBox.
	var _ interface {
		Encrypt(plaintext []byte) (string, error)
		Decrypt(token string) ([]byte, error)
	} = Sealer{}

	box := mustBox(t, specKey)
	s := Sealer{Box: box, Now: func() time.Time { return t0 }, Rand: &counter{}}
	tok, err := s.Encrypt([]byte("uid:SECRET"))
	if err != nil {
		t.Fatal(err)
	}
	_, ts, _ := decodeToken(tok)
	if int64(ts) != t0.Unix() {
		t.Errorf("Sealer ignored its clock")
	}
	// Far in the future and far in the past alike: at rest, no expiry.
	if got, err := s.Decrypt(tok); err != nil || string(got) != "uid:SECRET" {
		t.Errorf("Decrypt = %q, %v", got, err)
	}
	def := Sealer{Box: box}
	tok2, err := def.Encrypt([]byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := def.Decrypt(tok2); err != nil {
		t.Error(err)
	}
	if _, err := (Sealer{}).Encrypt([]byte("y")); err == nil {
		t.Error("Sealer without a Box encrypted")
	}
}

func TestConcurrentUse(t *testing.T) {
	box := mustBox(t, newKey+","+oldKey)
	old := encrypt(t, mustBox(t, oldKey), []byte("old"), t0)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				pt := fmt.Appendf(nil, "%d/%d", i, j)
				tok, err := box.Encrypt(pt, t0, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if got, err := box.Decrypt(tok, time.Minute, t0); err != nil || !bytes.Equal(got, pt) {
					t.Errorf("Decrypt = %q, %v", got, err)
					return
				}
				if _, err := box.Rotate(old, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func FuzzDecrypt(f *testing.F) {
	box := mustBox(f, specKey)
	tok, _ := box.Encrypt([]byte("hello"), t0, &counter{})
	f.Add(tok)
	f.Add("")
	f.Add("gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==")
	f.Add(tok[:len(tok)-4])
	f.Fuzz(func(t *testing.T, s string) {
		got, err := box.Decrypt(s, time.Minute, t0)
		if err != nil && err != ErrInvalidToken {
			t.Fatalf("error %v", err)
		}
		if err == nil {
			// Only a token of this key decrypts, and it re-encodes to itself.
			raw, _, ok := decodeToken(s)
			if !ok || base64.URLEncoding.EncodeToString(raw) != s || got == nil {
				t.Fatalf("accepted a non-canonical token %q", s)
			}
		}
	})
}

// cbcEncrypt encrypts whole blocks without padding, to build badly padded tokens.
func cbcEncrypt(k Key, iv, dst, src []byte) {
	prev := bytes.Clone(iv)
	for i := 0; i < len(src); i += 16 {
		var x [16]byte
		for j := range 16 {
			x[j] = src[i+j] ^ prev[j]
		}
		k.block().Encrypt(dst[i:i+16], x[:])
		prev = dst[i : i+16]
	}
}
