package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultTimeout bounds one take from Redis when RedisOptions.Timeout is zero. It matches
// REDIS_TIMEOUT's default.
const DefaultTimeout = 200 * time.Millisecond

// takeScript takes up to ARGV[3i] tokens (at least one; as many as it holds) from each
// bucket KEYS[i], of ARGV[3i-2] tokens refilled over ARGV[3i-1] µs, and returns four
// numbers per bucket: tokens taken (0 when refused), tokens remaining, retry after (µs)
// and reset (µs: until the bucket is full again). One run serves a whole
// batch of takes (see Redis), each still atomic; a key named twice is taken from twice,
// in order. A bucket is a string of two little-endian IEEE 754 doubles: its tokens when
// last taken from, and when (µs), which round-trip exactly and cost one C call each way.
// The time is Redis's own (TIME, once per run), so replicas whose clocks disagree still
// share one correct bucket; since Redis 5 scripts replicate their effects, so a write
// after TIME is allowed. A refused take writes nothing. The key expires when the bucket
// would be full again, which is the same as absent; a value that is not a bucket
// (another type, another length, NaN or infinite) counts as absent and is overwritten. Multiplying
// before dividing keeps whole refills exact in floating point.
const takeScript = `
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local out = {}
for i = 1, #KEYS do
  local burst = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local tokens = burst
  local v = redis.pcall('GET', KEYS[i])
  if type(v) == 'string' and #v == 16 then
    local t0, ts = struct.unpack('<dd', v)
    if t0 and ts and t0 > -math.huge and t0 < math.huge and ts > -math.huge and ts < math.huge then
      local elapsed = now - ts
      if elapsed < 0 then elapsed = 0 end
      tokens = t0 + elapsed * burst / period
      if tokens > burst then tokens = burst end
    end
  end
  local o = 4 * i - 3
  if tokens < 1 then
    out[o], out[o + 1] = 0, 0
    out[o + 2] = math.ceil((1 - tokens) * period / burst)
    out[o + 3] = math.ceil((burst - tokens) * period / burst)
  else
    local got = math.min(want, math.floor(tokens))
    tokens = tokens - got
    local reset = math.ceil((burst - tokens) * period / burst)
    redis.call('SET', KEYS[i], struct.pack('<dd', tokens, now), 'PX', math.max(1, math.ceil(reset / 1000)))
    out[o], out[o + 1], out[o + 2], out[o + 3] = got, math.floor(tokens), 0, reset
  end
end
return out
`

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// Prefix goes before every key; empty in production, so keys are exactly
	// rl2:{class}:{id}. Tests give each test its own.
	Prefix string
	// Timeout bounds each take, whatever the client's own timeouts (DefaultTimeout if 0).
	// Build the client with ContextTimeoutEnabled, so that a batch of takes on a hung
	// connection ends at its takes' deadline rather than at the client's ReadTimeout.
	Timeout time.Duration
	// Logger gets the script reloads; nil discards.
	Logger *slog.Logger
	// Registerer gets the Redis metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Redis is a Limiter whose buckets live in Redis, shared by every replica. It is safe for
// concurrent use.
//
// Takes made at the same time share round trips. Each take is queued; a batch goroutine
// sends everything queued as one EVALSHA of the take script over every queued bucket
// (each take still atomic, with its own four numbers in the reply), hands every caller
// its reply, and sends what was queued meanwhile. A lone take thus goes out at once,
// alone, and under load each batch carries the takes that arrived while the previous one
// was in Redis. The write, the read and the wake-ups of a round trip, and Redis's parsing
// of the command and start of the script, most of a take's cost on the client and in
// Redis (BenchmarkTake), are paid once per batch. One batch is in Redis at a time; another
// starts beside it only when it is late (see maxWorkers). Each caller still waits at most
// its timeout, and a take whose caller gave up before its batch left is not sent.
type Redis struct {
	client  redis.UniversalClient
	cluster bool // a Redis Cluster: one script run per take, not per batch
	prefix  string
	timeout time.Duration
	logger  *slog.Logger
	script  *redis.Script

	batches batcher
	argv    sync.Map // Limit → []any, see args
	argvN   atomic.Int32

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
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "authd_ratelimit_redis_script_duration_seconds",
			Help:    "Time of one rate-limit take from Redis (queued, then one EVALSHA in a pipelined batch), including failed ones.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authd_ratelimit_redis_errors_total",
			Help: "Rate-limit takes that failed because Redis errored or did not answer within the timeout.",
		}),
	}
	_, r.cluster = client.(*redis.ClusterClient)
	r.batches.run = r.exec
	r.batches.stall = opts.Timeout / 4
	var err error
	if r.latency, err = register(opts.Registerer, r.latency); err != nil {
		return nil, err
	}
	if r.errs, err = register(opts.Registerer, r.errs); err != nil {
		return nil, err
	}
	return r, nil
}

