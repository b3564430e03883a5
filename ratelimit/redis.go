package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultTimeout bounds one take from Redis when RedisOptions.Timeout is zero. It matches
// REDIS_TIMEOUT's default.
const DefaultTimeout = 200 * time.Millisecond

// takeScript takes one token from the bucket KEYS[1], a hash {t: tokens, ts: µs}, of
// ARGV[1] tokens refilled over ARGV[2] µs, and returns {allowed, remaining, retry µs,
// reset µs}. The time is Redis's own (TIME), so replicas whose clocks disagree still share
// one correct bucket; since Redis 5 scripts replicate their effects, so a write after
// TIME is allowed. A refused take writes nothing. The key expires when the bucket would be
// full again, which is the same as absent. Multiplying before dividing keeps whole
// refills exact in floating point; tokens are stored with 17 digits, so they round-trip.
const takeScript = `
local burst = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local tokens = burst
local st = redis.call('HMGET', KEYS[1], 't', 'ts')
local t0, ts = tonumber(st[1]), tonumber(st[2])
if t0 and ts then
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = t0 + elapsed * burst / period
  if tokens > burst then tokens = burst end
end
if tokens < 1 then
  return {0, 0, math.ceil((1 - tokens) * period / burst), math.ceil((burst - tokens) * period / burst)}
end
tokens = tokens - 1
local reset = math.ceil((burst - tokens) * period / burst)
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'ts', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000))
return {1, math.floor(tokens), 0, reset}
`

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// Prefix goes before every key; empty in production, so keys are exactly
	// rl:{class}:{id}. Tests give each test its own.
	Prefix string
	// Timeout bounds each take, whatever the client's own timeouts (DefaultTimeout if 0).
	// Build the client with ContextTimeoutEnabled: takes are then cheaper (see run).
	Timeout time.Duration
	// Logger gets the script reloads; nil discards.
	Logger *slog.Logger
	// Registerer gets the Redis metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Redis is a Limiter whose buckets live in Redis, shared by every replica. It is safe for
// concurrent use.
type Redis struct {
	client  redis.UniversalClient
	prefix  string
	timeout time.Duration
	logger  *slog.Logger
	script  *redis.Script
	// direct is set when the client reads the socket under the context's deadline, so
	// the script can run on the caller's goroutine.
	direct bool

	latency prometheus.Histogram
	errs    prometheus.Counter
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter over client. It does not dial: the script is loaded by the
// first take (EVALSHA, then EVAL on NOSCRIPT, which loads it again after a restart or a
// SCRIPT FLUSH).
func NewRedis(client redis.UniversalClient, opts RedisOptions) (*Redis, error) {
	if client == nil {
		return nil, fmt.Errorf("ratelimit: NewRedis needs a client")
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("ratelimit: negative Redis timeout %v", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Redis{
		client:  client,
		prefix:  opts.Prefix,
		timeout: opts.Timeout,
		logger:  opts.Logger,
		script:  redis.NewScript(takeScript),
		direct:  honoursDeadlines(client),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "authd_ratelimit_redis_script_duration_seconds",
			Help:    "Time of one rate-limit take in Redis (EVALSHA round trip), including failed ones.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authd_ratelimit_redis_errors_total",
			Help: "Rate-limit takes that failed because Redis errored or did not answer within the timeout.",
		}),
	}
	var err error
	if r.latency, err = register(opts.Registerer, r.latency); err != nil {
		return nil, err
	}
	if r.errs, err = register(opts.Registerer, r.errs); err != nil {
		return nil, err
	}
	return r, nil
}

// Key is the Redis key of bucket (class, id).
func (r *Redis) Key(class, id string) string {
	return r.prefix + "rl:" + class + ":" + bucketID(id)
}

// Take implements Limiter. Errors from Redis, and no answer within the timeout, wrap
// ErrUnavailable.
func (r *Redis) Take(ctx context.Context, class, id string, l Limit) (Result, error) {
	if err := checkTake(class, l); err != nil {
		return Result{}, err
	}
	if l.Off() {
		return Result{Allowed: true}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	start := time.Now()
	v, err := r.run(ctx, r.Key(class, id), l)
	r.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		r.errs.Inc()
		return Result{}, fmt.Errorf("%w: class %s: %w", ErrUnavailable, class, err)
	}
	if len(v) != 4 {
		r.errs.Inc()
		return Result{}, fmt.Errorf("%w: class %s: script returned %d values", ErrUnavailable, class, len(v))
	}
	return Result{
		Allowed:    v[0] == 1,
		Remaining:  int(v[1]),
		RetryAfter: time.Duration(v[2]) * time.Microsecond,
		Reset:      time.Duration(v[3]) * time.Microsecond,
	}, nil
}

type reply struct {
	v   []int64
	err error
}

// run evaluates the script and returns by ctx's deadline. go-redis bounds socket reads by
// the context only with ContextTimeoutEnabled; otherwise by its ReadTimeout (seconds by
// default), and a fail-closed endpoint must answer within our timeout however the client
// was built. So unless the client is known to honour deadlines, the call runs on its own
// goroutine and is abandoned at the deadline; it then finishes within the client's own
// timeouts. (The hand-off costs a goroutine and a wake-up per take, which the benchmark
// shows on a small machine: set ContextTimeoutEnabled.)
func (r *Redis) run(ctx context.Context, key string, l Limit) ([]int64, error) {
	if r.direct {
		return r.eval(ctx, key, l)
	}
	done := make(chan reply, 1)
	go func() {
		v, err := r.eval(ctx, key, l)
		done <- reply{v, err}
	}()
	select {
	case rep := <-done:
		return rep.v, rep.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// honoursDeadlines reports whether c is a go-redis client built with
// ContextTimeoutEnabled (dialing honours the context in any case).
func honoursDeadlines(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

func (r *Redis) eval(ctx context.Context, key string, l Limit) ([]int64, error) {
	keys := []string{key}
	burst := strconv.Itoa(l.Burst)
	period := strconv.FormatInt(l.Period.Microseconds(), 10)
	v, err := r.script.EvalSha(ctx, r.client, keys, burst, period).Int64Slice()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		r.logger.Info("rate-limit script not in Redis's script cache; loading it")
		v, err = r.script.Eval(ctx, r.client, keys, burst, period).Int64Slice()
	}
	return v, err
}
