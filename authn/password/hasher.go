// Package password owns user passwords: the policy a new password must meet, and its Argon2id
// hashing and verification behind a memory-bounded queue.
//
// Every function here normalises a password to NFKC before counting or hashing it, so NFC and
// NFD spellings of the same password match. No error, log or metric carries a password.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/argon2"
)

// ErrOverloaded means the hashing queue is full or the wait for a slot passed MaxWait; the
// handler answers 503 overloaded. Nothing was hashed or verified.
var ErrOverloaded = errors.New("password: hashing overloaded")

// Hash refuses a password that Policy.Check would refuse for its length or encoding; these
// are a last defence, since the handler runs the policy first.
var (
	ErrTooLong     = errors.New("password: longer than 128 characters")
	ErrInvalidUTF8 = errors.New("password: not valid UTF-8")
)

// Defaults for Options.
const (
	DefaultMaxWait      = 2 * time.Second
	DefaultQueuePerSlot = 16 // MaxQueue defaults to this many waiters per concurrent hash
)

// Operations, as the duration histogram labels them.
const (
	opHash   = "hash"
	opVerify = "verify"
)

// Options configure a Hasher. The zero value gives the defaults.
type Options struct {
	// Params are the live parameters for new hashes; a zero field takes DefaultParams' value.
	Params Params

	// MaxConcurrent is how many hashes with the live parameters run at once; the memory
	// budget is MaxConcurrent × Params.Memory. Size it to the memory the process may spend on
	// hashing (64 MiB each with the defaults). Default max(1, runtime.NumCPU()).
	MaxConcurrent int

	// MaxWait bounds how long a caller waits for its turn before ErrOverloaded. Default 2 s.
	MaxWait time.Duration

	// MaxQueue bounds how many callers wait at once; one more gets ErrOverloaded at once.
	// Default DefaultQueuePerSlot × MaxConcurrent.
	MaxQueue int

	// Registerer receives the metrics; nil registers none. Never the default registry
	// unless the caller passes it.
	Registerer prometheus.Registerer

	// Rand supplies salts; it must be safe for concurrent use. Default crypto/rand.Reader.
	Rand io.Reader
}

// Hasher hashes and verifies passwords with Argon2id. It is safe for concurrent use.
type Hasher struct {
	params        Params
	maxConcurrent int
	rand          io.Reader
	gate          *gate
	dummy         string
	metrics       metrics
}

type metrics struct {
	queueDepth prometheus.Gauge
	duration   *prometheus.HistogramVec
	overloaded prometheus.Counter
}

// NewHasher validates opts and builds a Hasher, registering its metrics with
// opts.Registerer.
func NewHasher(opts Options) (*Hasher, error) {
	p := opts.Params
	d := DefaultParams()
	if p.Memory == 0 {
		p.Memory = d.Memory
	}
	if p.Time == 0 {
		p.Time = d.Time
	}
	if p.Threads == 0 {
		p.Threads = d.Threads
	}
	if p.SaltLen == 0 {
		p.SaltLen = d.SaltLen
	}
	if p.KeyLen == 0 {
		p.KeyLen = d.KeyLen
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("password: %w", err)
	}
	if p.SaltLen < 16 {
		return nil, fmt.Errorf("password: new hashes need a salt of at least 16 bytes, not %d", p.SaltLen)
	}
	if p.KeyLen < 16 {
		return nil, fmt.Errorf("password: new hashes need a tag of at least 16 bytes, not %d", p.KeyLen)
	}

	maxConcurrent := opts.MaxConcurrent
	if maxConcurrent == 0 {
		maxConcurrent = max(1, runtime.NumCPU())
	}
	if maxConcurrent < 0 {
		return nil, fmt.Errorf("password: MaxConcurrent %d is negative", maxConcurrent)
	}
	maxWait := opts.MaxWait
	if maxWait == 0 {
		maxWait = DefaultMaxWait
	}
	if maxWait < 0 {
		return nil, fmt.Errorf("password: MaxWait %s is negative", maxWait)
	}
	maxQueue := opts.MaxQueue
	if maxQueue == 0 {
		maxQueue = DefaultQueuePerSlot * maxConcurrent
	}
	if maxQueue < 0 {
		return nil, fmt.Errorf("password: MaxQueue %d is negative", maxQueue)
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}

	m := metrics{
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "authd", Subsystem: "password",
			Name: "hash_queue_depth",
			Help: "Callers waiting for an Argon2 slot.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "authd", Subsystem: "password",
			Name:    "hash_duration_seconds",
			Help:    "Time spent computing Argon2id, without the wait for a slot; op is hash or verify (unknown-email checks count as verify).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12), // 5 ms to 10 s,
		}, []string{"op"}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "authd", Subsystem: "password",
			Name: "hash_overloaded_total",
			Help: "Hash or verify calls refused because the Argon2 queue was full or the wait too long.",
		}),
	}
	if reg := opts.Registerer; reg != nil {
		for _, c := range []prometheus.Collector{m.queueDepth, m.duration, m.overloaded} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("password: registering metrics: %w", err)
			}
		}
	}

	h := &Hasher{
		params:        p,
		maxConcurrent: maxConcurrent,
		rand:          rnd,
		metrics:       m,
	}
	h.gate = newGate(int64(maxConcurrent)*int64(p.Memory), maxQueue, maxWait,
		func(n int) { m.queueDepth.Set(float64(n)) })

	// The dummy hash that VerifyDummy checks: random salt and random tag with the live
	// parameters. Verifying costs one Argon2id derivation whether or not the tag ever came out
	// of Argon2, so this is as slow as a real hash and costs nothing to make; no password
	// matches it short of a preimage of a random tag.
	salt := make([]byte, p.SaltLen)
	key := make([]byte, p.KeyLen)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return nil, fmt.Errorf("password: reading random bytes: %w", err)
	}
	if _, err := io.ReadFull(rnd, key); err != nil {
		return nil, fmt.Errorf("password: reading random bytes: %w", err)
	}
	h.dummy = encodePHC(p, salt, key)
	return h, nil
}

