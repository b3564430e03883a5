// Package storetest is the conformance suite that every store.Store backend runs.
//
// A backend's test calls Run with a function that returns a fresh, empty, migrated store for
// the (sub)test it is given; each rule runs as its own parallel subtest on its own store.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/authd/authd/store"
)

// Run runs every conformance test against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"PingAnswers", testPing},

		{"CreatedUserReadsBackByIDAndByEmail", testUserRoundTrip},
		{"DuplicateNormalisedEmailIsConflict", testDuplicateEmail},
		{"DuplicateUserIDIsConflict", testDuplicateUserID},
		{"UpdateUserWritesWhatTheUpdaterReturns", testUpdateUser},
		{"UpdateUserToATakenEmailIsConflict", testUpdateUserEmailConflict},
		{"ConcurrentMFALastStepIncrementsAllCount", testConcurrentUserUpdates},

		{"UpdateLockoutStartsFromZeroAndPersists", testLockoutRoundTrip},
		{"ConcurrentLockoutIncrementsAllCount", testConcurrentLockoutUpdates},

		{"CreatedSessionReadsBackAndUpdates", testSessionRoundTrip},
		{"ListLiveSessionsExcludesRevokedAndExpiredNewestFirst", testListLiveSessions},
		{"RevokeUserSessionsSparesKeepAndReturnsRevokedIDs", testRevokeUserSessions},
		{"RevokeUserSessionsWithoutKeepRevokesEveryLiveSession", testRevokeAllUserSessions},
		{"CheckStateFindsSessionAndUserIndependently", testCheckStateFound},
		{"CheckStateSeesRevocationExpiryAndStampRotation", testCheckStateChanges},

		{"RefreshTokenReadsBackByHash", testRefreshTokenRoundTrip},
		{"DuplicateRefreshTokenHashIsConflict", testDuplicateTokenHash},
		{"SpendRefreshTokenRecordsSuccessorOnlyOnce", testSpendRefreshToken},
		{"ExpireRefreshTokensEndsOnlyTheSessionsUnspentOnes", testExpireRefreshTokens},
		{"ConcurrentSpendsOfOneRefreshTokenHaveOneWinner", testConcurrentSpend},

		{"RecoveryCodesAreSingleUseAndReplaceable", testRecoveryCodes},
		{"ConcurrentUsesOfOneRecoveryCodeHaveOneWinner", testConcurrentRecoveryCodeUse},

		{"AuditListsNewestFirstWithDetailsIntact", testAuditOrderAndDetails},
		{"AuditFiltersByUserEventAndLimit", testAuditFilters},
		{"AuditLimitDefaultsTo100", testAuditDefaultLimit},

		{"MissingRecordsAreNotFound", testNotFound},
		{"UpdaterErrorWritesNothingAndIsReturnedAsIs", testUpdaterError},
		{"InTxCommitsEveryWrite", testInTxCommits},
		{"FailingInTxLeavesNothingBehind", testInTxRollback},
		{"UpdateInsideInTxRunsInThatTransaction", testUpdateInsideInTx},
		{"TimesComeBackUTCAtMicrosecondPrecision", testTimesUTC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// --- fixtures ---

var errBoom = errors.New("storetest: updater failed on purpose")

// t0 is deliberately not UTC and finer than a microsecond: the store must hand back UTC,
// truncated to microseconds.
var t0 = time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.FixedZone("UTC+2", 2*60*60))

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newID(t *testing.T) string {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func newUser(t *testing.T, email string) store.User {
	return store.User{
		ID:            newID(t),
		Email:         email,
		FullName:      "Alice Example",
		PasswordHash:  "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
		SecurityStamp: newID(t),
		CreatedAt:     t0,
		UpdatedAt:     t0,
	}
}

func mustCreateUser(t *testing.T, s store.Tx, email string) store.User {
	t.Helper()
	u := newUser(t, email)
	if err := s.CreateUser(ctxFor(t), u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return u
}

func newSession(t *testing.T, userID string, created time.Time) store.Session {
	return store.Session{
		ID:          newID(t),
		UserID:      userID,
		DeviceName:  "Firefox on Linux",
		Fingerprint: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		UserAgent:   "Mozilla/5.0",
		IP:          "192.0.2.1",
		AMR:         []string{"pwd"},
		CreatedAt:   created,
		LastSeenAt:  created,
		ExpiresAt:   created.Add(90 * 24 * time.Hour),
	}
}

func mustCreateSession(t *testing.T, s store.Tx, userID string, created time.Time) store.Session {
	t.Helper()
	sess := newSession(t, userID, created)
	if err := s.CreateSession(ctxFor(t), sess); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return sess
}

func newRefreshToken(t *testing.T, sessionID string, hash []byte) store.RefreshToken {
	return store.RefreshToken{
		ID:        newID(t),
		SessionID: sessionID,
		TokenHash: hash,
		IssuedAt:  t0,
		ExpiresAt: t0.Add(30 * 24 * time.Hour),
	}
}

func hash(s string) []byte {
	b := make([]byte, 32)
	copy(b, s)
	return b
}

// --- comparisons ---

func norm(tm time.Time) time.Time { return tm.UTC().Truncate(time.Microsecond) }

func checkTime(t *testing.T, field string, got, want time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", field, got.Location())
	}
	if !got.Equal(norm(want)) {
		t.Errorf("%s = %v, want %v", field, got, norm(want))
	}
}

func checkTimePtr(t *testing.T, field string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", field, got, want)
	default:
		checkTime(t, field, *got, *want)
	}
}

