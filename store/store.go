// Package store defines authd's persisted records and the storage contract every backend keeps.
//
// The contract, in the manner of Dex's storage package:
//   - Get methods return ErrNotFound when no row matches.
//   - Create methods return ErrConflict when a unique key (id, normalised email, token hash)
//     already exists.
//   - Update methods take an updater. The backend reads the row, calls the updater, and writes
//     what it returns, all in one transaction that holds the row against concurrent updaters,
//     so read-modify-write (failed-login counters, the TOTP last-used step, refresh rotation)
//     is atomic by construction. An error from the updater aborts the update and is returned
//     as is; nothing is written.
//   - InTx runs fn in one transaction: every write through the Tx it is given commits
//     together or not at all. A Tx must not be used after fn returns.
//   - Every time the store hands back is UTC; times are stored with microsecond precision.
//   - The audit log is append-only.
//
// Callers normalise emails before they reach the store; the store compares them exactly.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrConflict is returned when a write breaks a uniqueness rule, or when a conditional
// write (SpendRefreshToken) finds the record already changed.
var ErrConflict = errors.New("store: conflict")

// User is an account.
type User struct {
	ID            string // UUIDv7
	Email         string // normalised (trimmed, NFKC, lower-case); unique
	FullName      string
	PasswordHash  string // Argon2id PHC string
	SecurityStamp string // UUIDv7; rotating it invalidates every token issued before

	MFAEnabled bool
	// MFASecret is the active TOTP secret, encrypted (Fernet); empty when MFA is off.
	MFASecret string
	// MFAPendingSecret is a secret from /mfa/enable not yet confirmed by /mfa/verify.
	MFAPendingSecret string
	// MFALastStep is the last accepted TOTP time step; a code for a step <= it is a replay.
	MFALastStep int64
	// PreAuthJTI is the jti of the user's one live pre-auth token (the MFA login step),
	// empty when none; PreAuthTries counts wrong codes against it.
	PreAuthJTI   string
	PreAuthTries int

	CreatedAt   time.Time
	UpdatedAt   time.Time
	LastLoginAt *time.Time
}

// Lockout counts consecutive login failures for one normalised email, whether or not an
// account exists for it, so that a lock reveals nothing about existence.
type Lockout struct {
	Email       string
	Failures    int        // consecutive failures since the last success or unlock
	Level       int        // how many times the email has been locked; drives escalation
	LockedUntil *time.Time // nil when not locked
	UpdatedAt   time.Time
}

// Session is one login on one device.
type Session struct {
	ID          string // UUIDv7
	UserID      string
	DeviceName  string
	Fingerprint string // hex SHA-256 of User-Agent, Accept-Language, X-Device-Fingerprint
	UserAgent   string
	IP          string
	// AMR lists the authentication methods of the login ("pwd", "otp"); refreshed tokens keep it.
	AMR          []string
	CreatedAt    time.Time
	LastSeenAt   time.Time
	ExpiresAt    time.Time // absolute lifetime
	RevokedAt    *time.Time
	RevokeReason string
}

// Live reports whether the session may still be used at now.
func (s Session) Live(now time.Time) bool {
	return s.RevokedAt == nil && now.Before(s.ExpiresAt)
}

// CheckState is what the check path needs of one session and of one user, read together
// (Tx.CheckState). Only these columns are read: not the password hash, not the MFA secret.
type CheckState struct {
	SessionFound     bool
	SessionUserID    string
	SessionExpiresAt time.Time
	SessionRevoked   bool // revoked_at is set

	UserFound     bool
	SecurityStamp string
}

// RefreshToken is one link of a session's rotation chain. Only its SHA-256 is stored.
type RefreshToken struct {
	ID         string // UUIDv7
	SessionID  string
	TokenHash  []byte // SHA-256 of the token; unique
	IssuedAt   time.Time
	ExpiresAt  time.Time
	UsedAt     *time.Time // set when spent
	ReplacedBy string     // id of the successor, once spent
}

