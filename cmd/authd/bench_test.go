package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authd/authd/testenv"
)

// Load shape of BenchmarkCheckPath: the concurrency, 1,000 users whose tokens
// repeat, a fixed number of requests per row (AUTHD_BENCH_REQUESTS overrides it).
const (
	benchConcurrency = 64
	benchUsers       = 1000
	// benchRequests per row, sent in benchRounds rounds that visit every row in turn, so
	// that a change in the machine's load (it is shared) falls on every row alike.
	benchRequests = 60000
	benchRounds   = 3
	// benchGRPCConns is how many HTTP/2 connections the gRPC load generator spreads its
	// workers over (Envoy holds one per worker thread; a 2-core proxy has about 2-4).
	benchGRPCConns = 4
	// benchRowLimit bounds one row of one round: a server that stops answering turns
	// into errors, not a benchmark that never ends.
	benchRowLimit = 2 * time.Minute
	// decisionLogSample is DECISION_LOG_SAMPLE as production runs it: the default, one
	// JSON line per check (DESIGN §5).
	decisionLogSample = "1"
)

// BenchmarkCheckPath is the check path's performance requirement, end to end: it starts
// the authd binary on real PostgreSQL and Redis twice — "hot" (the production defaults:
// verified-token cache on, Redis rate limiter, Redis session-state tier and revocation
// subscription, a decision-log line per check) and "cold" (TOKEN_CACHE_SIZE=0, so every
// check verifies the token's signature) — registers and logs in 1,000 users over HTTP,
// and drives, at concurrency 64 for a fixed number of requests each,
//
//   - gRPC envoy.service.auth.v3.Authorization/Check (a grpc-go client over loopback),
//   - GET /authz/forward-auth with Traefik's X-Forwarded-* headers (net/http, keep-alive),
//
// beside an empty Check server (grpc-go) and an empty net/http handler, which answer OK
// without work: the ceiling of each stack on this machine. The empty servers run in a
// process of their own (this test binary, re-executed), as authd does, so both sides of
// each ratio pay the same process boundary, and the table shows each server's CPU apart
// from the load generator's. Every check is
// an allow (the limits are set far above the load): any other answer is an error. It
// prints one table (to stdout) and reports the ratios authd/empty as metrics:
//
//	go test -run '^$' -bench CheckPath -benchmem ./cmd/authd/
//
// Targets (the issue): gRPC hot >= 0.65x empty with p99 <= 2x empty's; gRPC cold >= 0.35x;
// forward-auth hot >= 0.5x; zero errors. The figures are printed, not asserted (a shared
// machine makes them noisy); errors fail the benchmark.
func BenchmarkCheckPath(b *testing.B) {
	n := benchRequests
	if s := os.Getenv("AUTHD_BENCH_REQUESTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("AUTHD_BENCH_REQUESTS=%q is not a positive number", s)
		}
		n = v
	}
	dir := b.TempDir()
	common := []string{
		"DATABASE_URL=" + testenv.Postgres(b),
		"REDIS_URL=" + testenv.RedisURL(),
		// The check limits far above the load, so the limiter runs (one take per check)
		// and never denies.
		"RATE_LIMIT_CHECK_USER=1000000/1s",
		"RATE_LIMIT_CHECK_IP=1000000/1s",
		// Set-up registers and logs in 1,000 users from one address.
		"RATE_LIMIT_REGISTER_IP=0", "RATE_LIMIT_LOGIN_IP=0",
		"DECISION_LOG_SAMPLE=" + decisionLogSample,
	}
	// AUTHD_BENCH_ENV adds settings to both authd processes (space-separated KEY=VALUE),
	// to measure what a setting costs: AUTHD_BENCH_ENV="DECISION_LOG_SAMPLE=0.01".
	// AUTHD_BENCH_BINARY runs another authd build instead of this tree's, to compare two.
	common = append(common, strings.Fields(os.Getenv("AUTHD_BENCH_ENV"))...)
	hot := startBenchServer(b, dir, "hot", common...)
	hot.waitReady(b)
	// The cold replica starts once the hot one has migrated the database and written the
	// development keys under DATA_DIR, so both verify the same tokens.
	cold := startBenchServer(b, dir, "cold", append(common, "TOKEN_CACHE_SIZE=0")...)
	cold.waitReady(b)

	start := time.Now()
	tokens := loginUsers(b, hot.http, benchUsers)
	b.Logf("registered and logged in %d users in %v", len(tokens), time.Since(start).Round(time.Millisecond))

	empty, emptyGRPC, emptyHTTP := startEmptyServers(b)

	grpcReqs := make([]*authv3.CheckRequest, len(tokens))
	for i, tok := range tokens {
		grpcReqs[i] = benchCheckRequest(tok)
	}
	// authd's answers must carry the user's identity; the empty servers' cannot.
	type target struct {
		name, addr string
		server     *exec.Cmd
		identity   bool
	}
	grpcTargets := []target{
		{"gRPC empty", emptyGRPC, empty, false}, {"gRPC authd hot", hot.grpc, hot.cmd, true}, {"gRPC authd cold", cold.grpc, cold.cmd, true},
	}
	httpTargets := []target{
		{"HTTP empty", emptyHTTP, empty, false}, {"HTTP authd hot", hot.http, hot.cmd, true}, {"HTTP authd cold", cold.http, cold.cmd, true},
	}
	clients := make([]*grpcLoad, len(grpcTargets))
	for i, t := range grpcTargets {
		clients[i] = newGRPCLoad(b, t.addr)
	}
	transport := &http.Transport{
		MaxIdleConns:        2 * benchConcurrency,
		MaxIdleConnsPerHost: benchConcurrency,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	b.Cleanup(transport.CloseIdleConnections)
	httpClient := &http.Client{Transport: transport}

	// Warm up every target untimed: connections, the token caches (each of the 1,000
	// tokens seen once by both replicas), session state, the rate-limit script.
	for i, t := range grpcTargets {
		if r := driveGRPC(clients[i], t.name, t.identity, grpcReqs, len(tokens), benchConcurrency); r.errors > 0 {
			b.Fatalf("warm-up of %s: %d of %d checks failed; first: %s", t.name, r.errors, r.requests(), r.firstErr)
		}
	}
	for _, t := range httpTargets {
		if r := driveHTTP(httpClient, t.name, t.identity, t.addr, tokens, len(tokens), benchConcurrency); r.errors > 0 {
			b.Fatalf("warm-up of %s: %d of %d checks failed; first: %s", t.name, r.errors, r.requests(), r.firstErr)
		}
	}

	cpu := &cpuMeter{self: os.Getpid(), redis: testenv.RedisPID(b)}
	for b.Loop() {
		rows := make([]benchRow, len(grpcTargets)+len(httpTargets))
		for round := range benchRounds {
			per := share(n, benchRounds, round)
			for i, t := range grpcTargets {
				rows[i].add(cpu.measure(t.server, func() benchRow {
					return driveGRPC(clients[i], t.name, t.identity, grpcReqs, per, benchConcurrency)
				}))
			}
			for i, t := range httpTargets {
				rows[len(grpcTargets)+i].add(cpu.measure(t.server, func() benchRow {
					return driveHTTP(httpClient, t.name, t.identity, t.addr, tokens, per, benchConcurrency)
				}))
			}
		}
		// To stdout: go test keeps only the first lines of a benchmark's log.
		fmt.Printf("BenchmarkCheckPath:%s\n%s\n", benchTable(rows), benchTargets(rows))
		for _, r := range rows {
			if r.errors > 0 {
				b.Errorf("%s: %d of %d checks failed or were denied; first: %s", r.name, r.errors, r.requests(), r.firstErr)
			}
		}
		gEmpty, gHot, gCold, hEmpty, hHot, hCold := rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]
		b.ReportMetric(gHot.throughput()/gEmpty.throughput(), "grpc-hot-x")
		b.ReportMetric(float64(gHot.quantile(99))/float64(gEmpty.quantile(99)), "grpc-hot-p99-x")
		b.ReportMetric(gCold.throughput()/gEmpty.throughput(), "grpc-cold-x")
		b.ReportMetric(hHot.throughput()/hEmpty.throughput(), "http-hot-x")
		b.ReportMetric(hCold.throughput()/hEmpty.throughput(), "http-cold-x")
		b.ReportMetric(gHot.throughput(), "grpc-hot-checks/s")
	}
	for _, s := range []*benchServer{hot, cold} {
		s.stop(b)
	}
}

