package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// driver
	"github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source"

	"github.com/authd/authd/dburl"
)

// target is the database URL and what golang-migrate takes from it.
type target struct {
	*dburl.URL
	migrationsTable string // SQLite: x-migrations-table, or "" for the default
}

func parseURL(raw string) (*target, error) {
	u, err := dburl.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	t := &target{URL: u}
	if u.Dialect == dburl.SQLite {
		opts := u.MigrateOptions()
		for k := range opts {
			if k != "x-migrations-table" {
				// x-no-tx-wrap in particular: the migrations rely on golang-migrate's transaction.
				return nil, fmt.Errorf("migrations: SQLite URL option %q is not supported (only x-migrations-table is)", k)
			}
		}
		t.migrationsTable = opts.Get("x-migrations-table")
	}
	return t, nil
}

// migrateURL is the URL for golang-migrate's pgx/v5 driver. When ctx has a deadline and the
// URL sets no connect_timeout, the deadline bounds the connection attempt (golang-migrate
// takes no context).
func (t *target) migrateURL(ctx context.Context) string {
	u := t.MigrateURL()
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

// openSQLite opens golang-migrate on the SQLite file. It builds the connection itself and
// hands it to the driver's WithInstance rather than passing a sqlite:// URL, because the
// driver turns the URL back into a string with the path percent-encoded, so a path with a
// space or a '%' would name a different file from the one authd opens.
func openSQLite(src source.Driver, t *target) (*migrate.Migrate, error) {
	db, err := sql.Open("sqlite", t.SQLiteDSN())
	if err != nil {
		return nil, err
	}
	drv, err := sqlite.WithInstance(db, &sqlite.Config{MigrationsTable: t.migrationsTable})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	m, err := migrate.NewWithInstance("iofs", src, dburl.SQLite, drv)
	if err != nil {
		_ = drv.Close()
		return nil, err
	}
	return m, nil
}
