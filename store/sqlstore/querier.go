package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/authd/authd/store"
)

// querier is what the shared SQL runs on: a pool or a transaction of either driver. SQL is
// written for PostgreSQL with $n placeholders. Errors come back mapped: no row is
// store.ErrNotFound, a unique violation store.ErrConflict.
type querier interface {
	exec(ctx context.Context, sql string, args ...any) (rowsAffected int64, err error)
	query(ctx context.Context, sql string, args ...any) (rows, error)
	queryRow(ctx context.Context, sql string, args ...any) row
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type row interface {
	Scan(dest ...any) error
}

type txQuerier interface {
	querier
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

// --- PostgreSQL (pgx/v5) ---

// pgConn is satisfied by *pgxpool.Pool and pgx.Tx.
type pgConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type pgQuerier struct{ c pgConn }

func (p pgQuerier) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := p.c.Exec(ctx, sql, args...)
	if err != nil {
		return 0, pgError(err)
	}
	return tag.RowsAffected(), nil
}

func (p pgQuerier) query(ctx context.Context, sql string, args ...any) (rows, error) {
	r, err := p.c.Query(ctx, sql, args...)
	if err != nil {
		return nil, pgError(err)
	}
	return pgRows{r}, nil
}

func (p pgQuerier) queryRow(ctx context.Context, sql string, args ...any) row {
	return pgRow{p.c.QueryRow(ctx, sql, args...)}
}

type pgRows struct{ r pgx.Rows }

func (r pgRows) Next() bool             { return r.r.Next() }
func (r pgRows) Scan(dest ...any) error { return pgError(r.r.Scan(dest...)) }
func (r pgRows) Err() error             { return pgError(r.r.Err()) }
func (r pgRows) Close()                 { r.r.Close() }

type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error { return pgError(r.r.Scan(dest...)) }

type pgTx struct {
	pgQuerier
	tx pgx.Tx
}

func (t pgTx) commit(ctx context.Context) error   { return pgError(t.tx.Commit(ctx)) }
func (t pgTx) rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }

// pgUniqueViolation is SQLSTATE unique_violation.
const pgUniqueViolation = "23505"

func pgError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == pgUniqueViolation {
		return fmt.Errorf("%w: %s", store.ErrConflict, pe.ConstraintName)
	}
	return err
}

// --- SQLite (modernc.org/sqlite through database/sql) ---

// sqlConn is satisfied by *sql.DB and *sql.Tx.
type sqlConn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqliteQuerier translates the shared SQL and arguments: $n becomes ?n, a trailing FOR
// UPDATE is dropped (the transaction already holds SQLite's single write lock, taken by
// BEGIN IMMEDIATE), and time.Time arguments become fixed-width UTC text.
type sqliteQuerier struct{ c sqlConn }

func (s sqliteQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := s.c.ExecContext(ctx, sqliteSQL(query), sqliteArgs(args)...)
	if err != nil {
		return 0, sqliteError(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, sqliteError(err)
	}
	return n, nil
}

func (s sqliteQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := s.c.QueryContext(ctx, sqliteSQL(query), sqliteArgs(args)...)
	if err != nil {
		return nil, sqliteError(err)
	}
	return sqliteRows{r}, nil
}

func (s sqliteQuerier) queryRow(ctx context.Context, query string, args ...any) row {
	return sqliteRow{s.c.QueryRowContext(ctx, sqliteSQL(query), sqliteArgs(args)...)}
}

type sqliteRows struct{ r *sql.Rows }

func (r sqliteRows) Next() bool             { return r.r.Next() }
func (r sqliteRows) Scan(dest ...any) error { return sqliteError(r.r.Scan(dest...)) }
func (r sqliteRows) Err() error             { return sqliteError(r.r.Err()) }
func (r sqliteRows) Close()                 { _ = r.r.Close() } // Err reports what matters

type sqliteRow struct{ r *sql.Row }

func (r sqliteRow) Scan(dest ...any) error { return sqliteError(r.r.Scan(dest...)) }

type sqliteTx struct {
	sqliteQuerier
	tx *sql.Tx
}

func (t sqliteTx) commit(context.Context) error   { return sqliteError(t.tx.Commit()) }
func (t sqliteTx) rollback(context.Context) error { return t.tx.Rollback() }

// sqliteSQL rewrites the shared PostgreSQL-flavoured SQL for SQLite.
func sqliteSQL(q string) string {
	q = strings.TrimSuffix(q, " FOR UPDATE")
	var b strings.Builder
	b.Grow(len(q))
	for i := 0; i < len(q); i++ {
		if q[i] == '$' && i+1 < len(q) && q[i+1] >= '0' && q[i+1] <= '9' {
			b.WriteByte('?')
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func sqliteArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case time.Time:
			out[i] = formatTime(v)
		case *time.Time:
			if v == nil {
				out[i] = nil
			} else {
				out[i] = formatTime(*v)
			}
		default:
			out[i] = a
		}
	}
	return out
}

func sqliteError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		// Extended result codes are on in modernc.org/sqlite.
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %s", store.ErrConflict, se.Error())
		}
	}
	return err
}

// --- values shared by both dialects ---

// sqliteTimeLayout is how SQLite stores times: UTC, microseconds, fixed width, so that text
// order is time order. The migrations' CHECKs hold every row to it.
const sqliteTimeLayout = "2006-01-02T15:04:05.000000Z"

// utc is the form in which every time leaves the store: UTC, microsecond precision (what
// PostgreSQL keeps).
func utc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := utc(*t)
	return &v
}

func formatTime(t time.Time) string { return utc(t).Format(sqliteTimeLayout) }

// timeCol scans a timestamptz (PostgreSQL) or the fixed-width text (SQLite) into *t, UTC.
type timeCol struct{ t *time.Time }

func (c timeCol) Scan(v any) error {
	t, err := parseTimeValue(v)
	if err != nil {
		return err
	}
	if t == nil {
		return errors.New("sqlstore: NULL in a NOT NULL time column")
	}
	*c.t = *t
	return nil
}

// nullTimeCol is timeCol for a nullable column.
type nullTimeCol struct{ t **time.Time }

func (c nullTimeCol) Scan(v any) error {
	t, err := parseTimeValue(v)
	if err != nil {
		return err
	}
	*c.t = t
	return nil
}

func parseTimeValue(v any) (*time.Time, error) {
	var s string
	switch v := v.(type) {
	case nil:
		return nil, nil
	case time.Time:
		t := utc(v)
		return &t, nil
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return nil, fmt.Errorf("sqlstore: cannot scan %T into a time", v)
	}
	t, err := time.Parse(sqliteTimeLayout, s)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: stored time %q: %w", s, err)
	}
	t = utc(t)
	return &t, nil
}
