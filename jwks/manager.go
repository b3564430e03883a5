package jwks

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Manager. Zero values take the defaults named on each field.
type Options struct {
	// Alg is JWT_ALG: RS256 (default), PS256, ES256 or EdDSA. It is the only
	// algorithm the Manager signs or accepts.
	Alg string
	// Issuer (JWT_ISSUER) and Audience (JWT_AUDIENCE) go into every access token and
	// are checked on every verification. Both are required.
	Issuer   string
	Audience string
	// AccessTTL is ACCESS_TOKEN_TTL (default 15 minutes); PreAuthTTL the life of an
	// MFA pre-auth token (default 5 minutes).
	AccessTTL  time.Duration
	PreAuthTTL time.Duration
	// JWKSMaxAge is the Cache-Control max-age of the JWKS and discovery documents
	// (default 5 minutes): the "cache lifetime" a rotation waits out.
	JWKSMaxAge time.Duration
	// PollInterval is how often Watch looks at the key files (default 2 s).
	PollInterval time.Duration

	Now        func() time.Time      // default time.Now
	Logger     *slog.Logger          // default: discard
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
}

// Manager holds the current key set and signs and verifies with it. The key set is
// swapped atomically on Reload: a verification in flight finishes with the set it
// started with, and no request waits for a reload.
type Manager struct {
	src        Source
	alg        jwa.SignatureAlgorithm
	verifier   jws.Verifier
	issuer     string
	audience   string
	accessTTL  time.Duration
	preAuthTTL time.Duration
	maxAge     time.Duration
	poll       time.Duration
	now        func() time.Time
	log        *slog.Logger
	metrics    *metrics

	set  atomic.Pointer[keySet]
	gens atomic.Uint64 // key sets loaded so far

	reloadMu sync.Mutex
	loadedFP string // fingerprint of the key files at the last load; under reloadMu
}

// keySet is one immutable generation of keys.
type keySet struct {
	signer   *parsedKey                  // nil: this replica only verifies
	keys     map[string]crypto.PublicKey // by kid
	jwks     []byte                      // the JWK Set document
	etag     string
	loadedAt time.Time
	gen      uint64 // Generation
	// headers are the header segments of tokens that verified with this set, parsed:
	// the tokens of one key share one, so its JSON is decoded once. At most
	// maxCachedHeaders, and only from tokens whose signature verified, so a client
	// cannot fill it.
	headers atomic.Pointer[map[string]header]
}

// maxCachedHeaders bounds keySet.headers: one per key and typ is what authd issues.
const maxCachedHeaders = 16

// header returns the parsed header segment seg, if a token that verified carried it.
func (s *keySet) header(seg string) (header, bool) {
	if m := s.headers.Load(); m != nil {
		h, ok := (*m)[seg]
		return h, ok
	}
	return header{}, false
}

// rememberHeader caches h under seg once a token carrying it verified.
func (s *keySet) rememberHeader(seg string, h header) {
	for {
		old := s.headers.Load()
		var n int
		if old != nil {
			n = len(*old)
		}
		if n >= maxCachedHeaders {
			return
		}
		m := make(map[string]header, n+1)
		if old != nil {
			for k, v := range *old {
				m[k] = v
			}
		}
		m[seg] = h
		if s.headers.CompareAndSwap(old, &m) {
			return
		}
	}
}

