package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// envImageLayout names an OCI layout to test (e.g. dist/image from `make image`) instead
// of building one here with packaging/image.
const envImageLayout = "ECR_NODE_AUTH_E2E_IMAGE_LAYOUT"

const (
	imageRepo    = "ecr-node-auth"
	imageTag     = "e2e"
	imageVersion = "e2e-image-test"
)

// TestImage: the container image `make image` builds (an OCI layout holding a
// linux/amd64 + linux/arm64 index) is pushed to the fake ECR registry; a real containerd
// pulls it by its ECR name through CRI with no credentials in the request, using only the
// daemon's hosts.toml; the binary unpacked from the layout's layer answers `version`.
func TestImage(t *testing.T) {
	requirePrereqs(t)
	needDaemon(t)
	dir, wantVersion := imageLayout(t)
	idx, images := readLayout(t, dir)
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	host, ok := images[runtime.GOARCH]
	if !ok {
		t.Fatalf("the layout's index has no linux/%s image (has %v)", runtime.GOARCH, keysOf(images))
	}
	for _, arch := range []string{"amd64", "arm64"} {
		if _, ok := images[arch]; !ok {
			t.Errorf("the index lacks linux/%s", arch)
		}
	}
	checkImageConfig(t, host)
	hostConfig, err := host.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	// The binary from the layer, run here: it is the static binary the image ships.
	bin := extractFile(t, host, "usr/bin/ecr-node-auth")
	out, err := exec.Command(bin, "version").CombinedOutput()
	harness.RecordArtifact(t.Name()+"/image-binary-version", out)
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	if !strings.HasPrefix(string(out), "ecr-node-auth ") || (wantVersion != "" && !strings.Contains(string(out), wantVersion)) {
		t.Errorf("version from the image's binary: %q, want ecr-node-auth %s", out, wantVersion)
	}
	t.Logf("image binary: %s", strings.TrimSpace(string(out)))

	forEachContainerd(t, func(t *testing.T, cbin harness.ContainerdBinary) {
		w := newWorld(t, cbin, fakeaws.Options{})
		pushPW := w.fake.IssueECRToken(region)
		if err := pushIndex(w.reg, pushPW, imageRepo, imageTag, idx, images); err != nil {
			t.Fatalf("push the index: %v", err)
		}
		ref := ecrHost + "/" + imageRepo + ":" + imageTag

		// A managed hosts.toml without credentials (endpoint = the fake registry):
		// containerd reaches the registry and is refused.
		stub := harness.HostsFile{Endpoint: w.reg.URL(), CA: w.reg.CAFile(), Managed: true}
		if err := harness.WriteHostsFile(w.certsDir, ecrHost, stub); err != nil {
			t.Fatal(err)
		}
		if err := w.ctr.FreshPull(ref); !harness.IsDenied(err) {
			t.Fatalf("pull before the daemon: %v, want denied", err)
		}
		d, _ := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))
		d.Start()
		pw := w.waitHosts(30*time.Second, nil)
		start := time.Now()
		if err := w.ctr.FreshPull(ref); err != nil {
			t.Fatalf("pull %s through the daemon's hosts.toml: %v", ref, err)
		}
		t.Logf("containerd %s pulled %s in %v", cbin.Version, ref, time.Since(start).Round(time.Millisecond))

		// CRI names the host architecture's image from the index by its config digest.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := w.ctr.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || st.GetImage() == nil {
			t.Fatalf("image status %s: %v", ref, err)
		}
		if st.GetImage().GetId() != hostConfig.String() {
			t.Errorf("CRI image id %s, want the linux/%s config %s", st.GetImage().GetId(), runtime.GOARCH, hostConfig)
		}

		// The registry saw the index and the binary layer fetched with the daemon's token.
		binLayer := layerDigestOf(t, host, "usr/bin/ecr-node-auth")
		var sawIndex, sawLayer bool
		for _, r := range w.reg.Requests() {
			if !r.Allowed || r.Password == pushPW || r.Method != http.MethodGet {
				continue
			}
			if r.Password != pw {
				if _, ok := w.fake.LookupECRToken(r.Password); !ok {
					continue
				}
			}
			switch r.Path {
			case "/v2/" + imageRepo + "/manifests/" + imageTag, "/v2/" + imageRepo + "/manifests/" + idxDigest.String():
				sawIndex = true
			case "/v2/" + imageRepo + "/blobs/" + binLayer.String():
				sawLayer = true
			}
		}
		if !sawIndex || !sawLayer {
			t.Errorf("registry requests with the daemon's token: index %v, binary layer %v", sawIndex, sawLayer)
		}
	})
}

// imageLayout returns the OCI layout to test and the version its binary reports ("" if
// unknown): $ECR_NODE_AUTH_E2E_IMAGE_LAYOUT, else one built here as `make image` does.
func imageLayout(t *testing.T) (string, string) {
	t.Helper()
	if p := os.Getenv(envImageLayout); p != "" {
		return p, ""
	}
	goBin := harness.LookGo()
	build := harness.TempDir(t)
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w -X main.version="+imageVersion+" -X main.commit=e2e",
			"-o", filepath.Join(build, arch, "ecr-node-auth"), "./cmd/ecr-node-auth")
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build linux/%s: %v\n%s", arch, err, out)
		}
	}
	out := filepath.Join(build, "image")
	cmd := exec.Command(goBin, "run", "./packaging/image", "-build-dir", build, "-arches", "amd64 arm64",
		"-ca", "/etc/ssl/certs/ca-certificates.crt", "-version", imageVersion, "-commit", "e2e", "-out", out)
	cmd.Dir = moduleRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packaging/image: %v\n%s", err, b)
	} else {
		t.Logf("%s", bytes.TrimSpace(b))
	}
	return out, imageVersion
}

