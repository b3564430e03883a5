package authn

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/store"
)

// Audit event names (DESIGN §3).
const (
	EventRegister           = "REGISTER"
	EventLoginSuccess       = "LOGIN_SUCCESS"
	EventLoginFailed        = "LOGIN_FAILED"
	EventAccountLocked      = "ACCOUNT_LOCKED"
	EventAccountUnlocked    = "ACCOUNT_UNLOCKED"
	EventMFAEnabled         = "MFA_ENABLED"
	EventMFADisabled        = "MFA_DISABLED"
	EventMFAFailed          = "MFA_FAILED"
	EventPasswordChanged    = "PASSWORD_CHANGED"
	EventLogout             = "LOGOUT"
	EventTokenRefreshed     = "TOKEN_REFRESHED"
	EventTokenReuse         = "TOKEN_REUSE_DETECTED"
	EventSessionRevoked     = "SESSION_REVOKED"
	EventHijackSuspected    = "SESSION_HIJACK_SUSPECTED"
	EventSuspiciousActivity = "SUSPICIOUS_ACTIVITY"
	EventRateLimited        = "RATE_LIMITED"
)

// baseRisk is each event's risk score before signals are added (README "Audit log").
var baseRisk = map[string]int{
	EventRegister:           10,
	EventLoginSuccess:       0,
	EventLoginFailed:        30,
	EventAccountLocked:      60,
	EventAccountUnlocked:    20,
	EventMFAEnabled:         10,
	EventMFADisabled:        50,
	EventMFAFailed:          40,
	EventPasswordChanged:    30,
	EventLogout:             0,
	EventTokenRefreshed:     0,
	EventTokenReuse:         90,
	EventSessionRevoked:     10,
	EventHijackSuspected:    90,
	EventSuspiciousActivity: 80,
	EventRateLimited:        40,
}

// riskSignals are the observations that raise an event's score.
type riskSignals struct {
	NewDevice      bool // no live session of the user has this fingerprint
	NewIP          bool // no live session of the user has this IP
	RecentFailures int  // consecutive failures before this event
}

// riskScore adds the signals to the event's base and caps the result at 100:
// new device +20, new IP +10, +5 per recent failure up to +25.
func riskScore(event string, s riskSignals) int {
	score := baseRisk[event]
	if s.NewDevice {
		score += 20
	}
	if s.NewIP {
		score += 10
	}
	score += min(5*s.RecentFailures, 25)
	return min(score, 100)
}

// requestMeta is what the audit log and sessions record about the caller.
type requestMeta struct {
	IP          string
	UserAgent   string
	Fingerprint string
	DeviceName  string
}

// auditor writes audit rows. Events tied to a state change are written in that change's
// transaction (so neither exists without the other); the rest go through a bounded queue
// to one writer goroutine, so a slow database never holds a response for long. A write that
// fails, or an event the full queue cannot take, is logged and counted, never silent.
type auditor struct {
	st      store.Store
	now     func() time.Time
	logger  *slog.Logger
	queue   chan store.AuditEvent
	failed  prometheus.Counter
	dropped prometheus.Counter
	wg      sync.WaitGroup
	mu      sync.RWMutex // guards closed against sends on a closed queue
	closed  bool
}

func newAuditor(st store.Store, now func() time.Time, logger *slog.Logger, reg prometheus.Registerer) *auditor {
	a := &auditor{
		st:     st,
		now:    now,
		logger: logger,
		queue:  make(chan store.AuditEvent, 1024),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authd_audit_write_failures_total",
			Help: "Audit rows that could not be written (each is also logged).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authd_audit_queue_overflow_total",
			Help: "Audit rows written synchronously because the queue was full.",
		}),
	}
	if reg != nil {
		reg.MustRegister(a.failed, a.dropped)
	}
	a.wg.Add(1)
	go a.run()
	return a
}

func (a *auditor) event(event, userID string, m requestMeta, s riskSignals, details map[string]any) store.AuditEvent {
	var raw json.RawMessage
	if len(details) > 0 {
		raw, _ = json.Marshal(details)
	}
	return store.AuditEvent{
		ID:        newID(),
		Event:     event,
		UserID:    userID,
		IP:        m.IP,
		UserAgent: truncateString(m.UserAgent, 512),
		RiskScore: riskScore(event, s),
		Details:   raw,
		CreatedAt: a.now().UTC(),
	}
}

// inTx writes e in the caller's transaction.
func (a *auditor) inTx(ctx context.Context, tx store.Tx, e store.AuditEvent) error {
	return tx.AppendAudit(ctx, e)
}

// async queues e. When the queue is full it writes e itself with a short deadline rather
// than drop it.
func (a *auditor) async(e store.AuditEvent) {
	a.mu.RLock()
	if !a.closed {
		select {
		case a.queue <- e:
			a.mu.RUnlock()
			return
		default:
			a.dropped.Inc()
		}
	}
	a.mu.RUnlock()
	a.write(e)
}

func (a *auditor) run() {
	defer a.wg.Done()
	for e := range a.queue {
		a.write(e)
	}
}

func (a *auditor) write(e store.AuditEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.st.AppendAudit(ctx, e); err != nil {
		a.failed.Inc()
		a.logger.Error("audit write failed", "event", e.Event, "user_id", e.UserID, "audit_id", e.ID, "error", err)
	}
}

// close drains the queue; events recorded after close are written synchronously.
func (a *auditor) close() {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
