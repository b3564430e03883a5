package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/store"
)

// canonID returns id in canonical lower-case form; ok is false when id is not a UUID (so no
// row can have it).
func canonID(id string) (string, bool) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// requireID is canonID for values about to be written: the store never invents ids, and a
// malformed one is the caller's bug.
func requireID(what, id string) (string, error) {
	c, ok := canonID(id)
	if !ok {
		return "", fmt.Errorf("sqlstore: %s %q is not a UUID", what, id)
	}
	return c, nil
}

func notFound(op string) error { return fmt.Errorf("sqlstore: %s: %w", op, store.ErrNotFound) }

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

const userCols = `id, email, full_name, password_hash, security_stamp, mfa_enabled, mfa_secret,
	mfa_pending_secret, mfa_last_step, pre_auth_jti, pre_auth_tries, created_at, updated_at, last_login_at`

func scanUser(r row) (store.User, error) {
	var u store.User
	err := r.Scan(&u.ID, &u.Email, &u.FullName, &u.PasswordHash, &u.SecurityStamp, &u.MFAEnabled,
		&u.MFASecret, &u.MFAPendingSecret, &u.MFALastStep, &u.PreAuthJTI, &u.PreAuthTries,
		timeCol{&u.CreatedAt}, timeCol{&u.UpdatedAt}, nullTimeCol{&u.LastLoginAt})
	return u, err
}

// normUser is u as the store keeps it.
func normUser(u store.User) store.User {
	u.CreatedAt = utc(u.CreatedAt)
	u.UpdatedAt = utc(u.UpdatedAt)
	u.LastLoginAt = utcPtr(u.LastLoginAt)
	return u
}

func (o *ops) CreateUser(ctx context.Context, u store.User) error {
	id, err := requireID("user id", u.ID)
	if err != nil {
		return err
	}
	stamp, err := requireID("security stamp", u.SecurityStamp)
	if err != nil {
		return err
	}
	_, err = o.q.exec(ctx, `INSERT INTO users (`+userCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		id, u.Email, u.FullName, u.PasswordHash, stamp, u.MFAEnabled, u.MFASecret,
		u.MFAPendingSecret, u.MFALastStep, u.PreAuthJTI, u.PreAuthTries, u.CreatedAt, u.UpdatedAt, u.LastLoginAt)
	return wrap("create user", err)
}

func (o *ops) GetUser(ctx context.Context, id string) (store.User, error) {
	cid, ok := canonID(id)
	if !ok {
		return store.User{}, notFound("get user")
	}
	u, err := scanUser(o.q.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, cid))
	return u, wrap("get user", err)
}

func (o *ops) GetUserByEmail(ctx context.Context, email string) (store.User, error) {
	u, err := scanUser(o.q.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE email = $1`, email))
	return u, wrap("get user by email", err)
}

// UpdateUser writes every field the updater returns except ID and CreatedAt.
func (o *ops) UpdateUser(ctx context.Context, id string, fn func(store.User) (store.User, error)) (store.User, error) {
	cid, ok := canonID(id)
	if !ok {
		return store.User{}, notFound("update user")
	}
	var out store.User
	err := o.atomically(ctx, func(q querier) error {
		cur, err := scanUser(q.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1 FOR UPDATE`, cid))
		if err != nil {
			return wrap("update user", err)
		}
		u, err := fn(cur)
		if err != nil {
			return err
		}
		u.ID, u.CreatedAt = cur.ID, cur.CreatedAt
		if u.SecurityStamp, err = requireID("security stamp", u.SecurityStamp); err != nil {
			return err
		}
		_, err = q.exec(ctx, `UPDATE users SET email = $2, full_name = $3, password_hash = $4,
			security_stamp = $5, mfa_enabled = $6, mfa_secret = $7, mfa_pending_secret = $8,
			mfa_last_step = $9, pre_auth_jti = $10, pre_auth_tries = $11, updated_at = $12, last_login_at = $13
			WHERE id = $1`,
			cid, u.Email, u.FullName, u.PasswordHash, u.SecurityStamp, u.MFAEnabled, u.MFASecret,
			u.MFAPendingSecret, u.MFALastStep, u.PreAuthJTI, u.PreAuthTries, u.UpdatedAt, u.LastLoginAt)
		if err != nil {
			return wrap("update user", err)
		}
		out = normUser(u)
		return nil
	})
	return out, err
}

const lockoutCols = `email, failures, level, locked_until, updated_at`

func scanLockout(r row) (store.Lockout, error) {
	var l store.Lockout
	err := r.Scan(&l.Email, &l.Failures, &l.Level, nullTimeCol{&l.LockedUntil}, timeCol{&l.UpdatedAt})
	return l, err
}

func (o *ops) GetLockout(ctx context.Context, email string) (store.Lockout, error) {
	l, err := scanLockout(o.q.queryRow(ctx, `SELECT `+lockoutCols+` FROM lockouts WHERE email = $1`, email))
	return l, wrap("get lockout", err)
}

// UpdateLockout first inserts a zero row when there is none, so that there is always a row
// to lock: two first failures for one email then queue on that row (PostgreSQL makes the
// second insert wait for the first) instead of both starting from zero.
func (o *ops) UpdateLockout(ctx context.Context, email string, fn func(store.Lockout) (store.Lockout, error)) (store.Lockout, error) {
	var out store.Lockout
	err := o.atomically(ctx, func(q querier) error {
		inserted, err := q.exec(ctx, `INSERT INTO lockouts (`+lockoutCols+`) VALUES ($1, 0, 0, NULL, $2)
			ON CONFLICT (email) DO NOTHING`, email, time.Time{})
		if err != nil {
			return wrap("update lockout", err)
		}
		cur, err := scanLockout(q.queryRow(ctx, `SELECT `+lockoutCols+` FROM lockouts WHERE email = $1 FOR UPDATE`, email))
		if err != nil {
			return wrap("update lockout", err)
		}
		l, err := fn(cur)
		if err != nil {
			// Our own transaction's rollback drops the zero row; the caller's (InTx) would
			// keep it if the caller went on, so take it back out.
			if inserted == 1 && o.begin == nil {
				if _, derr := q.exec(ctx, `DELETE FROM lockouts WHERE email = $1`, email); derr != nil {
					o.log.Warn("sqlstore: update lockout: removing the zero row", "err", derr)
				}
			}
			return err
		}
		l.Email = email
		_, err = q.exec(ctx, `UPDATE lockouts SET failures = $2, level = $3, locked_until = $4, updated_at = $5
			WHERE email = $1`, email, l.Failures, l.Level, l.LockedUntil, l.UpdatedAt)
		if err != nil {
			return wrap("update lockout", err)
		}
		l.LockedUntil = utcPtr(l.LockedUntil)
		l.UpdatedAt = utc(l.UpdatedAt)
		out = l
		return nil
	})
	return out, err
}
