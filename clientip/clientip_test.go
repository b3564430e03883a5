package clientip_test

import (
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/authd/authd/clientip"
)

func mustResolver(t *testing.T, trusted string, v6 int) *clientip.Resolver {
	t.Helper()
	ps, err := clientip.ParseTrusted(trusted)
	if err != nil {
		t.Fatal(err)
	}
	res, err := clientip.New(ps, v6)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestParseTrusted(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{in: "", want: nil},
		{in: " , ", want: nil},
		{in: "10.0.0.0/8", want: []string{"10.0.0.0/8"}},
		{in: "10.1.2.3/8, 192.168.1.1 ,::1", want: []string{"10.0.0.0/8", "192.168.1.1/32", "::1/128"}},
		{in: "fd00::/8,2001:db8::1", want: []string{"fd00::/8", "2001:db8::1/128"}},
		{in: "::ffff:10.0.0.0/104", want: []string{"10.0.0.0/8"}},
		{in: "::ffff:10.0.0.1", want: []string{"10.0.0.1/32"}},
		{in: "10.0.0.0/33", err: `"10.0.0.0/33"`},
		{in: "proxy.internal", err: `"proxy.internal"`},
		{in: "10.0.0.1:80", err: `"10.0.0.1:80"`},
		{in: "fe80::1%eth0", err: `"fe80::1%eth0"`},
		{in: "10.0.0.0/8,0.0.0.0/0", err: "every address"},
		{in: "::/0", err: "every address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := clientip.ParseTrusted(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseTrusted(%q) error = %v, want one containing %s", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTrusted(%q): %v", tt.in, err)
			}
			var gs []string
			for _, p := range got {
				gs = append(gs, p.String())
			}
			if strings.Join(gs, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("ParseTrusted(%q) = %v, want %v", tt.in, gs, tt.want)
			}
		})
	}
}

func TestNewRefusesBadIPv6Prefix(t *testing.T) {
	for _, n := range []int{-1, 129} {
		if _, err := clientip.New(nil, n); err == nil {
			t.Errorf("New(nil, %d) succeeded", n)
		}
	}
	if _, err := clientip.New([]netip.Prefix{{}}, 64); err == nil {
		t.Error("New accepted an invalid prefix")
	}
}

