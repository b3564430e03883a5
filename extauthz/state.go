package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authd/authd/revocation"
)

// SessionSource reads session state from the system of record. cmd/authd adapts the
// store with StoreSource; extauthz never sees a storage backend.
type SessionSource interface {
	// State returns what the check needs of session sid and the current security stamp
	// of user uid, read together: every cache miss costs one read, for both. An unknown
	// session or user is Found false. An error means the state could not be read: the
	// check fails closed with 503.
	State(ctx context.Context, sid, uid string) (SessionInfo, StampInfo, error)
}

// SessionInfo is what the check needs of a session.
type SessionInfo struct {
	Found     bool
	UserID    string
	ExpiresAt time.Time // absolute end of the session
	Revoked   bool
}

// StampInfo is a user's current security stamp.
type StampInfo struct {
	Found bool
	Stamp string
}

// sessionState is a cached session: found false means the store has no such session.
type sessionState struct {
	found   bool
	revoked bool
	userID  string
	expires int64 // Unix ns
}

// stampState is a cached security stamp: found false means no such user.
type stampState struct {
	found bool
	stamp string
}

// stateCache answers "is this session live and this stamp current" from three tiers:
// this process (bounded, entries live ttl from when the store was read), Redis (shared
// by the replicas, same ttl, optional) and the SessionSource.
//
// Revocation messages (Run) update the entry they name in this process and write it to
// Redis, so the next look-up on any replica sees it; fills from the store use SET NX in
// Redis and a generation check in this process, so a fill that read the store before a
// revocation cannot overwrite it. While the subscription is down (and before it is up),
// messages may be missed: the Redis tier is skipped, this process's entries are dropped
// and new ones live only disconnectedTTL, which bounds staleness; on reconnect the
// entries are dropped again, since messages sent in between were lost.
type stateCache struct {
	src     SessionSource
	rdb     redis.UniversalClient
	prefix  string
	ttl     time.Duration
	discTTL time.Duration
	timeout time.Duration // each Redis call
	storeTO time.Duration // each store read
	now     func() time.Time
	log     *slog.Logger
	m       *metrics

	sessions *ttlCache[string, sessionState]
	stamps   *ttlCache[string, stampState]
	gen      atomic.Uint64 // bumped by every message and connection change
	live     atomic.Bool   // subscribed: messages are arriving

	redisLog throttle // Redis problems repeat on every miss: log them now and then
}

// currentTTL is how long an entry read now may be trusted.
func (c *stateCache) currentTTL() time.Duration {
	if c.live.Load() {
		return c.ttl
	}
	return c.discTTL
}

func (c *stateCache) sessionKey(sid string) string { return c.prefix + "authd:authz:session:" + sid }
func (c *stateCache) stampKey(uid string) string   { return c.prefix + "authd:authz:stamp:" + uid }

