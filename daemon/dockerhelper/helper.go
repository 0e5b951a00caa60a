// Package dockerhelper implements the docker credential helper protocol
// (the one of github.com/docker/docker-credential-helpers, which docker,
// podman, buildah, skopeo, containerd's ctr and go-containerregistry speak)
// for Amazon ECR registries, answered by a Lookup: the daemon's socket or a
// direct fetch.
//
// The client runs `docker-credential-<name> VERB` with the input on stdin:
//
//	get    stdin: a server URL in any form (host, host:443, https://host,
//	       https://host/v2/). Stdout: {"ServerURL":…,"Username":"AWS","Secret":…}.
//	       For a host that is not ECR, or one the daemon cannot serve: exit 1
//	       with exactly "credentials not found in native keychain" on stdout
//	       (clients trim the newline) and nothing on stderr; the client then
//	       pulls anonymously or tries its next source.
//	list   stdout: a JSON object of the ECR registries the daemon knows,
//	       server URL → username.
//	store  Deliberately accepted and ignored: exit 0, stdin read and thrown
//	       away unparsed but for its ServerURL. ECR credentials come from
//	       the daemon, so there is nothing to keep, and `docker login` to an
//	       ECR registry (which CI scripts run out of habit) must not fail. A
//	       store for a registry that is not ECR fails instead (exit 1, message
//	       on stdout): the helper is configured as the global credsStore by
//	       mistake and would otherwise silently drop that login.
//	erase  Accepted and ignored: exit 0 (`docker logout` must not fail).
//
// Errors other than "not found" go to stdout, as the protocol wants (docker
// quotes them in its own error); a usage error (unknown verb) goes to stderr.
// No secret is ever written anywhere but get's stdout.
package dockerhelper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin/lookup"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// Credential, Lookup and ErrNotFound are the shared client contract (see
// package lookup).
type (
	Credential = lookup.Credential
	Lookup     = lookup.Func
)

// ErrNotFound is lookup.ErrNotFound.
var ErrNotFound = lookup.ErrNotFound

// List returns the registry hosts the daemon currently serves.
type List func(ctx context.Context) ([]string, error)

// Protocol messages, as github.com/docker/docker-credential-helpers spells
// them; clients compare them after trimming space.
const (
	NotFoundMessage         = "credentials not found in native keychain"
	MissingServerURLMessage = "no credentials server URL"
)

// Username is ECR's registry user name, used when a credential has none.
const Username = "AWS"

// DefaultTimeout bounds one run of Run: docker sets no timeout on helpers and
// a hung helper hangs the pull.
const DefaultTimeout = 10 * time.Second

// Usage is printed on stderr for an unknown verb.
const Usage = `usage: docker-credential-ecr-node-auth get|list|store|erase
   or: ecr-node-auth credential-helper [--config PATH] [--socket PATH] get|list|store|erase
A docker credential helper for Amazon ECR. get asks the ecr-node-auth daemon; when no
daemon answers, it fetches the token directly from AWS with the config's identity. The
socket is --socket, else $ECR_NODE_AUTH_SOCKET, else the config's socket, else
/run/ecr-node-auth/auth.sock. Nothing is stored: store for an ECR host and erase are
accepted and ignored (exit 0); store for another registry exits 1, as the helper is
then set as "credsStore" by mistake. Configure it per ECR registry in ~/.docker/config.json:
  {"credHelpers": {"111122223333.dkr.ecr.us-east-1.amazonaws.com": "ecr-node-auth"}}
`

// Input limits: a server URL is short; a store payload holds a token of a few KiB.
const (
	maxServerURL = 4096
	maxStore     = 1 << 20
)

// Run runs one verb with the process's stderr and a DefaultTimeout budget and
// returns the exit code.
func Run(verb string, stdin io.Reader, stdout io.Writer, lookup Lookup, list List) int {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return RunContext(ctx, verb, stdin, stdout, os.Stderr, lookup, list)
}

// RunContext is Run with the caller's context and stderr.
func RunContext(ctx context.Context, verb string, stdin io.Reader, stdout, stderr io.Writer, lookup Lookup, list List) int {
	h := helper{stdin: stdin, stdout: stdout, lookup: lookup, list: list, now: time.Now}
	switch verb {
	case "get":
		return h.get(ctx)
	case "list":
		return h.listVerb(ctx)
	case "store":
		return h.store()
	case "erase":
		return h.erase()
	}
	switch {
	case verb == "":
		fmt.Fprint(stderr, "missing verb\n"+Usage)
	case plainWord(verb):
		fmt.Fprintf(stderr, "unknown verb %q\n%s", verb, Usage)
	default:
		// Whatever was passed is not echoed: it could be a pasted secret.
		fmt.Fprint(stderr, "unknown verb\n"+Usage)
	}
	return 1
}

