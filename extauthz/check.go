// Package extauthz decides, for every request a reverse proxy forwards, whether it may
// reach the upstream and with which identity headers, and speaks each proxy's dialect:
// Envoy ext_authz over gRPC and HTTP, Traefik and Caddy forward-auth, nginx auth_request.
//
// One decision function, Checker.Check, serves every adapter (DESIGN §5). It takes a
// Request with no transport types in it and returns a Decision, in this order:
//
//  1. Route policy (POLICY_FILE): public, authenticated or mfa. A CORS preflight
//     without credentials passes without identity.
//  2. The token: Authorization: Bearer, else the access cookie. A present but bad
//     Authorization header is a 401 with no fall-back to the cookie; the query string is
//     never read; tokens over 8 KiB are refused unparsed.
//  3. Local verification (jwks), through a cache of verified tokens, so a token seen
//     before is not verified again.
//  4. Session state: the session is live and the security stamp current, read through
//     an in-process cache, Redis and the store, kept fresh by revocation messages.
//     Unreadable state is a 503: the check fails closed.
//  5. Rate limit per user (authenticated) or per client IP (public routes, preflights,
//     failed authentication).
//  6. Identity headers, always set by overwrite or removed, so a client can never
//     supply its own.
//
// Each adapter lives in its own file and only translates.
package extauthz

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/clientip"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/problem"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
)

// Adapter names, the adapter label of metrics and the decision log.
const (
	AdapterEnvoyGRPC   = "envoy-grpc"
	AdapterEnvoyHTTP   = "envoy-http"
	AdapterForwardAuth = "forward-auth"
	AdapterAuthRequest = "auth-request"
	adapterDirect      = "direct" // Request.Adapter left empty
)

var adapters = []string{AdapterEnvoyGRPC, AdapterEnvoyHTTP, AdapterForwardAuth, AdapterAuthRequest, adapterDirect}

// Reasons: the stable label of a decision in metrics and the decision log.
const (
	ReasonOK        = "ok"             // authenticated, allowed with identity
	ReasonPublic    = "public"         // public route, allowed without identity
	ReasonPreflight = "cors_preflight" // CORS preflight, allowed without identity

	ReasonTokenMissing     = "token_missing"           // no Authorization header, no cookie
	ReasonAuthScheme       = "authorization_scheme"    // Authorization is not Bearer
	ReasonAuthMalformed    = "authorization_malformed" // Bearer without a single token
	ReasonAuthMultiple     = "authorization_multiple"  // several Authorization values
	ReasonCookieAmbiguous  = "cookie_ambiguous"        // the access cookie twice, with different values
	ReasonSessionUnknown   = "session_unknown"         // no such session, or not the token's user
	ReasonSessionRevoked   = "session_revoked"
	ReasonSessionExpired   = "session_expired"
	ReasonStampStale       = "stamp_stale" // the user's security stamp rotated
	ReasonMFARequired      = "mfa_required"
	ReasonRateLimited      = "rate_limited"
	ReasonStateUnavailable = "state_unavailable"   // session state could not be read
	ReasonLimiterDown      = "limiter_unavailable" // the rate limiter could not answer
	ReasonBadRequest       = "bad_request"         // the proxy did not send what its adapter needs

	// Token refusals are "token_" + jwks.Reason: token_expired, token_signature, …
	reasonTokenPrefix = "token_"
)

// tokenReasons are the jwks refusal labels, for the pre-resolved metrics.
var tokenReasons = []string{"too_large", "malformed", "forbidden_header", "algorithm", "unknown_key",
	"signature", "wrong_type", "claims", "expired", "not_yet_valid", "error"}

// denial is how a deny reason is answered.
type denial struct {
	status int
	code   string // problem code
	detail string
	// errorParam adds error="invalid_token" to WWW-Authenticate (a token was present).
	errorParam bool
}

