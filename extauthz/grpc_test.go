package extauthz_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/authd/authd/extauthz"
	"github.com/authd/authd/ratelimit"
)

// serveGRPC serves c's Authorization service on a loopback port and returns a client.
func serveGRPC(t testing.TB, c *extauthz.Checker) authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	extauthz.NewGRPCServer(c).Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// checkRequest is what Envoy sends for a client request (PROXIES §3.1): lower-case
// header keys, pseudo-headers included, the TCP peer as the source.
func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	hs := map[string]string{":method": method, ":path": path, ":authority": "app.example.test", ":scheme": "https",
		"x-forwarded-proto": "https", "x-request-id": "5f1c"}
	for k, v := range headers {
		hs[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1234", Method: method, Path: path, Host: "app.example.test", Scheme: "https",
			Headers: hs, Protocol: "HTTP/1.1",
		}},
	}}
}

// envoyApply applies an OkHttpResponse to the request headers as Envoy does: sets
// (OVERWRITE_IF_EXISTS_OR_ADD replaces, the default appends a second line), then
// removals. Header lines are kept as a list, so a duplicate shows.
func envoyApply(t *testing.T, in map[string]string, ok *authv3.OkHttpResponse) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for k, v := range in {
		out[k] = []string{v}
	}
	for _, h := range ok.GetHeaders() {
		k := h.GetHeader().GetKey()
		if k != strings.ToLower(k) {
			t.Errorf("header key %q is not lower-case", k)
		}
		switch h.GetAppendAction() {
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			out[k] = []string{h.GetHeader().GetValue()}
		default:
			out[k] = append(out[k], h.GetHeader().GetValue())
		}
	}
	for _, k := range ok.GetHeadersToRemove() {
		delete(out, k)
	}
	return out
}