// readLayout returns the layout's image index and its images by architecture.
func readLayout(t *testing.T, dir string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	outer, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("layout %s: %v", dir, err)
	}
	om, err := outer.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(om.Manifests) != 1 {
		t.Fatalf("layout %s: index.json lists %d manifests, want the one image index", dir, len(om.Manifests))
	}
	idx, err := outer.ImageIndex(om.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{}
	for _, m := range im.Manifests {
		if m.Platform == nil || m.Platform.OS != "linux" {
			t.Errorf("index entry %s: platform %+v", m.Digest, m.Platform)
			continue
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		images[m.Platform.Architecture] = img
	}
	return idx, images
}

func keysOf(m map[string]v1.Image) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// checkImageConfig: entrypoint, labels, no shell or base image.
func checkImageConfig(t *testing.T, img v1.Image) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/usr/bin/ecr-node-auth run" {
		t.Errorf("entrypoint %q", got)
	}
	for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source",
		"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.created"} {
		if cf.Config.Labels[l] == "" {
			t.Errorf("label %s missing", l)
		}
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("config platform %s/%s", cf.OS, cf.Architecture)
	}
	var files []string
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		eachFile(t, l, func(h *tar.Header, _ io.Reader) bool {
			if h.Typeflag == tar.TypeReg {
				files = append(files, h.Name)
			}
			return true
		})
	}
	want := "etc/ssl/certs/ca-certificates.crt usr/bin/ecr-node-auth"
	if strings.Join(files, " ") != want {
		t.Errorf("image files %v, want exactly %s (scratch + CA bundle + binary)", files, want)
	}
}

// eachFile walks a layer's tar; fn returns false to stop.
func eachFile(t *testing.T, l v1.Layer, fn func(h *tar.Header, r io.Reader) bool) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if !fn(h, tr) {
			return
		}
	}
}

func layerDigestOf(t *testing.T, img v1.Image, name string) v1.Hash {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		found := false
		eachFile(t, l, func(h *tar.Header, _ io.Reader) bool {
			found = h.Name == name
			return !found
		})
		if found {
			d, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatalf("no layer holds %s", name)
	return v1.Hash{}
}

// extractFile writes name from the image's layers to an executable temp file.
func extractFile(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(name))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		done := false
		eachFile(t, l, func(h *tar.Header, r io.Reader) bool {
			if h.Name != name || h.Typeflag != tar.TypeReg {
				return true
			}
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, data, 0o755); err != nil {
				t.Fatal(err)
			}
			if h.Mode&0o111 == 0 {
				t.Errorf("%s is not executable in the layer (mode %o)", name, h.Mode)
			}
			done = true
			return false
		})
		if done {
			return out
		}
	}
	t.Fatalf("no layer holds %s", name)
	return ""
}

// pushIndex uploads every image of idx (blobs, then manifests by digest) and the index
// under tag, speaking the distribution API as Basic AWS:<password>.
func pushIndex(reg *fakeaws.Registry, password, repo, tag string, idx v1.ImageIndex, images map[string]v1.Image) error {
	client := reg.Client()
	defer client.CloseIdleConnections()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("AWS:"+password))
	do := func(method, u, ctype string, body []byte, want int) (*http.Response, error) {
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", auth)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s: %s: %s", method, req.URL.Path, resp.Status, bytes.TrimSpace(msg))
		}
		return resp, nil
	}
	upload := func(d v1.Hash, data []byte) error {
		resp, err := do(http.MethodPost, reg.URL()+"/v2/"+repo+"/blobs/uploads/", "", nil, http.StatusAccepted)
		if err != nil {
			return err
		}
		loc, err := resp.Location()
		if err != nil {
			return err
		}
		q := loc.Query()
		q.Set("digest", d.String())
		loc.RawQuery = q.Encode()
		_, err = do(http.MethodPut, loc.String(), "application/octet-stream", data, http.StatusCreated)
		return err
	}
	for _, img := range images {
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			if err := upload(d, data); err != nil {
				return err
			}
		}
		cn, err := img.ConfigName()
		if err != nil {
			return err
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		if err := upload(cn, cfg); err != nil {
			return err
		}
		mt, err := img.MediaType()
		if err != nil {
			return err
		}
		raw, err := img.RawManifest()
		if err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		if _, err := do(http.MethodPut, reg.URL()+"/v2/"+repo+"/manifests/"+d.String(), string(mt), raw, http.StatusCreated); err != nil {
			return err
		}
	}
	mt, err := idx.MediaType()
	if err != nil {
		return err
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	_, err = do(http.MethodPut, reg.URL()+"/v2/"+repo+"/manifests/"+tag, string(mt), raw, http.StatusCreated)
	return err
}