// benchRow is one line of the table: one target's requests, over every round.
type benchRow struct {
	name     string
	errors   int
	firstErr string
	elapsed  time.Duration
	lat      []time.Duration // one per request, sorted
	// CPU time of this process (the load generator), of the server process of the row
	// (authd, or the empty servers) and of redis-server; -1 when not measured.
	cpuSelf, cpuServer, cpuRedis time.Duration
	// Read and write system calls of the same processes; -1 when not measured.
	sysSelf, sysServer, sysRedis int64
}

func (r *benchRow) requests() int { return len(r.lat) }

func (r *benchRow) throughput() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

// quantile is the q-th percentile latency.
func (r *benchRow) quantile(q int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, len(r.lat)*q/100)]
}

// perRequest is a CPU total spread over the requests, or -1.
func (r *benchRow) perRequest(cpu time.Duration) time.Duration {
	if cpu < 0 || len(r.lat) == 0 {
		return -1
	}
	return cpu / time.Duration(len(r.lat))
}

// add merges one round into r.
func (r *benchRow) add(o benchRow) {
	if r.name == "" {
		*r = o
		return
	}
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
	r.errors += o.errors
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	slices.Sort(r.lat)
	for _, c := range []struct {
		dst *time.Duration
		v   time.Duration
	}{
		{&r.cpuSelf, o.cpuSelf}, {&r.cpuServer, o.cpuServer}, {&r.cpuRedis, o.cpuRedis},
	} {
		if *c.dst < 0 || c.v < 0 {
			*c.dst = -1
		} else {
			*c.dst += c.v
		}
	}
	for _, c := range []struct {
		dst *int64
		v   int64
	}{
		{&r.sysSelf, o.sysSelf}, {&r.sysServer, o.sysServer}, {&r.sysRedis, o.sysRedis},
	} {
		if *c.dst < 0 || c.v < 0 {
			*c.dst = -1
		} else {
			*c.dst += c.v
		}
	}
}

