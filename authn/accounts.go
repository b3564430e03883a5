package authn

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/authd/authd/authn/password"
	"github.com/authd/authd/problem"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
)

// RegisterInput is a validated-shape registration request.
type RegisterInput struct {
	Email, Password, FullName, Honeypot string
}

// Account is the public view of a user.
type Account struct {
	ID          string     `json:"id"`
	Email       string     `json:"email"`
	FullName    string     `json:"full_name"`
	MFAEnabled  bool       `json:"mfa_enabled"`
	CreatedAt   time.Time  `json:"created_at"`
	LastLoginAt *time.Time `json:"last_login_at"`
}

func accountOf(u store.User) Account {
	return Account{ID: u.ID, Email: u.Email, FullName: u.FullName, MFAEnabled: u.MFAEnabled,
		CreatedAt: u.CreatedAt, LastLoginAt: u.LastLoginAt}
}

const maxFullNameRunes = 200

// Register creates an account. A filled honeypot returns a plausible account that is not
// stored, and audits SUSPICIOUS_ACTIVITY.
func (s *Service) Register(ctx context.Context, in RegisterInput, m requestMeta) (Account, error) {
	email := NormalizeEmail(in.Email)
	errs := emailProblems(nil, in.Email, email)
	errs = s.newPasswordProblems(errs, "password", in.Password, email)
	if err := checkText(in.FullName, maxFullNameRunes); err != nil {
		errs = append(errs, problem.FieldError{Field: "full_name", Message: err.Error()})
	}
	if len(errs) > 0 {
		return Account{}, &ValidationError{Fields: errs}
	}
	now := s.now()
	u := store.User{ID: newID(), Email: email, FullName: in.FullName, CreatedAt: now, UpdatedAt: now}

	if in.Honeypot != "" {
		// Pay the same hash as a real registration so timing does not tell the bot.
		if _, err := s.hasher.Hash(ctx, in.Password); err != nil && errors.Is(err, password.ErrOverloaded) {
			return Account{}, ErrOverloaded
		}
		s.audit.async(s.audit.event(EventSuspiciousActivity, "", m, riskSignals{},
			map[string]any{"reason": "honeypot", "endpoint": "register"}))
		return accountOf(u), nil
	}

	hash, err := s.hasher.Hash(ctx, in.Password)
	if err != nil {
		return Account{}, s.hashErr(err)
	}
	u.PasswordHash = hash
	if u.SecurityStamp, err = newStamp(now, s.rand); err != nil {
		return Account{}, err
	}
	err = s.st.InTx(ctx, func(tx store.Tx) error {
		if err := tx.CreateUser(ctx, u); err != nil {
			return err
		}
		return s.audit.inTx(ctx, tx, s.audit.event(EventRegister, u.ID, m, riskSignals{}, nil))
	})
	if errors.Is(err, store.ErrConflict) {
		return Account{}, ErrEmailTaken
	}
	if err != nil {
		return Account{}, err
	}
	return accountOf(u), nil
}

// emailProblems appends what is wrong with an email field: raw as sent, email normalised.
func emailProblems(errs []problem.FieldError, raw, email string) []problem.FieldError {
	if raw == "" {
		return append(errs, problem.FieldError{Field: "email", Message: "is required"})
	}
	if err := checkEmail(email); err != nil {
		return append(errs, problem.FieldError{Field: "email", Message: err.Error()})
	}
	return errs
}

// newPasswordProblems appends the policy rule a new password breaks, named by its message.
func (s *Service) newPasswordProblems(errs []problem.FieldError, field, pw, email string) []problem.FieldError {
	if pw == "" {
		return append(errs, problem.FieldError{Field: field, Message: "is required"})
	}
	if err := s.policy.Check(pw, email); err != nil {
		msg := "is not acceptable"
		var re *password.RuleError
		if errors.As(err, &re) {
			msg = re.Message
		}
		return append(errs, problem.FieldError{Field: field, Message: msg})
	}
	return errs
}

// LoginInput is a login request.
type LoginInput struct {
	Email, Password, Honeypot, DeviceName string
}

