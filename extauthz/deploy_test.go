package extauthz_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// validate runs a message's protoc-gen-validate rules, as Envoy does on load.
func validate(t *testing.T, what string, m proto.Message) {
	t.Helper()
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		t.Fatalf("%s: %T has no validation rules", what, m)
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

func unpack(t *testing.T, what string, a *anypb.Any) proto.Message {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	validate(t, what, m)
	return m
}

// TestEnvoyConfigIsValidAndFailsClosed decodes deploy/envoy/envoy.yaml into Envoy's
// bootstrap proto (unknown fields and wrong types fail, as they do in Envoy), runs the
// protos' validation rules, and checks what the check path relies on.
func TestEnvoyConfigIsValidAndFailsClosed(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("envoy.yaml is not a valid bootstrap: %v", err)
	}
	validate(t, "bootstrap", &bs)

	modes := map[string]bool{}
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm, ok := unpack(t, l.GetName(), f.GetTypedConfig()).(*hcmv3.HttpConnectionManager)
				if !ok {
					t.Fatalf("%s: not an HTTP connection manager", l.GetName())
				}
				if hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction().String() != "REJECT_REQUEST" {
					t.Errorf("%s: headers with underscores are not rejected", l.GetName())
				}
				filters := hcm.GetHttpFilters()
				if len(filters) == 0 || filters[0].GetName() != "envoy.filters.http.ext_authz" {
					t.Fatalf("%s: ext_authz is not the first HTTP filter", l.GetName())
				}
				for _, hf := range filters {
					m := unpack(t, l.GetName()+" "+hf.GetName(), hf.GetTypedConfig())
					ea, ok := m.(*extauthzv3.ExtAuthz)
					if !ok {
						continue
					}
					if ea.GetFailureModeAllow() {
						t.Errorf("%s: failure_mode_allow is on", l.GetName())
					}
					if ea.GetStatusOnError().GetCode() != 503 {
						t.Errorf("%s: status_on_error = %v, want 503", l.GetName(), ea.GetStatusOnError())
					}
					switch {
					case ea.GetGrpcService() != nil:
						modes["grpc"] = true
						if c := ea.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "authd_grpc" {
							t.Errorf("gRPC service cluster %q", c)
						}
					case ea.GetHttpService() != nil:
						modes["http"] = true
						hs := ea.GetHttpService()
						if hs.GetPathPrefix() != "/authz/ext-authz" {
							t.Errorf("path_prefix %q", hs.GetPathPrefix())
						}
						var up []string
						for _, p := range hs.GetAuthorizationResponse().GetAllowedUpstreamHeaders().GetPatterns() {
							up = append(up, p.GetExact())
						}
						if strings.Join(up, ",") != "x-user-id,x-user-email,x-session-id,x-auth-mfa" {
							t.Errorf("allowed_upstream_headers = %v", up)
						}
						var sent []string
						for _, p := range ea.GetAllowedHeaders().GetPatterns() {
							sent = append(sent, p.GetExact())
						}
						for _, h := range []string{"cookie", "origin", "access-control-request-method"} {
							if !strings.Contains(","+strings.Join(sent, ",")+",", ","+h+",") {
								t.Errorf("allowed_headers lacks %s", h)
							}
						}
					}
				}
				checkRoutes(t, l.GetName(), hcm.GetRouteConfig())
			}
		}
	}
	if !modes["grpc"] || !modes["http"] {
		t.Errorf("modes configured: %v, want gRPC and HTTP", modes)
	}

	ports := map[string]uint32{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		for _, opt := range c.GetTypedExtensionProtocolOptions() {
			unpack(t, c.GetName(), opt)
		}
		for _, e := range c.GetLoadAssignment().GetEndpoints() {
			for _, lb := range e.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				ports[c.GetName()] = sa.GetPortValue()
				if c.GetName() != "app" && sa.GetAddress() != "authd" {
					t.Errorf("cluster %s points at %s, want the compose service authd", c.GetName(), sa.GetAddress())
				}
			}
		}
	}
	if ports["authd_grpc"] != 9001 || ports["authd_http"] != 8000 {
		t.Errorf("authd ports %v, want gRPC 9001 and HTTP 8000", ports)
	}
}

// checkRoutes holds that authd's own routes skip the check and everything else has it.
func checkRoutes(t *testing.T, listener string, rc *routev3.RouteConfiguration) {
	t.Helper()
	skipped := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			prefix := r.GetMatch().GetPrefix()
			a, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]
			if !ok {
				continue
			}
			per, ok := unpack(t, listener+" route "+prefix, a).(*extauthzv3.ExtAuthzPerRoute)
			if !ok || !per.GetDisabled() {
				continue
			}
			skipped[prefix] = true
		}
	}
	want := map[string]bool{"/api/auth/": true, "/.well-known/": true}
	if len(skipped) != len(want) || !skipped["/api/auth/"] || !skipped["/.well-known/"] {
		t.Errorf("%s: ext_authz disabled on %v, want exactly /api/auth/ and /.well-known/", listener, skipped)
	}
}

// TestProxyConfigsPointAtAuthd checks the other deploy configs for the settings the
// check path depends on; the proxies themselves are not run here (nginx and Caddy are,
// in TestNginxAuthRequestEndToEnd and TestCaddyForwardAuthEndToEnd).
func TestProxyConfigsPointAtAuthd(t *testing.T) {
	read := func(parts ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{"..", "deploy"}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var dyn struct {
		HTTP struct {
			Middlewares map[string]struct {
				ForwardAuth struct {
					Address             string   `yaml:"address"`
					TrustForwardHeader  *bool    `yaml:"trustForwardHeader"`
					AuthResponseHeaders []string `yaml:"authResponseHeaders"`
				} `yaml:"forwardAuth"`
			} `yaml:"middlewares"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal([]byte(read("traefik", "dynamic.yml")), &dyn); err != nil {
		t.Fatal(err)
	}
	fa := dyn.HTTP.Middlewares["authd"].ForwardAuth
	if fa.Address != "http://authd:8000/authz/forward-auth" || fa.TrustForwardHeader == nil || *fa.TrustForwardHeader ||
		strings.Join(fa.AuthResponseHeaders, ",") != "X-User-Id,X-User-Email,X-Session-Id,X-Auth-MFA" {
		t.Errorf("traefik forwardAuth = %+v", fa)
	}
	var static map[string]any
	if err := yaml.Unmarshal([]byte(read("traefik", "traefik.yml")), &static); err != nil {
		t.Fatal(err)
	}

	caddy := read("caddy", "Caddyfile")
	for _, want := range []string{"forward_auth authd:8000", "uri /authz/forward-auth?", "copy_headers X-User-Id X-User-Email X-Session-Id X-Auth-MFA"} {
		if !strings.Contains(caddy, want) {
			t.Errorf("Caddyfile lacks %q", want)
		}
	}
}
