package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/authd/authd/migrations"
	"github.com/authd/authd/store"
	"github.com/authd/authd/store/sqlstore"
	"github.com/authd/authd/store/storetest"
	"github.com/authd/authd/testenv"
)

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// open migrates databaseURL and opens a store on it, closed when the test ends.
func open(t testing.TB, databaseURL string) *sqlstore.Store {
	t.Helper()
	ctx := ctxFor(t)
	if err := migrations.Up(ctx, databaseURL); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	// 8 connections: enough for real contention in the concurrency tests, few enough for
	// parallel tests against one shared server.
	s, err := sqlstore.Open(ctx, databaseURL, sqlstore.Options{MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func sqliteURL(t *testing.T) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "authd.db")
}

func TestPostgresKeepsTheStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, testenv.Postgres(t))
		if s.Dialect() != "postgres" {
			t.Fatalf("Dialect() = %q", s.Dialect())
		}
		return s
	})
}

func TestSQLiteKeepsTheStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, sqliteURL(t))
		if s.Dialect() != "sqlite" {
			t.Fatalf("Dialect() = %q", s.Dialect())
		}
		return s
	})
}

// TestMigrationsGoUpDownAndUpAgain: every down migration undoes its up migration, on both
// backends.
func TestMigrationsGoUpDownAndUpAgain(t *testing.T) {
	for name, newURL := range map[string]func(t *testing.T) string{
		"postgres": func(t *testing.T) string { return testenv.Postgres(t) },
		"sqlite":   sqliteURL,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t)
			u := newURL(t)
			checkVersion := func(want uint) {
				t.Helper()
				v, dirty, err := migrations.Version(ctx, u)
				if err != nil {
					t.Fatalf("Version: %v", err)
				}
				if v != want || dirty {
					t.Fatalf("Version = %d (dirty %v), want %d, clean", v, dirty, want)
				}
			}
			if err := migrations.Up(ctx, u); err != nil {
				t.Fatalf("Up: %v", err)
			}
			checkVersion(1)
			if err := migrations.Up(ctx, u); err != nil {
				t.Fatalf("Up on an up-to-date database: %v", err)
			}
			if err := migrations.Down(ctx, u, 0); err != nil {
				t.Fatalf("Down all: %v", err)
			}
			checkVersion(0)
			if err := migrations.Down(ctx, u, 0); err != nil {
				t.Fatalf("Down on an empty database: %v", err)
			}
			s, err := sqlstore.Open(ctx, u, sqlstore.Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if _, err := s.GetUser(ctx, uuid.NewString()); err == nil || errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetUser after Down: err = %v, want a missing-table error", err)
			}
			_ = s.Close()

			if err := migrations.Up(ctx, u); err != nil {
				t.Fatalf("Up again: %v", err)
			}
			checkVersion(1)
			if err := migrations.Down(ctx, u, 1); err != nil {
				t.Fatalf("Down 1: %v", err)
			}
			checkVersion(0)
			if err := migrations.Up(ctx, u); err != nil {
				t.Fatalf("Up after Down 1: %v", err)
			}
			s = open(t, u)
			u1 := store.User{ID: uuid.NewString(), Email: "a@example.com", SecurityStamp: uuid.NewString(),
				CreatedAt: time.Now(), UpdatedAt: time.Now()}
			if err := s.CreateUser(ctx, u1); err != nil {
				t.Fatalf("CreateUser after up/down/up: %v", err)
			}
		})
	}
}

// TestSQLiteRelativePathIsCreatedUnderTheWorkingDirectory: sqlite://data/authd.db is the
// file data/authd.db, its directory made 0700, for migrations and store alike.
func TestSQLiteRelativePathIsCreatedUnderTheWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	const u = "sqlite://data/sub dir/authd.db?x-migrations-table=schema_migrations"
	ctx := ctxFor(t)
	if err := migrations.Up(ctx, u); err != nil {
		t.Fatalf("Up: %v", err)
	}
	s := open(t, u)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "data", "sub dir", "authd.db"))
	if err != nil {
		t.Fatalf("database file: %v", err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("database file mode %v", fi.Mode())
	}
	di, err := os.Stat(filepath.Join(dir, "data", "sub dir"))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("parent directory mode %v, want 0700", di.Mode().Perm())
	}
}

