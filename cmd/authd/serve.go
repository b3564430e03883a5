package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/authn/fernet"
	"github.com/authd/authd/authn/password"
	"github.com/authd/authd/clientip"
	"github.com/authd/authd/config"
	"github.com/authd/authd/extauthz"
	authdhealth "github.com/authd/authd/health"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/logbuf"
	"github.com/authd/authd/migrations"
	"github.com/authd/authd/openapi"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
	"github.com/authd/authd/store/sqlstore"
	"github.com/authd/authd/webserver"
)

// serve is the composition root: config → logger → store → Redis → services → listeners,
// then a graceful shutdown when ctx ends (SIGINT/SIGTERM). stderr is the stream log writes
// to; the decision log shares it.
func serve(ctx context.Context, c config.Config, log *slog.Logger, stderr io.Writer) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	if c.AutoMigrate {
		if err := migrations.Up(ctx, c.DatabaseURL); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	st, err := sqlstore.Open(ctx, c.DatabaseURL, sqlstore.Options{MaxConns: c.DBMaxConns, Logger: log})
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	log.Info("store opened", "backend", st.Dialect())

	var rdb redis.UniversalClient
	var redisCheck authdhealth.Check
	if c.RedisURL != "" {
		rdb, err = openRedis(c.RedisURL, c.RedisTimeout)
		if err != nil {
			return err
		}
		defer rdb.Close()
		redisCheck = func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
	} else {
		log.Warn("REDIS_URL is unset: rate limits, session cache and revocations are in-process; run one replica only")
	}

	keyDir := filepath.Join(c.DataDir, "keys")
	if c.AWSSSMEnabled {
		if err := secretsFromSSM(ctx, &c); err != nil {
			return err
		}
	}
	keys, err := jwks.New(jwks.Source{
		PrivatePEM: c.JWTPrivateKey, PublicPEM: c.JWTPublicKey,
		PrivateFile: c.JWTPrivateKeyFile, PublicFile: c.JWTPublicKeyFile,
		Dir: c.JWTKeysDir, DevDir: keyDir, AllowGenerate: !c.Production(),
	}, jwks.Options{
		Alg: c.JWTAlg, Issuer: c.JWTIssuer, Audience: c.JWTAudience,
		AccessTTL: c.AccessTokenTTL, PreAuthTTL: c.PreAuthTTL, JWKSMaxAge: c.JWKSMaxAge,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	go keys.Watch(ctx, notifyHUP(ctx))

	fernetKey := c.FernetKey
	if len(fernetKey) == 0 {
		// Config refuses a missing FERNET_KEY in production; in dev one is kept under DATA_DIR.
		if fernetKey, err = jwks.DevFernetKey(keyDir); err != nil {
			return err
		}
		log.Warn("FERNET_KEY is unset: using a development key kept in " + keyDir)
	}
	box, err := fernet.ParseKeys(string(fernetKey))
	if err != nil {
		return configErr("FERNET_KEY", err.Error())
	}

	ips, err := clientip.New(c.TrustedProxies, c.ClientIPv6Prefix)
	if err != nil {
		return err
	}
	// The check path judges what the proxy reports with its own list (see config).
	checkIPs, err := clientip.New(c.CheckTrustedProxies, c.ClientIPv6Prefix)
	if err != nil {
		return err
	}
	// limiter serves /api/auth (exact, one take per request: its RateLimit headers
	// report the bucket); checkLimiter serves the check path, which takes on every
	// request a proxy forwards: from Redis through local reserves (ratelimit.Leases).
	var limiter, checkLimiter ratelimit.Limiter
	var bus revocation.Bus
	if rdb != nil {
		rl, err := ratelimit.NewRedis(rdb, ratelimit.RedisOptions{Timeout: c.RedisTimeout, Logger: log, Registerer: reg})
		if err != nil {
			return err
		}
		limiter = rl
		if checkLimiter, err = ratelimit.NewLeases(rl, ratelimit.LeaseOptions{MaxLease: c.CheckLease, Registerer: reg}); err != nil {
			return err
		}
		bus = revocation.NewRedis(rdb, "", log)
	} else {
		if limiter, err = ratelimit.NewMemory(ratelimit.MemoryOptions{Registerer: reg}); err != nil {
			return err
		}
		checkLimiter = limiter // in this process already
		bus = revocation.NewMemory()
	}
	guard, err := ratelimit.NewGuard(limiter, ratelimit.GuardOptions{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}

	hasher, err := password.NewHasher(password.Options{
		Params: password.Params{
			Memory: uint32(c.Argon2MemoryKiB), Time: uint32(c.Argon2Time), Threads: uint8(c.Argon2Parallelism),
		},
		MaxConcurrent: c.Argon2MaxConcurrent, MaxWait: c.Argon2MaxWait, Registerer: reg,
	})
	if err != nil {
		return err
	}
	policy, err := password.NewPolicy(c.PasswordMinLength)
	if err != nil {
		return err
	}
	accounts, err := authn.New(authn.Deps{
		Store: st, Hasher: hasher, Policy: policy, Tokens: keys, Bus: bus,
		Secrets: fernet.Sealer{Box: box, Now: time.Now}, Logger: log, Registry: reg,
	}, authn.Options{
		RefreshTTL: c.RefreshTokenTTL, SessionTTL: c.SessionTTL,
		LockoutThreshold: c.LockoutThreshold, LockoutDurations: c.LockoutDurations,
		SingleSession: c.SingleSession, MFAIssuer: c.MFAIssuer,
	})
	if err != nil {
		return err
	}
	defer accounts.Close()

	mux := http.NewServeMux()
	healthz := authdhealth.New(version, st.Ping, redisCheck, time.Second, log)
	healthz.Register(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("GET /.well-known/jwks.json", keys.JWKSHandler())
	mux.Handle("GET /.well-known/openid-configuration", keys.DiscoveryHandler(c.PublicURL))
	authn.NewHandlers(accounts, guard, accountLimits(c), ips.Key, log).Register(mux)
	if c.Debug {
		openapi.Register(mux)
	}

	// Decision lines are info records of the operational log's stream, written in batches
	// (at most logbuf.DefaultInterval late): LOG_LEVEL above info turns them off. The
	// batch is written out once the servers have stopped: a clean shutdown loses none.
	var decisions io.Writer
	if c.DecisionLogSample > 0 && log.Enabled(ctx, slog.LevelInfo) {
		dl := logbuf.New(stderr, logbuf.Options{})
		defer func() {
			_ = dl.Close()
			if n := dl.Dropped(); n > 0 {
				log.Warn("decision log lines lost", "lines", n, "error", dl.Err())
			}
		}()
		decisions = dl
	}
	checker, err := newChecker(ctx, c, log, reg, notifyHUP(ctx), keys, st, bus, rdb, checkLimiter, checkIPs, decisions)
	if err != nil {
		return err
	}
	// Whether revocation messages arrive: while they do not, cached session state lives
	// 1 s instead of SESSION_CACHE_TTL. Reported, not required: the check path still
	// answers correctly, only with more store reads.
	healthz.Note("revocations", func() string {
		if checker.Subscribed() {
			return "subscribed"
		}
		return "down"
	})
	// The subscription ends when ctx does; it must not outlive the Redis client.
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan struct{})
	go func() { checker.Run(subCtx); close(subDone) }()
	defer func() { stopSub(); <-subDone }()

	// extauthz.Mount sits outside everything else: Envoy's HTTP mode sends the original
	// path raw (ServeMux would redirect `//` and `..`), and a CORS preflight bound for an
	// upstream must reach the check, not the API's own CORS answer.
	handler := extauthz.Mount(webserver.Handler(mux, webserver.Options{
		Logger:      log,
		Registerer:  reg,
		ClientIP:    func(r *http.Request) string { return ips.FromRequest(r).String() },
		HSTS:        c.HSTS,
		CORSOrigins: c.CORSOrigins,
	}), checker)

	grpcSrv := grpc.NewServer(grpcServerOptions()...)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(grpcSrv, healthSrv)
	extauthz.NewGRPCServer(checker).Register(grpcSrv)
	reflection.Register(grpcSrv)

	return runServers(ctx, log, c.ShutdownTimeout, c.HTTPAddr, handler, c.GRPCAddr, grpcSrv, healthSrv)
}

// runServers listens on both addresses (failing fast if either is taken), serves until ctx
// ends or a server fails, then stops accepting and drains in-flight requests within timeout.
func runServers(ctx context.Context, log *slog.Logger, timeout time.Duration,
	httpAddr string, handler http.Handler, grpcAddr string, grpcSrv *grpc.Server, healthSrv *health.Server) error {
	httpLis, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR: %w", err)
	}
	grpcLis, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		httpLis.Close()
		return fmt.Errorf("GRPC_ADDR: %w", err)
	}
	httpSrv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	errc := make(chan error, 2)
	go func() {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http server: %w", err)
		}
	}()
	go func() {
		if err := grpcSrv.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	log.Info("authd serving", "version", version, "http", httpLis.Addr().String(), "grpc", grpcLis.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", timeout.String())
	case runErr = <-errc:
		log.Error("server failed; shutting down", "error", runErr)
	}

	healthSrv.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := httpSrv.Shutdown(sctx); err != nil {
			log.Warn("http shutdown did not finish in time; closing", "error", err)
			httpSrv.Close()
		}
	}()
	go func() {
		defer wg.Done()
		done := make(chan struct{})
		go func() { grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-sctx.Done():
			log.Warn("grpc shutdown did not finish in time; stopping")
			grpcSrv.Stop()
		}
	}()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// grpcServerOptions are the gRPC server's: a fixed pool of stream workers, since grpc-go
// otherwise starts a goroutine per call whose stack regrows on every check (measured: ~12
// µs of CPU per check saved at 64 in flight). The benchmark's empty server uses the same.
func grpcServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.NumStreamWorkers(64)}
}