// checkSame compares got and want after their times were checked and blanked.
func checkSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func checkUser(t *testing.T, got, want store.User) {
	t.Helper()
	checkTime(t, "User.CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "User.UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTimePtr(t, "User.LastLoginAt", got.LastLoginAt, want.LastLoginAt)
	got.CreatedAt, got.UpdatedAt, got.LastLoginAt = time.Time{}, time.Time{}, nil
	want.CreatedAt, want.UpdatedAt, want.LastLoginAt = time.Time{}, time.Time{}, nil
	checkSame(t, "user", got, want)
}

func checkSession(t *testing.T, got, want store.Session) {
	t.Helper()
	checkTime(t, "Session.CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "Session.LastSeenAt", got.LastSeenAt, want.LastSeenAt)
	checkTime(t, "Session.ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTimePtr(t, "Session.RevokedAt", got.RevokedAt, want.RevokedAt)
	got.CreatedAt, got.LastSeenAt, got.ExpiresAt, got.RevokedAt = time.Time{}, time.Time{}, time.Time{}, nil
	want.CreatedAt, want.LastSeenAt, want.ExpiresAt, want.RevokedAt = time.Time{}, time.Time{}, time.Time{}, nil
	if want.AMR == nil {
		want.AMR = []string{}
	}
	checkSame(t, "session", got, want)
}

func checkRefreshToken(t *testing.T, got, want store.RefreshToken) {
	t.Helper()
	checkTime(t, "RefreshToken.IssuedAt", got.IssuedAt, want.IssuedAt)
	checkTime(t, "RefreshToken.ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTimePtr(t, "RefreshToken.UsedAt", got.UsedAt, want.UsedAt)
	got.IssuedAt, got.ExpiresAt, got.UsedAt = time.Time{}, time.Time{}, nil
	want.IssuedAt, want.ExpiresAt, want.UsedAt = time.Time{}, time.Time{}, nil
	checkSame(t, "refresh token", got, want)
}

func sessionIDs(ss []store.Session) []string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	return ids
}

// runConcurrently starts n calls of fn at once and returns their errors.
func runConcurrently(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// --- tests ---

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(ctxFor(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testUserRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := newUser(t, "alice@example.com")
	last := t0.Add(time.Hour)
	u.LastLoginAt = &last
	u.MFAEnabled, u.MFASecret, u.MFAPendingSecret, u.MFALastStep = true, "gAAAAsecret", "gAAAApending", 12345
	u.PreAuthJTI, u.PreAuthTries = "0190f0a0-0000-7000-8000-000000000001", 3
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, got, u)
	got, err = s.GetUserByEmail(ctx, u.Email)
	if err != nil {
		t.Fatalf("GetUserByEmail: %v", err)
	}
	checkUser(t, got, u)
}

func testDuplicateEmail(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	first := mustCreateUser(t, s, "bob@example.com")
	dup := newUser(t, "bob@example.com")
	if err := s.CreateUser(ctx, dup); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateUser with a taken email: err = %v, want ErrConflict", err)
	}
	got, err := s.GetUserByEmail(ctx, "bob@example.com")
	if err != nil {
		t.Fatalf("GetUserByEmail: %v", err)
	}
	if got.ID != first.ID {
		t.Errorf("GetUserByEmail returned %s, want the first user %s", got.ID, first.ID)
	}
	if _, err := s.GetUser(ctx, dup.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused user exists: GetUser err = %v", err)
	}
}

func testDuplicateUserID(t *testing.T, s store.Store) {
	first := mustCreateUser(t, s, "carol@example.com")
	dup := newUser(t, "carol2@example.com")
	dup.ID = first.ID
	if err := s.CreateUser(ctxFor(t), dup); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateUser with a taken id: err = %v, want ErrConflict", err)
	}
}

func testUpdateUser(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "dave@example.com")
	later := t0.Add(time.Minute)
	var seen store.User
	want := u
	got, err := s.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		seen = cur
		cur.Email = "dave.new@example.com"
		cur.FullName = "Dave New"
		cur.PasswordHash = "$argon2id$v=19$m=65536,t=3,p=4$bmV3c2FsdA$bmV3aGFzaA"
		cur.SecurityStamp = newID(t)
		cur.MFAEnabled, cur.MFASecret, cur.MFAPendingSecret, cur.MFALastStep = true, "sec", "", 99
		cur.UpdatedAt, cur.LastLoginAt = later, &later
		want = cur
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	checkUser(t, seen, u)
	checkUser(t, got, want)
	reread, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, reread, want)
	if _, err := s.GetUserByEmail(ctx, "dave@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old email still found: err = %v", err)
	}
}

func testUpdateUserEmailConflict(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	mustCreateUser(t, s, "erin@example.com")
	u := mustCreateUser(t, s, "frank@example.com")
	_, err := s.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		cur.Email = "erin@example.com"
		return cur, nil
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("UpdateUser to a taken email: err = %v, want ErrConflict", err)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if got.Email != "frank@example.com" {
		t.Errorf("email = %q after a refused update", got.Email)
	}
}

func testConcurrentUserUpdates(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "grace@example.com")
	const n = 50
	errs := runConcurrently(n, func(int) error {
		_, err := s.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
			cur.MFALastStep++
			return cur, nil
		})
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("UpdateUser #%d: %v", i, err)
		}
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if got.MFALastStep != n {
		t.Errorf("MFALastStep = %d after %d concurrent increments", got.MFALastStep, n)
	}
}

func testLockoutRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const email = "nobody@example.com" // no account: lockouts count all the same
	until := t0.Add(time.Minute)
	got, err := s.UpdateLockout(ctx, email, func(cur store.Lockout) (store.Lockout, error) {
		if cur.Email != email || cur.Failures != 0 || cur.Level != 0 || cur.LockedUntil != nil || !cur.UpdatedAt.IsZero() {
			t.Errorf("first UpdateLockout saw %+v, want a zero Lockout for %s", cur, email)
		}
		cur.Failures, cur.Level, cur.LockedUntil, cur.UpdatedAt = 5, 1, &until, t0
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateLockout: %v", err)
	}
	want := store.Lockout{Email: email, Failures: 5, Level: 1, LockedUntil: &until, UpdatedAt: t0}
	checkLockout := func(what string, got store.Lockout, want store.Lockout) {
		t.Helper()
		checkTimePtr(t, what+".LockedUntil", got.LockedUntil, want.LockedUntil)
		checkTime(t, what+".UpdatedAt", got.UpdatedAt, want.UpdatedAt)
		got.LockedUntil, want.LockedUntil, got.UpdatedAt, want.UpdatedAt = nil, nil, time.Time{}, time.Time{}
		checkSame(t, what, got, want)
	}
	checkLockout("UpdateLockout result", got, want)
	stored, err := s.GetLockout(ctx, email)
	if err != nil {
		t.Fatalf("GetLockout: %v", err)
	}
	checkLockout("GetLockout", stored, want)

	// A success resets: the lock is cleared, the escalation level kept.
	got, err = s.UpdateLockout(ctx, email, func(cur store.Lockout) (store.Lockout, error) {
		checkLockout("second UpdateLockout saw", cur, want)
		cur.Failures, cur.LockedUntil, cur.UpdatedAt = 0, nil, t0.Add(time.Hour)
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateLockout: %v", err)
	}
	want = store.Lockout{Email: email, Level: 1, UpdatedAt: t0.Add(time.Hour)}
	checkLockout("reset result", got, want)
	stored, err = s.GetLockout(ctx, email)
	if err != nil {
		t.Fatalf("GetLockout: %v", err)
	}
	checkLockout("GetLockout after reset", stored, want)
}

func testConcurrentLockoutUpdates(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	const (
		email = "target@example.com" // no row yet: the first increments race to create it
		n     = 50
	)
	errs := runConcurrently(n, func(int) error {
		_, err := s.UpdateLockout(ctx, email, func(cur store.Lockout) (store.Lockout, error) {
			cur.Failures++
			cur.UpdatedAt = t0
			return cur, nil
		})
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("UpdateLockout #%d: %v", i, err)
		}
	}
	got, err := s.GetLockout(ctx, email)
	if err != nil {
		t.Fatalf("GetLockout: %v", err)
	}
	if got.Failures != n {
		t.Errorf("Failures = %d after %d concurrent increments", got.Failures, n)
	}
}

func testSessionRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "heidi@example.com")
	sess := newSession(t, u.ID, t0)
	sess.AMR = []string{"pwd", "otp"}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	got, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	checkSession(t, got, sess)

	revoked := t0.Add(2 * time.Hour)
	want := sess
	got, err = s.UpdateSession(ctx, sess.ID, func(cur store.Session) (store.Session, error) {
		checkSession(t, cur, sess)
		cur.LastSeenAt = t0.Add(time.Hour)
		cur.DeviceName = "renamed"
		cur.RevokedAt, cur.RevokeReason = &revoked, "logout"
		want = cur
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	checkSession(t, got, want)
	reread, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	checkSession(t, reread, want)
}

func testListLiveSessions(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "ivan@example.com")
	other := mustCreateUser(t, s, "judy@example.com")
	now := t0.Add(24 * time.Hour)

	oldest := mustCreateSession(t, s, u.ID, t0)
	newest := mustCreateSession(t, s, u.ID, t0.Add(2*time.Hour))
	middle := mustCreateSession(t, s, u.ID, t0.Add(time.Hour))
	mustCreateSession(t, s, other.ID, t0.Add(3*time.Hour))

	expired := newSession(t, u.ID, t0.Add(4*time.Hour))
	expired.ExpiresAt = now // expiry is exclusive: at now it is dead
	if err := s.CreateSession(ctx, expired); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	revoked := mustCreateSession(t, s, u.ID, t0.Add(5*time.Hour))
	if _, err := s.UpdateSession(ctx, revoked.ID, func(cur store.Session) (store.Session, error) {
		cur.RevokedAt, cur.RevokeReason = &now, "logout"
		return cur, nil
	}); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}

	live, err := s.ListLiveSessions(ctx, u.ID, now)
	if err != nil {
		t.Fatalf("ListLiveSessions: %v", err)
	}
	want := []string{newest.ID, middle.ID, oldest.ID}
	if got := sessionIDs(live); !slices.Equal(got, want) {
		t.Fatalf("ListLiveSessions = %v, want newest first %v", got, want)
	}
	checkSession(t, live[0], newest)
}

func testRevokeUserSessions(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "mallory@example.com")
	other := mustCreateUser(t, s, "niaj@example.com")
	now := t0.Add(24 * time.Hour)

	keep := mustCreateSession(t, s, u.ID, t0)
	a := mustCreateSession(t, s, u.ID, t0.Add(time.Minute))
	b := mustCreateSession(t, s, u.ID, t0.Add(2*time.Minute))
	others := mustCreateSession(t, s, other.ID, t0)
	earlier := t0.Add(time.Hour)
	already := mustCreateSession(t, s, u.ID, t0.Add(3*time.Minute))
	if _, err := s.UpdateSession(ctx, already.ID, func(cur store.Session) (store.Session, error) {
		cur.RevokedAt, cur.RevokeReason = &earlier, "earlier"
		return cur, nil
	}); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}

	ids, err := s.RevokeUserSessions(ctx, u.ID, keep.ID, "password_changed", now)
	if err != nil {
		t.Fatalf("RevokeUserSessions: %v", err)
	}
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	got := slices.Clone(ids)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("RevokeUserSessions returned %v, want %v", ids, want)
	}
	for _, id := range want {
		sess, err := s.GetSession(ctx, id)
		if err != nil {
			t.Fatalf("GetSession: %v", err)
		}
		checkTimePtr(t, "RevokedAt", sess.RevokedAt, &now)
		if sess.RevokeReason != "password_changed" {
			t.Errorf("RevokeReason = %q", sess.RevokeReason)
		}
	}
	for _, id := range []string{keep.ID, others.ID} {
		sess, err := s.GetSession(ctx, id)
		if err != nil {
			t.Fatalf("GetSession: %v", err)
		}
		if sess.RevokedAt != nil {
			t.Errorf("session %s was revoked, want it kept", id)
		}
	}
	sess, err := s.GetSession(ctx, already.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	checkTimePtr(t, "already revoked RevokedAt", sess.RevokedAt, &earlier)
	if sess.RevokeReason != "earlier" {
		t.Errorf("an already revoked session was revoked again: reason %q", sess.RevokeReason)
	}
}