// RecoveryCode is a single-use MFA recovery code, stored hashed.
type RecoveryCode struct {
	ID        string // UUIDv7
	UserID    string
	CodeHash  []byte
	CreatedAt time.Time
	UsedAt    *time.Time
}

// AuditEvent is one row of the append-only audit log.
type AuditEvent struct {
	ID        string // UUIDv7
	Event     string // REGISTER, LOGIN_SUCCESS, …
	UserID    string // empty when the event has no known user
	IP        string
	UserAgent string
	RiskScore int             // 0–100
	Details   json.RawMessage // a JSON object; nil is stored as {}
	CreatedAt time.Time
}

// AuditQuery selects audit rows; zero fields do not filter.
type AuditQuery struct {
	UserID string
	Event  string
	Limit  int // 0 means 100
}

// Tx is everything a backend can do, inside or outside a transaction.
type Tx interface {
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, id string) (User, error)
	GetUserByEmail(ctx context.Context, email string) (User, error)
	UpdateUser(ctx context.Context, id string, fn func(User) (User, error)) (User, error)

	// UpdateLockout reads the lockout row for email (a zero Lockout with Email set when
	// there is none), calls fn and upserts the result.
	UpdateLockout(ctx context.Context, email string, fn func(Lockout) (Lockout, error)) (Lockout, error)
	GetLockout(ctx context.Context, email string) (Lockout, error)

	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, id string) (Session, error)
	UpdateSession(ctx context.Context, id string, fn func(Session) (Session, error)) (Session, error)
	// CheckState reads session sessionID and user userID's security stamp in one round
	// trip: the check path's read on every cache miss, for every active session. The user
	// need not be the session's. A missing session or user, a malformed id included, is a
	// false found flag, not ErrNotFound.
	CheckState(ctx context.Context, sessionID, userID string) (CheckState, error)
	// ListLiveSessions returns the user's sessions that are neither revoked nor expired at
	// now, newest first.
	ListLiveSessions(ctx context.Context, userID string, now time.Time) ([]Session, error)
	// RevokeUserSessions revokes every live session of the user except keep (may be empty)
	// and returns the ids it revoked.
	RevokeUserSessions(ctx context.Context, userID, keep, reason string, now time.Time) ([]string, error)

	CreateRefreshToken(ctx context.Context, t RefreshToken) error
	GetRefreshTokenByHash(ctx context.Context, hash []byte) (RefreshToken, error)
	// SpendRefreshToken marks the token used and records its successor, only if it is not
	// spent yet; otherwise it returns ErrConflict. Two concurrent spends: one wins.
	SpendRefreshToken(ctx context.Context, id, replacedBy string, now time.Time) error
	// ExpireRefreshTokens ends, at now, every unspent refresh token of the session that is
	// still valid then, so a stamp rotation that keeps the session leaves no older token
	// usable. Spent tokens are left as they are: presenting one is still a reuse.
	ExpireRefreshTokens(ctx context.Context, sessionID string, now time.Time) error

	// ReplaceRecoveryCodes deletes the user's codes and stores codes instead (none deletes).
	ReplaceRecoveryCodes(ctx context.Context, userID string, codes []RecoveryCode) error
	// UseRecoveryCode marks the unused code with this hash as used; ErrNotFound when the
	// user has no unused code with that hash. Two concurrent uses: one wins.
	UseRecoveryCode(ctx context.Context, userID string, hash []byte, now time.Time) error
	CountUnusedRecoveryCodes(ctx context.Context, userID string) (int, error)

	AppendAudit(ctx context.Context, e AuditEvent) error
	// ListAudit returns matching rows newest first.
	ListAudit(ctx context.Context, q AuditQuery) ([]AuditEvent, error)
}

// Store is a backend: a Tx outside any transaction, plus transactions and lifecycle.
type Store interface {
	Tx
	// InTx runs fn in one transaction, committing when fn returns nil and rolling back
	// otherwise (fn's error is returned as is).
	InTx(ctx context.Context, fn func(tx Tx) error) error
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	Close() error
}
