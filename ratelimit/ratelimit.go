// Package ratelimit owns authd's token buckets: the limits, the Redis and in-process
// limiters that take from them, and the HTTP guard that answers 429 and 503 from them.
//
// A bucket holds up to Burst tokens and refills evenly, Burst tokens per Period; each
// request takes one token or is refused. A bucket is named by a class (one endpoint family
// and what it is keyed by, such as "login-ip") and an id (the client address bucket, the
// normalised email, the user id). Both storage limiters keep the same semantics, proven by
// one behavioural suite: the Redis limiter for any number of replicas, the in-process one
// for a single replica when REDIS_URL is unset. Leases, for the check path, keeps local
// reserves of Redis tokens: it never hands out more than a bucket holds, but may refuse a
// little early (see Leases).
//
// The classes authd limits, the variables that configure them and their defaults
// (DESIGN §6) are listed by Settings:
//
//	class          variable                  default  fails
//	login-ip       RATE_LIMIT_LOGIN_IP       20/1m    closed
//	login-email    RATE_LIMIT_LOGIN_EMAIL    10/1m    closed
//	verify-mfa-ip  RATE_LIMIT_VERIFY_MFA_IP  10/1m    closed
//	register-ip    RATE_LIMIT_REGISTER_IP    10/1h    closed
//	refresh-ip     RATE_LIMIT_REFRESH_IP     60/1m    closed
//	api-user       RATE_LIMIT_API_USER       120/1m   open
//	check-user     RATE_LIMIT_CHECK_USER     50/1s    closed (open with CHECK_FAIL_OPEN_RATE_LIMIT=true)
//	check-ip       RATE_LIMIT_CHECK_IP       20/1s    closed (open with CHECK_FAIL_OPEN_RATE_LIMIT=true)
//
// "Fails closed" means that when the limiter cannot answer (Redis down or slower than its
// timeout) the request is refused with 503 rate_limiter_unavailable; "open" means it passes
// and a warning is logged.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The classes authd limits; see the package documentation for their defaults.
const (
	ClassLoginIP     = "login-ip"
	ClassLoginEmail  = "login-email"
	ClassVerifyMFAIP = "verify-mfa-ip"
	ClassRegisterIP  = "register-ip"
	ClassRefreshIP   = "refresh-ip"
	ClassAPIUser     = "api-user"
	ClassCheckUser   = "check-user"
	ClassCheckIP     = "check-ip"
)

// Setting ties a class to the variable that configures it, its default, and whether it
// fails closed by default.
type Setting struct {
	Class      string
	Variable   string
	Default    string // in ParseLimit's format
	FailClosed bool
}

// Settings lists every class authd limits, in the order of DESIGN §6. The check-path
// classes fail closed unless CHECK_FAIL_OPEN_RATE_LIMIT=true; the caller applies that flag.
func Settings() []Setting {
	return []Setting{
		{ClassLoginIP, "RATE_LIMIT_LOGIN_IP", "20/1m", true},
		{ClassLoginEmail, "RATE_LIMIT_LOGIN_EMAIL", "10/1m", true},
		{ClassVerifyMFAIP, "RATE_LIMIT_VERIFY_MFA_IP", "10/1m", true},
		{ClassRegisterIP, "RATE_LIMIT_REGISTER_IP", "10/1h", true},
		{ClassRefreshIP, "RATE_LIMIT_REFRESH_IP", "60/1m", true},
		{ClassAPIUser, "RATE_LIMIT_API_USER", "120/1m", false},
		{ClassCheckUser, "RATE_LIMIT_CHECK_USER", "50/1s", true},
		{ClassCheckIP, "RATE_LIMIT_CHECK_IP", "20/1s", true},
	}
}

// Limit is a bucket of Burst tokens refilled evenly over Period. The zero Limit is off:
// every take is allowed and nothing is stored.
type Limit struct {
	Burst  int
	Period time.Duration
}

// Bounds on a limit, so that the arithmetic in both limiters stays exact enough and a typo
// such as "20/1ns" is refused rather than obeyed.
const (
	MaxBurst  = 1_000_000_000
	MinPeriod = time.Millisecond
	MaxPeriod = 366 * 24 * time.Hour
)

// Off reports whether l is turned off.
func (l Limit) Off() bool { return l.Burst == 0 }

// Validate reports whether l is off or within the bounds.
func (l Limit) Validate() error {
	switch {
	case l.Burst == 0:
		return nil
	case l.Burst < 0 || l.Burst > MaxBurst:
		return fmt.Errorf("ratelimit: burst %d is not between 1 and %d", l.Burst, MaxBurst)
	case l.Period < MinPeriod || l.Period > MaxPeriod:
		return fmt.Errorf("ratelimit: period %v is not between %v and %v", l.Period, MinPeriod, MaxPeriod)
	}
	return nil
}

// String formats l as ParseLimit reads it: "20/1m", "10/1h", "50/1s", "0" when off.
func (l Limit) String() string {
	if l.Off() {
		return "0"
	}
	return strconv.Itoa(l.Burst) + "/" + formatPeriod(l.Period)
}

