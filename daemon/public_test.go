package daemon

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// publicFake is useFakeAWS with the node in ap-northeast-1.
func publicFake(h *harness) *fakeaws.Fake {
	h.t.Helper()
	f := h.useFakeAWS()
	h.t.Setenv("AWS_REGION", "ap-northeast-1")
	return f
}

func publicEntry(st api.Status) (api.Registry, bool) {
	for _, r := range st.Registries {
		if r.Host == "public.ecr.aws" {
			return r, true
		}
	}
	return api.Registry{}, false
}

func TestPublicECRServed(t *testing.T) {
	h := newHarness(t, "[]")
	f := publicFake(h)
	h.extra = "publicECR: true\n"
	h.writeConfig("[]")
	f.SetECRTokenLifetime(4 * time.Second)
	h.start()
	st := h.waitStatus("public token", func(st api.Status) bool {
		r, ok := publicEntry(st)
		return ok && r.Valid && r.FileState == fileWritten
	})
	if !st.Ready || st.State != "serving ECR Public only (no registries configured)" || len(st.Notes) != 0 {
		t.Errorf("status %+v", st)
	}
	file := filepath.Join(h.certs, "public.ecr.aws", "hosts.toml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	text := string(b)
	if !strings.HasPrefix(text, cri.Marker) || !strings.Contains(text, `server = "https://public.ecr.aws"`) ||
		!strings.Contains(text, `[host."https://public.ecr.aws"]`) {
		t.Errorf("hosts.toml:\n%s", text)
	}
	c, err := api.NewClient(h.sock).Credentials(context.Background(), "public.ecr.aws/nginx/nginx:1.27")
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := f.LookupECRToken(c.Password)
	if !ok || !tok.Public || tok.Region != "us-east-1" || c.Username != "AWS" ||
		!strings.Contains(text, `Authorization = ["Basic `+base64.StdEncoding.EncodeToString([]byte("AWS:"+c.Password))+`"]`) {
		t.Errorf("socket answer not an ECR Public token issued in us-east-1: %+v %v", tok, ok)
	}
	for _, rec := range f.CallLog() {
		if rec.Region != "us-east-1" {
			t.Errorf("ecr-public called in %s", rec.Region)
		}
	}

	// The token cannot be renewed and expires: the file goes, pulls become
	// anonymous, the daemon stays ready and socket clients get "none".
	f.InjectErrorAlways(fakeaws.ActionPublicGetAuthorizationToken, fakeaws.APIError{Code: "AccessDeniedException", Message: "not authorized to perform: ecr-public:GetAuthorizationToken"})
	st = h.waitStatus("public file withdrawn", func(st api.Status) bool {
		r, _ := publicEntry(st)
		return r.FileState == fileAnonymous
	})
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("hosts.toml with an expired header left: %v", err)
	}
	if !st.Ready || len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "AccessDeniedException") || !strings.Contains(st.State, "pulls from public.ecr.aws are anonymous") {
		t.Errorf("status %+v", st)
	}
	_, err = api.NewClient(h.sock).Credentials(context.Background(), "public.ecr.aws/nginx/nginx:1.27")
	if !errors.Is(err, api.ErrNoCredentials) || errors.Is(err, api.ErrNotECR) || !strings.Contains(err.Error(), "pull anonymously") {
		t.Errorf("socket while failing: %v", err)
	}
	if hl, _ := api.NewClient(h.sock).Health(context.Background()); hl.Status != "ok" {
		t.Errorf("health %+v", hl)
	}

	// Turned off by a reload: no longer served, on the socket either.
	f.ClearFaults(fakeaws.ActionPublicGetAuthorizationToken)
	h.extra = ""
	h.writeConfig("[]")
	h.reload <- struct{}{}
	h.waitStatus("public gone", func(st api.Status) bool { _, ok := publicEntry(st); return !ok })
	_, err = api.NewClient(h.sock).Credentials(context.Background(), "public.ecr.aws/nginx/nginx:1.27")
	if !errors.Is(err, api.ErrNoCredentials) || !strings.Contains(err.Error(), "publicECR is off") {
		t.Errorf("socket with publicECR off: %v", err)
	}
	for _, s := range f.Secrets() {
		if strings.Contains(h.logs.String(), s) {
			t.Error("a secret the fake issued is in the log")
		}
	}
	h.stop()
}

// A failing ecr-public never leaves a managed file with a header, leaves an
// unmanaged one alone, and does not block readiness of the private
// registries.
func TestPublicECRFailing(t *testing.T) {
	for _, managed := range []bool{true, false} {
		t.Run(map[bool]string{true: "stale managed file", false: "unmanaged file"}[managed], func(t *testing.T) {
			h := newHarness(t, "["+host1+"]")
			f := publicFake(h)
			f.InjectErrorAlways(fakeaws.ActionPublicGetAuthorizationToken, fakeaws.APIError{Code: "AccessDeniedException", Message: "denied"})
			h.extra = "publicECR: true\n"
			h.writeConfig("[" + host1 + "]")
			file := filepath.Join(h.certs, "public.ecr.aws", "hosts.toml")
			var theirs string
			if managed {
				if _, err := cri.NewWriter(h.certs, nil).Write(cri.HostConfig{Host: "public.ecr.aws", Authorization: "Basic c3RhbGU6c3RhbGU="}); err != nil {
					t.Fatal(err)
				}
			} else {
				theirs = "server = \"https://public.ecr.aws\"\n"
				os.MkdirAll(filepath.Dir(file), 0o755)
				os.WriteFile(file, []byte(theirs), 0o644)
			}
			h.start()
			want := fileAnonymous
			if !managed {
				want = fileUnmanaged
			}
			st := h.waitStatus("private ready, public failed", func(st api.Status) bool {
				r, ok := publicEntry(st)
				return st.Ready && ok && r.LastError != "" && r.FileState == want
			})
			if !strings.HasPrefix(st.State, "serving 1 registry; publicECR: no ECR Public token") {
				t.Errorf("state %q", st.State)
			}
			b, err := os.ReadFile(file)
			switch {
			case managed && !os.IsNotExist(err):
				t.Errorf("stale managed public hosts.toml left: %v %q", err, b)
			case !managed && string(b) != theirs:
				t.Errorf("unmanaged file changed: %q %v", b, err)
			}
			time.Sleep(600 * time.Millisecond) // a few reconcile ticks
			if n := strings.Count(h.logs.String(), "ECR Public token fetch failed"); n != 1 {
				t.Errorf("failure logged %d times, want once:\n%s", n, h.logs.String())
			}
			h.stop()
		})
	}
}
