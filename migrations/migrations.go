// Package migrations owns authd's SQL schema: the PostgreSQL and SQLite migrations, embedded
// in the binary, and the functions that apply them with golang-migrate.
//
// Each dialect has its own directory of numbered up/down pairs (postgres/, sqlite/) that keep
// the same tables, columns and meaning. Functions take the database URL that users give authd:
// postgres://… or postgresql://… (PostgreSQL, through pgx/v5), or sqlite://PATH (SQLite,
// through modernc.org/sqlite; PATH is everything up to the first '?', relative or absolute,
// taken literally). Errors never contain the URL's password.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/authd/authd/dburl"
)

// files holds the migrations; embed.FS is read-only.
//
//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Up applies every pending migration. A database already at the latest version is not an
// error. For SQLite the database file and its parent directory (mode 0700) are created.
func Up(ctx context.Context, databaseURL string) error {
	return withMigrate(ctx, databaseURL, true, "up", func(m *migrate.Migrate) error {
		return ignoreNoChange(m.Up())
	})
}

// Down rolls back the last steps migrations, or every migration when steps <= 0. Asking for
// more steps than are applied rolls back all of them; a database with nothing applied is not
// an error.
func Down(ctx context.Context, databaseURL string, steps int) error {
	return withMigrate(ctx, databaseURL, false, "down", func(m *migrate.Migrate) error {
		var err error
		if steps <= 0 {
			err = m.Down()
		} else {
			err = m.Steps(-steps)
		}
		var short migrate.ErrShortLimit
		if errors.As(err, &short) {
			return nil
		}
		return ignoreNoChange(err)
	})
}

// Version reports the schema version and whether the last migration failed part-way
// (dirty). A database with no migration applied is version 0, not dirty.
func Version(ctx context.Context, databaseURL string) (version uint, dirty bool, err error) {
	err = withMigrate(ctx, databaseURL, false, "version", func(m *migrate.Migrate) error {
		v, d, err := m.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		version, dirty = v, d
		return err
	})
	return version, dirty, err
}

func ignoreNoChange(err error) error {
	if errors.Is(err, migrate.ErrNoChange) {
		return nil
	}
	return err
}

// withMigrate opens golang-migrate on the database and runs fn, stopping it gracefully
// (between migrations) when ctx ends. create allows a missing SQLite file to be created.
func withMigrate(ctx context.Context, databaseURL string, create bool, op string, fn func(*migrate.Migrate) error) error {
	tgt, err := parseURL(databaseURL)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		return tgt.Redact(fmt.Errorf("migrations: %s on %s: %w", op, tgt.Display, err))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	src, err := iofs.New(files, tgt.Dialect)
	if err != nil {
		return fail(err)
	}

	var m *migrate.Migrate
	switch tgt.Dialect {
	case dburl.Postgres:
		m, err = migrate.NewWithSourceInstance("iofs", src, tgt.migrateURL(ctx))
	case dburl.SQLite:
		if create {
			if err := os.MkdirAll(filepath.Dir(tgt.Path), 0o700); err != nil {
				return fail(err)
			}
		} else if _, statErr := os.Stat(tgt.Path); statErr != nil {
			return fail(fmt.Errorf("SQLite database file: %w", statErr))
		}
		m, err = openSQLite(src, tgt)
	}
	if err != nil {
		return fail(err)
	}
	defer func() {
		// Close errors after a successful run do not change the schema; they are dropped.
		_, _ = m.Close()
	}()

	// golang-migrate takes no context: GracefulStop makes it stop between migrations.
	var stopped atomic.Bool
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			stopped.Store(true)
			m.GracefulStop <- true
		case <-done:
		}
	})
	err = fn(m)
	close(done)
	wg.Wait()
	if err != nil {
		var dirty migrate.ErrDirty
		if errors.As(err, &dirty) {
			err = fmt.Errorf("schema is dirty at version %d (a migration failed part-way): repair it by hand, "+
				"then force the version with the migrate CLI: %w", dirty.Version, err)
		}
		return fail(err)
	}
	if stopped.Load() {
		return fail(fmt.Errorf("interrupted, some migrations may be applied: %w", ctx.Err()))
	}
	return nil
}
