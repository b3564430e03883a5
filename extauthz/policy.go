package extauthz

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"
)

// Access is what a route requires.
type Access int

// The access levels, from the most open to the strictest.
const (
	// Public routes pass without a token and without identity headers (the identity
	// headers a client sent are still removed); they are rate-limited per client IP.
	Public Access = iota
	// Authenticated routes need a valid access token of a live session with a current
	// security stamp.
	Authenticated
	// MFA routes need all that and an amr claim with "otp"; a token without it is 403.
	MFA
)

func (a Access) String() string {
	switch a {
	case Public:
		return "public"
	case Authenticated:
		return "authenticated"
	case MFA:
		return "mfa"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

func parseAccess(s string) (Access, error) {
	switch s {
	case "public":
		return Public, nil
	case "authenticated":
		return Authenticated, nil
	case "mfa":
		return MFA, nil
	}
	return 0, fmt.Errorf("access %q is not public, authenticated or mfa", s)
}

// Policy is an ordered list of route rules and the access that applies when none
// matches. The first matching rule wins. A Policy is immutable and safe for concurrent
// use; the zero Policy requires authentication everywhere.
//
// The file (POLICY_FILE) is YAML or JSON, decoded strictly (unknown keys are errors):
//
//	default: authenticated        # public | authenticated | mfa; authenticated when omitted
//	rules:
//	  - name: docs                # optional, for the decision log
//	    hosts: ["*.example.com"]  # globs (* any run, ? one character); any host when omitted
//	    path_prefix: /docs/       # or path_regex: ^/docs(/|$); any path when both omitted
//	    methods: [GET, HEAD]      # any method when omitted
//	    access: public
//
// Hosts are compared lower-cased and without a port. Paths are compared without the
// query, in two spellings: as the client sent them, and normalised (percent-escapes
// decoded, repeated slashes merged, "." and ".." resolved), because the upstream may
// read either; when the two spellings reach different rules, the stricter access
// applies. So "/public/../admin" is judged as /admin, and "/admin%2Fx" as /admin/x.
type Policy struct {
	def   Access
	rules []rule
}

type rule struct {
	name    string
	hosts   []string
	prefix  string
	re      *regexp.Regexp
	methods []string
	access  Access
}

// Policy returns p itself, so a fixed Policy serves as a PolicySource.
func (p *Policy) Policy() *Policy { return p }

// PolicySource gives the policy in force; a *PolicyFile swaps it on reload.
type PolicySource interface {
	Policy() *Policy
}

type policyDoc struct {
	Default string    `yaml:"default"`
	Rules   []ruleDoc `yaml:"rules"`
}

type ruleDoc struct {
	Name       string   `yaml:"name"`
	Hosts      []string `yaml:"hosts"`
	PathPrefix string   `yaml:"path_prefix"`
	PathRegex  string   `yaml:"path_regex"`
	Methods    []string `yaml:"methods"`
	Access     string   `yaml:"access"`
}

// ParsePolicy reads a policy document (YAML or JSON). Every problem is reported, each
// naming its rule.
func ParsePolicy(data []byte) (*Policy, error) {
	var doc policyDoc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p := &Policy{def: Authenticated}
	var errs []error
	if doc.Default != "" {
		a, err := parseAccess(doc.Default)
		if err != nil {
			errs = append(errs, fmt.Errorf("default: %w", err))
		}
		p.def = a
	}
	for i, rd := range doc.Rules {
		r, err := compileRule(rd)
		if err != nil {
			label := fmt.Sprintf("rules[%d]", i)
			if rd.Name != "" {
				label += " (" + rd.Name + ")"
			}
			errs = append(errs, fmt.Errorf("%s: %w", label, err))
			continue
		}
		if r.name == "" {
			r.name = fmt.Sprintf("rules[%d]", i)
		}
		p.rules = append(p.rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

func compileRule(rd ruleDoc) (rule, error) {
	r := rule{name: rd.Name}
	var errs []error
	if rd.Access == "" {
		errs = append(errs, errors.New("access is required (public, authenticated or mfa)"))
	} else if a, err := parseAccess(rd.Access); err != nil {
		errs = append(errs, err)
	} else {
		r.access = a
	}
	for _, h := range rd.Hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if _, err := path.Match(h, ""); err != nil || h == "" {
			errs = append(errs, fmt.Errorf("host glob %q is not valid", h))
			continue
		}
		r.hosts = append(r.hosts, h)
	}
	switch {
	case rd.PathPrefix != "" && rd.PathRegex != "":
		errs = append(errs, errors.New("set path_prefix or path_regex, not both"))
	case rd.PathPrefix != "":
		if !strings.HasPrefix(rd.PathPrefix, "/") {
			errs = append(errs, fmt.Errorf("path_prefix %q must start with /", rd.PathPrefix))
		}
		r.prefix = rd.PathPrefix
	case rd.PathRegex != "":
		re, err := regexp.Compile(rd.PathRegex)
		if err != nil {
			errs = append(errs, fmt.Errorf("path_regex: %w", err))
		}
		r.re = re
	}
	for _, m := range rd.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m == "" || strings.ContainsFunc(m, func(c rune) bool { return c < 'A' || c > 'Z' }) {
			errs = append(errs, fmt.Errorf("method %q is not an HTTP method", m))
			continue
		}
		r.methods = append(r.methods, m)
	}
	return r, errors.Join(errs...)
}

// Match is the outcome of a policy look-up.
type Match struct {
	Access Access
	Rule   string // the rule's name, "default" when none matched
}

// Decide returns the access a request needs. path is the request target as the client
// sent it (a query is ignored).
func (p *Policy) Decide(method, host, target string) Match {
	if p == nil {
		return Match{Access: Authenticated, Rule: "default"}
	}
	raw := target
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	host = normalHost(host)
	m := p.match(method, host, raw)
	norm := normalPath(raw)
	if norm != raw {
		if m2 := p.match(method, host, norm); m2.Access > m.Access {
			m = m2
		}
	}
	// Servlet containers (Tomcat, Jetty, Spring) drop ";params" from each segment and read
	// "..;" as "..", and case-insensitive servers (IIS, some Windows and macOS file
	// servers) read /ADMIN as /admin: judge those spellings too, stricter wins.
	if strings.IndexByte(norm, ';') >= 0 || strings.IndexByte(raw, ';') >= 0 {
		lenient := normalPath(stripParams(percentDecode(raw)))
		if m2 := p.match(method, host, lenient); m2.Access > m.Access {
			m = m2
		}
		norm = lenient
	}
	if lower := strings.ToLower(norm); lower != norm {
		if m2 := p.match(method, host, lower); m2.Access > m.Access {
			m = m2
		}
	}
	return m
}

// stripParams removes ";params" from every path segment, as servlet containers do
// ("/admin;jsessionid=1/x" is /admin/x, "/a/..;/b" is /a/../b).
func stripParams(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	return strings.Join(segs, "/")
}

func (p *Policy) match(method, host, pth string) Match {
	for i := range p.rules {
		r := &p.rules[i]
		if r.matches(method, host, pth) {
			return Match{Access: r.access, Rule: r.name}
		}
	}
	return Match{Access: p.def, Rule: "default"}
}

func (r *rule) matches(method, host, pth string) bool {
	if len(r.methods) > 0 {
		ok := false
		for _, m := range r.methods {
			if m == method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.hosts) > 0 {
		ok := false
		for _, h := range r.hosts {
			if matched, _ := path.Match(h, host); matched {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	switch {
	case r.prefix != "":
		return strings.HasPrefix(pth, r.prefix)
	case r.re != nil:
		return r.re.MatchString(pth)
	}
	return true
}

// normalHost lower-cases host and drops a port and a trailing dot.
func normalHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host)
}

// normalPath is the path as a lenient upstream may read it: percent-escapes decoded
// (an invalid escape is kept as written), repeated slashes merged and dot segments
// resolved, a trailing slash kept.
func normalPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	if strings.IndexByte(p, '%') >= 0 {
		p = percentDecode(p)
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") && !strings.Contains(p, "\\") {
		return p
	}
	// Some servers read a backslash as a slash.
	p = strings.ReplaceAll(p, "\\", "/")
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

func percentDecode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// PolicyFile is the policy read from POLICY_FILE, swapped atomically when the file
// changes. A file that no longer parses is logged and the policy in force stays.
type PolicyFile struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[Policy]

	mu  sync.Mutex
	sum [32]byte // of the content in force; under mu
}

// OpenPolicyFile reads and parses the policy at path. logger may be nil.
func OpenPolicyFile(path string, logger *slog.Logger) (*PolicyFile, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &PolicyFile{path: path, log: logger}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("POLICY_FILE: %w", err)
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("POLICY_FILE %s: %w", path, err)
	}
	f.cur.Store(p)
	f.sum = sha256.Sum256(data)
	return f, nil
}

// Policy is the policy in force.
func (f *PolicyFile) Policy() *Policy { return f.cur.Load() }

// Reload reads the file again and swaps the policy in when it changed and parses.
func (f *PolicyFile) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.path)
	if err != nil {
		f.log.Error("policy reload failed; keeping the policy in force", "file", f.path, "error", err)
		return err
	}
	sum := sha256.Sum256(data)
	if sum == f.sum {
		return nil
	}
	p, err := ParsePolicy(data)
	if err != nil {
		f.log.Error("policy reload failed; keeping the policy in force", "file", f.path, "error", err)
		return err
	}
	f.cur.Store(p)
	f.sum = sum
	f.log.Info("policy reloaded", "file", f.path, "rules", len(p.rules), "default", p.def.String())
	return nil
}

// Watch reloads the policy every interval (2 s when 0) and on every value from hup
// (the caller forwards SIGHUP; nil is fine) until ctx ends. Polling works on network
// and Kubernetes ConfigMap volumes, where inotify does not.
func (f *PolicyFile) Watch(ctx context.Context, hup <-chan os.Signal, interval time.Duration) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = f.Reload()
		case <-t.C:
			_ = f.Reload()
		}
	}
}
