package extauthz

import (
	"errors"
	"fmt"
	"net/textproto"
)

// HeaderNames are the identity headers sent upstream (X-User-Id, X-User-Email,
// X-Session-Id, X-Auth-MFA by default).
type HeaderNames struct {
	UserID    string
	Email     string
	SessionID string
	MFA       string // "true" when the login used a second factor, else "false"
}

// DefaultHeaderNames are the identity header names of DESIGN §5.
func DefaultHeaderNames() HeaderNames {
	return HeaderNames{UserID: "X-User-Id", Email: "X-User-Email", SessionID: "X-Session-Id", MFA: "X-Auth-MFA"}
}

// MaxHeaderValue bounds each identity header value; a longer value (an email) is not
// sent and the header is removed instead.
const MaxHeaderValue = 1 << 10

// headerValue reports whether v may be sent as an identity header: 1 to MaxHeaderValue
// bytes of printable ASCII (so no CR, LF or NUL).
func headerValue(v string) bool {
	return v != "" && len(v) <= MaxHeaderValue && printable(v)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// canonicalNames checks the identity header names and spells them canonically.
func canonicalNames(h HeaderNames) (HeaderNames, error) {
	out := HeaderNames{}
	seen := map[string]bool{}
	var errs []error
	for _, f := range []struct {
		dst  *string
		name string
		what string
	}{
		{&out.UserID, h.UserID, "user id"},
		{&out.Email, h.Email, "email"},
		{&out.SessionID, h.SessionID, "session id"},
		{&out.MFA, h.MFA, "MFA"},
	} {
		if !validHeaderName(f.name) {
			errs = append(errs, fmt.Errorf("%s header name %q is not a header name", f.what, f.name))
			continue
		}
		n := textproto.CanonicalMIMEHeaderKey(f.name)
		if seen[n] {
			errs = append(errs, fmt.Errorf("header name %q is used twice", n))
		}
		seen[n] = true
		*f.dst = n
	}
	return out, errors.Join(errs...)
}

// validHeaderName accepts letters, digits and '-' only: no underscores, which some
// upstreams fold into dashes.
func validHeaderName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
