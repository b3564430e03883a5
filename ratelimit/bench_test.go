package ratelimit_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/testenv"
)

// BenchmarkTake measures takes per second from 1 and 64 goroutines against the shared
// Redis and the in-process limiter, beside a bare Redis PING round trip measured in the
// same run on the same client, so the script's cost can be read against the network's
// (cpu-µs/op is this process's CPU time per operation, the client's share; redis-µs/op is
// redis-server's, when it runs on this machine):
//
//	go test -run '^$' -bench Take -benchtime 2s ./ratelimit/
//
// "spread" takes from 10,000 buckets (many clients); "hot" from one (one client flooding);
// "no-ctx-timeout" uses a client without ContextTimeoutEnabled; "leases" is the check
// path's limiter (Leases over the same Redis limiter, default lease sizes).
func BenchmarkTake(b *testing.B) {
	// c is the client as production wiring should build it (ContextTimeoutEnabled, so
	// takes run on the caller's goroutine); plain has go-redis defaults, so each take is
	// handed to a goroutine that the limiter can abandon at its timeout.
	plain, prefix := testenv.Redis(b)
	opts, err := redis.ParseURL(testenv.RedisURL())
	if err != nil {
		b.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	b.Cleanup(func() { _ = c.Close() })
	r, err := ratelimit.NewRedis(c, ratelimit.RedisOptions{Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	rPlain, err := ratelimit.NewRedis(plain, ratelimit.RedisOptions{Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	m, err := ratelimit.NewMemory(ratelimit.MemoryOptions{})
	if err != nil {
		b.Fatal(err)
	}
	leases, err := ratelimit.NewLeases(r, ratelimit.LeaseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	// Far above what any row takes, so every row measures takes, not refusals.
	lim := ratelimit.Limit{Burst: ratelimit.MaxBurst, Period: time.Minute}
	ids := make([]string, 10_000)
	for i := range ids {
		ids[i] = "10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	ctx := context.Background()
	ping := func(int) error { return c.Ping(ctx).Err() }
	rows := 0
	takeFrom := func(l ratelimit.Limiter, hot bool) func(int) error {
		rows++
		hotID := "hot-" + strconv.Itoa(rows) // a bucket of its own for each row
		return func(i int) error {
			id := ids[i%len(ids)]
			if hot {
				id = hotID
			}
			res, err := l.Take(ctx, "bench", id, lim)
			if err == nil && !res.Allowed {
				err = fmt.Errorf("take refused: the benchmark's limit is too low")
			}
			return err
		}
	}
	redisPID = testenv.RedisPID(b)
	for _, workers := range []int{1, 64} {
		w := strconv.Itoa(workers)
		b.Run("redis-ping/goroutines="+w, func(b *testing.B) { parallel(b, workers, ping) })
		b.Run("redis-take-spread/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(r, false)) })
		b.Run("redis-take-hot/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(r, true)) })
		b.Run("redis-take-spread-no-ctx-timeout/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(rPlain, false)) })
		b.Run("leases-take-spread/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(leases, false)) })
		b.Run("leases-take-hot/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(leases, true)) })
		b.Run("memory-take-spread/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(m, false)) })
		b.Run("memory-take-hot/goroutines="+w, func(b *testing.B) { parallel(b, workers, takeFrom(m, true)) })
	}
}

// parallel runs fn b.N times from exactly workers goroutines and reports operations per
// second (RunParallel's goroutine count is a multiple of GOMAXPROCS, not a number we
// choose).
func parallel(b *testing.B, workers int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start, cpu0, redis0 := time.Now(), testenv.SelfCPU(), testenv.ProcessCPU(redisPID)
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := fn(int(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	b.ReportMetric(float64(testenv.SelfCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	if redis0 >= 0 {
		b.ReportMetric(float64(testenv.ProcessCPU(redisPID)-redis0)/float64(time.Microsecond)/float64(b.N), "redis-µs/op")
	}
}

// redisPID is the test Redis's process, for its CPU time.
var redisPID int
