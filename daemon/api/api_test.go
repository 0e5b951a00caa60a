package api

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
)

const secret = "s3cr3t-PASSWORD-do-not-leak"

type fakeProvider struct {
	status Status
	health Health
	creds  map[string]Credentials // by image
	regs   []string
	// last request seen by WorkloadCredentials
	mu      sync.Mutex
	lastReq WorkloadRequest
}

func (f *fakeProvider) Status() Status { return f.status }
func (f *fakeProvider) Health() Health { return f.health }

func (f *fakeProvider) Credentials(_ context.Context, image string) (Credentials, error) {
	if image == "ghcr.io/a/b" {
		return Credentials{}, Errorf(CodeNotECR, "%q is not an Amazon ECR registry", "ghcr.io")
	}
	if image == "public.ecr.aws/nginx/nginx" {
		return Credentials{}, Errorf(CodeNoCredentials, "no ECR Public token for public.ecr.aws (pull anonymously)")
	}
	if image == "boom" {
		return Credentials{}, errors.New("internal trouble")
	}
	c, ok := f.creds[image]
	if !ok {
		return Credentials{}, Errorf(CodeNotReady, "no usable ECR token for %s: AccessDenied", image)
	}
	return c, nil
}

func (f *fakeProvider) WorkloadCredentials(ctx context.Context, r WorkloadRequest) (Credentials, error) {
	f.mu.Lock()
	f.lastReq = r
	f.mu.Unlock()
	c, err := f.Credentials(ctx, r.Image)
	if err == nil && r.ServiceAccountAnnotations["eks.amazonaws.com/role-arn"] != "" {
		c.Source = SourceWorkload
	}
	return c, err
}

func (f *fakeProvider) Registries() []string { return f.regs }

// sockPath is short enough for sun_path (108 bytes).
func sockPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "auth.sock")
}