func benchTable(rows []benchRow) string {
	var t strings.Builder
	fmt.Fprintf(&t, "\n%-16s %9s %7s %12s %10s %10s %7s %9s   %s   %s\n", "target", "requests", "errors", "req/s", "p50", "p99", "ratio",
		"p99/empty", "CPU µs/req: bench server  redis", "syscalls/req: bench server redis")
	var empty benchRow
	for _, r := range rows {
		if strings.HasSuffix(r.name, " empty") {
			empty = r
		}
		fmt.Fprintf(&t, "%-16s %9d %7d %10.0f/s %10s %10s %6.2fx %8.2fx   %17s %6s %6s   %19s %6s %5s\n", r.name, r.requests(), r.errors, r.throughput(),
			r.quantile(50).Round(time.Microsecond), r.quantile(99).Round(time.Microsecond),
			r.throughput()/empty.throughput(), float64(r.quantile(99))/float64(empty.quantile(99)),
			micros(r.perRequest(r.cpuSelf)), micros(r.perRequest(r.cpuServer)), micros(r.perRequest(r.cpuRedis)),
			perReq(r.sysSelf, r.requests()), perReq(r.sysServer, r.requests()), perReq(r.sysRedis, r.requests()))
	}
	fmt.Fprintf(&t, "(concurrency %d, %d users' tokens repeated, %d rounds over the rows; GOMAXPROCS %d, NumCPU %d shared by load generator, authd,\n"+
		" Redis and PostgreSQL; empty = an OK answer without work on the same stack, in a process of its own as authd; hot = production defaults\n"+
		" (verified-token cache, Redis rate limiter, DECISION_LOG_SAMPLE=%s); cold = TOKEN_CACHE_SIZE=0: every check verifies the signature;\n"+
		" ratio = req/s / the empty row's; CPU = user+system time of each process over the row / requests.\n"+
		" Targets: gRPC hot >= 0.65x with p99 <= 2x, gRPC cold >= 0.35x, HTTP hot >= 0.5x, no errors)",
		benchConcurrency, benchUsers, benchRounds, runtime.GOMAXPROCS(0), runtime.NumCPU(), decisionLogSample)
	return t.String()
}