func TestGRPCCheckOverARealConnection(t *testing.T) {
	e := newEnv(t, func(c *extauthz.Config) {
		c.Policy = policy(t, tablePolicy)
		c.UserLimit = ratelimit.Limit{Burst: 3, Period: time.Minute}
	})
	client := serveGRPC(t, e.checker)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice := e.newUser()
	alice.email = ""
	tok := e.token(alice)

	t.Run("allow sets identity by overwrite and removes spoofed headers", func(t *testing.T) {
		in := map[string]string{"authorization": "Bearer " + tok, "x-user-id": "admin", "x-user-email": "admin@evil.test", "x-session-id": "forged"}
		req := checkRequest("GET", "/orders?page=2", in)
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() == nil || resp.GetStatus().GetCode() != int32(codes.OK) {
			t.Fatalf("status = %v, want an explicit OK", resp.GetStatus())
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("no OkResponse: %v", resp)
		}
		for _, h := range ok.GetHeaders() {
			if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("%s: append action %v", h.GetHeader().GetKey(), h.GetAppendAction())
			}
			for _, r := range ok.GetHeadersToRemove() {
				if r == h.GetHeader().GetKey() {
					t.Errorf("%s is both set and removed", r)
				}
			}
		}
		up := envoyApply(t, req.GetAttributes().GetRequest().GetHttp().GetHeaders(), ok)
		want := map[string][]string{"x-user-id": {alice.id}, "x-session-id": {alice.sid}, "x-auth-mfa": {"false"}}
		for k, v := range want {
			if strings.Join(up[k], "|") != strings.Join(v, "|") {
				t.Errorf("upstream %s = %q, want %q", k, up[k], v)
			}
		}
		if v, present := up["x-user-email"]; present {
			t.Errorf("the client's x-user-email reached the upstream: %q", v)
		}
	})

	t.Run("public route removes every identity header", func(t *testing.T) {
		req := checkRequest("GET", "/docs/", map[string]string{"x-user-id": "admin"})
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		up := envoyApply(t, req.GetAttributes().GetRequest().GetHttp().GetHeaders(), resp.GetOkResponse())
		if resp.GetStatus().GetCode() != 0 || up["x-user-id"] != nil {
			t.Fatalf("status %v, upstream x-user-id %q", resp.GetStatus(), up["x-user-id"])
		}
		if got := resp.GetOkResponse().GetHeadersToRemove(); len(got) != 4 {
			t.Errorf("headers_to_remove = %v", got)
		}
	})

	t.Run("raw header map", func(t *testing.T) {
		req := checkRequest("GET", "/orders", nil)
		http := req.GetAttributes().GetRequest().GetHttp()
		http.Headers = nil
		http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("GET")},
			{Key: "authorization", RawValue: []byte("Bearer " + tok)},
			{Key: "authorization", RawValue: []byte("Bearer " + tok)},
		}}
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus().GetCode() != int32(codes.Unauthenticated) {
			t.Fatalf("two raw authorization lines: %v", resp.GetStatus())
		}
		http.HeaderMap.Headers = http.HeaderMap.Headers[:2]
		resp, err = client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus().GetCode() != 0 {
			t.Fatalf("one raw authorization line: %v", resp.GetStatus())
		}
	})

	mfaRoute := checkRequest("GET", "/admin/", map[string]string{"authorization": "Bearer " + tok})
	limited := e.newUser()
	limitedTok := e.token(limited)
	for range 3 {
		if resp, _ := client.Check(ctx, checkRequest("GET", "/", map[string]string{"authorization": "Bearer " + limitedTok})); resp.GetStatus().GetCode() != 0 {
			t.Fatalf("warm-up denied: %v", resp.GetStatus())
		}
	}
	down := e.newUser()
	downTok := e.token(down)

	denials := []struct {
		name   string
		req    *authv3.CheckRequest
		before func()
		code   codes.Code
		status int
		header string // a header the denial must carry, "name: value"
	}{
		{"no token", checkRequest("GET", "/orders", nil), nil, codes.Unauthenticated, 401, `www-authenticate: Bearer realm="authd"`},
		{"bad token", checkRequest("GET", "/orders", map[string]string{"authorization": "Bearer x.y.z"}), nil, codes.Unauthenticated, 401, `www-authenticate: Bearer realm="authd", error="invalid_token"`},
		{"mfa required", mfaRoute, nil, codes.PermissionDenied, 403, "content-type: application/problem+json"},
		{"rate limited", checkRequest("GET", "/", map[string]string{"authorization": "Bearer " + limitedTok}), nil, codes.PermissionDenied, 429, "retry-after: 20"},
		{"store down", checkRequest("GET", "/", map[string]string{"authorization": "Bearer " + downTok}), func() { e.src.setDown(true) }, codes.PermissionDenied, 503, "retry-after: 1"},
		{"no HTTP attributes", &authv3.CheckRequest{}, nil, codes.PermissionDenied, 400, "content-type: application/problem+json"},
	}
	for _, tt := range denials {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before()
			}
			resp, err := client.Check(ctx, tt.req)
			if err != nil {
				t.Fatalf("a denial must be an answer, not an error: %v", err)
			}
			if resp.GetStatus() == nil || codes.Code(resp.GetStatus().GetCode()) != tt.code {
				t.Fatalf("status = %v, want %v", resp.GetStatus(), tt.code)
			}
			dn := resp.GetDeniedResponse()
			if dn == nil || int(dn.GetStatus().GetCode()) != tt.status {
				t.Fatalf("denied response = %v, want HTTP %d", dn, tt.status)
			}
			var found bool
			for _, h := range dn.GetHeaders() {
				if h.GetHeader().GetKey()+": "+h.GetHeader().GetValue() == tt.header {
					found = true
				}
				if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("%s: append action %v", h.GetHeader().GetKey(), h.GetAppendAction())
				}
			}
			if !found {
				t.Errorf("header %q missing from %v", tt.header, dn.GetHeaders())
			}
			var body struct {
				Status int    `json:"status"`
				Code   string `json:"code"`
			}
			if err := json.Unmarshal([]byte(dn.GetBody()), &body); err != nil || body.Status != tt.status || body.Code == "" {
				t.Errorf("body %q is not a problem document for %d", dn.GetBody(), tt.status)
			}
		})
	}
}
