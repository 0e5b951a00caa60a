// Package identity is the daemon's identity source: it reads the Kubernetes
// projected service-account token (a JWT) from its file, exchanges it for AWS
// credentials with STS AssumeRoleWithWebIdentity (or wraps the SDK's default
// credential chain), and watches the token file for kubelet rotations.
//
// A raw token, a secret key or a session token never appears in a log line,
// an error or a Status: only the decoded, unverified claims (iss, aud, sub,
// exp, iat) are shown, and the watcher keeps only a SHA-256 of the content.
package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sentinel errors for the ways a token file can be unusable. Every error
// ReadToken returns is a *TokenError that matches exactly one of them with
// errors.Is.
var (
	// ErrTokenMissing: the file does not exist or cannot be read.
	ErrTokenMissing = errors.New("web identity token file missing or unreadable")
	// ErrTokenEmpty: the file is empty, usually a write in progress; transient.
	ErrTokenEmpty = errors.New("web identity token file empty")
	// ErrTokenMalformed: the content is not a single compact JWT.
	ErrTokenMalformed = errors.New("web identity token malformed")
	// ErrTokenExpired: the JWT's exp has passed; the kubelet has not rotated it.
	ErrTokenExpired = errors.New("web identity token expired")
)

// maxTokenSize bounds how much of the file is read. Projected tokens are a few
// KiB; anything this large is not a token.
const maxTokenSize = 64 << 10

// Claims are the JWT claims the daemon shows and pre-checks. They are decoded
// without verifying the signature: STS verifies the token.
type Claims struct {
	Issuer    string    `json:"iss,omitempty"`
	Audience  []string  `json:"aud,omitempty"`
	Subject   string    `json:"sub,omitempty"`
	ExpiresAt time.Time `json:"exp,omitzero"`
	IssuedAt  time.Time `json:"iat,omitzero"`
}

// String renders the claims as "iss=… aud=… sub=…" (aud comma-separated).
func (c Claims) String() string {
	return "iss=" + orNone(c.Issuer) + " aud=" + orNone(strings.Join(c.Audience, ",")) + " sub=" + orNone(c.Subject)
}

// HasAudience reports whether aud is one of the token's audiences.
func (c Claims) HasAudience(aud string) bool {
	for _, a := range c.Audience {
		if a == aud {
			return true
		}
	}
	return false
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// Token is a web identity token read from its file. Its raw value is
// unexported and only handed to STS through Raw; String and %v show claims.
type Token struct {
	raw    string
	Path   string
	Claims Claims
}

// Raw returns the JWT. Use it only to build the STS request; never log it.
func (t Token) Raw() string { return t.raw }

// String describes the token by its claims, never its value.
func (t Token) String() string {
	if t.Path == "" {
		return "token(" + t.Claims.String() + ")"
	}
	return "token(" + t.Path + ": " + t.Claims.String() + ")"
}

// GoString keeps %#v from printing the raw value.
func (t Token) GoString() string { return t.String() }

// TokenError says why a token file is unusable, naming the file and the fix.
// It never holds the token's content.
type TokenError struct {
	Kind   error  // one of ErrTokenMissing, ErrTokenEmpty, ErrTokenMalformed, ErrTokenExpired
	Path   string // the token file
	Claims Claims // the decoded claims, when the JWT could be decoded (expired)
	Detail string // what is wrong and what to do
	Err    error  // the underlying I/O error, for ErrTokenMissing
}

func (e *TokenError) Error() string { return e.Detail }

// Unwrap lets errors.Is match both the kind and an underlying I/O error.
func (e *TokenError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// ReadToken reads and decodes the web identity token at path. now decides
// whether it has expired. Surrounding whitespace is trimmed; anything else
// around the JWT (such as log text appended to the file) makes it malformed.
func ReadToken(path string, now time.Time) (Token, error) {
	content, err := readLimited(path)
	if err != nil {
		return Token{}, missingError(path, err)
	}
	return parseToken(path, content, now)
}

// ParseToken decodes a web identity token held in memory (the
// serviceAccountToken of a kubelet credential provider request), with the
// same checks as ReadToken: an empty, malformed or expired token is an error
// (a *TokenError without Path), and none of them holds the token.
func ParseToken(raw string, now time.Time) (Token, error) {
	return parse(memOrigin{}, []byte(raw), now)
}

// origin words the errors about a token for where it came from.
type origin interface {
	path() string
	malformed(why string) string
	empty(what string) string
	expired(exp string, c Claims) string
}

type fileOrigin string

func (f fileOrigin) path() string { return string(f) }
func (f fileOrigin) malformed(why string) string {
	return fmt.Sprintf("web identity token file %s is malformed: %s; it must hold exactly one compact JWT as written by the kubelet's projected volume (check that nothing else writes to the file)", f, why)
}
func (f fileOrigin) empty(what string) string {
	return fmt.Sprintf("web identity token file %s %s (a write may be in progress); it will be re-read shortly", f, what)
}
func (f fileOrigin) expired(exp string, c Claims) string {
	return fmt.Sprintf("web identity token expired at %s; waiting for kubelet rotation (file %s, %s); if this persists, check that the kubelet can reach the API server", exp, f, c)
}

type memOrigin struct{}

func (memOrigin) path() string { return "" }
func (memOrigin) malformed(why string) string {
	return fmt.Sprintf("service account token is malformed: %s; it must be one compact JWT as issued by the API server", why)
}
func (memOrigin) empty(what string) string {
	return fmt.Sprintf("service account token %s; the kubelet sends one when the credential provider is configured with tokenAttributes", what)
}
func (memOrigin) expired(exp string, c Claims) string {
	return fmt.Sprintf("service account token expired at %s (%s); the kubelet should send a fresh token; check the node's clock", exp, c)
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxTokenSize+1))
}

