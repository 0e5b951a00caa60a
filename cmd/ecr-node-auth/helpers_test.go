package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// stubDaemon is an api.Provider with fixed answers, served by the real
// daemon/api server on a temporary socket.
type stubDaemon struct {
	st api.Status
	// creds are the node's credentials by registry host; hosts not in it
	// get not_ecr, like a host the daemon does not serve (ECR Public:
	// no_credentials, like the daemon without a public token).
	creds map[string]api.Credentials
	// roles are the workload credentials by role ARN.
	roles map[string]api.Credentials
	// err, if set, answers every credentials request.
	err error
	// hang makes credentials requests wait for the client to give up.
	hang bool

	calls    atomic.Int64
	mu       sync.Mutex
	workload []api.WorkloadRequest
}

func (d *stubDaemon) Status() api.Status { return d.st }
func (d *stubDaemon) Health() api.Health { return api.Health{Status: "ok"} }

func (d *stubDaemon) Credentials(ctx context.Context, image string) (api.Credentials, error) {
	d.calls.Add(1)
	if d.hang {
		<-ctx.Done()
		return api.Credentials{}, ctx.Err()
	}
	if d.err != nil {
		return api.Credentials{}, d.err
	}
	h, err := ecrhost.Parse(image)
	if err != nil {
		return api.Credentials{}, api.Errorf(api.CodeNotECR, "%q is not an Amazon ECR registry", image)
	}
	c, ok := d.creds[h.Name]
	if !ok && h.Public {
		// What the daemon answers for ECR Public without a token.
		return api.Credentials{}, api.Errorf(api.CodeNoCredentials, "no ECR Public token for %s (pull anonymously)", h.Name)
	}
	if !ok {
		return api.Credentials{}, api.Errorf(api.CodeNotECR, "registry %s is not served by this daemon", h.Name)
	}
	c.Registry = h.Name
	return c, nil
}

func (d *stubDaemon) WorkloadCredentials(ctx context.Context, req api.WorkloadRequest) (api.Credentials, error) {
	d.mu.Lock()
	d.workload = append(d.workload, req)
	d.mu.Unlock()
	role := workloadRole(req.ServiceAccountAnnotations)
	if role == "" {
		return d.Credentials(ctx, req.Image)
	}
	d.calls.Add(1)
	c, ok := d.roles[role]
	if !ok {
		return api.Credentials{}, api.Errorf(api.CodeNotReady, "role %s: access denied", role)
	}
	return c, nil
}

func (d *stubDaemon) Registries() []string {
	out := make([]string, 0, len(d.creds))
	for h := range d.creds {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

func (d *stubDaemon) workloadRequests() []api.WorkloadRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.workload)
}

// serve starts the real socket server for d and returns the socket path.
func serve(t testing.TB, d *stubDaemon) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "auth.sock")
	srv, err := api.Listen(sock, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return sock
}

func shortDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "cli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Registry hosts of the tests.
const (
	hostEast = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	hostWest = "111122223333.dkr.ecr.us-west-2.amazonaws.com"
	roleTeam = "arn:aws:iam::111122223333:role/team-a-pull"
	roleNode = "arn:aws:iam::111122223333:role/node-pull"
)

// newStub returns a daemon serving hostEast and hostWest (node identity,
// 12 h tokens fetched 46 min ago) and roleTeam (workload).
func newStub(now time.Time) *stubDaemon {
	node := func(pw string) api.Credentials {
		return api.Credentials{Username: "AWS", Password: pw, ExpiresAt: now.Add(11*time.Hour + 14*time.Minute),
			FetchedAt: now.Add(-46 * time.Minute), Source: api.SourceConfigured}
	}
	return &stubDaemon{
		creds: map[string]api.Credentials{hostEast: node("node-secret-east"), hostWest: node("node-secret-west")},
		roles: map[string]api.Credentials{roleTeam: {Registry: hostEast, Username: "AWS", Password: "team-a-secret",
			ExpiresAt: now.Add(time.Hour), FetchedAt: now, Source: api.SourceWorkload}},
	}
}

// awsEnv starts a fake AWS and points the SDK's default loader at it, with
// every other source of AWS settings (env, profile files, IMDS) cleared.
func awsEnv(t *testing.T) *fakeaws.Fake {
	t.Helper()
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	f.UseOnly(t)
	t.Setenv(api.EnvSocket, "")
	return f
}

// clearAWSEnv is fakeaws.ClearAWSEnv with the daemon socket variable cleared too.
func clearAWSEnv(t *testing.T) {
	t.Helper()
	fakeaws.ClearAWSEnv(t)
	t.Setenv(api.EnvSocket, "")
}

// nodeConfig writes a config with a web identity (roleNode, a token minted
// by f) whose socket is absent, and returns its path and the socket path.
func nodeConfig(t *testing.T, f *fakeaws.Fake, extra string) (cfg, sock string) {
	t.Helper()
	dir := shortDir(t)
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(f.MintToken(fakeaws.TokenSpec{})), 0o600); err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "absent.sock")
	cfg = filepath.Join(dir, "config.yaml")
	body := "awsECR:\n  roleArn: " + roleNode + "\n  region: us-west-2\nidentity:\n  tokenFile: " + tok + "\nsocket: " + sock + "\n" + extra
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, sock
}

// request is a CredentialProviderRequest.
func request(apiVersion, image string) string {
	return `{"apiVersion":"` + apiVersion + `","kind":"CredentialProviderRequest","image":"` + image + `"}`
}

func workloadRequest(image, token, annotations string) string {
	return `{"apiVersion":"` + kubeletplugin.APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + image +
		`","serviceAccountToken":"` + token + `","serviceAccountAnnotations":` + annotations + `}`
}

// noSecrets fails if any secret appears in text.
func noSecrets(t testing.TB, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret (%.12s…):\n%s", what, s, text)
		}
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// binary builds the command once per test process.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ecr-node-auth-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "ecr-node-auth")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}
