// Package config reads authd's settings from the environment and validates them all at once.
//
// Loading has no side effects (no dialing, no files written, no metrics); it reads the
// environment and, for `X_FILE` variables, the named files. Every problem is collected, so
// one start shows every bad variable, each on its own line.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/authd/authd/clientip"
	"github.com/authd/authd/dburl"
	"github.com/authd/authd/ratelimit"
)

// Config is every setting authd reads. cmd/authd hands each service only the part it needs.
type Config struct {
	Env      string // "development" or "production"
	Debug    bool
	LogLevel string

	HTTPAddr        string
	GRPCAddr        string
	ShutdownTimeout time.Duration
	DataDir         string

	DatabaseURL  string // postgres://… or sqlite://path
	DBMaxConns   int
	AutoMigrate  bool
	RedisURL     string // empty: in-process equivalents
	RedisTimeout time.Duration

	// Keys and secrets.
	JWTPrivateKey []byte
	JWTPublicKey  []byte
	// JWTPrivateKeyFile and JWTPublicKeyFile are the *_FILE paths, watched for changes.
	JWTPrivateKeyFile string
	JWTPublicKeyFile  string
	JWTKeysDir        string
	JWTAlg            string
	JWTIssuer         string
	JWTAudience       string
	PublicURL         string // base URL of authd as clients reach it (jwks_uri)
	JWKSMaxAge        time.Duration
	FernetKey         []byte
	AWSSSMEnabled     bool
	AWSSSMPrefix      string
	AWSRegion         string
	AWSEndpointURL    string

	AccessTokenTTL  time.Duration
	PreAuthTTL      time.Duration
	RefreshTokenTTL time.Duration
	SessionTTL      time.Duration

	TrustedProxies []netip.Prefix // TRUSTED_PROXIES: CIDRs or addresses
	// CheckTrustedProxies (CHECK_TRUSTED_PROXIES): the hops in front of the proxy (load
	// balancers) whose X-Forwarded-For the check path believes. Apart from
	// TRUSTED_PROXIES, which names authd's own peers: a range trusted there (the proxy's
	// network) may hold clients and NAT hops that must not choose their own address.
	CheckTrustedProxies []netip.Prefix
	ClientIPv6Prefix    int
	CORSOrigins         []string
	HSTS                bool

	// Accounts.
	PasswordMinLength   int
	Argon2MemoryKiB     int
	Argon2Time          int
	Argon2Parallelism   int
	Argon2MaxConcurrent int
	Argon2MaxWait       time.Duration
	LockoutThreshold    int
	LockoutDurations    []time.Duration
	SingleSession       bool
	MFAIssuer           string

	// RateLimits holds every class of ratelimit.Settings, by class.
	RateLimits             map[string]ratelimit.Limit
	CheckFailOpenRateLimit bool
	// CheckLease bounds the check-path tokens a replica takes from Redis at once
	// (ratelimit.Leases); 1 takes one per check.
	CheckLease int

	// The check path.
	PolicyFile        string
	AccessCookie      string
	SessionCacheTTL   time.Duration
	TokenCacheSize    int // 0 turns the verified-token cache off
	DecisionLogSample float64
	HeaderUserID      string
	HeaderUserEmail   string
	HeaderSessionID   string
	HeaderAuthMFA     string
}

// Production reports whether ENV=production.
func (c Config) Production() bool { return c.Env == "production" }

// Error lists every invalid variable; each line names one variable and what is wrong.
type Error struct{ Problems []string }

func (e *Error) Error() string { return strings.Join(e.Problems, "\n") }

