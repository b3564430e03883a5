package sqlstore

import (
	"context"
	"time"

	"github.com/authd/authd/store"
)

// ReplaceRecoveryCodes stores every code under userID, whatever the codes' own UserID says.
func (o *ops) ReplaceRecoveryCodes(ctx context.Context, userID string, codes []store.RecoveryCode) error {
	uid, err := requireID("recovery code user id", userID)
	if err != nil {
		return err
	}
	ids := make([]string, len(codes))
	for i, c := range codes {
		if ids[i], err = requireID("recovery code id", c.ID); err != nil {
			return err
		}
	}
	return o.atomically(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `DELETE FROM mfa_recovery_codes WHERE user_id = $1`, uid); err != nil {
			return wrap("replace recovery codes", err)
		}
		for i, c := range codes {
			_, err := q.exec(ctx, `INSERT INTO mfa_recovery_codes (id, user_id, code_hash, created_at, used_at)
				VALUES ($1, $2, $3, $4, $5)`, ids[i], uid, c.CodeHash, c.CreatedAt, c.UsedAt)
			if err != nil {
				return wrap("replace recovery codes", err)
			}
		}
		return nil
	})
}

// UseRecoveryCode is one conditional UPDATE; (user_id, code_hash) is unique, so it marks at
// most one row, and a concurrent second use finds used_at set.
func (o *ops) UseRecoveryCode(ctx context.Context, userID string, hash []byte, now time.Time) error {
	uid, ok := canonID(userID)
	if !ok {
		return notFound("use recovery code")
	}
	n, err := o.q.exec(ctx, `UPDATE mfa_recovery_codes SET used_at = $3
		WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL`, uid, hash, now)
	if err != nil {
		return wrap("use recovery code", err)
	}
	if n == 0 {
		return notFound("use recovery code")
	}
	return nil
}

func (o *ops) CountUnusedRecoveryCodes(ctx context.Context, userID string) (int, error) {
	uid, ok := canonID(userID)
	if !ok {
		return 0, nil
	}
	var n int
	err := o.q.queryRow(ctx, `SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL`, uid).Scan(&n)
	return n, wrap("count recovery codes", err)
}
