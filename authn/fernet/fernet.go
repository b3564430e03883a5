// Package fernet owns Fernet tokens (github.com/fernet/spec, version 0x80) and their keys,
// interchangeable with Python's cryptography.fernet.Fernet and MultiFernet.
package fernet

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"
)

// MaxClockSkew is how far in the future a token's timestamp may lie when Decrypt is given a
// TTL (the spec's and Python's allowance for clocks that disagree).
const MaxClockSkew = 60 * time.Second

// KeySize is the length of a decoded key: 16 bytes of HMAC-SHA256 signing key, then 16
// bytes of AES-128 encryption key.
const KeySize = 32

const (
	version     = 0x80
	tsLen       = 8
	ivLen       = aes.BlockSize
	macLen      = sha256.Size
	headerLen   = 1 + tsLen + ivLen
	minTokenLen = headerLen + aes.BlockSize + macLen // PKCS7 always adds at least one block
	maxSkewSecs = uint64(MaxClockSkew / time.Second)
	redactedKey = "fernet.Key(redacted)"
)

// ErrInvalidToken is the one error Decrypt and Rotate return for a token that does not
// decrypt under any key: malformed, truncated, tampered with, made with another key, badly
// padded, expired or stamped too far in the future. It says nothing about which.
var ErrInvalidToken = errors.New("fernet: invalid token")

// ErrInvalidKey is wrapped by every error of ParseKey, ParseKeys and NewBox.
var ErrInvalidKey = errors.New("fernet: invalid key")

var (
	errNoKeys      = errors.New("fernet: the box has no keys")
	errNegativeTTL = errors.New("fernet: negative ttl")
	errBeforeEpoch = errors.New("fernet: cannot stamp a token with a time before 1970")
)

// Key is one parsed Fernet key. Its zero value is not a key.
//
// Printing a Key with fmt, with any verb and even as an unexported field of another
// struct, shows no key material: the key lives only inside closures, which fmt prints as
// addresses (a pointer field would be dereferenced by fmt's bad-verb path).
type Key struct {
	mac   func() hash.Hash    // a new HMAC-SHA256 under the signing key; nil in the zero Key
	block func() cipher.Block // AES-128 under the encryption key
}

// ParseKey parses a key in the form Fernet.generate_key() prints: 32 bytes in base64url with
// padding. It also accepts the key without padding and in the standard base64 alphabet
// ('+' and '/'), and ignores surrounding white space. The error never repeats the key.
func ParseKey(s string) (Key, error) {
	raw, err := decodeKey(strings.TrimSpace(s))
	if err != nil {
		return Key{}, fmt.Errorf("%w: %s", ErrInvalidKey, err)
	}
	return keyFromBytes(raw), nil
}

func decodeKey(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty")
	}
	body := strings.TrimRight(s, "=")
	if pad := len(s) - len(body); pad != 0 && pad != (4-len(body)%4)%4 {
		return nil, errors.New("wrong base64 padding")
	}
	buf := make([]byte, len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '+':
			c = '-'
		case c == '/':
			c = '_'
		case !isURLAlphabet(c):
			return nil, errors.New("not base64 text")
		}
		buf[i] = c
	}
	// Not Strict: like Python, ignore non-zero bits after the last byte.
	raw := make([]byte, base64.RawURLEncoding.DecodedLen(len(buf)))
	n, err := base64.RawURLEncoding.Decode(raw, buf)
	if err != nil {
		return nil, errors.New("not base64 text")
	}
	if n != KeySize {
		return nil, fmt.Errorf("decodes to %d bytes, want %d", n, KeySize)
	}
	return raw[:n], nil
}

func isURLAlphabet(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func keyFromBytes(raw []byte) Key {
	signing := bytes.Clone(raw[:16])
	block, err := aes.NewCipher(raw[16:KeySize])
	if err != nil {
		panic("fernet: aes.NewCipher rejected a 16-byte key") // cannot happen
	}
	return Key{
		mac:   func() hash.Hash { return hmac.New(sha256.New, signing) },
		block: func() cipher.Block { return block },
	}
}

// String returns a placeholder: a Key never prints its material.
func (k Key) String() string { return redactedKey }

// GoString returns the same placeholder as String.
func (k Key) GoString() string { return redactedKey }

// Format writes the placeholder for every verb, so %v, %+v, %#v, %x and friends cannot leak
// the key.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redactedKey) }

// GenerateKey returns a new random key encoded as Python's Fernet.generate_key() does
// (base64url with padding, 44 characters). A nil r means crypto/rand.
func GenerateKey(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var raw [KeySize]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("fernet: reading random key bytes: %w", err)
	}
	return base64.URLEncoding.EncodeToString(raw[:]), nil
}

