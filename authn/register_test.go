package authn_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/authd/authd/authn"
	"github.com/authd/authd/store"
)

func TestRegisterCreatesTheAccountAnd201(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.post("/register", map[string]string{
		"email": "reg@example.com", "password": "a long and lovely passphrase", "full_name": "Reg Istered",
	})
	wantStatus(t, r, http.StatusCreated)
	var body map[string]any
	r.decode(t, &body)
	for _, k := range []string{"id", "email", "full_name", "created_at"} {
		if _, ok := body[k]; !ok {
			t.Errorf("201 body lacks %q: %s", k, r)
		}
	}
	if len(body) != 4 {
		t.Errorf("201 body has other fields than id, email, full_name, created_at: %s", r)
	}
	if body["email"] != "reg@example.com" || body["full_name"] != "Reg Istered" {
		t.Errorf("201 body = %s", r)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	u := e.user("reg@example.com")
	if u.ID != body["id"] || !strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$m=8192,t=1,p=1$") {
		t.Errorf("stored user = %+v", u)
	}
	if rows := e.audit(store.AuditQuery{UserID: u.ID, Event: authn.EventRegister}); len(rows) != 1 {
		t.Errorf("REGISTER audit rows = %d, want 1", len(rows))
	}
}

// TestRegisterEmailTakenAfterNormalisation: trimming, NFKC and lower-casing make these one
// address, so the second registration is 409 email_taken.
func TestRegisterEmailTakenAfterNormalisation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.register(" Alice@EXAMPLE.com ", "a long and lovely passphrase")
	if a.Email != "alice@example.com" {
		t.Fatalf("stored email = %q, want alice@example.com", a.Email)
	}
	for _, email := range []string{"alice@example.com", "ALICE@example.COM", "\u00a0alice@example.com\t", "ａｌｉｃｅ@ｅｘａｍｐｌｅ.com"} {
		r := e.post("/register", map[string]string{"email": email, "password": "another long passphrase here"})
		wantProblem(t, r, http.StatusConflict, "email_taken")
	}
	// Every spelling logs in to the one account.
	for _, email := range []string{"alice@example.com", "  ALICE@Example.Com", "ａｌｉｃｅ@example.com"} {
		e.login(email, "a long and lovely passphrase")
	}
}

func TestRegisterRefusesEachPasswordRuleWith422(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, email, password, message string
	}{
		{"min_length", "min@example.com", "fourteen chars", "at least 15"},
		{"max_length", "max@example.com", strings.Repeat("x", 129), "at most 128"},
		{"common", "common@example.com", "123456789987654321", "too common"},
		{"equals_email", "Someone.Long@Example.com", "SOMEONE.LONG@example.com", "same as the email"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post("/register", map[string]string{"email": tt.email, "password": tt.password})
			p := wantProblem(t, r, http.StatusUnprocessableEntity, "validation_failed")
			if len(p.Errors) != 1 || p.Errors[0].Field != "password" || !strings.Contains(p.Errors[0].Message, tt.message) {
				t.Fatalf("errors = %+v, want password: …%s…", p.Errors, tt.message)
			}
			if strings.Contains(string(r.Body), tt.password) {
				t.Fatalf("the 422 repeats the password: %s", r)
			}
			if _, err := e.st.GetUserByEmail(context.Background(), authn.NormalizeEmail(tt.email)); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("a refused registration stored a user (err %v)", err)
			}
		})
	}
	// 128 code points is still fine; so is exactly 15.
	e.register("edge1@example.com", strings.Repeat("é", 128))
	e.register("edge2@example.com", "fifteen chars!!")
}

func TestRegisterNamesEachMissingOrMalformedField(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name   string
		body   any
		fields []string
	}{
		{"empty object", map[string]string{}, []string{"email", "password"}},
		{"empty body", nil, []string{"email", "password"}},
		{"no email", map[string]string{"password": "a long and lovely passphrase"}, []string{"email"}},
		{"no password", map[string]string{"email": "x@example.com"}, []string{"password"}},
		{"not an email", map[string]string{"email": "not-an-email", "password": "a long and lovely passphrase"}, []string{"email"}},
		{"full_name too long", map[string]string{"email": "y@example.com", "password": "a long and lovely passphrase",
			"full_name": strings.Repeat("n", 201)}, []string{"full_name"}},
		{"wrong type", map[string]any{"email": 42, "password": "a long and lovely passphrase"}, []string{"email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := wantProblem(t, e.post("/register", tt.body), http.StatusUnprocessableEntity, "validation_failed")
			var got []string
			for _, fe := range p.Errors {
				got = append(got, fe.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Fatalf("fields = %v, want %v", got, tt.fields)
			}
		})
	}
}