// keyPrefix starts every bucket key. DESIGN §6 names keys rl:{class}:{id}; the bucket's
// value changed from a hash (t, ts) to two packed doubles, and a replica of the earlier
// build reading the new value (or this one the old) would fail or misread it during a
// rolling upgrade, so the new format has keys of its own and the old ones expire.
const keyPrefix = "rl2:"

// Key is the Redis key of bucket (class, id).
func (r *Redis) Key(class, id string) string {
	return r.prefix + keyPrefix + class + ":" + bucketID(id)
}

// Take implements Limiter. Errors from Redis, and no answer within the timeout, wrap
// ErrUnavailable.
func (r *Redis) Take(ctx context.Context, class, id string, l Limit) (Result, error) {
	_, res, err := r.TakeN(ctx, class, id, l, 1)
	return res, err
}

// TakeN implements Reserver, in one script run like Take.
func (r *Redis) TakeN(ctx context.Context, class, id string, l Limit, n int) (int, Result, error) {
	if err := checkTakeN(class, l, n); err != nil {
		return 0, Result{}, err
	}
	if l.Off() {
		return n, Result{Allowed: true}, nil
	}
	start := time.Now()
	v, err := r.run(ctx, r.Key(class, id), l, n, start.Add(r.timeout))
	r.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		r.errs.Inc()
		return 0, Result{}, fmt.Errorf("%w: class %s: %w", ErrUnavailable, class, err)
	}
	if len(v) != 4 || v[0] < 0 || v[0] > int64(n) {
		r.errs.Inc()
		return 0, Result{}, fmt.Errorf("%w: class %s: script returned %v", ErrUnavailable, class, v)
	}
	return int(v[0]), Result{
		Allowed:    v[0] > 0,
		Remaining:  int(v[1]),
		RetryAfter: time.Duration(v[2]) * time.Microsecond,
		Reset:      time.Duration(v[3]) * time.Microsecond,
	}, nil
}

// run queues the take and waits for its reply until ctx ends or deadline passes,
// whatever the connection does. The batch carrying the take is bounded by the latest
// deadline among its takes when the client honours deadlines (ContextTimeoutEnabled),
// else by the client's own read and write timeouts.
func (r *Redis) run(ctx context.Context, key string, l Limit, n int, deadline time.Time) ([]int64, error) {
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := takes.Get().(*pendingTake)
	t.ctx, t.deadline, t.key, t.args, t.want = ctx, deadline, key, r.args(l), n
	if err := r.batches.enqueue(t); err != nil {
		t.release()
		return nil, err
	}
	t.timer.Reset(time.Until(deadline))
	select {
	case rep := <-t.done:
		t.timer.Stop()
		t.release() // answered: its batch is done with it
		return rep.v, rep.err
	case <-ctx.Done():
		t.timer.Stop()
		return nil, ctx.Err() // its batch may still answer it: left to the collector
	case <-t.timer.C:
		return nil, context.DeadlineExceeded
	}
}

// takes are pendingTakes to reuse, each with its reply channel and a stopped timer
// (since Go 1.23 a stopped or reset timer never delivers a stale tick).
var takes = sync.Pool{New: func() any {
	t := &pendingTake{done: make(chan takeReply, 1), timer: time.NewTimer(time.Hour)}
	t.timer.Stop()
	return t
}}

