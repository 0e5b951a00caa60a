package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	cfgHost = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	saToken = "eyJhbGciOi-SA-TOKEN-never-logged"
	roleARN = "arn:aws:iam::111122223333:role/team-a-pull"
)

func credsProvider() *fakeProvider {
	now := time.Now().UTC().Truncate(time.Second)
	c := Credentials{Registry: cfgHost, Username: "AWS", Password: secret, ExpiresAt: now.Add(12 * time.Hour), FetchedAt: now, Source: SourceConfigured}
	c443 := c
	c443.Registry = cfgHost + ":443"
	return &fakeProvider{
		health: Health{Status: "ok"},
		creds:  map[string]Credentials{cfgHost + "/app:1": c, cfgHost: c, cfgHost + ":443/app:1": c443},
		regs:   []string{cfgHost},
	}
}

type rawAnswer struct {
	code int
	body string
}

func do(t *testing.T, c *Client, method, path string, body io.Reader) rawAnswer {
	t.Helper()
	req, _ := http.NewRequest(method, "http://x"+path, body)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawAnswer{resp.StatusCode, string(b)}
}

func TestCredentialsWire(t *testing.T) {
	p := credsProvider()
	path := sockPath(t)
	listen(t, path, p)
	c := NewClient(path)
	big := `{"image":"` + cfgHost + `/app:1","serviceAccountToken":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantJSON                 map[string]any // fields that must match
		wantIn                   string         // substring of the body
	}{
		{"configured host", "GET", PathCredentials + "?image=" + cfgHost + "/app:1", "", 200,
			map[string]any{"registry": cfgHost, "username": "AWS", "password": secret, "source": "configured"}, ""},
		{"port kept", "GET", PathCredentials + "?image=" + cfgHost + ":443/app:1", "", 200,
			map[string]any{"registry": cfgHost + ":443"}, ""},
		{"escaped query", "GET", PathCredentials + "?x=1&image=" + strings.ReplaceAll(cfgHost+"/app:1", ":", "%3A"), "", 200,
			map[string]any{"registry": cfgHost}, ""},
		{"not ECR", "GET", PathCredentials + "?image=ghcr.io/a/b", "", 404,
			map[string]any{"code": "not_ecr"}, "is not an Amazon ECR registry"},
		{"not ready", "GET", PathCredentials + "?image=222233334444.dkr.ecr.eu-west-1.amazonaws.com", "", 503,
			map[string]any{"code": "not_ready"}, "AccessDenied"},
		{"missing image", "GET", PathCredentials, "", 400, map[string]any{"code": "bad_request"}, `missing query parameter \"image\"`},
		{"bad escape", "GET", PathCredentials + "?image=%zz", "", 400, map[string]any{"code": "bad_request"}, ""},
		{"internal error", "GET", PathCredentials + "?image=boom", "", 500, nil, "internal trouble"},
		{"POST node fallback", "POST", PathCredentials, `{"image":"` + cfgHost + `/app:1","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{}}`, 200,
			map[string]any{"source": "configured", "password": secret}, ""},
		{"POST workload", "POST", PathCredentials, `{"image":"` + cfgHost + `/app:1","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{"eks.amazonaws.com/role-arn":"` + roleARN + `"}}`, 200,
			map[string]any{"source": "workload"}, ""},
		{"POST not JSON", "POST", PathCredentials, `{"image": ` + saToken, 400, map[string]any{"code": "bad_request"}, "not a JSON object"},
		{"POST wrong type", "POST", PathCredentials, `{"image": 5}`, 400, map[string]any{"code": "bad_request"}, `field \"image\" must be string`},
		{"POST no image", "POST", PathCredentials, `{"serviceAccountToken":"` + saToken + `"}`, 400, map[string]any{"code": "bad_request"}, `missing \"image\"`},
		{"POST too large", "POST", PathCredentials, big, 413, map[string]any{"code": "bad_request"}, "larger than 64 KiB"},
		{"PUT refused", "PUT", PathCredentials, "", 405, map[string]any{"code": "bad_request"}, ""},
		{"unknown path", "GET", "/v1/nope", "", 404, map[string]any{"code": "not_found"}, `no such API path \"/v1/nope\"`},
		{"ECR Public without a token", "GET", PathCredentials + "?image=public.ecr.aws/nginx/nginx", "", 404, map[string]any{"code": "no_credentials"}, "pull anonymously"},
		{"registries", "GET", PathRegistries, "", 200, nil, `"registries": [` + "\n    \"" + cfgHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			a := do(t, c, tt.method, tt.path, body)
			if a.code != tt.wantCode {
				t.Fatalf("code %d, want %d: %s", a.code, tt.wantCode, a.body)
			}
			if tt.wantIn != "" && !strings.Contains(a.body, tt.wantIn) {
				t.Errorf("body %s, want it to contain %s", a.body, tt.wantIn)
			}
			if strings.Contains(a.body, saToken) {
				t.Errorf("the service-account token is echoed: %s", a.body)
			}
			if tt.wantJSON != nil {
				var m map[string]any
				if err := json.Unmarshal([]byte(a.body), &m); err != nil {
					t.Fatalf("not JSON: %v: %s", err, a.body)
				}
				for k, v := range tt.wantJSON {
					if m[k] != v {
						t.Errorf("%s = %v, want %v (%s)", k, m[k], v, a.body)
					}
				}
				if a.code != 200 && (m["error"] == nil || m["error"] == "") {
					t.Errorf("error answer without a message: %s", a.body)
				}
				if a.code == 200 {
					for _, k := range []string{"expiresAt", "fetchedAt"} {
						if _, err := time.Parse(time.RFC3339, fmt.Sprint(m[k])); err != nil {
							t.Errorf("%s not RFC3339: %v", k, m[k])
						}
					}
				}
			}
		})
	}
}

