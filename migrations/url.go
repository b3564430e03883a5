package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source"
)

const (
	dialectPostgres = "postgres"
	dialectSQLite   = "sqlite"
)

// target is a parsed database URL.
type target struct {
	dialect string
	display string   // the URL with secrets replaced, for messages
	secrets []string // strings that must never appear in a message

	pg *url.URL // PostgreSQL: the URL as authd got it, minus pgxpool-only options

	path            string // SQLite: the database file
	dsn             string // SQLite: the modernc.org/sqlite data source name
	migrationsTable string // SQLite: x-migrations-table, or "" for the default
}

func parseURL(raw string) (*target, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("migrations: the database URL must start with postgres://, postgresql:// or sqlite://")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return parsePostgresURL(raw)
	case "sqlite":
		return parseSQLiteURL(rest)
	default:
		return nil, fmt.Errorf("migrations: unsupported database URL scheme %q (want postgres://, postgresql:// or sqlite://)", scheme)
	}
}

func parsePostgresURL(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's message quotes parts of the URL, which may be parts of the password.
		return nil, errors.New("migrations: the PostgreSQL URL does not parse " +
			"(percent-encode special characters in the user name and password)")
	}
	t := &target{dialect: dialectPostgres}
	if pw, ok := u.User.Password(); ok && pw != "" {
		t.secrets = append(t.secrets, pw)
	}
	q := u.Query()
	if pw := q.Get("password"); pw != "" {
		t.secrets = append(t.secrets, pw)
	}
	// pgxpool's options mean nothing to a single connection (the server would refuse them
	// as unknown run-time parameters).
	for k := range q {
		if strings.HasPrefix(k, "pool_") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	t.pg = u

	shown := *u
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			shown.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if q.Has("password") {
		sq := shown.Query()
		sq.Set("password", "xxxxx")
		shown.RawQuery = sq.Encode()
	}
	t.display = shown.String()
	return t, nil
}

// migrateURL is the URL for golang-migrate's pgx/v5 driver. When ctx has a deadline and the
// URL sets no connect_timeout, the deadline bounds the connection attempt (golang-migrate
// takes no context).
func (t *target) migrateURL(ctx context.Context) string {
	u := *t.pg
	u.Scheme = "pgx5"
	if dl, ok := ctx.Deadline(); ok {
		q := u.Query()
		if !q.Has("connect_timeout") {
			secs := math.Ceil(time.Until(dl).Seconds())
			q.Set("connect_timeout", strconv.Itoa(max(1, int(secs))))
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// sqliteParams are the connection settings both authd and its migrations use: wait for a
// lock instead of failing at once, write-ahead log, enforced foreign keys, and BEGIN
// IMMEDIATE so a transaction takes the write lock up front (a deferred transaction that
// reads and then writes can fail with SQLITE_BUSY instead of waiting). store/sqlstore uses
// the same settings.
const sqliteParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

func parseSQLiteURL(rest string) (*target, error) {
	path, rawQuery, _ := strings.Cut(rest, "?")
	switch {
	case path == "":
		return nil, errors.New("migrations: the SQLite URL names no file (want sqlite://PATH)")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return nil, fmt.Errorf("migrations: SQLite URL %q: in-memory databases and file: URIs are not supported; name a file", path)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("migrations: SQLite URL options: %w", err)
	}
	t := &target{dialect: dialectSQLite, path: path, display: "sqlite://" + path}
	dsn := url.Values{}
	for k, vs := range q {
		switch {
		case k == "x-migrations-table":
			t.migrationsTable = q.Get(k)
		case strings.HasPrefix(k, "x-"):
			// x-no-tx-wrap in particular: the migrations rely on golang-migrate's transaction.
			return nil, fmt.Errorf("migrations: SQLite URL option %q is not supported (only x-migrations-table is)", k)
		default:
			dsn[k] = vs
		}
	}
	t.dsn = path + "?" + sqliteParams
	if len(dsn) > 0 {
		t.dsn += "&" + dsn.Encode()
	}
	return t, nil
}

// openSQLite opens golang-migrate on the SQLite file. It builds the connection itself and
// hands it to the driver's WithInstance rather than passing a sqlite:// URL, because the
// driver turns the URL back into a string with the path percent-encoded, so a path with a
// space or a '%' would name a different file from the one authd opens.
func openSQLite(src source.Driver, t *target) (*migrate.Migrate, error) {
	db, err := sql.Open("sqlite", t.dsn)
	if err != nil {
		return nil, err
	}
	drv, err := sqlite.WithInstance(db, &sqlite.Config{MigrationsTable: t.migrationsTable})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	m, err := migrate.NewWithInstance("iofs", src, dialectSQLite, drv)
	if err != nil {
		_ = drv.Close()
		return nil, err
	}
	return m, nil
}

// redact hides the target's secrets in err's message; errors.Is and errors.As still see
// the original.
func (t *target) redact(err error) error {
	if len(t.secrets) == 0 {
		return err
	}
	return &redactedError{err: err, secrets: t.secrets}
}

type redactedError struct {
	err     error
	secrets []string
}

func (e *redactedError) Error() string {
	msg := e.err.Error()
	for _, s := range e.secrets {
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s), url.UserPassword("", s).String()[1:]} {
			if form != "" {
				msg = strings.ReplaceAll(msg, form, "xxxxx")
			}
		}
	}
	return msg
}

func (e *redactedError) Unwrap() error { return e.err }