// release returns t to takes; only a take no batch holds any more may be released.
func (t *pendingTake) release() {
	t.ctx, t.key, t.args, t.want = nil, "", nil, 0
	takes.Put(t)
}

// args are the script's ARGV for l (but the number of tokens wanted), built once per
// limit: limits come from the configuration, so there are few.
func (r *Redis) args(l Limit) []any {
	if a, ok := r.argv.Load(l); ok {
		return a.([]any)
	}
	a := []any{strconv.Itoa(l.Burst), strconv.FormatInt(l.Period.Microseconds(), 10)}
	if r.argvN.Load() < maxCachedLimits {
		r.argvN.Add(1)
		r.argv.Store(l, a)
	}
	return a
}

// maxCachedLimits bounds Redis.argv, should a caller build limits on the fly.
const maxCachedLimits = 64

// exec runs one batch. On one Redis server (a single node or a Sentinel-managed primary)
// the whole batch is one EVALSHA over every take's key, so Redis parses one command and
// starts the script once per batch; a Redis Cluster cannot run a script over keys in
// different slots, so there each take is its own EVALSHA, pipelined. Either way a take
// that meets NOSCRIPT (Redis restarted, or its script cache was flushed) is sent again
// as EVAL, which loads the script again.
func (r *Redis) exec(batch []*pendingTake) {
	// The batch lives as long as the longest-waiting caller may still want an answer.
	var deadline time.Time
	for _, t := range batch {
		if t.deadline.After(deadline) {
			deadline = t.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	if r.cluster {
		r.execEach(ctx, batch)
		return
	}
	keys := make([]string, len(batch))
	args := make([]any, 0, 3*len(batch))
	for i, t := range batch {
		keys[i] = t.key
		args = append(args, t.args[0], t.args[1], t.want)
	}
	cmd := r.script.EvalSha(ctx, r.client, keys, args...)
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		r.logger.Info("rate-limit script not in Redis's script cache; loading it")
		cmd = r.script.Eval(ctx, r.client, keys, args...)
	}
	v, err := cmd.Int64Slice()
	if err == nil && len(v) != 4*len(batch) {
		err = fmt.Errorf("script returned %d values for %d takes", len(v), len(batch))
	}
	for i, t := range batch {
		if err != nil {
			t.done <- takeReply{err: err}
			continue
		}
		t.done <- takeReply{v: v[4*i : 4*i+4 : 4*i+4]}
	}
}

// execEach runs a batch as one pipeline of single-key EVALSHA (Redis Cluster).
func (r *Redis) execEach(ctx context.Context, batch []*pendingTake) {
	cmds := make([]*redis.Cmd, len(batch))
	pipe := r.client.Pipeline()
	for i, t := range batch {
		cmds[i] = r.script.EvalSha(ctx, pipe, []string{t.key}, t.args[0], t.args[1], t.want)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error

	var reload []int
	for i, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			reload = append(reload, i)
		}
	}
	if len(reload) > 0 {
		r.logger.Info("rate-limit script not in Redis's script cache; loading it")
		pipe := r.client.Pipeline()
		for _, i := range reload {
			t := batch[i]
			cmds[i] = r.script.Eval(ctx, pipe, []string{t.key}, t.args[0], t.args[1], t.want)
		}
		_, _ = pipe.Exec(ctx)
	}
	for i, t := range batch {
		v, err := cmds[i].Int64Slice()
		t.done <- takeReply{v, err}
	}
}

// pendingTake is one take waiting for its batch.
type pendingTake struct {
	ctx      context.Context
	deadline time.Time
	key      string
	args     []any          // burst and period; shared: read only
	want     int            // tokens wanted, at least 1
	done     chan takeReply // buffered: the batch never waits for a caller that gave up
	timer    *time.Timer    // the caller's deadline
}

type takeReply struct {
	v   []int64
	err error
}

