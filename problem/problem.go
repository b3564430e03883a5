// Package problem writes RFC 9457 problem+json error documents, the one error body authd sends.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// ContentType is the media type of every error body.
const ContentType = "application/problem+json"

// FieldError names one field that failed validation.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an error document. Code is the stable machine word clients match on.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Code   string       `json:"code"`
	Errors []FieldError `json:"errors,omitempty"`

	// RetryAfter, when positive, is sent as a Retry-After header in whole seconds
	// (rounded up, at least 1).
	RetryAfter time.Duration `json:"-"`
}

// New builds a problem; its type is a URN derived from the code.
func New(status int, code, detail string) Problem {
	return Problem{
		Type:   "urn:authd:error:" + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
}

// Error lets a Problem travel as an error value until a transport writes it.
func (p Problem) Error() string { return p.Code + ": " + p.Detail }

// Write sends p as the response. Nothing may have been written to w before.
func Write(w http.ResponseWriter, p Problem) {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(RetryAfterSeconds(p.RetryAfter), 10))
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// RetryAfterSeconds rounds d up to whole seconds, at least 1, as Retry-After wants.
func RetryAfterSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
