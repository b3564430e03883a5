package migrations

import (
	"context"
	"io/fs"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authd/authd/dburl"
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
	pg, lite := names(dburl.Postgres), names(dburl.SQLite)
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

// The URL forms, the SQLite file and connection settings and the password's redaction are
// dburl's, tested there; these tests cover what migrations adds.

func TestSQLiteURLTakesOnlyTheMigrationsTableOption(t *testing.T) {
	tgt, err := parseURL("sqlite://a.db?x-migrations-table=m&_pragma=synchronous(NORMAL)")
	if err != nil {
		t.Fatal(err)
	}
	if dsn := tgt.SQLiteDSN(); tgt.migrationsTable != "m" || strings.Contains(dsn, "x-") || !strings.Contains(dsn, "synchronous") {
		t.Errorf("options: table %q dsn %q", tgt.migrationsTable, dsn)
	}
	if tgt, err := parseURL("sqlite://a.db"); err != nil {
		t.Error(err)
	} else if tgt.migrationsTable != "" {
		t.Errorf("no options: table %q, want the default", tgt.migrationsTable)
	}
}

func TestBadURLsAreRefusedClearly(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "migrations: the database URL must start with postgres://"},
		{"sqlite://:memory:", "migrations: SQLite URL \":memory:\": in-memory databases"},
		// x-no-tx-wrap in particular: the migrations rely on golang-migrate's transaction.
		{"sqlite://a.db?x-no-tx-wrap=true", `migrations: SQLite URL option "x-no-tx-wrap" is not supported`},
		{"sqlite://a.db?x-migrations-table=m&x-multi-statement=true", `"x-multi-statement" is not supported`},
	} {
		_, err := parseURL(tc.url)
		if err == nil {
			t.Errorf("parseURL(%q) succeeded", tc.url)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseURL(%q) = %q, want it to contain %q", tc.url, err, tc.want)
		}
	}
}
