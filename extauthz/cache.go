package extauthz

import (
	"hash/maphash"
	"sync"
)

// cacheShards is the number of independently locked parts of a ttlCache: enough that 64
// concurrent checks rarely wait on one another.
const cacheShards = 32

// evictSample is how many entries a full shard looks at to choose one to drop.
const evictSample = 8

// ttlCache is a bounded map whose entries expire. Times are Unix nanoseconds from the
// Checker's clock, so tests move time without sleeping. When a shard is full, inserting
// drops, of a few sampled entries, the one that expires first (an expired one if seen):
// close to LRU for entries of one lifetime, with no list to maintain on every hit.
type ttlCache[K comparable, V any] struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard[K, V]
}

type cacheShard[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]cacheEntry[V]
	_  [32]byte // pads the shard to 64 bytes, so hot shards do not share a cache line
}

type cacheEntry[V any] struct {
	v   V
	exp int64 // Unix ns; the entry is gone from exp on
}

func newTTLCache[K comparable, V any](size int) *ttlCache[K, V] {
	per := max(1, (size+cacheShards-1)/cacheShards)
	c := &ttlCache[K, V]{seed: maphash.MakeSeed(), perShard: per}
	for i := range c.shards {
		c.shards[i].m = make(map[K]cacheEntry[V])
	}
	return c
}

func (c *ttlCache[K, V]) shard(k K) *cacheShard[K, V] {
	return &c.shards[maphash.Comparable(c.seed, k)%cacheShards]
}

// get returns the entry for k when it has not expired at now.
func (c *ttlCache[K, V]) get(k K, now int64) (V, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e, ok := s.m[k]
	s.mu.RUnlock()
	if !ok || now >= e.exp {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v under k until exp, making room when the shard is full.
func (c *ttlCache[K, V]) put(k K, v V, exp, now int64) { c.putIf(k, v, exp, now, nil) }

// putIf is put when cond, evaluated under the shard's lock, is nil or true. A writer
// that changes what cond reads and then puts under the same key is thereby ordered
// with this call: either cond sees the change, or the writer's put comes after.
func (c *ttlCache[K, V]) putIf(k K, v V, exp, now int64, cond func() bool) {
	if exp <= now {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	if cond != nil && !cond() {
		s.mu.Unlock()
		return
	}
	if _, ok := s.m[k]; !ok && len(s.m) >= c.perShard {
		var victim K
		found := false
		var soonest int64
		n := 0
		for key, e := range s.m {
			if !found || e.exp < soonest {
				victim, soonest, found = key, e.exp, true
			}
			n++
			if n >= evictSample || soonest <= now {
				break
			}
		}
		delete(s.m, victim)
	}
	s.m[k] = cacheEntry[V]{v: v, exp: exp}
	s.mu.Unlock()
}

// clear drops every entry.
func (c *ttlCache[K, V]) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// len counts the entries, expired ones included (for tests and metrics).
func (c *ttlCache[K, V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
