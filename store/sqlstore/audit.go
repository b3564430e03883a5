package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/authd/authd/store"
)

const auditCols = `id, event, user_id, ip, user_agent, risk_score, details, created_at`

// AppendAudit refuses Details that are not a JSON object, and a risk score outside 0–100.
func (o *ops) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	id, err := requireID("audit event id", e.ID)
	if err != nil {
		return err
	}
	var userID any // NULL when the event has no user
	if e.UserID != "" {
		if userID, err = requireID("audit event user id", e.UserID); err != nil {
			return err
		}
	}
	if e.RiskScore < 0 || e.RiskScore > 100 {
		return fmt.Errorf("sqlstore: append audit: risk score %d outside 0–100", e.RiskScore)
	}
	details := "{}"
	if len(e.Details) > 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, e.Details); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return errors.New("sqlstore: append audit: details are not a JSON object")
		}
		details = buf.String()
	}
	_, err = o.q.exec(ctx, `INSERT INTO audit_log (`+auditCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		id, e.Event, userID, e.IP, e.UserAgent, e.RiskScore, details, e.CreatedAt)
	return wrap("append audit", err)
}

// ListAudit returns Details as compact JSON: the same members and values as were stored,
// though PostgreSQL (jsonb) may reorder an object's keys.
func (o *ops) ListAudit(ctx context.Context, aq store.AuditQuery) ([]store.AuditEvent, error) {
	query := `SELECT ` + auditCols + ` FROM audit_log WHERE 1 = 1`
	var args []any
	if aq.UserID != "" {
		uid, ok := canonID(aq.UserID)
		if !ok {
			return nil, nil
		}
		args = append(args, uid)
		query += ` AND user_id = $` + strconv.Itoa(len(args))
	}
	if aq.Event != "" {
		args = append(args, aq.Event)
		query += ` AND event = $` + strconv.Itoa(len(args))
	}
	limit := aq.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	query += ` ORDER BY created_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))

	rs, err := o.q.query(ctx, query, args...)
	if err != nil {
		return nil, wrap("list audit", err)
	}
	defer rs.Close()
	var out []store.AuditEvent
	for rs.Next() {
		var (
			e       store.AuditEvent
			userID  sql.NullString
			details string
		)
		err := rs.Scan(&e.ID, &e.Event, &userID, &e.IP, &e.UserAgent, &e.RiskScore, &details, timeCol{&e.CreatedAt})
		if err != nil {
			return nil, wrap("list audit", err)
		}
		e.UserID = userID.String
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(details)); err != nil {
			return nil, fmt.Errorf("sqlstore: list audit: stored details of %s: %w", e.ID, err)
		}
		e.Details = json.RawMessage(buf.Bytes())
		out = append(out, e)
	}
	return out, wrap("list audit", rs.Err())
}
