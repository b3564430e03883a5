package extauthz_test

import (
	"os"
	"strings"
	"testing"

	"github.com/authd/authd/extauthz"
)

func TestPolicyDecide(t *testing.T) {
	p := policy(t, `
default: authenticated
rules:
  - name: health
    path_prefix: /healthz
    methods: [get, HEAD]
    access: public
  - name: docs-site
    hosts: ["docs.example.test", "*.docs.example.test"]
    access: public
  - name: admin
    path_regex: ^/admin(/|$)
    access: mfa
  - name: api-reads
    hosts: ["api.example.test"]
    path_prefix: /v1/
    methods: [GET]
    access: public
`)
	tests := []struct {
		method, host, path string
		want               extauthz.Access
		rule               string
	}{
		{"GET", "app.example.test", "/healthz", extauthz.Public, "health"},
		{"HEAD", "app.example.test", "/healthz?verbose=1", extauthz.Public, "health"},
		{"POST", "app.example.test", "/healthz", extauthz.Authenticated, "default"},
		{"GET", "docs.example.test", "/anything", extauthz.Public, "docs-site"},
		{"GET", "DOCS.Example.Test:8443", "/anything", extauthz.Public, "docs-site"},
		{"GET", "v2.docs.example.test.", "/x", extauthz.Public, "docs-site"},
		{"GET", "evil-docs.example.test", "/x", extauthz.Authenticated, "default"},
		{"GET", "app.example.test", "/admin", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/administrator", extauthz.Authenticated, "default"},
		{"GET", "api.example.test", "/v1/items", extauthz.Public, "api-reads"},
		{"DELETE", "api.example.test", "/v1/items", extauthz.Authenticated, "default"},
		// Two spellings of one path: the stricter rule wins.
		{"GET", "app.example.test", "/healthz/../admin", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/healthz/%2e%2e/admin", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "//admin", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/%61dmin", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/healthz\\..\\admin", extauthz.MFA, "admin"},
		{"GET", "api.example.test", "/v1/../admin/", extauthz.MFA, "admin"},
		{"GET", "api.example.test", "/v1/%zz", extauthz.Public, "api-reads"},
		// Servlet path parameters and case-insensitive servers.
		{"GET", "app.example.test", "/admin;/x", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/admin;jsessionid=1/x", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/admin%3b/x", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/healthz/..;/admin/x", extauthz.MFA, "admin"},
		{"GET", "app.example.test", "/ADMIN/x", extauthz.MFA, "admin"},
		{"GET", "api.example.test", "/v1/items;v=2", extauthz.Public, "api-reads"},
	}
	for _, tt := range tests {
		m := p.Decide(tt.method, tt.host, tt.path)
		if m.Access != tt.want || m.Rule != tt.rule {
			t.Errorf("Decide(%s %s %s) = %v (%s), want %v (%s)", tt.method, tt.host, tt.path, m.Access, m.Rule, tt.want, tt.rule)
		}
	}
	if m := (*extauthz.Policy)(nil).Decide("GET", "x", "/"); m.Access != extauthz.Authenticated {
		t.Errorf("nil policy = %v", m.Access)
	}
}

func TestPolicyAcceptsJSONAndAPublicDefault(t *testing.T) {
	p := policy(t, `{"default": "public", "rules": [{"path_prefix": "/me", "access": "authenticated"}]}`)
	if m := p.Decide("GET", "h", "/"); m.Access != extauthz.Public {
		t.Errorf("default = %v", m.Access)
	}
	if m := p.Decide("GET", "h", "/me"); m.Access != extauthz.Authenticated || m.Rule != "rules[0]" {
		t.Errorf("rule = %v %s", m.Access, m.Rule)
	}
	if p := policy(t, ""); p.Decide("GET", "h", "/").Access != extauthz.Authenticated {
		t.Error("an empty policy must require authentication")
	}
}

func TestPolicyRefusesMistakes(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown key":         "rules:\n  - path_prefx: /x\n    access: public\n",
		"unknown access":      "rules:\n  - path_prefix: /x\n    access: open\n",
		"missing access":      "rules:\n  - path_prefix: /x\n",
		"prefix and regex":    "rules:\n  - path_prefix: /x\n    path_regex: ^/x\n    access: public\n",
		"bad regex":           "rules:\n  - path_regex: ^/(x\n    access: public\n",
		"relative prefix":     "rules:\n  - path_prefix: x/\n    access: public\n",
		"bad method":          "rules:\n  - methods: [\"GET /\"]\n    access: public\n",
		"bad host glob":       "rules:\n  - hosts: [\"[a\"]\n    access: public\n",
		"bad default":         "default: everyone\n",
		"duplicate key":       "default: public\ndefault: mfa\n",
		"not a policy at all": "- 1\n- 2\n",
	} {
		if _, err := extauthz.ParsePolicy([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err := extauthz.ParsePolicy([]byte("rules:\n  - name: one\n    access: nope\n  - name: two\n    path_regex: (\n    access: public\n"))
	if err == nil || !strings.Contains(err.Error(), "one") || !strings.Contains(err.Error(), "two") {
		t.Errorf("every bad rule should be named: %v", err)
	}
}

func TestPolicyFileReloadsOnChangeAndKeepsTheLastGoodPolicy(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "policy.yaml", "rules:\n  - path_prefix: /open\n    access: public\n")
	f, err := extauthz.OpenPolicyFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.Policy().Decide("GET", "h", "/open").Access != extauthz.Public {
		t.Fatal("initial policy not in force")
	}
	writeFile(t, dir, "policy.yaml", "rules:\n  - path_prefix: /open\n    access: mfa\n")
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if f.Policy().Decide("GET", "h", "/open").Access != extauthz.MFA {
		t.Fatal("changed policy not in force")
	}
	writeFile(t, dir, "policy.yaml", "rules: [oops")
	if err := f.Reload(); err == nil {
		t.Fatal("a broken file was accepted")
	}
	if f.Policy().Decide("GET", "h", "/open").Access != extauthz.MFA {
		t.Fatal("a broken file replaced the policy in force")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil || f.Policy() == nil {
		t.Fatal("a missing file must be an error and keep the policy")
	}
	if _, err := extauthz.OpenPolicyFile(path, nil); err == nil || !strings.Contains(err.Error(), "POLICY_FILE") {
		t.Fatalf("OpenPolicyFile of a missing file: %v", err)
	}
}
