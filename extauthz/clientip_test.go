package extauthz_test

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/authd/authd/clientip"
	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/ratelimit"
)

func trustedResolver(t *testing.T, cidrs string) *clientip.Resolver {
	t.Helper()
	ps, err := clientip.ParseTrusted(cidrs)
	if err != nil {
		t.Fatal(err)
	}
	res, err := clientip.New(ps, 0)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Behind a load balancer in TRUSTED_PROXIES (ClientIPs), each adapter finds the client
// left of it in X-Forwarded-For, so public routes and failed authentication are limited
// per client rather than all together per balancer; entries the client wrote itself never
// count, and with nothing trusted the proxy's own view stands. The decision log shows the
// address each adapter found.
func TestAdaptersFindTheClientBehindATrustedBalancer(t *testing.T) {
	// The client 203.0.113.7 wrote "6.6.6.6"; the balancer 10.0.0.5 appended the client.
	const chain = "6.6.6.6, 203.0.113.7"
	for _, tt := range []struct {
		name    string
		trusted string
		want    string
	}{
		{"balancer trusted", "10.0.0.0/8", "203.0.113.7"},
		{"nothing trusted", "", "10.0.0.5"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *extauthz.Config) { c.ClientIPs = trustedResolver(t, tt.trusted) })
			srv := authdServer(t, e)
			tok := e.token(e.newUser())
			clientIP := func(t *testing.T) any {
				t.Helper()
				return lastLog(t, e)["client_ip"]
			}

			// Traefik and Caddy append the address they received the request from.
			send(t, srv, "GET", extauthz.PathForwardAuth, [][2]string{
				{"Authorization", "Bearer " + tok}, {"X-Forwarded-Method", "GET"},
				{"X-Forwarded-Host", "app.example.test"}, {"X-Forwarded-Uri", "/"},
				{"X-Forwarded-For", chain + ", 10.0.0.5"},
			}).allowed(t)
			if got := clientIP(t); got != tt.want {
				t.Errorf("forward-auth: client_ip %v, want %s", got, tt.want)
			}

			// Envoy's HTTP filter: x-authz-client-ip is its downstream peer.
			send(t, srv, "GET", "/authz/ext-authz/orders", [][2]string{
				{"Host", "app.example.test"}, {"authorization", "Bearer " + tok},
				{"x-authz-client-ip", "10.0.0.5"}, {"x-forwarded-for", chain + ", 10.0.0.5"},
			}).allowed(t)
			if got := clientIP(t); got != tt.want {
				t.Errorf("envoy-http: client_ip %v, want %s", got, tt.want)
			}

			// Envoy's gRPC filter: source.address is its downstream peer.
			grpcClient := serveGRPC(t, e.checker)
			req := checkRequest("GET", "/orders", map[string]string{"authorization": "Bearer " + tok, "x-forwarded-for": chain + ", 10.0.0.5"})
			req.Attributes.Source.Address.Address.(*corev3.Address_SocketAddress).SocketAddress.Address = "10.0.0.5"
			if resp, err := grpcClient.Check(context.Background(), req); err != nil || resp.GetOkResponse() == nil {
				t.Fatalf("gRPC check: %v %v", resp, err)
			}
			if got := clientIP(t); got != tt.want {
				t.Errorf("envoy-grpc: client_ip %v, want %s", got, tt.want)
			}
			// Envoy at the edge: its peer is the client, whatever X-Forwarded-For says.
			req.Attributes.Source.Address.Address.(*corev3.Address_SocketAddress).SocketAddress.Address = "198.51.100.7"
			if _, err := grpcClient.Check(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			if got := clientIP(t); got != "198.51.100.7" {
				t.Errorf("envoy-grpc at the edge: client_ip %v, want 198.51.100.7", got)
			}
		})
	}
}

// The point of it: two clients behind one trusted balancer have their own per-IP buckets.
func TestPublicRoutesAreLimitedPerClientBehindABalancer(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.ClientIPs = trustedResolver(t, "10.0.0.0/8")
		c.IPLimit = ratelimit.Limit{Burst: 1, Period: 60e9}
		c.Policy = policy(t, tablePolicy)
	})
	srv := authdServer(t, e)
	public := func(client string) response {
		return send(t, srv, "GET", extauthz.PathForwardAuth, [][2]string{
			{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Host", "app.example.test"},
			{"X-Forwarded-Uri", "/docs/"}, {"X-Forwarded-For", client + ", 10.0.0.5"},
		})
	}
	public("203.0.113.7").allowed(t)
	public("203.0.113.8").allowed(t)
	public("203.0.113.7").denied(t, 429)
}
