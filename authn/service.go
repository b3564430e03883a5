// Package authn owns accounts: passwords, sessions, refresh rotation, the security stamp,
// lockout, the honeypot, MFA and audit events, and the /api/auth handlers that expose them.
package authn

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authd/authd/authn/password"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
)

// Tokens signs and verifies the JWTs the account API hands out; *jwks.Manager is one.
type Tokens interface {
	SignAccess(c jwks.AccessClaims) (token string, expires time.Time, err error)
	VerifyAccess(token string) (jwks.AccessClaims, error)
	SignPreAuth(c jwks.PreAuthClaims) (token string, expires time.Time, err error)
	VerifyPreAuth(token string) (jwks.PreAuthClaims, error)
}

// Options are the account rules from configuration.
type Options struct {
	RefreshTTL       time.Duration   // a refresh token's life (30 days)
	SessionTTL       time.Duration   // a session's absolute life (90 days)
	LockoutThreshold int             // consecutive failures before a lock (5)
	LockoutDurations []time.Duration // lock lengths for the 1st, 2nd, … lock; the last repeats
	SingleSession    bool            // each login ends every other session
	MFAIssuer        string          // the issuer shown in authenticator apps
}

// Deps are the collaborators of the service.
type Deps struct {
	Store    store.Store
	Hasher   *password.Hasher
	Policy   *password.Policy
	Tokens   Tokens
	Bus      revocation.Bus
	Secrets  SecretBox // encrypts TOTP secrets at rest; may be nil until MFA is used
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
	Rand     io.Reader
}

// Service implements the account operations. It knows nothing of HTTP.
type Service struct {
	st      store.Store
	hasher  *password.Hasher
	policy  *password.Policy
	tokens  Tokens
	bus     revocation.Bus
	secrets SecretBox
	log     *slog.Logger
	now     func() time.Time
	rand    io.Reader
	opts    Options
	audit   *auditor

	publishFailures prometheus.Counter
}

// New builds the service. Close it to flush the audit queue.
func New(d Deps, o Options) (*Service, error) {
	if d.Store == nil || d.Hasher == nil || d.Policy == nil || d.Tokens == nil || d.Bus == nil {
		return nil, errors.New("authn: Store, Hasher, Policy, Tokens and Bus are required")
	}
	if o.LockoutThreshold < 1 || len(o.LockoutDurations) == 0 {
		return nil, errors.New("authn: a lockout threshold and at least one lockout duration are required")
	}
	if o.RefreshTTL <= 0 || o.SessionTTL <= 0 {
		return nil, errors.New("authn: RefreshTTL and SessionTTL must be positive")
	}
	if o.MFAIssuer == "" {
		o.MFAIssuer = "authd"
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Rand == nil {
		d.Rand = rand.Reader
	}
	s := &Service{
		st: d.Store, hasher: d.Hasher, policy: d.Policy, tokens: d.Tokens, bus: d.Bus, secrets: d.Secrets,
		log: d.Logger, now: func() time.Time { return d.Now().UTC().Truncate(time.Microsecond) }, rand: d.Rand, opts: o,
		publishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "authd_revocation_publish_failures_total",
			Help: "Revocation or stamp-rotation messages that could not be published (caches expire them by TTL).",
		}),
	}
	s.audit = newAuditor(d.Store, s.now, d.Logger, d.Registry)
	if d.Registry != nil {
		d.Registry.MustRegister(s.publishFailures)
	}
	return s, nil
}

// Close flushes queued audit events.
func (s *Service) Close() { s.audit.close() }

// TokenResponse is what a successful login, MFA step or refresh returns.
type TokenResponse struct {
	Status           string `json:"status"`
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
	SessionID        string `json:"session_id"`
}

// Principal is the caller behind a verified bearer token whose session is live and whose
// stamp is current.
type Principal struct {
	User    store.User
	Session store.Session
	Claims  jwks.AccessClaims
}