// benchTargets says, for each of the targets, whether this run met it.
func benchTargets(rows []benchRow) string {
	gEmpty, gHot, gCold, hEmpty, hHot := rows[0], rows[1], rows[2], rows[3], rows[4]
	errs := 0
	for _, r := range rows {
		errs += r.errors
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	var t strings.Builder
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"gRPC hot throughput", gHot.throughput() / gEmpty.throughput(), 0.65},
		{"gRPC cold throughput", gCold.throughput() / gEmpty.throughput(), 0.35},
		{"HTTP hot throughput", hHot.throughput() / hEmpty.throughput(), 0.5},
	} {
		fmt.Fprintf(&t, "target %-21s >= %.2fx empty: %.2fx, %s\n", c.what, c.want, c.got, verdict(c.got >= c.want))
	}
	p99 := float64(gHot.quantile(99)) / float64(gEmpty.quantile(99))
	fmt.Fprintf(&t, "target %-21s <= 2.00x empty: %.2fx, %s\n", "gRPC hot p99", p99, verdict(p99 <= 2))
	fmt.Fprintf(&t, "target %-21s = 0: %d, %s", "errors", errs, verdict(errs == 0))
	return t.String()
}

// drive sends n requests from conc workers and makes the row of one round: worker w's
// i-th request is do(ctx, w, i), timed, which returns what went wrong, or "" for a
// right answer.
func drive(name string, n, conc int, do func(ctx context.Context, w, i int) string) benchRow {
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), benchRowLimit)
	defer cancel()
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			mine := share(n, conc, w)
			lat[w] = make([]time.Duration, 0, mine)
			for i := range mine {
				t := time.Now()
				bad := do(ctx, w, i)
				lat[w] = append(lat[w], time.Since(t))
				if bad != "" {
					errs[w]++
					firstErr.CompareAndSwap(nil, bad)
				}
			}
		})
	}
	wg.Wait()
	r := benchRow{name: name, elapsed: time.Since(start), lat: slices.Concat(lat...)}
	slices.Sort(r.lat)
	for _, e := range errs {
		r.errors += e
	}
	if v, ok := firstErr.Load().(string); ok {
		r.firstErr = v
	}
	return r
}

// share is how many of n requests worker w of conc sends.
func share(n, conc, w int) int {
	mine := n / conc
	if w < n%conc {
		mine++
	}
	return mine
}

// grpcLoad is a load generator's connections to one gRPC server.
type grpcLoad struct {
	clients []authv3.AuthorizationClient
}

func newGRPCLoad(b *testing.B, addr string) *grpcLoad {
	b.Helper()
	g := &grpcLoad{}
	for range benchGRPCConns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cc.Close() })
		g.clients = append(g.clients, authv3.NewAuthorizationClient(cc))
	}
	return g
}

// driveGRPC sends n checks from conc workers; worker w sends reqs[w], reqs[w+conc], …
// (wrapping), so every token recurs and concurrent workers use different users. An
// answer other than OK (with identity headers, when identity) is an error.
func driveGRPC(g *grpcLoad, name string, identity bool, reqs []*authv3.CheckRequest, n, conc int) benchRow {
	return drive(name, n, conc, func(ctx context.Context, w, i int) string {
		resp, err := g.clients[w%len(g.clients)].Check(ctx, reqs[(w+i*conc)%len(reqs)])
		switch {
		case err != nil:
			return err.Error()
		case resp.GetStatus().GetCode() != 0 || identity && len(resp.GetOkResponse().GetHeaders()) == 0:
			return fmt.Sprintf("status %d %s", resp.GetStatus().GetCode(), resp.GetStatus().GetMessage())
		}
		return ""
	})
}

// driveHTTP sends n GET /authz/forward-auth from conc workers, as Traefik does: the
// original request in X-Forwarded-*, the client's Authorization header passed along. An
// answer other than 200 (with X-User-Id, when identity) is an error.
func driveHTTP(client *http.Client, name string, identity bool, addr string, tokens []string, n, conc int) benchRow {
	u := &url.URL{Scheme: "http", Host: addr, Path: "/authz/forward-auth"}
	base := http.Header{
		"X-Forwarded-Method": {"GET"},
		"X-Forwarded-Proto":  {"https"},
		"X-Forwarded-Host":   {"app.example.com"},
		"X-Forwarded-Uri":    {"/orders?page=2"},
		"X-Forwarded-For":    {"203.0.113.7"},
		"User-Agent":         {"authd-bench"},
		"Accept":             {"*/*"},
	}
	return drive(name, n, conc, func(ctx context.Context, w, i int) string {
		h := base.Clone()
		h["Authorization"] = []string{"Bearer " + tokens[(w+i*conc)%len(tokens)]}
		resp, err := client.Do((&http.Request{Method: "GET", URL: u, Host: addr, Header: h}).WithContext(ctx))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			return err.Error()
		case resp.StatusCode != http.StatusOK || identity && resp.Header.Get("X-User-Id") == "":
			return "HTTP " + resp.Status
		}
		return ""
	})
}