// New checks opts, loads the keys of src and returns a Manager serving them.
func New(src Source, opts Options) (*Manager, error) {
	alg, err := parseAlg(opts.Alg)
	if err != nil {
		return nil, err
	}
	if opts.Issuer == "" || opts.Audience == "" {
		return nil, errors.New("jwks: issuer and audience are required")
	}
	// The verifier is looked up once; it is stateless and safe for concurrent use.
	verifier, err := jws.NewVerifier(alg)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	m := &Manager{
		src:        src,
		alg:        alg,
		verifier:   verifier,
		issuer:     opts.Issuer,
		audience:   opts.Audience,
		accessTTL:  orDefault(opts.AccessTTL, 15*time.Minute),
		preAuthTTL: orDefault(opts.PreAuthTTL, 5*time.Minute),
		maxAge:     orDefault(opts.JWKSMaxAge, 5*time.Minute),
		poll:       orDefault(opts.PollInterval, 2*time.Second),
		now:        opts.Now,
		log:        opts.Logger,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.metrics = newMetrics(m)
	if err := m.Reload(); err != nil {
		return nil, err
	}
	if opts.Registerer != nil {
		if err := m.metrics.register(opts.Registerer); err != nil {
			return nil, fmt.Errorf("jwks: metrics: %w", err)
		}
	}
	return m, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Alg is the signing and verification algorithm, e.g. "RS256".
func (m *Manager) Alg() string { return m.alg.String() }

// Generation numbers the key set in service: it grows with every successful load, so a
// cache of verified tokens can tell that the keys changed (a key removed takes its tokens
// with it) and verify again.
func (m *Manager) Generation() uint64 { return m.set.Load().gen }

// Reload reads the key source again and swaps the new set in. On any error (a bad
// or half-written key, a missing directory) the error is logged and returned and the
// current set stays in service: a typo must not lock every user out.
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	return m.reloadLocked()
}

func (m *Manager) reloadLocked() error {
	m.loadedFP = fingerprint(m.src)
	set, err := m.load()
	if err != nil {
		m.metrics.reloads.WithLabelValues("error").Inc()
		if m.set.Load() != nil {
			m.log.Error("key reload failed; keeping the current key set", "err", err)
		}
		return err
	}
	set.gen = m.gens.Add(1)
	m.set.Store(set)
	m.metrics.reloads.WithLabelValues("ok").Inc()
	signing := ""
	if set.signer != nil {
		signing = set.signer.kid
	} else {
		m.log.Warn("no private key: tokens can be verified but not issued")
	}
	m.log.Info("key set loaded", "alg", m.alg.String(), "signing_kid", signing, "keys", len(set.keys))
	return nil
}

func (m *Manager) load() (*keySet, error) {
	keys, signer, err := loadKeys(m.src, m.alg, m.now())
	if err != nil {
		return nil, err
	}
	set := &keySet{
		signer:   signer,
		keys:     make(map[string]crypto.PublicKey, len(keys)),
		loadedAt: m.now(),
	}
	unique := keys[:0:0]
	for _, k := range keys {
		if _, dup := set.keys[k.kid]; dup {
			continue // the public half of a pair already read
		}
		set.keys[k.kid] = k.pub
		unique = append(unique, k)
	}
	if set.jwks, err = jwksDocument(unique, m.alg); err != nil {
		return nil, fmt.Errorf("jwks: render key set: %w", err)
	}
	set.etag = etagOf(set.jwks)
	return set, nil
}

func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}

// Watch reloads the key set on every value received from hup (the caller forwards
// SIGHUP: signal.Notify(hup, syscall.SIGHUP)) and, when keys come from files (a
// key directory or the *_FILE paths), whenever one is added, removed or changed.
// Files are polled every PollInterval: no inotify dependency, and it works on
// network and Kubernetes secret volumes. It returns when ctx is done. hup may be nil.
func (m *Manager) Watch(ctx context.Context, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if m.src.dir() != "" || m.src.PrivateFile != "" || m.src.PublicFile != "" {
		t := time.NewTicker(m.poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			m.log.Info("reloading keys on signal")
			_ = m.Reload()
		case <-tick:
			m.reloadMu.Lock()
			if fingerprint(m.src) != m.loadedFP {
				m.log.Info("key files changed; reloading")
				_ = m.reloadLocked()
			}
			m.reloadMu.Unlock()
		}
	}
}

// metrics are the Manager's Prometheus collectors. Labels never carry a token.
type metrics struct {
	reloads *prometheus.CounterVec
	verify  *prometheus.CounterVec
	age     prometheus.GaugeFunc
	keys    prometheus.GaugeFunc

	// Counters resolved once per token kind and outcome, so the hot path does no
	// label hashing.
	outcomes map[string]map[string]prometheus.Counter
}

func newMetrics(m *Manager) *metrics {
	mt := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_jwks_reloads_total",
			Help: "Key set loads, by result (ok or error; on error the previous set stays).",
		}, []string{"result"}),
		verify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_jwks_verify_total",
			Help: "Token verifications by token kind and result (ok or the refusal reason).",
		}, []string{"token", "result"}),
		age: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "authd_jwks_key_set_age_seconds",
			Help: "Seconds since the key set in service was loaded.",
		}, func() float64 {
			if s := m.set.Load(); s != nil {
				return m.now().Sub(s.loadedAt).Seconds()
			}
			return 0
		}),
		keys: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "authd_jwks_verification_keys",
			Help: "Keys in the key set in service (all verify; at most one signs).",
		}, func() float64 {
			if s := m.set.Load(); s != nil {
				return float64(len(s.keys))
			}
			return 0
		}),
		outcomes: map[string]map[string]prometheus.Counter{},
	}
	for _, kind := range []string{kindAccess, kindPreAuth} {
		mt.outcomes[kind] = map[string]prometheus.Counter{"ok": mt.verify.WithLabelValues(kind, "ok")}
		for _, e := range verifyErrors {
			mt.outcomes[kind][e.reason] = mt.verify.WithLabelValues(kind, e.reason)
		}
	}
	return mt
}

func (mt *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{mt.reloads, mt.verify, mt.age, mt.keys} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (mt *metrics) observe(kind string, err error) {
	if c := mt.outcomes[kind][Reason(err)]; c != nil {
		c.Inc()
	}
}

// maxAgeHeader is the Cache-Control value of the public documents.
func (m *Manager) maxAgeHeader() string {
	return "public, max-age=" + strconv.Itoa(int(m.maxAge/time.Second))
}