// denials maps every deny reason to its answer.
var denials = func() map[string]denial {
	m := map[string]denial{
		ReasonTokenMissing:     {401, "invalid_token", "An access token is required.", false},
		ReasonAuthScheme:       {401, "invalid_token", "The Authorization header must use the Bearer scheme.", false},
		ReasonAuthMalformed:    {401, "invalid_token", "The Authorization header must be Bearer followed by one token.", true},
		ReasonAuthMultiple:     {401, "invalid_token", "The request carries more than one Authorization value.", true},
		ReasonCookieAmbiguous:  {401, "invalid_token", "The request carries the access cookie more than once.", true},
		ReasonSessionUnknown:   {401, "session_revoked", "The token's session does not exist.", true},
		ReasonSessionRevoked:   {401, "session_revoked", "The token's session was revoked.", true},
		ReasonSessionExpired:   {401, "session_revoked", "The token's session has expired.", true},
		ReasonStampStale:       {401, "session_revoked", "The token was issued before the account's credentials changed.", true},
		ReasonMFARequired:      {403, "mfa_required", "This route requires a login with a second factor.", false},
		ReasonRateLimited:      {429, "rate_limited", "Too many requests; retry later.", false},
		ReasonStateUnavailable: {503, "session_state_unavailable", "Session state cannot be read; retry later.", false},
		ReasonLimiterDown:      {503, "rate_limiter_unavailable", "The rate limiter is unavailable; retry later.", false},
		ReasonBadRequest:       {400, "invalid_request", "The proxy did not send the headers this endpoint needs.", false},
	}
	for _, r := range tokenReasons {
		m[reasonTokenPrefix+r] = denial{401, "invalid_token", "The access token is invalid.", true}
	}
	return m
}()

// reasonOutcome lists every reason and whether it allows, for the metrics.
var reasonOutcome = func() map[string]bool {
	m := map[string]bool{ReasonOK: true, ReasonPublic: true, ReasonPreflight: true}
	for r := range denials {
		m[r] = false
	}
	return m
}()

// Request is the original request as the proxy described it.
type Request struct {
	// Adapter names the endpoint that received it (Adapter* constants), for logs and
	// metrics.
	Adapter string
	Method  string
	Scheme  string
	Host    string
	// Path is the request target as the client sent it: path and query, raw.
	Path string
	// Authorization holds every Authorization header value (Envoy joins duplicate lines
	// with a comma; either way more than one token is refused).
	Authorization []string
	// Cookies holds every Cookie header value.
	Cookies []string
	// Origin and AccessControlRequestMethod identify a CORS preflight.
	Origin                     string
	AccessControlRequestMethod string
	// ClientIP keys the per-IP rate limit; the zero Addr shares one "unknown" bucket.
	ClientIP netip.Addr
}

// Header is one header name and value.
type Header struct{ Name, Value string }

// Decision is the answer to one check. Its slices are shared and must not be modified.
type Decision struct {
	Allow bool
	// Status is 200 on allow, else the HTTP status the client should get.
	Status int
	// Reason is the stable label (Reason* constants, or "token_" + jwks.Reason).
	Reason string
	// Code is the problem code of a denial (invalid_token, session_revoked, …).
	Code string
	// Subject and SessionID are the token's, once it verified (for logs).
	Subject   string
	SessionID string
	// Upstream are identity headers to set on the upstream request, overwriting what
	// the client sent (allow only).
	Upstream []Header
	// Remove are the identity headers not in Upstream: the proxy must delete them from
	// the upstream request (allow only).
	Remove []string
	// Client are headers for the client's response (deny: Content-Type, Cache-Control,
	// WWW-Authenticate on 401, Retry-After on 429).
	Client []Header
	// Body is the problem+json document of a denial.
	Body []byte
}

// Verifier verifies access tokens; *jwks.Manager is one. Refusals must be jwks errors
// (jwks.Reason labels them).
type Verifier interface {
	VerifyAccess(token string) (jwks.AccessClaims, error)
}

// KeyGenerations is a Verifier whose key set can change (*jwks.Manager): a token verified
// under an earlier generation is verified again, so a key removed from the set stops its
// tokens at once, not when their cache entries end.
type KeyGenerations interface {
	Generation() uint64
}

