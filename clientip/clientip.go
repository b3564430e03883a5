// Package clientip decides which address a request comes from, believing X-Forwarded-For
// only from trusted proxies, and names the rate-limit bucket an address falls in.
//
// The rule (DESIGN §3): X-Forwarded-For is read only when the direct peer is in
// TRUSTED_PROXIES; the client is then the right-most address in it that is not trusted.
// Every proxy appends the address it received the request from, so the entries right of the
// client were written by proxies we trust, and anything left of it was written by the
// client (or by proxies we know nothing about) and may be forged.
package clientip

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// DefaultIPv6Prefix is the prefix length IPv6 clients are bucketed by: one /64 is what a
// single customer is usually given, and rotating inside it is free.
const DefaultIPv6Prefix = 64

// maxHops bounds how far right-to-left the X-Forwarded-For chain is followed. A chain of
// more trusted hops than this ends at the last one read.
const maxHops = 32

// Resolver finds the client address of a request. It is safe for concurrent use.
type Resolver struct {
	trusted    []netip.Prefix
	ipv6Prefix int
}

// New returns a resolver that believes X-Forwarded-For from peers in trusted and buckets
// IPv6 addresses by their first ipv6Prefix bits (0 means DefaultIPv6Prefix).
func New(trusted []netip.Prefix, ipv6Prefix int) (*Resolver, error) {
	if ipv6Prefix == 0 {
		ipv6Prefix = DefaultIPv6Prefix
	}
	if ipv6Prefix < 1 || ipv6Prefix > 128 {
		return nil, fmt.Errorf("clientip: IPv6 prefix length %d is not between 1 and 128", ipv6Prefix)
	}
	ps := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if !p.IsValid() {
			return nil, fmt.Errorf("clientip: invalid trusted prefix %v", p)
		}
		ps = append(ps, canonical(p))
	}
	return &Resolver{trusted: ps, ipv6Prefix: ipv6Prefix}, nil
}

// ParseTrusted parses TRUSTED_PROXIES: comma-separated CIDRs or bare addresses (a bare
// address is a /32 or /128). Blank entries are ignored; an empty string trusts nobody.
// A /0 is refused: trusting every address would let any client choose its own.
func ParseTrusted(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("clientip: %q is not a CIDR prefix or an IP address", f)
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("clientip: %q is not a CIDR prefix or an IP address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = canonical(p)
		if p.Bits() == 0 {
			return nil, fmt.Errorf("clientip: %q trusts every address, so any client could choose its own; list the proxies' networks", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// canonical masks p and turns an IPv4-mapped IPv6 prefix into the IPv4 prefix it means,
// because addresses are unmapped before they are compared.
func canonical(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}

// Trusted reports whether a is one of the trusted proxies.
func (res *Resolver) Trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range res.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// FromRequest returns the client address of r: the peer (r.RemoteAddr), or, when the peer
// is a trusted proxy, the right-most X-Forwarded-For address that is not trusted. When the
// chain holds only trusted addresses, the left-most is the client. When it reaches an entry
// that is not an address (such as nginx's "unknown"), the client is the trusted hop that
// wrote it: entries written by the client sit left of its own untrusted address and are
// never reached. The result is unmapped and has no zone; it is the zero Addr when
// r.RemoteAddr is not an address (BucketKey gives all such requests one bucket).
func (res *Resolver) FromRequest(r *http.Request) netip.Addr {
	return res.FromChain(parseAddr(r.RemoteAddr), r.Header.Values("X-Forwarded-For"))
}

// FromChain is FromRequest for a request described by someone else: its direct peer, and
// the X-Forwarded-For values it carried (a proxy's check request). The peer is the client
// unless it is trusted; then the chain is walked as FromRequest does.
func (res *Resolver) FromChain(peer netip.Addr, xff []string) netip.Addr {
	peer = peer.Unmap().WithZone("")
	if !peer.IsValid() || !res.Trusted(peer) {
		return peer
	}
	return res.walk(peer, xff)
}

// FromForwarded returns the client of a chain whose last entry a proxy appended itself:
// the address it received the request from (Traefik's and Caddy's forward-auth, Envoy's
// X-Forwarded-For). That entry is the client unless it is trusted (a load balancer in
// front of the proxy); then the walk goes on leftwards as FromRequest's. An empty chain
// gives the zero Addr.
func (res *Resolver) FromForwarded(xff []string) netip.Addr {
	return res.walk(netip.Addr{}, xff)
}

// walk reads the X-Forwarded-For values right to left from a trusted hop, client: the
// right-most entry that is not trusted, else the left-most, else client.
func (res *Resolver) walk(client netip.Addr, values []string) netip.Addr {
	hops := 0
	for i := len(values) - 1; i >= 0; i-- {
		rest := values[i]
		for rest != "" {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, rest = rest, ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			hops++
			a := parseAddr(entry)
			if !a.IsValid() {
				return client
			}
			if !res.Trusted(a) {
				return a
			}
			client = a
			if hops >= maxHops {
				return client
			}
		}
	}
	return client
}

// Key is BucketKey(FromRequest(r)): the rate-limit bucket of r's client.
func (res *Resolver) Key(r *http.Request) string {
	return res.BucketKey(res.FromRequest(r))
}

// BucketKey names the rate-limit bucket of a: an IPv4 address as itself ("203.0.113.7"),
// an IPv4-mapped IPv6 address as the IPv4 address, an IPv6 address as its prefix of the
// configured length ("2001:db8:1:2::/64"), so rotating addresses inside one allocation
// does not multiply the budget. The zero Addr is "unknown".
func (res *Resolver) BucketKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(res.ipv6Prefix)
	if err != nil { // unreachable: the length was checked in New
		return "unknown"
	}
	return p.String()
}

// parseAddr reads an address written as "ip", "ip:port", "[ipv6]" or "[ipv6]:port",
// unmapped and without zone; the zero Addr when s is none of these.
func parseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}
