package revocation

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/testenv"
)

func suite(t *testing.T, newBus func(t *testing.T) Bus) {
	t.Run("every subscriber receives every message", func(t *testing.T) {
		bus := newBus(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := [2]chan Message{make(chan Message, 4), make(chan Message, 4)}
		for i := range got {
			ready := make(chan struct{})
			go bus.Subscribe(ctx, func(m Message) { got[i] <- m }, func(up bool) {
				if up {
					close(ready)
				}
			})
			<-ready
		}
		want := []Message{SessionRevoked("s1"), StampRotated("u1", "st2")}
		if err := bus.Publish(ctx, want...); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			for _, w := range want {
				select {
				case m := <-got[i]:
					if m != w {
						t.Fatalf("subscriber %d got %+v, want %+v", i, m, w)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("subscriber %d: no message", i)
				}
			}
		}
	})
}

func TestMemoryBus(t *testing.T) {
	suite(t, func(t *testing.T) Bus { return NewMemory() })
}

func TestRedisBus(t *testing.T) {
	suite(t, func(t *testing.T) Bus {
		c, prefix := testenv.Redis(t)
		return NewRedis(c, prefix+"revocations", nil)
	})
}

func TestRedisBusResubscribesAfterTheServerRestarts(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { client.Close() })
	bus := NewRedis(client, "authd:revocations", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Message, 4)
	state := make(chan bool, 16)
	go bus.Subscribe(ctx, func(m Message) { got <- m }, func(up bool) { state <- up })
	waitState := func(want bool) {
		t.Helper()
		for {
			select {
			case s := <-state:
				if s == want {
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("subscription never became %v", want)
			}
		}
	}
	waitState(true)
	srv.Stop()
	waitState(false)
	srv.Start()
	waitState(true)
	if err := bus.Publish(ctx, SessionRevoked("after-restart")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.SID != "after-restart" {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message after the restart")
	}
}