// verified is a verified-token cache entry: the claims, and the key-set generation they
// were verified under.
type verified struct {
	claims jwks.AccessClaims
	gen    uint64
}

// Defaults of Config.
const (
	DefaultAccessCookie     = "access_token"
	DefaultRealm            = "authd"
	DefaultSessionCacheTTL  = 5 * time.Second
	DefaultDisconnectedTTL  = time.Second
	DefaultSessionCacheSize = 100_000
	DefaultTokenCacheSize   = 10_000
	DefaultTokenCacheMaxAge = 5 * time.Minute
	DefaultRedisTimeout     = 100 * time.Millisecond
	DefaultStoreTimeout     = 2 * time.Second
)

// Config is what a Checker needs. Zero values take the defaults named on each field.
type Config struct {
	// Verifier checks token signatures and claims locally (required).
	Verifier Verifier
	// Sessions is the system of record for session state (required).
	Sessions SessionSource
	// Bus delivers revocation messages once Run is called. With a nil Bus nothing is
	// subscribed and cached state lives its full SessionCacheTTL (tests, benchmarks).
	Bus revocation.Bus
	// Redis, when set, is the shared session-state tier between this process and the
	// store; RedisPrefix goes before its keys (empty in production).
	Redis       redis.UniversalClient
	RedisPrefix string
	// RedisTimeout bounds each session-state Redis call (DefaultRedisTimeout).
	RedisTimeout time.Duration
	// StoreTimeout bounds each session-state store read (DefaultStoreTimeout).
	StoreTimeout time.Duration

	// Limiter takes rate-limit tokens; nil turns rate limiting off. UserLimit
	// (RATE_LIMIT_CHECK_USER) applies to authenticated requests, IPLimit
	// (RATE_LIMIT_CHECK_IP) to public routes, preflights and failed authentication.
	Limiter   ratelimit.Limiter
	UserLimit ratelimit.Limit
	IPLimit   ratelimit.Limit
	// FailOpenRateLimit (CHECK_FAIL_OPEN_RATE_LIMIT) lets requests pass, with a warning,
	// when the limiter cannot answer; by default they get 503.
	FailOpenRateLimit bool
	// ClientIPs (CHECK_TRUSTED_PROXIES) finds the client behind the proxy: a proxy's own peer,
	// or the address it appended to X-Forwarded-For, is the client unless it is a trusted
	// proxy itself (a load balancer in front of Envoy or Traefik); then the chain is
	// walked as clientip does. Default: nothing trusted.
	ClientIPs *clientip.Resolver
	// IPBucket names the rate-limit bucket of a client address (default:
	// ClientIPs.BucketKey: IPv4 per address, IPv6 per /64).
	IPBucket func(netip.Addr) string

	// Policy gives the route policy in force; nil requires authentication everywhere.
	Policy PolicySource
	// NoCORSPreflight turns off the preflight pass-through (on by default).
	NoCORSPreflight bool

	// Headers names the identity headers (DefaultHeaderNames).
	Headers HeaderNames
	// AccessCookie (ACCESS_COOKIE) is the cookie read when there is no Authorization
	// header (DefaultAccessCookie).
	AccessCookie string
	// Realm goes into WWW-Authenticate (DefaultRealm).
	Realm string

	// SessionCacheTTL (SESSION_CACHE_TTL) bounds how stale session state may be when a
	// revocation message is lost (DefaultSessionCacheTTL). DisconnectedTTL caps it while
	// the revocation subscription is down (DefaultDisconnectedTTL).
	SessionCacheTTL time.Duration
	DisconnectedTTL time.Duration
	// SessionCacheSize bounds the in-process session and stamp caches, each
	// (DefaultSessionCacheSize).
	SessionCacheSize int
	// TokenCacheSize (TOKEN_CACHE_SIZE) bounds the verified-token cache
	// (DefaultTokenCacheSize); negative turns it off. An entry lives until the token's
	// exp, and at most TokenCacheMaxAge (DefaultTokenCacheMaxAge). A Verifier with key
	// generations (KeyGenerations) has its tokens verified again after its keys change.
	TokenCacheSize   int
	TokenCacheMaxAge time.Duration

	// DecisionLog gets one JSON line per decision, in one Write each, from concurrent
	// checks (a logbuf.Writer batches them); nil logs none. The line is what
	// slog.NewJSONHandler writes for an Info record "authz decision" with the decision's
	// attributes. DecisionLogSample (DECISION_LOG_SAMPLE) is the fraction logged, in
	// (0, 1]; 0 means 1. 503s are always logged.
	DecisionLog       io.Writer
	DecisionLogSample float64

	Now        func() time.Time      // default time.Now
	Logger     *slog.Logger          // operational warnings; default: discard
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
}

