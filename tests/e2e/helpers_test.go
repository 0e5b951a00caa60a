package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	region  = "us-east-1"
	ecrHost = fakeaws.DefaultAccountID + ".dkr.ecr." + region + ".amazonaws.com"
	repo    = "app"
	tag     = "v1"
	// imageRef is what a pod spec names: the ECR name, never resolved. containerd
	// reaches the fake registry only through hosts.toml (server = the endpoint).
	imageRef = ecrHost + "/" + repo + ":" + tag
)

var (
	moduleRoot  string
	containerds []harness.ContainerdBinary
	findErr     error // explicitly named containerd binaries that do not work
	daemonBin   string
	daemonErr   error // the daemon build's error

	fakesMu sync.Mutex
	fakes   []*fakeaws.Fake // every fake made in this run, for the post-run secret hygiene check
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	moduleRoot, err = harness.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	containerds, findErr = harness.FindContainerd(moduleRoot)
	if os.Geteuid() == 0 && len(containerds) > 0 {
		binDir, err := os.MkdirTemp("/tmp", "ena-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(binDir)
		start := time.Now()
		daemonBin, daemonErr = harness.BuildDaemon(moduleRoot, binDir)
		if daemonErr == nil {
			fmt.Fprintf(os.Stderr, "e2e: built %s in %v\n", daemonBin, time.Since(start).Round(time.Millisecond))
		}
	}
	code := m.Run()
	// After every test, in whatever order they ran: no secret in any artifact.
	if !postRunHygiene(os.Stderr) && code == 0 {
		code = 1
	}
	return code
}

// forEachContainerd runs fn as a parallel subtest per containerd binary, after the
// prerequisite checks (root, at least one containerd) that skip or, with
// ECR_NODE_AUTH_E2E_REQUIRED=1, fail.
func forEachContainerd(t *testing.T, fn func(t *testing.T, bin harness.ContainerdBinary)) {
	t.Helper()
	requirePrereqs(t)
	for _, bin := range containerds {
		t.Run(bin.Name(), func(t *testing.T) {
			t.Parallel()
			fn(t, bin)
		})
	}
}

// requirePrereqs skips (or fails, see harness.SkipOrFail) without root or containerd.
func requirePrereqs(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	if findErr != nil {
		t.Fatalf("%s: %v", harness.EnvContainerd, findErr)
	}
	if len(containerds) == 0 {
		harness.SkipOrFail(t, "e2e: no containerd found (looked for %s; set %s or `apt-get install containerd runc`, `make tools` for v2)",
			strings.Join(harness.DefaultContainerdPaths(moduleRoot), ", "), harness.EnvContainerd)
	}
}

// needDaemon fails the test when the daemon did not build.
func needDaemon(t *testing.T) {
	t.Helper()
	if daemonErr != nil {
		t.Fatalf("daemon build failed: %v", daemonErr)
	}
	if daemonBin == "" {
		t.Fatal("daemon not built")
	}
}

// world is one scenario's set of real parts: a fake AWS, its HTTPS registry holding
// imageRef, and a private containerd whose config_path is certsDir.
type world struct {
	t        *testing.T
	fake     *fakeaws.Fake
	reg      *fakeaws.Registry
	ctr      *harness.Containerd
	dir      string
	certsDir string
	daemon   *harness.Daemon // the last one newDaemon made
}

// newFakeAWS starts a fake AWS (its secrets checked by the post-run hygiene check)
// and a fake registry holding repo:tag, both closed at cleanup; digest is the
// image's manifest digest.
func newFakeAWS(t *testing.T, opts fakeaws.Options) (fake *fakeaws.Fake, reg *fakeaws.Registry, digest string) {
	t.Helper()
	fake, err := fakeaws.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	fakesMu.Lock()
	fakes = append(fakes, fake)
	fakesMu.Unlock()
	reg, err = fakeaws.NewRegistry(fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	digest, err = reg.PushRandomImage(repo, tag)
	if err != nil {
		t.Fatal(err)
	}
	return fake, reg, digest
}

func newWorld(t *testing.T, bin harness.ContainerdBinary, opts fakeaws.Options) *world {
	t.Helper()
	return newWorldWith(t, bin, opts, harness.ContainerdOptions{})
}

// newWorldWith is newWorld with containerd options.
func newWorldWith(t *testing.T, bin harness.ContainerdBinary, opts fakeaws.Options, copts harness.ContainerdOptions) *world {
	t.Helper()
	fake, reg, _ := newFakeAWS(t, opts)
	dir := harness.TempDir(t)
	certsDir := filepath.Join(dir, "certs.d")
	w := &world{t: t, fake: fake, reg: reg, dir: dir, certsDir: certsDir}
	w.ctr = harness.StartContainerdWith(t, bin, certsDir, copts)
	return w
}

// pull removes the image, pulls it through CRI with no credentials in the request, and
// returns the error.
func (w *world) pull() error { return w.ctr.FreshPull(imageRef) }

// mustPull fails the test when a fresh pull fails.
func (w *world) mustPull(what string) {
	w.t.Helper()
	start := time.Now()
	if err := w.pull(); err != nil {
		w.t.Fatalf("%s: pull %s failed (denied=%v): %v", what, imageRef, harness.IsDenied(err), err)
	}
	w.t.Logf("%s: pulled %s in %v", what, imageRef, time.Since(start).Round(time.Millisecond))
}

// mustBeDenied fails the test unless a fresh pull is refused by the registry.
func (w *world) mustBeDenied(what string) {
	w.t.Helper()
	err := w.pull()
	switch {
	case err == nil:
		w.t.Fatalf("%s: pull succeeded, want denied", what)
	case !harness.IsDenied(err):
		w.t.Fatalf("%s: pull failed, but not as denied: %v", what, err)
	}
	w.t.Logf("%s: denied as expected: %v", what, err)
}

// noMetrics turns the daemon's metrics server off.
var noMetrics = ""

// newDaemon prepares the daemon for this world: one registry (the ECR name, endpoint =
// the fake registry, ca = its CA), web identity from a ..data token dir holding token.
func (w *world) newDaemon(token string) (*harness.Daemon, *harness.TokenDir) {
	w.t.Helper()
	return w.newDaemonWith(token, nil, nil)
}

// newDaemonWith is newDaemon with the config and the environment changed by edit
// and env (either may be nil).
func (w *world) newDaemonWith(token string, edit func(*harness.DaemonConfig), extraEnv map[string]string) (*harness.Daemon, *harness.TokenDir) {
	w.t.Helper()
	needDaemon(w.t)
	ddir := filepath.Join(w.dir, "daemon")
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		w.t.Fatal(err)
	}
	td, err := harness.NewTokenDir(filepath.Join(ddir, "sa-token"), token)
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := w.daemonConfig(td.Path())
	if edit != nil {
		edit(&cfg)
	}
	env := w.fake.Env()
	env["AWS_REGION"] = region
	for k, v := range extraEnv {
		env[k] = v
	}
	w.daemon = harness.NewDaemon(w.t, daemonBin, ddir, cfg, env)
	return w.daemon, td
}

// daemonConfig is the config newDaemon runs the daemon with, reading tokenFile.
func (w *world) daemonConfig(tokenFile string) harness.DaemonConfig {
	return harness.DaemonConfig{
		RoleArn:          fakeaws.DefaultRoleARN,
		Region:           region,
		Registries:       []harness.Registry{{Host: ecrHost, Endpoint: w.reg.URL(), CA: w.reg.CAFile()}},
		TokenFile:        tokenFile,
		Audience:         fakeaws.DefaultAudience,
		CertsDir:         w.certsDir,
		ContainerdConfig: w.ctr.ConfigFile,
		Socket:           filepath.Join(w.dir, "daemon", "auth.sock"),
		// Daemons run in parallel: no fixed metrics port.
		MetricsAddress: &noMetrics,
	}
}

// hosts parses certs.d/<ecrHost> with containerd's loader and checks what the daemon
// promises: the marker line, server and host = the registry's endpoint, an Authorization
// header with AWS:<a token the fake issued>. It returns the ECR password.
func (w *world) hosts() (string, error) {
	p, err := harness.ParseHostsDir(w.certsDir, ecrHost)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(string(p.Raw), harness.ManagedMarker) {
		return "", fmt.Errorf("%s: does not start with the marker %q:\n%s", p.Path, harness.ManagedMarker, p.Raw)
	}
	if p.Endpoint != w.reg.URL() {
		return "", fmt.Errorf("%s: containerd would connect to %q, want the registry entry's endpoint %q", p.Path, p.Endpoint, w.reg.URL())
	}
	if p.Authorization == "" {
		return "", fmt.Errorf("%s: no Authorization header:\n%s", p.Path, p.Raw)
	}
	if p.User != "AWS" {
		return "", fmt.Errorf("%s: Basic user %q, want AWS", p.Path, p.User)
	}
	if _, ok := w.fake.LookupECRToken(p.Password); !ok {
		return "", fmt.Errorf("%s: the Authorization header holds a password the fake never issued", p.Path)
	}
	return p.Password, nil
}

// waitHosts waits until hosts() succeeds with a password accepted by pred (nil: any).
func (w *world) waitHosts(timeout time.Duration, pred func(pw string) bool) string {
	w.t.Helper()
	var pw string
	var lastErr error
	died := false
	ok := harness.WaitFor(timeout, 100*time.Millisecond, func() bool {
		pw, lastErr = w.hosts()
		if lastErr == nil && (pred == nil || pred(pw)) {
			return true
		}
		died = w.daemon != nil && w.daemon.PID() != 0 && !w.daemon.Alive()
		return died
	})
	if died {
		w.t.Fatalf("the daemon exited (%v) before writing an acceptable hosts.toml; last error: %v", w.daemon.ExitErr(), lastErr)
	}
	if !ok {
		w.t.Fatalf("no acceptable hosts.toml for %s within %v; last error: %v", ecrHost, timeout, lastErr)
	}
	return pw
}

// registryAccepts asks the fake registry directly whether a password is accepted now.
func (w *world) registryAccepts(pw string) (bool, error) {
	req, err := http.NewRequest(http.MethodGet, w.reg.URL()+"/v2/", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("AWS:"+pw)))
	client := w.reg.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// containerdSame fails the test if containerd died or was replaced.
func (w *world) containerdSame(pid int) {
	w.t.Helper()
	if !w.ctr.Alive() || w.ctr.PID() != pid {
		w.t.Fatalf("containerd (pid %d) did not run throughout", pid)
	}
}

// redact shows a secret's start only.
func redact(s string) string {
	if len(s) > 8 {
		return s[:8] + "…"
	}
	return "…"
}

// daemonStatus is the part of `status -o json` the scenarios check (daemon/api.Status).
type daemonStatus struct {
	Ready          bool   `json:"ready"`
	State          string `json:"state"`
	MetricsAddress string `json:"metricsAddress"`
	Identity       struct {
		Mode       string `json:"mode"`
		LastError  string `json:"lastError"`
		ErrorClass string `json:"errorClass"`
	} `json:"identity"`
	Registries []struct {
		Host       string    `json:"host"`
		Endpoint   string    `json:"endpoint"`
		Valid      bool      `json:"valid"`
		ExpiresAt  time.Time `json:"expiresAt"`
		LastError  string    `json:"lastError"`
		ErrorClass string    `json:"errorClass"`
		FileState  string    `json:"fileState"`
	} `json:"registries"`
}

// status runs `status -o json` and decodes it.
func status(d *harness.Daemon) (*daemonStatus, []byte, error) {
	out, err := d.Status()
	if err != nil {
		return nil, out, err
	}
	var st daemonStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, out, fmt.Errorf("status -o json: %v\n%s", err, out)
	}
	return &st, out, nil
}

