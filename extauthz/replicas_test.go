package extauthz_test

import (
	"context"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/jwks"
	"github.com/authd/authd/migrations"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/revocation"
	"github.com/authd/authd/store"
	"github.com/authd/authd/store/sqlstore"
	"github.com/authd/authd/testenv"
)

// cluster is one PostgreSQL store and one Redis shared by several replicas, as in
// production: each replica has its own Checker, bus subscription and caches.
type cluster struct {
	t      *testing.T
	st     *sqlstore.Store
	rdb    *redis.Client
	prefix string
	mgr    *jwks.Manager
	lim    *ratelimit.Redis
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbURL := testenv.Postgres(t)
	if err := migrations.Up(ctx, dbURL); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	st, err := sqlstore.Open(ctx, dbURL, sqlstore.Options{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rdb, prefix := testenv.Redis(t)
	lim, err := ratelimit.NewRedis(rdb, ratelimit.RedisOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, st: st, rdb: rdb, prefix: prefix, mgr: manager(t, nil, testIssuer, testAudience), lim: lim}
}

// countingSource counts reads that reach the store.
type countingSource struct {
	extauthz.SessionSource
	n atomic.Int64
}

func (s *countingSource) State(ctx context.Context, sid, uid string) (extauthz.SessionInfo, extauthz.StampInfo, error) {
	s.n.Add(1)
	return s.SessionSource.State(ctx, sid, uid)
}

type replica struct {
	checker *extauthz.Checker
	bus     *revocation.Redis
	src     *countingSource
}

// replica starts one "server" on client (a new connection to the shared Redis when
// nil), closed when the test ends.
func (c *cluster) replica(client redis.UniversalClient) *replica {
	c.t.Helper()
	if client == nil {
		client = redis.NewClient(c.rdb.Options())
	}
	bus := revocation.NewRedis(client, c.prefix+"revocations", nil)
	src := &countingSource{SessionSource: extauthz.StoreSource{Store: c.st}}
	chk, err := extauthz.New(extauthz.Config{
		Verifier:    c.mgr,
		Sessions:    src,
		Bus:         bus,
		Redis:       client,
		RedisPrefix: c.prefix,
		Limiter:     c.lim,
		UserLimit:   ratelimit.Limit{Burst: 1_000_000, Period: time.Second},
		IPLimit:     ratelimit.Limit{Burst: 1_000_000, Period: time.Second},
		Registerer:  prometheus.NewRegistry(),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	runChecker(c.t, chk, client)
	return &replica{checker: chk, bus: bus, src: src}
}

// login creates a user and a session in the store and signs a token for them.
func (c *cluster) login() (user, string) {
	c.t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	u := user{id: uuid.Must(uuid.NewV7()).String(), sid: uuid.Must(uuid.NewV7()).String(), stamp: uuid.Must(uuid.NewV7()).String(), amr: []string{"pwd"}}
	u.email = "u-" + u.id[len(u.id)-12:] + "@example.test"
	if err := c.st.CreateUser(ctx, store.User{ID: u.id, Email: u.email, PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		SecurityStamp: u.stamp, CreatedAt: now, UpdatedAt: now}); err != nil {
		c.t.Fatal(err)
	}
	if err := c.st.CreateSession(ctx, store.Session{ID: u.sid, UserID: u.id, AMR: u.amr, CreatedAt: now, LastSeenAt: now,
		ExpiresAt: now.Add(90 * 24 * time.Hour)}); err != nil {
		c.t.Fatal(err)
	}
	return u, sign(c.t, c.mgr, u)
}

// waitDenied checks on r until it denies with reason, and returns how long that took.
func waitDenied(t *testing.T, r *replica, tok, reason string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		d := r.checker.Check(context.Background(), bearerReq(tok))
		if !d.Allow {
			if d.Reason != reason {
				t.Fatalf("denied with %s, want %s", d.Reason, reason)
			}
			return time.Since(start)
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("still allowed %v after the revocation", time.Since(start))
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRevocationReachesEveryReplicaWithinOneSecond(t *testing.T) {
	c := newCluster(t)
	a, b := c.replica(nil), c.replica(nil)
	ctx := context.Background()

	t.Run("session revoked", func(t *testing.T) {
		u, tok := c.login()
		for _, r := range []*replica{a, b} {
			for range 3 { // warm every cache tier
				if d := r.checker.Check(ctx, bearerReq(tok)); !d.Allow {
					t.Fatalf("before the revocation: %d %s", d.Status, d.Reason)
				}
			}
		}
		// What authn does on logout: revoke in the store, then publish after the commit.
		now := time.Now().UTC()
		if _, err := c.st.UpdateSession(ctx, u.sid, func(s store.Session) (store.Session, error) {
			s.RevokedAt, s.RevokeReason = &now, "logout"
			return s, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := a.bus.Publish(ctx, revocation.SessionRevoked(u.sid)); err != nil {
			t.Fatal(err)
		}
		delay := waitDenied(t, b, tok, extauthz.ReasonSessionRevoked)
		t.Logf("replica B denied the revoked session %v after A published", delay)
		if delay > time.Second {
			t.Errorf("replica B took %v, the target is 1 s", delay)
		}
		waitDenied(t, a, tok, extauthz.ReasonSessionRevoked)
	})

	t.Run("stamp rotated", func(t *testing.T) {
		u, tok := c.login()
		for _, r := range []*replica{a, b} {
			if d := r.checker.Check(ctx, bearerReq(tok)); !d.Allow {
				t.Fatalf("before the rotation: %s", d.Reason)
			}
		}
		stamp := uuid.Must(uuid.NewV7()).String()
		if _, err := c.st.UpdateUser(ctx, u.id, func(x store.User) (store.User, error) {
			x.SecurityStamp = stamp
			return x, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := a.bus.Publish(ctx, revocation.StampRotated(u.id, stamp)); err != nil {
			t.Fatal(err)
		}
		delay := waitDenied(t, b, tok, extauthz.ReasonStampStale)
		t.Logf("replica B denied the stale stamp %v after A published", delay)
		if delay > time.Second {
			t.Errorf("replica B took %v, the target is 1 s", delay)
		}
	})
}

func TestRedisTierServesReplicasThatHaveNotReadTheStore(t *testing.T) {
	c := newCluster(t)
	a, b := c.replica(nil), c.replica(nil)
	ctx := context.Background()
	u, tok := c.login()
	if d := a.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatal(d.Reason)
	}
	if n := a.src.n.Load(); n != 1 {
		t.Fatalf("replica A read the store %d times, want 1 (session and stamp together)", n)
	}
	if d := b.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatal(d.Reason)
	}
	if n := b.src.n.Load(); n != 0 {
		t.Fatalf("replica B read the store %d times; Redis should have served it", n)
	}
	// A revocation message writes through to Redis: a replica that never saw the
	// session learns it from there.
	if err := a.bus.Publish(ctx, revocation.SessionRevoked(u.sid)); err != nil {
		t.Fatal(err)
	}
	waitDenied(t, a, tok, extauthz.ReasonSessionRevoked)
	cRep := c.replica(nil)
	if d := cRep.checker.Check(ctx, bearerReq(tok)); d.Reason != extauthz.ReasonSessionRevoked {
		t.Fatalf("a fresh replica: %d %s", d.Status, d.Reason)
	}
	if n := cRep.src.n.Load(); n != 0 {
		t.Fatalf("the fresh replica read the store %d times; the session and the stamp are in Redis", n)
	}
}

// roundTrips counts commands and pipelines sent to Redis, each one round trip, except
// the ones a new pooled connection sends to set itself up.
type roundTrips struct {
	mu    sync.Mutex
	n     int
	names map[string]int
	keys  int // named by EVALSHA commands: one per rate-limit take
}

func (h *roundTrips) count(cmds ...redis.Cmder) {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.Name()
		switch names[i] {
		case "hello", "client", "auth", "select":
			return // connection set-up
		case "evalsha":
			if n, ok := c.Args()[2].(int); ok {
				h.keys += n
			}
		}
	}
	h.n++
	h.names[strings.Join(names, "+")]++
}

func (h *roundTrips) get() (int, map[string]int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, maps.Clone(h.names), h.keys
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.count(cmd); return next(ctx, cmd) }
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count(cmds...)
		return next(ctx, cmds)
	}
}

func TestHotPathMakesOneRedisRoundTrip(t *testing.T) {
	c := newCluster(t)
	client := redis.NewClient(c.rdb.Options())
	rt := &roundTrips{names: map[string]int{}}
	client.AddHook(rt)
	c.lim, _ = ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: c.prefix})
	r := c.replica(client)
	_, tok := c.login()
	ctx := context.Background()
	r.checker.Check(ctx, bearerReq(tok)) // cold: fills the caches
	before, namesBefore, keysBefore := rt.get()
	reads := r.src.n.Load()
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d := r.checker.Check(ctx, bearerReq(tok)); !d.Allow {
				t.Errorf("%d %s", d.Status, d.Reason)
			}
		}()
	}
	wg.Wait()
	after, names, keys := rt.get()
	// The rate limiter sends takes made at the same time together (one EVALSHA over
	// their buckets): n checks make at most n round trips of EVALSHA, naming n buckets
	// in all, and nothing else.
	for batch, count := range names {
		count -= namesBefore[batch]
		if count == 0 {
			continue
		}
		for _, name := range strings.Split(batch, "+") {
			if name != "evalsha" {
				t.Errorf("hot checks sent %s to Redis (in %q); want the rate-limit EVALSHA only", name, batch)
			}
		}
	}
	if got, takes := after-before, keys-keysBefore; got > n || takes != n {
		t.Errorf("%d hot checks made %d Redis round trips taking from %d buckets, want at most %d taking from %d (the rate-limit take only); all: %v",
			n, got, takes, n, n, names)
	}
	if got := r.src.n.Load() - reads; got != 0 {
		t.Errorf("hot checks read the store %d times", got)
	}
}

// TestRedisOutageFallsBackToTheStoreAndResubscribes runs on a private redis-server
// that the test stops and starts.
func TestRedisOutageFallsBackToTheStoreAndResubscribes(t *testing.T) {
	c := newCluster(t)
	srv := testenv.StartRedisServer(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxRetries: -1})
	r := c.replica(client)
	u, tok := c.login()
	ctx := context.Background()
	if d := r.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatal(d.Reason)
	}
	srv.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for r.checker.Subscribed() {
		if time.Now().After(deadline) {
			t.Fatal("the checker never noticed the subscription was lost")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Redis is gone: the state comes from the store, and the store still revokes.
	if d := r.checker.Check(ctx, bearerReq(tok)); !d.Allow {
		t.Fatalf("with Redis down (the limiter is the shared one): %d %s", d.Status, d.Reason)
	}
	now := time.Now().UTC()
	if _, err := c.st.UpdateSession(ctx, u.sid, func(s store.Session) (store.Session, error) {
		s.RevokedAt = &now
		return s, nil
	}); err != nil {
		t.Fatal(err)
	}
	// No message can arrive; the capped TTL (1 s) bounds the staleness.
	delay := waitDenied(t, r, tok, extauthz.ReasonSessionRevoked)
	t.Logf("with the bus down, the revocation was seen after %v (cap 1 s)", delay)
	if delay > 1500*time.Millisecond {
		t.Errorf("took %v with the bus down; the cap is 1 s", delay)
	}
	srv.Start()
	deadline = time.Now().Add(15 * time.Second)
	for !r.checker.Subscribed() {
		if time.Now().After(deadline) {
			t.Fatal("the checker never resubscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