// LoginResult is either tokens or, for an MFA account, the pre-auth step.
type LoginResult struct {
	Tokens  *TokenResponse
	PreAuth *PreAuthResponse
}

// PreAuthResponse asks the client for the second factor.
type PreAuthResponse struct {
	Status       string   `json:"status"`
	PreAuthToken string   `json:"pre_auth_token"`
	ExpiresIn    int64    `json:"expires_in"`
	Methods      []string `json:"methods"`
}

// Login checks a password. Unknown emails, wrong passwords, honeypot hits and too-long
// passwords all answer ErrInvalidCredentials after the same Argon2id work; a locked email
// answers *LockedError after it too, so neither status nor timing says whether an account
// exists.
func (s *Service) Login(ctx context.Context, in LoginInput, m requestMeta) (LoginResult, error) {
	email := NormalizeEmail(in.Email)
	// The shape alone is judged, the same for every address: nothing about accounts.
	errs := emailProblems(nil, in.Email, email)
	if in.Password == "" {
		errs = append(errs, problem.FieldError{Field: "password", Message: "is required"})
	}
	if err := checkText(in.DeviceName, 100); err != nil {
		errs = append(errs, problem.FieldError{Field: "device_name", Message: err.Error()})
	}
	if len(errs) > 0 {
		return LoginResult{}, &ValidationError{Fields: errs}
	}

	if in.Honeypot != "" {
		if err := s.hasher.VerifyDummy(ctx, in.Password); errors.Is(err, password.ErrOverloaded) {
			return LoginResult{}, ErrOverloaded
		}
		s.audit.async(s.audit.event(EventSuspiciousActivity, "", m, riskSignals{},
			map[string]any{"reason": "honeypot", "endpoint": "login", "email": email}))
		return LoginResult{}, ErrInvalidCredentials
	}

	// The attempt is counted before the hash is checked, atomically, so parallel guesses
	// cannot overrun the threshold; a success clears the count.
	att, err := s.reserveAttempt(ctx, email, m)
	if err != nil {
		return LoginResult{}, err
	}

	u, lookupErr := s.st.GetUserByEmail(ctx, email)
	if lookupErr != nil && !errors.Is(lookupErr, store.ErrNotFound) {
		return LoginResult{}, lookupErr
	}
	ok, rehash := false, false
	// A password no policy could have accepted is never hashed (it cannot be right).
	tooLong := len(in.Password) > 4096 || utf8.RuneCountInString(password.Normalize(in.Password)) > password.MaxLength
	switch {
	case tooLong:
		// Nothing is hashed: the answer is the same whether or not the account exists.
	case lookupErr != nil || att.locked:
		err = s.hasher.VerifyDummy(ctx, in.Password)
	default:
		ok, rehash, err = s.hasher.Verify(ctx, in.Password, u.PasswordHash)
	}
	if err != nil && !errors.Is(err, password.ErrTooLong) && !errors.Is(err, password.ErrInvalidUTF8) {
		if !att.locked {
			// Nothing was verified (overloaded, or the caller went away): not a failure.
			s.releaseAttempt(ctx, email, att)
		}
		return LoginResult{}, s.hashErr(err)
	}
	if att.locked {
		s.audit.async(s.audit.event(EventLoginFailed, u.ID, m, riskSignals{RecentFailures: s.opts.LockoutThreshold},
			map[string]any{"reason": "locked", "email": email}))
		return LoginResult{}, &LockedError{RetryAfter: att.retryAfter}
	}
	if !ok {
		reason := "wrong_password"
		if lookupErr != nil {
			reason = "unknown_email"
		}
		s.audit.async(s.audit.event(EventLoginFailed, u.ID, m, riskSignals{RecentFailures: att.failures},
			map[string]any{"reason": reason, "email": email}))
		return LoginResult{}, ErrInvalidCredentials
	}

	if rehash {
		if h, err := s.hasher.Hash(ctx, in.Password); err == nil {
			_, err = s.st.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
				if cur.PasswordHash == u.PasswordHash {
					cur.PasswordHash = h
				}
				return cur, nil
			})
			if err != nil {
				s.log.Warn("re-hash after login failed; will retry on the next login", "user_id", u.ID, "error", err)
			}
		}
	}

	if u.MFAEnabled {
		// The failure count is cleared only when the second factor is in too, so a new
		// login does not buy an attacker with the password fresh code guesses; but the
		// right password is no failure, so this attempt is taken back.
		s.releaseAttempt(ctx, email, att)
		pre, err := s.startPreAuth(ctx, u, m)
		if err != nil {
			return LoginResult{}, err
		}
		return LoginResult{PreAuth: &pre}, nil
	}
	if err := s.clearLockout(ctx, email); err != nil {
		return LoginResult{}, err
	}
	tr, err := s.startSession(ctx, u, []string{"pwd"}, m, att.failures, nil)
	if err != nil {
		return LoginResult{}, err
	}
	return LoginResult{Tokens: &tr}, nil
}

