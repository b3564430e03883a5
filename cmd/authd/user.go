package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/config"
	"github.com/authd/authd/store/sqlstore"
)

// userCmd runs `authd user unlock EMAIL`.
func userCmd(ctx context.Context, c config.Config, log *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "unlock" {
		return usageError{"user needs: unlock EMAIL"}
	}
	st, err := sqlstore.Open(ctx, c.DatabaseURL, sqlstore.Options{MaxConns: 2, Logger: log})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	if err := authn.Unlock(ctx, st, args[1], time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unlocked %s\n", authn.NormalizeEmail(args[1]))
	return nil
}