func TestFromRequest(t *testing.T) {
	res := mustResolver(t, "10.0.0.0/8, 2001:db8:ffff::/48", 64)
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{name: "untrusted peer, no header", remote: "198.51.100.7:4242", want: "198.51.100.7"},
		{name: "untrusted peer ignores spoofed header", remote: "198.51.100.7:4242", xff: []string{"203.0.113.9"}, want: "198.51.100.7"},
		{name: "untrusted peer ignores trusted-looking header", remote: "198.51.100.7:4242", xff: []string{"10.0.0.1"}, want: "198.51.100.7"},
		{name: "trusted peer, no header", remote: "10.0.0.2:80", want: "10.0.0.2"},
		{name: "trusted peer, one hop", remote: "10.0.0.2:80", xff: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "right-most untrusted wins over client-written entries", remote: "10.0.0.2:80", xff: []string{"1.1.1.1, 2.2.2.2, 203.0.113.9"}, want: "203.0.113.9"},
		{name: "trusted hops skipped", remote: "10.0.0.2:80", xff: []string{"1.1.1.1, 203.0.113.9, 10.1.1.1, 10.2.2.2"}, want: "203.0.113.9"},
		{name: "several header lines read as one list", remote: "10.0.0.2:80", xff: []string{"1.1.1.1, 203.0.113.9", "10.1.1.1"}, want: "203.0.113.9"},
		{name: "all trusted: left-most", remote: "10.0.0.2:80", xff: []string{"10.9.9.9, 10.1.1.1"}, want: "10.9.9.9"},
		{name: "malformed entry ends the chain at the hop that wrote it", remote: "10.0.0.2:80", xff: []string{"203.0.113.9, unknown, 10.1.1.1"}, want: "10.1.1.1"},
		{name: "malformed right-most entry: the peer", remote: "10.0.0.2:80", xff: []string{"203.0.113.9, garbage"}, want: "10.0.0.2"},
		{name: "client-written garbage left of the client is never read", remote: "10.0.0.2:80", xff: []string{"<script>, 999.1.1.1, 203.0.113.9"}, want: "203.0.113.9"},
		{name: "empty entries skipped", remote: "10.0.0.2:80", xff: []string{"203.0.113.9,, ,"}, want: "203.0.113.9"},
		{name: "entry with port", remote: "10.0.0.2:80", xff: []string{"203.0.113.9:5555"}, want: "203.0.113.9"},
		{name: "bracketed IPv6 with port", remote: "10.0.0.2:80", xff: []string{"[2001:db8:1:2::99]:443"}, want: "2001:db8:1:2::99"},
		{name: "bracketed IPv6 without port", remote: "10.0.0.2:80", xff: []string{"[2001:db8:1:2::99]"}, want: "2001:db8:1:2::99"},
		{name: "IPv6 peer trusted", remote: "[2001:db8:ffff:1::1]:80", xff: []string{"2001:db8:1:2::99"}, want: "2001:db8:1:2::99"},
		{name: "IPv4-mapped peer matches IPv4 trust", remote: "[::ffff:10.0.0.2]:80", xff: []string{"203.0.113.9"}, want: "203.0.113.9"},
		{name: "IPv4-mapped entry unmapped", remote: "10.0.0.2:80", xff: []string{"::ffff:203.0.113.9"}, want: "203.0.113.9"},
		{name: "IPv4-mapped trusted entry skipped", remote: "10.0.0.2:80", xff: []string{"203.0.113.9, ::ffff:10.1.1.1"}, want: "203.0.113.9"},
		{name: "zone dropped", remote: "[fe80::1%eth0]:80", want: "fe80::1"},
		{name: "remote without port", remote: "198.51.100.7", want: "198.51.100.7"},
		{name: "unparsable remote", remote: "@", xff: []string{"203.0.113.9"}, want: "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := res.FromRequest(r).String(); got != tt.want {
				t.Fatalf("FromRequest = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestFromRequestBoundsTrustedChain(t *testing.T) {
	res := mustResolver(t, "10.0.0.0/8", 64)
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.2:80"
	hops := []string{"203.0.113.9"}
	for range 100 {
		hops = append(hops, "10.0.0.3")
	}
	r.Header.Set("X-Forwarded-For", strings.Join(hops, ","))
	if got := res.FromRequest(r); !res.Trusted(got) {
		t.Fatalf("FromRequest = %s; a chain longer than the bound should end at a trusted hop", got)
	}
}

func TestBucketKey(t *testing.T) {
	res64 := mustResolver(t, "", 0)
	res56 := mustResolver(t, "", 56)
	tests := []struct {
		res  *clientip.Resolver
		in   string
		want string
	}{
		{res64, "203.0.113.7", "203.0.113.7"},
		{res64, "::ffff:203.0.113.7", "203.0.113.7"},
		{res64, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{res64, "2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{res64, "2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{res64, "fe80::1%eth0", "fe80::/64"},
		{res56, "2001:db8:1:2ff::1", "2001:db8:1:200::/56"},
		{res64, "", "unknown"},
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.in != "" {
			a = netip.MustParseAddr(tt.in)
		}
		if got := tt.res.BucketKey(a); got != tt.want {
			t.Errorf("BucketKey(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestKeyRotationInsideOne64SharesABucket(t *testing.T) {
	res := mustResolver(t, "", 64)
	keys := map[string]bool{}
	for _, remote := range []string{"[2001:db8:1:2::1]:1", "[2001:db8:1:2::ffff]:2", "[2001:db8:1:2:dead:beef:0:1]:3"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		keys[res.Key(r)] = true
	}
	if len(keys) != 1 {
		t.Fatalf("addresses in one /64 gave keys %v, want one", keys)
	}
}

// A proxy's check request: Envoy's gRPC source.address with the X-Forwarded-For it saw
// (FromChain), Traefik's and Caddy's chain ending with the address they received the
// request from (FromForwarded). Behind a trusted load balancer both find the client; with
// no trusted proxies configured, FromForwarded is the right-most entry.
func TestFromChainAndFromForwarded(t *testing.T) {
	lb := mustResolver(t, "10.0.0.0/8", 64)
	none := mustResolver(t, "", 64)
	addr := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	chain := []struct {
		name string
		res  *clientip.Resolver
		peer netip.Addr
		xff  []string
		want string
	}{
		{"edge proxy: the peer", lb, addr("198.51.100.7"), []string{"203.0.113.9"}, "198.51.100.7"},
		{"behind a trusted balancer", lb, addr("10.0.0.5"), []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"nothing trusted: the peer whatever the header", none, addr("10.0.0.5"), []string{"203.0.113.9"}, "10.0.0.5"},
		{"IPv4-mapped peer", lb, addr("::ffff:10.0.0.5"), []string{"203.0.113.9"}, "203.0.113.9"},
		{"no peer", lb, netip.Addr{}, []string{"203.0.113.9"}, "invalid IP"},
	}
	for _, tt := range chain {
		if got := tt.res.FromChain(tt.peer, tt.xff).String(); got != tt.want {
			t.Errorf("FromChain %s = %s, want %s", tt.name, got, tt.want)
		}
	}
	forwarded := []struct {
		name string
		res  *clientip.Resolver
		xff  []string
		want string
	}{
		{"edge proxy: the entry it appended", lb, []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"nothing trusted: the right-most entry", none, []string{"1.1.1.1, 10.0.0.5"}, "10.0.0.5"},
		{"behind a trusted balancer: the entry left of it", lb, []string{"1.1.1.1, 203.0.113.9, 10.0.0.5"}, "203.0.113.9"},
		{"client-written entries left of the client are never read", lb, []string{"10.9.9.9, 203.0.113.9, 10.0.0.5"}, "203.0.113.9"},
		{"all trusted: the left-most", lb, []string{"10.9.9.9, 10.0.0.5"}, "10.9.9.9"},
		{"garbage appended by nobody: unknown", lb, []string{"203.0.113.9, garbage"}, "invalid IP"},
		{"empty chain", lb, nil, "invalid IP"},
	}
	for _, tt := range forwarded {
		if got := tt.res.FromForwarded(tt.xff).String(); got != tt.want {
			t.Errorf("FromForwarded %s = %s, want %s", tt.name, got, tt.want)
		}
	}
}