// Checker decides checks. It is safe for concurrent use.
type Checker struct {
	verifier  Verifier
	policy    PolicySource
	limiter   ratelimit.Limiter
	userLimit ratelimit.Limit
	ipLimit   ratelimit.Limit
	failOpen  bool
	ips       *clientip.Resolver
	ipBucket  func(netip.Addr) string
	preflight bool
	names     HeaderNames
	allNames  []string
	cookie    string
	wwwAuth   string // Bearer realm="…"
	wwwAuthEr string // … , error="invalid_token"
	bodies    map[string][]byte
	tokens    *ttlCache[[sha256.Size]byte, verified]
	keyGen    KeyGenerations // nil: the Verifier's keys never change
	tokenAge  time.Duration
	state     *stateCache
	bus       revocation.Bus
	dlog      io.Writer
	sample    float64
	now       func() time.Time
	log       *slog.Logger
	m         *metrics

	// Operational errors repeat on every request while they last: log each kind at
	// most every few seconds (metrics count them all).
	stateLog, limitLog, rejectLog throttle
}

// throttle lets one log line through per logEvery.
type throttle struct{ last atomic.Int64 }

const logEvery = 10 * time.Second

func (t *throttle) allow() bool {
	now := time.Now().UnixNano()
	last := t.last.Load()
	return now-last >= int64(logEvery) && t.last.CompareAndSwap(last, now)
}

