package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// TestSetupContainerd: a real containerd config without config_path (the
// harness's tested config with its registry table removed: version 2 with
// io.containerd.grpc.v1.cri as on containerd 1.6, and, for containerd 2.x,
// also version 3 with io.containerd.cri.v1.images) is fixed by the built
// `ecr-node-auth setup-containerd`, checked by that containerd binary; the
// same containerd then starts with the result, loads the CRI plugin and pulls
// through a hand-written hosts.toml in the certs dir with a token minted by
// the fake; a second run changes nothing.
func TestSetupContainerd(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		needDaemon(t)
		styles := []int{1} // harness.ConfigTOML(1, …): version 2, io.containerd.grpc.v1.cri
		if bin.Major >= 2 {
			styles = append(styles, 2) // version 3, io.containerd.cri.v1.images
		}
		for _, style := range styles {
			name := "v2-grpc.v1.cri"
			if style == 2 {
				name = "v3-cri.v1.images"
			}
			t.Run(name, func(t *testing.T) { setupAndPull(t, bin, style) })
		}
	})
}

func setupAndPull(t *testing.T, bin harness.ContainerdBinary, style int) {
	dir := harness.TempDir(t)
	certsDir := filepath.Join(dir, "certs.d")
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{"root", "state", "opt", "cni", etc} {
		if err := os.MkdirAll(filepath.Join(dir, strings.TrimPrefix(d, dir)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The harness's config, without its registry table, plus a comment that must survive.
	var kept []string
	for _, l := range strings.Split(harness.ConfigTOML(style, dir, certsDir), "\n") {
		if strings.Contains(l, ".registry]") || strings.Contains(l, "config_path") {
			continue
		}
		kept = append(kept, l)
	}
	orig := "# node image config: keep this comment\n" + strings.Join(kept, "\n")
	cfg := filepath.Join(etc, "config.toml")
	if err := os.WriteFile(cfg, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	ecfg := filepath.Join(etc, "ecr-node-auth.yaml")
	if err := os.WriteFile(ecfg, []byte("containerd:\n  certsDir: "+certsDir+"\n  configFile: "+cfg+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	setup := func() (string, error) {
		cmd := exec.Command(daemonBin, "setup-containerd", "--config", ecfg, "--containerd-bin", bin.Path)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		harness.RecordArtifact(t.Name()+"/setup-containerd", out)
		return string(out), err
	}

	out, err := setup()
	if err != nil || !strings.Contains(out, "updated "+cfg) {
		t.Fatalf("setup-containerd: %v\n%s", err, out)
	}
	t.Logf("first run:\n%s", out)
	after, _ := os.ReadFile(cfg)
	if !bytes.HasPrefix(after, []byte("# node image config: keep this comment\n")) || !bytes.Contains(after, []byte("config_path = ")) {
		t.Fatalf("edited config:\n%s", after)
	}
	backups, _ := filepath.Glob(cfg + ".ecr-node-auth.bak-*")
	if len(backups) != 1 {
		t.Fatalf("backups: %v", backups)
	}
	if b, _ := os.ReadFile(backups[0]); string(b) != orig {
		t.Errorf("backup differs from the original")
	}

	out, err = setup()
	if err != nil || !strings.Contains(out, "already set") {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	again, _ := os.ReadFile(cfg)
	if !bytes.Equal(again, after) {
		t.Errorf("second run changed the config")
	}
	if b, _ := filepath.Glob(cfg + ".ecr-node-auth.bak-*"); len(b) != 1 {
		t.Errorf("second run made a backup: %v", b)
	}

	// The real containerd starts with the result and loads the CRI plugin.
	c := startContainerdWithConfig(t, bin, dir, cfg)

	fake, reg, _ := newFakeAWS(t, fakeaws.Options{})
	hf := harness.HostsFile{Endpoint: reg.URL(), CA: reg.CAFile(), Password: fake.IssueECRToken(region)}
	if err := harness.WriteHostsFile(certsDir, ecrHost, hf); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}}); err != nil {
		t.Fatalf("pull %s through %s/%s after setup-containerd: %v (denied=%v)\n%s", imageRef, certsDir, ecrHost, err, harness.IsDenied(err), harness.TailFile(c.LogFile, 20))
	}
	st, err := c.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: imageRef}})
	if err != nil || st.GetImage() == nil {
		t.Fatalf("image status after pull: %v", err)
	}
	logb, _ := os.ReadFile(c.LogFile)
	if !bytes.Contains(logb, []byte("loading host directory")) || !bytes.Contains(logb, []byte(certsDir)) {
		t.Errorf("containerd's log does not show it reading %s", certsDir)
	}
	t.Logf("containerd %s pulled %s through %s", bin.Version, imageRef, harness.HostsPath(certsDir, ecrHost))

	// A run against the live node still changes nothing.
	if out, err := setup(); err != nil || !strings.Contains(out, "already set") {
		t.Errorf("third run: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(cfg); !bytes.Equal(b, after) {
		t.Errorf("third run changed the config")
	}
}

// startContainerdWithConfig starts bin with a given config file (the
// harness's StartContainerd writes its own) and waits for CRI to answer.
func startContainerdWithConfig(t *testing.T, bin harness.ContainerdBinary, dir, cfg string) *harness.Containerd {
	t.Helper()
	c, lastErr := harness.StartContainerdConfig(t, bin, dir, cfg, func(err error) bool { return err == nil })
	if !c.Alive() || lastErr != nil {
		t.Fatalf("containerd %s with %s: CRI not ready (exited=%v): %v\n%s", bin.Version, cfg, !c.Alive(), lastErr, harness.TailFile(c.LogFile, 30))
	}
	return c
}

// TestSetupContainerdRefusesInlineMirrors: case 18 on the real binaries:
// config_path beside inline mirrors, which `containerd config dump` accepts,
// is refused and the file is left as it was.
func TestSetupContainerdRefusesInlineMirrors(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		needDaemon(t)
		dir := harness.TempDir(t)
		certsDir := filepath.Join(dir, "certs.d")
		style := 1
		if bin.Major >= 2 {
			style = 2
		}
		mirrorTable := `[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]`
		if style == 2 {
			mirrorTable = `[plugins.'io.containerd.cri.v1.images'.registry.mirrors.'docker.io']`
		}
		orig := harness.ConfigTOML(style, dir, certsDir) + "    " + mirrorTable + "\n      endpoint = [\"https://mirror.example.com\"]\n"
		cfg := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(cfg, []byte(orig), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin.Path, "--config", cfg, "config", "dump").CombinedOutput(); err != nil {
			t.Logf("containerd %s config dump rejects it itself: %v %s", bin.Version, err, out[:min(len(out), 200)])
		} else {
			t.Logf("containerd %s config dump accepts it (case 18)", bin.Version)
		}
		empty := filepath.Join(dir, "ecr-node-auth.yaml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(daemonBin, "setup-containerd", "--config", empty, "--containerd-config", cfg, "--certs-dir", certsDir, "--containerd-bin", bin.Path)
		out, err := cmd.CombinedOutput()
		harness.RecordArtifact(t.Name()+"/setup-containerd", out)
		if err == nil || !strings.Contains(string(out), "inline mirrors for docker.io") {
			t.Fatalf("setup-containerd accepted case 18: %v\n%s", err, out)
		}
		t.Logf("refused: %s", out)
		if b, _ := os.ReadFile(cfg); string(b) != orig {
			t.Error("file changed")
		}
		if b, _ := filepath.Glob(cfg + ".ecr-node-auth.bak-*"); len(b) != 0 {
			t.Errorf("backup made: %v", b)
		}
	})
}
