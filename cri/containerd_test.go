package cri

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

// loadHosts asks containerd's own hosts.toml loader what it makes of the
// certs dir for host, exactly as the CRI plugin does on a pull.
func loadHosts(t *testing.T, certsDir, host string) ([]docker.RegistryHost, error) {
	t.Helper()
	return config.ConfigureHosts(context.Background(), config.HostOptions{
		HostDir: config.HostDirFromRoot(certsDir),
	})(host)
}

// writeAndLoad writes h into a fresh certs dir and returns what
// containerd's loader makes of it.
func writeAndLoad(t *testing.T, h HostConfig) []docker.RegistryHost {
	t.Helper()
	dir := t.TempDir()
	if _, err := NewWriter(dir, nil).Write(h); err != nil {
		t.Fatal(err)
	}
	hosts, err := loadHosts(t, dir, h.Host)
	if err != nil {
		t.Fatal(err)
	}
	return hosts
}

// loadedCA reports whether containerd put a CA pool into h's TLS config.
func loadedCA(h docker.RegistryHost) bool {
	tr, ok := h.Client.Transport.(*http.Transport)
	return ok && tr.TLSClientConfig != nil && tr.TLSClientConfig.RootCAs != nil
}

// writeCA writes a self-signed CA certificate in PEM form.
func writeCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ecr-node-auth test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestContainerdLoadsRenderedFile(t *testing.T) {
	caDir := t.TempDir()
	ca := filepath.Join(caDir, `odd "name"\ca.pem`) // escaping must survive containerd's decoder
	writeCA(t, ca)

	tests := []struct {
		name       string
		h          HostConfig
		wantScheme string
		wantHost   string
	}{
		{"plain", HostConfig{Host: ecrHost, Authorization: fakeAuth}, "https", ecrHost},
		{"endpoint", HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", Authorization: fakeAuth}, "https", "127.0.0.1:5443"},
		{"endpoint ca", HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", CA: ca, Authorization: fakeAuth}, "https", "127.0.0.1:5443"},
		{"http endpoint", HostConfig{Host: ecrHost, Endpoint: "http://127.0.0.1:5000", Authorization: fakeAuth}, "http", "127.0.0.1:5000"},
		{"escaped value", HostConfig{Host: ecrHost, Authorization: `Basic a"b\c`}, "https", ecrHost},
		{"host with port", HostConfig{Host: "registry.local:5000", Authorization: fakeAuth}, "https", "registry.local:5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := writeAndLoad(t, tt.h)
			// Ours first, then containerd's entry for `server` (the fallback).
			if len(hosts) != 2 {
				t.Fatalf("containerd loaded %d hosts, want 2: %+v", len(hosts), hosts)
			}
			got := hosts[0]
			if got.Scheme != tt.wantScheme || got.Host != tt.wantHost || got.Path != "/v2" {
				t.Errorf("host = %s://%s%s, want %s://%s/v2", got.Scheme, got.Host, got.Path, tt.wantScheme, tt.wantHost)
			}
			if want := docker.HostCapabilityPull | docker.HostCapabilityResolve; got.Capabilities != want {
				t.Errorf("capabilities = %b, want pull|resolve = %b", got.Capabilities, want)
			}
			if got.Capabilities.Has(docker.HostCapabilityPush) {
				t.Errorf("push capability granted")
			}
			if a := got.Header.Values("Authorization"); len(a) != 1 || a[0] != tt.h.Authorization {
				t.Errorf("Authorization header not loaded as written (%d values)", len(a))
			}
			// The fallback must never be the real ECR name when an endpoint is set.
			if fb := hosts[1]; fb.Host != tt.wantHost || fb.Scheme != tt.wantScheme {
				t.Errorf("fallback server = %s://%s, want %s://%s", fb.Scheme, fb.Host, tt.wantScheme, tt.wantHost)
			}
			if tt.h.CA != "" && !loadedCA(got) {
				t.Errorf("containerd did not load the CA into the host's TLS config")
			}
		})
	}
}

// TestContainerdLoadsMirror loads the pull-through cache form with
// containerd's loader: the cache first, at its path as written
// (override_path: no second /v2), with pull|resolve and the header; then the
// upstream as containerd itself names it, without the header or the CA, so
// the ECR token never goes to the upstream.
func TestContainerdLoadsMirror(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	writeCA(t, ca)
	tests := []struct {
		name         string
		h            HostConfig
		wantHost     string // the cache: scheme https, Path /v2/<prefix>
		wantPath     string
		wantFallback string
	}{
		{"docker hub", HostConfig{Host: "docker.io", Authorization: fakeAuth, Mirror: &Mirror{ECRHost: mirrorECR, Prefix: "docker-hub"}},
			mirrorECR, "/v2/docker-hub", "registry-1.docker.io"},
		{"nested prefix, endpoint and ca", HostConfig{Host: "ghcr.io", Endpoint: "https://127.0.0.1:5443", CA: ca, Authorization: fakeAuth,
			Mirror: &Mirror{ECRHost: mirrorECR, Prefix: "cache/ghcr"}},
			"127.0.0.1:5443", "/v2/cache/ghcr", "ghcr.io"},
		{"upstream with port", HostConfig{Host: "registry.local:5000", Authorization: fakeAuth, Mirror: &Mirror{ECRHost: mirrorECR, Prefix: "local"}},
			mirrorECR, "/v2/local", "registry.local:5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := writeAndLoad(t, tt.h)
			if len(hosts) != 2 {
				t.Fatalf("containerd loaded %d hosts, want the cache and the upstream: %+v", len(hosts), hosts)
			}
			c := hosts[0]
			if c.Scheme != "https" || c.Host != tt.wantHost || c.Path != tt.wantPath {
				t.Errorf("cache = %s://%s%s, want https://%s%s", c.Scheme, c.Host, c.Path, tt.wantHost, tt.wantPath)
			}
			if want := docker.HostCapabilityPull | docker.HostCapabilityResolve; c.Capabilities != want {
				t.Errorf("cache capabilities = %b, want pull|resolve = %b", c.Capabilities, want)
			}
			if a := c.Header.Values("Authorization"); len(a) != 1 || a[0] != fakeAuth {
				t.Errorf("cache Authorization header not loaded as written (%d values)", len(a))
			}
			if tt.h.CA != "" && !loadedCA(c) {
				t.Errorf("containerd did not load the CA into the cache's TLS config")
			}
			up := hosts[1]
			if up.Scheme != "https" || up.Host != tt.wantFallback || up.Path != "/v2" {
				t.Errorf("fallback = %s://%s%s, want https://%s/v2", up.Scheme, up.Host, up.Path, tt.wantFallback)
			}
			if len(up.Header.Values("Authorization")) != 0 {
				t.Errorf("the upstream fallback carries the ECR Authorization header")
			}
		})
	}
}