// Box encrypts with its first key and decrypts with any of its keys (Python's MultiFernet),
// so a key is rotated by putting the new key first, keeping the old one until every token
// has been re-encrypted (Rotate), then dropping it. Clock and randomness are arguments of
// its methods, never globals. It is safe for concurrent use.
type Box struct {
	keys []Key
}

// NewBox returns a Box that encrypts with primary and decrypts with primary, then each of
// older in order.
func NewBox(primary Key, older ...Key) (*Box, error) {
	keys := append([]Key{primary}, older...)
	for i, k := range keys {
		if k.mac == nil {
			return nil, fmt.Errorf("%w: key %d of %d is the zero Key", ErrInvalidKey, i+1, len(keys))
		}
	}
	return &Box{keys: keys}, nil
}

// ParseKeys parses a comma-separated list of keys, each in a form ParseKey accepts, into a
// Box whose first key encrypts. White space around each key is ignored; an empty entry is an
// error. Errors name an entry by position, never by content.
func ParseKeys(list string) (*Box, error) {
	parts := strings.Split(list, ",")
	if strings.TrimSpace(list) == "" {
		return nil, fmt.Errorf("%w: no keys given", ErrInvalidKey)
	}
	keys := make([]Key, 0, len(parts))
	for i, p := range parts {
		raw, err := decodeKey(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d of %d: %s", ErrInvalidKey, i+1, len(parts), err)
		}
		keys = append(keys, keyFromBytes(raw))
	}
	return &Box{keys: keys}, nil
}

// Len returns how many keys the box holds.
func (b *Box) Len() int {
	if b == nil {
		return 0
	}
	return len(b.keys)
}

// String describes the box without its keys.
func (b *Box) String() string { return fmt.Sprintf("fernet.Box(%d keys)", b.Len()) }

// Format writes String for every verb, so no verb prints key material.
func (b *Box) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, b.String()) }

// Encrypt returns a token of plaintext under the box's first key, stamped with now
// (truncated to the second) and with a fresh IV read from r (nil means crypto/rand).
func (b *Box) Encrypt(plaintext []byte, now time.Time, r io.Reader) (string, error) {
	if b.Len() == 0 {
		return "", errNoKeys
	}
	sec := now.Unix()
	if sec < 0 {
		return "", errBeforeEpoch
	}
	return b.seal(plaintext, uint64(sec), r)
}

func (b *Box) seal(plaintext []byte, ts uint64, r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var iv [ivLen]byte
	if _, err := io.ReadFull(r, iv[:]); err != nil {
		return "", fmt.Errorf("fernet: reading the IV: %w", err)
	}
	return encryptParts(b.keys[0], plaintext, ts, iv[:]), nil
}

// encryptParts builds the token: version ‖ timestamp ‖ IV ‖ AES-128-CBC(PKCS7(plaintext)) ‖
// HMAC-SHA256 of everything before it, base64url with padding.
func encryptParts(k Key, plaintext []byte, ts uint64, iv []byte) string {
	padLen := aes.BlockSize - len(plaintext)%aes.BlockSize
	ctLen := len(plaintext) + padLen
	buf := make([]byte, headerLen+ctLen, headerLen+ctLen+macLen)
	buf[0] = version
	binary.BigEndian.PutUint64(buf[1:], ts)
	copy(buf[1+tsLen:], iv)
	ct := buf[headerLen:]
	copy(ct, plaintext)
	for i := len(plaintext); i < ctLen; i++ {
		ct[i] = byte(padLen)
	}
	cipher.NewCBCEncrypter(k.block(), iv).CryptBlocks(ct, ct)
	buf = append(buf, k.sign(buf)...)
	return base64.URLEncoding.EncodeToString(buf)
}

func (k Key) sign(msg []byte) []byte {
	h := k.mac()
	h.Write(msg)
	return h.Sum(nil)
}

// Decrypt returns the plaintext of token, trying each key of the box in order.
//
// With ttl > 0 the token must be no older than ttl at now and its timestamp no more than
// MaxClockSkew after now, both counted in whole seconds as Python's decrypt_at_time does.
// With ttl == 0 the timestamp is not checked at all (Python's ttl=None): right for data at
// rest, whose token time is when it was written. A negative ttl is an error.
//
// The HMAC is checked, in constant time, before anything is decrypted. Every failure of
// the token itself is ErrInvalidToken.
func (b *Box) Decrypt(token string, ttl time.Duration, now time.Time) ([]byte, error) {
	if b.Len() == 0 {
		return nil, errNoKeys
	}
	if ttl < 0 {
		return nil, errNegativeTTL
	}
	raw, ts, ok := decodeToken(token)
	if !ok {
		return nil, ErrInvalidToken
	}
	for _, k := range b.keys {
		if !k.verify(raw) {
			continue
		}
		if ttl > 0 && !fresh(ts, ttl, now) {
			return nil, ErrInvalidToken // the time does not depend on the key
		}
		if plaintext, ok := k.open(raw); ok {
			return plaintext, nil
		}
	}
	return nil, ErrInvalidToken
}