// benchCheckRequest is what Envoy sends for GET https://app.example.com/orders?page=2
// with the client's bearer token.
func benchCheckRequest(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 52100}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "bench", Method: "GET", Scheme: "https", Host: "app.example.com", Path: "/orders?page=2", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority":    "app.example.com",
				":method":       "GET",
				":path":         "/orders?page=2",
				":scheme":       "https",
				"accept":        "*/*",
				"user-agent":    "authd-bench",
				"authorization": "Bearer " + tok,
			},
		}},
	}}
}

// emptyAuthz answers every Check with OK at once: the ceiling of the gRPC stack.
type emptyAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

var emptyOK = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 0}}

func (emptyAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return emptyOK, nil
}

// emptyServerEnv, set in the environment of this test binary, makes it serve the empty
// servers instead of running tests (TestMain): the benchmark starts them in a process of
// their own, as authd runs in its own, so that both sides of the comparison cross the same
// process boundary and the empty servers' CPU is measured apart from the load generator's.
const emptyServerEnv = "AUTHD_BENCH_EMPTY_SERVERS"

// emptyServerArg must be the child's first argument too, so that the variable alone,
// inherited by a `go test` run, does not turn the tests into an empty server.
const emptyServerArg = "-authd.empty-servers"

// isEmptyServer reports whether this process was started as the empty servers.
func isEmptyServer() bool {
	return os.Getenv(emptyServerEnv) != "" && len(os.Args) > 1 && os.Args[1] == emptyServerArg
}

// serveEmpty runs the empty gRPC and HTTP servers on loopback, prints "<grpc> <http>"
// (their addresses) on stdout and serves until stdin closes (the benchmark ended or died).
func serveEmpty() error {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gs := grpc.NewServer(grpcServerOptions()...) // authd's own: the same stack
	authv3.RegisterAuthorizationServer(gs, emptyAuthz{})
	go func() { _ = gs.Serve(gl) }()
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Cache-Control"] = []string{"no-store"}
			w.WriteHeader(http.StatusOK)
		}),
		// authd's server settings
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go func() { _ = hs.Serve(hl) }()
	fmt.Printf("%s %s\n", gl.Addr(), hl.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	gs.Stop()
	return hs.Close()
}

// startEmptyServers runs serveEmpty in a child process and returns it with its addresses.
func startEmptyServers(b *testing.B) (proc *exec.Cmd, grpcAddr, httpAddr string) {
	b.Helper()
	proc = exec.Command(os.Args[0], emptyServerArg)
	proc.Env = append(os.Environ(), emptyServerEnv+"=1")
	proc.Stderr = os.Stderr
	stdin, err := proc.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := proc.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := proc.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = proc.Wait()
	})
	if _, err := fmt.Fscanln(stdout, &grpcAddr, &httpAddr); err != nil {
		b.Fatalf("empty servers did not start: %v", err)
	}
	return proc, grpcAddr, httpAddr
}

// benchServer is a running `authd serve` whose log goes to a file (a decision-log line
// per check would grow a buffer by tens of megabytes).
type benchServer struct {
	name, http, grpc string
	cmd              *exec.Cmd
	logPath          string
	done             chan error
}

func startBenchServer(b *testing.B, dir, name string, env ...string) *benchServer {
	b.Helper()
	s := &benchServer{name: name, http: freeAddr(b), grpc: freeAddr(b),
		logPath: filepath.Join(b.TempDir(), name+".log"), done: make(chan error, 1)}
	logf, err := os.Create(s.logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	bin := binary
	if b := os.Getenv("AUTHD_BENCH_BINARY"); b != "" {
		bin = b // another build of authd, to compare two builds under the same load
	}
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Dir = dir
	s.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	s.cmd.Env = append(s.cmd.Env, cheap...)
	s.cmd.Env = append(s.cmd.Env, "HTTP_ADDR="+s.http, "GRPC_ADDR="+s.grpc)
	s.cmd.Stderr = logf
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	b.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		if b.Failed() {
			b.Logf("authd %s log (last lines):\n%s", name, s.logTail(30))
		}
	})
	return s
}

