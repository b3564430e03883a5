package sqlstore

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

const (
	dialectPostgres = "postgres"
	dialectSQLite   = "sqlite"
)

// target is a parsed database URL. The rules are package migrations' rules (the schema
// package does not depend on the store, nor the store on it): keep the two in step.
type target struct {
	dialect string
	display string   // the URL with secrets replaced, for messages
	secrets []string // strings that must never appear in a message

	pg string // PostgreSQL: the pgxpool connection string

	path string // SQLite: the database file
	dsn  string // SQLite: the modernc.org/sqlite data source name
}

func parseURL(raw string) (*target, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("sqlstore: the database URL must start with postgres://, postgresql:// or sqlite://")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return parsePostgresURL(raw)
	case "sqlite":
		return parseSQLiteURL(rest)
	default:
		return nil, fmt.Errorf("sqlstore: unsupported database URL scheme %q (want postgres://, postgresql:// or sqlite://)", scheme)
	}
}

func parsePostgresURL(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's message quotes parts of the URL, which may be parts of the password.
		return nil, errors.New("sqlstore: the PostgreSQL URL does not parse " +
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
	// golang-migrate's x-… options are for package migrations; the server would refuse them
	// as unknown run-time parameters.
	for k := range q {
		if strings.HasPrefix(k, "x-") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	t.pg = u.String()

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

// sqliteParams: wait for a lock instead of failing at once, write-ahead log, enforced
// foreign keys, and BEGIN IMMEDIATE so that a transaction takes the write lock up front (a
// deferred one that reads and then writes can fail with SQLITE_BUSY instead of waiting, and
// the updaters rely on holding the lock from their first read). Package migrations uses
// the same settings.
const sqliteParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

func parseSQLiteURL(rest string) (*target, error) {
	path, rawQuery, _ := strings.Cut(rest, "?")
	switch {
	case path == "":
		return nil, errors.New("sqlstore: the SQLite URL names no file (want sqlite://PATH)")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return nil, fmt.Errorf("sqlstore: SQLite URL %q: in-memory databases and file: URIs are not supported; name a file", path)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: SQLite URL options: %w", err)
	}
	for k := range q {
		if strings.HasPrefix(k, "x-") {
			q.Del(k)
		}
	}
	t := &target{dialect: dialectSQLite, path: path, display: "sqlite://" + path}
	t.dsn = path + "?" + sqliteParams
	if len(q) > 0 {
		t.dsn += "&" + q.Encode()
	}
	return t, nil
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