func TestClientCredentials(t *testing.T) {
	p := credsProvider()
	path := sockPath(t)
	listen(t, path, p)
	c := NewClient(path)
	ctx := context.Background()

	got, err := c.Credentials(ctx, cfgHost+"/app:1")
	if err != nil || got.Password != secret || got.Username != "AWS" || got.Registry != cfgHost || got.Source != SourceConfigured || got.ExpiresAt.IsZero() {
		t.Fatalf("Credentials: %v %v", got, err)
	}
	req := WorkloadRequest{Image: cfgHost + "/app:1", ServiceAccountToken: saToken,
		ServiceAccountAnnotations: map[string]string{"eks.amazonaws.com/role-arn": roleARN}}
	w, err := c.WorkloadCredentials(ctx, req)
	if err != nil || w.Source != SourceWorkload {
		t.Fatalf("WorkloadCredentials: %v %v", w, err)
	}
	p.mu.Lock()
	if p.lastReq.ServiceAccountToken != saToken || p.lastReq.ServiceAccountAnnotations["eks.amazonaws.com/role-arn"] != roleARN {
		t.Errorf("server got %v", p.lastReq)
	}
	p.mu.Unlock()
	regs, err := c.Registries(ctx)
	if err != nil || len(regs) != 1 || regs[0] != cfgHost {
		t.Errorf("Registries: %v %v", regs, err)
	}

	_, err = c.Credentials(ctx, "ghcr.io/a/b")
	var ae *APIError
	if !errors.Is(err, ErrNotECR) || !errors.As(err, &ae) || ae.Status != 404 || ae.Code != CodeNotECR || !strings.Contains(ae.Message, "not an Amazon ECR registry") {
		t.Errorf("not ECR: %#v", err)
	}
	_, err = c.Credentials(ctx, "222233334444.dkr.ecr.eu-west-1.amazonaws.com")
	if !errors.Is(err, ErrNotReady) || errors.Is(err, ErrNotECR) {
		t.Errorf("not ready: %v", err)
	}

	// Daemon down: ErrDaemonUnreachable, fast.
	down := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	start := time.Now()
	_, err = down.Credentials(ctx, cfgHost)
	if !errors.Is(err, ErrDaemonUnreachable) || !strings.Contains(err.Error(), "none.sock") || !strings.Contains(err.Error(), "is the daemon running?") {
		t.Errorf("down: %v", err)
	}
	if d := time.Since(start); d > DialTimeout {
		t.Errorf("down took %v", d)
	}
}

// Printing Credentials or WorkloadRequest, in every way, never shows a secret.
func TestRedaction(t *testing.T) {
	c := Credentials{Registry: cfgHost, Username: "AWS", Password: secret, Source: SourceConfigured}
	r := WorkloadRequest{Image: cfgHost, ServiceAccountToken: saToken, ServiceAccountAnnotations: map[string]string{"a": "b"}}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "c", c, "r", r)
	cj, _ := json.Marshal(c)
	rj, _ := json.Marshal(r)
	ct, _ := c.MarshalText()
	rt, _ := r.MarshalText()
	outs := []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q %x %d", c, c, c, c, c, c, c), c.String(), c.GoString(), string(cj), string(ct),
		fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s %q", r, r, r, r, r), r.String(), r.GoString(), string(rj), string(rt),
		fmt.Sprintf("%v", []Credentials{c}), fmt.Sprintf("%+v", struct{ C Credentials }{c}), logs.String(),
	}
	for _, o := range outs {
		if strings.Contains(o, secret) || strings.Contains(o, saToken) {
			t.Errorf("secret printed: %s", o)
		}
	}
	if !strings.Contains(c.String(), "REDACTED") || !strings.Contains(r.String(), "REDACTED") {
		t.Errorf("no redaction marker: %s %s", c, r)
	}
}

