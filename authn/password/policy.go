package password

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Length limits, in Unicode code points after NFKC normalisation (NIST SP 800-63B rev 4).
const (
	DefaultMinLength = 15  // PASSWORD_MIN_LENGTH's default
	LowestMinLength  = 8   // the lowest PASSWORD_MIN_LENGTH allowed
	MaxLength        = 128 // the most any password may have
)

// maxInputBytes bounds the bytes looked at before normalising, so a huge input is refused
// without normalising it. NFKC never shrinks text to less than an eighth of its UTF-8 length,
// so nothing of at most MaxLength code points after NFKC is refused by it.
const maxInputBytes = 4096

// Rules, as RuleError.Rule names them.
const (
	RuleInvalidUTF8 = "invalid_utf8"
	RuleMinLength   = "min_length"
	RuleMaxLength   = "max_length"
	RuleEqualsEmail = "equals_email"
	RuleCommon      = "common"
)

// RuleError is a password refused by the policy: Rule is the stable word for the rule broken,
// Message a sentence for the user (the handler puts it in a 422 errors entry). Neither ever
// contains the password.
type RuleError struct {
	Rule    string
	Message string
}

func (e *RuleError) Error() string { return "password policy " + e.Rule + ": " + e.Message }

//go:embed common-passwords.txt
var commonPasswordsFile string

// Policy decides whether a new password is acceptable (DESIGN §3): at least MinLength and at
// most MaxLength code points after NFKC, any Unicode, no composition rules, no truncation, not
// on the shipped common-password list, not the email.
type Policy struct {
	minLength int
	common    map[string]struct{}
}

// NewPolicy builds a policy requiring minLength code points; 0 means DefaultMinLength.
// minLength must lie in LowestMinLength..MaxLength. The common-password list is loaded here,
// once.
func NewPolicy(minLength int) (*Policy, error) {
	if minLength == 0 {
		minLength = DefaultMinLength
	}
	if minLength < LowestMinLength || minLength > MaxLength {
		return nil, fmt.Errorf("password: minimum length %d is outside %d..%d", minLength, LowestMinLength, MaxLength)
	}
	lines := strings.Split(strings.TrimSuffix(commonPasswordsFile, "\n"), "\n")
	common := make(map[string]struct{}, len(lines))
	for _, l := range lines {
		if l != "" {
			common[l] = struct{}{}
		}
	}
	return &Policy{minLength: minLength, common: common}, nil
}

// MinLength is the fewest code points a password may have.
func (p *Policy) MinLength() int { return p.minLength }

// Check returns nil when pw may be set as the password of the account with this email, else
// a *RuleError naming the first rule broken, in this order: invalid_utf8, max_length,
// min_length, equals_email, common.
//
// Both are normalised first: pw to NFKC, the email as DESIGN §3 stores it (trimmed, NFKC,
// lower-cased). The password equals the email when, ignoring white space around the password,
// the two are equal under Unicode case folding: the account is found by the email in any case,
// so every such spelling is a password an attacker guesses first. The common-password list is
// matched case-insensitively (the list is lower-case). An empty email skips that rule.
func (p *Policy) Check(pw, email string) error {
	npw, err := prepare(pw)
	switch {
	case errors.Is(err, ErrInvalidUTF8):
		return &RuleError{Rule: RuleInvalidUTF8, Message: "Password must be valid UTF-8 text."}
	case err != nil:
		return &RuleError{Rule: RuleMaxLength, Message: fmt.Sprintf("Password must be at most %d characters long.", MaxLength)}
	}
	if utf8.RuneCountInString(npw) < p.minLength {
		return &RuleError{Rule: RuleMinLength, Message: fmt.Sprintf("Password must be at least %d characters long.", p.minLength)}
	}
	if e := normalizeEmail(email); e != "" && strings.EqualFold(strings.TrimSpace(npw), e) {
		return &RuleError{Rule: RuleEqualsEmail, Message: "Password must not be the same as the email address."}
	}
	if _, ok := p.common[strings.ToLower(npw)]; ok {
		return &RuleError{Rule: RuleCommon, Message: "Password is too common: it is on a list of frequently used passwords."}
	}
	return nil
}

// Normalize returns pw in Unicode normalisation form NFKC, the form that is counted and
// hashed. Compatibility characters fold too: the ligature "ﬁ" becomes "fi" and full-width
// letters become ASCII, so such spellings also match each other.
func Normalize(pw string) string { return norm.NFKC.String(pw) }

// prepare checks encoding and length and normalises pw, for Check, Hash and Verify alike.
func prepare(pw string) (string, error) {
	if !utf8.ValidString(pw) {
		return "", ErrInvalidUTF8
	}
	if len(pw) > maxInputBytes {
		return "", ErrTooLong
	}
	npw := Normalize(pw)
	if utf8.RuneCountInString(npw) > MaxLength {
		return "", ErrTooLong
	}
	return npw, nil
}

// normalizeEmail is DESIGN §3's form of an email: trimmed, NFKC, lower-cased.
func normalizeEmail(email string) string {
	return strings.ToLower(norm.NFKC.String(strings.TrimSpace(email)))
}
