package fakeaws

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// RegistryRealm is the realm of the registry's Basic challenge.
const RegistryRealm = "fake-ecr"

// Registry is an HTTPS OCI registry (go-containerregistry's in-process one) behind a gate that
// accepts only Basic AWS:<password> where the password is an unexpired private ECR token the
// Fake issued (expiry on the Fake's clock).
type Registry struct {
	fake   *Fake
	srv    *http.Server
	host   string
	dir    string
	caFile string
	caPEM  []byte
	pool   *x509.CertPool

	mu       sync.Mutex
	allowed  int
	denied   int
	region   string
	injected []RegistryResponse
	requests []RegistryRequest
}

// RegistryResponse is a canned answer the registry gives instead of serving a request, e.g.
// ECR's 403 "Your authorization token has expired. Reauthenticate and try again." (case 9).
type RegistryResponse struct {
	Status int
	Body   string
	Header http.Header
}

// RegistryRequest is one request the registry received.
type RegistryRequest struct {
	Method   string
	Path     string // e.g. /v2/app/manifests/v1
	Status   int
	Password string // the ECR password presented as Basic AWS:<password>, "" if none
	Allowed  bool   // the gate let it through (before any injected response)
}

// NewRegistry starts the registry on 127.0.0.1 with a fresh self-signed CA (certificate for
// 127.0.0.1, ::1 and localhost). The CA PEM is written to CAFile(). Close removes it.
func NewRegistry(f *Fake) (*Registry, error) {
	dir, err := os.MkdirTemp("", "fakeaws-registry-")
	if err != nil {
		return nil, err
	}
	caPEM, leaf, err := newTLSPair()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	r := &Registry{fake: f, host: ln.Addr().String(), dir: dir, caFile: caFile, caPEM: caPEM, pool: pool}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{
		Handler:           r.gate(inner),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12},
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = r.srv.ServeTLS(ln, "", "") }()
	return r, nil
}

// Close stops the server and removes the CA file.
func (r *Registry) Close() {
	_ = r.srv.Close()
	_ = os.RemoveAll(r.dir)
}

// URL is "https://127.0.0.1:PORT".
func (r *Registry) URL() string { return "https://" + r.host }

// Host is "127.0.0.1:PORT".
func (r *Registry) Host() string { return r.host }

// CAFile is the path of the CA certificate PEM (for hosts.toml `ca`).
func (r *Registry) CAFile() string { return r.caFile }

// CAPEM is the CA certificate in PEM form.
func (r *Registry) CAPEM() []byte { return r.caPEM }

// CertPool holds the CA, for HTTP clients.
func (r *Registry) CertPool() *x509.CertPool { return r.pool }

// Client is an HTTP client that trusts the registry's CA.
func (r *Registry) Client() *http.Client {
	return &http.Client{Transport: r.transport(), Timeout: 30 * time.Second}
}

// Allowed counts requests let through the gate.
func (r *Registry) Allowed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.allowed
}

// Denied counts requests refused by the gate.
func (r *Registry) Denied() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.denied
}

// RequireRegion makes the gate accept only tokens issued in region (as a real ECR registry
// host does); others get 400 Bad Request. "" accepts any region (the default).
func (r *Registry) RequireRegion(region string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.region = region
}

type registryError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail"`
}

// InjectResponses queues canned answers for the next requests, in order (counted as allowed
// or denied by the gate as usual, but answered with the canned response).
func (r *Registry) InjectResponses(rs ...RegistryResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.injected = append(r.injected, rs...)
}

// Requests returns every request received, in order.
func (r *Registry) Requests() []RegistryRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RegistryRequest(nil), r.requests...)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (r *Registry) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		status, msg := r.check(req)
		w := &statusWriter{ResponseWriter: rw}
		r.mu.Lock()
		if status == 0 {
			r.allowed++
		} else {
			r.denied++
		}
		var canned *RegistryResponse
		if len(r.injected) > 0 {
			canned = &r.injected[0]
			r.injected = r.injected[1:]
		}
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.requests = append(r.requests, RegistryRequest{Method: req.Method, Path: req.URL.Path, Status: w.status,
				Password: presentedPassword(req), Allowed: status == 0})
			r.mu.Unlock()
		}()
		if canned != nil {
			for k, v := range canned.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(canned.Status)
			_, _ = io.WriteString(w, canned.Body)
			return
		}
		if status == 0 {
			next.ServeHTTP(w, req)
			return
		}
		code := "UNAUTHORIZED"
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+RegistryRealm+`"`)
		} else {
			code = "DENIED"
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string][]registryError{"errors": {{Code: code, Message: msg}}})
	})
}