func testRevokeAllUserSessions(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "olivia@example.com")
	now := t0.Add(time.Hour)
	a := mustCreateSession(t, s, u.ID, t0)
	b := mustCreateSession(t, s, u.ID, t0.Add(time.Minute))
	ids, err := s.RevokeUserSessions(ctx, u.ID, "", "logout_all", now)
	if err != nil {
		t.Fatalf("RevokeUserSessions: %v", err)
	}
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	slices.Sort(ids)
	if !slices.Equal(ids, want) {
		t.Fatalf("RevokeUserSessions returned %v, want %v", ids, want)
	}
	live, err := s.ListLiveSessions(ctx, u.ID, now)
	if err != nil {
		t.Fatalf("ListLiveSessions: %v", err)
	}
	if len(live) != 0 {
		t.Errorf("live sessions after revoking all: %v", sessionIDs(live))
	}
}

// checkState compares a CheckState with what it should be, times to the microsecond.
func checkState(t *testing.T, what string, got, want store.CheckState) {
	t.Helper()
	if want.SessionFound {
		checkTime(t, what+": SessionExpiresAt", got.SessionExpiresAt, want.SessionExpiresAt)
	}
	got.SessionExpiresAt, want.SessionExpiresAt = time.Time{}, time.Time{}
	checkSame(t, what, got, want)
}

func testCheckStateFound(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "olivia@example.com")
	other := mustCreateUser(t, s, "peggy@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	missing := newID(t)

	tests := []struct {
		name     string
		sid, uid string
		session  bool        // sess is found
		user     *store.User // the user found, nil for none
	}{
		{"session and its user", sess.ID, u.ID, true, &u},
		{"session and another user", sess.ID, other.ID, true, &other},
		{"ids in upper case", strings.ToUpper(sess.ID), strings.ToUpper(u.ID), true, &u},
		{"missing session", missing, u.ID, false, &u},
		{"missing user", sess.ID, missing, true, nil},
		{"both missing", missing, newID(t), false, nil},
		{"malformed session id", "not-a-uuid", u.ID, false, &u},
		{"empty session id", "", u.ID, false, &u},
		{"malformed user id", sess.ID, "not-a-uuid", true, nil},
		{"both malformed", "x'; DROP TABLE sessions; --", "", false, nil},
	}
	for _, tc := range tests {
		var want store.CheckState
		if tc.session {
			want.SessionFound, want.SessionUserID, want.SessionExpiresAt = true, u.ID, sess.ExpiresAt
		}
		if tc.user != nil {
			want.UserFound, want.SecurityStamp = true, tc.user.SecurityStamp
		}
		got, err := s.CheckState(ctx, tc.sid, tc.uid)
		if err != nil {
			t.Errorf("%s: CheckState: %v", tc.name, err)
			continue
		}
		checkState(t, tc.name, got, want)
	}
}

func testCheckStateChanges(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "rupert@example.com")
	revoked := mustCreateSession(t, s, u.ID, t0)
	at := t0.Add(time.Hour)
	if _, err := s.UpdateSession(ctx, revoked.ID, func(cur store.Session) (store.Session, error) {
		cur.RevokedAt, cur.RevokeReason = &at, "logout"
		return cur, nil
	}); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	expired := newSession(t, u.ID, t0.Add(-48*time.Hour))
	expired.ExpiresAt = t0.Add(-24 * time.Hour)
	if err := s.CreateSession(ctx, expired); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	rotated, err := s.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		cur.SecurityStamp = newID(t)
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}

	got, err := s.CheckState(ctx, revoked.ID, u.ID)
	if err != nil {
		t.Fatalf("CheckState: %v", err)
	}
	checkState(t, "revoked session, rotated stamp", got, store.CheckState{
		SessionFound: true, SessionUserID: u.ID, SessionExpiresAt: revoked.ExpiresAt, SessionRevoked: true,
		UserFound: true, SecurityStamp: rotated.SecurityStamp,
	})
	if got.SecurityStamp == u.SecurityStamp {
		t.Error("CheckState returned the stamp from before the rotation")
	}
	// Expiry is the caller's to judge: the store reports when, not whether.
	got, err = s.CheckState(ctx, expired.ID, u.ID)
	if err != nil {
		t.Fatalf("CheckState: %v", err)
	}
	checkState(t, "expired session", got, store.CheckState{
		SessionFound: true, SessionUserID: u.ID, SessionExpiresAt: expired.ExpiresAt,
		UserFound: true, SecurityStamp: rotated.SecurityStamp,
	})
}

