package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/authd/authd/config"
	"github.com/authd/authd/migrations"
)

// migrateCmd runs `authd migrate up|down [N]|version` against DATABASE_URL.
func migrateCmd(ctx context.Context, c config.Config, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{"migrate needs up, down [N] or version"}
	}
	switch args[0] {
	case "up":
		if len(args) != 1 {
			return usageError{"migrate up takes no arguments"}
		}
		if err := migrations.Up(ctx, c.DatabaseURL); err != nil {
			return err
		}
	case "down":
		steps := 1
		if len(args) == 2 {
			if args[1] == "all" {
				steps = 0
			} else {
				n, err := strconv.Atoi(args[1])
				if err != nil || n < 1 {
					return usageError{fmt.Sprintf("migrate down: %q is not a positive number of steps or \"all\"", args[1])}
				}
				steps = n
			}
		} else if len(args) > 2 {
			return usageError{"migrate down takes at most one argument"}
		}
		if err := migrations.Down(ctx, c.DatabaseURL, steps); err != nil {
			return err
		}
	case "version":
	default:
		return usageError{fmt.Sprintf("migrate: unknown action %q (want up, down or version)", args[0])}
	}
	v, dirty, err := migrations.Version(ctx, c.DatabaseURL)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema version %d", v)
	if dirty {
		fmt.Fprint(stdout, " (dirty: a migration failed half-way; fix it by hand, then force the version)")
	}
	fmt.Fprintln(stdout)
	return nil
}