// Rotate re-encrypts token under the box's first key with a fresh IV read from r (nil
// means crypto/rand). Like Python's MultiFernet.rotate it keeps the token's original
// timestamp, so rotating never extends a token's life, and checks no TTL.
func (b *Box) Rotate(token string, r io.Reader) (string, error) {
	if b.Len() == 0 {
		return "", errNoKeys
	}
	raw, ts, ok := decodeToken(token)
	if !ok {
		return "", ErrInvalidToken
	}
	for _, k := range b.keys {
		if !k.verify(raw) {
			continue
		}
		if plaintext, ok := k.open(raw); ok {
			return b.seal(plaintext, ts, r)
		}
	}
	return "", ErrInvalidToken
}

// decodeToken decodes a token and checks its framing: canonical base64url with padding,
// version 0x80, and room for a timestamp, an IV, whole cipher blocks (at least one) and an
// HMAC. It returns the raw token and its timestamp.
func decodeToken(token string) (raw []byte, ts uint64, ok bool) {
	// The encoding/base64 decoders skip '\r' and '\n'; a token has neither.
	if strings.ContainsAny(token, "\r\n") {
		return nil, 0, false
	}
	raw, err := base64.URLEncoding.Strict().DecodeString(token)
	if err != nil {
		return nil, 0, false
	}
	if len(raw) < minTokenLen || (len(raw)-headerLen-macLen)%aes.BlockSize != 0 || raw[0] != version {
		return nil, 0, false
	}
	return raw, binary.BigEndian.Uint64(raw[1:]), true
}

// verify reports, in constant time, whether the HMAC at the end of raw is right under k.
func (k Key) verify(raw []byte) bool {
	body := raw[:len(raw)-macLen]
	return hmac.Equal(k.sign(body), raw[len(raw)-macLen:])
}

// open decrypts an authenticated raw token and strips its PKCS7 padding.
func (k Key) open(raw []byte) ([]byte, bool) {
	iv := raw[1+tsLen : headerLen]
	ct := raw[headerLen : len(raw)-macLen]
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(k.block(), iv).CryptBlocks(pt, ct)
	return unpad(pt)
}

// unpad strips PKCS7 padding. The HMAC has been checked already, so there is no padding
// oracle to guard against; it is constant-time over the last block anyway.
func unpad(b []byte) ([]byte, bool) {
	n := len(b)
	if n == 0 || n%aes.BlockSize != 0 {
		return nil, false
	}
	p := int(b[n-1])
	good := subtle.ConstantTimeLessOrEq(1, p) & subtle.ConstantTimeLessOrEq(p, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, p)
		same := subtle.ConstantTimeByteEq(b[n-i], byte(p))
		good &= (inPad ^ 1) | same
	}
	if good != 1 {
		return nil, false
	}
	return b[:n-p], true
}

// fresh reports whether a token stamped ts is valid at now under ttl: not more than ttl old
// and not more than MaxClockSkew ahead, in whole seconds (timestamp + ttl >= now and
// now + skew >= timestamp, as in Python). The arithmetic cannot overflow.
func fresh(ts uint64, ttl time.Duration, now time.Time) bool {
	nowSec := now.Unix()
	if nowSec < 0 {
		return false
	}
	n := uint64(nowSec)
	ttlSec := uint64(ttl / time.Second)
	if ts > n && ts-n > maxSkewSecs {
		return false // too far in the future
	}
	if n > ts && n-ts > ttlSec {
		return false // expired
	}
	return true
}

// Sealer binds a Box to a clock and a randomness source for callers that encrypt "now" and
// decrypt without a TTL, such as TOTP secrets at rest. Its method set matches
// authn.SecretBox.
type Sealer struct {
	Box  *Box
	Now  func() time.Time // nil means time.Now
	Rand io.Reader        // nil means crypto/rand
}

// Encrypt encrypts plaintext under the box's first key, stamped with s.Now().
func (s Sealer) Encrypt(plaintext []byte) (string, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return s.Box.Encrypt(plaintext, now(), s.Rand)
}

// Decrypt decrypts token under any of the box's keys, with no expiry.
func (s Sealer) Decrypt(token string) ([]byte, error) {
	return s.Box.Decrypt(token, 0, time.Time{})
}
