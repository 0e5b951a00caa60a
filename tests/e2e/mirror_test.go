package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Case 24: an ECR pull-through cache as the mirror of docker.io.
const (
	mirrorPrefix   = "docker-hub"
	mirrorUpstream = "docker.io"
	// mirrorRef is what a pod spec names: Docker Hub, which this machine cannot reach.
	mirrorRef = mirrorUpstream + "/library/alpine:3.20"
	// mirrorRepo is where the cache holds it in ECR.
	mirrorRepo = mirrorPrefix + "/library/alpine"
)

// TestMirror: with only a `mirrors` entry (docker.io -> <ECR host>/docker-hub, endpoint
// the fake registry), a CRI pull of docker.io/library/alpine:3.20 with no credentials
// is served by the fake ECR registry at /v2/docker-hub/library/alpine/manifests/3.20
// with the daemon's Authorization; Docker Hub itself is unreachable here, so before
// the daemon the same pull fails. ECR tokens live 15 s: the mirror's file follows a
// new token and the pull still works with it.
func TestMirror(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{ECRTokenLifetime: 15 * time.Second})
		if _, err := w.reg.PushRandomImage(mirrorRepo, "3.20"); err != nil {
			t.Fatal(err)
		}
		// No daemon, no hosts.toml: containerd goes to Docker Hub and fails.
		if err := w.ctr.FreshPull(mirrorRef); err == nil {
			t.Fatalf("pull of %s succeeded before the daemon wrote its mirror; the test cannot tell the mirror worked", mirrorRef)
		} else {
			t.Logf("before the daemon: %v", err)
		}

		d := newMirrorDaemon(w)
		d.Start()
		first := waitMirrorHosts(t, w, 30*time.Second, "")
		if _, err := os.Stat(filepath.Join(w.certsDir, ecrHost)); !os.IsNotExist(err) {
			t.Errorf("the cache-only ECR host got a certs.d dir of its own: %v", err)
		}

		before := len(w.reg.Requests())
		if err := w.ctr.FreshPull(mirrorRef); err != nil {
			t.Fatalf("pull %s through the mirror: %v", mirrorRef, err)
		}
		checkMirrorRequests(t, w, before, first)

		st := mirrorStatus(t, d)
		if len(st.Mirrors) != 1 || st.Mirrors[0].Upstream != mirrorUpstream || st.Mirrors[0].ECR != ecrHost+"/"+mirrorPrefix ||
			st.Mirrors[0].URL != w.reg.URL()+"/v2/"+mirrorPrefix || (st.Mirrors[0].FileState != "written" && st.Mirrors[0].FileState != "unchanged") {
			t.Errorf("status mirrors = %+v", st.Mirrors)
		}

		// The next ECR token reaches the mirror's file, and pulls use it.
		second := waitMirrorHosts(t, w, 20*time.Second, first)
		before = len(w.reg.Requests())
		if err := w.ctr.FreshPull(mirrorRef); err != nil {
			t.Fatalf("pull %s after the token rotated: %v", mirrorRef, err)
		}
		checkMirrorRequests(t, w, before, second)
		if !d.Stop() {
			t.Errorf("daemon did not exit within 10s of SIGTERM")
		}
	})
}

// newMirrorDaemon: no registries, one mirror of docker.io on the fake registry.
func newMirrorDaemon(w *world) *harness.Daemon {
	w.t.Helper()
	d, _ := w.newDaemonWith(w.fake.MintToken(fakeaws.TokenSpec{}), func(c *harness.DaemonConfig) {
		c.Registries = nil
		c.Mirrors = []harness.Mirror{{Upstream: mirrorUpstream, ECR: ecrHost + "/" + mirrorPrefix, Endpoint: w.reg.URL(), CA: w.reg.CAFile()}}
	}, nil)
	return d
}

// waitMirrorHosts waits for certs.d/docker.io/hosts.toml as containerd's loader reads
// it: the cache at the fake registry under /v2/docker-hub with an ECR token the fake
// issued (other than not), then Docker Hub as containerd names it, without the header.
// It returns the password.
func waitMirrorHosts(t *testing.T, w *world, timeout time.Duration, not string) string {
	t.Helper()
	var pw string
	var lastErr error
	ok := harness.WaitFor(timeout, 100*time.Millisecond, func() bool {
		pw, lastErr = mirrorHosts(w)
		if lastErr == nil && pw == not {
			lastErr = fmt.Errorf("still the previous token")
		}
		return lastErr == nil || !w.daemon.Alive()
	})
	if !ok || lastErr != nil {
		t.Fatalf("no acceptable %s hosts.toml within %v (daemon alive %v): %v", mirrorUpstream, timeout, w.daemon.Alive(), lastErr)
	}
	return pw
}

func mirrorHosts(w *world) (string, error) {
	p, err := harness.ParseHostsDir(w.certsDir, mirrorUpstream)
	if err != nil {
		return "", err
	}
	switch {
	case !strings.HasPrefix(string(p.Raw), harness.ManagedMarker):
		return "", fmt.Errorf("%s: no marker:\n%s", p.Path, p.Raw)
	case p.Mode != 0o600:
		return "", fmt.Errorf("%s: mode %v, want 0600", p.Path, p.Mode)
	case p.Endpoint != w.reg.URL() || p.URLPath != "/v2/"+mirrorPrefix:
		return "", fmt.Errorf("%s: containerd would try %s%s first, want %s/v2/%s:\n%s", p.Path, p.Endpoint, p.URLPath, w.reg.URL(), mirrorPrefix, p.Raw)
	case p.Fallback != "https://registry-1.docker.io" || p.FallbackHasAuth:
		return "", fmt.Errorf("%s: fallback %s (with header %v), want https://registry-1.docker.io without the header", p.Path, p.Fallback, p.FallbackHasAuth)
	case p.User != "AWS":
		return "", fmt.Errorf("%s: Basic user %q, want AWS", p.Path, p.User)
	}
	if _, ok := w.fake.LookupECRToken(p.Password); !ok {
		return "", fmt.Errorf("%s: a password the fake never issued", p.Path)
	}
	return p.Password, nil
}

// checkMirrorRequests: since request index from, the registry served the manifest
// under the cache's prefix to a request carrying pw, and refused nothing.
func checkMirrorRequests(t *testing.T, w *world, from int, pw string) {
	t.Helper()
	want := "/v2/" + mirrorRepo + "/manifests/3.20"
	seen := false
	var paths []string
	for _, r := range w.reg.Requests()[from:] {
		paths = append(paths, fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status))
		if r.Path == want && r.Password == pw && r.Allowed && r.Status == http.StatusOK {
			seen = true
		}
		if strings.Contains(r.Path, "/v2/v2/") || !strings.HasPrefix(r.Path, "/v2/"+mirrorPrefix+"/") {
			t.Errorf("request outside the cache prefix: %s %s", r.Method, r.Path)
		}
	}
	if !seen {
		t.Errorf("no authorized 200 for %s with the daemon's token; requests:\n%s", want, strings.Join(paths, "\n"))
	}
}

type mirrorStatusDoc struct {
	Mirrors []struct {
		Upstream  string `json:"upstream"`
		ECR       string `json:"ecr"`
		URL       string `json:"url"`
		FileState string `json:"fileState"`
	} `json:"mirrors"`
}

func mirrorStatus(t *testing.T, d *harness.Daemon) mirrorStatusDoc {
	t.Helper()
	out, err := d.Status()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st mirrorStatusDoc
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st
}