// lookup returns the state of session sid and of user uid's stamp. An error means the
// state could not be read at all.
func (c *stateCache) lookup(ctx context.Context, sid, uid string, now time.Time) (sessionState, stampState, error) {
	ns := now.UnixNano()
	sess, okS := c.sessions.get(sid, ns)
	st, okT := c.stamps.get(uid, ns)
	c.m.cacheResult(cacheSession, okS)
	c.m.cacheResult(cacheStamp, okT)
	if okS && okT {
		return sess, st, nil
	}

	gen := c.gen.Load()
	sameGen := func() bool { return c.gen.Load() == gen }
	ttl := c.currentTTL()
	useRedis := c.rdb != nil && c.live.Load()

	if useRedis {
		rs, rt, rsOK, rtOK, err := c.readRedis(ctx, sid, uid, !okS, !okT, now, ttl)
		if err != nil {
			useRedis = false // do not wait on it a second time to write
		}
		// An entry lives ttl from when the store was read, whichever replica read it
		// (and never longer than ttl from now, whatever that replica's clock said).
		limit := now.Add(ttl).UnixNano()
		if rsOK {
			sess, okS = rs.state, true
			c.sessions.putIf(sid, sess, min(rs.fetched.Add(ttl).UnixNano(), limit), ns, sameGen)
		}
		if rtOK {
			st, okT = rt.state, true
			c.stamps.putIf(uid, st, min(rt.fetched.Add(ttl).UnixNano(), limit), ns, sameGen)
		}
		if okS && okT {
			return sess, st, nil
		}
	}

	// One read serves both, whichever is missing; only what was missing is filled.
	ctx, cancel := context.WithTimeout(ctx, c.storeTO)
	defer cancel()
	info, stamp, err := c.src.State(ctx, sid, uid)
	if err != nil {
		c.m.tier(tierStore, resultError)
		return sessionState{}, stampState{}, fmt.Errorf("read session state: %w", err)
	}
	c.m.tier(tierStore, resultRead)
	fillS, fillT := !okS, !okT
	exp := now.Add(ttl).UnixNano()
	if fillS {
		sess = sessionState{}
		if info.Found {
			sess = sessionState{found: true, revoked: info.Revoked, userID: info.UserID, expires: info.ExpiresAt.UnixNano()}
		}
		c.sessions.putIf(sid, sess, exp, ns, sameGen)
	}
	if fillT {
		st = stampState{found: stamp.Found, stamp: stamp.Stamp}
		c.stamps.putIf(uid, st, exp, ns, sameGen)
	}
	if useRedis {
		c.fillRedis(ctx, sid, uid, fillS, fillT, sess, st, now, ttl)
	}
	return sess, st, nil
}

type redisSession struct {
	state   sessionState
	fetched time.Time
}

type redisStamp struct {
	state   stampState
	fetched time.Time
}

// readRedis reads the wanted entries in one round trip. Entries older than ttl, or
// unreadable, count as absent; a Redis error is logged and counts as a miss.
func (c *stateCache) readRedis(ctx context.Context, sid, uid string, wantS, wantT bool, now time.Time, ttl time.Duration) (rs redisSession, rt redisStamp, okS, okT bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var sCmd, tCmd *redis.StringCmd
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if wantS {
			sCmd = p.Get(ctx, c.sessionKey(sid))
		}
		if wantT {
			tCmd = p.Get(ctx, c.stampKey(uid))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		c.m.tier(tierRedis, resultError)
		c.warn("session-state cache: Redis read failed; reading the store", err)
		return rs, rt, false, false, err
	}
	if sCmd != nil {
		if v, err := sCmd.Result(); err == nil {
			rs, okS = decodeSession(v)
			okS = okS && now.Before(rs.fetched.Add(ttl))
		}
		c.m.tier(tierRedis, hitOrMiss(okS))
	}
	if tCmd != nil {
		if v, err := tCmd.Result(); err == nil {
			rt, okT = decodeStamp(v)
			okT = okT && now.Before(rt.fetched.Add(ttl))
		}
		c.m.tier(tierRedis, hitOrMiss(okT))
	}
	return rs, rt, okS, okT, nil
}

// fillRedis shares what was read from the store with the other replicas. SET NX: an
// entry written meanwhile by a revocation message is newer and stays.
func (c *stateCache) fillRedis(ctx context.Context, sid, uid string, fillS, fillT bool, s sessionState, st stampState, now time.Time, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if fillS {
			p.SetNX(ctx, c.sessionKey(sid), encodeSession(s, now), ttl)
		}
		if fillT {
			p.SetNX(ctx, c.stampKey(uid), encodeStamp(st, now), ttl)
		}
		return nil
	})
	if err != nil {
		c.m.tier(tierRedis, resultError)
		c.warn("session-state cache: Redis write failed", err)
	}
}

