package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Field case 13: the node is in ap-northeast-1, publicECR is on.
const (
	publicHost    = "public.ecr.aws"
	publicImage   = publicHost + "/nginx/nginx:1.27"
	nodeRegion    = "ap-northeast-1"
	publicWarnMsg = "ECR Public token fetch failed; pulls from ECR Public stay anonymous (lower rate limit) until it works"
)

func (w *world) newPublicDaemon() (*harness.Daemon, *harness.TokenDir) {
	w.t.Helper()
	return w.newDaemonWith(w.fake.MintToken(fakeaws.TokenSpec{}),
		func(c *harness.DaemonConfig) { c.PublicECR = true },
		map[string]string{"AWS_REGION": nodeRegion})
}

// publicHosts parses certs.d/public.ecr.aws/hosts.toml with containerd's loader and
// returns the ECR Public password it carries, checking what the daemon promises.
func (w *world) publicHosts() (string, error) {
	p, err := harness.ParseHostsDir(w.certsDir, publicHost)
	if err != nil {
		return "", err
	}
	switch {
	case !strings.HasPrefix(string(p.Raw), harness.ManagedMarker):
		return "", fmt.Errorf("%s: no marker line:\n%s", p.Path, p.Raw)
	case p.Mode != 0o600:
		return "", fmt.Errorf("%s: mode %o, want 600", p.Path, p.Mode)
	case p.Endpoint != "https://"+publicHost:
		return "", fmt.Errorf("%s: containerd would connect to %q, want https://%s", p.Path, p.Endpoint, publicHost)
	case !strings.Contains(string(p.Raw), `server = "https://`+publicHost+`"`):
		return "", fmt.Errorf("%s: server is not https://%s:\n%s", p.Path, publicHost, p.Raw)
	case p.User != "AWS":
		return "", fmt.Errorf("%s: Basic user %q, want AWS", p.Path, p.User)
	}
	tok, ok := w.fake.LookupECRToken(p.Password)
	if !ok || !tok.Public || tok.Region != "us-east-1" {
		return "", fmt.Errorf("%s: the header does not hold an ECR Public token the fake issued in us-east-1 (found %v: %+v)", p.Path, ok, tok.Region)
	}
	return p.Password, nil
}

// helper runs the binary as a client (docker helper or kubelet plugin) against d.
func helper(t *testing.T, d *harness.Daemon, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Bin, args...)
	cmd.Env = append(append([]string{}, d.Env...), "ECR_NODE_AUTH_SOCKET="+d.Socket)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	// stdout carries the credential by design; stderr must never.
	harness.RecordArtifact(t.Name()+"/"+args[0]+"-stderr", errOut.Bytes())
	return out.String(), errOut.String(), err
}

func publicStatus(t *testing.T, d *harness.Daemon) (*daemonStatus, int, []byte) {
	t.Helper()
	st, out, err := status(d)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for i, r := range st.Registries {
		if r.Host == publicHost {
			return st, i, out
		}
	}
	return st, -1, out
}

// TestPublicECR: the ECR Public token is fetched in us-east-1 although the node is in
// ap-northeast-1, written to certs.d/public.ecr.aws/hosts.toml (containerd's loader reads
// it), served on the socket to the docker helper and the kubelet plugin, and refreshed
// before it expires.
func TestPublicECR(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{ECRTokenLifetime: 20 * time.Second})
		d, _ := w.newPublicDaemon()
		d.Start()
		w.waitHosts(30*time.Second, nil)
		var pw string
		var lastErr error
		if !harness.WaitFor(30*time.Second, 100*time.Millisecond, func() bool {
			pw, lastErr = w.publicHosts()
			return lastErr == nil
		}) {
			t.Fatalf("no acceptable %s hosts.toml: %v", publicHost, lastErr)
		}
		for _, rec := range w.fake.CallLog() {
			if rec.Action == fakeaws.ActionPublicGetAuthorizationToken && rec.Region != "us-east-1" {
				t.Errorf("ecr-public called in %q, want us-east-1 (node region %s)", rec.Region, nodeRegion)
			}
		}
		w.mustPull("private registry with publicECR on")

		// The docker credential helper and the kubelet plugin answer for it.
		out, stderr, err := helper(t, d, publicHost, "credential-helper", "get")
		var dc struct{ ServerURL, Username, Secret string }
		if err != nil || json.Unmarshal([]byte(out), &dc) != nil || dc.Username != "AWS" {
			t.Fatalf("docker helper get %s: %v %s", publicHost, err, stderr)
		}
		if tok, ok := w.fake.LookupECRToken(dc.Secret); !ok || !tok.Public {
			t.Errorf("docker helper's secret is not an ECR Public token the fake issued")
		}
		req := `{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"` + publicImage + `"}`
		out, stderr, err = helper(t, d, req, "kubelet-plugin", "--socket", d.Socket)
		var kr struct {
			Auth map[string]struct{ Username, Password string } `json:"auth"`
		}
		if err != nil || json.Unmarshal([]byte(out), &kr) != nil {
			t.Fatalf("kubelet-plugin for %s: %v %s", publicImage, err, stderr)
		}
		if a, ok := kr.Auth[publicHost]; !ok || a.Username != "AWS" {
			t.Errorf("kubelet-plugin response %s has no auth for %s", out, publicHost)
		} else if tok, ok := w.fake.LookupECRToken(a.Password); !ok || !tok.Public {
			t.Errorf("kubelet-plugin password is not an ECR Public token the fake issued")
		}

		// Cached against its own expiry: one call until the refresh, which comes
		// before the 20 s token expires.
		first, _ := w.fake.LookupECRToken(pw)
		if n := w.fake.Successes(fakeaws.ActionPublicGetAuthorizationToken); n != 1 {
			t.Errorf("%d ecr-public calls before the refresh, want 1", n)
		}
		var next string
		if !harness.WaitFor(30*time.Second, 100*time.Millisecond, func() bool {
			next, lastErr = w.publicHosts()
			return lastErr == nil && next != pw
		}) {
			t.Fatalf("the public token was not refreshed: %v", lastErr)
		}
		if time.Now().After(first.Expires) {
			t.Errorf("refreshed after the old token expired (%s)", first.Expires)
		}
		st, i, raw := publicStatus(t, d)
		if !st.Ready || i < 0 || !st.Registries[i].Valid || st.Registries[i].LastError != "" {
			t.Errorf("status:\n%s", raw)
		}
		noSecrets(t, w, d.Log(), string(raw))
	})
}

