package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/problem"
)

// Rule is one kind of bucket an endpoint takes from: its class (which names the policy in
// the RateLimit headers), its limit, and what happens when the limiter cannot answer.
type Rule struct {
	Class string
	Limit Limit
	// FailClosed refuses the request with 503 rate_limiter_unavailable when the limiter
	// fails; otherwise the request passes and a warning is logged.
	FailClosed bool
}

// Bucket is the bucket of r for one request, named by id (a client address bucket from
// clientip, a normalised email, a user id).
func (r Rule) Bucket(id string) Bucket { return Bucket{Rule: r, ID: id} }

// Bucket is one bucket a request takes a token from.
type Bucket struct {
	Rule
	ID string
}

// Outcome is the answer of Guard.Take for one request.
type Outcome struct {
	// Allowed is false when a bucket refused the request.
	Allowed bool
	// RetryAfter, when refused, is how long until the refusing bucket has a token again.
	RetryAfter time.Duration

	policies []Rule  // every enabled bucket's rule, for RateLimit-Policy
	state    *report // the most restrictive bucket that answered, for RateLimit; nil if none did
}

type report struct {
	class  string
	result Result
}

// Header names of draft-ietf-httpapi-ratelimit-headers.
const (
	HeaderPolicy = "RateLimit-Policy"
	HeaderState  = "RateLimit"
)

// SetHeaders sets RateLimit-Policy and RateLimit on h (draft-ietf-httpapi-ratelimit-headers,
// structured-field form): the policy of every enabled limit of the endpoint, and the state
// of the most restrictive bucket that answered, such as
//
//	RateLimit-Policy: "login-ip";q=20;w=60, "login-email";q=10;w=60
//	RateLimit: "login-ip";r=19;t=3
//
// q is the bucket size, w the refill period in seconds, r the whole tokens left, t the
// seconds until the bucket is full again. Retry-After is not set here: problem.Write sets
// it on the 429. RateLimit is left out when no bucket answered (the limiter failed open);
// both are when every limit is off.
func (o Outcome) SetHeaders(h http.Header) {
	if len(o.policies) > 0 {
		var b strings.Builder
		for i, p := range o.policies {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q;q=%d;w=%d", p.Class, p.Limit.Burst, ceilSeconds(p.Limit.Period))
		}
		h.Set(HeaderPolicy, b.String())
	}
	if o.state != nil {
		h.Set(HeaderState, fmt.Sprintf("%q;r=%d;t=%d", o.state.class, o.state.result.Remaining, ceilSeconds(o.state.result.Reset)))
	}
}

// ceilSeconds rounds d up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// GuardOptions configures NewGuard.
type GuardOptions struct {
	// Logger gets fail-open warnings (class and error, never the bucket id); nil discards.
	Logger *slog.Logger
	// Registerer gets the decision metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now paces the fail-open warnings (time.Now if nil).
	Now func() time.Time
}

// Guard takes tokens for requests and turns the outcome into HTTP answers. It is safe for
// concurrent use.
type Guard struct {
	limiter Limiter
	logger  *slog.Logger
	now     func() time.Time

	decisions  *prometheus.CounterVec
	failClosed *prometheus.CounterVec

	mu         sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// warnEvery paces fail-open warnings: while Redis is down every request would log one.
const warnEvery = 10 * time.Second

// NewGuard returns a guard over l.
func NewGuard(l Limiter, opts GuardOptions) (*Guard, error) {
	if l == nil {
		return nil, errors.New("ratelimit: NewGuard needs a limiter")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	g := &Guard{
		limiter: l,
		logger:  opts.Logger,
		now:     opts.Now,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_ratelimit_decisions_total",
			Help: "Rate-limit decisions by class and outcome: allowed, limited, failed_open (limiter error, request passed), failed_closed (limiter error, 503).",
		}, []string{"class", "outcome"}),
		failClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_ratelimit_fail_closed_total",
			Help: "Requests refused with 503 rate_limiter_unavailable because the limiter could not answer.",
		}, []string{"class"}),
	}
	var err error
	if g.decisions, err = register(opts.Registerer, g.decisions); err != nil {
		return nil, err
	}
	if g.failClosed, err = register(opts.Registerer, g.failClosed); err != nil {
		return nil, err
	}
	return g, nil
}

