// Package lookup is the contract between the node's credential clients (the
// kubelet exec plugin and the docker credential helper) and whatever answers
// them: the daemon's Unix socket, or a direct fetch when the socket is down.
//
// It is deliberately tiny and free of Kubernetes and AWS SDK imports so that
// both clients, which are short-lived processes, stay cheap to start.
package lookup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// ErrNotFound is returned (possibly wrapped) by a Func for a registry the
// answering side cannot serve: an ECR host outside the daemon's reach, ECR
// Public when it is turned off, or a host that is not ECR at all. Clients map
// it to their protocol's "no credentials" answer; any other error is a
// failure worth reporting.
var ErrNotFound = errors.New("no credentials for this registry")

// Credential is a registry login: for ECR, Username is "AWS" and Password is
// the token. Password is a secret: the fmt verbs and slog print it redacted.
type Credential struct {
	Username  string
	Password  string
	ExpiresAt time.Time
	// FetchedAt is when the token was issued, if the answering side knows it
	// (the daemon does). With it, clients can apply the refresh margin of the
	// token's real lifetime; without it (zero), the time left stands in for
	// the lifetime.
	FetchedAt time.Time
}

// Func returns the credential for an ECR registry. It returns an error
// wrapping ErrNotFound when the registry cannot be served. Errors must never
// contain a secret.
type Func func(ctx context.Context, host ecrhost.Host) (Credential, error)

const redacted = "REDACTED"

// String describes c without its password.
func (c Credential) String() string {
	pw := ""
	if c.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("{Username:%s Password:%s ExpiresAt:%s FetchedAt:%s}",
		c.Username, pw, c.ExpiresAt.Format(time.RFC3339), c.FetchedAt.Format(time.RFC3339))
}

// GoString is String, so %#v redacts too.
func (c Credential) GoString() string { return "lookup.Credential" + c.String() }

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, ...) print the redacted form.
func (c Credential) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = fmt.Fprint(f, c.GoString())
		return
	}
	_, _ = fmt.Fprint(f, c.String())
}

// LogValue keeps the password out of slog records.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("username", c.Username),
		slog.Bool("hasPassword", c.Password != ""),
		slog.Time("expiresAt", c.ExpiresAt),
	)
}