func (s *benchServer) logTail(n int) string {
	data, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (s *benchServer) waitReady(b *testing.B) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.http + "/health/ready")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case err := <-s.done:
			b.Fatalf("authd %s exited: %v\n%s", s.name, err, s.logTail(30))
		case <-time.After(50 * time.Millisecond):
		}
	}
	b.Fatalf("authd %s not ready within 30 s; last: %s", s.name, last)
}

func (s *benchServer) stop(b *testing.B) {
	b.Helper()
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		b.Errorf("authd %s did not stop within 20 s", s.name)
	}
}

// loginUsers registers n users and logs each in, a few at a time (Argon2 bounds the
// pace), and returns their access tokens.
func loginUsers(b *testing.B, addr string, n int) []string {
	b.Helper()
	tokens := make([]string, n)
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	prefix := testenv.RandomName("bench")
	for range 2 * runtime.NumCPU() {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				email := prefix + "-" + strconv.Itoa(i) + "@example.com"
				creds := map[string]any{"email": email, "password": "a long enough passphrase for the bench"}
				if _, err := postJSON(client, addr, "/api/auth/register", creds, http.StatusCreated); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				doc, err := postJSON(client, addr, "/api/auth/login", creds, http.StatusOK)
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				tok, _ := doc["access_token"].(string)
				if tok == "" {
					failed.CompareAndSwap(nil, fmt.Errorf("login of %s: no access token in %v", email, doc))
					return
				}
				tokens[i] = tok
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return tokens
}

// postJSON posts body and decodes the answer, which must have status want; an
// overloaded hasher (503) is retried.
func postJSON(client *http.Client, addr, path string, body any, want int) (map[string]any, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		resp, err := client.Post("http://"+addr+path, "application/json", bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("POST %s: %w", path, err)
		}
		var doc map[string]any
		derr := json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable && attempt < 10:
			time.Sleep(100 * time.Millisecond)
			continue
		case resp.StatusCode != want:
			return nil, fmt.Errorf("POST %s: %d %v", path, resp.StatusCode, doc)
		case derr != nil && !errors.Is(derr, io.EOF):
			return nil, fmt.Errorf("POST %s: %w", path, derr)
		}
		return doc, nil
	}
}

// perReq is n per request with two decimals, or "-" when n was not measured.
func perReq(n int64, requests int) string {
	if n < 0 || requests == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/float64(requests), 'f', 2, 64)
}

func micros(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64)
}

// cpuMeter reads the CPU time of the processes a row runs on from /proc (Linux), to
// tell where each request's cost goes.
type cpuMeter struct{ self, redis int }

// measure runs drive and adds the CPU time (and system calls) used meanwhile by this
// process, by the server process of the row (authd, or the empty servers) and by
// redis-server.
func (m *cpuMeter) measure(server *exec.Cmd, drive func() benchRow) benchRow {
	pids := []int{m.self, server.Process.Pid, m.redis}
	before := make([]time.Duration, len(pids))
	sysBefore := make([]int64, len(pids))
	for i, p := range pids {
		before[i] = testenv.ProcessCPU(p)
		sysBefore[i] = testenv.ProcessSyscalls(p)
	}
	r := drive()
	used := make([]time.Duration, len(pids))
	sys := make([]int64, len(pids))
	for i, p := range pids {
		after := testenv.ProcessCPU(p)
		used[i] = -1
		if before[i] >= 0 && after >= 0 {
			used[i] = after - before[i]
		}
		sysAfter := testenv.ProcessSyscalls(p)
		sys[i] = -1
		if sysBefore[i] >= 0 && sysAfter >= 0 {
			sys[i] = sysAfter - sysBefore[i]
		}
	}
	r.cpuSelf, r.cpuServer, r.cpuRedis = used[0], used[1], used[2]
	r.sysSelf, r.sysServer, r.sysRedis = sys[0], sys[1], sys[2]
	return r
}