// TestContainerdReadsCA proves containerd parses our `ca` key: a missing
// bundle fails the whole lookup and names the path.
func TestContainerdReadsCA(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	w := NewWriter(dir, nil)
	if _, err := w.Write(HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", CA: missing, Authorization: fakeAuth}); err != nil {
		t.Fatal(err)
	}
	_, err := loadHosts(t, dir, ecrHost)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("want an error naming %s, got %v", missing, err)
	}
}

// TestNaiveRootOnlyForm documents case 20. containerd 1.6 rejects a file
// with root keys only ("invalid `host` tree") and pulls anonymously, which
// is why Render always emits a [host."…"] table. containerd v2's loader
// does accept the naive file, but not the same way: the root entry gets
// every capability, push included, instead of pull|resolve.
func TestNaiveRootOnlyForm(t *testing.T) {
	dir := t.TempDir()
	naive := "server = \"https://" + ecrHost + "\"\n[header]\n  Authorization = \"" + fakeAuth + "\"\n"
	if err := os.MkdirAll(filepath.Join(dir, ecrHost), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ecrHost, "hosts.toml"), []byte(naive), 0o600); err != nil {
		t.Fatal(err)
	}
	hosts, err := loadHosts(t, dir, ecrHost)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 {
		t.Fatalf("naive form: %d hosts", len(hosts))
	}
	if !hosts[0].Capabilities.Has(docker.HostCapabilityPush) {
		t.Errorf("containerd v2 no longer grants push to a root-only file; update this test's comment")
	}
	if hosts[0].Header.Get("Authorization") != fakeAuth {
		t.Errorf("containerd v2 no longer reads a root-level header; update this test's comment")
	}
}

// TestContainerdIgnoresTempFiles: a temp file left by a crash before the
// rename is never read as hosts.toml.
func TestContainerdIgnoresTempFiles(t *testing.T) {
	dir := t.TempDir()
	hostDir := filepath.Join(dir, ecrHost)
	if err := os.MkdirAll(hostDir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := Render(HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", Authorization: fakeAuth})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, tmpPrefix+"123"+tmpSuffix), out, 0o600); err != nil {
		t.Fatal(err)
	}
	hosts, err := loadHosts(t, dir, ecrHost)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].Host != ecrHost || hosts[0].Header.Get("Authorization") != "" {
		t.Errorf("containerd read the temp file: %+v", hosts)
	}
}