// Authenticate verifies a bearer access token and checks, against the store, that its
// session is live and its security stamp current.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, ErrInvalidToken
	}
	c, err := s.tokens.VerifyAccess(token)
	if err != nil {
		return Principal{}, ErrInvalidToken
	}
	sess, err := s.st.GetSession(ctx, c.SessionID)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrInvalidToken
	}
	if err != nil {
		return Principal{}, err
	}
	if sess.UserID != c.Subject {
		return Principal{}, ErrInvalidToken
	}
	if !sess.Live(s.now()) {
		return Principal{}, ErrSessionRevoked
	}
	u, err := s.st.GetUser(ctx, c.Subject)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrInvalidToken
	}
	if err != nil {
		return Principal{}, err
	}
	if u.SecurityStamp != c.Stamp {
		return Principal{}, ErrSessionRevoked
	}
	return Principal{User: u, Session: sess, Claims: c}, nil
}

// issue signs an access token for the session and returns the token response around the
// refresh token the caller created.
func (s *Service) issue(u store.User, sess store.Session, refresh string, refreshExpires time.Time) (TokenResponse, error) {
	access, exp, err := s.tokens.SignAccess(jwks.AccessClaims{
		Subject:   u.ID,
		Email:     u.Email,
		SessionID: sess.ID,
		Stamp:     u.SecurityStamp,
		AMR:       sess.AMR,
	})
	if err != nil {
		return TokenResponse{}, fmt.Errorf("sign access token: %w", err)
	}
	now := s.now()
	return TokenResponse{
		Status:           "AUTHENTICATED",
		AccessToken:      access,
		TokenType:        "Bearer",
		ExpiresIn:        int64(exp.Sub(now).Round(time.Second) / time.Second),
		RefreshToken:     refresh,
		RefreshExpiresIn: int64(refreshExpires.Sub(now).Round(time.Second) / time.Second),
		SessionID:        sess.ID,
	}, nil
}

// newRefresh creates (in tx) the next refresh token of a session, never outliving it.
func (s *Service) newRefresh(ctx context.Context, tx store.Tx, sess store.Session) (token string, rt store.RefreshToken, err error) {
	return s.newRefreshID(ctx, tx, sess, newID())
}

// newRefreshID is newRefresh with the id chosen by the caller.
func (s *Service) newRefreshID(ctx context.Context, tx store.Tx, sess store.Session, id string) (token string, rt store.RefreshToken, err error) {
	token, hash, err := newRefreshToken(s.rand)
	if err != nil {
		return "", store.RefreshToken{}, err
	}
	now := s.now()
	exp := now.Add(s.opts.RefreshTTL)
	if exp.After(sess.ExpiresAt) {
		exp = sess.ExpiresAt
	}
	rt = store.RefreshToken{ID: id, SessionID: sess.ID, TokenHash: hash, IssuedAt: now, ExpiresAt: exp}
	if err := tx.CreateRefreshToken(ctx, rt); err != nil {
		return "", store.RefreshToken{}, err
	}
	return token, rt, nil
}

// publish tells every replica's check-path cache about revocations after their
// transaction committed. A failure is logged and counted; caches expire by TTL.
func (s *Service) publish(msgs ...revocation.Message) {
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.bus.Publish(ctx, msgs...); err != nil {
		s.publishFailures.Inc()
		s.log.Warn("publishing revocations failed; caches will expire them by TTL", "error", err, "messages", len(msgs))
	}
}

func revokedMessages(sids []string) []revocation.Message {
	msgs := make([]revocation.Message, len(sids))
	for i, sid := range sids {
		msgs[i] = revocation.SessionRevoked(sid)
	}
	return msgs
}

// rotateStamp gives the user a new security stamp in tx.
func (s *Service) rotateStamp(ctx context.Context, tx store.Tx, userID string, change func(*store.User) error) (store.User, error) {
	stamp, err := newStamp(s.now(), s.rand)
	if err != nil {
		return store.User{}, err
	}
	return tx.UpdateUser(ctx, userID, func(u store.User) (store.User, error) {
		u.SecurityStamp = stamp
		u.UpdatedAt = s.now()
		u.PreAuthJTI, u.PreAuthTries = "", 0 // a pending MFA login does not survive either
		if change != nil {
			if err := change(&u); err != nil {
				return u, err
			}
		}
		return u, nil
	})
}

func (s *Service) hashErr(err error) error {
	if errors.Is(err, password.ErrOverloaded) {
		return ErrOverloaded
	}
	return err
}