// New checks cfg and builds a Checker. Call Run to receive revocation messages.
func New(cfg Config) (*Checker, error) {
	var errs []error
	if cfg.Verifier == nil {
		errs = append(errs, errors.New("a Verifier is required"))
	}
	if cfg.Sessions == nil {
		errs = append(errs, errors.New("a SessionSource is required"))
	}
	if cfg.Headers == (HeaderNames{}) {
		cfg.Headers = DefaultHeaderNames()
	}
	names, err := canonicalNames(cfg.Headers)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.AccessCookie == "" {
		cfg.AccessCookie = DefaultAccessCookie
	}
	if !validCookieName(cfg.AccessCookie) {
		errs = append(errs, fmt.Errorf("ACCESS_COOKIE %q is not a cookie name", cfg.AccessCookie))
	}
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if strings.ContainsAny(cfg.Realm, "\"\\\r\n") || !printable(cfg.Realm) {
		errs = append(errs, fmt.Errorf("realm %q must be printable ASCII without quotes", cfg.Realm))
	}
	for _, l := range []ratelimit.Limit{cfg.UserLimit, cfg.IPLimit} {
		if err := l.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.DecisionLogSample < 0 || cfg.DecisionLogSample > 1 {
		errs = append(errs, fmt.Errorf("DECISION_LOG_SAMPLE %v is not between 0 and 1", cfg.DecisionLogSample))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"SESSION_CACHE_TTL", &cfg.SessionCacheTTL, DefaultSessionCacheTTL},
		{"disconnected TTL", &cfg.DisconnectedTTL, DefaultDisconnectedTTL},
		{"token cache max age", &cfg.TokenCacheMaxAge, DefaultTokenCacheMaxAge},
		{"Redis timeout", &cfg.RedisTimeout, DefaultRedisTimeout},
		{"store timeout", &cfg.StoreTimeout, DefaultStoreTimeout},
	} {
		if *d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, *d.v))
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("extauthz: %w", err)
	}
	cfg.DisconnectedTTL = min(cfg.DisconnectedTTL, cfg.SessionCacheTTL)
	if cfg.SessionCacheSize <= 0 {
		cfg.SessionCacheSize = DefaultSessionCacheSize
	}
	if cfg.TokenCacheSize == 0 {
		cfg.TokenCacheSize = DefaultTokenCacheSize
	}
	if cfg.DecisionLogSample == 0 {
		cfg.DecisionLogSample = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{def: Authenticated}
	}
	if cfg.ClientIPs == nil {
		res, err := clientip.New(nil, 0)
		if err != nil {
			return nil, err
		}
		cfg.ClientIPs = res
	}
	if cfg.IPBucket == nil {
		cfg.IPBucket = cfg.ClientIPs.BucketKey
	}

	m := newMetrics()
	if err := m.register(cfg.Registerer); err != nil {
		return nil, err
	}
	c := &Checker{
		verifier:  cfg.Verifier,
		policy:    cfg.Policy,
		limiter:   cfg.Limiter,
		userLimit: cfg.UserLimit,
		ipLimit:   cfg.IPLimit,
		failOpen:  cfg.FailOpenRateLimit,
		ips:       cfg.ClientIPs,
		ipBucket:  cfg.IPBucket,
		preflight: !cfg.NoCORSPreflight,
		names:     names,
		allNames:  []string{names.UserID, names.Email, names.SessionID, names.MFA},
		cookie:    cfg.AccessCookie,
		wwwAuth:   `Bearer realm="` + cfg.Realm + `"`,
		wwwAuthEr: `Bearer realm="` + cfg.Realm + `", error="invalid_token"`,
		bodies:    map[string][]byte{},
		tokenAge:  cfg.TokenCacheMaxAge,
		bus:       cfg.Bus,
		dlog:      cfg.DecisionLog,
		sample:    cfg.DecisionLogSample,
		now:       cfg.Now,
		log:       cfg.Logger,
		m:         m,
	}
	for reason, d := range denials {
		body, err := json.Marshal(problem.New(d.status, d.code, d.detail))
		if err != nil {
			return nil, err
		}
		c.bodies[reason] = append(body, '\n')
	}
	if cfg.TokenCacheSize > 0 {
		c.tokens = newTTLCache[[sha256.Size]byte, verified](cfg.TokenCacheSize)
		c.keyGen, _ = cfg.Verifier.(KeyGenerations)
	}
	c.state = &stateCache{
		src:      cfg.Sessions,
		rdb:      cfg.Redis,
		prefix:   cfg.RedisPrefix,
		ttl:      cfg.SessionCacheTTL,
		discTTL:  cfg.DisconnectedTTL,
		timeout:  cfg.RedisTimeout,
		storeTO:  cfg.StoreTimeout,
		now:      cfg.Now,
		log:      cfg.Logger,
		m:        m,
		sessions: newTTLCache[string, sessionState](cfg.SessionCacheSize),
		stamps:   newTTLCache[string, stampState](cfg.SessionCacheSize),
	}
	if cfg.Bus == nil {
		c.state.live.Store(true)
		m.setSubscribed(true)
	}
	return c, nil
}

// Run receives revocation messages until ctx ends, resubscribing after a lost
// connection (the Bus does that). Until the subscription is up, and while it is down,
// cached state lives at most DisconnectedTTL. With no Bus it returns at once.
func (c *Checker) Run(ctx context.Context) {
	if c.bus == nil {
		return
	}
	c.bus.Subscribe(ctx, c.state.apply, c.state.setLive)
}

// Subscribed reports whether revocation messages are arriving (always true without a
// Bus). Tests wait for it; a readiness probe may report it.
func (c *Checker) Subscribed() bool { return c.state.live.Load() }

// Check decides one request, counts it and logs it.
func (c *Checker) Check(ctx context.Context, r Request) Decision {
	start := c.now()
	d := c.decide(ctx, &r, start)
	c.record(&r, &d, start)
	return d
}

