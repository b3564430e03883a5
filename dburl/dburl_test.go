package dburl

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseAcceptsPostgresAndSQLiteURLs(t *testing.T) {
	for _, tc := range []struct {
		url, dialect, path, display string
	}{
		{"postgres://authd@db.example:5432/authd?sslmode=disable", Postgres, "", "postgres://authd@db.example:5432/authd?sslmode=disable"},
		{"postgresql://authd@db.example/authd", Postgres, "", "postgresql://authd@db.example/authd"},
		{"POSTGRES://db.example/authd", Postgres, "", "postgres://db.example/authd"},
		{"postgres:///authd", Postgres, "", "postgres:///authd"}, // no host: the driver's default
		// SQLite: PATH is everything up to the first '?', relative or absolute, taken literally.
		{"sqlite://./data/authd.db", SQLite, "./data/authd.db", "sqlite://./data/authd.db"},
		{"sqlite://data/authd.db", SQLite, "data/authd.db", "sqlite://data/authd.db"},
		{"sqlite:///var/lib/authd/authd.db", SQLite, "/var/lib/authd/authd.db", "sqlite:///var/lib/authd/authd.db"},
		{"SQLITE://my db%20.db?x-migrations-table=m&_pragma=synchronous(NORMAL)", SQLite, "my db%20.db", "sqlite://my db%20.db"},
		{"sqlite://a.db?", SQLite, "a.db", "sqlite://a.db"},
		// The store ignores x-… options it does not know; package migrations refuses them.
		{"sqlite://a.db?x-no-tx-wrap=true", SQLite, "a.db", "sqlite://a.db"},
	} {
		u, err := Parse(tc.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.url, err)
			continue
		}
		if u.Dialect != tc.dialect || u.Path != tc.path || u.Display != tc.display {
			t.Errorf("Parse(%q) = dialect %q path %q display %q, want %q %q %q",
				tc.url, u.Dialect, u.Path, u.Display, tc.dialect, tc.path, tc.display)
		}
	}
}

func TestParseRefusesWithAMessageNamingTheProblem(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "must start with postgres://, postgresql:// or sqlite://"},
		{"authd.db", "must start with postgres://, postgresql:// or sqlite://"},
		{"postgres:/db.example/authd", "must start with postgres://, postgresql:// or sqlite://"},
		{"mysql://root@db/authd", `unsupported database URL scheme "mysql"`},
		// A libpq key=value string is not a URL; what stands before "://" is not quoted.
		{"host=db password=s3cr3t://x", "must start with postgres://, postgresql:// or sqlite://"},
		{"sqlite://", "the SQLite URL names no file"},
		{"sqlite://?_pragma=foreign_keys(1)", "the SQLite URL names no file"},
		{"sqlite://:memory:", `SQLite URL ":memory:": in-memory databases and file: URIs are not supported`},
		{"sqlite://file:authd.db?mode=memory", `SQLite URL "file:authd.db": in-memory databases and file: URIs are not supported`},
		{"sqlite://a.db?%zz", "SQLite URL options: invalid URL escape"},
		// url.Parse's own message would quote the password; Parse's does not.
		{"postgres://authd:s3cr/3t@127.0.0.1:5432/authd", "the PostgreSQL URL does not parse (percent-encode special characters"},
		{"postgres://authd:s3cr3t@127.0.0.1:notaport/authd", "the PostgreSQL URL does not parse"},
		{"postgresql://authd:s3cr3t@[::1/authd", "the PostgreSQL URL does not parse"},
	} {
		u, err := Parse(tc.url)
		if err == nil {
			t.Errorf("Parse(%q) succeeded: %+v", tc.url, u)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %q, want it to contain %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "s3cr") {
			t.Errorf("Parse(%q) = %q shows the password", tc.url, err)
		}
	}
}