// TestBodiesAreDecodedStrictly: every endpoint with a body refuses what encoding/json
// would let through.
func TestBodiesAreDecodedStrictly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		field  string
	}{
		// encoding/json would turn \xff into U+FFFD: two different passwords would hash alike.
		{"invalid UTF-8", "{\"email\":\"u@example.com\",\"password\":\"a long passphrase \xff\xfe here\"}", 400, "invalid_json", ""},
		{"duplicate keys", `{"email":"u@example.com","password":"a long and lovely passphrase","password":"another long passphrase"}`, 400, "invalid_json", ""},
		{"trailing data", `{"email":"u@example.com","password":"a long and lovely passphrase"} {}`, 400, "invalid_json", ""},
		{"not JSON", `email=u@example.com`, 400, "invalid_json", ""},
		{"an array", `[]`, 400, "invalid_json", ""},
		{"unknown field", `{"email":"u@example.com","password":"a long and lovely passphrase","username":"u"}`, 422, "validation_failed", "username"},
		{"case variant", `{"EMAIL":"u@example.com","password":"a long and lovely passphrase"}`, 422, "validation_failed", "EMAIL"},
	}
	for _, path := range []string{"/register", "/login", "/refresh", "/verify-mfa"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				p := wantProblem(t, e.post(path, tt.body), tt.status, tt.code)
				if tt.field != "" && !slices.ContainsFunc(p.Errors, func(fe fieldError) bool {
					return fe.Field == tt.field && fe.Message == "unknown field"
				}) {
					t.Fatalf("errors = %+v, want the field %q named unknown", p.Errors, tt.field)
				}
			})
		}
	}
	if _, err := e.st.GetUserByEmail(context.Background(), "u@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused body stored a user (err %v)", err)
	}
}

func TestBodiesOver64KiBAre413(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	big := `{"email":"big@example.com","password":"` + strings.Repeat("p", 70<<10) + `"}`
	wantProblem(t, e.post("/register", big), http.StatusRequestEntityTooLarge, "payload_too_large")

	// Without a Content-Length the reader stops at the limit.
	r := e.post("/login", big, func(r *http.Request) { r.ContentLength = -1 })
	wantProblem(t, r, http.StatusRequestEntityTooLarge, "payload_too_large")
}

// TestRegisterHoneypotLooksLikeSuccessAndStoresNothing: a filled website_url gets a
// plausible 201, no account, and a SUSPICIOUS_ACTIVITY audit row.
func TestRegisterHoneypotLooksLikeSuccessAndStoresNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.post("/register", map[string]string{
		"email": " Bot@Example.com", "password": "a long and lovely passphrase", "website_url": "http://spam.example",
	})
	wantStatus(t, r, http.StatusCreated)
	var body map[string]any
	r.decode(t, &body)
	if body["email"] != "bot@example.com" || body["id"] == "" || body["created_at"] == nil || len(body) != 4 {
		t.Fatalf("honeypot 201 body is not plausible: %s", r)
	}
	if _, err := e.st.GetUserByEmail(context.Background(), "bot@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the honeypot stored a user (err %v)", err)
	}
	wantProblem(t, e.post("/login", map[string]string{"email": "bot@example.com", "password": "a long and lovely passphrase"}),
		http.StatusUnauthorized, "invalid_credentials")
	if rows := e.auditOf(authn.EventSuspiciousActivity); len(rows) != 1 || rows[0].RiskScore < 50 ||
		!strings.Contains(string(rows[0].Details), `"honeypot"`) {
		t.Fatalf("SUSPICIOUS_ACTIVITY rows = %+v", rows)
	}
	if rows := e.auditOf(authn.EventRegister); len(rows) != 0 {
		t.Fatalf("the honeypot wrote REGISTER: %+v", rows)
	}
	// The same address can still register for real.
	e.register("bot@example.com", "a long and lovely passphrase")
}
