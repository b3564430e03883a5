package extauthz_test

import (
	"context"
	"testing"
	"time"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/revocation"
)

// TestColdLookupReadsTheSourceOnce: a session and a stamp missing from the cache cost one
// read of the source between them, and whatever that read says is denied for the right
// reason, then answered from the cache.
func TestColdLookupReadsTheSourceOnce(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()

	live := e.newUser()
	revoked := e.newUser()
	e.src.revoke(revoked.sid)
	expired := e.newUser()
	stale := e.newUser()
	staleTok := e.token(stale)
	e.src.rotate(stale.id, "0193f2a4-0002-7000-8000-999999999999")
	gone := e.newUser() // the user was deleted; the session row still answers
	e.src.mu.Lock()
	e.src.sessions[expired.sid] = extauthz.SessionInfo{UserID: expired.id, ExpiresAt: t0.Add(-time.Second)}
	delete(e.src.stamps, gone.id)
	e.src.mu.Unlock()
	alice, bob := e.newUser(), e.newUser()
	unknown := user{id: alice.id, sid: "0193f2a4-0001-7000-8000-777777777777", stamp: alice.stamp, amr: []string{"pwd"}}
	foreign := user{id: alice.id, sid: bob.sid, stamp: alice.stamp, amr: []string{"pwd"}}

	tests := []struct {
		name   string
		tok    string
		reason string
	}{
		{"live", e.token(live), extauthz.ReasonOK},
		{"revoked session", e.token(revoked), extauthz.ReasonSessionRevoked},
		{"unknown session", e.token(unknown), extauthz.ReasonSessionUnknown},
		{"another user's session", e.token(foreign), extauthz.ReasonSessionUnknown},
		{"expired session", e.token(expired), extauthz.ReasonSessionExpired},
		{"rotated stamp", staleTok, extauthz.ReasonStampStale},
		{"unknown user", e.token(gone), extauthz.ReasonStampStale},
	}
	for _, tc := range tests {
		for _, pass := range []struct {
			name  string
			reads int
		}{{"cold", 1}, {"cached", 0}} {
			before := e.src.reads
			d := e.checker.Check(ctx, bearerReq(tc.tok))
			if d.Reason != tc.reason {
				t.Errorf("%s, %s: %d %s, want %s", tc.name, pass.name, d.Status, d.Reason, tc.reason)
			}
			if got := e.src.reads - before; got != pass.reads {
				t.Errorf("%s, %s: %d source reads, want %d", tc.name, pass.name, got, pass.reads)
			}
		}
	}
}

// TestLookupReadsOnceWhenOnlyOneSideIsMissing: a user's second session finds the stamp
// cached and costs one read.
func TestLookupReadsOnceWhenOnlyOneSideIsMissing(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	u := e.newUser()
	if d := e.checker.Check(ctx, bearerReq(e.token(u))); !d.Allow {
		t.Fatal(d.Reason)
	}
	second := u
	second.sid = "0193f2a4-0001-7000-8000-555555555555"
	e.src.mu.Lock()
	e.src.sessions[second.sid] = extauthz.SessionInfo{UserID: u.id, ExpiresAt: t0.Add(time.Hour)}
	e.src.mu.Unlock()
	before := e.src.reads
	if d := e.checker.Check(ctx, bearerReq(e.token(second))); !d.Allow {
		t.Fatal(d.Reason)
	}
	if got := e.src.reads - before; got != 1 {
		t.Errorf("second session: %d source reads, want 1", got)
	}
}

// gatedSource holds its first read after reading, until released: the state it returns
// is then older than whatever happened meanwhile.
type gatedSource struct {
	extauthz.SessionSource
	read    chan struct{} // closed when the first read has been made
	release chan struct{}
	calls   int
}

func (g *gatedSource) State(ctx context.Context, sid, uid string) (extauthz.SessionInfo, extauthz.StampInfo, error) {
	info, stamp, err := g.SessionSource.State(ctx, sid, uid)
	g.calls++ // only the test's one check goroutine calls it at a time
	if g.calls == 1 {
		close(g.read)
		<-g.release
	}
	return info, stamp, err
}

// TestFillDoesNotOverwriteMessagesThatArriveDuringTheRead: a revocation or a stamp
// rotation applied while the store was being read wins over what the read returns.
func TestFillDoesNotOverwriteMessagesThatArriveDuringTheRead(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    func(u user) revocation.Message
		reason string
	}{
		{"session revoked", func(u user) revocation.Message { return revocation.SessionRevoked(u.sid) }, extauthz.ReasonSessionRevoked},
		{"stamp rotated", func(u user) revocation.Message {
			return revocation.StampRotated(u.id, "0193f2a4-0002-7000-8000-666666666666")
		}, extauthz.ReasonStampStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bus := revocation.NewMemory()
			g := &gatedSource{read: make(chan struct{}), release: make(chan struct{})}
			e := newEnv(t, func(c *extauthz.Config) {
				c.Bus = bus
				g.SessionSource = c.Sessions
				c.Sessions = g
			})
			runChecker(t, e.checker)
			ctx := context.Background()
			u := e.newUser()
			tok := e.token(u)

			done := make(chan extauthz.Decision)
			go func() { done <- e.checker.Check(ctx, bearerReq(tok)) }()
			<-g.read
			if err := bus.Publish(ctx, tc.msg(u)); err != nil {
				t.Fatal(err)
			}
			close(g.release)
			if d := <-done; !d.Allow {
				t.Fatalf("the check that read before the message: %s", d.Reason)
			}
			// The source still says live and current: only the message's entry can deny.
			if d := e.checker.Check(ctx, bearerReq(tok)); d.Reason != tc.reason {
				t.Fatalf("after the message: %d %s, want %s (the read overwrote the message)", d.Status, d.Reason, tc.reason)
			}
		})
	}
}