// attempt is the lockout state after counting one attempt.
type attempt struct {
	locked     bool
	retryAfter time.Duration
	failures   int  // failures before this attempt
	lockedNow  bool // this attempt reached the threshold and set the lock
}

// reserveAttempt counts one attempt for email. While the email is locked nothing is
// counted. The attempt that reaches the threshold locks the email, for the next lock
// duration in LockoutDurations; the lock is audited.
func (s *Service) reserveAttempt(ctx context.Context, email string, m requestMeta) (attempt, error) {
	now := s.now()
	var att attempt
	var lockedNow bool
	_, err := s.st.UpdateLockout(ctx, email, func(l store.Lockout) (store.Lockout, error) {
		att, lockedNow = attempt{}, false
		if l.LockedUntil != nil && now.Before(*l.LockedUntil) {
			att.locked = true
			att.retryAfter = l.LockedUntil.Sub(now)
			return l, nil
		}
		att.failures = l.Failures
		l.Failures++
		if l.Failures >= s.opts.LockoutThreshold {
			d := s.opts.LockoutDurations[min(l.Level, len(s.opts.LockoutDurations)-1)]
			until := now.Add(d)
			l.LockedUntil = &until
			l.Level++
			l.Failures = 0
			lockedNow = true
			att.lockedNow = true
		}
		l.UpdatedAt = now
		return l, nil
	})
	if err != nil {
		return attempt{}, err
	}
	if lockedNow {
		s.audit.async(s.audit.event(EventAccountLocked, "", m, riskSignals{RecentFailures: s.opts.LockoutThreshold},
			map[string]any{"email": email}))
	}
	return att, nil
}

// releaseAttempt takes back an attempt counted by reserveAttempt that turned out not to be
// a failure (the password was right but a second factor is due, or nothing was verified):
// the failures before it stay, and a lock it set is lifted. A store error is logged: the
// attempt then stays counted, which errs on the safe side.
func (s *Service) releaseAttempt(ctx context.Context, email string, att attempt) {
	now := s.now()
	_, err := s.st.UpdateLockout(context.WithoutCancel(ctx), email, func(l store.Lockout) (store.Lockout, error) {
		switch {
		case att.lockedNow && l.LockedUntil != nil:
			l.LockedUntil, l.Level, l.Failures = nil, max(l.Level-1, 0), att.failures
		case l.Failures > 0:
			l.Failures--
		}
		l.UpdatedAt = now
		return l, nil
	})
	if err != nil {
		s.log.Warn("taking back a login attempt failed; it stays counted", "error", err)
	}
}

// clearLockout resets the count and escalation after a success.
func (s *Service) clearLockout(ctx context.Context, email string) error {
	now := s.now()
	_, err := s.st.UpdateLockout(ctx, email, func(l store.Lockout) (store.Lockout, error) {
		l.Failures, l.Level, l.LockedUntil, l.UpdatedAt = 0, 0, nil, now
		return l, nil
	})
	return err
}

