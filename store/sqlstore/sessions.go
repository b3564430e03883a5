package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/authd/authd/store"
)

const sessionCols = `id, user_id, device_name, fingerprint, user_agent, ip, amr, created_at,
	last_seen_at, expires_at, revoked_at, revoke_reason`

func scanSession(r row) (store.Session, error) {
	var (
		s   store.Session
		amr string
	)
	err := r.Scan(&s.ID, &s.UserID, &s.DeviceName, &s.Fingerprint, &s.UserAgent, &s.IP, &amr,
		timeCol{&s.CreatedAt}, timeCol{&s.LastSeenAt}, timeCol{&s.ExpiresAt},
		nullTimeCol{&s.RevokedAt}, &s.RevokeReason)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal([]byte(amr), &s.AMR); err != nil {
		return s, fmt.Errorf("sqlstore: session %s: stored amr: %w", s.ID, err)
	}
	return s, nil
}

// amrJSON is how AMR is stored (jsonb, or JSON text): an array, never null.
func amrJSON(amr []string) string {
	if amr == nil {
		amr = []string{}
	}
	b, _ := json.Marshal(amr) // a []string always marshals
	return string(b)
}

func normSession(s store.Session) store.Session {
	s.CreatedAt = utc(s.CreatedAt)
	s.LastSeenAt = utc(s.LastSeenAt)
	s.ExpiresAt = utc(s.ExpiresAt)
	s.RevokedAt = utcPtr(s.RevokedAt)
	if s.AMR == nil {
		s.AMR = []string{}
	}
	return s
}

func (o *ops) CreateSession(ctx context.Context, s store.Session) error {
	id, err := requireID("session id", s.ID)
	if err != nil {
		return err
	}
	uid, err := requireID("session user id", s.UserID)
	if err != nil {
		return err
	}
	_, err = o.q.exec(ctx, `INSERT INTO sessions (`+sessionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		id, uid, s.DeviceName, s.Fingerprint, s.UserAgent, s.IP, amrJSON(s.AMR),
		s.CreatedAt, s.LastSeenAt, s.ExpiresAt, s.RevokedAt, s.RevokeReason)
	return wrap("create session", err)
}

