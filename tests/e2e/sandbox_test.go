package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Case 22: the sandbox (pause) image lives in private ECR.
const (
	pauseRepo = "pause"
	pauseTag  = "3.10"
	pauseRef  = ecrHost + "/" + pauseRepo + ":" + pauseTag
)

// TestSandboxImage: containerd's own sandbox image setting (sandbox_image on 1.6,
// pinned_images.sandbox on 2.x) names a pause image in private ECR. Before the daemon a
// CRI pull of it with no credentials is denied by the registry; with the daemon's
// hosts.toml the same pull succeeds, the registry seeing the daemon's token: what
// containerd needs to pull the sandbox image itself, with no kubelet credentials.
//
// RunPodSandbox (containerd pulling the image on its own) is left out: on the test VM
// runc fails to start a host-network sandbox under containerd 1.6 ("can't get final
// child's PID from pipe: EOF", cause not found; a plain `runc run` works), and
// containerd 2.x cannot start Debian's 1.6 containerd-shim-runc-v2.
func TestSandboxImage(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorldWith(t, bin, fakeaws.Options{}, harness.ContainerdOptions{SandboxImage: pauseRef})
		// containerd 1.6 itself reports the setting (CRI Status, verbose: its config);
		// 2.x's runtime config leaves images out, so there the pulled image's pin is
		// checked below.
		if bin.Major < 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			rs, err := w.ctr.Runtime.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
			cancel()
			if err != nil {
				t.Fatalf("CRI Status: %v", err)
			}
			if cfg := rs.GetInfo()["config"]; !strings.Contains(cfg, `"sandboxImage":"`+pauseRef+`"`) {
				t.Fatalf("containerd's CRI config does not name the sandbox image %s:\n%.3000s", pauseRef, cfg)
			}
		}
		if _, err := w.reg.PushRandomImage(pauseRepo, pauseTag); err != nil {
			t.Fatal(err)
		}
		// A managed file without credentials (as left by a previous install): containerd
		// reaches the registry and is refused.
		stub := harness.HostsFile{Endpoint: w.reg.URL(), CA: w.reg.CAFile(), Managed: true}
		if err := harness.WriteHostsFile(w.certsDir, ecrHost, stub); err != nil {
			t.Fatal(err)
		}
		if err := w.ctr.FreshPull(pauseRef); !harness.IsDenied(err) {
			t.Fatalf("pull of %s before the daemon: want denied, got %v", pauseRef, err)
		}

		d, _ := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))
		d.Start()
		pw := w.waitHosts(30*time.Second, nil)

		before := len(w.reg.Requests())
		if err := w.ctr.FreshPull(pauseRef); err != nil {
			t.Fatalf("CRI pull of the sandbox image %s with no credentials: %v", pauseRef, err)
		}
		checkPulled(t, w, before, pw, "a CRI pull")
		if bin.Major >= 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := w.ctr.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: pauseRef}})
			cancel()
			if err != nil {
				t.Fatalf("ImageStatus: %v", err)
			}
			if !st.GetImage().GetPinned() {
				t.Errorf("containerd did not pin %s: it does not take it as its sandbox image (pinned_images.sandbox)", pauseRef)
			}
		}
		if !d.Stop() {
			t.Errorf("daemon did not exit within 10s of SIGTERM")
		}
	})
}

// checkPulled: since request index from, the registry served the pause manifest to a
// request with the daemon's token.
func checkPulled(t *testing.T, w *world, from int, pw, what string) {
	t.Helper()
	want := "/v2/" + pauseRepo + "/manifests/" + pauseTag
	var paths []string
	for _, r := range w.reg.Requests()[from:] {
		paths = append(paths, fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status))
		if r.Path == want && r.Password == pw && r.Allowed && r.Status == http.StatusOK {
			return
		}
	}
	t.Errorf("%s: no authorized 200 for %s with the daemon's token; requests:\n%s", what, want, strings.Join(paths, "\n"))
}