func formatPeriod(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// ParseLimit reads a limit written N/DURATION: a bucket of N requests refilled evenly over
// DURATION, a Go duration ("20/1m", "10/1h", "5/500ms"; a bare unit means one of it, so
// "20/m" is "20/1m"). "0" (or "0/…") turns the limit off.
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return Limit{}, nil
	}
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return Limit{}, fmt.Errorf("ratelimit: limit %q is not N/DURATION (such as 20/1m) or 0", s)
	}
	burst, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || burst < 0 {
		return Limit{}, fmt.Errorf("ratelimit: limit %q: %q is not a whole number of requests", s, n)
	}
	d = strings.TrimSpace(d)
	if d != "" && ('a' <= d[0] && d[0] <= 'z' || 'A' <= d[0] && d[0] <= 'Z') {
		d = "1" + d
	}
	period, err := time.ParseDuration(d)
	if err != nil {
		return Limit{}, fmt.Errorf("ratelimit: limit %q: %q is not a duration such as 1s, 1m or 1h", s, d)
	}
	if burst == 0 {
		return Limit{}, nil
	}
	l := Limit{Burst: burst, Period: period}
	if err := l.Validate(); err != nil {
		return Limit{}, fmt.Errorf("ratelimit: limit %q: %s", s, strings.TrimPrefix(err.Error(), "ratelimit: "))
	}
	return l, nil
}

// Result is the state of a bucket after one take.
type Result struct {
	Allowed bool
	// Remaining is the whole number of tokens left after this take.
	Remaining int
	// RetryAfter, when the take was refused, is how long until one token is back.
	RetryAfter time.Duration
	// Reset is how long until the bucket is full again.
	Reset time.Duration
}

// Limiter takes one token from the bucket (class, id) that holds at most l.Burst tokens
// and refills l.Burst per l.Period.
//
// Contract, kept by every implementation and proven by the behavioural suite:
//   - Take is atomic: concurrent takes from one bucket never hand out more than its
//     tokens, wherever they run.
//   - A bucket nobody has taken from is full; a refused take spends nothing.
//   - An off limit (l.Off()) is allowed without touching any state.
//   - class must be a ValidClass; id may be any string (user input such as an email):
//     it is hashed when it could affect the storage key's shape, so ids never collide
//     across classes or with each other.
//   - An error means the limiter could not decide (ErrUnavailable: storage down or slower
//     than the timeout; or a bad class or limit). The caller chooses to fail open or closed.
type Limiter interface {
	Take(ctx context.Context, class, id string, l Limit) (Result, error)
}

// Reserver is a Limiter that can take several tokens in one step; Leases keeps local
// reserves with it.
type Reserver interface {
	Limiter
	// TakeN takes up to n tokens (n >= 1) from the bucket: as many as it holds, or none
	// when it holds less than one. got is how many; res is what Take would have answered
	// with got taken in its place (Allowed when got > 0; Remaining after the take).
	TakeN(ctx context.Context, class, id string, l Limit, n int) (got int, res Result, err error)
}

// ErrUnavailable wraps every error a limiter returns because its storage could not
// answer in time.
var ErrUnavailable = errors.New("ratelimit: limiter unavailable")

// ValidClass reports whether class can name a bucket family and a header policy: 1 to 64
// of a-z, 0-9, '-' and '_', starting with a letter or digit.
func ValidClass(class string) bool {
	if class == "" || len(class) > 64 || class[0] == '-' || class[0] == '_' {
		return false
	}
	for i := 0; i < len(class); i++ {
		c := class[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func checkTake(class string, l Limit) error {
	if !ValidClass(class) {
		return fmt.Errorf("ratelimit: invalid class %q", class)
	}
	return l.Validate()
}

// MaxTakeN bounds the tokens one TakeN may ask for.
const MaxTakeN = 1 << 20

func checkTakeN(class string, l Limit, n int) error {
	if n < 1 || n > MaxTakeN {
		return fmt.Errorf("ratelimit: cannot take %d tokens at once (1 to %d)", n, MaxTakeN)
	}
	return checkTake(class, l)
}

// bucketID turns a caller's id into the last part of a storage key. Ids that are plainly
// addresses, prefixes or UUIDs (at most 64 of 0-9 A-Z a-z . : / -) are kept, so an
// operator can read "rl2:login-ip:203.0.113.7"; anything else (emails, anything with
// braces, which Redis Cluster reads as a hash tag, spaces, control bytes, long input) is
// replaced by "~" and 22 base64url characters of its SHA-256, so it cannot shape the key
// and no email is stored in clear. "~" never appears in a kept id, so the two forms
// cannot collide.
func bucketID(id string) string {
	if id != "" && len(id) <= 64 {
		plain := true
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == ':' || c == '/' || c == '-') {
				plain = false
				break
			}
		}
		if plain {
			return id
		}
	}
	sum := sha256.Sum256([]byte(id))
	return "~" + base64.RawURLEncoding.EncodeToString(sum[:16])
}
