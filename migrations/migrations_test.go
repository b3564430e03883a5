package migrations

import (
	"context"
	"errors"
	"io/fs"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// The up/down/up round trip on real PostgreSQL and SQLite is in store/sqlstore's tests,
// next to the store that uses the schema.

func TestEveryDialectHasTheSameUpAndDownMigrations(t *testing.T) {
	names := func(dialect string) []string {
		entries, err := fs.ReadDir(files, dialect)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	pg, lite := names(dialectPostgres), names(dialectSQLite)
	if !slices.Equal(pg, lite) {
		t.Fatalf("postgres has %v, sqlite has %v", pg, lite)
	}
	for _, n := range pg {
		var pair string
		switch {
		case strings.HasSuffix(n, ".up.sql"):
			pair = strings.TrimSuffix(n, ".up.sql") + ".down.sql"
		case strings.HasSuffix(n, ".down.sql"):
			pair = strings.TrimSuffix(n, ".down.sql") + ".up.sql"
		default:
			t.Errorf("%s is neither .up.sql nor .down.sql", n)
			continue
		}
		if !slices.Contains(pg, pair) {
			t.Errorf("%s has no %s", n, pair)
		}
	}
}

func TestPostgresURLBecomesAPgx5URLWithoutPoolOptions(t *testing.T) {
	tgt, err := parseURL("postgresql://authd:pw@db.example:5433/authd?sslmode=require&pool_max_conns=15&x-migrations-table=m")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(tgt.migrateURL(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "pgx5" || u.Host != "db.example:5433" || u.Path != "/authd" {
		t.Errorf("migrate URL %s", u.Redacted())
	}
	q := u.Query()
	if q.Has("pool_max_conns") || q.Get("x-migrations-table") != "m" || q.Get("sslmode") != "require" || q.Has("connect_timeout") {
		t.Errorf("migrate URL options %v", q)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Second)
	defer cancel()
	u, _ = url.Parse(tgt.migrateURL(ctx))
	if got := u.Query().Get("connect_timeout"); got != "7" {
		t.Errorf("connect_timeout = %q under a 7 s deadline, want 7", got)
	}
}

func TestSQLiteURLNamesAFileLiterally(t *testing.T) {
	for _, tc := range []struct{ url, path string }{
		{"sqlite://./data/authd.db", "./data/authd.db"},
		{"sqlite://data/authd.db", "data/authd.db"},
		{"sqlite:///var/lib/authd/authd.db", "/var/lib/authd/authd.db"},
		{"SQLITE://my db%20.db?x-migrations-table=m&_pragma=synchronous(NORMAL)", "my db%20.db"},
	} {
		tgt, err := parseURL(tc.url)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		if tgt.dialect != dialectSQLite || tgt.path != tc.path {
			t.Errorf("%s: dialect %s path %q, want sqlite %q", tc.url, tgt.dialect, tgt.path, tc.path)
		}
		if !strings.HasPrefix(tgt.dsn, tc.path+"?"+sqliteParams) {
			t.Errorf("%s: dsn %q", tc.url, tgt.dsn)
		}
	}
	tgt, _ := parseURL("sqlite://a.db?x-migrations-table=m&_pragma=synchronous(NORMAL)")
	if tgt.migrationsTable != "m" || strings.Contains(tgt.dsn, "x-") || !strings.Contains(tgt.dsn, "synchronous") {
		t.Errorf("options: table %q dsn %q", tgt.migrationsTable, tgt.dsn)
	}
}

func TestBadURLsAreRefusedClearly(t *testing.T) {
	for _, u := range []string{
		"", "authd.db", "mysql://root@db/authd", "sqlite://", "sqlite://:memory:",
		"sqlite://a.db?x-no-tx-wrap=true", "sqlite://a.db?%zz",
	} {
		if _, err := parseURL(u); err == nil {
			t.Errorf("parseURL(%q) succeeded", u)
		}
	}
}

func TestErrorsHideThePassword(t *testing.T) {
	const pw = "p@ss w/rd"
	raw := "postgres://authd:" + url.PathEscape("p@ss w") + "%2Frd@db.example/authd?password=" + url.QueryEscape(pw)
	tgt, err := parseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(tgt.display, "ss w") || strings.Contains(tgt.display, "ss+w") || strings.Contains(tgt.display, "ss%20w") {
		t.Errorf("display %q shows the password", tgt.display)
	}
	inner := errors.New("connect " + raw + " failed for password " + pw)
	err = tgt.redact(inner)
	if msg := err.Error(); strings.Contains(msg, "ss w") || strings.Contains(msg, "ss+w") || strings.Contains(msg, "ss%20w") {
		t.Errorf("message %q shows the password", msg)
	}
	if !errors.Is(err, inner) {
		t.Error("redaction hides the wrapped error from errors.Is")
	}
}
