package sqlstore_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/store"
	"github.com/authd/authd/store/sqlstore"
	"github.com/authd/authd/testenv"
)

// BenchmarkCheckStateRead compares, in one run, the check path's store read on a cache
// miss as it was (GetSession then GetUser: two full rows, the password hash and MFA
// secret included, in two round trips) with CheckState (one narrow row, one round trip),
// from one goroutine and from many (cpu-µs/op is this process's CPU per read, the
// client's share):
//
//	go test -run '^$' -bench CheckStateRead ./store/sqlstore/
func BenchmarkCheckStateRead(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"postgres", func(t testing.TB) string { return testenv.Postgres(t) }},
		{"sqlite", func(t testing.TB) string { return "sqlite://" + filepath.Join(t.TempDir(), "authd.db") }},
	} {
		s := open(b, db.url(b))
		ids := benchSessions(b, s, 1000)
		ctx := b.Context()
		reads := map[string]func(i int) error{
			"GetSession+GetUser": func(i int) error {
				sess, err := s.GetSession(ctx, ids[i%len(ids)][0])
				if err != nil {
					return err
				}
				_, err = s.GetUser(ctx, sess.UserID)
				return err
			},
			"CheckState": func(i int) error {
				id := ids[i%len(ids)]
				cs, err := s.CheckState(ctx, id[0], id[1])
				if err == nil && (!cs.SessionFound || !cs.UserFound) {
					err = fmt.Errorf("CheckState(%s, %s) = %+v", id[0], id[1], cs)
				}
				return err
			},
		}
		for _, name := range []string{"GetSession+GetUser", "CheckState"} {
			read := reads[name]
			b.Run(db.name+"/"+name+"/serial", func(b *testing.B) {
				cpu0, i := testenv.SelfCPU(), 0
				for b.Loop() {
					if err := read(i); err != nil {
						b.Fatal(err)
					}
					i++
				}
				reportCPU(b, cpu0)
			})
			if db.name == "sqlite" {
				continue // one connection: parallel readers only queue
			}
			b.Run(db.name+"/"+name+"/parallel", func(b *testing.B) {
				cpu0 := testenv.SelfCPU()
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						if err := read(i); err != nil {
							b.Error(err)
							return
						}
					}
				})
				reportCPU(b, cpu0)
			})
		}
	}
}

func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(testenv.SelfCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// benchSessions creates n users, each with one live session, with rows as full as real
// ones; it returns their [session id, user id] pairs.
func benchSessions(b *testing.B, s *sqlstore.Store, n int) [][2]string {
	b.Helper()
	ctx := ctxFor(b)
	now := time.Now()
	ids := make([][2]string, n)
	for i := range ids {
		u := store.User{
			ID: uuid.Must(uuid.NewV7()).String(), Email: "user" + strconv.Itoa(i) + "@example.com", FullName: "Bench User",
			PasswordHash:  "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
			SecurityStamp: uuid.Must(uuid.NewV7()).String(),
			MFAEnabled:    true,
			MFASecret:     "gAAAAABnVx3kQ1V2k9xk7c3F0b2V4YW1wbGUtZmVybmV0LXRva2VuLXdpdGgtYS10b3RwLXNlY3JldC1pbnNpZGUtaXQtMTIzNDU2Nzg5MA==",
			CreatedAt:     now, UpdatedAt: now, LastLoginAt: &now,
		}
		if err := s.CreateUser(ctx, u); err != nil {
			b.Fatal(err)
		}
		sess := store.Session{
			ID: uuid.Must(uuid.NewV7()).String(), UserID: u.ID, DeviceName: "Firefox on Linux",
			Fingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
			UserAgent:   "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
			IP:          "192.0.2.1", AMR: []string{"pwd", "otp"},
			CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(90 * 24 * time.Hour),
		}
		if err := s.CreateSession(ctx, sess); err != nil {
			b.Fatal(err)
		}
		ids[i] = [2]string{sess.ID, u.ID}
	}
	return ids
}