func (o *ops) GetSession(ctx context.Context, id string) (store.Session, error) {
	cid, ok := canonID(id)
	if !ok {
		return store.Session{}, notFound("get session")
	}
	s, err := scanSession(o.q.queryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = $1`, cid))
	return s, wrap("get session", err)
}

// CheckState is one single-row statement: the one-row FROM keeps a row when both joins
// miss. A malformed id is bound as NULL, which matches nothing; when both are malformed
// the database is not asked.
func (o *ops) CheckState(ctx context.Context, sessionID, userID string) (store.CheckState, error) {
	var sid, uid any // NULL
	if c, ok := canonID(sessionID); ok {
		sid = c
	}
	if c, ok := canonID(userID); ok {
		uid = c
	}
	if sid == nil && uid == nil {
		return store.CheckState{}, nil
	}
	var (
		cs          store.CheckState
		sessUser    sql.NullString
		expires     *time.Time
		stamp       sql.NullString
		sessRevoked bool
	)
	err := o.q.queryRow(ctx, `SELECT s.user_id, s.expires_at, s.revoked_at IS NOT NULL, u.security_stamp
		FROM (SELECT 1) AS one
		LEFT JOIN sessions s ON s.id = $1
		LEFT JOIN users u ON u.id = $2`, sid, uid).
		Scan(&sessUser, nullTimeCol{&expires}, &sessRevoked, &stamp)
	if err != nil {
		return store.CheckState{}, wrap("check state", err)
	}
	if sessUser.Valid {
		if expires == nil {
			return store.CheckState{}, errors.New("sqlstore: check state: NULL expires_at")
		}
		cs.SessionFound, cs.SessionUserID = true, sessUser.String
		cs.SessionExpiresAt, cs.SessionRevoked = *expires, sessRevoked
	}
	cs.UserFound, cs.SecurityStamp = stamp.Valid, stamp.String
	return cs, nil
}

// UpdateSession writes every field the updater returns except ID, UserID and CreatedAt.
func (o *ops) UpdateSession(ctx context.Context, id string, fn func(store.Session) (store.Session, error)) (store.Session, error) {
	cid, ok := canonID(id)
	if !ok {
		return store.Session{}, notFound("update session")
	}
	var out store.Session
	err := o.atomically(ctx, func(q querier) error {
		cur, err := scanSession(q.queryRow(ctx, `SELECT `+sessionCols+` FROM sessions WHERE id = $1 FOR UPDATE`, cid))
		if err != nil {
			return wrap("update session", err)
		}
		s, err := fn(cur)
		if err != nil {
			return err
		}
		s.ID, s.UserID, s.CreatedAt = cur.ID, cur.UserID, cur.CreatedAt
		_, err = q.exec(ctx, `UPDATE sessions SET device_name = $2, fingerprint = $3, user_agent = $4,
			ip = $5, amr = $6, last_seen_at = $7, expires_at = $8, revoked_at = $9, revoke_reason = $10
			WHERE id = $1`,
			cid, s.DeviceName, s.Fingerprint, s.UserAgent, s.IP, amrJSON(s.AMR),
			s.LastSeenAt, s.ExpiresAt, s.RevokedAt, s.RevokeReason)
		if err != nil {
			return wrap("update session", err)
		}
		out = normSession(s)
		return nil
	})
	return out, err
}

func (o *ops) ListLiveSessions(ctx context.Context, userID string, now time.Time) ([]store.Session, error) {
	uid, ok := canonID(userID)
	if !ok {
		return nil, nil
	}
	rs, err := o.q.query(ctx, `SELECT `+sessionCols+` FROM sessions
		WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
		ORDER BY created_at DESC, id DESC`, uid, now)
	if err != nil {
		return nil, wrap("list live sessions", err)
	}
	defer rs.Close()
	var out []store.Session
	for rs.Next() {
		s, err := scanSession(rs)
		if err != nil {
			return nil, wrap("list live sessions", err)
		}
		out = append(out, s)
	}
	return out, wrap("list live sessions", rs.Err())
}

// RevokeUserSessions returns the revoked ids sorted.
func (o *ops) RevokeUserSessions(ctx context.Context, userID, keep, reason string, now time.Time) ([]string, error) {
	uid, ok := canonID(userID)
	if !ok {
		return nil, nil
	}
	query := `UPDATE sessions SET revoked_at = $2, revoke_reason = $3
		WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2`
	args := []any{uid, now, reason}
	// A keep that is not a UUID matches no session, so it keeps nothing.
	if k, ok := canonID(keep); ok {
		query += ` AND id <> $4`
		args = append(args, k)
	}
	rs, err := o.q.query(ctx, query+` RETURNING id`, args...)
	if err != nil {
		return nil, wrap("revoke user sessions", err)
	}
	defer rs.Close()
	var ids []string
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			return nil, wrap("revoke user sessions", err)
		}
		ids = append(ids, id)
	}
	if err := rs.Err(); err != nil {
		return nil, wrap("revoke user sessions", err)
	}
	slices.Sort(ids)
	return ids, nil
}

const refreshTokenCols = `id, session_id, token_hash, issued_at, expires_at, used_at, replaced_by`

func (o *ops) CreateRefreshToken(ctx context.Context, t store.RefreshToken) error {
	id, err := requireID("refresh token id", t.ID)
	if err != nil {
		return err
	}
	sid, err := requireID("refresh token session id", t.SessionID)
	if err != nil {
		return err
	}
	var replacedBy any // NULL
	if t.ReplacedBy != "" {
		if replacedBy, err = requireID("refresh token successor id", t.ReplacedBy); err != nil {
			return err
		}
	}
	if len(t.TokenHash) == 0 {
		return errors.New("sqlstore: create refresh token: empty token hash")
	}
	_, err = o.q.exec(ctx, `INSERT INTO refresh_tokens (`+refreshTokenCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id, sid, t.TokenHash, t.IssuedAt, t.ExpiresAt, t.UsedAt, replacedBy)
	return wrap("create refresh token", err)
}

func (o *ops) GetRefreshTokenByHash(ctx context.Context, hash []byte) (store.RefreshToken, error) {
	var (
		t          store.RefreshToken
		replacedBy sql.NullString
	)
	err := o.q.queryRow(ctx, `SELECT `+refreshTokenCols+` FROM refresh_tokens WHERE token_hash = $1`, hash).
		Scan(&t.ID, &t.SessionID, &t.TokenHash, timeCol{&t.IssuedAt}, timeCol{&t.ExpiresAt},
			nullTimeCol{&t.UsedAt}, &replacedBy)
	if err != nil {
		return store.RefreshToken{}, wrap("get refresh token", err)
	}
	t.ReplacedBy = replacedBy.String
	return t, nil
}

// SpendRefreshToken is one conditional UPDATE: of two concurrent spends, the second waits
// for the first's row lock (PostgreSQL) or write lock (SQLite), then finds used_at set.
func (o *ops) ExpireRefreshTokens(ctx context.Context, sessionID string, now time.Time) error {
	cid, ok := canonID(sessionID)
	if !ok {
		return nil
	}
	_, err := o.q.exec(ctx, `UPDATE refresh_tokens SET expires_at = $2
		WHERE session_id = $1 AND used_at IS NULL AND expires_at > $2`, cid, now)
	return wrap("expire refresh tokens", err)
}

func (o *ops) SpendRefreshToken(ctx context.Context, id, replacedBy string, now time.Time) error {
	cid, ok := canonID(id)
	if !ok {
		return notFound("spend refresh token")
	}
	succ, err := requireID("refresh token successor id", replacedBy)
	if err != nil {
		return err
	}
	n, err := o.q.exec(ctx, `UPDATE refresh_tokens SET used_at = $2, replaced_by = $3
		WHERE id = $1 AND used_at IS NULL`, cid, now, succ)
	if err != nil {
		return wrap("spend refresh token", err)
	}
	if n == 1 {
		return nil
	}
	var one int
	err = o.q.queryRow(ctx, `SELECT 1 FROM refresh_tokens WHERE id = $1`, cid).Scan(&one)
	if err != nil {
		return wrap("spend refresh token", err) // ErrNotFound when there is no such token
	}
	return fmt.Errorf("sqlstore: spend refresh token: already spent: %w", store.ErrConflict)
}