// Load reads the configuration from getenv (os.Getenv in production use). Relative
// `X_FILE` paths are read as given.
func Load(getenv func(string) string) (Config, error) {
	l := &loader{getenv: getenv}
	c := Config{}

	c.Env = l.oneOf("ENV", "development", "development", "production")
	prod := c.Env == "production"
	c.Debug = l.bool("DEBUG", false)
	c.LogLevel = l.oneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error")

	c.HTTPAddr = l.addr("HTTP_ADDR", ":8000")
	c.GRPCAddr = l.addr("GRPC_ADDR", ":9001")
	c.ShutdownTimeout = l.duration("SHUTDOWN_TIMEOUT", 15*time.Second)
	c.DataDir = l.str("DATA_DIR", "./data")

	c.DatabaseURL = l.databaseURL("DATABASE_URL", "sqlite://"+strings.TrimSuffix(c.DataDir, "/")+"/authd.db", prod)
	c.DBMaxConns = l.intRange("DB_MAX_CONNS", 15, 1, 1000)
	c.AutoMigrate = l.bool("AUTO_MIGRATE", !prod)
	c.RedisURL = l.redisURL("REDIS_URL", prod)
	c.RedisTimeout = l.duration("REDIS_TIMEOUT", 200*time.Millisecond)

	c.JWTPrivateKey, c.JWTPrivateKeyFile = l.secretFile("JWT_PRIVATE_KEY")
	c.JWTPublicKey, c.JWTPublicKeyFile = l.secretFile("JWT_PUBLIC_KEY")
	c.JWTKeysDir = l.str("JWT_KEYS_DIR", "")
	c.JWTAlg = l.oneOf("JWT_ALG", "RS256", "RS256", "PS256", "ES256", "EdDSA")
	c.JWTIssuer = l.str("JWT_ISSUER", "http://localhost:8000")
	c.JWTAudience = l.str("JWT_AUDIENCE", "authd")
	c.PublicURL = l.httpURL("PUBLIC_URL", c.JWTIssuer)
	c.JWKSMaxAge = l.duration("JWKS_MAX_AGE", 5*time.Minute)
	c.FernetKey = l.secret("FERNET_KEY")
	c.AWSSSMEnabled = l.bool("AWS_SSM_ENABLED", false)
	c.AWSSSMPrefix = l.str("AWS_SSM_PREFIX", "/auth-service")
	c.AWSRegion = l.str("AWS_REGION", "")
	c.AWSEndpointURL = l.str("AWS_ENDPOINT_URL", "")

	c.AccessTokenTTL = l.duration("ACCESS_TOKEN_TTL", 15*time.Minute)
	c.PreAuthTTL = l.duration("PRE_AUTH_TOKEN_TTL", 5*time.Minute)
	c.RefreshTokenTTL = l.duration("REFRESH_TOKEN_TTL", 30*24*time.Hour)
	c.SessionTTL = l.duration("SESSION_TTL", 90*24*time.Hour)

	for _, tp := range []struct {
		name string
		dst  *[]netip.Prefix
	}{{"TRUSTED_PROXIES", &c.TrustedProxies}, {"CHECK_TRUSTED_PROXIES", &c.CheckTrustedProxies}} {
		if v, ok := l.raw(tp.name); ok {
			p, err := clientip.ParseTrusted(v)
			if err != nil {
				l.fail(tp.name, "%v", err)
			}
			*tp.dst = p
		}
	}
	c.ClientIPv6Prefix = l.intRange("CLIENT_IPV6_PREFIX", 64, 16, 128)
	c.CORSOrigins = l.list("CORS_ORIGINS")
	c.HSTS = l.bool("HSTS", false)

	c.PasswordMinLength = l.intRange("PASSWORD_MIN_LENGTH", 15, 8, 128)
	// The ranges are the hasher's own limits (authn/password), so a value accepted here is
	// never refused at start.
	c.Argon2MemoryKiB = l.intRange("ARGON2_MEMORY_KIB", 64*1024, 8*1024, 1024*1024)
	c.Argon2Time = l.intRange("ARGON2_TIME", 3, 1, 64)
	c.Argon2Parallelism = l.intRange("ARGON2_PARALLELISM", 4, 1, 64)
	if uint64(c.Argon2MemoryKiB)*uint64(c.Argon2Time) > 4*1024*1024 {
		l.fail("ARGON2_TIME", "times ARGON2_MEMORY_KIB must be at most 4 GiB of passes (4194304)")
	}
	c.Argon2MaxConcurrent = l.intRange("ARGON2_MAX_CONCURRENT", defaultArgon2Concurrency(), 1, 1024)
	c.Argon2MaxWait = l.duration("ARGON2_MAX_WAIT", 2*time.Second)
	c.LockoutThreshold = l.intRange("LOCKOUT_THRESHOLD", 5, 1, 1000)
	c.LockoutDurations = l.durations("LOCKOUT_DURATIONS", []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour})
	c.SingleSession = l.bool("SINGLE_SESSION", false)
	c.MFAIssuer = l.str("MFA_ISSUER", "authd")

	c.RateLimits = map[string]ratelimit.Limit{}
	for _, s := range ratelimit.Settings() {
		c.RateLimits[s.Class] = l.limit(s.Variable, s.Default)
	}
	c.CheckFailOpenRateLimit = l.bool("CHECK_FAIL_OPEN_RATE_LIMIT", false)
	c.CheckLease = l.intRange("RATE_LIMIT_CHECK_LEASE", ratelimit.DefaultMaxLease, 1, 10_000)

	c.PolicyFile = l.str("POLICY_FILE", "")
	c.AccessCookie = l.token("ACCESS_COOKIE", "access_token")
	c.SessionCacheTTL = l.duration("SESSION_CACHE_TTL", 5*time.Second)
	c.TokenCacheSize = l.intRange("TOKEN_CACHE_SIZE", 10000, 0, 10_000_000)
	c.DecisionLogSample = l.fraction("DECISION_LOG_SAMPLE", 1)
	c.HeaderUserID = l.token("HEADER_USER_ID", "X-User-Id")
	c.HeaderUserEmail = l.token("HEADER_USER_EMAIL", "X-User-Email")
	c.HeaderSessionID = l.token("HEADER_SESSION_ID", "X-Session-Id")
	c.HeaderAuthMFA = l.token("HEADER_AUTH_MFA", "X-Auth-MFA")

	if prod {
		keyed := len(c.JWTPrivateKey) > 0 || c.JWTKeysDir != "" || c.AWSSSMEnabled
		if !keyed {
			l.fail("JWT_PRIVATE_KEY", "is required with ENV=production (or JWT_PRIVATE_KEY_FILE, JWT_KEYS_DIR, AWS_SSM_ENABLED=true); no key is generated in production")
		}
		if len(c.FernetKey) == 0 && !c.AWSSSMEnabled {
			l.fail("FERNET_KEY", "is required with ENV=production (or FERNET_KEY_FILE, AWS_SSM_ENABLED=true)")
		}
	}
	if len(c.JWTPublicKey) > 0 && len(c.JWTPrivateKey) == 0 {
		l.fail("JWT_PUBLIC_KEY", "is set without JWT_PRIVATE_KEY; authd needs the private key to sign")
	}
	if c.RefreshTokenTTL > c.SessionTTL {
		l.fail("REFRESH_TOKEN_TTL", "must not be longer than SESSION_TTL")
	}

	if len(l.problems) > 0 {
		sort.Strings(l.problems)
		return Config{}, &Error{Problems: l.problems}
	}
	return c, nil
}