// Take takes one token from each bucket, in order, and stops at the first refusal: list
// the broad buckets first (per client IP before per email), so a flood refused by its IP
// bucket does not drain the buckets of the accounts it targets. Buckets whose limit is off
// are skipped. Tokens taken before a refusal stay spent.
//
// When the limiter fails for a FailClosed bucket, Take returns an error wrapping
// ErrUnavailable and the request must be refused (503 rate_limiter_unavailable) before
// anything is spent or changed. When it fails for another bucket, the bucket is skipped
// and a warning logged. An invalid class or limit is an error whatever FailClosed says.
func (g *Guard) Take(ctx context.Context, buckets ...Bucket) (Outcome, error) {
	o := Outcome{Allowed: true}
	for _, b := range buckets {
		if !b.Limit.Off() {
			o.policies = append(o.policies, b.Rule)
		}
	}
	for _, b := range buckets {
		if b.Limit.Off() {
			continue
		}
		res, err := g.limiter.Take(ctx, b.Class, b.ID, b.Limit)
		switch {
		case err == nil:
		case !errors.Is(err, ErrUnavailable):
			// A bad class or limit is a bug, not an outage: never pass because of it.
			return Outcome{}, fmt.Errorf("ratelimit: invalid rule: %w", err)
		case b.FailClosed:
			g.decisions.WithLabelValues(b.Class, "failed_closed").Inc()
			g.failClosed.WithLabelValues(b.Class).Inc()
			return Outcome{}, fmt.Errorf("ratelimit: %s fails closed: %w", b.Class, err)
		default:
			g.decisions.WithLabelValues(b.Class, "failed_open").Inc()
			g.warnFailOpen(b.Class, err)
			continue
		}
		if res.Allowed {
			g.decisions.WithLabelValues(b.Class, "allowed").Inc()
		} else {
			g.decisions.WithLabelValues(b.Class, "limited").Inc()
		}
		if o.state == nil || moreRestrictive(res, o.state.result) {
			o.state = &report{class: b.Class, result: res}
		}
		if !res.Allowed {
			o.Allowed = false
			o.RetryAfter = res.RetryAfter
			break
		}
	}
	return o, nil
}

// moreRestrictive reports whether a leaves its client less room than b: refused before
// allowed, then fewer tokens left, then longer until full.
func moreRestrictive(a, b Result) bool {
	if a.Allowed != b.Allowed {
		return !a.Allowed
	}
	if a.Remaining != b.Remaining {
		return a.Remaining < b.Remaining
	}
	return a.Reset > b.Reset
}

func (g *Guard) warnFailOpen(class string, err error) {
	g.mu.Lock()
	now := g.now()
	if since := now.Sub(g.lastWarn); !g.lastWarn.IsZero() && since >= 0 && since < warnEvery {
		g.suppressed++
		g.mu.Unlock()
		return
	}
	suppressed := g.suppressed
	g.lastWarn, g.suppressed = now, 0
	g.mu.Unlock()
	g.logger.Warn("rate limiter unavailable; request passed (fail open)",
		"class", class, "error", err.Error(), "suppressed_since_last", suppressed)
}

// Allow takes from the buckets for r and, when the request may go on, sets the RateLimit
// headers on w and returns true. Otherwise it writes the answer and returns false: 429
// rate_limited with Retry-After, 503 rate_limiter_unavailable when a FailClosed bucket's
// limiter was unavailable, or 500 internal for an invalid rule (a bug). Handlers whose buckets need the decoded body (the per-email bucket of
// /login) decode first and call Allow once with every bucket.
func (g *Guard) Allow(w http.ResponseWriter, r *http.Request, buckets ...Bucket) bool {
	o, err := g.Take(r.Context(), buckets...)
	if errors.Is(err, ErrUnavailable) {
		problem.Write(w, problem.New(http.StatusServiceUnavailable, "rate_limiter_unavailable",
			"The rate limiter is unavailable; try again shortly."))
		return false
	}
	if err != nil {
		g.logger.Error("rate limit rule is invalid", "error", err.Error())
		problem.Write(w, problem.New(http.StatusInternalServerError, "internal", "Internal error."))
		return false
	}
	o.SetHeaders(w.Header())
	if !o.Allowed {
		p := problem.New(http.StatusTooManyRequests, "rate_limited", "Too many requests; retry after the time in Retry-After.")
		p.RetryAfter = o.RetryAfter
		problem.Write(w, p)
		return false
	}
	return true
}

// Middleware guards next with the buckets that buckets(r) names for each request, for
// endpoints whose buckets need nothing from the body (per client IP, per user).
func (g *Guard) Middleware(buckets func(r *http.Request) []Bucket) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if g.Allow(w, r, buckets(r)...) {
				next.ServeHTTP(w, r)
			}
		})
	}
}

// RetryAfterSeconds is the Retry-After value for o, for transports that do not write
// through problem.Write (the ext_authz adapters).
func (o Outcome) RetryAfterSeconds() string {
	return strconv.FormatInt(problem.RetryAfterSeconds(o.RetryAfter), 10)
}