// Unlock clears the lockout of an email (authd user unlock) and audits ACCOUNT_UNLOCKED.
// It needs only the store, so the command does not build the whole service.
func Unlock(ctx context.Context, st store.Store, email string, now time.Time) error {
	email = NormalizeEmail(email)
	if err := checkEmail(email); err != nil {
		return invalidField("email", err.Error())
	}
	now = now.UTC()
	var uid string
	if u, err := st.GetUserByEmail(ctx, email); err == nil {
		uid = u.ID
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.UpdateLockout(ctx, email, func(l store.Lockout) (store.Lockout, error) {
			l.Failures, l.Level, l.LockedUntil, l.UpdatedAt = 0, 0, nil, now
			return l, nil
		}); err != nil {
			return err
		}
		details, _ := json.Marshal(map[string]any{"email": email})
		return tx.AppendAudit(ctx, store.AuditEvent{
			ID: newID(), Event: EventAccountUnlocked, UserID: uid, IP: "", UserAgent: "authd user unlock",
			RiskScore: riskScore(EventAccountUnlocked, riskSignals{}), Details: details, CreatedAt: now,
		})
	})
}

// startSession creates a session and its first refresh token in one transaction, with the
// LOGIN_SUCCESS audit row, and signs the access token. With SingleSession it rotates the
// stamp and ends every other session.
//
// first, when not nil, runs at the start of the session's transaction: what it spends
// (a pre-auth token, a recovery code) is spent only if the session is created, and its
// error rolls everything back and is returned as is.
func (s *Service) startSession(ctx context.Context, u store.User, amr []string, m requestMeta, recentFailures int, first func(tx store.Tx) error) (TokenResponse, error) {
	now := s.now()
	live, err := s.st.ListLiveSessions(ctx, u.ID, now)
	if err != nil {
		return TokenResponse{}, err
	}
	sig := riskSignals{NewDevice: true, NewIP: true, RecentFailures: recentFailures}
	for _, ls := range live {
		if ls.Fingerprint == m.Fingerprint {
			sig.NewDevice = false
		}
		if ls.IP == m.IP {
			sig.NewIP = false
		}
	}
	if len(live) == 0 && u.LastLoginAt == nil {
		sig.NewDevice, sig.NewIP = false, false // a first login is not a new device
	}
	sess := store.Session{
		ID: newID(), UserID: u.ID, DeviceName: m.DeviceName, Fingerprint: m.Fingerprint,
		UserAgent: truncateString(m.UserAgent, 512), IP: m.IP, AMR: amr,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(s.opts.SessionTTL),
	}
	var refresh string
	var rt store.RefreshToken
	var revoked []string
	err = s.st.InTx(ctx, func(tx store.Tx) error {
		if first != nil {
			if err := first(tx); err != nil {
				return err
			}
		}
		var err error
		u, err = tx.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
			cur.LastLoginAt = &now
			return cur, nil
		})
		if err != nil {
			return err
		}
		if s.opts.SingleSession {
			if revoked, err = tx.RevokeUserSessions(ctx, u.ID, "", "single_session", now); err != nil {
				return err
			}
			if u, err = s.rotateStamp(ctx, tx, u.ID, nil); err != nil {
				return err
			}
		}
		if err := tx.CreateSession(ctx, sess); err != nil {
			return err
		}
		if refresh, rt, err = s.newRefresh(ctx, tx, sess); err != nil {
			return err
		}
		return s.audit.inTx(ctx, tx, s.audit.event(EventLoginSuccess, u.ID, m, sig,
			map[string]any{"session_id": sess.ID, "amr": amr}))
	})
	if err != nil {
		return TokenResponse{}, err
	}
	if s.opts.SingleSession {
		s.publish(append(revokedMessages(revoked), revocation.StampRotated(u.ID, u.SecurityStamp))...)
	}
	return s.issue(u, sess, refresh, rt.ExpiresAt)
}