func listen(t *testing.T, path string, p Provider) *Server {
	t.Helper()
	s, err := Listen(path, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestStatusNeverHoldsASecret(t *testing.T) {
	host, err := ecrhost.Parse("111122223333.dkr.ecr.us-east-1.amazonaws.com")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cred := &tokens.Credential{Username: "AWS", Password: secret, FetchedAt: now, ExpiresAt: now.Add(12 * time.Hour)}
	e := tokens.Entry{Host: host, Credential: cred, LastRefresh: now, NextRefresh: now.Add(6 * time.Hour)}
	id := identity.Status{Mode: identity.ModeWebIdentity, RoleARN: "arn:aws:iam::111122223333:role/r",
		Claims:              identity.Claims{Issuer: "https://oidc.example", Subject: "system:serviceaccount:kube-system:ecr-node-auth"},
		CredentialsExpireAt: now.Add(time.Hour)}
	p := &fakeProvider{
		status: Status{Version: "test", Ready: true, Identity: IdentityFrom(id), Registries: []Registry{RegistryFrom(e, now)}},
		health: Health{Status: "ok"},
	}
	path := sockPath(t)
	listen(t, path, p)

	for _, route := range []string{PathStatus, PathHealth} {
		body := rawGet(t, path, route)
		for _, bad := range []string{secret, cred.AuthorizationHeader(), strings.TrimPrefix(cred.AuthorizationHeader(), "Basic ")} {
			if strings.Contains(body, bad) {
				t.Fatalf("%s leaks a secret: %s", route, body)
			}
		}
	}
	st, err := NewClient(path).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := st.Registries[0]
	if r.Host != host.Name || r.Region != "us-east-1" || !r.Valid || !r.ExpiresAt.Equal(cred.ExpiresAt) {
		t.Errorf("registry %+v", r)
	}
	if st.Identity.Subject != id.Claims.Subject || st.Identity.RoleARN != id.RoleARN {
		t.Errorf("identity %+v", st.Identity)
	}
}

func rawGet(t *testing.T, sock, path string) string {
	t.Helper()
	c := NewClient(sock)
	resp, err := c.hc.Get("http://x" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSocketModeAndRoutes(t *testing.T) {
	p := &fakeProvider{status: Status{Version: "v1.2.3", Notes: []string{"no registries configured: idle"}}, health: Health{Status: "ok"}}
	path := sockPath(t)
	s := listen(t, path, p)
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", st.Mode())
	}
	c := NewClient(path)
	ctx := context.Background()
	got, err := c.Status(ctx)
	if err != nil || got.Version != "v1.2.3" || got.Notes[0] != "no registries configured: idle" {
		t.Errorf("status %+v %v", got, err)
	}
	h, err := c.Health(ctx)
	if err != nil || h.Status != "ok" {
		t.Errorf("health %+v %v", h, err)
	}
	p.health = Health{Status: "unhealthy", Reasons: []string{"registry x: no valid token"}}
	h, err = c.Health(ctx)
	if err != nil || h.Status != "unhealthy" || len(h.Reasons) != 1 {
		t.Errorf("health %+v %v", h, err)
	}
	hc := c.hc
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", PathHealth, 503},
		{"POST", PathStatus, 405},
		{"GET", "/v2/status", 404},
		{"GET", "/", 404},
	} {
		req, _ := http.NewRequest(tt.method, "http://x"+tt.path, strings.NewReader(""))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	if _, err := c.Status(ctx); err == nil || !errors.Is(err, ErrDaemonUnreachable) ||
		!strings.HasPrefix(err.Error(), "cannot reach ecr-node-auth at "+path+": is the daemon running? (systemctl status ecr-node-auth)") {
		t.Errorf("after close: %v", err)
	}
}

func TestStaleSocket(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr string // "" = Listen succeeds
	}{
		{"nothing there", func(*testing.T, string) {}, ""},
		{"stale socket from a dead daemon", func(t *testing.T, path string) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
		}, ""},
		{"live daemon", func(t *testing.T, path string) {
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, "another ecr-node-auth is already serving on"},
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "is a regular file, not a socket"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "is a directory, not a socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := sockPath(t)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.prepare(t, path)
			s, err := Listen(path, &fakeProvider{health: Health{Status: "ok"}}, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				defer s.Close(context.Background())
				if _, err := NewClient(path).Health(context.Background()); err != nil {
					t.Errorf("health: %v", err)
				}
				return
			}
			if err == nil {
				s.Close(context.Background())
				t.Fatal("Listen succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want %q", err, tt.wantErr)
			}
			if _, serr := os.Lstat(path); serr != nil {
				t.Errorf("the existing path was removed: %v", serr)
			}
		})
	}
}

func TestSlowClientIsCut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the header timeout")
	}
	path := sockPath(t)
	listen(t, path, &fakeProvider{})
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /v1/status HTTP/1.1\r\n")) // never finishes the headers
	conn.SetReadDeadline(time.Now().Add(readHeaderTimeout + 3*time.Second))
	start := time.Now()
	b, _ := io.ReadAll(conn)
	if d := time.Since(start); d > readHeaderTimeout+2*time.Second {
		t.Errorf("connection held %v", d)
	}
	if strings.Contains(string(b), "200 OK") {
		t.Errorf("answered an incomplete request: %q", b)
	}
}

func TestResolveSocket(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("socket: /tmp/from-config.sock\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flag, env, config string
		want              string
	}{
		{"/tmp/flag.sock", "/tmp/env.sock", cfg, "/tmp/flag.sock"},
		{"", "/tmp/env.sock", cfg, "/tmp/env.sock"},
		{"", "", cfg, "/tmp/from-config.sock"},
		{"", "", filepath.Join(dir, "missing.yaml"), "/run/ecr-node-auth/auth.sock"},
		{"", "", "", "/run/ecr-node-auth/auth.sock"},
	}
	for _, tt := range tests {
		t.Setenv(EnvSocket, tt.env)
		if got, _ := ResolveSocket(tt.flag, tt.config); got != tt.want {
			t.Errorf("ResolveSocket(%q, env %q, %q) = %q, want %q", tt.flag, tt.env, tt.config, got, tt.want)
		}
	}
}
