package extauthz

import (
	"context"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// GRPCServer is envoy.service.auth.v3.Authorization (PROXIES §3). Every answer carries
// an explicit status, since Envoy reads an empty CheckResponse as an allow:
//
//   - allow: OK, OkHttpResponse with every identity header set with
//     OVERWRITE_IF_EXISTS_OR_ADD (the default append action adds a second line on new
//     Envoy, which would let a client-sent X-User-Id through) and HeadersToRemove naming
//     the identity headers without a value (never one that is set);
//   - deny: UNAUTHENTICATED (16) for 401, PERMISSION_DENIED (7) for everything else
//     (429 and 503 included: other codes are treated as errors, and allowed under
//     failure_mode_allow, by some Envoy releases), with the real status, headers and
//     problem+json body in DeniedHttpResponse.
//
// Check returns a Go error never: a denial is an answer, and authd failing to read its
// state is a 503 denial, which stays closed whatever failure_mode_allow says.
type GRPCServer struct {
	authv3.UnimplementedAuthorizationServer
	c     *Checker
	lower map[string]string // header names as sent on HTTP/2
}

// NewGRPCServer returns the Authorization service of c.
func NewGRPCServer(c *Checker) *GRPCServer {
	s := &GRPCServer{c: c, lower: map[string]string{}}
	for _, n := range append(append([]string{}, c.allNames...),
		"Content-Type", "Cache-Control", "WWW-Authenticate", "Retry-After") {
		s.lower[n] = strings.ToLower(n)
	}
	return s
}

// Register adds the service to a gRPC server.
func (s *GRPCServer) Register(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, s) }

// Check implements authv3.AuthorizationServer.
func (s *GRPCServer) Check(ctx context.Context, in *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := in.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	req := Request{
		Adapter: AdapterEnvoyGRPC,
		Method:  h.GetMethod(),
		Scheme:  h.GetScheme(),
		Host:    h.GetHost(),
		Path:    h.GetPath(),
	}
	peer := parseIP(attrs.GetSource().GetAddress().GetSocketAddress().GetAddress())
	var xff []string // read only when the peer is a trusted proxy
	trusted := s.c.ips.Trusted(peer)
	if hs := h.GetHeaders(); len(hs) > 0 {
		// Keys are lower-case; duplicate lines arrive joined with ",".
		if v, ok := hs["authorization"]; ok {
			req.Authorization = []string{v}
		}
		if v, ok := hs["x-forwarded-for"]; ok && trusted {
			xff = []string{v}
		}
		if v, ok := hs["cookie"]; ok {
			req.Cookies = []string{v}
		}
		req.Origin = hs["origin"]
		req.AccessControlRequestMethod = hs["access-control-request-method"]
		req.Method = orElse(req.Method, hs[":method"])
		req.Host = orElse(req.Host, hs[":authority"])
		req.Path = orElse(req.Path, hs[":path"])
	} else {
		// encode_raw_headers: one entry per line, the value in raw_value.
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := string(hv.GetRawValue())
			if v == "" {
				v = hv.GetValue()
			}
			switch strings.ToLower(hv.GetKey()) {
			case "authorization":
				req.Authorization = append(req.Authorization, v)
			case "cookie":
				req.Cookies = append(req.Cookies, v)
			case "origin":
				req.Origin = v
			case "x-forwarded-for":
				if trusted {
					xff = append(xff, v)
				}
			case "access-control-request-method":
				req.AccessControlRequestMethod = v
			case ":method":
				req.Method = orElse(req.Method, v)
			case ":authority":
				req.Host = orElse(req.Host, v)
			case ":path":
				req.Path = orElse(req.Path, v)
			}
		}
	}
	req.ClientIP = s.c.ips.FromChain(peer, xff)
	var d Decision
	if req.Method == "" || req.Path == "" {
		d = s.c.Reject(req, "CheckRequest has no HTTP method or path")
	} else {
		d = s.c.Check(ctx, req)
	}
	return s.response(&d), nil
}

func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (s *GRPCServer) name(n string) string {
	if l, ok := s.lower[n]; ok {
		return l
	}
	return strings.ToLower(n)
}

// headers converts hs into header options set by overwrite, in two allocations.
func (s *GRPCServer) headers(hs []Header) []*corev3.HeaderValueOption {
	opts := make([]corev3.HeaderValueOption, len(hs))
	vals := make([]corev3.HeaderValue, len(hs))
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		vals[i] = corev3.HeaderValue{Key: s.name(h.Name), Value: h.Value}
		opts[i] = corev3.HeaderValueOption{Header: &vals[i], AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
		out[i] = &opts[i]
	}
	return out
}

// response maps a Decision to a CheckResponse; every branch sets Status.
func (s *GRPCServer) response(d *Decision) *authv3.CheckResponse {
	if d.Allow {
		ok := &authv3.OkHttpResponse{Headers: s.headers(d.Upstream)}
		if len(d.Remove) > 0 {
			ok.HeadersToRemove = make([]string, len(d.Remove))
			for i, n := range d.Remove {
				ok.HeadersToRemove[i] = s.name(n)
			}
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}
	code := codes.PermissionDenied
	if d.Status == 401 {
		code = codes.Unauthenticated
	}
	denied := &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Headers: s.headers(d.Client),
		Body:    string(d.Body),
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code), Message: d.Reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
}