func missingError(path string, err error) *TokenError {
	var what string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		what = "does not exist"
	case errors.Is(err, fs.ErrPermission):
		what = "is not readable (permission denied)"
	default:
		what = "cannot be read"
		var pe *fs.PathError
		if errors.As(err, &pe) {
			what += ": " + pe.Err.Error()
		}
	}
	return &TokenError{
		Kind: ErrTokenMissing, Path: path, Err: err,
		Detail: fmt.Sprintf("web identity token file %s %s; mount the projected service-account token volume at this path (identity.tokenFile) and make it readable by the daemon", path, what),
	}
}

func malformed(o origin, why string) *TokenError {
	return &TokenError{Kind: ErrTokenMalformed, Path: o.path(), Detail: o.malformed(why)}
}

func parseToken(path string, content []byte, now time.Time) (Token, error) {
	return parse(fileOrigin(path), content, now)
}

func parse(o origin, content []byte, now time.Time) (Token, error) {
	path := o.path()
	if len(content) > maxTokenSize {
		return Token{}, malformed(o, fmt.Sprintf("larger than %d bytes", maxTokenSize))
	}
	trimmed := bytes.TrimSpace(content)
	if len(trimmed) == 0 {
		what := "is empty"
		if len(content) > 0 {
			what = "holds only whitespace"
		}
		return Token{}, &TokenError{Kind: ErrTokenEmpty, Path: path, Detail: o.empty(what)}
	}
	if i := bytes.IndexFunc(trimmed, isSpace); i >= 0 {
		return Token{}, malformed(o, fmt.Sprintf("%d bytes of trailing data after the JWT", len(trimmed)-i))
	}
	parts := strings.Split(string(trimmed), ".")
	if len(parts) != 3 {
		return Token{}, malformed(o, fmt.Sprintf("%d dot-separated parts, a JWT has 3", len(parts)))
	}
	names := [3]string{"header", "payload", "signature"}
	var decoded [3][]byte
	for i, p := range parts {
		if p == "" {
			return Token{}, malformed(o, "empty JWT "+names[i])
		}
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(p, "="))
		if err != nil {
			return Token{}, malformed(o, "JWT "+names[i]+" is not base64url")
		}
		decoded[i] = b
	}
	var header map[string]any
	if err := json.Unmarshal(decoded[0], &header); err != nil {
		return Token{}, malformed(o, "JWT header is not a JSON object")
	}
	var rc jwt.RegisteredClaims
	if err := json.Unmarshal(decoded[1], &rc); err != nil {
		return Token{}, malformed(o, "JWT payload is not a JSON object with standard claims")
	}
	claims := Claims{Issuer: rc.Issuer, Audience: []string(rc.Audience), Subject: rc.Subject}
	if rc.ExpiresAt != nil {
		claims.ExpiresAt = rc.ExpiresAt.Time
	}
	if rc.IssuedAt != nil {
		claims.IssuedAt = rc.IssuedAt.Time
	}
	if !claims.ExpiresAt.IsZero() && !now.Before(claims.ExpiresAt) {
		return Token{}, &TokenError{
			Kind: ErrTokenExpired, Path: path, Claims: claims,
			Detail: o.expired(claims.ExpiresAt.UTC().Format(time.RFC3339), claims),
		}
	}
	return Token{raw: string(trimmed), Path: path, Claims: claims}, nil
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return false
}
