package authn

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/authd/authd/jsonbody"
	"github.com/authd/authd/problem"
	"github.com/authd/authd/ratelimit"
	"github.com/authd/authd/webserver"
)

// Limits are the rate-limit rules of the account API (DESIGN §6).
type Limits struct {
	LoginIP, LoginEmail, VerifyMFAIP, RegisterIP, RefreshIP, APIUser ratelimit.Rule
}

// Handlers serves /api/auth/*: decode once, call the service, render.
type Handlers struct {
	svc    *Service
	guard  *ratelimit.Guard
	limits Limits
	// bucket maps a request to its client-address bucket (IPv6 by prefix).
	bucket func(r *http.Request) string
	log    *slog.Logger
}

// NewHandlers builds the handlers. bucket names a request's client-address bucket.
func NewHandlers(svc *Service, guard *ratelimit.Guard, limits Limits, bucket func(*http.Request) string, log *slog.Logger) *Handlers {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handlers{svc: svc, guard: guard, limits: limits, bucket: bucket, log: log}
}

// Register mounts the endpoints on mux.
func (h *Handlers) Register(mux *http.ServeMux) {
	mux.Handle("POST /api/auth/register", h.wrap(h.register))
	mux.Handle("POST /api/auth/login", h.wrap(h.login))
	mux.Handle("POST /api/auth/verify-mfa", h.wrap(h.verifyMFA))
	mux.Handle("POST /api/auth/refresh", h.wrap(h.refresh))
	mux.Handle("POST /api/auth/logout", h.authed(h.logout))
	mux.Handle("POST /api/auth/change-password", h.authed(h.changePassword))
	mux.Handle("GET /api/auth/me", h.authed(h.me))
	mux.Handle("GET /api/auth/sessions", h.authed(h.sessions))
	mux.Handle("DELETE /api/auth/sessions/{id}", h.authed(h.deleteSession))
	mux.Handle("POST /api/auth/mfa/enable", h.authed(h.mfaEnable))
	mux.Handle("POST /api/auth/mfa/verify", h.authed(h.mfaVerify))
	mux.Handle("POST /api/auth/mfa/disable", h.authed(h.mfaDisable))
}

// handlerFunc returns an error value; wrap writes it through the one error table.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// errAnswered means the handler already wrote the response (a rate-limit refusal).
var errAnswered = errors.New("answered")

func (h *Handlers) wrap(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		if err == nil || errors.Is(err, errAnswered) {
			return
		}
		p := toProblem(err)
		if p.Status >= 500 && p.Code == "internal" {
			h.log.ErrorContext(r.Context(), "request failed", "request_id", webserver.RequestID(r.Context()),
				"route", r.Pattern, "error", err)
		}
		switch p.Code {
		case "invalid_token", "session_revoked", "token_reused":
			w.Header().Set("WWW-Authenticate", `Bearer realm="authd", error="invalid_token"`)
		}
		problem.Write(w, p)
	})
}