// defaultArgon2Concurrency sizes the hashing semaphore from the CPU count: Argon2id with
// p=4 keeps a core busy per lane, so more parallel hashes than cores only queue in memory.
func defaultArgon2Concurrency() int {
	return max(1, runtime.NumCPU())
}

// loader reads variables and collects every problem instead of stopping at the first.
type loader struct {
	getenv   func(string) string
	problems []string
}

func (l *loader) fail(name, format string, args ...any) {
	l.problems = append(l.problems, name+": "+fmt.Sprintf(format, args...))
}

func (l *loader) raw(name string) (string, bool) {
	v := strings.TrimSpace(l.getenv(name))
	return v, v != ""
}

func (l *loader) str(name, def string) string {
	if v, ok := l.raw(name); ok {
		return v
	}
	return def
}

func (l *loader) oneOf(name, def string, allowed ...string) string {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	l.fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

func (l *loader) bool(name string, def bool) bool {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.fail(name, "%q is not a boolean (use true or false)", v)
		return def
	}
	return b
}

func (l *loader) intRange(name string, def, lo, hi int) int {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		l.fail(name, "%q is not a whole number from %d to %d", v, lo, hi)
		return def
	}
	return n
}

func (l *loader) duration(name string, def time.Duration) time.Duration {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		l.fail(name, "%q is not a positive duration such as 15m, 30s or 720h", v)
		return def
	}
	return d
}

