package jsonbody

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/authd/authd/problem"
)

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Remember bool   `json:"remember"`
}

func TestDecodeRefusesWhatEncodingJSONWouldAccept(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		code       string
		field      string
	}{
		{"invalid UTF-8 in a string", "{\"email\":\"a@b.c\",\"password\":\"pass\xffword\"}", 400, "invalid_json", ""},
		{"lone high surrogate escape", `{"password":"pass\ud800word"}`, 400, "invalid_json", ""},
		{"lone low surrogate escape", `{"password":"pass\udc00word"}`, 400, "invalid_json", ""},
		{"high surrogate then non-surrogate", `{"password":"\ud800\u0041"}`, 400, "invalid_json", ""},
		{"high surrogate at the end", `{"password":"\udbff"}`, 400, "invalid_json", ""},
		{"duplicate key", `{"email":"a@b.c","email":"x@y.z"}`, 400, "invalid_json", ""},
		{"duplicate key nested", `{"email":"a@b.c","x":{"a":1,"a":2}}`, 400, "invalid_json", ""},
		{"trailing data", `{"email":"a@b.c"} {}`, 400, "invalid_json", ""},
		{"trailing garbage", `{"email":"a@b.c"}x`, 400, "invalid_json", ""},
		{"not an object", `["a"]`, 400, "invalid_json", ""},
		{"not JSON", `email=a`, 400, "invalid_json", ""},
		{"truncated", `{"email":"a@b.c"`, 400, "invalid_json", ""},
		{"unknown field", `{"email":"a@b.c","admin":true}`, 422, "validation_failed", "admin"},
		{"case variant is unknown", `{"EMAIL":"a@b.c"}`, 422, "validation_failed", "EMAIL"},
		{"wrong type", `{"email":42}`, 422, "validation_failed", "email"},
		{"too deep", strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), 400, "invalid_json", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dst loginRequest
			err := DecodeBytes([]byte(tt.body), &dst)
			var p problem.Problem
			if !errors.As(err, &p) {
				t.Fatalf("got %v, want a problem", err)
			}
			if p.Status != tt.status || p.Code != tt.code {
				t.Fatalf("got %d %s, want %d %s", p.Status, p.Code, tt.status, tt.code)
			}
			if tt.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tt.field) {
				t.Fatalf("errors = %+v, want field %q", p.Errors, tt.field)
			}
		})
	}
}

func TestDecodeAcceptsValidBodies(t *testing.T) {
	var dst loginRequest
	if err := DecodeBytes([]byte(`{"email":"a@b.c","password":"pässwörd","remember":true}`), &dst); err != nil {
		t.Fatal(err)
	}
	if dst.Email != "a@b.c" || dst.Password != "pässwörd" || !dst.Remember {
		t.Fatalf("decoded %+v", dst)
	}
	var pair loginRequest
	if err := DecodeBytes([]byte(`{"password":"\ud83d\ude00 and \\ud800 and \u00e9"}`), &pair); err != nil {
		t.Fatalf("a surrogate pair and an escaped backslash: %v", err)
	}
	if pair.Password != "😀 and \\ud800 and é" {
		t.Fatalf("decoded %q", pair.Password)
	}
	var empty loginRequest
	if err := DecodeBytes(nil, &empty); err != nil {
		t.Fatalf("empty body: %v", err)
	}
}

func TestDecodeRefusesBodiesOver64KiB(t *testing.T) {
	body := `{"email":"` + strings.Repeat("a", MaxBytes) + `"}`
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	var dst loginRequest
	var p problem.Problem
	if err := Decode(r, &dst); !errors.As(err, &p) || p.Status != 413 || p.Code != "payload_too_large" {
		t.Fatalf("got %v, want 413 payload_too_large", err)
	}
}