// authed verifies the bearer token against the store (session live, stamp current) and
// takes from the per-user bucket, which fails open.
func (h *Handlers) authed(fn func(w http.ResponseWriter, r *http.Request, p Principal) error) http.Handler {
	return h.wrap(func(w http.ResponseWriter, r *http.Request) error {
		tok, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="authd"`)
			return ErrInvalidToken
		}
		p, err := h.svc.Authenticate(r.Context(), tok)
		if err != nil {
			return err
		}
		if err := h.limit(w, r, p.User.ID, h.limits.APIUser.Bucket(p.User.ID)); err != nil {
			return err
		}
		return fn(w, r, p)
	})
}

// bearer reads "Authorization: Bearer <token>" (scheme case-insensitive, one header only).
func bearer(r *http.Request) (string, bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != "" && len(tok) <= 8192
}

// limit takes from the buckets; a refusal is answered here (429 or 503), audited and
// reported as errAnswered.
func (h *Handlers) limit(w http.ResponseWriter, r *http.Request, userID string, buckets ...Bucket) error {
	out, err := h.guard.Take(r.Context(), buckets...)
	if err != nil {
		if errors.Is(err, ratelimit.ErrUnavailable) {
			h.svc.audit.async(h.svc.audit.event(EventRateLimited, userID, h.meta(r), riskSignals{},
				map[string]any{"route": r.Pattern, "reason": "limiter_unavailable"}))
			p := problem.New(http.StatusServiceUnavailable, "rate_limiter_unavailable",
				"Rate limiting is unavailable; this endpoint refuses requests until it is back.")
			p.RetryAfter = time.Second
			problem.Write(w, p)
			return errAnswered
		}
		return err
	}
	out.SetHeaders(w.Header())
	if !out.Allowed {
		h.svc.audit.async(h.svc.audit.event(EventRateLimited, userID, h.meta(r), riskSignals{},
			map[string]any{"route": r.Pattern}))
		p := problem.New(http.StatusTooManyRequests, "rate_limited", "Too many requests; retry later.")
		p.RetryAfter = out.RetryAfter
		problem.Write(w, p)
		return errAnswered
	}
	return nil
}

// Bucket is a rate-limit bucket (re-exported for Limits users).
type Bucket = ratelimit.Bucket

func (h *Handlers) meta(r *http.Request) requestMeta {
	return requestMeta{
		IP:          webserver.ClientIP(r.Context()),
		UserAgent:   cleanHeader(r.UserAgent(), 512),
		Fingerprint: Fingerprint(r.Header),
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

type registerRequest struct {
	Email      string `json:"email"`
	Password   string `json:"password"`
	FullName   string `json:"full_name"`
	WebsiteURL string `json:"website_url"`
}

func (h *Handlers) register(w http.ResponseWriter, r *http.Request) error {
	if err := h.limit(w, r, "", h.limits.RegisterIP.Bucket(h.bucket(r))); err != nil {
		return err
	}
	var req registerRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	acc, err := h.svc.Register(r.Context(), RegisterInput{Email: req.Email, Password: req.Password,
		FullName: req.FullName, Honeypot: req.WebsiteURL}, h.meta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, struct {
		ID        string `json:"id"`
		Email     string `json:"email"`
		FullName  string `json:"full_name"`
		CreatedAt any    `json:"created_at"`
	}{acc.ID, acc.Email, acc.FullName, acc.CreatedAt})
}

type loginRequest struct {
	Email      string `json:"email"`
	Password   string `json:"password"`
	WebsiteURL string `json:"website_url"`
	DeviceName string `json:"device_name"`
}

func (h *Handlers) login(w http.ResponseWriter, r *http.Request) error {
	var req loginRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	// Broad bucket first, so a flood refused per IP does not drain the account's bucket.
	if err := h.limit(w, r, "", h.limits.LoginIP.Bucket(h.bucket(r)),
		h.limits.LoginEmail.Bucket(NormalizeEmail(req.Email))); err != nil {
		return err
	}
	m := h.meta(r)
	m.DeviceName = req.DeviceName
	res, err := h.svc.Login(r.Context(), LoginInput{Email: req.Email, Password: req.Password,
		Honeypot: req.WebsiteURL, DeviceName: req.DeviceName}, m)
	if err != nil {
		return err
	}
	if res.PreAuth != nil {
		return writeJSON(w, http.StatusOK, res.PreAuth)
	}
	return writeJSON(w, http.StatusOK, res.Tokens)
}

type verifyMFARequest struct {
	PreAuthToken string `json:"pre_auth_token"`
	Code         string `json:"code"`
}

func (h *Handlers) verifyMFA(w http.ResponseWriter, r *http.Request) error {
	if err := h.limit(w, r, "", h.limits.VerifyMFAIP.Bucket(h.bucket(r))); err != nil {
		return err
	}
	var req verifyMFARequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	tr, err := h.svc.CompleteMFA(r.Context(), req.PreAuthToken, req.Code, h.meta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, tr)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

func (h *Handlers) refresh(w http.ResponseWriter, r *http.Request) error {
	if err := h.limit(w, r, "", h.limits.RefreshIP.Bucket(h.bucket(r))); err != nil {
		return err
	}
	var req refreshRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return invalidField("refresh_token", "is required")
	}
	tr, err := h.svc.Refresh(r.Context(), req.RefreshToken, h.meta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, tr)
}

type logoutRequest struct {
	AllSessions bool `json:"all_sessions"`
}

func (h *Handlers) logout(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req logoutRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	if err := h.svc.Logout(r.Context(), p, req.AllSessions, h.meta(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type changePasswordRequest struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

func (h *Handlers) changePassword(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req changePasswordRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	tr, err := h.svc.ChangePassword(r.Context(), p, req.CurrentPassword, req.NewPassword, h.meta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, tr)
}

func (h *Handlers) me(w http.ResponseWriter, r *http.Request, p Principal) error {
	return writeJSON(w, http.StatusOK, h.svc.Me(p))
}

func (h *Handlers) sessions(w http.ResponseWriter, r *http.Request, p Principal) error {
	list, err := h.svc.Sessions(r.Context(), p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, list)
}

func (h *Handlers) deleteSession(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := h.svc.DeleteSession(r.Context(), p, r.PathValue("id"), h.meta(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type emptyRequest struct{}

func (h *Handlers) mfaEnable(w http.ResponseWriter, r *http.Request, p Principal) error {
	if err := jsonbody.Decode(r, &emptyRequest{}); err != nil {
		return err
	}
	setup, err := h.svc.EnableMFA(r.Context(), p)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, setup)
}

type mfaCodeRequest struct {
	Code string `json:"code"`
}

func (h *Handlers) mfaVerify(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req mfaCodeRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	res, err := h.svc.VerifyMFA(r.Context(), p, req.Code, h.meta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

type mfaDisableRequest struct {
	Password string `json:"password"`
	Code     string `json:"code"`
}

func (h *Handlers) mfaDisable(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req mfaDisableRequest
	if err := jsonbody.Decode(r, &req); err != nil {
		return err
	}
	res, err := h.svc.DisableMFA(r.Context(), p, req.Password, req.Code, h.meta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}
