package fakeaws

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

func newRegistry(t *testing.T, f *Fake) *Registry {
	t.Helper()
	r, err := NewRegistry(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func basic(pw string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("AWS:"+pw))
}

func TestRegistryGate(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	f := newFake(t, Options{Clock: clk})
	r := newRegistry(t, f)
	if pem, err := os.ReadFile(r.CAFile()); err != nil || !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
		t.Fatalf("CA file: %v", err)
	}
	if !strings.HasPrefix(r.URL(), "https://127.0.0.1:") || r.URL() != "https://"+r.Host() {
		t.Errorf("URL %q Host %q", r.URL(), r.Host())
	}
	old := f.IssueECRToken("us-east-1")
	clk.Step(13 * time.Hour)
	fresh := f.IssueECRToken("us-east-1") // issued after the step: valid
	public, _ := f.issueECRToken("us-east-1", "", true)
	tests := []struct {
		name   string
		auth   string
		status int
		msg    string
	}{
		{name: "fresh token", auth: basic(fresh), status: 200},
		{name: "missing", auth: "", status: 401, msg: "authentication required"},
		{name: "wrong password", auth: basic("not-a-token"), status: 401, msg: "authentication required"},
		{name: "wrong user", auth: "Basic " + base64.StdEncoding.EncodeToString([]byte("bob:"+fresh)), status: 401},
		{name: "bearer", auth: "Bearer " + fresh, status: 401},
		{name: "expired on the fake clock", auth: basic(old), status: 401, msg: "Your authorization token has expired"},
		{name: "ecr public token", auth: basic(public.Password), status: 401},
	}
	client := r.Client()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 401 {
				return
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="fake-ecr"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAUTHORIZED" ||
				!strings.Contains(e.Errors[0].Message, tc.msg) {
				t.Errorf("body %s", body)
			}
		})
	}
	if r.Allowed() != 1 || r.Denied() != len(tests)-1 {
		t.Errorf("allowed/denied = %d/%d", r.Allowed(), r.Denied())
	}
	// Region pinning (case 11): a token from another region is refused.
	r.RequireRegion("eu-west-1")
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/", nil)
	req.Header.Set("Authorization", basic(fresh))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("wrong-region token: %d", resp.StatusCode)
	}
}

func TestRegistryPush(t *testing.T) {
	f := newFake(t, Options{})
	r := newRegistry(t, f)
	digest, err := r.PushRandomImage("app", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("digest %q", digest)
	}
	pw := f.IssueECRToken("us-east-1")
	get := func(path, accept string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, r.URL()+path, nil)
		req.Header.Set("Authorization", basic(pw))
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, body := get("/v2/app/manifests/v1", "application/vnd.docker.distribution.manifest.v2+json")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != digest {
		t.Fatalf("manifest: %d %s digest %q", resp.StatusCode, body, resp.Header.Get("Docker-Content-Digest"))
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct {
			Digest string
			Size   int64
		}
	}
	if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) != 1 || m.Layers[0].Size > 64<<10 {
		t.Fatalf("manifest %s", body)
	}
	resp, body = get("/v2/app/blobs/"+m.Config.Digest, "")
	var cfg struct{ OS, Architecture string }
	if resp.StatusCode != 200 || json.Unmarshal(body, &cfg) != nil || cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Fatalf("config %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/v2/app/blobs/"+m.Layers[0].Digest, ""); resp.StatusCode != 200 {
		t.Fatalf("layer %d", resp.StatusCode)
	}
	// Without credentials the manifest is refused.
	resp2, err := r.Client().Get(r.URL() + "/v2/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 401 {
		t.Errorf("anonymous manifest: %d", resp2.StatusCode)
	}
}

// Case 9: a canned 403 "token expired" from the registry, and the request log.
func TestRegistryInjectedResponsesAndLog(t *testing.T) {
	f := newFake(t, Options{})
	r := newRegistry(t, f)
	pw := f.IssueECRToken("us-east-1")
	r.InjectResponses(RegistryResponse{Status: 403, Body: "Your authorization token has expired. Reauthenticate and try again.\n"})
	do := func() int {
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/docker-hub/library/alpine/manifests/3.20", nil)
		req.Header.Set("Authorization", basic(pw))
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 403 && !strings.Contains(string(body), "has expired") {
			t.Errorf("body %q", body)
		}
		return resp.StatusCode
	}
	if got := do(); got != 403 {
		t.Errorf("injected: %d", got)
	}
	if got := do(); got != 404 { // the gate lets it through; the manifest does not exist
		t.Errorf("after injection: %d", got)
	}
	reqs := r.Requests()
	if len(reqs) != 2 || reqs[0].Status != 403 || reqs[1].Status != 404 || reqs[1].Path != "/v2/docker-hub/library/alpine/manifests/3.20" ||
		reqs[1].Password != pw || !reqs[1].Allowed {
		t.Errorf("requests %+v", reqs)
	}
}