// lastErrors joins every error the status reports.
func (st *daemonStatus) lastErrors() string {
	errs := []string{}
	if st.Identity.LastError != "" {
		errs = append(errs, st.Identity.ErrorClass+": "+st.Identity.LastError)
	}
	for _, r := range st.Registries {
		if r.LastError != "" {
			errs = append(errs, r.ErrorClass+": "+r.LastError)
		}
	}
	return strings.Join(errs, "; ")
}

// hostsWatcher polls certs.d/<ecrHost>/hosts.toml about every millisecond in the
// background and checks every read with world.hosts (containerd's loader, marker,
// endpoint, a header with a token the fake issued).
type hostsWatcher struct {
	stopOnce  sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
	reads     atomic.Int64
	bad       atomic.Int64
	firstBad  string
	firstOnce sync.Once
}

func watchHosts(w *world) *hostsWatcher {
	hw := &hostsWatcher{done: make(chan struct{})}
	path := harness.HostsPath(w.certsDir, ecrHost)
	hw.wg.Add(1)
	go func() {
		defer hw.wg.Done()
		for {
			select {
			case <-hw.done:
				return
			default:
			}
			if _, err := os.Stat(path); err == nil {
				hw.reads.Add(1)
				if _, err := w.hosts(); err != nil && !os.IsNotExist(err) {
					hw.bad.Add(1)
					hw.firstOnce.Do(func() { hw.firstBad = err.Error() })
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return hw
}

// stop ends the watcher (idempotent) and returns reads, bad reads and the first error.
func (hw *hostsWatcher) stop() (reads, bad int64, first string) {
	hw.stopOnce.Do(func() {
		close(hw.done)
		hw.wg.Wait()
	})
	return hw.reads.Load(), hw.bad.Load(), hw.firstBad
}
