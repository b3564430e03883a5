// Command authd is the authentication service and forward-auth gateway: one binary with
// the subcommands serve, migrate, keys, user and version.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/authd/authd/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: authd <command> [arguments]

commands:
  serve                 run the HTTP and gRPC servers (the default)
  migrate up|down [N]|version
                        apply, roll back (N steps, default 1) or show the schema version
  keys generate [--dir D] [--alg RS256|PS256|ES256|EdDSA] [--bits 2048|3072|4096]
                        write a new signing key pair
  user unlock EMAIL     clear the login lockout of an account
  version               print the version

Configuration comes from the environment (and ./.env outside production); see .env.example.
`

// exitUsage is the status for bad configuration or arguments, as for a usage error.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks a problem the operator fixes by changing arguments or configuration.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "authd", version)
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	case "serve":
		err = withConfig(stderr, func(c config.Config, log *slog.Logger) error { return serve(ctx, c, log, stderr) })
	case "migrate":
		err = withConfig(stderr, func(c config.Config, log *slog.Logger) error { return migrateCmd(ctx, c, args, stdout) })
	case "keys":
		err = keysCmd(args, stdout)
	case "user":
		err = withConfig(stderr, func(c config.Config, log *slog.Logger) error { return userCmd(ctx, c, log, args, stdout) })
	default:
		err = usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
	if err == nil {
		return 0
	}
	var ue usageError
	var ce *config.Error
	switch {
	case errors.As(err, &ce):
		for _, p := range ce.Problems {
			fmt.Fprintln(stderr, "authd: config:", p)
		}
		return exitUsage
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "authd:", ue.msg)
		fmt.Fprint(stderr, usage)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "authd:", err)
		return 1
	}
}

// withConfig loads and validates the configuration, builds the logger and runs fn.
func withConfig(stderr io.Writer, fn func(config.Config, *slog.Logger) error) error {
	getenv, err := config.Getenv(".env")
	if err != nil {
		return &config.Error{Problems: []string{".env: " + err.Error()}}
	}
	c, err := config.Load(getenv)
	if err != nil {
		return err
	}
	return fn(c, newLogger(stderr, c.LogLevel))
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(strings.ToUpper(level)))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}