func testRefreshTokenRoundTrip(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "peggy@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	rt := newRefreshToken(t, sess.ID, hash("peggy-1"))
	if err := s.CreateRefreshToken(ctx, rt); err != nil {
		t.Fatalf("CreateRefreshToken: %v", err)
	}
	other := newRefreshToken(t, sess.ID, hash("peggy-2"))
	if err := s.CreateRefreshToken(ctx, other); err != nil {
		t.Fatalf("CreateRefreshToken: %v", err)
	}
	got, err := s.GetRefreshTokenByHash(ctx, hash("peggy-1"))
	if err != nil {
		t.Fatalf("GetRefreshTokenByHash: %v", err)
	}
	checkRefreshToken(t, got, rt)
	got, err = s.GetRefreshTokenByHash(ctx, hash("peggy-2"))
	if err != nil {
		t.Fatalf("GetRefreshTokenByHash: %v", err)
	}
	checkRefreshToken(t, got, other)
}

func testDuplicateTokenHash(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "quentin@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	if err := s.CreateRefreshToken(ctx, newRefreshToken(t, sess.ID, hash("same"))); err != nil {
		t.Fatalf("CreateRefreshToken: %v", err)
	}
	err := s.CreateRefreshToken(ctx, newRefreshToken(t, sess.ID, hash("same")))
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateRefreshToken with a taken hash: err = %v, want ErrConflict", err)
	}
}

func testSpendRefreshToken(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "rupert@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	rt := newRefreshToken(t, sess.ID, hash("rupert-1"))
	next := newRefreshToken(t, sess.ID, hash("rupert-2"))
	spentAt := t0.Add(time.Minute)
	err := s.InTx(ctx, func(tx store.Tx) error {
		if err := tx.CreateRefreshToken(ctx, rt); err != nil {
			return err
		}
		if err := tx.CreateRefreshToken(ctx, next); err != nil {
			return err
		}
		return tx.SpendRefreshToken(ctx, rt.ID, next.ID, spentAt)
	})
	if err != nil {
		t.Fatalf("create and spend: %v", err)
	}
	got, err := s.GetRefreshTokenByHash(ctx, rt.TokenHash)
	if err != nil {
		t.Fatalf("GetRefreshTokenByHash: %v", err)
	}
	want := rt
	want.UsedAt, want.ReplacedBy = &spentAt, next.ID
	checkRefreshToken(t, got, want)

	if err := s.SpendRefreshToken(ctx, rt.ID, newID(t), spentAt.Add(time.Minute)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second SpendRefreshToken: err = %v, want ErrConflict", err)
	}
	got, err = s.GetRefreshTokenByHash(ctx, rt.TokenHash)
	if err != nil {
		t.Fatalf("GetRefreshTokenByHash: %v", err)
	}
	checkRefreshToken(t, got, want) // the first spend stands
}

func testExpireRefreshTokens(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "edith@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	other := mustCreateSession(t, s, u.ID, t0)
	live := newRefreshToken(t, sess.ID, hash("edith-live"))
	spent := newRefreshToken(t, sess.ID, hash("edith-spent"))
	elsewhere := newRefreshToken(t, other.ID, hash("edith-other"))
	for _, rt := range []store.RefreshToken{live, spent, elsewhere} {
		if err := s.CreateRefreshToken(ctx, rt); err != nil {
			t.Fatalf("CreateRefreshToken: %v", err)
		}
	}
	spentAt := t0.Add(time.Minute)
	if err := s.SpendRefreshToken(ctx, spent.ID, live.ID, spentAt); err != nil {
		t.Fatalf("SpendRefreshToken: %v", err)
	}
	at := t0.Add(2 * time.Minute)
	if err := s.ExpireRefreshTokens(ctx, sess.ID, at); err != nil {
		t.Fatalf("ExpireRefreshTokens: %v", err)
	}
	got, _ := s.GetRefreshTokenByHash(ctx, live.TokenHash)
	checkTime(t, "expired token's ExpiresAt", got.ExpiresAt, at)
	got, _ = s.GetRefreshTokenByHash(ctx, spent.TokenHash)
	checkTime(t, "spent token's ExpiresAt", got.ExpiresAt, spent.ExpiresAt)
	got, _ = s.GetRefreshTokenByHash(ctx, elsewhere.TokenHash)
	checkTime(t, "other session's token's ExpiresAt", got.ExpiresAt, elsewhere.ExpiresAt)
}

func testConcurrentSpend(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "sybil@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	for round := range 5 {
		rt := newRefreshToken(t, sess.ID, hash("sybil-"+string(rune('a'+round))))
		if err := s.CreateRefreshToken(ctx, rt); err != nil {
			t.Fatalf("CreateRefreshToken: %v", err)
		}
		successors := []string{newID(t), newID(t)}
		errs := runConcurrently(2, func(i int) error {
			return s.SpendRefreshToken(ctx, rt.ID, successors[i], t0.Add(time.Minute))
		})
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner == -1:
				winner = i
			case err == nil:
				t.Fatalf("round %d: both spends succeeded", round)
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("round %d: spend %d: err = %v, want nil or ErrConflict", round, i, err)
			}
		}
		if winner == -1 {
			t.Fatalf("round %d: no spend succeeded: %v", round, errs)
		}
		got, err := s.GetRefreshTokenByHash(ctx, rt.TokenHash)
		if err != nil {
			t.Fatalf("GetRefreshTokenByHash: %v", err)
		}
		if got.ReplacedBy != successors[winner] {
			t.Errorf("round %d: ReplacedBy = %s, want the winner's %s", round, got.ReplacedBy, successors[winner])
		}
	}
}

