package extauthz

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the cache and tier metrics.
const (
	cacheToken   = "token"
	cacheSession = "session"
	cacheStamp   = "stamp"

	tierRedis = "redis"
	tierStore = "store"

	resultHit   = "hit"
	resultMiss  = "miss"
	resultRead  = "read"
	resultError = "error"
)

func hitOrMiss(ok bool) string {
	if ok {
		return resultHit
	}
	return resultMiss
}

// metrics are the check path's collectors. The counters the hot path touches are
// resolved once, so a check does no label hashing.
type metrics struct {
	decisions  *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	cache      *prometheus.CounterVec
	tiers      *prometheus.CounterVec
	messages   *prometheus.CounterVec
	subscribed prometheus.Gauge

	decisionC map[decisionLabels]prometheus.Counter // read-only after newMetrics
	latencyO  map[string]prometheus.Observer
	cacheC    map[string][2]prometheus.Counter // [miss, hit]
}

type decisionLabels struct{ adapter, outcome, reason string }

func newMetrics() *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_authz_decisions_total",
			Help: "Check-path decisions by adapter, outcome (allow or deny) and reason.",
		}, []string{"adapter", "outcome", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "authd_authz_check_duration_seconds",
			Help:    "Time to decide one check, by adapter (transport not included).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"adapter"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_authz_cache_lookups_total",
			Help: "In-process cache look-ups on the check path by cache (token, session, stamp) and result (hit, miss); hit ratio = hit / (hit + miss).",
		}, []string{"cache", "result"}),
		tiers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_authz_state_reads_total",
			Help: "Session-state reads past the in-process cache, by tier (redis, store) and result (hit, miss, read, error).",
		}, []string{"tier", "result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authd_authz_revocation_messages_total",
			Help: "Revocation messages received from the bus, by type.",
		}, []string{"type"}),
		subscribed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authd_authz_revocation_subscribed",
			Help: "1 while the revocation subscription is up; 0 while messages may be missed (cache TTL capped).",
		}),
		decisionC: map[decisionLabels]prometheus.Counter{},
		latencyO:  map[string]prometheus.Observer{},
		cacheC:    map[string][2]prometheus.Counter{},
	}
	for _, a := range adapters {
		m.latencyO[a] = m.latency.WithLabelValues(a)
		for reason, allow := range reasonOutcome {
			l := decisionLabels{a, outcome(allow), reason}
			m.decisionC[l] = m.decisions.WithLabelValues(l.adapter, l.outcome, l.reason)
		}
	}
	for _, c := range []string{cacheToken, cacheSession, cacheStamp} {
		m.cacheC[c] = [2]prometheus.Counter{m.cache.WithLabelValues(c, resultMiss), m.cache.WithLabelValues(c, resultHit)}
	}
	return m
}

func outcome(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.decisions, m.latency, m.cache, m.tiers, m.messages, m.subscribed} {
		if err := r.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return errors.New("extauthz: metrics already registered: build one Checker per registry")
			}
			return err
		}
	}
	return nil
}

func (m *metrics) decision(adapter string, d *Decision, took time.Duration) {
	l := decisionLabels{adapter, outcome(d.Allow), d.Reason}
	if c, ok := m.decisionC[l]; ok {
		c.Inc()
	} else {
		m.decisions.WithLabelValues(l.adapter, l.outcome, l.reason).Inc()
	}
	if o, ok := m.latencyO[adapter]; ok {
		o.Observe(took.Seconds())
	} else {
		m.latency.WithLabelValues(adapter).Observe(took.Seconds())
	}
}

func (m *metrics) cacheResult(cache string, hit bool) {
	if hit {
		m.cacheC[cache][1].Inc()
	} else {
		m.cacheC[cache][0].Inc()
	}
}

func (m *metrics) tier(tier, result string) { m.tiers.WithLabelValues(tier, result).Inc() }

func (m *metrics) message(typ string) {
	switch typ {
	case "session_revoked", "stamp_rotated":
	default:
		typ = "other"
	}
	m.messages.WithLabelValues(typ).Inc()
}

func (m *metrics) setSubscribed(up bool) {
	if up {
		m.subscribed.Set(1)
	} else {
		m.subscribed.Set(0)
	}
}
