package extauthz

import (
	"strings"

	"github.com/authd/authd/jwks"
)

// extract finds the request's token: the Authorization header when there is one, else
// the access cookie. reason is empty when a token was found, else the deny reason.
//
// Rules (PROXIES §2.10): the scheme is Bearer, case-insensitive, followed by one token;
// more than one Authorization value (Envoy joins duplicates with a comma) is refused; a
// present but bad Authorization header never falls back to the cookie; the query string
// is never read; a token over jwks.MaxTokenSize is refused before it is parsed.
func (c *Checker) extract(r *Request) (tok, reason string) {
	switch len(r.Authorization) {
	case 0:
	case 1:
		return bearer(r.Authorization[0])
	default:
		return "", ReasonAuthMultiple
	}
	tok, reason = cookieToken(r.Cookies, c.cookie)
	if reason == "" && len(tok) > jwks.MaxTokenSize {
		return "", reasonTokenPrefix + "too_large"
	}
	return tok, reason
}

func bearer(v string) (string, string) {
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if strings.ContainsRune(v, ',') && strings.HasPrefix(strings.ToLower(v), "bearer") {
			return "", ReasonAuthMultiple
		}
		return "", ReasonAuthScheme
	}
	if strings.IndexByte(rest, ',') >= 0 {
		return "", ReasonAuthMultiple
	}
	tok := strings.TrimLeft(rest, " ")
	if len(tok) > jwks.MaxTokenSize {
		return "", reasonTokenPrefix + "too_large"
	}
	if tok == "" || strings.IndexByte(tok, ' ') >= 0 || strings.IndexByte(tok, '\t') >= 0 {
		return "", ReasonAuthMalformed
	}
	return tok, ""
}

// cookieToken finds cookie name in the Cookie header values. Pairs are split on ';' and
// also on ',', because Envoy joins duplicate Cookie lines with a comma (cookie values
// cannot hold either). The same cookie twice with different values is refused: a
// cookie planted from a sibling domain must not choose whose session this is.
func cookieToken(values []string, name string) (tok, reason string) {
	found := false
	for _, line := range values {
		for len(line) > 0 {
			var pair string
			if i := strings.IndexAny(line, ";,"); i >= 0 {
				pair, line = line[:i], line[i+1:]
			} else {
				pair, line = line, ""
			}
			k, v, ok := strings.Cut(pair, "=")
			if !ok || strings.TrimSpace(k) != name {
				continue
			}
			v = strings.TrimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			if v == "" {
				continue
			}
			if found && v != tok {
				return "", ReasonCookieAmbiguous
			}
			tok, found = v, true
		}
	}
	if !found {
		return "", ReasonTokenMissing
	}
	return tok, ""
}

// hasCookie reports whether the access cookie is present (with a value).
func hasCookie(values []string, name string) bool {
	if len(values) == 0 {
		return false
	}
	tok, reason := cookieToken(values, name)
	return tok != "" || reason == ReasonCookieAmbiguous
}

// validCookieName accepts an RFC 6265 token.
func validCookieName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