// newChecker builds the check path: route policy (reloaded on change and SIGHUP), local
// token verification, session state from the store through the caches, per-user and
// per-IP limits; decisions gets the decision log (nil: none).
func newChecker(ctx context.Context, c config.Config, log *slog.Logger, reg prometheus.Registerer, hup <-chan os.Signal,
	keys *jwks.Manager, st store.Store, bus revocation.Bus, rdb redis.UniversalClient,
	limiter ratelimit.Limiter, ips *clientip.Resolver, decisions io.Writer) (*extauthz.Checker, error) {
	var policy extauthz.PolicySource
	if c.PolicyFile != "" {
		pf, err := extauthz.OpenPolicyFile(c.PolicyFile, log)
		if err != nil {
			return nil, configErr("POLICY_FILE", err.Error())
		}
		go pf.Watch(ctx, hup, 0)
		policy = pf
	}
	tokenCache := c.TokenCacheSize
	if tokenCache == 0 {
		tokenCache = -1 // TOKEN_CACHE_SIZE=0 turns the cache off
	}
	return extauthz.New(extauthz.Config{
		Verifier: keys, Sessions: extauthz.StoreSource{Store: st}, Bus: bus, Redis: rdb,
		RedisTimeout: c.RedisTimeout,
		Limiter:      limiter,
		UserLimit:    c.RateLimits[ratelimit.ClassCheckUser], IPLimit: c.RateLimits[ratelimit.ClassCheckIP],
		FailOpenRateLimit: c.CheckFailOpenRateLimit, ClientIPs: ips, Policy: policy,
		Headers: extauthz.HeaderNames{
			UserID: c.HeaderUserID, Email: c.HeaderUserEmail, SessionID: c.HeaderSessionID, MFA: c.HeaderAuthMFA,
		},
		AccessCookie: c.AccessCookie, SessionCacheTTL: c.SessionCacheTTL, TokenCacheSize: tokenCache,
		DecisionLog: decisions, DecisionLogSample: c.DecisionLogSample, Logger: log, Registerer: reg,
	})
}

