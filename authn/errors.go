package authn

import (
	"errors"
	"net/http"
	"time"

	"github.com/authd/authd/problem"
)

// Errors the service returns; the handlers map each to one status and code (DESIGN §3).
var (
	ErrInvalidCredentials = errors.New("invalid credentials")
	ErrInvalidToken       = errors.New("invalid token")
	ErrSessionRevoked     = errors.New("session revoked")
	ErrTokenReused        = errors.New("refresh token reused")
	ErrInvalidMFACode     = errors.New("invalid MFA code")
	ErrEmailTaken         = errors.New("email taken")
	ErrNotFound           = errors.New("not found")
	ErrOverloaded         = errors.New("password hashing overloaded")
	ErrMFAState           = errors.New("MFA is not in the state this call needs")
)

// LockedError is returned while an email is locked out.
type LockedError struct{ RetryAfter time.Duration }

func (e *LockedError) Error() string { return "account locked" }

// ValidationError lists fields that broke a rule.
type ValidationError struct{ Fields []problem.FieldError }

func (e *ValidationError) Error() string { return "validation failed" }

func invalidField(field, msg string) *ValidationError {
	return &ValidationError{Fields: []problem.FieldError{{Field: field, Message: msg}}}
}

// toProblem is the one table from service errors to HTTP problems.
func toProblem(err error) problem.Problem {
	var p problem.Problem
	var locked *LockedError
	var verr *ValidationError
	switch {
	case errors.As(err, &p):
		return p
	case errors.As(err, &locked):
		p = problem.New(http.StatusLocked, "account_locked", "Too many failed attempts; try again later.")
		p.RetryAfter = locked.RetryAfter
		return p
	case errors.As(err, &verr):
		p = problem.New(http.StatusUnprocessableEntity, "validation_failed", "One or more fields are invalid.")
		p.Errors = verr.Fields
		return p
	case errors.Is(err, ErrInvalidCredentials):
		return problem.New(http.StatusUnauthorized, "invalid_credentials", "The email or password is incorrect.")
	case errors.Is(err, ErrInvalidToken):
		return problem.New(http.StatusUnauthorized, "invalid_token", "The token is missing, malformed, expired or not valid here.")
	case errors.Is(err, ErrSessionRevoked):
		return problem.New(http.StatusUnauthorized, "session_revoked", "The session has ended; log in again.")
	case errors.Is(err, ErrTokenReused):
		return problem.New(http.StatusUnauthorized, "token_reused", "This refresh token was already used; the session has been ended.")
	case errors.Is(err, ErrInvalidMFACode):
		return problem.New(http.StatusUnauthorized, "invalid_mfa_code", "The code is not valid.")
	case errors.Is(err, ErrEmailTaken):
		return problem.New(http.StatusConflict, "email_taken", "An account with this email already exists.")
	case errors.Is(err, ErrNotFound):
		return problem.New(http.StatusNotFound, "not_found", "No such resource.")
	case errors.Is(err, ErrOverloaded):
		p = problem.New(http.StatusServiceUnavailable, "overloaded", "The server is busy; retry shortly.")
		p.RetryAfter = time.Second
		return p
	case errors.Is(err, ErrMFAState):
		return problem.New(http.StatusConflict, "mfa_state", "MFA is not in the state this request needs.")
	default:
		return problem.New(http.StatusInternalServerError, "internal", "An internal error occurred; the log has the cause.")
	}
}