// plainWord reports whether s looks like a mistyped verb (safe to echo).
func plainWord(s string) bool {
	if len(s) > 16 {
		return false
	}
	return strings.Trim(strings.ToLower(s), "abcdefghijklmnopqrstuvwxyz-") == ""
}

type helper struct {
	stdin  io.Reader
	stdout io.Writer
	lookup Lookup
	list   List
	now    func() time.Time
}

// fail writes a protocol error message on stdout and returns exit code 1.
func (h helper) fail(msg string) int {
	fmt.Fprintln(h.stdout, msg)
	return 1
}

func (h helper) get(ctx context.Context) int {
	data, err := io.ReadAll(io.LimitReader(h.stdin, maxServerURL+1))
	if err != nil {
		return h.fail("reading the server URL from stdin: " + err.Error())
	}
	serverURL := string(bytes.TrimSpace(data))
	if serverURL == "" {
		return h.fail(MissingServerURLMessage)
	}
	if len(data) > maxServerURL {
		return h.fail(NotFoundMessage)
	}
	host, err := ecrhost.Parse(serverURL)
	if err != nil {
		return h.fail(NotFoundMessage) // not ECR: quietly, so the client moves on
	}
	if h.lookup == nil {
		return h.fail(NotFoundMessage)
	}
	cred, err := h.lookup(ctx, host)
	switch {
	case errors.Is(err, ErrNotFound):
		return h.fail(NotFoundMessage)
	case err != nil:
		return h.fail(fmt.Sprintf("ecr-node-auth: credentials for %s: %v", host.Name, err))
	case cred.Password == "":
		return h.fail(fmt.Sprintf("ecr-node-auth: credentials for %s: the answer has an empty password", host.Name))
	case !cred.ExpiresAt.IsZero() && !h.now().Before(cred.ExpiresAt):
		return h.fail(fmt.Sprintf("ecr-node-auth: the credential for %s expired at %s: the daemon holds no valid token; run `ecr-node-auth status`",
			host.Name, cred.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	user := cred.Username
	if user == "" {
		user = Username
	}
	out, err := json.Marshal(struct {
		ServerURL string
		Username  string
		Secret    string
	}{serverURL, user, cred.Password})
	if err != nil {
		return h.fail("ecr-node-auth: encoding the answer failed") // never quote the value
	}
	if _, err := h.stdout.Write(append(out, '\n')); err != nil {
		return 1
	}
	return 0
}

func (h helper) listVerb(ctx context.Context) int {
	var hosts []string
	if h.list != nil {
		var err error
		if hosts, err = h.list(ctx); err != nil {
			return h.fail("ecr-node-auth: listing registries: " + err.Error())
		}
	}
	known := map[string]string{}
	for _, s := range hosts {
		if host, err := ecrhost.Parse(s); err == nil {
			known[host.Name] = Username
		}
	}
	out, _ := json.Marshal(known) // encoding/json sorts the keys
	if _, err := h.stdout.Write(append(out, '\n')); err != nil {
		return 1
	}
	return 0
}

// store accepts and ignores a login for an ECR registry. The payload holds
// the user's secret: it is decoded only for its ServerURL, never echoed.
func (h helper) store() int {
	data, _ := io.ReadAll(io.LimitReader(h.stdin, maxStore))
	_, _ = io.Copy(io.Discard, h.stdin) // drain the rest so the client's write never breaks
	var payload struct{ ServerURL string }
	if json.Unmarshal(data, &payload) != nil || strings.TrimSpace(payload.ServerURL) == "" {
		return 0 // not ours to judge: accept and ignore
	}
	if _, err := ecrhost.Parse(strings.TrimSpace(payload.ServerURL)); err != nil {
		return h.fail("ecr-node-auth keeps no credentials and serves only Amazon ECR registries; " +
			"to log in to other registries, configure this helper under \"credHelpers\" for ECR hosts, not as \"credsStore\"")
	}
	return 0
}

// erase accepts and ignores a logout: there is nothing stored to erase.
func (h helper) erase() int {
	_, _ = io.Copy(io.Discard, io.LimitReader(h.stdin, maxStore))
	return 0
}