// configErr reports a setting found bad only while building the service; it exits 2
// like every configuration problem.
func configErr(name, msg string) error {
	return &config.Error{Problems: []string{name + ": " + msg}}
}

// notifyHUP returns a channel of its own that gets every SIGHUP until ctx ends: each
// reloader needs its own, since one signal on a shared channel reaches only one reader.
func notifyHUP(ctx context.Context) <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	context.AfterFunc(ctx, func() { signal.Stop(ch) })
	return ch
}

// accountLimits turns the configured limits into the account API's rules.
func accountLimits(c config.Config) authn.Limits {
	rule := func(class string) ratelimit.Rule {
		r := ratelimit.Rule{Class: class, Limit: c.RateLimits[class]}
		for _, s := range ratelimit.Settings() {
			if s.Class == class {
				r.FailClosed = s.FailClosed
			}
		}
		return r
	}
	return authn.Limits{
		LoginIP: rule(ratelimit.ClassLoginIP), LoginEmail: rule(ratelimit.ClassLoginEmail),
		VerifyMFAIP: rule(ratelimit.ClassVerifyMFAIP), RegisterIP: rule(ratelimit.ClassRegisterIP),
		RefreshIP: rule(ratelimit.ClassRefreshIP), APIUser: rule(ratelimit.ClassAPIUser),
	}
}