func (l *loader) durations(name string, def []time.Duration) []time.Duration {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	var out []time.Duration
	for _, part := range strings.Split(v, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil || d <= 0 {
			l.fail(name, "%q is not a comma-separated list of positive durations such as 1m,5m,15m,1h", v)
			return def
		}
		out = append(out, d)
	}
	return out
}

func (l *loader) list(name string) []string {
	v, ok := l.raw(name)
	if !ok {
		return nil
	}
	var out []string
	for _, part := range strings.Split(v, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (l *loader) addr(name, def string) string {
	v := l.str(name, def)
	i := strings.LastIndexByte(v, ':')
	if i < 0 {
		l.fail(name, "%q is not host:port", v)
		return def
	}
	if p, err := strconv.Atoi(v[i+1:]); err != nil || p < 0 || p > 65535 {
		l.fail(name, "%q has no valid port", v)
		return def
	}
	return v
}

func (l *loader) httpURL(name, def string) string {
	v := l.str(name, def)
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.fail(name, "is not an absolute http(s) URL")
		return def
	}
	return strings.TrimSuffix(v, "/")
}

// databaseURL accepts postgres://, postgresql:// and sqlite://path. The URL may hold a
// password, so messages never repeat it.
func (l *loader) databaseURL(name, def string, prod bool) string {
	v, ok := l.raw(name)
	if !ok {
		if prod {
			l.fail(name, "is required with ENV=production (a postgres:// URL); the embedded SQLite store is for development")
		}
		return def
	}
	// The store's own parser, so what passes here opens there; its errors never hold the
	// password.
	d, err := dburl.Parse(v)
	if err != nil {
		l.fail(name, "%s", err.Error())
		return def
	}
	switch d.Dialect {
	case dburl.Postgres:
		if u, err := url.Parse(v); err != nil || u.Host == "" {
			l.fail(name, "has no host (want postgres://user:password@host:5432/db)")
		}
	case dburl.SQLite:
		if prod {
			l.fail(name, "must be a postgres:// URL with ENV=production; the embedded SQLite store is for development")
		}
	}
	return v
}

func (l *loader) redisURL(name string, prod bool) string {
	v, ok := l.raw(name)
	if !ok {
		if prod {
			l.fail(name, "is required with ENV=production; in-process rate limits and revocation work for one replica only")
		}
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		l.fail(name, "is not a redis://, rediss:// or unix:// URL")
		return ""
	}
	return v
}

// token reads an HTTP token (a header or cookie name): letters, digits and !#$%&'*+-.^_`|~.
func (l *loader) token(name, def string) string {
	v := l.str(name, def)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			l.fail(name, "%q is not a valid header or cookie name", v)
			return def
		}
	}
	return v
}

func (l *loader) fraction(name string, def float64) float64 {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1 {
		l.fail(name, "%q is not a number from 0 to 1", v)
		return def
	}
	return f
}

func (l *loader) limit(name, def string) ratelimit.Limit {
	v := l.str(name, def)
	lim, err := ratelimit.ParseLimit(v)
	if err != nil {
		l.fail(name, "%q is not N/DURATION (such as 20/1m) or 0 to turn it off", v)
		d, _ := ratelimit.ParseLimit(def)
		return d
	}
	return lim
}

// secretFile is secret, also returning the X_FILE path when the value came from one.
func (l *loader) secretFile(name string) ([]byte, string) {
	v := l.secret(name)
	if f, ok := l.raw(name + "_FILE"); ok && v != nil {
		return v, f
	}
	return v, ""
}

// secret reads X, or the file named by X_FILE; setting both is an error.
func (l *loader) secret(name string) []byte {
	v, hasV := l.raw(name)
	f, hasF := l.raw(name + "_FILE")
	switch {
	case hasV && hasF:
		l.fail(name, "is set together with %s_FILE; set one", name)
	case hasF:
		b, err := os.ReadFile(f)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			l.fail(name+"_FILE", "cannot read %s: %v", f, err)
			return nil
		}
		return []byte(strings.TrimSpace(string(b)))
	case hasV:
		// PEM keys in one-line environment variables often carry literal \n.
		return []byte(strings.ReplaceAll(v, `\n`, "\n"))
	}
	return nil
}
