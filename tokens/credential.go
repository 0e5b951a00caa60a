package tokens

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
	"go.uber.org/zap/zapcore"
)

// redacted stands in for a secret wherever a Credential is printed, logged or
// marshalled.
const redacted = "REDACTED"

// Credential is a registry login obtained from ECR. Password is the secret:
// every way of printing a Credential (fmt verbs, String, GoString, JSON, slog,
// zap) redacts it. Read Password only to hand it to the registry client.
//
// A *Credential held in an Entry is shared and must be treated as read-only.
type Credential struct {
	Username  string
	Password  string
	ExpiresAt time.Time
	FetchedAt time.Time
}

// AuthorizationHeader returns the value of the HTTP Authorization header for
// the registry: "Basic " + base64(user:password). It is a secret.
func (c Credential) AuthorizationHeader() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password))
}

// Lifetime is the span between fetching and expiry.
func (c Credential) Lifetime() time.Duration { return c.ExpiresAt.Sub(c.FetchedAt) }

// ValidUntil is when the credential stops counting as valid: ExpiresAt minus
// refresh.Margin(lifetime), so a cache never serves a token into its last
// stretch (field case 9). Clients that cache an answer should cache it until
// ValidUntil at most.
func (c Credential) ValidUntil() time.Time {
	return c.ExpiresAt.Add(-refresh.Margin(c.Lifetime()))
}

// Valid reports whether c is present, non-empty and before ValidUntil at now.
// It is safe on a nil *Credential.
func (c *Credential) Valid(now time.Time) bool {
	return c != nil && c.Password != "" && now.Before(c.ValidUntil())
}

// Usable reports whether c has not yet expired at now (it may already be past
// ValidUntil). It is safe on a nil *Credential.
func (c *Credential) Usable(now time.Time) bool {
	return c != nil && c.Password != "" && now.Before(c.ExpiresAt)
}

func (c Credential) redactedString() string {
	pw := ""
	if c.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("Credential{Username:%q Password:%q ExpiresAt:%s FetchedAt:%s}",
		c.Username, pw, c.ExpiresAt.Format(time.RFC3339), c.FetchedAt.Format(time.RFC3339))
}

// String redacts the password.
func (c Credential) String() string { return c.redactedString() }

// GoString redacts the password (the %#v verb).
func (c Credential) GoString() string { return "tokens." + c.redactedString() }

// Format makes every fmt verb (%v, %+v, %#v, %s, %d, %x, ...) print the
// redacted form, never the fields themselves.
func (c Credential) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(c.GoString()))
		return
	}
	_, _ = f.Write([]byte(c.redactedString()))
}

type credentialJSON struct {
	Username  string    `json:"username"`
	Password  string    `json:"password,omitempty"`
	ExpiresAt time.Time `json:"expiresAt"`
	FetchedAt time.Time `json:"fetchedAt"`
}

// MarshalJSON writes the credential with its password redacted. Code that
// must send the password (the socket server) builds its own answer from the
// fields.
func (c Credential) MarshalJSON() ([]byte, error) {
	out := credentialJSON{Username: c.Username, ExpiresAt: c.ExpiresAt, FetchedAt: c.FetchedAt}
	if c.Password != "" {
		out.Password = redacted
	}
	return json.Marshal(out)
}

// MarshalText redacts the password too (used by encoders that prefer text).
func (c Credential) MarshalText() ([]byte, error) { return []byte(c.redactedString()), nil }

// LogValue implements slog.LogValuer without the password.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("username", c.Username),
		slog.Time("expires_at", c.ExpiresAt),
		slog.Time("fetched_at", c.FetchedAt),
	)
}

// MarshalLogObject implements zapcore.ObjectMarshaler without the password.
func (c Credential) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("username", c.Username)
	enc.AddTime("expires_at", c.ExpiresAt)
	enc.AddTime("fetched_at", c.FetchedAt)
	return nil
}

// errMalformedToken never carries the token it refers to.
var errMalformedToken = errors.New("ECR returned a malformed authorization token")

// decodeAuthorizationToken splits ECR's base64 "user:password" token. Errors
// never echo any part of the token.
func decodeAuthorizationToken(token string) (user, password string, err error) {
	if token == "" {
		return "", "", errMalformedToken
	}
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return "", "", errMalformedToken
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || password == "" {
		return "", "", errMalformedToken
	}
	return user, password, nil
}