// secretsFromSSM fills the keys and FERNET_KEY that the environment did not set from AWS
// SSM Parameter Store.
func secretsFromSSM(ctx context.Context, c *config.Config) error {
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sec, err := jwks.FetchSSM(sctx, jwks.SSMOptions{Prefix: c.AWSSSMPrefix, Region: c.AWSRegion, EndpointURL: c.AWSEndpointURL})
	if err != nil {
		return fmt.Errorf("AWS SSM: %w", err)
	}
	if len(c.JWTPrivateKey) == 0 && c.JWTKeysDir == "" {
		c.JWTPrivateKey, c.JWTPublicKey = sec.PrivateKeyPEM, sec.PublicKeyPEM
	}
	if len(c.FernetKey) == 0 {
		c.FernetKey = sec.FernetKey
	}
	return nil
}

// openRedis builds a UniversalClient from REDIS_URL (rediss:// for TLS):
//   - redis://host:6379/0 — one server;
//   - redis://host1:6379?addr=host2:6379&addr=host3:6379 — a Cluster, from any of its nodes;
//   - redis://sentinel1:26379?master_name=mymaster&addr=sentinel2:26379 — Sentinel; the
//     URL's user and password are the Sentinels', the master's go in ?username=&password=
//     (go-redis's ParseFailoverURL).
func openRedis(rawURL string, timeout time.Duration) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, configErr("REDIS_URL", "is not a URL")
	}
	q := u.Query()
	rw := max(timeout, 100*time.Millisecond)
	var o redis.UniversalOptions
	switch {
	case q.Has("master_name"):
		f, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, configErr("REDIS_URL", err.Error())
		}
		o = redis.UniversalOptions{
			Addrs: f.SentinelAddrs, MasterName: f.MasterName, DB: f.DB,
			Username: f.Username, Password: f.Password,
			SentinelUsername: f.SentinelUsername, SentinelPassword: f.SentinelPassword,
			TLSConfig: f.TLSConfig, Protocol: f.Protocol, PoolSize: f.PoolSize,
		}
	case q.Has("addr"):
		c, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, configErr("REDIS_URL", err.Error())
		}
		o = redis.UniversalOptions{
			Addrs: c.Addrs, Username: c.Username, Password: c.Password,
			TLSConfig: c.TLSConfig, Protocol: c.Protocol, PoolSize: c.PoolSize, IsClusterMode: true,
		}
	default:
		s, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, configErr("REDIS_URL", err.Error())
		}
		o = redis.UniversalOptions{
			Addrs: []string{s.Addr}, DB: s.DB, Username: s.Username, Password: s.Password,
			TLSConfig: s.TLSConfig, Protocol: s.Protocol, PoolSize: s.PoolSize,
		}
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = time.Second, rw, rw
	// The rate limiter bounds each take by its context; let the client honour it.
	o.ContextTimeoutEnabled = true
	return redis.NewUniversalClient(&o), nil
}
