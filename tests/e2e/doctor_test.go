package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// doctorResult is one line of `doctor -o json` (daemon/doctor.Result).
type doctorResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

type doctorRun struct {
	results []doctorResult
	out     string
	code    int
}

// runDoctor runs the built binary's `doctor --config cfg -o json ARGS` with the
// daemon's environment and decodes its output.
func runDoctor(t *testing.T, d *harness.Daemon, cfg string, args ...string) doctorRun {
	t.Helper()
	out, code, err := d.Doctor(append([]string{"--config", cfg, "-o", "json"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	r := doctorRun{out: string(out), code: code}
	if err := json.Unmarshal(out, &r.results); err != nil {
		t.Fatalf("doctor -o json (exit %d) is not JSON: %v\n%s", code, err, out)
	}
	for _, res := range r.results {
		if res.Status == "fail" && (res.OK || res.Fix == "") {
			t.Errorf("failing %s has ok=%v fix=%q", res.Name, res.OK, res.Fix)
		}
	}
	return r
}

func (r doctorRun) named(name string) []doctorResult {
	var out []doctorResult
	for _, res := range r.results {
		if res.Name == name {
			out = append(out, res)
		}
	}
	return out
}

func (r doctorRun) failed() []string {
	var out []string
	for _, res := range r.results {
		if res.Status == "fail" {
			out = append(out, res.Name)
		}
	}
	return out
}

func (r doctorRun) dump() string {
	var b strings.Builder
	for _, res := range r.results {
		b.WriteString(strings.ToUpper(res.Status) + " " + res.Name + ": " + res.Detail)
		if res.Fix != "" {
			b.WriteString(" => fix: " + res.Fix)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// mustFail checks that doctor failed (exit 1) with a failing line for name whose
// detail and fix hold the given texts.
func (r doctorRun) mustFail(t *testing.T, name, detail, fix string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("doctor exit %d, want 1", r.code)
	}
	for _, res := range r.named(name) {
		if res.Status == "fail" && strings.Contains(res.Detail, detail) && strings.Contains(res.Fix, fix) {
			t.Logf("%s: %s => fix: %s", name, res.Detail, res.Fix)
			return
		}
	}
	t.Errorf("no failing %q line with detail %q and fix %q:\n%s", name, detail, fix, r.dump())
}

func (r doctorRun) mustStatus(t *testing.T, name string, statuses ...string) doctorResult {
	t.Helper()
	got := r.named(name)
	if len(got) != 1 {
		t.Errorf("%d %q lines, want 1:\n%s", len(got), name, r.dump())
		return doctorResult{}
	}
	for _, s := range statuses {
		if got[0].Status == s {
			return got[0]
		}
	}
	t.Errorf("%s is %s, want %v:\n%s", name, got[0].Status, statuses, r.dump())
	return got[0]
}

// doctorConfig writes a variant of the daemon's config for doctor alone.
func (w *world) doctorConfig(name, tokenFile string, mod func(*harness.DaemonConfig)) string {
	w.t.Helper()
	c := w.daemonConfig(tokenFile)
	mod(&c)
	p := filepath.Join(w.dir, "doctor-"+name+".yaml")
	if err := os.WriteFile(p, []byte(c.YAML()), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *world) writeFile(name, content string) string {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// TestDoctor runs the built `ecr-node-auth doctor` on a node with a real containerd,
// the daemon running and the fake AWS: it passes, pulling the test image through CRI
// with no credentials; then, each on a variant of the node, it fails naming the fix for
// a wrong audience, an expired token, a containerd config without config_path, inline
// mirrors beside config_path (a second containerd runs with it, without CRI, which the
// CRI line names), a read-only certs dir, and a containerd that reads
// another certs dir (the pull is refused: credentials not applied). No doctor output
// holds a secret.
func TestDoctor(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{})
		d, td := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))
		d.Start()
		w.waitHosts(30*time.Second, nil)
		var st *daemonStatus
		if !harness.WaitFor(30*time.Second, 100*time.Millisecond, func() bool {
			st, _, _ = status(d)
			return st != nil && st.Ready
		}) {
			t.Fatalf("daemon not ready: %+v", st)
		}

		t.Run("healthy", func(t *testing.T) {
			if err := w.ctr.RemoveImage(imageRef); err != nil {
				t.Fatal(err)
			}
			r := runDoctor(t, d, d.ConfigFile, "--pull", imageRef)
			t.Logf("doctor on a healthy node:\n%s", r.dump())
			if r.code != 0 || len(r.failed()) > 0 {
				t.Fatalf("doctor exit %d, failed %v", r.code, r.failed())
			}
			for _, name := range []string{"config", "token file", "certs dir", "hosts.toml " + ecrHost, "daemon", "containerd config"} {
				r.mustStatus(t, name, "ok")
			}
			if res := r.mustStatus(t, "aws identity", "ok"); !strings.Contains(res.Detail, w.fake.STSURL()) {
				t.Errorf("aws identity does not name the STS endpoint %s: %s", w.fake.STSURL(), res.Detail)
			}
			if res := r.mustStatus(t, "ecr "+region, "ok"); !strings.Contains(res.Detail, "GetAuthorizationToken at "+w.fake.ECRURL()) {
				t.Errorf("ecr does not name the API endpoint %s: %s", w.fake.ECRURL(), res.Detail)
			}
			// The socket comes from containerd's [grpc] address; no CNI config here, so
			// NetworkReady may be false (a warning).
			if res := r.mustStatus(t, "cri", "ok", "warn"); !strings.Contains(res.Detail, w.ctr.Socket) || !strings.Contains(res.Detail, "runtime ready") {
				t.Errorf("cri: %s", res.Detail)
			}
			if res := r.mustStatus(t, "pull "+imageRef, "ok"); !strings.Contains(res.Detail, "no credentials in the request") {
				t.Errorf("pull: %s", res.Detail)
			}
			if ok, err := w.ctr.ImagePresent(imageRef); err != nil || !ok {
				t.Errorf("after doctor --pull, CRI lists the image: %v %v", ok, err)
			}
			out, code, err := d.Doctor("--config", d.ConfigFile)
			if err != nil || code != 0 || !strings.Contains(string(out), "all 9 checks passed") {
				t.Errorf("doctor (table) exit %d %v:\n%s", code, err, out)
			}
		})

		t.Run("wrong audience", func(t *testing.T) {
			tok := w.writeFile("wrong-aud.token", w.fake.MintToken(fakeaws.TokenSpec{Audience: []string{"kubernetes.default.svc"}}))
			r := runDoctor(t, d, w.doctorConfig("wrong-aud", tok, func(*harness.DaemonConfig) {}))
			r.mustFail(t, "token file", `the token's aud is kubernetes.default.svc, the configured identity.audience is "sts.amazonaws.com"`,
				`set the projected token's audience to "sts.amazonaws.com"`)
			r.mustStatus(t, "aws identity", "skip")
		})

		t.Run("expired token", func(t *testing.T) {
			now := time.Now()
			tok := w.writeFile("expired.token", w.fake.MintToken(fakeaws.TokenSpec{IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}))
			r := runDoctor(t, d, w.doctorConfig("expired", tok, func(*harness.DaemonConfig) {}))
			r.mustFail(t, "token file", "token expired at", "the kubelet has not rotated the token")
		})

		orig, err := os.ReadFile(w.ctr.ConfigFile)
		if err != nil {
			t.Fatal(err)
		}

		t.Run("missing config_path", func(t *testing.T) {
			var kept []string
			for _, l := range strings.Split(string(orig), "\n") {
				if !strings.Contains(l, "config_path") {
					kept = append(kept, l)
				}
			}
			ctrCfg := w.writeFile("containerd-no-config-path.toml", strings.Join(kept, "\n"))
			cfg := w.doctorConfig("no-config-path", td.Path(), func(c *harness.DaemonConfig) { c.ContainerdConfig = ctrCfg })
			r := runDoctor(t, d, cfg)
			// The fix names doctor's own --config, so setup-containerd edits the same files.
			r.mustFail(t, "containerd config", "config_path", "run `ecr-node-auth setup-containerd --config "+cfg+"`")
		})

		t.Run("conflicting inline mirrors", func(t *testing.T) {
			mirrorTable := `[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]`
			if bin.Major >= 2 {
				mirrorTable = `[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']`
			}
			// A second real containerd runs with it (own dirs and socket): case 18, it
			// starts but without its CRI plugin, which doctor's CRI line must name.
			dir2 := harness.TempDir(t)
			ctrCfg := filepath.Join(dir2, "config.toml")
			content := harness.ConfigTOML(bin.Major, dir2, w.certsDir) + "    " + mirrorTable + "\n      endpoint = [\"https://mirror.example.com\"]\n"
			if err := os.WriteFile(ctrCfg, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			startContainerdNoCRI(t, bin, dir2, ctrCfg)
			r := runDoctor(t, d, w.doctorConfig("mirrors", td.Path(), func(c *harness.DaemonConfig) { c.ContainerdConfig = ctrCfg }))
			r.mustFail(t, "containerd config", "both config_path and inline mirrors for docker.io", "move each mirror into <certs dir>/<host>/hosts.toml")
			r.mustFail(t, "cri", filepath.Join(dir2, "c.sock"), "containerd runs without its CRI plugin")
		})

		t.Run("unwritable certs dir", func(t *testing.T) {
			// A read-only bind mount fails writes for root too (a 0500 mode would not).
			if out, err := exec.Command("mount", "--bind", w.certsDir, w.certsDir).CombinedOutput(); err != nil {
				t.Fatalf("mount --bind: %v %s", err, out)
			}
			umount := func() { _ = exec.Command("umount", w.certsDir).Run() }
			t.Cleanup(umount)
			if out, err := exec.Command("mount", "-o", "remount,bind,ro", w.certsDir).CombinedOutput(); err != nil {
				t.Fatalf("remount ro: %v %s", err, out)
			}
			r := runDoctor(t, d, d.ConfigFile)
			umount()
			r.mustFail(t, "certs dir", "read-only file system", "mount "+w.certsDir+" read-write")
			if f := r.failed(); len(f) != 1 {
				t.Errorf("failed %v, want only the certs dir:\n%s", f, r.dump())
			}
		})

		t.Run("containerd reads another certs dir: credentials not applied", func(t *testing.T) {
			other := filepath.Join(w.dir, "other-certs.d")
			ctr2 := harness.StartContainerd(t, bin, other)
			// What a node image may ship: a hosts.toml pointing at the registry, no credentials.
			if err := harness.WriteHostsFile(other, ecrHost, harness.HostsFile{Endpoint: w.reg.URL(), CA: w.reg.CAFile()}); err != nil {
				t.Fatal(err)
			}
			cfg := w.doctorConfig("other-certs", td.Path(), func(c *harness.DaemonConfig) { c.ContainerdConfig = ctr2.ConfigFile })
			r := runDoctor(t, d, cfg, "--pull", imageRef)
			r.mustFail(t, "containerd config", "does not include the certs dir "+w.certsDir, "run `ecr-node-auth setup-containerd --config "+cfg+"`")
			if res := r.mustStatus(t, "cri", "ok", "warn"); !strings.Contains(res.Detail, ctr2.Socket) {
				t.Errorf("cri did not use the second containerd's [grpc] address %s: %s", ctr2.Socket, res.Detail)
			}
			r.mustFail(t, "pull "+imageRef, "credentials not applied", "config_path must include "+w.certsDir)
		})

		var arts []harness.Artifact
		for _, a := range harness.Artifacts() {
			if strings.HasPrefix(a.Name, t.Name()+"/") && strings.HasSuffix(a.Name, "/doctor") {
				arts = append(arts, a)
			}
		}
		if len(arts) == 0 {
			t.Fatal("no doctor output recorded: the secret check would prove nothing")
		}
		checkNoSecrets(t, arts, issuedSecrets())
		t.Logf("checked %d doctor outputs for secrets", len(arts))
	})
}

// startContainerdNoCRI starts bin with cfg (whose private dirs are under dir) and
// waits until its gRPC socket answers CRI with Unimplemented: containerd runs, its CRI
// plugin did not load. It is stopped at cleanup.
func startContainerdNoCRI(t *testing.T, bin harness.ContainerdBinary, dir, cfg string) {
	t.Helper()
	for _, sub := range []string{"root", "state", "opt", "cni"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c, lastErr := harness.StartContainerdConfig(t, bin, dir, cfg, func(err error) bool {
		return err == nil || grpcstatus.Code(err) == codes.Unimplemented
	})
	switch {
	case !c.Alive():
		t.Fatalf("containerd %s exited with %s:\n%s", bin.Version, cfg, harness.TailFile(c.LogFile, 30))
	case lastErr == nil:
		t.Fatalf("containerd %s loaded its CRI plugin with config_path beside inline mirrors", bin.Version)
	case grpcstatus.Code(lastErr) != codes.Unimplemented:
		t.Fatalf("containerd %s: no gRPC answer: %v", bin.Version, lastErr)
	}
	t.Logf("containerd %s runs without CRI: %v", bin.Version, lastErr)
}
