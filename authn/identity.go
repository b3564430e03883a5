package authn

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/text/unicode/norm"
)

// NormalizeEmail trims, NFKC-normalises and lower-cases an email, the one form used for
// look-up, storage, lockout and rate-limit keys.
func NormalizeEmail(s string) string {
	return strings.ToLower(norm.NFKC.String(strings.TrimSpace(s)))
}

// errEmailFormat explains a refused email; it never repeats the input.
var errEmailFormat = errors.New("must be an email address such as name@example.com")

// checkEmail accepts a normalised email of the usual local@domain shape. It is
// deliberately loose (RFC 5322 allows far more than anyone types) but refuses what would
// make a poor key: spaces, control characters, a missing part, more than 254 bytes.
func checkEmail(email string) error {
	if len(email) > 254 {
		return errors.New("must be at most 254 bytes")
	}
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") ||
		strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return errEmailFormat
	}
	for _, r := range email {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return errEmailFormat
		}
	}
	return nil
}

// Fingerprint is the hex SHA-256 of the headers that identify a device: User-Agent,
// Accept-Language and the optional X-Device-Fingerprint. A refresh from another
// fingerprint is treated as a stolen refresh token.
func Fingerprint(h http.Header) string {
	sum := sha256.New()
	for _, k := range []string{"User-Agent", "Accept-Language", "X-Device-Fingerprint"} {
		io.WriteString(sum, strings.Join(h.Values(k), ","))
		sum.Write([]byte{0})
	}
	return hex.EncodeToString(sum.Sum(nil))
}

// newStamp returns a UUIDv7 whose timestamp is now (the injected clock), so the stamp also
// records when it was rotated: a refresh token issued before that instant is refused.
func newStamp(now time.Time, rnd io.Reader) (string, error) {
	var u uuid.UUID
	if _, err := io.ReadFull(rnd, u[6:]); err != nil {
		return "", err
	}
	ms := uint64(now.UnixMilli())
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	u[6] = 0x70 | (u[6] & 0x0f)
	u[8] = 0x80 | (u[8] & 0x3f)
	return u.String(), nil
}

// checkText accepts free text a user names things with (full name, device name): at most
// maxRunes characters and no control characters (NUL would break PostgreSQL text).
func checkText(s string, maxRunes int) error {
	if utf8.RuneCountInString(s) > maxRunes {
		return fmt.Errorf("must be at most %d characters", maxRunes)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return errors.New("must not contain control characters")
		}
	}
	return nil
}

// cleanHeader makes a request header fit to store and log: invalid UTF-8 replaced,
// control characters dropped, at most maxBytes cut on a character boundary. Go's server
// passes header bytes through, and PostgreSQL refuses invalid UTF-8 and NUL in text.
func cleanHeader(s string, maxBytes int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// newRefreshToken returns 32 random bytes as base64url, and the SHA-256 that is stored.
func newRefreshToken(rnd io.Reader) (token string, hash []byte, err error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return "", nil, err
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// newID returns a UUIDv7 primary key.
func newID() string { return uuid.Must(uuid.NewV7()).String() }