// Reject answers a request its adapter could not read (the proxy did not send what
// the endpoint needs) with 400, counted and logged like any decision.
func (c *Checker) Reject(r Request, detail string) Decision {
	start := c.now()
	d := c.deny(ReasonBadRequest, false, 0)
	if c.rejectLog.allow() {
		c.log.Warn("check refused: the proxy did not send what the endpoint needs; check its configuration",
			"adapter", r.Adapter, "detail", detail)
	}
	c.record(&r, &d, start)
	return d
}

// decide is the decision; now is the time of the whole check.
func (c *Checker) decide(ctx context.Context, r *Request, now time.Time) Decision {
	pol := c.policy.Policy().Decide(r.Method, r.Host, r.Path)

	if c.preflight && r.Method == "OPTIONS" && r.Origin != "" && r.AccessControlRequestMethod != "" &&
		len(r.Authorization) == 0 && !hasCookie(r.Cookies, c.cookie) {
		return c.anonymous(ctx, r, ReasonPreflight)
	}
	if pol.Access == Public {
		return c.anonymous(ctx, r, ReasonPublic)
	}

	tok, reason := c.extract(r)
	if reason != "" {
		return c.unauthenticated(ctx, r, reason, Decision{})
	}
	claims, err := c.verify(tok, now)
	if err != nil {
		return c.unauthenticated(ctx, r, reasonTokenPrefix+jwks.Reason(err), Decision{})
	}
	who := Decision{Subject: claims.Subject, SessionID: claims.SessionID}
	if !validID(claims.Subject) || !validID(claims.SessionID) {
		// Ours are UUIDs; anything else cannot be a key, a header or a log field.
		return c.unauthenticated(ctx, r, reasonTokenPrefix+"claims", who)
	}

	sess, stamp, err := c.state.lookup(ctx, claims.SessionID, claims.Subject, now)
	if err != nil {
		if c.stateLog.allow() {
			c.log.Error("check failed closed: session state cannot be read", "error", err)
		}
		return c.with(who, c.deny(ReasonStateUnavailable, false, 0))
	}
	switch {
	case !sess.found:
		return c.unauthenticated(ctx, r, ReasonSessionUnknown, who)
	case sess.revoked:
		return c.unauthenticated(ctx, r, ReasonSessionRevoked, who)
	case sess.userID != claims.Subject:
		return c.unauthenticated(ctx, r, ReasonSessionUnknown, who)
	case now.UnixNano() >= sess.expires:
		return c.unauthenticated(ctx, r, ReasonSessionExpired, who)
	case !stamp.found || stamp.stamp != claims.Stamp:
		return c.unauthenticated(ctx, r, ReasonStampStale, who)
	}

	if d, stop := c.limit(ctx, ratelimit.ClassCheckUser, claims.Subject, c.userLimit, true); stop {
		return c.with(who, d)
	}
	mfa := hasOTP(claims.AMR)
	if pol.Access == MFA && !mfa {
		return c.with(who, c.deny(ReasonMFARequired, false, 0))
	}
	return c.allow(claims, mfa)
}

// anonymous allows without identity, after the per-IP limit.
func (c *Checker) anonymous(ctx context.Context, r *Request, reason string) Decision {
	if d, stop := c.limit(ctx, ratelimit.ClassCheckIP, c.ipBucket(r.ClientIP), c.ipLimit, true); stop {
		return d
	}
	return Decision{Allow: true, Status: 200, Reason: reason, Remove: c.allNames}
}

// unauthenticated is a 401 for reason, or a 429 when the client's IP has failed too
// often. A limiter that cannot answer does not turn the 401 into anything else.
func (c *Checker) unauthenticated(ctx context.Context, r *Request, reason string, who Decision) Decision {
	if d, stop := c.limit(ctx, ratelimit.ClassCheckIP, c.ipBucket(r.ClientIP), c.ipLimit, false); stop {
		return c.with(who, d)
	}
	return c.with(who, c.deny(reason, denials[reason].errorParam, 0))
}