// Batching bounds.
const (
	// maxWorkers bounds the batches in Redis at once. One is the rule: the round trip of
	// a batch is the time in which the next one fills, so batches are as deep, and
	// takes as cheap, as the load allows. Another batch starts beside it only when it
	// has been out for longer than a quarter of the take timeout, so one stuck
	// connection does not hold every take up until its own timeout.
	maxWorkers = 4
	// maxBatch bounds one pipeline.
	maxBatch = 256
	// maxQueued bounds the takes waiting for a batch; beyond it Redis is not keeping up
	// and a take fails at once (ErrUnavailable) instead of waiting out its timeout.
	maxQueued = 1 << 16
	// workerIdle is how long a batch goroutine waits for work before it ends.
	workerIdle = 5 * time.Second
)

var errQueueFull = errors.New("too many takes waiting for Redis")

// batcher hands queued takes to batch goroutines, each of which sends everything queued
// (up to maxBatch) as one batch, again and again until the queue is empty; then it waits
// up to workerIdle for more and ends.
type batcher struct {
	run   func([]*pendingTake)
	stall time.Duration // a batch out this long lets another one start beside it
	// linger is how long an idle goroutine waits for work before it ends (workerIdle
	// if 0).
	linger time.Duration

	mu      sync.Mutex
	queue   []*pendingTake
	workers int       // goroutines alive
	idle    int       // of which waiting for work
	taken   time.Time // when a goroutine last took a batch from the queue
	takenBy int       // and which (work's id)
	nextID  int
	wake    chan struct{} // one token per idle worker claimed by enqueue; sent under mu
}

// enqueue queues t and makes sure a goroutine will send it.
func (b *batcher) enqueue(t *pendingTake) error {
	b.mu.Lock()
	if len(b.queue) >= maxQueued {
		b.mu.Unlock()
		return errQueueFull
	}
	b.queue = append(b.queue, t)
	switch {
	case b.idle > 0:
		b.idle--
		b.wake <- struct{}{} // never blocks: at most one token per idle worker
	case b.workers == 0 || b.workers < maxWorkers && time.Since(b.taken) > b.stall:
		if b.wake == nil {
			b.wake = make(chan struct{}, maxWorkers)
		}
		b.workers++
		b.nextID++
		go b.work(b.nextID)
	}
	// Otherwise the running batch is not late: its goroutine takes the queue next.
	b.mu.Unlock()
	return nil
}

func (b *batcher) work(id int) {
	linger := b.linger
	if linger == 0 {
		linger = workerIdle
	}
	idle := time.NewTimer(linger)
	defer idle.Stop()
	var batch []*pendingTake
	for {
		b.mu.Lock()
		if b.workers > 1 && b.takenBy != id && time.Since(b.taken) <= b.stall {
			// Another goroutine is sending batches on time: back to one batch at a
			// time, the deepest. What is queued is taken by a busy goroutine when its
			// batch is done, or by an idle one woken here.
			b.workers--
			if len(b.queue) > 0 && b.idle > 0 {
				b.idle--
				b.wake <- struct{}{}
			}
			b.mu.Unlock()
			return
		}
		if len(b.queue) == 0 {
			b.idle++
			b.mu.Unlock()
			idle.Reset(linger)
			select {
			case <-b.wake:
				continue
			case <-idle.C:
			}
			b.mu.Lock()
			select {
			case <-b.wake: // claimed as the timer fired: stay and serve it
				b.mu.Unlock()
				continue
			default:
			}
			b.idle--
			b.workers--
			b.mu.Unlock()
			return
		}
		if len(b.queue) <= maxBatch {
			// Take the whole queue and leave this goroutine's spare array in its place.
			batch, b.queue = b.queue, batch[:0]
		} else {
			batch = append(batch[:0], b.queue[:maxBatch]...)
			n := copy(b.queue, b.queue[maxBatch:])
			clear(b.queue[n:])
			b.queue = b.queue[:n]
		}
		b.taken, b.takenBy = time.Now(), id
		b.mu.Unlock()

		// Callers that gave up (deadline passed, request cancelled) are not sent.
		now := time.Now()
		live := batch[:0]
		for _, t := range batch {
			if now.Before(t.deadline) && t.ctx.Err() == nil {
				live = append(live, t)
			}
		}
		if len(live) > 0 {
			b.run(live)
		}
		clear(batch)
		batch = batch[:0]
	}
}
