package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresServer is a private PostgreSQL server for one test: its own data directory in a
// temporary directory, its own port on 127.0.0.1, its own socket directory. Tests that must
// stop or restart the database (outage handling, reconnection) use it, never the shared
// server. Its methods must be called from the test's goroutine (they fail the test).
type PostgresServer struct {
	t       testing.TB
	bin     string   // directory holding initdb and pg_ctl
	asUser  []string // command prefix that runs as the postgres OS user; empty when not root
	dir     string   // the temporary directory, owned by the server's OS user
	port    int
	running bool
}

// StartPostgresServer initialises and starts a private PostgreSQL server (initdb and pg_ctl,
// found on PATH or under /usr/lib/postgresql/*/bin). As root it runs them as the postgres OS
// user, since initdb refuses root. The server is stopped and its directory removed when the
// test ends. It fails the test, saying what to install, when PostgreSQL is not installed.
func StartPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		t.Fatalf("testenv: %v; install PostgreSQL's server (apt-get install postgresql)", err)
	}
	s := &PostgresServer{t: t, bin: bin}

	dir, err := os.MkdirTemp("", "authd-pg-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s.dir = dir
	t.Cleanup(s.cleanup)

	if os.Geteuid() == 0 {
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			t.Fatalf("testenv: running as root, and runuser (util-linux) is missing to run PostgreSQL as the postgres user: %v", err)
		}
		pg, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root, and there is no postgres OS user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		s.asUser = []string{runuser, "-u", "postgres", "--"}
	}

	if out, err := s.run(filepath.Join(bin, "initdb"), "-D", s.dataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	s.port, err = freePort()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s.Start()
	return s
}

// URL is a database URL for the server's postgres database.
func (s *PostgresServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Port is the server's TCP port on 127.0.0.1; it stays the same across Stop and Start.
func (s *PostgresServer) Port() int { return s.port }

// Stop shuts the server down (pg_ctl stop, fast mode: open connections are ended) and
// waits until it has.
func (s *PostgresServer) Stop() {
	s.t.Helper()
	if !s.running {
		return
	}
	if out, err := s.pgctl("stop", "-m", "fast", "-w", "-t", "60"); err != nil {
		s.t.Fatalf("testenv: pg_ctl stop: %v\n%s", err, out)
	}
	s.running = false
}

// Start starts the server on its port and waits until it accepts connections.
func (s *PostgresServer) Start() {
	s.t.Helper()
	if s.running {
		return
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -F", s.port, s.dir)
	out, err := s.pgctl("start", "-w", "-t", "60", "-l", s.logFile(), "-o", opts)
	if err != nil {
		log, _ := os.ReadFile(s.logFile())
		s.t.Fatalf("testenv: pg_ctl start: %v\n%s\nserver log:\n%s", err, out, lastLines(log, 20))
	}
	s.running = true
	// pg_ctl -w waits for the postmaster; make sure TCP answers too before returning.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.URL())
		if err == nil {
			_ = conn.Close(ctx)
			return
		}
		if ctx.Err() != nil {
			s.t.Fatalf("testenv: private PostgreSQL on port %d does not answer: %v", s.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *PostgresServer) cleanup() {
	if s.running {
		// Immediate mode: the data is thrown away anyway.
		if out, err := s.pgctl("stop", "-m", "immediate", "-w", "-t", "60"); err != nil {
			s.t.Logf("testenv: pg_ctl stop: %v\n%s", err, out)
		} else {
			s.running = false
		}
	}
	if !s.running {
		if err := os.RemoveAll(s.dir); err != nil {
			s.t.Logf("testenv: remove %s: %v", s.dir, err)
		}
	}
}

func (s *PostgresServer) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *PostgresServer) logFile() string { return filepath.Join(s.dir, "server.log") }

func (s *PostgresServer) pgctl(args ...string) ([]byte, error) {
	return s.run(filepath.Join(s.bin, "pg_ctl"), append([]string{"-D", s.dataDir()}, args...)...)
}

// run runs a PostgreSQL program as the server's OS user, in the server's directory (the
// postgres user may not be allowed into the test's working directory).
func (s *PostgresServer) run(prog string, args ...string) ([]byte, error) {
	argv := append(slices.Clone(s.asUser), prog)
	argv = append(argv, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves the server running with our pipes: wait for pg_ctl only.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// postgresBinDir finds the directory that holds both initdb and pg_ctl: PATH first (through
// symbolic links, so /usr/local/bin/initdb → /usr/lib/postgresql/15/bin works), then the
// newest /usr/lib/postgresql/*/bin.
func postgresBinDir() (string, error) {
	has := func(dir string) bool {
		for _, p := range []string{"initdb", "pg_ctl"} {
			if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("initdb and pg_ctl are neither on PATH nor under /usr/lib/postgresql/*/bin")
}

// versionOf reads the major version from /usr/lib/postgresql/VERSION/bin.
func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Another process could take it
// before the server binds it; pg_ctl start would then fail and say so.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port != 5432 { // never the shared server's port, whatever the kernel says
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port found")
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