// limit takes a token from bucket (class, id). stop reports a denial: over the limit,
// or the limiter failed and failClosed holds (unless FailOpenRateLimit).
func (c *Checker) limit(ctx context.Context, class, id string, l ratelimit.Limit, failClosed bool) (Decision, bool) {
	if c.limiter == nil || l.Off() {
		return Decision{}, false
	}
	res, err := c.limiter.Take(ctx, class, id, l)
	switch {
	case err != nil && failClosed && !c.failOpen:
		if c.limitLog.allow() {
			c.log.Error("check failed closed: the rate limiter cannot answer", "class", class, "error", err)
		}
		return c.deny(ReasonLimiterDown, false, 0), true
	case err != nil:
		if c.limitLog.allow() {
			c.log.Warn("rate limiter cannot answer; request not limited", "class", class, "error", err)
		}
		return Decision{}, false
	case !res.Allowed:
		return c.deny(ReasonRateLimited, false, res.RetryAfter), true
	}
	return Decision{}, false
}

func (c *Checker) with(who, d Decision) Decision {
	d.Subject, d.SessionID = who.Subject, who.SessionID
	return d
}

// deny builds the denial for reason. Client headers and body are fixed per reason
// except Retry-After.
func (c *Checker) deny(reason string, tokenPresent bool, retry time.Duration) Decision {
	dn := denials[reason]
	hs := make([]Header, 0, 3)
	hs = append(hs, Header{"Content-Type", problem.ContentType}, Header{"Cache-Control", "no-store"})
	switch {
	case dn.status == 401 && tokenPresent:
		hs = append(hs, Header{"WWW-Authenticate", c.wwwAuthEr})
	case dn.status == 401:
		hs = append(hs, Header{"WWW-Authenticate", c.wwwAuth})
	case dn.status == 429:
		hs = append(hs, Header{"Retry-After", strconv.FormatInt(problem.RetryAfterSeconds(retry), 10)})
	case dn.status == 503:
		hs = append(hs, Header{"Retry-After", "1"})
	}
	return Decision{Status: dn.status, Reason: reason, Code: dn.code, Client: hs, Body: c.bodies[reason]}
}

// allow sets every identity header that has a valid value and removes the others.
func (c *Checker) allow(cl jwks.AccessClaims, mfa bool) Decision {
	d := Decision{Allow: true, Status: 200, Reason: ReasonOK, Subject: cl.Subject, SessionID: cl.SessionID}
	mfaVal := "false"
	if mfa {
		mfaVal = "true"
	}
	d.Upstream = make([]Header, 0, 4)
	d.Upstream = append(d.Upstream, Header{c.names.UserID, cl.Subject})
	if headerValue(cl.Email) {
		d.Upstream = append(d.Upstream, Header{c.names.Email, cl.Email})
	} else {
		d.Remove = []string{c.names.Email}
	}
	d.Upstream = append(d.Upstream, Header{c.names.SessionID, cl.SessionID}, Header{c.names.MFA, mfaVal})
	return d
}

// verify verifies tok, or finds it among the tokens verified before under the key set in
// service. The cache is keyed by the token's SHA-256, so no token is kept in memory, and
// an entry never outlives the token's exp.
func (c *Checker) verify(tok string, now time.Time) (jwks.AccessClaims, error) {
	if c.tokens == nil {
		return c.verifier.VerifyAccess(tok)
	}
	var gen uint64
	if c.keyGen != nil {
		gen = c.keyGen.Generation()
	}
	key := sha256.Sum256([]byte(tok))
	ns := now.UnixNano()
	if v, ok := c.tokens.get(key, ns); ok && v.gen == gen {
		c.m.cacheResult(cacheToken, true)
		return v.claims, nil
	}
	c.m.cacheResult(cacheToken, false)
	cl, err := c.verifier.VerifyAccess(tok)
	if err != nil {
		return cl, err
	}
	exp := min(cl.Expiry.UnixNano(), now.Add(c.tokenAge).UnixNano())
	c.tokens.put(key, verified{cl, gen}, exp, ns)
	return cl, nil
}

func hasOTP(amr []string) bool {
	for _, m := range amr {
		if m == "otp" {
			return true
		}
	}
	return false
}