// Refresh spends a refresh token and returns its successor with a new access token.
// A spent token presented again, or a token from another device, revokes its session.
func (s *Service) Refresh(ctx context.Context, token string, m requestMeta) (TokenResponse, error) {
	if token == "" || len(token) > 256 {
		return TokenResponse{}, ErrInvalidToken
	}
	now := s.now()
	rt, err := s.st.GetRefreshTokenByHash(ctx, hashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return TokenResponse{}, ErrInvalidToken
	}
	if err != nil {
		return TokenResponse{}, err
	}
	sess, err := s.st.GetSession(ctx, rt.SessionID)
	if err != nil {
		return TokenResponse{}, err
	}
	if rt.UsedAt != nil {
		s.revokeSession(ctx, sess, "refresh_token_reused", EventTokenReuse, m)
		return TokenResponse{}, ErrTokenReused
	}
	if !now.Before(rt.ExpiresAt) {
		// A token ended before its natural end was retired by a stamp rotation.
		natural := rt.IssuedAt.Add(s.opts.RefreshTTL)
		if natural.After(sess.ExpiresAt) {
			natural = sess.ExpiresAt
		}
		if rt.ExpiresAt.Before(natural) {
			return TokenResponse{}, ErrSessionRevoked
		}
		return TokenResponse{}, ErrInvalidToken
	}
	if sess.RevokedAt != nil {
		return TokenResponse{}, ErrSessionRevoked
	}
	if !now.Before(sess.ExpiresAt) {
		return TokenResponse{}, ErrInvalidToken
	}
	u, err := s.st.GetUser(ctx, sess.UserID)
	if err != nil {
		return TokenResponse{}, err
	}
	if subtle.ConstantTimeCompare([]byte(sess.Fingerprint), []byte(m.Fingerprint)) != 1 {
		s.revokeSession(ctx, sess, "fingerprint_mismatch", EventHijackSuspected, m)
		return TokenResponse{}, ErrSessionRevoked
	}

	var refresh string
	var next store.RefreshToken
	err = s.st.InTx(ctx, func(tx store.Tx) error {
		// Spend first, so the losers of a race stop before they lock anything else. (In
		// PostgreSQL, inserting the successor takes a key-share lock on the session row;
		// taken before the spend, the winner's session update would wait on the losers'
		// locks while they wait on the token: a deadlock.)
		nextID := newID()
		if err := tx.SpendRefreshToken(ctx, rt.ID, nextID, now); err != nil {
			return err
		}
		var err error
		if sess, err = tx.UpdateSession(ctx, sess.ID, func(cur store.Session) (store.Session, error) {
			cur.LastSeenAt = now
			cur.IP = m.IP
			return cur, nil
		}); err != nil {
			return err
		}
		if refresh, next, err = s.newRefreshID(ctx, tx, sess, nextID); err != nil {
			return err
		}
		return s.audit.inTx(ctx, tx, s.audit.event(EventTokenRefreshed, u.ID, m, riskSignals{},
			map[string]any{"session_id": sess.ID}))
	})
	if errors.Is(err, store.ErrConflict) {
		// Another request spent the token first: this presentation is a reuse.
		s.revokeSession(ctx, sess, "refresh_token_reused", EventTokenReuse, m)
		return TokenResponse{}, ErrTokenReused
	}
	if err != nil {
		return TokenResponse{}, err
	}
	return s.issue(u, sess, refresh, next.ExpiresAt)
}

// revokeSession ends one session with an audit row in the same transaction and tells the
// check path. Used on theft signals, where the caller's answer is an error either way.
func (s *Service) revokeSession(ctx context.Context, sess store.Session, reason, event string, m requestMeta) {
	now := s.now()
	err := s.st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.UpdateSession(ctx, sess.ID, func(cur store.Session) (store.Session, error) {
			if cur.RevokedAt == nil {
				cur.RevokedAt, cur.RevokeReason = &now, reason
			}
			return cur, nil
		}); err != nil {
			return err
		}
		return s.audit.inTx(ctx, tx, s.audit.event(event, sess.UserID, m, riskSignals{},
			map[string]any{"session_id": sess.ID, "reason": reason}))
	})
	if err != nil {
		// The revocation matters more than writing it down in the same transaction.
		s.log.Error("revoking a session with its audit row failed; revoking alone", "session_id", sess.ID, "reason", reason, "error", err)
		if _, err := s.st.UpdateSession(context.WithoutCancel(ctx), sess.ID, func(cur store.Session) (store.Session, error) {
			if cur.RevokedAt == nil {
				cur.RevokedAt, cur.RevokeReason = &now, reason
			}
			return cur, nil
		}); err != nil {
			s.log.Error("revoking a session failed", "session_id", sess.ID, "reason", reason, "error", err)
			return
		}
		s.audit.async(s.audit.event(event, sess.UserID, m, riskSignals{}, map[string]any{"session_id": sess.ID, "reason": reason}))
	}
	s.publish(revocation.SessionRevoked(sess.ID))
}