func testRecoveryCodes(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "trent@example.com")
	other := mustCreateUser(t, s, "uma@example.com")
	codes := func(userID string, names ...string) []store.RecoveryCode {
		var cs []store.RecoveryCode
		for _, n := range names {
			cs = append(cs, store.RecoveryCode{ID: newID(t), UserID: userID, CodeHash: hash(n), CreatedAt: t0})
		}
		return cs
	}
	count := func(userID string, want int) {
		t.Helper()
		n, err := s.CountUnusedRecoveryCodes(ctx, userID)
		if err != nil {
			t.Fatalf("CountUnusedRecoveryCodes: %v", err)
		}
		if n != want {
			t.Errorf("CountUnusedRecoveryCodes = %d, want %d", n, want)
		}
	}
	if err := s.ReplaceRecoveryCodes(ctx, u.ID, codes(u.ID, "a", "b", "c")); err != nil {
		t.Fatalf("ReplaceRecoveryCodes: %v", err)
	}
	if err := s.ReplaceRecoveryCodes(ctx, other.ID, codes(other.ID, "a", "z")); err != nil {
		t.Fatalf("ReplaceRecoveryCodes: %v", err)
	}
	count(u.ID, 3)

	if err := s.UseRecoveryCode(ctx, u.ID, hash("b"), t0); err != nil {
		t.Fatalf("UseRecoveryCode: %v", err)
	}
	count(u.ID, 2)
	count(other.ID, 2) // the same code of another user is untouched
	if err := s.UseRecoveryCode(ctx, u.ID, hash("b"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reusing a code: err = %v, want ErrNotFound", err)
	}
	if err := s.UseRecoveryCode(ctx, u.ID, hash("z"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("using another user's code: err = %v, want ErrNotFound", err)
	}
	if err := s.UseRecoveryCode(ctx, u.ID, hash("nope"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("using an unknown code: err = %v, want ErrNotFound", err)
	}

	// Replacing discards every old code, used or not.
	if err := s.ReplaceRecoveryCodes(ctx, u.ID, codes(u.ID, "d", "e")); err != nil {
		t.Fatalf("ReplaceRecoveryCodes: %v", err)
	}
	count(u.ID, 2)
	if err := s.UseRecoveryCode(ctx, u.ID, hash("a"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("using a replaced code: err = %v, want ErrNotFound", err)
	}
	if err := s.ReplaceRecoveryCodes(ctx, u.ID, nil); err != nil {
		t.Fatalf("ReplaceRecoveryCodes(nil): %v", err)
	}
	count(u.ID, 0)
	count(other.ID, 2)
}

func testConcurrentRecoveryCodeUse(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "victor@example.com")
	code := store.RecoveryCode{ID: newID(t), UserID: u.ID, CodeHash: hash("once"), CreatedAt: t0}
	if err := s.ReplaceRecoveryCodes(ctx, u.ID, []store.RecoveryCode{code}); err != nil {
		t.Fatalf("ReplaceRecoveryCodes: %v", err)
	}
	errs := runConcurrently(10, func(int) error {
		return s.UseRecoveryCode(ctx, u.ID, hash("once"), t0)
	})
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, store.ErrNotFound):
			t.Errorf("use %d: err = %v, want nil or ErrNotFound", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d concurrent uses of one code succeeded, want exactly 1", wins)
	}
}

func decodeJSON(t *testing.T, what string, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", what, b, err)
	}
	return v
}