// apply handles one revocation message: the named entry is replaced here and in Redis
// by what the message says, and fills in flight are discarded.
func (c *stateCache) apply(msg revocation.Message) {
	c.m.message(msg.Type)
	now := c.now()
	ttl := c.currentTTL()
	var key, val string
	switch msg.Type {
	case revocation.TypeSessionRevoked:
		if !validID(msg.SID) {
			return
		}
		s := sessionState{found: true, revoked: true}
		c.gen.Add(1)
		c.sessions.put(msg.SID, s, now.Add(ttl).UnixNano(), now.UnixNano())
		key, val = c.sessionKey(msg.SID), encodeSession(s, now)
	case revocation.TypeStampRotated:
		if !validID(msg.UID) {
			return
		}
		st := stampState{found: true, stamp: msg.Stamp}
		c.gen.Add(1)
		c.stamps.put(msg.UID, st, now.Add(ttl).UnixNano(), now.UnixNano())
		key, val = c.stampKey(msg.UID), encodeStamp(st, now)
	default:
		// An unknown message may still concern someone: drop what fills are doing.
		c.gen.Add(1)
		return
	}
	if c.rdb != nil && c.live.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		if err := c.rdb.Set(ctx, key, val, ttl).Err(); err != nil {
			c.m.tier(tierRedis, resultError)
			c.warn("session-state cache: Redis write of a revocation failed", err)
		}
	}
}

// setLive records the subscription state. Both ways, this process's entries are
// dropped: going down, because messages may be missed from now on (new entries live
// only disconnectedTTL); coming up, because messages sent meanwhile were lost.
func (c *stateCache) setLive(up bool) {
	c.live.Store(up)
	c.gen.Add(1)
	c.sessions.clear()
	c.stamps.clear()
	c.m.setSubscribed(up)
	if up {
		c.log.Info("revocation subscription up; session-state cache flushed", "ttl", c.ttl.String())
	} else {
		c.log.Warn("revocation subscription down; session-state cache flushed and its TTL capped", "ttl", c.discTTL.String())
	}
}

// warn logs a Redis problem at most once every logEvery.
func (c *stateCache) warn(msg string, err error) {
	if c.redisLog.allow() {
		c.log.Warn(msg, "error", err)
	}
}

// Redis values: "<fetched ms>|L|<expires ms>|<uid>" (live or expired), "<ms>|R"
// (revoked), "<ms>|N" (no such session); "<ms>|S|<stamp>", "<ms>|N" (no such user).

func encodeSession(s sessionState, fetched time.Time) string {
	ms := strconv.FormatInt(fetched.UnixMilli(), 10)
	switch {
	case !s.found:
		return ms + "|N"
	case s.revoked:
		return ms + "|R"
	}
	return ms + "|L|" + strconv.FormatInt(s.expires/int64(time.Millisecond), 10) + "|" + s.userID
}

func decodeSession(v string) (redisSession, bool) {
	msStr, rest, ok := strings.Cut(v, "|")
	if !ok {
		return redisSession{}, false
	}
	ms, err := strconv.ParseInt(msStr, 10, 64)
	if err != nil {
		return redisSession{}, false
	}
	out := redisSession{fetched: time.UnixMilli(ms)}
	switch {
	case rest == "N":
		return out, true
	case rest == "R":
		out.state = sessionState{found: true, revoked: true}
		return out, true
	case strings.HasPrefix(rest, "L|"):
		expStr, uid, ok := strings.Cut(rest[2:], "|")
		exp, err := strconv.ParseInt(expStr, 10, 64)
		if !ok || err != nil || uid == "" {
			return redisSession{}, false
		}
		out.state = sessionState{found: true, userID: uid, expires: exp * int64(time.Millisecond)}
		return out, true
	}
	return redisSession{}, false
}

func encodeStamp(s stampState, fetched time.Time) string {
	ms := strconv.FormatInt(fetched.UnixMilli(), 10)
	if !s.found {
		return ms + "|N"
	}
	return ms + "|S|" + s.stamp
}

func decodeStamp(v string) (redisStamp, bool) {
	msStr, rest, ok := strings.Cut(v, "|")
	if !ok {
		return redisStamp{}, false
	}
	ms, err := strconv.ParseInt(msStr, 10, 64)
	if err != nil {
		return redisStamp{}, false
	}
	out := redisStamp{fetched: time.UnixMilli(ms)}
	switch {
	case rest == "N":
		return out, true
	case strings.HasPrefix(rest, "S|"):
		out.state = stampState{found: true, stamp: rest[2:]}
		return out, true
	}
	return redisStamp{}, false
}

// validID accepts the ids authd issues (UUIDs) and anything as tame: 1 to 128 of
// A-Z a-z 0-9 . _ -, safe in a Redis key, a header value and a log line.
func validID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