// Logout ends the caller's session, or with all every session and the stamp.
func (s *Service) Logout(ctx context.Context, p Principal, all bool, m requestMeta) error {
	now := s.now()
	var revoked []string
	var u store.User
	err := s.st.InTx(ctx, func(tx store.Tx) error {
		var err error
		if all {
			// The user row is locked before the sessions, in the order every other stamp
			// rotation takes, so two of them cannot deadlock.
			if u, err = s.rotateStamp(ctx, tx, p.User.ID, nil); err != nil {
				return err
			}
			if revoked, err = tx.RevokeUserSessions(ctx, p.User.ID, "", "logout_all", now); err != nil {
				return err
			}
		} else {
			if _, err = tx.UpdateSession(ctx, p.Session.ID, func(cur store.Session) (store.Session, error) {
				if cur.RevokedAt == nil {
					cur.RevokedAt, cur.RevokeReason = &now, "logout"
				}
				return cur, nil
			}); err != nil {
				return err
			}
			revoked = []string{p.Session.ID}
		}
		return s.audit.inTx(ctx, tx, s.audit.event(EventLogout, p.User.ID, m, riskSignals{},
			map[string]any{"session_id": p.Session.ID, "all_sessions": all}))
	})
	if err != nil {
		return err
	}
	msgs := revokedMessages(revoked)
	if all {
		msgs = append(msgs, revocation.StampRotated(u.ID, u.SecurityStamp))
	}
	s.publish(msgs...)
	return nil
}

// ChangePassword checks the current password, stores the new one, rotates the stamp, ends
// every other session and returns fresh tokens for the caller's session.
func (s *Service) ChangePassword(ctx context.Context, p Principal, current, next string, m requestMeta) (TokenResponse, error) {
	var errs []problem.FieldError
	if current == "" {
		errs = append(errs, problem.FieldError{Field: "current_password", Message: "is required"})
	}
	errs = s.newPasswordProblems(errs, "new_password", next, p.User.Email)
	if len(errs) > 0 {
		return TokenResponse{}, &ValidationError{Fields: errs}
	}
	if err := s.checkPassword(ctx, p.User, current, m); err != nil {
		return TokenResponse{}, err
	}
	hash, err := s.hasher.Hash(ctx, next)
	if err != nil {
		return TokenResponse{}, s.hashErr(err)
	}
	tr, u, revoked, err := s.rotateForCaller(ctx, p, m, EventPasswordChanged, func(u *store.User) error {
		u.PasswordHash = hash
		return nil
	}, nil)
	if err != nil {
		return TokenResponse{}, err
	}
	s.publish(append(revokedMessages(revoked), revocation.StampRotated(u.ID, u.SecurityStamp))...)
	return tr, nil
}

// checkPassword verifies a signed-in user's password (change-password, mfa/disable).
// A wrong one counts toward the lockout like a failed login.
func (s *Service) checkPassword(ctx context.Context, u store.User, pw string, m requestMeta) error {
	att, err := s.reserveAttempt(ctx, u.Email, m)
	if err != nil {
		return err
	}
	if err := s.verifyPassword(ctx, u, pw, m, att); err != nil {
		return err
	}
	return s.clearLockout(ctx, u.Email)
}

// verifyPassword checks pw after the attempt was counted; it clears nothing, so a caller
// that needs a second proof (mfa/disable) clears the count only when both are in.
func (s *Service) verifyPassword(ctx context.Context, u store.User, pw string, m requestMeta, att attempt) error {
	if att.locked {
		return &LockedError{RetryAfter: att.retryAfter}
	}
	ok, _, err := s.hasher.Verify(ctx, pw, u.PasswordHash)
	if err != nil && !errors.Is(err, password.ErrTooLong) && !errors.Is(err, password.ErrInvalidUTF8) {
		s.releaseAttempt(ctx, u.Email, att)
		return s.hashErr(err)
	}
	if !ok {
		s.audit.async(s.audit.event(EventLoginFailed, u.ID, m, riskSignals{RecentFailures: att.failures},
			map[string]any{"reason": "wrong_password"}))
		return ErrInvalidCredentials
	}
	return nil
}