func testAuditOrderAndDetails(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "walter@example.com")
	details := json.RawMessage(`{ "reason" : "new device", "signals": ["new_ip", "recent_failures"],
		"nested": {"n": 3, "ok": true, "none": null, "text": "é \"quoted\""} }`)
	events := []store.AuditEvent{
		{ID: newID(t), Event: "LOGIN_FAILED", UserID: u.ID, IP: "192.0.2.7", UserAgent: "curl/8", RiskScore: 40, Details: details, CreatedAt: t0.Add(time.Minute)},
		{ID: newID(t), Event: "SUSPICIOUS_ACTIVITY", IP: "198.51.100.1", RiskScore: 100, CreatedAt: t0.Add(3 * time.Minute)},
		{ID: newID(t), Event: "REGISTER", UserID: u.ID, RiskScore: 0, Details: json.RawMessage(`{}`), CreatedAt: t0},
		{ID: newID(t), Event: "LOGIN_SUCCESS", UserID: u.ID, RiskScore: 10, Details: json.RawMessage(`{"amr":["pwd"]}`), CreatedAt: t0.Add(2 * time.Minute)},
	}
	for _, e := range events {
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatalf("AppendAudit(%s): %v", e.Event, err)
		}
	}
	got, err := s.ListAudit(ctx, store.AuditQuery{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	wantOrder := []store.AuditEvent{events[1], events[3], events[0], events[2]}
	if len(got) != len(wantOrder) {
		t.Fatalf("ListAudit returned %d rows, want %d", len(got), len(wantOrder))
	}
	for i, want := range wantOrder {
		g := got[i]
		if g.ID != want.ID {
			t.Fatalf("row %d is %s (%s), want %s (%s): not newest first", i, g.ID, g.Event, want.ID, want.Event)
		}
		checkTime(t, want.Event+" CreatedAt", g.CreatedAt, want.CreatedAt)
		wantDetails := want.Details
		if wantDetails == nil {
			wantDetails = json.RawMessage(`{}`) // nil is stored as {}
		}
		if !reflect.DeepEqual(decodeJSON(t, "returned details", g.Details), decodeJSON(t, "stored details", wantDetails)) {
			t.Errorf("%s details = %s, want the meaning of %s", want.Event, g.Details, wantDetails)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, g.Details); err != nil || !bytes.Equal(compact.Bytes(), g.Details) {
			t.Errorf("%s details %s are not compact JSON", want.Event, g.Details)
		}
		g.CreatedAt, g.Details = time.Time{}, nil
		want.CreatedAt, want.Details = time.Time{}, nil
		checkSame(t, "audit event", g, want)
	}
}

func testAuditFilters(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	alice := mustCreateUser(t, s, "xavier@example.com")
	bob := mustCreateUser(t, s, "yvonne@example.com")
	var all []store.AuditEvent
	add := func(event, userID string, minute int) {
		e := store.AuditEvent{ID: newID(t), Event: event, UserID: userID, CreatedAt: t0.Add(time.Duration(minute) * time.Minute)}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		all = append(all, e)
	}
	add("LOGIN_SUCCESS", alice.ID, 1)
	add("LOGIN_FAILED", alice.ID, 2)
	add("LOGIN_SUCCESS", bob.ID, 3)
	add("LOGIN_SUCCESS", alice.ID, 4)
	add("RATE_LIMITED", "", 5)

	ids := func(q store.AuditQuery) []string {
		t.Helper()
		es, err := s.ListAudit(ctx, q)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", q, err)
		}
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.ID
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    store.AuditQuery
		want []string
	}{
		{"user", store.AuditQuery{UserID: alice.ID}, []string{all[3].ID, all[1].ID, all[0].ID}},
		{"event", store.AuditQuery{Event: "LOGIN_SUCCESS"}, []string{all[3].ID, all[2].ID, all[0].ID}},
		{"user and event", store.AuditQuery{UserID: alice.ID, Event: "LOGIN_SUCCESS"}, []string{all[3].ID, all[0].ID}},
		{"limit", store.AuditQuery{Limit: 2}, []string{all[4].ID, all[3].ID}},
		{"user and limit", store.AuditQuery{UserID: alice.ID, Limit: 1}, []string{all[3].ID}},
		{"no match", store.AuditQuery{UserID: newID(t)}, []string{}},
	} {
		if got := ids(tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("%s: ListAudit = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func testAuditDefaultLimit(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	err := s.InTx(ctx, func(tx store.Tx) error {
		for i := range 101 {
			e := store.AuditEvent{ID: newID(t), Event: "RATE_LIMITED", CreatedAt: t0.Add(time.Duration(i) * time.Second)}
			if err := tx.AppendAudit(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	got, err := s.ListAudit(ctx, store.AuditQuery{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(got) != 100 {
		t.Errorf("ListAudit with Limit 0 returned %d rows, want 100", len(got))
	}
}

func testNotFound(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	missing := newID(t)
	called := false
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", what, err)
		}
	}
	_, err := s.GetUser(ctx, missing)
	check("GetUser", err)
	_, err = s.GetUser(ctx, "not-a-uuid")
	check("GetUser(malformed id)", err)
	_, err = s.GetUserByEmail(ctx, "missing@example.com")
	check("GetUserByEmail", err)
	_, err = s.UpdateUser(ctx, missing, func(u store.User) (store.User, error) { called = true; return u, nil })
	check("UpdateUser", err)
	_, err = s.GetLockout(ctx, "missing@example.com")
	check("GetLockout", err)
	_, err = s.GetSession(ctx, missing)
	check("GetSession", err)
	_, err = s.UpdateSession(ctx, missing, func(x store.Session) (store.Session, error) { called = true; return x, nil })
	check("UpdateSession", err)
	_, err = s.GetRefreshTokenByHash(ctx, hash("missing"))
	check("GetRefreshTokenByHash", err)
	check("SpendRefreshToken", s.SpendRefreshToken(ctx, missing, newID(t), t0))
	check("UseRecoveryCode", s.UseRecoveryCode(ctx, missing, hash("missing"), t0))
	if called {
		t.Error("an updater was called for a missing record")
	}
}

func testUpdaterError(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	u := mustCreateUser(t, s, "zoe@example.com")
	sess := mustCreateSession(t, s, u.ID, t0)
	if _, err := s.UpdateLockout(ctx, "zoe@example.com", func(l store.Lockout) (store.Lockout, error) {
		l.Failures, l.UpdatedAt = 1, t0
		return l, nil
	}); err != nil {
		t.Fatalf("UpdateLockout: %v", err)
	}

	_, err := s.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		cur.FullName = "changed"
		return cur, errBoom
	})
	if err != errBoom { // the contract: returned as is, unwrapped
		t.Errorf("UpdateUser: err = %v, want the updater's error as is", err)
	}
	_, err = s.UpdateSession(ctx, sess.ID, func(cur store.Session) (store.Session, error) {
		cur.DeviceName = "changed"
		return cur, errBoom
	})
	if err != errBoom {
		t.Errorf("UpdateSession: err = %v, want the updater's error as is", err)
	}
	_, err = s.UpdateLockout(ctx, "zoe@example.com", func(cur store.Lockout) (store.Lockout, error) {
		cur.Failures = 99
		return cur, errBoom
	})
	if err != errBoom {
		t.Errorf("UpdateLockout: err = %v, want the updater's error as is", err)
	}
	_, err = s.UpdateLockout(ctx, "new@example.com", func(cur store.Lockout) (store.Lockout, error) {
		return cur, errBoom
	})
	if err != errBoom {
		t.Errorf("UpdateLockout (new email): err = %v, want the updater's error as is", err)
	}

	gotU, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, gotU, u)
	gotS, err := s.GetSession(ctx, sess.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	checkSession(t, gotS, sess)
	gotL, err := s.GetLockout(ctx, "zoe@example.com")
	if err != nil {
		t.Fatalf("GetLockout: %v", err)
	}
	if gotL.Failures != 1 {
		t.Errorf("Failures = %d after a failed updater, want 1", gotL.Failures)
	}
	if _, err := s.GetLockout(ctx, "new@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed first UpdateLockout left a row: err = %v", err)
	}

	// Inside a transaction that goes on and commits, the failed updates still write nothing.
	err = s.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
			cur.FullName = "changed"
			return cur, errBoom
		}); err != errBoom {
			t.Errorf("UpdateUser in InTx: err = %v, want the updater's error as is", err)
		}
		if _, err := tx.UpdateLockout(ctx, "intx@example.com", func(cur store.Lockout) (store.Lockout, error) {
			return cur, errBoom
		}); err != errBoom {
			t.Errorf("UpdateLockout in InTx: err = %v, want the updater's error as is", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if gotU, err = s.GetUser(ctx, u.ID); err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, gotU, u)
	if _, err := s.GetLockout(ctx, "intx@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed first UpdateLockout inside InTx left a row: err = %v", err)
	}
}

