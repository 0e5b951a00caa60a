package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"
)

const redacted = "REDACTED"

// Credentials is a registry login served by the daemon. Password is the
// secret: every way of printing a Credentials (fmt verbs, String, GoString,
// MarshalText, slog) redacts it. The wire format is written and read through
// an explicit wire struct, never by marshalling Credentials.
type Credentials struct {
	// Registry is the host as the request spelled it (":443" kept if given).
	Registry  string
	Username  string
	Password  string
	ExpiresAt time.Time
	FetchedAt time.Time
	// Source is SourceConfigured, SourceOnDemand or SourceWorkload.
	Source string
}

func (c Credentials) redactedString() string {
	pw := ""
	if c.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("Credentials{Registry:%q Username:%q Password:%q ExpiresAt:%s FetchedAt:%s Source:%q}",
		c.Registry, c.Username, pw, c.ExpiresAt.UTC().Format(time.RFC3339), c.FetchedAt.UTC().Format(time.RFC3339), c.Source)
}

// String redacts the password.
func (c Credentials) String() string { return c.redactedString() }

// GoString redacts the password (%#v).
func (c Credentials) GoString() string { return "api." + c.redactedString() }

// Format makes every fmt verb print the redacted form.
func (c Credentials) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(c.GoString()))
		return
	}
	_, _ = f.Write([]byte(c.redactedString()))
}

// MarshalText redacts the password; encoding/json uses MarshalJSON below.
func (c Credentials) MarshalText() ([]byte, error) { return []byte(c.redactedString()), nil }

// MarshalJSON redacts the password: the wire answer is built by the server
// from an explicit wire struct, so marshalling a Credentials by mistake (in
// a log line, a debug dump) never leaks it.
func (c Credentials) MarshalJSON() ([]byte, error) {
	w := credentialsWire{Registry: c.Registry, Username: c.Username, ExpiresAt: c.ExpiresAt, FetchedAt: c.FetchedAt, Source: c.Source}
	if c.Password != "" {
		w.Password = redacted
	}
	return jsonMarshal(w)
}

// LogValue keeps the password out of slog records.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("registry", c.Registry), slog.String("source", c.Source),
		slog.Time("expiresAt", c.ExpiresAt), slog.Bool("hasPassword", c.Password != ""))
}

// credentialsWire is the JSON of a credentials answer.
type credentialsWire struct {
	Registry  string    `json:"registry"`
	Username  string    `json:"username"`
	Password  string    `json:"password"`
	ExpiresAt time.Time `json:"expiresAt"`
	FetchedAt time.Time `json:"fetchedAt"`
	Source    string    `json:"source"`
}

func (w credentialsWire) credentials() Credentials {
	return Credentials(w)
}

// WorkloadRequest is a KEP-4412 request: the pod's image, its service
// account's token and annotations. ServiceAccountToken is a secret: String
// and the fmt verbs redact it.
type WorkloadRequest struct {
	Image                     string
	ServiceAccountToken       string
	ServiceAccountAnnotations map[string]string
}

func (r WorkloadRequest) redactedString() string {
	tok := ""
	if r.ServiceAccountToken != "" {
		tok = redacted
	}
	keys := make([]string, 0, len(r.ServiceAccountAnnotations))
	for k := range r.ServiceAccountAnnotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%q:%q", k, r.ServiceAccountAnnotations[k])
	}
	return fmt.Sprintf("WorkloadRequest{Image:%q ServiceAccountToken:%q ServiceAccountAnnotations:{%s}}", r.Image, tok, b.String())
}

// String redacts the token.
func (r WorkloadRequest) String() string { return r.redactedString() }

// GoString redacts the token (%#v).
func (r WorkloadRequest) GoString() string { return "api." + r.redactedString() }

// Format makes every fmt verb print the redacted form.
func (r WorkloadRequest) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(r.GoString()))
		return
	}
	_, _ = f.Write([]byte(r.redactedString()))
}

// MarshalText redacts the token.
func (r WorkloadRequest) MarshalText() ([]byte, error) { return []byte(r.redactedString()), nil }

// LogValue keeps the token out of slog records.
func (r WorkloadRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("image", r.Image), slog.Bool("hasToken", r.ServiceAccountToken != ""))
}

// workloadWire is the JSON body of POST /v1/credentials.
type workloadWire struct {
	Image                     string            `json:"image"`
	ServiceAccountToken       string            `json:"serviceAccountToken"`
	ServiceAccountAnnotations map[string]string `json:"serviceAccountAnnotations,omitempty"`
}

// Errors of the client. Use errors.Is.
var (
	// ErrDaemonUnreachable: no daemon answers on the socket (absent, refused,
	// permission denied, timed out). Clients that can fetch directly fall
	// back on it.
	ErrDaemonUnreachable = errors.New("ecr-node-auth daemon unreachable")
	// ErrNotECR: the daemon says the image is not on an Amazon ECR registry
	// it serves (APIError with CodeNotECR).
	ErrNotECR = errors.New("not an Amazon ECR registry")
	// ErrNoCredentials: an ECR registry the daemon has no credential for,
	// where an anonymous pull is the answer (CodeNoCredentials).
	ErrNoCredentials = errors.New("no credentials for this registry: pull anonymously")
	// ErrNotReady: the daemon holds no usable credential (CodeNotReady).
	ErrNotReady = errors.New("no usable credential")
	// ErrForbidden: the peer may not use the socket (CodeForbidden).
	ErrForbidden = errors.New("forbidden")
)

// APIError is an answer other than 200 from the daemon. Its JSON is
// {"error": Message, "code": Code}.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("ecr-node-auth answered %d %s (%s)", e.Status, http.StatusText(e.Status), e.Code)
	}
	return e.Message
}

// Is matches ErrNotECR, ErrNoCredentials, ErrNotReady and ErrForbidden by code.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotECR:
		return e.Code == CodeNotECR
	case ErrNoCredentials:
		return e.Code == CodeNoCredentials
	case ErrNotReady:
		return e.Code == CodeNotReady
	case ErrForbidden:
		return e.Code == CodeForbidden
	}
	return false
}

// errorWire is the JSON of an error answer.
type errorWire struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// statusOf is the HTTP status for an error code.
func statusOf(code string) int {
	switch code {
	case CodeNotECR, CodeNoCredentials, CodeNotFound:
		return http.StatusNotFound
	case CodeNotReady:
		return http.StatusServiceUnavailable
	case CodeForbidden:
		return http.StatusForbidden
	case CodeTooMany:
		return http.StatusTooManyRequests
	}
	return http.StatusBadRequest
}

// Errorf builds an APIError with the status of code.
func Errorf(code, format string, args ...any) *APIError {
	return &APIError{Status: statusOf(code), Code: code, Message: fmt.Sprintf(format, args...)}
}