// rotateForCaller rotates the stamp (applying change to the user, and extra writes when
// not nil), ends every session but the caller's, gives the caller's session a new refresh
// token and writes event — one transaction — then signs the caller's new tokens.
func (s *Service) rotateForCaller(ctx context.Context, p Principal, m requestMeta, event string,
	change func(*store.User) error, extra func(store.Tx) error) (TokenResponse, store.User, []string, error) {
	now := s.now()
	var u store.User
	var revoked []string
	var refresh string
	var rt store.RefreshToken
	sess := p.Session
	err := s.st.InTx(ctx, func(tx store.Tx) error {
		var err error
		if u, err = s.rotateStamp(ctx, tx, p.User.ID, change); err != nil {
			return err
		}
		if extra != nil {
			if err := extra(tx); err != nil {
				return err
			}
		}
		if revoked, err = tx.RevokeUserSessions(ctx, u.ID, sess.ID, "security_stamp_rotated", now); err != nil {
			return err
		}
		// The caller's session lives on with a new refresh token; every older one ends.
		if err := tx.ExpireRefreshTokens(ctx, sess.ID, now); err != nil {
			return err
		}
		if sess, err = tx.UpdateSession(ctx, sess.ID, func(cur store.Session) (store.Session, error) {
			cur.LastSeenAt = now
			return cur, nil
		}); err != nil {
			return err
		}
		if refresh, rt, err = s.newRefresh(ctx, tx, sess); err != nil {
			return err
		}
		return s.audit.inTx(ctx, tx, s.audit.event(event, u.ID, m, riskSignals{},
			map[string]any{"session_id": sess.ID, "sessions_ended": len(revoked)}))
	})
	if err != nil {
		return TokenResponse{}, store.User{}, nil, err
	}
	tr, err := s.issue(u, sess, refresh, rt.ExpiresAt)
	return tr, u, revoked, err
}

// SessionView is one of the caller's live sessions.
type SessionView struct {
	ID         string    `json:"id"`
	DeviceName string    `json:"device_name"`
	UserAgent  string    `json:"user_agent"`
	IP         string    `json:"ip"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeenAt time.Time `json:"last_seen_at"`
	Current    bool      `json:"current"`
}

// Sessions lists the caller's live sessions, newest first.
func (s *Service) Sessions(ctx context.Context, p Principal) ([]SessionView, error) {
	list, err := s.st.ListLiveSessions(ctx, p.User.ID, s.now())
	if err != nil {
		return nil, err
	}
	out := make([]SessionView, 0, len(list))
	for _, ss := range list {
		out = append(out, SessionView{ID: ss.ID, DeviceName: ss.DeviceName, UserAgent: ss.UserAgent, IP: ss.IP,
			CreatedAt: ss.CreatedAt, LastSeenAt: ss.LastSeenAt, Current: ss.ID == p.Session.ID})
	}
	return out, nil
}

// DeleteSession revokes one of the caller's sessions; another user's id (or none) is
// ErrNotFound either way.
func (s *Service) DeleteSession(ctx context.Context, p Principal, id string, m requestMeta) error {
	sess, err := s.st.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && sess.UserID != p.User.ID) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if sess.RevokedAt != nil {
		return nil
	}
	now := s.now()
	err = s.st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.UpdateSession(ctx, id, func(cur store.Session) (store.Session, error) {
			if cur.RevokedAt == nil {
				cur.RevokedAt, cur.RevokeReason = &now, "deleted_by_user"
			}
			return cur, nil
		}); err != nil {
			return err
		}
		return s.audit.inTx(ctx, tx, s.audit.event(EventSessionRevoked, p.User.ID, m, riskSignals{},
			map[string]any{"session_id": id, "by_session_id": p.Session.ID}))
	})
	if err != nil {
		return err
	}
	s.publish(revocation.SessionRevoked(id))
	return nil
}

// Me returns the caller's account.
func (s *Service) Me(p Principal) Account { return accountOf(p.User) }
