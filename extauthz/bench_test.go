package extauthz_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/testenv"
)

// benchEnv is a Checker as production builds it, with the clock real and the decision
// log written (to nowhere), so the figures include the log line.
func benchEnv(b *testing.B, mutate func(*extauthz.Config)) *env {
	b.Helper()
	real := manager(b, nil, testIssuer, testAudience)
	e := newEnv(b, func(c *extauthz.Config) {
		c.Now = nil
		c.Verifier = real
		c.DecisionLog = io.Discard
		c.UserLimit = ratelimit.Limit{Burst: ratelimit.MaxBurst, Period: time.Second}
		c.IPLimit = ratelimit.Limit{Burst: ratelimit.MaxBurst, Period: time.Second}
		if mutate != nil {
			mutate(c)
		}
	})
	// Tokens are signed and verified on the real clock.
	e.mgr = real
	return e
}

// BenchmarkCheckEmpty is the floor of Check's own machinery: a public route with no
// rate limit (policy look-up, decision, metrics, log line).
func BenchmarkCheckEmpty(b *testing.B) {
	e := benchEnv(b, func(c *extauthz.Config) {
		c.Policy = policy(b, "default: public\n")
		c.Limiter = nil
	})
	req := bearerReq("")
	checkLoop(b, e.checker, req, false)
}

