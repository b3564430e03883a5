// Package dburl parses the database URL that authd's store and its migrations both take, and
// keeps the URL's password out of messages.
//
// The forms are postgres://… or postgresql://… (PostgreSQL) and sqlite://PATH (SQLite; PATH is
// everything up to the first '?', relative or absolute, taken literally). In-memory SQLite and
// file: URIs are refused. Options after '?' have one reader each: x-… options are
// golang-migrate's and reach only package migrations; on PostgreSQL, pool_… options are
// pgxpool's and reach only the store; every other option goes to the driver.
//
// Parse's errors name the problem, never the password, and carry no package prefix: each
// caller adds its own.
package dburl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// The dialects. Each is also the name of its directory in package migrations.
const (
	Postgres = "postgres"
	SQLite   = "sqlite"
)

// URL is a parsed database URL.
type URL struct {
	Dialect string // Postgres or SQLite
	Display string // the URL with its password replaced, for messages
	Path    string // SQLite: the database file

	pg      *url.URL   // PostgreSQL: the URL as given, query re-encoded
	opts    url.Values // SQLite: the options after '?'
	secrets []string   // strings that must never appear in a message
}

// Parse parses a database URL.
func Parse(raw string) (*URL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("the database URL must start with postgres://, postgresql:// or sqlite://")
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return parsePostgres(raw)
	case "sqlite":
		return parseSQLite(rest)
	case "":
	default:
		if plainScheme(scheme) { // anything else before "://" may be a key=value string
			return nil, fmt.Errorf("unsupported database URL scheme %q (want postgres://, postgresql:// or sqlite://)", scheme)
		}
	}
	return nil, errors.New("the database URL must start with postgres://, postgresql:// or sqlite://")
}

// plainScheme reports whether s looks like a URL scheme (RFC 3986: a letter, then letters,
// digits, + - .), so quoting it in a message cannot show a secret.
func plainScheme(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// secretParams are the query options that hold secrets (libpq's and pgx's names).
var secretParams = []string{"password", "sslpassword"}

func parsePostgres(raw string) (*URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's message quotes parts of the URL, which may be parts of the password.
		return nil, errors.New("the PostgreSQL URL does not parse " +
			"(percent-encode special characters in the user name and password)")
	}
	d := &URL{Dialect: Postgres}
	if pw, ok := u.User.Password(); ok && pw != "" {
		d.secrets = append(d.secrets, pw)
	}
	q := u.Query()
	for _, p := range secretParams {
		if pw := q.Get(p); pw != "" {
			d.secrets = append(d.secrets, pw)
		}
	}
	u.RawQuery = q.Encode()
	d.pg = u

	shown := *u
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			shown.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	sq := shown.Query()
	for _, p := range secretParams {
		if sq.Has(p) {
			sq.Set(p, "xxxxx")
		}
	}
	shown.RawQuery = sq.Encode()
	d.Display = shown.String()
	return d, nil
}

func parseSQLite(rest string) (*URL, error) {
	path, rawQuery, _ := strings.Cut(rest, "?")
	switch {
	case path == "":
		return nil, errors.New("the SQLite URL names no file (want sqlite://PATH)")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return nil, fmt.Errorf("SQLite URL %q: in-memory databases and file: URIs are not supported; name a file", path)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("SQLite URL options: %w", err)
	}
	return &URL{Dialect: SQLite, Display: "sqlite://" + path, Path: path, opts: q}, nil
}

func isMigrateOption(k string) bool { return strings.HasPrefix(k, "x-") }

// PoolURL is the PostgreSQL connection string for pgxpool: the URL without its x-… options,
// which the server would refuse as unknown run-time parameters.
func (u *URL) PoolURL() string {
	return without(u.pg, isMigrateOption).String()
}

// MigrateURL is a copy of the PostgreSQL URL for golang-migrate: the URL without its pool_…
// options, which mean nothing to a single connection (the server would refuse them as
// unknown run-time parameters).
func (u *URL) MigrateURL() *url.URL {
	return without(u.pg, func(k string) bool { return strings.HasPrefix(k, "pool_") })
}

func without(u *url.URL, drop func(string) bool) *url.URL {
	c := *u
	q := c.Query()
	for k := range q {
		if drop(k) {
			q.Del(k)
		}
	}
	c.RawQuery = q.Encode()
	return &c
}

// MigrateOptions are the SQLite URL's x-… options, golang-migrate's. (On PostgreSQL they
// travel in MigrateURL.)
func (u *URL) MigrateOptions() url.Values {
	m := url.Values{}
	for k, vs := range u.opts {
		if isMigrateOption(k) {
			m[k] = vs
		}
	}
	return m
}

// sqliteParams are the connection settings both the store and the migrations use: wait for
// a lock instead of failing at once, write-ahead log, enforced foreign keys, and BEGIN
// IMMEDIATE so that a transaction takes the write lock up front (a deferred one that reads
// and then writes can fail with SQLITE_BUSY instead of waiting, and the store's updaters
// rely on holding the lock from their first read).
const sqliteParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// SQLiteDSN is the modernc.org/sqlite data source name: the file, authd's connection
// settings, then the URL's options but the x-… ones.
func (u *URL) SQLiteDSN() string {
	dsn := u.Path + "?" + sqliteParams
	opts := url.Values{}
	for k, vs := range u.opts {
		if !isMigrateOption(k) {
			opts[k] = vs
		}
	}
	if len(opts) > 0 {
		dsn += "&" + opts.Encode()
	}
	return dsn
}

// Redact hides the URL's password in err's message, in each of the forms a URL can carry
// it; errors.Is and errors.As still see the original.
func (u *URL) Redact(err error) error {
	if len(u.secrets) == 0 {
		return err
	}
	return &redactedError{err: err, secrets: u.secrets}
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
