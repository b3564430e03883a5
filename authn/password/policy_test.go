package password

import (
	"errors"
	"strings"
	"testing"
)

func newTestPolicy(t *testing.T, minLength int) *Policy {
	t.Helper()
	p, err := NewPolicy(minLength)
	if err != nil {
		t.Fatalf("NewPolicy(%d): %v", minLength, err)
	}
	return p
}

func TestPolicyRules(t *testing.T) {
	const email = "  Alice.Liddell@Example.COM "
	tests := []struct {
		name      string
		minLength int
		pw        string
		email     string
		wantRule  string // "" for accepted
	}{
		{"long passphrase is accepted", 0, horse, email, ""},
		{"any unicode, no composition rules", 0, "пароль пароль пароль", email, ""},
		{"exactly the minimum", 0, strings.Repeat("z", 14) + "y", email, ""},
		{"exactly the maximum", 0, strings.Repeat("zy", 64), email, ""},

		{"min_length: one short", 0, strings.Repeat("z", 13) + "y", email, RuleMinLength},
		{"min_length: lowered to 8 accepts 8", 8, "zq8!Kv#u", email, ""},
		{"min_length: lowered to 8 refuses 7", 8, "zq8!Kv#", email, RuleMinLength},
		{"min_length: counted in code points, not bytes", 0, strings.Repeat("€", 14), email, RuleMinLength},
		{"min_length: counted after NFKC composes NFD", 0, strings.Repeat("e\u0301", 8), email, RuleMinLength},
		{"min_length: counted after NFKC expands a ligature", 0, strings.Repeat("z", 13) + "\ufb03", email, ""},

		{"max_length: 129 code points", 0, strings.Repeat("zy", 64) + "x", email, RuleMaxLength},
		{"max_length: 128 before NFKC, more after", 0, strings.Repeat("\ufdfa", 8), email, RuleMaxLength},
		{"max_length: huge input", 0, strings.Repeat("zy", 1<<16), email, RuleMaxLength},
		{"max_length: checked before min_length matters", 8, strings.Repeat("€", 129), email, RuleMaxLength},

		{"invalid_utf8: a stray byte", 0, horse + "\xff", email, RuleInvalidUTF8},
		{"invalid_utf8: a surrogate", 0, horse + "\xed\xa0\x80", email, RuleInvalidUTF8},

		{"equals_email: same spelling", 0, "alice.liddell@example.com", email, RuleEqualsEmail},
		{"equals_email: other case", 0, "ALICE.LIDDELL@EXAMPLE.COM", email, RuleEqualsEmail},
		{"equals_email: as the user typed it", 0, email, email, RuleEqualsEmail},
		{"equals_email: full-width spelling", 0, "ａｌｉｃｅ.ｌｉｄｄｅｌｌ@ｅｘａｍｐｌｅ.ｃｏｍ", email, RuleEqualsEmail},
		{"equals_email: email spelled NFD", 0, "jose\u0301.garcia@example.com", "Jos\u00e9.Garcia@example.com", RuleEqualsEmail},
		{"equals_email: containing the email is allowed", 0, "alice.liddell@example.com!", email, ""},
		{"equals_email: no email given", 0, "alice.liddell@example.com", "", ""},

		{"common: on the list", 8, "baseball", email, RuleCommon},
		{"common: upper case", 8, "BaseBall", email, RuleCommon},
		{"common: full-width", 8, "ｂａｓｅｂａｌｌ", email, RuleCommon},
		{"common: long entry at the default minimum", 0, "passwordpassword", email, RuleCommon},
		{"common: long entry in mixed case", 0, "1qaz2wsx3edc4RFV", email, RuleCommon},
		{"common: near miss is accepted", 8, "baseball!", email, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPolicy(t, tt.minLength)
			err := p.Check(tt.pw, tt.email)
			if tt.wantRule == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("Check = %v, want *RuleError %s", err, tt.wantRule)
			}
			if re.Rule != tt.wantRule {
				t.Errorf("Rule = %q (%s), want %q", re.Rule, re.Message, tt.wantRule)
			}
			if re.Message == "" {
				t.Error("Message is empty")
			}
			if len(tt.pw) >= 4 && (strings.Contains(err.Error(), tt.pw) || strings.Contains(re.Message, tt.pw)) {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

func TestPolicyMessagesNameTheLimit(t *testing.T) {
	p := newTestPolicy(t, 12)
	var re *RuleError
	if !errors.As(p.Check("short", ""), &re) || !strings.Contains(re.Message, "12") {
		t.Errorf("min_length message %v does not say 12", re)
	}
	if !errors.As(p.Check(strings.Repeat("x", 200), ""), &re) || !strings.Contains(re.Message, "128") {
		t.Errorf("max_length message %v does not say 128", re)
	}
}

func TestNewPolicyMinLengthBounds(t *testing.T) {
	for _, tt := range []struct {
		minLength int
		want      int // 0: refused
	}{
		{0, DefaultMinLength},
		{8, 8},
		{15, 15},
		{128, 128},
		{7, 0},
		{-1, 0},
		{129, 0},
	} {
		p, err := NewPolicy(tt.minLength)
		switch {
		case tt.want == 0 && err == nil:
			t.Errorf("NewPolicy(%d) accepted it", tt.minLength)
		case tt.want != 0 && err != nil:
			t.Errorf("NewPolicy(%d) = %v", tt.minLength, err)
		case tt.want != 0 && p.MinLength() != tt.want:
			t.Errorf("NewPolicy(%d).MinLength() = %d, want %d", tt.minLength, p.MinLength(), tt.want)
		}
	}
}

func TestCommonPasswordListHasAtLeast10000Entries(t *testing.T) {
	p := newTestPolicy(t, 0)
	if n := len(p.common); n < 10000 {
		t.Errorf("common-password list has %d entries, want at least 10,000", n)
	}
	lines := strings.Split(strings.TrimSuffix(commonPasswordsFile, "\n"), "\n")
	if len(lines) != len(p.common) {
		t.Errorf("list has %d lines but %d distinct entries", len(lines), len(p.common))
	}
	for _, l := range lines {
		if l == "" || l != strings.ToLower(Normalize(l)) || strings.TrimSpace(l) != l {
			t.Fatalf("entry %q is not a non-empty, trimmed, lower-case NFKC line", l)
		}
	}
}

func TestNormalizeIsNFKC(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{unicodeNFD, unicodeFi},
		{unicodeNFC, unicodeFi},
		{"ｐａｓｓ", "pass"},
		{"plain ascii", "plain ascii"},
	} {
		if got := Normalize(tt.in); got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func BenchmarkPolicyCheck(b *testing.B) {
	p, err := NewPolicy(0)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		_ = p.Check("correct horse battery staple", "alice@example.com")
	}
}
