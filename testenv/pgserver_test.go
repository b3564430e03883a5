package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresServerStopsAndStartsAgain: a private server goes down on Stop, comes back on
// the same port with its data on Start, and the shared server is left alone throughout.
func TestPostgresServerStopsAndStartsAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	sharedStart := postmasterStart(ctx, t, DatabaseURL())

	s := StartPostgresServer(t)
	if s.Port() == 5432 {
		t.Fatal("the private server took the shared server's port")
	}
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	s.Stop()
	if c, err := pgx.Connect(ctx, s.URL()); err == nil {
		_ = c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	s.Start()
	conn, err = pgx.Connect(ctx, s.URL())
	if err != nil {
		t.Fatalf("connect after Start: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v int
	if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("data after restart: v=%d err=%v", v, err)
	}

	if got := postmasterStart(ctx, t, DatabaseURL()); !got.Equal(sharedStart) {
		t.Errorf("the shared server restarted (started %v, now %v)", sharedStart, got)
	}
}

func postmasterStart(ctx context.Context, t *testing.T, url string) time.Time {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("shared PostgreSQL at %s: %v", redactURL(url), err)
	}
	defer conn.Close(ctx)
	var at time.Time
	if err := conn.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at
}