// TestSQLiteStoresTimesAsFixedWidthUTCText: times sort and compare as text only if every
// one has the same width and zone.
func TestSQLiteStoresTimesAsFixedWidthUTCText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "authd.db")
	s := open(t, "sqlite://"+path)
	ctx := ctxFor(t)
	at := time.Date(2031, 1, 2, 3, 4, 5, 0, time.FixedZone("UTC+1", 3600))
	u := store.User{ID: uuid.NewString(), Email: "t@example.com", SecurityStamp: uuid.NewString(), CreatedAt: at, UpdatedAt: at}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var typ, val string
	if err := db.QueryRowContext(ctx, `SELECT typeof(created_at), created_at FROM users`).Scan(&typ, &val); err != nil {
		t.Fatal(err)
	}
	if typ != "text" || val != "2031-01-02T02:04:05.000000Z" {
		t.Errorf("created_at stored as %s %q, want text \"2031-01-02T02:04:05.000000Z\"", typ, val)
	}
}

func TestSQLiteHasForeignKeysOn(t *testing.T) {
	s := open(t, sqliteURL(t))
	ctx := ctxFor(t)
	sess := store.Session{ID: uuid.NewString(), UserID: uuid.NewString(), CreatedAt: time.Now(), LastSeenAt: time.Now(), ExpiresAt: time.Now()}
	if err := s.CreateSession(ctx, sess); err == nil {
		t.Fatal("CreateSession for a user that does not exist succeeded")
	}
}

// TestErrorsNeverShowThePassword: a connection failure names the server, not the password.
func TestErrorsNeverShowThePassword(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	ctx := ctxFor(t)
	for _, u := range []string{
		"postgres://authd:" + secret + "@127.0.0.1:1/authd?sslmode=disable&connect_timeout=2",
		"postgresql://authd@127.0.0.1:1/authd?sslmode=disable&connect_timeout=2&password=" + secret,
		"postgres://authd:" + secret + "@127.0.0.1:notaport/authd",
		"postgres://authd:s3cr/3t@127.0.0.1:5432/authd",
	} {
		_, err := sqlstore.Open(ctx, u, sqlstore.Options{})
		if err == nil {
			t.Fatalf("Open(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "3t@") {
			t.Errorf("Open error shows the password: %v", err)
		}
		for name, err := range map[string]error{
			"Up":      migrations.Up(ctx, u),
			"Down":    migrations.Down(ctx, u, 0),
			"Version": func() error { _, _, err := migrations.Version(ctx, u); return err }(),
		} {
			if err == nil {
				t.Fatalf("%s(%q) succeeded", name, u)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "3t@") {
				t.Errorf("%s error shows the password: %v", name, err)
			}
		}
	}
}

func TestOpenRefusesUnknownSchemes(t *testing.T) {
	for _, u := range []string{"", "mysql://root@localhost/authd", "authd.db", "sqlite://", "sqlite://:memory:"} {
		if s, err := sqlstore.Open(ctxFor(t), u, sqlstore.Options{}); err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded", u)
		}
	}
}

// TestPostgresURLOptionsReachTheirOwner: one URL serves migrations (x-… options) and the
// store (pool_… options), and neither sends the other's options to the server.
func TestPostgresURLOptionsReachTheirOwner(t *testing.T) {
	base := testenv.Postgres(t)
	pu, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Set("x-migrations-table", "authd_migrations")
	q.Set("pool_max_conns", "3")
	pu.RawQuery = q.Encode()
	ctx := ctxFor(t)
	s := open(t, pu.String())
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var named, plain bool
	err = conn.QueryRow(ctx, `SELECT to_regclass('authd_migrations') IS NOT NULL, to_regclass('schema_migrations') IS NOT NULL`).Scan(&named, &plain)
	if err != nil {
		t.Fatal(err)
	}
	if !named || plain {
		t.Errorf("migrations table: authd_migrations exists %v, schema_migrations exists %v", named, plain)
	}
}
