package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
)

const (
	helperName     = "docker-credential-ecr-node-auth"
	notFoundOutput = "credentials not found in native keychain"
	basePath       = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// TestDockerHelper: a real client, skopeo (containers/image), pulls imageRef from the
// fake registry with credentials from the docker credential helper (the binary through
// a docker-credential-ecr-node-auth symlink on PATH, "credHelpers" in its auth file),
// which asks the running daemon; without the helper the same pull is refused. Then the
// helper protocol is driven directly: get for every server URL form, list, store, erase,
// and a host that is not ECR.
//
// How the client reaches the registry under its ECR name: containers/image looks
// credentials up by the registry it really connects to (the physical reference after
// registries.conf rewrites: docker.newImageSourceAttempt hands physicalRef to
// newDockerClientFromRef). With a registries.conf [[registry]] prefix = the ECR host,
// location = 127.0.0.1:PORT, it would ask for the credentials of "127.0.0.1:PORT", which
// no ECR helper can serve (and Debian's skopeo 1.9.3 ignores CONTAINERS_REGISTRIES_CONF:
// it reads /etc/containers/registries.conf). So the client connects to the ECR name
// itself, through HTTPS_PROXY: a CONNECT proxy in this test tunnels <ecr-host>:443 (only)
// to a TLS front holding a certificate for the ECR host from a test CA (given to skopeo
// with --cert-dir), which forwards to the fake registry. That is the path of a node
// behind an HTTPS proxy: the name, the credential lookup and the TLS check are the
// client's own.
func TestDockerHelper(t *testing.T) {
	requirePrereqs(t)
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		harness.SkipOrFail(t, "e2e: skopeo not found (apt-get install skopeo, as .ci/run does)")
	}
	cw := newClientWorld(t)

	binDir := filepath.Join(cw.dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(binDir, helperName)
	if err := os.Symlink(daemonBin, helper); err != nil {
		t.Fatal(err)
	}
	front := newECRFront(t, cw)

	home := filepath.Join(cw.dir, "home")
	run := filepath.Join(cw.dir, "run")
	for _, d := range []string{home, run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	authFile := filepath.Join(cw.dir, "auth.json")
	writeJSON(t, authFile, map[string]any{"credHelpers": map[string]string{ecrHost: "ecr-node-auth"}})
	noHelperAuth := filepath.Join(cw.dir, "auth-empty.json")
	writeJSON(t, noHelperAuth, map[string]any{"auths": map[string]any{}})
	policy := filepath.Join(cw.dir, "policy.json")
	writeJSON(t, policy, map[string]any{"default": []map[string]string{{"type": "insecureAcceptAnything"}}})
	emptyRegConf := filepath.Join(cw.dir, "registries-empty.conf")
	if err := os.WriteFile(emptyRegConf, []byte("unqualified-search-registries = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// skopeo's whole environment: nothing from root's own auth files (newer skopeo
	// versions also read CONTAINERS_REGISTRIES_CONF instead of the system's).
	skopeoEnv := func(path string) []string {
		return []string{
			"PATH=" + path,
			"HOME=" + home,
			"XDG_RUNTIME_DIR=" + run,
			"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
			"ECR_NODE_AUTH_SOCKET=" + cw.d.Socket,
			"CONTAINERS_REGISTRIES_CONF=" + emptyRegConf,
			"HTTPS_PROXY=" + front.proxyURL,
		}
	}
	withHelper := skopeoEnv(binDir + ":" + basePath)
	withoutHelper := skopeoEnv(basePath)
	src := "docker://" + imageRef

	t.Run("skopeo", func(t *testing.T) {
		cw := *cw
		cw.t = t
		// No credHelpers entry: skopeo pulls anonymously and the registry refuses it.
		r := cw.run("skopeo-no-credhelpers", withHelper, "", skopeo, "--policy", policy,
			"inspect", "--authfile", noHelperAuth, "--cert-dir", front.certDir, src)
		if r.code == 0 || !deniedOutput(r.stderr) {
			t.Fatalf("skopeo inspect without credHelpers: exit %d, want refused as unauthorized: %s", r.code, r.stderr)
		}
		t.Logf("without credHelpers: exit %d: %s", r.code, lastLine(r.stderr))
		// credHelpers, but no docker-credential-ecr-node-auth on PATH: skopeo fails.
		r = cw.run("skopeo-no-helper", withoutHelper, "", skopeo, "--policy", policy,
			"inspect", "--authfile", authFile, "--cert-dir", front.certDir, src)
		if r.code == 0 || !bytes.Contains(r.stderr, []byte(helperName)) {
			t.Fatalf("skopeo inspect without the helper on PATH: exit %d, want a failure naming %s: %s", r.code, helperName, r.stderr)
		}
		t.Logf("without the helper on PATH: exit %d: %s", r.code, lastLine(r.stderr))
		allowedBefore := cw.reg.Allowed()

		r = cw.run("skopeo-inspect", withHelper, "", skopeo, "--policy", policy,
			"inspect", "--authfile", authFile, "--cert-dir", front.certDir, src)
		if r.code != 0 {
			t.Fatalf("skopeo inspect %s: exit %d: %s", src, r.code, r.stderr)
		}
		var insp struct {
			Name   string
			Digest string
		}
		if err := json.Unmarshal(r.stdout, &insp); err != nil {
			t.Fatalf("skopeo inspect output: %v\n%s", err, r.stdout)
		}
		if insp.Digest != cw.digest || insp.Name != ecrHost+"/"+repo {
			t.Errorf("skopeo inspect: name %q digest %q, want %s/%s %s", insp.Name, insp.Digest, ecrHost, repo, cw.digest)
		}
		t.Logf("skopeo inspect with the helper: %s %s in %v", insp.Name, insp.Digest, r.took.Round(time.Millisecond))

		out := filepath.Join(cw.dir, "oci")
		r = cw.run("skopeo-copy", withHelper, "", skopeo, "--policy", policy,
			"copy", "--authfile", authFile, "--src-cert-dir", front.certDir, src, "oci:"+out+":"+tag)
		if r.code != 0 {
			t.Fatalf("skopeo copy %s: exit %d: %s", src, r.code, r.stderr)
		}
		idx, err := os.ReadFile(filepath.Join(out, "index.json"))
		if err != nil || !bytes.Contains(idx, []byte(tag)) {
			t.Errorf("skopeo copy: the OCI layout's index.json (%v) does not name %s:\n%s", err, tag, idx)
		}
		t.Logf("skopeo copy to oci:%s in %v", out, r.time())

		// The registry let the client through with an ECR token the fake issued (the
		// daemon's), and the client connected to the ECR name.
		if cw.reg.Allowed() <= allowedBefore {
			t.Errorf("the registry allowed no request from skopeo")
		}
		for _, rq := range cw.reg.Requests() {
			if rq.Allowed && rq.Password != "" {
				if _, ok := cw.fake.LookupECRToken(rq.Password); !ok {
					t.Errorf("the registry allowed %s %s with a password the fake never issued", rq.Method, rq.Path)
				}
			}
		}
		if got := front.connects(); len(got) == 0 || got[0] != ecrHost+":443" {
			t.Errorf("the proxy saw CONNECT %v, want %s:443", got, ecrHost)
		}
	})

	t.Run("protocol", func(t *testing.T) {
		cw := *cw
		cw.t = t
		env := []string{"PATH=" + basePath, "HOME=" + home, "ECR_NODE_AUTH_SOCKET=" + cw.d.Socket}
		var pws []string
		for _, in := range []string{"https://" + ecrHost + "/", ecrHost + ":443", ecrHost} {
			r := cw.run("helper-get", env, in, helper, "get")
			if r.code != 0 {
				t.Errorf("get %q: exit %d stdout %q stderr %q", in, r.code, r.stdout, r.stderr)
				continue
			}
			var c struct{ ServerURL, Username, Secret string }
			if err := json.Unmarshal(r.stdout, &c); err != nil {
				t.Errorf("get %q: stdout is not the helper's JSON: %v", in, err)
				continue
			}
			if c.Username != "AWS" || c.Secret == "" || c.ServerURL == "" {
				t.Errorf("get %q: ServerURL %q Username %q Secret set %v", in, c.ServerURL, c.Username, c.Secret != "")
			}
			if len(r.stderr) != 0 {
				t.Errorf("get %q: stderr %q, want nothing", in, r.stderr)
			}
			if r.took >= time.Second {
				t.Errorf("get %q took %v, want well under 1s", in, r.took)
			}
			pws = append(pws, c.Secret)
		}
		for i, pw := range pws {
			if pw != pws[0] {
				t.Errorf("get: form %d gave another password than form 0", i)
			}
		}
		if len(pws) > 0 {
			cw.mustBeAccepted("helper get", pws[0])
		}
		// The same through the subcommand.
		r := cw.run("helper-subcommand-get", env, ecrHost, daemonBin, "credential-helper", "get")
		if r.code != 0 || !bytes.Contains(r.stdout, []byte(`"Username":"AWS"`)) {
			t.Errorf("ecr-node-auth credential-helper get: exit %d stderr %q", r.code, r.stderr)
		}

		r = cw.run("helper-list", env, "", helper, "list")
		var list map[string]string
		if err := json.Unmarshal(r.stdout, &list); r.code != 0 || err != nil {
			t.Errorf("list: exit %d, %v: %q", r.code, err, r.stdout)
		}
		found := false
		for k, v := range list {
			if strings.Contains(k, ecrHost) && v == "AWS" {
				found = true
			}
		}
		if !found {
			t.Errorf("list: %v, want %s → AWS", list, ecrHost)
		}

		store := `{"ServerURL":"111122223333.dkr.ecr.us-east-1.amazonaws.com","Username":"AWS","Secret":"x"}`
		if r := cw.run("helper-store", env, store, helper, "store"); r.code != 0 {
			t.Errorf("store (case 31): exit %d stdout %q stderr %q, want 0", r.code, r.stdout, r.stderr)
		}
		if r := cw.run("helper-erase", env, ecrHost, helper, "erase"); r.code != 0 {
			t.Errorf("erase: exit %d stdout %q stderr %q, want 0", r.code, r.stdout, r.stderr)
		}
		for _, in := range []string{"ghcr.io", "docker.io", "https://index.docker.io/v1/"} {
			r := cw.run("helper-get-not-ecr", env, in, helper, "get")
			if r.code != 1 || strings.TrimSuffix(string(r.stdout), "\n") != notFoundOutput || len(r.stderr) != 0 {
				t.Errorf("get %q: exit %d stdout %q stderr %q; want exit 1, stdout exactly %q, nothing on stderr",
					in, r.code, r.stdout, r.stderr, notFoundOutput)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		cw := *cw
		cw.t = t
		cw.scrapeMetrics()
	})
}

func (r execResult) time() time.Duration { return r.took.Round(time.Millisecond) }

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// deniedOutput reports whether a client's error output is the registry refusing it.
func deniedOutput(b []byte) bool {
	s := strings.ToLower(string(b))
	return strings.Contains(s, "unauthorized") || strings.Contains(s, "401") || strings.Contains(s, "authentication required")
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// ecrFront makes the fake registry reachable under the ECR host name: an HTTP CONNECT
// proxy that tunnels <ecrHost>:443 (only) to a TLS server holding a certificate for
// ecrHost, which forwards every request to the fake registry.
type ecrFront struct {
	proxyURL string
	certDir  string // ca.crt: the CA of the front's certificate

	mu       sync.Mutex
	connectd []string
}

func (f *ecrFront) connects() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.connectd...)
}

func newECRFront(t *testing.T, cw *clientWorld) *ecrFront {
	t.Helper()
	caPEM, leaf := frontCert(t, ecrHost)
	f := &ecrFront{certDir: filepath.Join(cw.dir, "certs-front")}
	if err := os.MkdirAll(f.certDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.certDir, "ca.crt"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	target, err := url.Parse(cw.reg.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = cw.reg.Client().Transport
	tlsLn, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = tlsSrv.Serve(tlsLn) }()
	t.Cleanup(func() { _ = tlsSrv.Close() })

	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.connectd = append(f.connectd, r.Host)
		f.mu.Unlock()
		if r.Method != http.MethodConnect || r.Host != ecrHost+":443" {
			http.Error(w, "this proxy only tunnels "+ecrHost+":443", http.StatusForbidden)
			return
		}
		up, err := net.Dial("tcp", tlsLn.Addr().String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			http.Error(w, "no hijack", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
		conn, buf, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		go func() {
			defer up.Close()
			defer conn.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(up, buf)
				close(done)
			}()
			_, _ = io.Copy(conn, up)
			<-done
		}()
	})}
	go func() { _ = proxy.Serve(proxyLn) }()
	t.Cleanup(func() { _ = proxy.Close() })
	f.proxyURL = "http://" + proxyLn.Addr().String()
	return f
}

// frontCert makes a CA and a leaf certificate for host signed by it.
func frontCert(t *testing.T, host string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ecr-node-auth e2e front CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}