func TestPeerPolicy(t *testing.T) {
	groups := func(uid int) ([]int, error) {
		if uid == 1001 {
			return []int{100, 4242}, nil
		}
		return nil, errors.New("no such user")
	}
	tests := []struct {
		name     string
		policy   PeerPolicy
		uid, gid uint32
		wantErr  string // "" = allowed
	}{
		{"root", PeerPolicy{OwnUID: 999, GID: -1}, 0, 0, ""},
		{"own uid", PeerPolicy{OwnUID: 999, GID: -1}, 999, 5, ""},
		{"stranger, no group", PeerPolicy{OwnUID: 999, GID: -1}, 1000, 1000, "set socketGroup in the daemon's config"},
		{"primary gid", PeerPolicy{OwnUID: 999, GID: 4242, GroupName: "ecr-auth", GroupIDs: groups}, 1000, 4242, ""},
		{"supplementary gid", PeerPolicy{OwnUID: 999, GID: 4242, GroupName: "ecr-auth", GroupIDs: groups}, 1001, 1001, ""},
		{"not a member", PeerPolicy{OwnUID: 999, GID: 4242, GroupName: "ecr-auth", GroupIDs: groups}, 1002, 1002, `members of socketGroup "ecr-auth"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Allow(&unix.Ucred{Pid: 42, Uid: tt.uid, Gid: tt.gid})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
	if err := (PeerPolicy{}).Allow(nil); err == nil {
		t.Error("nil ucred allowed")
	}
}

// A peer under another uid gets 403 forbidden, over the real socket (the
// socket file is opened to everyone for the test so the refusal comes from
// SO_PEERCRED, not from the file mode).
func TestForbiddenPeer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client under another uid")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	path := sockPath(t)
	listen(t, path, credsProvider())
	for d := filepath.Dir(path); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, route := range []string{PathCredentials + "?image=" + cfgHost, PathStatus} {
		cmd := exec.Command(curl, "-s", "-w", "\n%{http_code}", "--unix-socket", path, "http://x"+route)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		s := string(out)
		if !strings.HasSuffix(s, "\n403") || !strings.Contains(s, `"code": "forbidden"`) || !strings.Contains(s, "uid 65534") || !strings.Contains(s, "socketGroup") {
			t.Errorf("%s: %s", route, s)
		}
		if strings.Contains(s, secret) {
			t.Errorf("secret served to a forbidden peer")
		}
	}
	// Root (this process) is still served.
	if _, err := NewClient(path).Credentials(context.Background(), cfgHost); err != nil {
		t.Errorf("root refused: %v", err)
	}
}

func TestSocketGroupMode(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown the socket")
	}
	const gid = 65534
	path := sockPath(t)
	s, err := ListenWith(path, credsProvider(), ServerOptions{Policy: PeerPolicy{OwnUID: 0, GID: gid, GroupName: "nogroup"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Gid != gid {
		t.Errorf("mode %v gid %d, want 0660 and %d", st.Mode(), st.Sys().(*syscall.Stat_t).Gid, gid)
	}
	// A member of the group (primary gid) is served.
	if curl, err := exec.LookPath("curl"); err == nil {
		for d := filepath.Dir(path); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
		cmd := exec.Command(curl, "-s", "-w", "\n%{http_code}", "--unix-socket", path, "http://x"+PathRegistries)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: gid}}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "\n200") {
			t.Errorf("group member: %v %s", err, out)
		}
	}
}

// The hand-written encoder matches encoding/json for every string.
func TestAppendCredentialsMatchesJSON(t *testing.T) {
	now := time.Date(2026, 12, 3, 20, 0, 0, 123456789, time.FixedZone("x", 3600))
	for _, s := range []string{"", "plain", `q"uote\back`, "ctl\x00\x01\n\r\t\x1f", "<a>&b", "é日本", "bad\xffutf8", "line\u2028sep\u2029", strings.Repeat("x", 5000)} {
		c := Credentials{Registry: s, Username: "AWS", Password: s, ExpiresAt: now, FetchedAt: now.Add(-time.Hour), Source: s}
		got := appendCredentials(nil, c)
		want, _ := json.Marshal(credentialsWire{Registry: s, Username: "AWS", Password: s, ExpiresAt: now.UTC(), FetchedAt: now.Add(-time.Hour).UTC(), Source: s})
		if string(got) != string(want)+"\n" {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
}
