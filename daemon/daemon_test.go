package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/notify/notifytest"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	t       testing.TB
	dir     string
	cfgPath string
	sock    string
	certs   string
	notify  *notifytest.Socket
	logs    *syncBuffer
	reload  chan struct{}
	extra   string // appended to the config
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// offlineAWS keeps the SDK away from real AWS, IMDS and the user's files.
func offlineAWS(t testing.TB) {
	for k, v := range map[string]string{
		"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secretkeytest",
		"AWS_SESSION_TOKEN": "", "AWS_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_STS": "", "AWS_ENDPOINT_URL_ECR": "", "AWS_ENDPOINT_URL_ECR_PUBLIC": "",
		"WATCHDOG_USEC": "", "WATCHDOG_PID": "", "ECR_NODE_AUTH_SOCKET": "",
	} {
		t.Setenv(k, v)
	}
}

func newHarness(t testing.TB, registries string) *harness {
	offlineAWS(t)
	dir, err := os.MkdirTemp("", "dmn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{t: t, dir: dir, cfgPath: filepath.Join(dir, "config.yaml"), sock: filepath.Join(dir, "run", "auth.sock"),
		certs: filepath.Join(dir, "certs.d"), logs: &syncBuffer{}, reload: make(chan struct{})}
	h.writeConfig(registries)
	h.notify = notifytest.Listen(t)
	return h
}

func (h *harness) writeConfig(registries string) {
	h.t.Helper()
	cfg := fmt.Sprintf("registries: %s\ncontainerd:\n  certsDir: %s\n  configFile: %s\nsocket: %s\nlog:\n  level: debug\n  format: json\nmetricsAddress: \"127.0.0.1:0\"\n%s",
		registries, h.certs, filepath.Join(h.dir, "config.toml"), h.sock, h.extra)
	if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() {
		h.done <- Run(ctx, h.cfgPath, WithVersion("test"), WithReload(h.reload), WithReconcileInterval(200*time.Millisecond),
			WithLogOutput(logging.Options{Stderr: h.logs}))
	}()
	h.t.Cleanup(func() {
		if h.stopped {
			return
		}
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
		}
	})
	if _, ok := h.notify.Wait("READY=1", 10*time.Second); !ok {
		h.t.Fatalf("no READY=1; messages %q; logs:\n%s", h.notify.Messages(), h.logs.String())
	}
}