// presentedPassword is the password of "Basic AWS:<password>", or "".
func presentedPassword(req *http.Request) string {
	enc, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Basic ")
	if !ok {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return ""
	}
	user, pw, ok := strings.Cut(string(raw), ":")
	if !ok || user != "AWS" {
		return ""
	}
	return pw
}

// check returns 0 to allow, or the status and message to deny with.
func (r *Registry) check(req *http.Request) (int, string) {
	pw := presentedPassword(req)
	if pw == "" {
		return http.StatusUnauthorized, "authentication required"
	}
	tok, ok := r.fake.LookupECRToken(pw)
	if !ok || tok.Public {
		return http.StatusUnauthorized, "authentication required"
	}
	if !r.fake.now().Before(tok.Expires) {
		return http.StatusUnauthorized, "Your authorization token has expired. Reauthenticate and try again."
	}
	r.mu.Lock()
	region := r.region
	r.mu.Unlock()
	if region != "" && tok.Region != region {
		return http.StatusBadRequest, "Bad Request: token issued for region " + tok.Region
	}
	return 0, ""
}

func (r *Registry) transport() http.RoundTripper {
	return &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: r.pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}
}

// PushRandomImage pushes a small random linux/amd64 image (one layer of 4 KiB) to repo:tag,
// through the gate with a freshly issued token, and returns its manifest digest.
func (r *Registry) PushRandomImage(repo, tag string) (string, error) {
	return r.PushRandomImageContext(context.Background(), repo, tag)
}

// PushRandomImageContext is PushRandomImage with a context.
func (r *Registry) PushRandomImageContext(ctx context.Context, repo, tag string) (string, error) {
	img, err := random.Image(4096, 1)
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"/bin/true"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return "", err
	}
	pw := r.fake.IssueECRToken("us-east-1")
	if err := r.push(ctx, repo, tag, img, pw); err != nil {
		return "", fmt.Errorf("push %s/%s:%s: %w", r.host, repo, tag, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

func newTLSPair() (caPEM []byte, leaf tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, leaf, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fakeaws test CA", Organization: []string{"ecr-node-auth tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, leaf, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, leaf, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, leaf, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, leaf, err
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if caPEM == nil {
		return nil, leaf, errors.New("encode CA")
	}
	leaf = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return caPEM, leaf, nil
}

// push uploads img with the distribution API (blob uploads, then the manifest), as
// Basic AWS:<password>. (go-containerregistry's remote package would pull docker/cli into
// the module graph; the protocol is small enough to speak directly.)
func (r *Registry) push(ctx context.Context, repo, tag string, img v1.Image, password string) error {
	client := r.Client()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("AWS:"+password))
	do := func(method, u, ctype string, body []byte, want int) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
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
	upload := func(digest v1.Hash, data []byte) error {
		resp, err := do(http.MethodPost, r.URL()+"/v2/"+repo+"/blobs/uploads/", "", nil, http.StatusAccepted)
		if err != nil {
			return err
		}
		loc, err := resp.Location()
		if err != nil {
			return err
		}
		q := loc.Query()
		q.Set("digest", digest.String())
		loc.RawQuery = q.Encode()
		_, err = do(http.MethodPut, loc.String(), "application/octet-stream", data, http.StatusCreated)
		return err
	}
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
		_ = rc.Close()
		if err != nil {
			return err
		}
		if err := upload(d, data); err != nil {
			return err
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := upload(cfgName, cfg); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	_, err = do(http.MethodPut, r.URL()+"/v2/"+repo+"/manifests/"+tag, string(mt), manifest, http.StatusCreated)
	return err
}