// TestOptionsReachOnlyTheirReader: one URL serves the migrations (x-… options) and the store
// (pool_… options on PostgreSQL), and neither sends the other's options to the server.
func TestOptionsReachOnlyTheirReader(t *testing.T) {
	u, err := Parse("postgresql://authd:pw@db.example:5433/authd?sslmode=require&pool_max_conns=15&x-migrations-table=m")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.PoolURL(), "postgresql://authd:pw@db.example:5433/authd?pool_max_conns=15&sslmode=require"; got != want {
		t.Errorf("PoolURL() = %q, want %q", got, want)
	}
	m := u.MigrateURL()
	if got, want := m.String(), "postgresql://authd:pw@db.example:5433/authd?sslmode=require&x-migrations-table=m"; got != want {
		t.Errorf("MigrateURL() = %q, want %q", got, want)
	}
	m.Scheme, m.RawQuery = "pgx5", ""
	if got := u.MigrateURL().String(); !strings.HasPrefix(got, "postgresql://") || !strings.Contains(got, "sslmode") {
		t.Errorf("changing MigrateURL's result changed the URL: %q", got)
	}

	for _, tc := range []struct{ url, dsn, migrateOpts string }{
		{"sqlite://a.db", "a.db?" + sqliteParams, ""},
		{"sqlite://data/my db%20.db?_pragma=synchronous(NORMAL)&x-migrations-table=m",
			"data/my db%20.db?" + sqliteParams + "&_pragma=synchronous%28NORMAL%29", "x-migrations-table=m"},
		{"sqlite:///a.db?pool_max_conns=2&x-no-tx-wrap=true", "/a.db?" + sqliteParams + "&pool_max_conns=2", "x-no-tx-wrap=true"},
	} {
		u, err := Parse(tc.url)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.url, err)
		}
		if got := u.SQLiteDSN(); got != tc.dsn {
			t.Errorf("%s: SQLiteDSN() = %q, want %q", tc.url, got, tc.dsn)
		}
		if got := u.MigrateOptions().Encode(); got != tc.migrateOpts {
			t.Errorf("%s: MigrateOptions() = %q, want %q", tc.url, got, tc.migrateOpts)
		}
	}
}

func TestSQLiteWaitsForLocksAndEnforcesForeignKeys(t *testing.T) {
	for _, p := range []string{"_pragma=busy_timeout(5000)", "_pragma=journal_mode(WAL)", "_pragma=foreign_keys(1)", "_txlock=immediate"} {
		if !strings.Contains(sqliteParams, p) {
			t.Errorf("SQLite connection settings lack %s", p)
		}
	}
}

// TestPasswordNeverShown: the display form and redacted errors hide the password in every
// form a URL carries it.
func TestPasswordNeverShown(t *testing.T) {
	const pw = "p@ss w/rd"
	for _, tc := range []struct{ url, display string }{
		{"postgres://authd:" + url.PathEscape("p@ss w") + "%2Frd@db.example/authd?password=" + url.QueryEscape(pw),
			"postgres://authd:xxxxx@db.example/authd?password=xxxxx"},
		{"postgres://" + url.UserPassword("authd", pw).String() + "@db.example/authd", "postgres://authd:xxxxx@db.example/authd"},
		{"postgresql://authd@db.example/authd?sslmode=disable&password=" + url.QueryEscape(pw),
			"postgresql://authd@db.example/authd?password=xxxxx&sslmode=disable"},
		// The client key's passphrase (libpq and pgx: sslpassword).
		{"postgres://authd@db.example/authd?sslmode=verify-full&sslpassword=" + url.QueryEscape(pw),
			"postgres://authd@db.example/authd?sslmode=verify-full&sslpassword=xxxxx"},
	} {
		u, err := Parse(tc.url)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.url, err)
		}
		if u.Display != tc.display {
			t.Errorf("Display = %q, want %q", u.Display, tc.display)
		}
		inner := errors.New("connect " + tc.url + " failed for password " + pw)
		err = u.Redact(inner)
		for _, form := range []string{"ss w", "ss+w", "ss%20w"} {
			if strings.Contains(err.Error(), form) {
				t.Errorf("message %q shows the password", err)
			}
		}
		if !errors.Is(err, inner) {
			t.Error("redaction hides the wrapped error from errors.Is")
		}
	}

	for _, raw := range []string{"postgres://authd@db.example/authd", "postgres://authd:@db.example/authd", "sqlite://a.db"} {
		u, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		inner := errors.New("refused")
		if err := u.Redact(inner); err != inner {
			t.Errorf("%s: Redact changed an error with no password to hide: %v", raw, err)
		}
	}
}