func (h *harness) status() api.Status {
	h.t.Helper()
	st, err := api.NewClient(h.sock).Status(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) waitStatus(what string, ok func(api.Status) bool) api.Status {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := h.status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", "  ")
			h.t.Fatalf("timed out waiting for %s; status:\n%s\nlogs:\n%s", what, b, h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	h.stopped = true
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
}

func TestIdleReloadAndStop(t *testing.T) {
	h := newHarness(t, "[]")
	h.start()

	ready, _ := h.notify.Wait("READY=1", 0)
	if !strings.Contains(ready, "STATUS=idle: no registries configured") {
		t.Errorf("READY message %q", ready)
	}
	st := h.status()
	if !st.Ready || st.Version != "test" || st.State != "idle: no registries configured" || len(st.Notes) == 0 || st.Notes[0] != noteIdle ||
		st.ConfigPath != h.cfgPath || st.CertsDir != h.certs || st.Identity.Mode != "default-chain" {
		t.Errorf("status %+v", st)
	}
	if hl, err := api.NewClient(h.sock).Health(context.Background()); err != nil || hl.Status != "ok" {
		t.Errorf("health %+v %v", hl, err)
	}

	// An invalid new config is rejected; the old one keeps running.
	if err := os.WriteFile(h.cfgPath, []byte("registries: []\nsockett: /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.reload <- struct{}{}
	st = h.waitStatus("the rejected reload note", func(st api.Status) bool {
		return len(st.Notes) > 1 && strings.Contains(st.Notes[1], "rejected")
	})
	if !strings.Contains(st.Notes[1], `unknown key "sockett"`) || !st.Ready || st.Socket != h.sock {
		t.Errorf("after bad reload: %+v", st)
	}
	if !strings.Contains(h.logs.String(), "config reload rejected; keeping the running config") {
		t.Errorf("rejected reload not logged:\n%s", h.logs.String())
	}

	h.stop()
	if _, err := os.Lstat(h.sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, ok := h.notify.Wait("STOPPING=1", time.Second); !ok {
		t.Errorf("no STOPPING=1: %q", h.notify.Messages())
	}
}

func TestStartFailsOnBadConfig(t *testing.T) {
	offlineAWS(t)
	dir := t.TempDir()
	err := Run(context.Background(), filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "not found: create it (the packages install a default at /etc/ecr-node-auth/config.yaml) or pass --config") {
		t.Errorf("missing config: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("registries:\n  - ghcr.io\n"), 0o600)
	if err := Run(context.Background(), bad); err == nil || !strings.Contains(err.Error(), `bad.yaml:2: registries[0]: invalid registry "ghcr.io"`) {
		t.Errorf("bad registry: %v", err)
	}
}

func TestSocketInUse(t *testing.T) {
	h := newHarness(t, "[]")
	h.start()
	err := Run(context.Background(), h.cfgPath, WithLogOutput(logging.Options{Stderr: h.logs}))
	if err == nil || !strings.Contains(err.Error(), "another ecr-node-auth is already serving on "+h.sock) {
		t.Errorf("second daemon: %v", err)
	}
	h.status() // the first one still answers
}

// useFakeAWS starts a fake AWS that knows offlineAWS's key pair and points
// the daemon's ECR, ECR Public and STS endpoints at it. It comes after
// newHarness, whose offlineAWS clears those endpoints.
func (h *harness) useFakeAWS() *fakeaws.Fake {
	h.t.Helper()
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(f.Close)
	f.AddStaticCredentials("AKIDTEST", "secretkeytest", "", time.Time{})
	for k, v := range f.Env() {
		h.t.Setenv(k, v)
	}
	return f
}

// basicHeader is the hosts.toml line that carries an ECR password.
func basicHeader(password string) string {
	return `Authorization = ["Basic ` + base64.StdEncoding.EncodeToString([]byte("AWS:"+password)) + `"]`
}

// noSecretIn fails t if any secret f issued (at least one ECR password
// among them) appears in one of texts.
func noSecretIn(t testing.TB, f *fakeaws.Fake, what string, texts ...string) {
	t.Helper()
	if len(f.ECRTokens()) == 0 {
		t.Fatalf("the fake issued no ECR token: nothing to look for in %s", what)
	}
	for _, s := range f.SecretsWithKind() {
		for _, text := range texts {
			if strings.Contains(text, s.Value) {
				t.Fatalf("a secret (%s) the fake issued leaked into %s", s.Kind, what)
			}
		}
	}
}

func TestRegistriesAddedAndRemovedOnReload(t *testing.T) {
	const host1 = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	const host2 = "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
	h := newHarness(t, "["+host1+"]")
	f := h.useFakeAWS()
	h.start()

	st := h.waitStatus("serving 1 registry", func(st api.Status) bool {
		return st.Ready && len(st.Registries) == 1 && (st.Registries[0].FileState == "written" || st.Registries[0].FileState == "unchanged")
	})
	if st.State != "serving 1 registry" || st.Registries[0].Host != host1 {
		t.Errorf("status %+v", st)
	}
	file1 := filepath.Join(h.certs, host1, "hosts.toml")
	b, err := os.ReadFile(file1)
	if toks := f.ECRTokens(); err != nil || len(toks) != 1 || toks[0].Region != "us-east-1" || !strings.Contains(string(b), basicHeader(toks[0].Password)) {
		t.Fatalf("hosts.toml does not carry the one token issued in us-east-1: %v\n%s", err, b)
	}

	// Deleted file is re-created by the reconcile.
	os.Remove(file1)
	deadline := time.Now().Add(5 * time.Second)
	for _, err := os.Stat(file1); err != nil; _, err = os.Stat(file1) {
		if time.Now().After(deadline) {
			t.Fatalf("hosts.toml not re-created:\n%s", h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Reload: host1 removed, host2 added.
	h.writeConfig("[" + host2 + "]")
	h.reload <- struct{}{}
	h.waitStatus("host2 only", func(st api.Status) bool {
		return st.Ready && len(st.Registries) == 1 && st.Registries[0].Host == host2 && st.Registries[0].FileState != "pending"
	})
	if _, err := os.Stat(file1); !os.IsNotExist(err) {
		t.Errorf("file of the removed registry still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.certs, host2, "hosts.toml")); err != nil {
		t.Errorf("file of the added registry: %v", err)
	}

	raw, _ := json.Marshal(h.status())
	noSecretIn(t, f, "status or logs", string(raw), h.logs.String())
	h.stop()
}

func TestWatchdogFromMainLoop(t *testing.T) {
	h := newHarness(t, "[]")
	t.Setenv("WATCHDOG_USEC", "200000") // WatchdogSec=0.2s: a ping every 100ms
	h.start()
	deadline := time.Now().Add(5 * time.Second)
	for h.notify.Count("WATCHDOG=1") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("watchdog pings: %q", h.notify.Messages())
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.stop()
	n := h.notify.Count("WATCHDOG=1")
	time.Sleep(300 * time.Millisecond)
	if h.notify.Count("WATCHDOG=1") != n {
		t.Errorf("watchdog pinged after the main loop stopped")
	}
}

func TestIdentityRebuiltOnReload(t *testing.T) {
	const host = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	h := newHarness(t, "["+host+"]")
	h.useFakeAWS()
	h.start()
	h.waitStatus("serving", func(st api.Status) bool { return st.Ready })

	cfg, _ := os.ReadFile(h.cfgPath)
	os.WriteFile(h.cfgPath, append([]byte("awsECR:\n  region: us-west-2\n"), cfg...), 0o600)
	h.reload <- struct{}{}
	st := h.waitStatus("the new STS region", func(st api.Status) bool { return st.Identity.STSRegion == "us-west-2" })
	if !strings.Contains(h.logs.String(), "identity settings changed") {
		t.Errorf("no rebuild logged:\n%s", h.logs.String())
	}
	h.waitStatus("serving again", func(st api.Status) bool {
		return st.Ready && len(st.Registries) == 1 && st.Registries[0].FileState != "pending"
	})
	if _, err := os.Stat(filepath.Join(h.certs, host, "hosts.toml")); err != nil {
		t.Errorf("hosts.toml after rebuild: %v (status %+v)", err, st)
	}
	h.stop()
}

func TestUnmanagedFileIsReported(t *testing.T) {
	const host = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	h := newHarness(t, "["+host+"]")
	h.useFakeAWS()
	file := filepath.Join(h.certs, host, "hosts.toml")
	os.MkdirAll(filepath.Dir(file), 0o755)
	mine := "server = \"https://mirror.example\"\n"
	os.WriteFile(file, []byte(mine), 0o644)
	h.start()
	st := h.waitStatus("unmanaged", func(st api.Status) bool {
		return len(st.Registries) == 1 && st.Registries[0].FileState == "unmanaged"
	})
	if len(st.Notes) == 0 || !strings.Contains(st.Notes[len(st.Notes)-1], file+" is not managed by ecr-node-auth") {
		t.Errorf("notes %q", st.Notes)
	}
	if b, _ := os.ReadFile(file); string(b) != mine {
		t.Errorf("unmanaged file changed: %q", b)
	}
	h.stop()
}

// Case 34: READY=1 does not wait for AWS; STATUS= says why tokens are missing.
func TestReadyWithoutSTS(t *testing.T) {
	const host = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	h := newHarness(t, "["+host+"]")
	t.Setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1")
	cfg, _ := os.ReadFile(h.cfgPath)
	extra := fmt.Sprintf("awsECR:\n  roleArn: arn:aws:iam::111122223333:role/r\nidentity:\n  tokenFile: %s\n", filepath.Join(h.dir, "no-token"))
	os.WriteFile(h.cfgPath, append([]byte(extra), cfg...), 0o600)
	start := time.Now()
	h.start()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("READY took %v", d)
	}
	if _, ok := h.notify.Wait("STATUS=waiting for STS: ", 10*time.Second); !ok {
		t.Fatalf("no waiting-for-STS status: %q", h.notify.Messages())
	}
	st := h.status()
	if st.Ready || !strings.HasPrefix(st.State, "waiting for STS: ") || st.Identity.Mode != "web-identity" || st.Identity.LastError == "" {
		t.Errorf("status %+v", st)
	}
	if hl, _ := api.NewClient(h.sock).Health(context.Background()); hl.Status != "unhealthy" || len(hl.Reasons) != 1 {
		t.Errorf("health %+v", hl)
	}
	h.stop()
}

// TestMirrorsWrittenRotatedAndRemoved: a mirror's ECR host is served with the
// registries (one ECR call per region), its token goes into
// certs.d/<upstream>/hosts.toml, the file follows a new token, and leaves
// with the mirror on reload. An ECR host listed only as a cache gets no file
// of its own.
func TestMirrorsWrittenRotatedAndRemoved(t *testing.T) {
	const host1 = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	const cacheHost = "444455556666.dkr.ecr.us-east-1.amazonaws.com" // same region: no extra ECR call
	h := newHarness(t, "["+host1+"]")
	h.extra = "mirrors:\n  - upstream: docker.io\n    ecr: " + cacheHost + "/docker-hub\n  - upstream: ghcr.io\n    ecr: " + host1 + "/cache/ghcr\n"
	h.writeConfig("[" + host1 + "]")
	f := h.useFakeAWS()
	h.start()

	written := func(s string) bool { return s == "written" || s == "unchanged" }
	st := h.waitStatus("both mirrors written", func(st api.Status) bool {
		return st.Ready && len(st.Mirrors) == 2 && written(st.Mirrors[0].FileState) && written(st.Mirrors[1].FileState)
	})
	if n := f.Calls(fakeaws.ActionGetAuthorizationToken); n != 1 {
		t.Errorf("GetAuthorizationToken called %d times, want 1 (one region)", n)
	}
	toks := f.ECRTokens()
	if len(toks) != 1 || toks[0].Region != "us-east-1" {
		t.Fatalf("ECR tokens issued: %+v, want one in us-east-1", toks)
	}
	first := toks[0].Password
	m := st.Mirrors[0]
	if m.Upstream != "docker.io" || m.ECR != cacheHost+"/docker-hub" || m.URL != "https://"+cacheHost+"/v2/docker-hub" || m.File != filepath.Join(h.certs, "docker.io", "hosts.toml") {
		t.Errorf("mirror status %+v", m)
	}
	for _, r := range st.Registries {
		if r.Host == cacheHost && (r.FileState != fileMirrorOnly || r.File != "") {
			t.Errorf("cache-only host %s: file %q state %q", r.Host, r.File, r.FileState)
		}
	}
	if _, err := os.Stat(filepath.Join(h.certs, cacheHost)); !os.IsNotExist(err) {
		t.Errorf("a cache-only ECR host got a hosts.toml dir: %v", err)
	}
	wantIn := func(file, pw string, parts ...string) bool {
		b, err := os.ReadFile(filepath.Join(h.certs, file, "hosts.toml"))
		if err != nil || !strings.Contains(string(b), basicHeader(pw)) {
			return false
		}
		for _, p := range parts {
			if !strings.Contains(string(b), p) {
				t.Errorf("%s/hosts.toml lacks %q:\n%s", file, p, b)
			}
		}
		return true
	}
	if !wantIn("docker.io", first, `server = "https://registry-1.docker.io"`, `[host."https://`+cacheHost+`/v2/docker-hub"]`, "override_path = true") ||
		!wantIn("ghcr.io", first, `server = "https://ghcr.io"`, `[host."https://`+host1+`/v2/cache/ghcr"]`) ||
		!wantIn(host1, first) {
		t.Fatalf("files lack the first token; logs:\n%s", h.logs.String())
	}

	// A new token (SIGHUP with a changed identity forces a fresh fetch) reaches
	// every file, the mirrors' included: one token the fake issued after the
	// first is in all three.
	h.extra += "identity:\n  audience: other\n"
	h.writeConfig("[" + host1 + "]")
	h.reload <- struct{}{}
	second := ""
	everywhere := func() bool {
		for _, tok := range f.ECRTokens() {
			if tok.Password != first && wantIn("docker.io", tok.Password) && wantIn("ghcr.io", tok.Password) && wantIn(host1, tok.Password) {
				second = tok.Password
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !everywhere() {
		if time.Now().After(deadline) {
			t.Fatalf("no new token reached every file (%d issued); logs:\n%s", len(f.ECRTokens()), h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Reload without the docker.io mirror: its file goes, the other stays.
	h.extra = "mirrors:\n  - upstream: ghcr.io\n    ecr: " + host1 + "/cache/ghcr\nidentity:\n  audience: other\n"
	h.writeConfig("[" + host1 + "]")
	h.reload <- struct{}{}
	h.waitStatus("one mirror", func(st api.Status) bool { return len(st.Mirrors) == 1 })
	deadline = time.Now().Add(5 * time.Second)
	for _, err := os.Stat(filepath.Join(h.certs, "docker.io")); !os.IsNotExist(err); _, err = os.Stat(filepath.Join(h.certs, "docker.io")) {
		if time.Now().After(deadline) {
			t.Fatalf("docker.io mirror file not removed (%v); logs:\n%s", err, h.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !wantIn("ghcr.io", second) {
		t.Errorf("the remaining mirror lost its file")
	}
	raw, _ := json.Marshal(h.status())
	noSecretIn(t, f, "status or logs", string(raw), h.logs.String())
	h.stop()
}