// noSecrets fails if a secret the fake issued (an ECR Public password among them) is in
// any of texts (logs, status): the public token is a secret like the others.
func noSecrets(t *testing.T, w *world, texts ...string) {
	t.Helper()
	for _, s := range w.fake.Secrets() {
		for _, text := range texts {
			if len(s) >= 16 && strings.Contains(text, s) {
				t.Errorf("a secret the fake issued (%s) is in the daemon's output", redact(s))
			}
		}
	}
}

// TestPublicECRFailing: with ecr-public answering AccessDenied, no public.ecr.aws
// hosts.toml exists (a stale one of the daemon's is removed), the daemon is ready and
// pulls from the private registry work, clients get "no credentials" (anonymous
// pulls), status says why, and the log has the warning exactly once over several
// retries.
func TestPublicECRFailing(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{})
		act := fakeaws.ActionPublicGetAuthorizationToken
		w.fake.InjectErrorAlways(act, fakeaws.APIError{Code: "AccessDeniedException",
			Message: "User: arn:aws:sts::111122223333:assumed-role/ecr-node-auth/node is not authorized to perform: ecr-public:GetAuthorizationToken"})
		// A file of the daemon's from an earlier run, its token long dead.
		if err := harness.WriteHostsFile(w.certsDir, publicHost, harness.HostsFile{
			Endpoint: "https://" + publicHost, Password: "stale-public-token", Managed: true}); err != nil {
			t.Fatal(err)
		}
		d, td := w.newPublicDaemon()
		d.Start()
		w.waitHosts(30*time.Second, nil)
		path := harness.HostsPath(w.certsDir, publicHost)
		if !harness.WaitFor(20*time.Second, 100*time.Millisecond, func() bool {
			_, err := os.Stat(path)
			return w.fake.Calls(act) >= 1 && os.IsNotExist(err)
		}) {
			t.Fatalf("the stale %s is still there after %d ecr-public calls", path, w.fake.Calls(act))
		}

		// Several retries: a token rotation brings failed fetches forward (no sooner
		// than 10 s after the last attempt), as it would after an operator's fix.
		const retries = 3
		for i := range retries {
			n := w.fake.Calls(act)
			time.Sleep(10500 * time.Millisecond)
			if err := td.Rotate(w.fake.MintToken(fakeaws.TokenSpec{})); err != nil {
				t.Fatal(err)
			}
			if !harness.WaitFor(15*time.Second, 100*time.Millisecond, func() bool { return w.fake.Calls(act) > n }) {
				t.Fatalf("retry %d: no ecr-public call after the token rotation", i+1)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("retry %d: %s exists (%v)", i+1, path, err)
			}
		}
		calls := w.fake.Calls(act)
		if calls < retries+1 || w.fake.Successes(act) != 0 {
			t.Errorf("%d ecr-public calls (%d ok), want at least %d failed", calls, w.fake.Successes(act), retries+1)
		}

		st, i, raw := publicStatus(t, d)
		if !st.Ready || i < 0 || st.Registries[i].Valid || !strings.Contains(st.Registries[i].LastError, "AccessDeniedException") ||
			!strings.Contains(st.State, "pulls from public.ecr.aws are anonymous") {
			t.Errorf("status while ecr-public fails:\n%s", raw)
		}
		w.mustPull("private registry while ecr-public fails")

		// Clients get "no credentials", so docker and the kubelet pull anonymously.
		out, _, _ := helper(t, d, publicHost, "credential-helper", "get")
		if !strings.Contains(out, "credentials not found in native keychain") {
			t.Errorf("docker helper while ecr-public fails: %q, want not found", out)
		}

		// The warning, exactly once.
		warns, repeats := 0, 0
		sc := bufio.NewScanner(strings.NewReader(d.Log()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct{ Level, Msg string }
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != publicWarnMsg {
				continue
			}
			switch l.Level {
			case "warn":
				warns++
			case "debug":
				repeats++
			default:
				t.Errorf("failure logged at %s: %s", l.Level, sc.Text())
			}
		}
		if warns != 1 || repeats < retries {
			t.Errorf("%d warnings and %d debug repeats over %d ecr-public calls, want 1 warning and >= %d repeats", warns, repeats, calls, retries)
		}
		noSecrets(t, w, d.Log(), string(raw))
		if !d.Alive() {
			t.Fatalf("daemon exited: %v", d.ExitErr())
		}
	})
}