func testInTxCommits(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	var u store.User
	var sess store.Session
	err := s.InTx(ctx, func(tx store.Tx) error {
		u = mustCreateUser(t, tx, "amy@example.com")
		sess = mustCreateSession(t, tx, u.ID, t0)
		return tx.AppendAudit(ctx, store.AuditEvent{ID: newID(t), Event: "REGISTER", UserID: u.ID, CreatedAt: t0})
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if _, err := s.GetUser(ctx, u.ID); err != nil {
		t.Errorf("GetUser after commit: %v", err)
	}
	if _, err := s.GetSession(ctx, sess.ID); err != nil {
		t.Errorf("GetSession after commit: %v", err)
	}
	if es, err := s.ListAudit(ctx, store.AuditQuery{UserID: u.ID}); err != nil || len(es) != 1 {
		t.Errorf("ListAudit after commit: %d rows, err %v", len(es), err)
	}
}

func testInTxRollback(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	var u store.User
	var sess store.Session
	err := s.InTx(ctx, func(tx store.Tx) error {
		u = mustCreateUser(t, tx, "ben@example.com")
		sess = mustCreateSession(t, tx, u.ID, t0)
		if err := tx.AppendAudit(ctx, store.AuditEvent{ID: newID(t), Event: "REGISTER", UserID: u.ID, CreatedAt: t0}); err != nil {
			return err
		}
		if _, err := tx.UpdateLockout(ctx, "ben@example.com", func(l store.Lockout) (store.Lockout, error) {
			l.Failures, l.UpdatedAt = 1, t0
			return l, nil
		}); err != nil {
			return err
		}
		return errBoom
	})
	if err != errBoom { // InTx returns fn's error as is, unwrapped
		t.Fatalf("InTx: err = %v, want fn's error as is", err)
	}
	if _, err := s.GetUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user survived the rollback: err = %v", err)
	}
	if _, err := s.GetUserByEmail(ctx, u.Email); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("user email survived the rollback: err = %v", err)
	}
	if _, err := s.GetSession(ctx, sess.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session survived the rollback: err = %v", err)
	}
	if _, err := s.GetLockout(ctx, "ben@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("lockout survived the rollback: err = %v", err)
	}
	if es, err := s.ListAudit(ctx, store.AuditQuery{}); err != nil || len(es) != 0 {
		t.Errorf("audit rows survived the rollback: %d rows, err %v", len(es), err)
	}
	// The email is free again.
	mustCreateUser(t, s, "ben@example.com")
}

// testUpdateInsideInTx: an updater called on the Tx must see the transaction's own
// uncommitted writes, which only a call inside that transaction can (a nested transaction
// would not find the user, or would wait for the outer one and time out).
func testUpdateInsideInTx(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	txCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var u store.User
	err := s.InTx(txCtx, func(tx store.Tx) error {
		u = newUser(t, "cleo@example.com")
		if err := tx.CreateUser(txCtx, u); err != nil {
			return err
		}
		sess := newSession(t, u.ID, t0)
		if err := tx.CreateSession(txCtx, sess); err != nil {
			return err
		}
		if _, err := tx.UpdateUser(txCtx, u.ID, func(cur store.User) (store.User, error) {
			cur.MFALastStep = 7
			return cur, nil
		}); err != nil {
			return err
		}
		if _, err := tx.UpdateSession(txCtx, sess.ID, func(cur store.Session) (store.Session, error) {
			cur.DeviceName = "inside"
			return cur, nil
		}); err != nil {
			return err
		}
		got, err := tx.GetUser(txCtx, u.ID)
		if err != nil {
			return err
		}
		if got.MFALastStep != 7 {
			t.Errorf("inside the transaction MFALastStep = %d, want 7", got.MFALastStep)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("InTx: %v", err)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	if got.MFALastStep != 7 {
		t.Errorf("after commit MFALastStep = %d, want 7", got.MFALastStep)
	}
}

func testTimesUTC(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	ny := time.FixedZone("UTC-5", -5*60*60)
	local := time.Date(2030, 12, 31, 22, 59, 59, 999999999, ny) // next day, next year in UTC
	u := newUser(t, "dora@example.com")
	u.CreatedAt, u.UpdatedAt, u.LastLoginAt = local, local, &local
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	got, err := s.GetUser(ctx, u.ID)
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	want := time.Date(2031, 1, 1, 3, 59, 59, 999999000, time.UTC)
	for name, tm := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt, "LastLoginAt": *got.LastLoginAt} {
		if tm.Location() != time.UTC || !tm.Equal(want) || tm.Nanosecond() != 999999000 {
			t.Errorf("%s = %v, want %v (UTC, microseconds)", name, tm, want)
		}
	}
	upd, err := s.UpdateUser(ctx, u.ID, func(cur store.User) (store.User, error) {
		cur.UpdatedAt = local.Add(-500 * time.Nanosecond) // still .999999 once truncated
		return cur, nil
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	checkTime(t, "UpdateUser result UpdatedAt", upd.UpdatedAt, want)
}