// Params are the live parameters new hashes use.
func (h *Hasher) Params() Params { return h.params }

// MaxConcurrent is how many hashes with the live parameters may run at once.
func (h *Hasher) MaxConcurrent() int { return h.maxConcurrent }

// Hash normalises pw (NFKC) and returns its Argon2id hash as a PHC string with the live
// parameters and a fresh salt. It refuses invalid UTF-8 (ErrInvalidUTF8) and a password over
// 128 code points (ErrTooLong) but applies no other policy: run Policy.Check first. It waits
// for a slot like Verify: ErrOverloaded or ctx.Err() when it cannot get one.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	npw, err := prepare(pw)
	if err != nil {
		return "", err
	}
	salt := make([]byte, h.params.SaltLen)
	if _, err := io.ReadFull(h.rand, salt); err != nil {
		return "", fmt.Errorf("password: reading salt: %w", err)
	}
	key, err := h.derive(ctx, opHash, npw, salt, h.params)
	if err != nil {
		return "", err
	}
	return encodePHC(h.params, salt, key), nil
}

// Verify reports whether pw matches the PHC string encoded, which may have been made with any
// parameters within this package's limits (by this package or by argon2-cffi).
// needsRehash is true when pw matches but encoded's parameters (m, t, p, salt or tag length)
// differ from the live ones: the caller should store Hash(pw) now.
//
// A malformed or out-of-range encoded is ErrMalformedHash (before any hashing); a password
// that Hash would refuse (invalid UTF-8, over 128 code points) simply does not match. Waiting
// for a slot can end in ErrOverloaded or ctx.Err(). The comparison is constant-time.
func (h *Hasher) Verify(ctx context.Context, pw, encoded string) (ok, needsRehash bool, err error) {
	stored, err := parsePHC(encoded)
	if err != nil {
		return false, false, err
	}
	npw, err := prepare(pw)
	if err != nil {
		return false, false, nil
	}
	key, err := h.derive(ctx, opVerify, npw, stored.salt, stored.params)
	if err != nil {
		return false, false, err
	}
	if subtle.ConstantTimeCompare(key, stored.key) != 1 {
		return false, false, nil
	}
	return true, stored.params != h.params, nil
}

// VerifyDummy costs what Verify costs for a wrong password against a hash with the live
// parameters, and never matches. Call it when the email is unknown, so that an unknown email
// and a wrong password take the same time (no user enumeration by timing). Its error is
// Verify's: ErrOverloaded or ctx.Err().
func (h *Hasher) VerifyDummy(ctx context.Context, pw string) error {
	_, _, err := h.Verify(ctx, pw, h.dummy)
	return err
}

// derive runs Argon2id for npw under the gate, taking p.Memory of the budget (all of it when
// a stored hash asks for more than the budget, so it runs alone).
func (h *Hasher) derive(ctx context.Context, op, npw string, salt []byte, p Params) ([]byte, error) {
	weight := min(int64(p.Memory), h.gate.size)
	if err := h.gate.acquire(ctx, weight); err != nil {
		if errors.Is(err, ErrOverloaded) {
			h.metrics.overloaded.Inc()
		}
		return nil, err
	}
	defer h.gate.release(weight)

	secret := []byte(npw)
	defer clear(secret)
	start := time.Now()
	key := argon2.IDKey(secret, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	h.metrics.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	return key, nil
}
