// Package sqlstore implements store.Store on PostgreSQL (pgx/v5) and on SQLite
// (modernc.org/sqlite) with one set of SQL.
//
// The SQL is written once, in PostgreSQL's dialect with $n placeholders, and runs through a
// small querier interface with one adapter per driver. The SQLite adapter rewrites $n to ?n,
// drops FOR UPDATE (its transactions take the write lock when they begin), and stores times
// as fixed-width UTC text. The schema is in package migrations; Open does not migrate.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/authd/authd/dburl"
	"github.com/authd/authd/store"
)

// Options tunes Open.
type Options struct {
	// MaxConns caps the PostgreSQL connection pool; 0 keeps the URL's pool_max_conns or
	// pgxpool's default. SQLite always uses one connection (see Open).
	MaxConns int
	// Logger receives rollback failures and the open message; nil discards.
	Logger *slog.Logger
}

// Store is a store.Store on PostgreSQL or SQLite; its record methods keep the contract
// documented on store.Tx. It is safe for concurrent use.
type Store struct {
	ops
	dialect string
	ping    func(context.Context) error
	close   func() error
}

var (
	_ store.Store = (*Store)(nil)
	_ store.Tx    = (*ops)(nil)
)

// Open connects to databaseURL: postgres://… or postgresql://… (a pgxpool), or
// sqlite://PATH (PATH is everything before the first '?', relative or absolute; its parent
// directory is created with mode 0700). Options after '?' go to the driver, except that
// x-… options (golang-migrate's) are ignored. Open checks that the database answers; it
// does not apply migrations.
//
// SQLite runs on a single connection. SQLite allows one writer at a time anyway; with one
// connection the writers of this process queue in database/sql instead of meeting
// SQLITE_BUSY, and updaters stay atomic. The price: while an InTx function runs, other
// callers wait, so the function must use only the Tx it is given (calling the Store from
// inside it would wait for itself).
func Open(ctx context.Context, databaseURL string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxConns < 0 || opts.MaxConns > math.MaxInt32 {
		return nil, fmt.Errorf("sqlstore: MaxConns %d out of range", opts.MaxConns)
	}
	tgt, err := dburl.Parse(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: %w", err)
	}
	var s *Store
	switch tgt.Dialect {
	case dburl.Postgres:
		s, err = openPostgres(ctx, tgt, opts.MaxConns, log)
	default:
		s, err = openSQLite(ctx, tgt, log)
	}
	if err != nil {
		return nil, tgt.Redact(fmt.Errorf("sqlstore: open %s: %w", tgt.Display, err))
	}
	log.Info("store opened", "dialect", s.dialect, "database", tgt.Display)
	return s, nil
}

func openPostgres(ctx context.Context, tgt *dburl.URL, maxConns int, log *slog.Logger) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(tgt.PoolURL())
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{
		ops: ops{
			q:   pgQuerier{pool},
			log: log,
			begin: func(ctx context.Context) (txQuerier, error) {
				tx, err := pool.BeginTx(ctx, pgx.TxOptions{})
				if err != nil {
					return nil, pgError(err)
				}
				return pgTx{pgQuerier{tx}, tx}, nil
			},
		},
		dialect: dburl.Postgres,
		ping:    pool.Ping,
		close:   func() error { pool.Close(); return nil },
	}, nil
}

func openSQLite(ctx context.Context, tgt *dburl.URL, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(tgt.Path), 0o700); err != nil {
		return nil, err
	}
	db, err := sql.Open("sqlite", tgt.SQLiteDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // see Open
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Store{
		ops: ops{
			q:   sqliteQuerier{db},
			log: log,
			begin: func(ctx context.Context) (txQuerier, error) {
				tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
				if err != nil {
					return nil, sqliteError(err)
				}
				return sqliteTx{sqliteQuerier{tx}, tx}, nil
			},
		},
		dialect: dburl.SQLite,
		ping:    db.PingContext,
		close:   db.Close,
	}, nil
}

// Dialect reports the backend: "postgres" or "sqlite".
func (s *Store) Dialect() string { return s.dialect }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ping(ctx); err != nil {
		return fmt.Errorf("sqlstore: ping: %w", err)
	}
	return nil
}

// Close releases the connections. The Store must not be used afterwards.
func (s *Store) Close() error { return s.close() }

// InTx runs fn in one transaction; see store.Store. The Tx's Update methods run in this
// transaction instead of opening their own. On PostgreSQL a failed statement (a conflict,
// say) aborts the whole transaction, so fn should return once a call fails.
func (s *Store) InTx(ctx context.Context, fn func(tx store.Tx) error) error {
	return s.atomically(ctx, func(q querier) error {
		return fn(&ops{q: q, log: s.log})
	})
}

// ops holds every store.Tx method, run on q: the pool, or a transaction.
type ops struct {
	q   querier
	log *slog.Logger
	// begin starts a transaction. It is nil when q already is one, so that updaters run in
	// the caller's transaction instead of nesting.
	begin func(context.Context) (txQuerier, error)
}

// atomically runs fn in a transaction: a new one, or the one o already is. fn's error is
// returned as is after the rollback.
func (o *ops) atomically(ctx context.Context, fn func(q querier) error) (err error) {
	if o.begin == nil {
		return fn(o.q)
	}
	tx, err := o.begin(ctx)
	if err != nil {
		return fmt.Errorf("sqlstore: begin: %w", err)
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		// Roll back even when ctx is done (and on panic), so the connection returns clean.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := tx.rollback(rctx); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) && !errors.Is(rerr, pgx.ErrTxClosed) {
			o.log.Warn("sqlstore: rollback failed", "err", rerr)
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("sqlstore: commit: %w", err)
	}
	committed = true
	return nil
}