// checkLoop times c.Check(req) until the benchmark ends, each an allow; warm runs one
// untimed check first (the caches a hot path relies on).
func checkLoop(b *testing.B, c *extauthz.Checker, req extauthz.Request, warm bool) {
	ctx := context.Background()
	if warm {
		if d := c.Check(ctx, req); !d.Allow {
			b.Fatal(d.Reason)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := c.Check(ctx, req); !d.Allow {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkCheckHot is the common case: a token seen before, its session state cached,
// the in-process limiter: no RSA verify, no store, no network.
func BenchmarkCheckHot(b *testing.B) {
	e := benchEnv(b, nil)
	tok := e.token(e.newUser())
	req := bearerReq(tok)
	checkLoop(b, e.checker, req, true)
}

// BenchmarkCheckHotRedis is the hot path with exact rate limits (RATE_LIMIT_CHECK_LEASE=1):
// everything cached in process, one Redis round trip of the rate limit (EVALSHA) per
// check on the test Redis. Deployed, the check path takes through leases (prodChecker).
func BenchmarkCheckHotRedis(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	lim, err := ratelimit.NewRedis(rdb, ratelimit.RedisOptions{Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	e := benchEnv(b, func(c *extauthz.Config) {
		c.Limiter = lim
		c.Redis, c.RedisPrefix = rdb, prefix
	})
	tok := e.token(e.newUser())
	req := bearerReq(tok)
	checkLoop(b, e.checker, req, true)
}

// BenchmarkCheckCold misses every cache: the token is verified (RSA-2048) and the
// session state read from the source (in memory here, so the store's own latency is
// not counted) on every check.
func BenchmarkCheckCold(b *testing.B) {
	e := benchEnv(b, func(c *extauthz.Config) {
		c.TokenCacheSize = -1
		c.SessionCacheTTL = time.Nanosecond
	})
	tok := e.token(e.newUser())
	req := bearerReq(tok)
	checkLoop(b, e.checker, req, false)
}

// emptyAuthz answers every Check with OK at once: the ceiling of the gRPC transport.
type emptyAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 0}}

func (emptyAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

type loadResult struct {
	name       string
	requests   int
	errors     int
	elapsed    time.Duration
	p50, p99   time.Duration
	throughput float64
}

// drive sends n requests from reqs from conc workers over a few connections
// to addr, and measures each call.
func drive(b *testing.B, name, addr string, reqs []*authv3.CheckRequest, n, conc int) loadResult {
	b.Helper()
	const conns = 4
	clients := make([]authv3.AuthorizationClient, conns)
	for i := range clients {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		clients[i] = authv3.NewAuthorizationClient(cc)
		// Connect and warm up before the clock starts.
		for range 10 {
			if _, err := clients[i].Check(context.Background(), reqs[0]); err != nil {
				b.Fatal(err)
			}
		}
	}
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := clients[w%conns]
			mine := n / conc
			if w < n%conc {
				mine++
			}
			lat[w] = make([]time.Duration, 0, mine)
			for i := range mine {
				// Worker w sends reqs[w], reqs[w+conc], …: each request recurs, and
				// concurrent workers use different ones.
				req := reqs[(w+i*conc)%len(reqs)]
				t := time.Now()
				resp, err := client.Check(context.Background(), req)
				lat[w] = append(lat[w], time.Since(t))
				if err != nil || resp.GetStatus() == nil || resp.GetStatus().GetCode() != 0 {
					errs[w]++
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := loadResult{name: name, requests: len(all), elapsed: elapsed, throughput: float64(len(all)) / elapsed.Seconds()}
	for _, e := range errs {
		r.errors += e
	}
	if len(all) > 0 {
		r.p50 = all[len(all)*50/100]
		r.p99 = all[min(len(all)-1, len(all)*99/100)]
	}
	return r
}

func serveOn(b *testing.B, register func(*grpc.Server)) string {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// BenchmarkGRPCLoad is the load generator of `make bench`: it serves the Authorization
// service on loopback (a real Checker wired as deployed, prodChecker: leased Redis rate
// limit, Redis session-state tier and revocation subscription, decision log) and an empty Check server as the ceiling, and
// drives each with the same fixed number of requests (AUTHD_BENCH_REQUESTS, default
// 20000) at concurrency 64, one user per worker, all on warm caches. It prints
// throughput, p50, p99 and errors of both and their ratio in one table.
func BenchmarkGRPCLoad(b *testing.B) {
	n := 20000
	if s := os.Getenv("AUTHD_BENCH_REQUESTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("AUTHD_BENCH_REQUESTS=%q is not a positive number", s)
		}
		n = v
	}
	const conc = 64
	e, reqs := prodChecker(b, conc)
	// The same Checker's decision without Redis on the hot path (in-process limiter):
	// what the rate limit's round trip costs.
	mem := benchEnv(b, func(c *extauthz.Config) { c.Registerer = nil })
	memReqs := make([]*authv3.CheckRequest, conc)
	for i := range memReqs {
		memReqs[i] = checkRequest("GET", "/orders?page=2", map[string]string{"authorization": "Bearer " + mem.token(mem.newUser())})
	}
	emptyAddr := serveOn(b, func(s *grpc.Server) { authv3.RegisterAuthorizationServer(s, emptyAuthz{}) })
	authdAddr := serveOn(b, func(s *grpc.Server) { extauthz.NewGRPCServer(e.checker).Register(s) })
	memAddr := serveOn(b, func(s *grpc.Server) { extauthz.NewGRPCServer(mem.checker).Register(s) })

	for range b.N {
		ceiling := drive(b, "empty Check server", emptyAddr, reqs, n, conc)
		real := drive(b, "authd Check", authdAddr, reqs, n, conc)
		local := drive(b, "authd, no Redis", memAddr, memReqs, n, conc)
		var t strings.Builder
		fmt.Fprintf(&t, "\n%-20s %9s %7s %12s %10s %10s %10s\n", "server", "requests", "errors", "throughput", "p50", "p99", "ratio")
		for _, r := range []loadResult{ceiling, real, local} {
			fmt.Fprintf(&t, "%-20s %9d %7d %10.0f/s %10s %10s %9.2fx\n", r.name, r.requests, r.errors, r.throughput,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.throughput/ceiling.throughput)
		}
		fmt.Fprintf(&t, "(concurrency %d, GOMAXPROCS %d shared by client, server and Redis; ratio = throughput / the empty server's;\n"+
			" \"authd Check\" is production: Redis rate limit through leases, Redis state tier; \"no Redis\" uses the in-process limiter)",
			conc, runtime.GOMAXPROCS(0))
		b.Log(t.String())
		if real.errors > 0 {
			b.Errorf("%d of %d checks failed or were denied", real.errors, real.requests)
		}
		b.ReportMetric(real.throughput, "checks/s")
		b.ReportMetric(float64(real.p50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(real.p99.Microseconds()), "p99-µs")
		b.ReportMetric(real.throughput/ceiling.throughput, "throughput-ratio")
	}
}

// prodChecker is a Checker wired as cmd/authd wires it on Redis (the check path's leased
// rate limiter, the Redis state tier, the revocation subscription), running, and a
// check request for each of users new users.
func prodChecker(b *testing.B, users int) (*env, []*authv3.CheckRequest) {
	b.Helper()
	rdb, prefix := prodRedis(b)
	rl, err := ratelimit.NewRedis(rdb, ratelimit.RedisOptions{Prefix: prefix, Timeout: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	lim, err := ratelimit.NewLeases(rl, ratelimit.LeaseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := benchEnv(b, func(c *extauthz.Config) {
		c.Limiter = lim
		c.Redis, c.RedisPrefix = rdb, prefix
		c.Bus = revocation.NewRedis(rdb, prefix+"revocations", nil)
		c.Registerer = nil
	})
	runChecker(b, e.checker, rdb)
	reqs := make([]*authv3.CheckRequest, users)
	for i := range reqs {
		reqs[i] = checkRequest("GET", "/orders?page=2", map[string]string{"authorization": "Bearer " + e.token(e.newUser())})
	}
	return e, reqs
}

// prodRedis is a client to the test Redis built as cmd/authd's openRedis builds it
// (ContextTimeoutEnabled, timeouts from REDIS_TIMEOUT's default, default pool), and a key
// prefix for this benchmark whose keys testenv deletes at the end.
func prodRedis(b *testing.B) (*redis.Client, string) {
	b.Helper()
	_, prefix := testenv.Redis(b)
	o, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		b.Fatal(err)
	}
	o.ContextTimeoutEnabled = true
	o.DialTimeout = time.Second
	o.ReadTimeout, o.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	c := redis.NewClient(o)
	b.Cleanup(func() { _ = c.Close() })
	return c, prefix
}

// BenchmarkGRPCCheckRedis drives b.N checks at concurrency 64 over gRPC into the
// production Checker (prodChecker: leased Redis limiter, Redis state tier, revocation
// subscription, decision log), 256 users' tokens repeated, and reports this process's CPU time (load generator
// and server) and redis-server's per check; for profiling the server side:
//
//	go test -run '^$' -bench GRPCCheckRedis -benchtime 100000x -cpuprofile cpu.out ./extauthz/
//	go tool pprof -top -focus 'handleStream|batcher' extauthz.test cpu.out
func BenchmarkGRPCCheckRedis(b *testing.B) {
	const conc, users = 64, 256
	e, reqs := prodChecker(b, users)
	addr := serveOn(b, func(s *grpc.Server) { extauthz.NewGRPCServer(e.checker).Register(s) })
	drive(b, "warm-up", addr, reqs, 2*users, conc)
	redisPID := testenv.RedisPID(b)
	self0, redis0 := testenv.SelfCPU(), testenv.ProcessCPU(redisPID)
	b.ResetTimer()
	r := drive(b, "authd Check", addr, reqs, b.N, conc)
	b.StopTimer()
	if redisPID > 0 {
		b.ReportMetric(float64((testenv.ProcessCPU(redisPID)-redis0).Microseconds())/float64(b.N), "redis-cpu-µs/op")
	}
	b.ReportMetric(float64((testenv.SelfCPU()-self0).Microseconds())/float64(b.N), "cpu-µs/op")
	if r.errors > 0 {
		b.Errorf("%d of %d checks failed or were denied", r.errors, r.requests)
	}
	b.ReportMetric(r.throughput, "checks/s")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
}
