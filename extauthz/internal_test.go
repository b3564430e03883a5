package extauthz

import (
	"testing"
	"time"
)

func TestTTLCacheIsBoundedAndExpires(t *testing.T) {
	c := newTTLCache[int, int](64)
	for i := range 1000 {
		c.put(i, i, int64(1000+i), 0)
	}
	if n := c.len(); n > 64+cacheShards {
		t.Fatalf("cache holds %d entries, bound is about 64", n)
	}
	if _, ok := c.get(999, 0); !ok {
		t.Fatal("the newest entry was evicted")
	}
	if _, ok := c.get(999, 1999); ok {
		t.Fatal("an entry outlived its expiry")
	}
	c.put(5000, 5, 10, 10)
	if _, ok := c.get(5000, 0); ok {
		t.Fatal("an entry already expired when put was stored")
	}
	c.putIf(7, 7, 100, 0, func() bool { return false })
	if _, ok := c.get(7, 0); ok {
		t.Fatal("putIf stored although its condition failed")
	}
	c.clear()
	if c.len() != 0 {
		t.Fatal("clear left entries")
	}
}

func TestStateEncodingRoundTrips(t *testing.T) {
	at := time.UnixMilli(1_780_000_000_123)
	for _, s := range []sessionState{
		{},
		{found: true, revoked: true},
		{found: true, userID: "0193f2a4-0000-7000-8000-000000000001", expires: at.Add(time.Hour).UnixNano()},
	} {
		got, ok := decodeSession(encodeSession(s, at))
		if !ok || got.state != s || !got.fetched.Equal(at) {
			t.Errorf("session %+v: got %+v %v", s, got, ok)
		}
	}
	for _, s := range []stampState{{}, {found: true, stamp: "st-1"}} {
		got, ok := decodeStamp(encodeStamp(s, at))
		if !ok || got.state != s || !got.fetched.Equal(at) {
			t.Errorf("stamp %+v: got %+v %v", s, got, ok)
		}
	}
	for _, bad := range []string{"", "x|L", "1|L|x|u", "1|L|2|", "1|Q", "1|S"} {
		if _, ok := decodeSession(bad); ok {
			t.Errorf("decodeSession(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "y|S|a", "1|X"} {
		if _, ok := decodeStamp(bad); ok {
			t.Errorf("decodeStamp(%q) accepted", bad)
		}
	}
}

func TestRequestTargetHelpers(t *testing.T) {
	for target, want := range map[string]string{
		"/authz/ext-authz":                   "/",
		"/authz/ext-authz/":                  "/",
		"/authz/ext-authz?x=1":               "/?x=1",
		"/authz/ext-authz//a/../b?c=%2F":     "//a/../b?c=%2F",
		"/authz/ext-authz/authz/ext-authz/x": "/authz/ext-authz/x",
	} {
		if got := originalPath(target); got != want {
			t.Errorf("originalPath(%q) = %q, want %q", target, got, want)
		}
	}
	for u, want := range map[string][3]string{
		"https://app.example.test/a//b/../c?q=1": {"https", "app.example.test", "/a//b/../c?q=1"},
		"HTTP://app:8080":                        {"http", "app:8080", "/"},
		"http://app?x":                           {"http", "app", "/?x"},
	} {
		s, h, p, ok := splitURL(u)
		if !ok || [3]string{s, h, p} != want {
			t.Errorf("splitURL(%q) = %q %q %q %v", u, s, h, p, ok)
		}
	}
	for _, bad := range []string{"/relative", "http://", "://x/"} {
		if _, _, _, ok := splitURL(bad); ok {
			t.Errorf("splitURL(%q) accepted", bad)
		}
	}
}
