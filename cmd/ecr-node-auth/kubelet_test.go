package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/direct"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// pluginResponse is the CredentialProviderResponse as the kubelet reads it.
type pluginResponse struct {
	APIVersion    string `json:"apiVersion"`
	Kind          string `json:"kind"`
	CacheKeyType  string `json:"cacheKeyType"`
	CacheDuration string `json:"cacheDuration"`
	Auth          map[string]struct {
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"auth"`
}

func decodeResponse(t *testing.T, out []byte) pluginResponse {
	t.Helper()
	var r pluginResponse
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("stdout is not a CredentialProviderResponse: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("stdout has more than the response:\n%s", out)
	}
	return r
}

// runPlugin runs `ecr-node-auth kubelet-plugin args…` in process.
func runPlugin(stdin string, args ...string) (code int, stdout, stderr string, took time.Duration) {
	var out, errb bytes.Buffer
	start := time.Now()
	code = runIO(append([]string{"kubelet-plugin"}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String(), time.Since(start)
}

// TestKubeletPluginFromDaemon: answers from a running daemon (the real
// socket server), in every apiVersion, node and service-account modes, with
// the socket from the flag, the environment or the config (cases 25, 28).
func TestKubeletPluginFromDaemon(t *testing.T) {
	clearAWSEnv(t)
	f := awsEnv(t) // any AWS call would show here: there must be none
	now := time.Now()
	d := newStub(now)
	sock := serve(t, d)
	cfgDir := shortDir(t)
	cfg := filepath.Join(cfgDir, "config.yaml")
	os.WriteFile(cfg, []byte("socket: "+sock+"\n"), 0o600)
	const saToken = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbS1hOnB1bGxlciJ9.c2ln"

	tests := []struct {
		name       string
		args       []string
		env        string // $ECR_NODE_AUTH_SOCKET
		stdin      string
		code       int
		apiVersion string
		registry   string // auth key
		password   string
		stderr     string // substring, when code != 0
	}{
		{name: "v1", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1, hostEast+"/app:1"),
			apiVersion: kubeletplugin.APIVersionV1, registry: hostEast, password: "node-secret-east"},
		{name: "v1beta1", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1beta1, hostEast+"/app:1"),
			apiVersion: kubeletplugin.APIVersionV1beta1, registry: hostEast, password: "node-secret-east"},
		{name: "v1alpha1", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1alpha1, hostWest+"/cilium/cilium:v1.16"),
			apiVersion: kubeletplugin.APIVersionV1alpha1, registry: hostWest, password: "node-secret-west"},
		{name: "port 443 keeps its key", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1, hostEast+":443/app:1"),
			apiVersion: kubeletplugin.APIVersionV1, registry: hostEast + ":443", password: "node-secret-east"},
		{name: "socket from env", env: sock, args: []string{"--config", "/nonexistent/config.yaml"}, stdin: request(kubeletplugin.APIVersionV1, hostEast+"/app:1"),
			apiVersion: kubeletplugin.APIVersionV1, registry: hostEast, password: "node-secret-east"},
		{name: "socket from config", args: []string{"--config", cfg}, stdin: request(kubeletplugin.APIVersionV1, hostEast+"/app:1"),
			apiVersion: kubeletplugin.APIVersionV1, registry: hostEast, password: "node-secret-east"},
		{name: "workload role", args: []string{"--socket", sock},
			stdin:      workloadRequest(hostEast+"/team-a/app:1", saToken, `{"eks.amazonaws.com/role-arn":"`+roleTeam+`"}`),
			apiVersion: kubeletplugin.APIVersionV1, registry: hostEast, password: "team-a-secret"},
		{name: "workload without role: node identity", args: []string{"--socket", sock},
			stdin:      workloadRequest(hostEast+"/app:1", saToken, `{}`),
			apiVersion: kubeletplugin.APIVersionV1, registry: hostEast, password: "node-secret-east"},
		{name: "unknown apiVersion", args: []string{"--socket", sock}, stdin: request("credentialprovider.kubelet.k8s.io/v2", hostEast+"/app:1"),
			code: 1, stderr: "supported: credentialprovider.kubelet.k8s.io/v1, credentialprovider.kubelet.k8s.io/v1beta1, credentialprovider.kubelet.k8s.io/v1alpha1"},
		{name: "not ECR", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1, "ghcr.io/a/b:1"),
			code: 1, stderr: "is not in an Amazon ECR registry"},
		{name: "ECR host the daemon does not serve", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1, "444455556666.dkr.ecr.eu-west-1.amazonaws.com/a:1"),
			code: 1, stderr: "no credentials for registry 444455556666.dkr.ecr.eu-west-1.amazonaws.com"},
		{name: "ECR Public without a token: no credentials", args: []string{"--socket", sock}, stdin: request(kubeletplugin.APIVersionV1, "public.ecr.aws/nginx/nginx:1"),
			code: 1, stderr: "no credentials for registry public.ecr.aws"},
		{name: "workload role the daemon cannot assume", args: []string{"--socket", sock},
			stdin: workloadRequest(hostEast+"/app:1", saToken, `{"eks.amazonaws.com/ecr-role-arn":"arn:aws:iam::111122223333:role/other"}`),
			code:  1, stderr: "role arn:aws:iam::111122223333:role/other: access denied"},
		{name: "empty stdin", args: []string{"--socket", sock}, code: 1, stderr: "no CredentialProviderRequest on stdin"},
		{name: "bad flag", args: []string{"--nope"}, code: 2, stderr: "usage: ecr-node-auth kubelet-plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(api.EnvSocket, tt.env)
			code, out, errOut, took := runPlugin(tt.stdin, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q stdout %q", code, tt.code, errOut, out)
			}
			noSecrets(t, "stderr", errOut, "node-secret-east", "node-secret-west", "team-a-secret", saToken)
			if tt.code != 0 {
				if out != "" {
					t.Errorf("stdout on failure: %q", out)
				}
				if !strings.Contains(errOut, tt.stderr) || strings.Count(errOut, "\n") > 1+strings.Count(tt.stderr, "\n") && tt.code == 1 {
					t.Errorf("stderr %q; want one line with %q", errOut, tt.stderr)
				}
				return
			}
			if errOut != "" {
				t.Errorf("stderr %q, want nothing", errOut)
			}
			if took > time.Second {
				t.Errorf("answer from the daemon took %s", took)
			}
			r := decodeResponse(t, []byte(out))
			if r.APIVersion != tt.apiVersion || r.Kind != "CredentialProviderResponse" || r.CacheKeyType != "Registry" {
				t.Errorf("response %+v", r)
			}
			a, ok := r.Auth[tt.registry]
			if len(r.Auth) != 1 || !ok || a.Username != "AWS" || a.Password != tt.password {
				t.Errorf("auth %v; want %s with the password %q", r.Auth, tt.registry, tt.password)
			}
			d, err := time.ParseDuration(r.CacheDuration)
			if err != nil || d < time.Second {
				t.Errorf("cacheDuration %q", r.CacheDuration)
			}
			if tt.password != "team-a-secret" && (d < 10*time.Hour+43*time.Minute || d > 10*time.Hour+44*time.Minute) {
				t.Errorf("cacheDuration %s, want about 10h44m (case 25)", d)
			}
		})
	}
	reqs := d.workloadRequests()
	if len(reqs) < 2 || reqs[0].ServiceAccountToken != saToken || reqs[0].ServiceAccountAnnotations["eks.amazonaws.com/role-arn"] != roleTeam ||
		reqs[0].Image != hostEast+"/team-a/app:1" {
		t.Errorf("workload requests seen by the daemon: %v", reqs)
	}
	if n := len(f.CallLog()); n != 0 {
		t.Errorf("%d AWS calls with the daemon up", n)
	}
}

// TestKubeletPluginFallback: with the daemon down, the plugin fetches
// directly with the daemon's code, says so in one stderr line and answers
// well within its budget (case 27).
func TestKubeletPluginFallback(t *testing.T) {
	image := hostWest + "/cilium/cilium:v1.16"
	tests := []struct {
		name  string
		setup func(t *testing.T, f *fakeaws.Fake) (stdin string, args []string, stsToken string)
		sts   int    // AssumeRoleWithWebIdentity calls
		why   string // in the stderr line, if set
	}{
		{name: "web identity from the config", sts: 1, setup: func(t *testing.T, f *fakeaws.Fake) (string, []string, string) {
			cfg, _ := nodeConfig(t, f, "")
			return request(kubeletplugin.APIVersionV1, image), []string{"--config", cfg}, ""
		}},
		{name: "no config file: default chain, region from the host", sts: 0, setup: func(t *testing.T, f *fakeaws.Fake) (string, []string, string) {
			f.AddStaticCredentials("AKIDNODE", "node-secret-key", "", time.Time{})
			t.Setenv("AWS_ACCESS_KEY_ID", "AKIDNODE")
			t.Setenv("AWS_SECRET_ACCESS_KEY", "node-secret-key")
			missing := filepath.Join(shortDir(t), "missing.yaml")
			t.Setenv(api.EnvSocket, filepath.Join(shortDir(t), "absent.sock"))
			return request(kubeletplugin.APIVersionV1beta1, image), []string{"--config", missing}, ""
		}},
		{name: "workload role from the annotations", sts: 1, setup: func(t *testing.T, f *fakeaws.Fake) (string, []string, string) {
			cfg, _ := nodeConfig(t, f, "")
			tok := f.MintToken(fakeaws.TokenSpec{Subject: "system:serviceaccount:team-a:puller"})
			return workloadRequest(image, tok, `{"eks.amazonaws.com/ecr-role-arn":"`+roleTeam+`"}`), []string{"--config", cfg}, tok
		}},
		{name: "daemon accepts but never answers", sts: 1, why: "(no answer within 2s)", setup: func(t *testing.T, f *fakeaws.Fake) (string, []string, string) {
			cfg, _ := nodeConfig(t, f, "")
			hung := serve(t, &stubDaemon{hang: true})
			return request(kubeletplugin.APIVersionV1, image), []string{"--config", cfg, "--socket", hung}, ""
		}},
		{name: "workload without role: node identity", sts: 1, setup: func(t *testing.T, f *fakeaws.Fake) (string, []string, string) {
			cfg, _ := nodeConfig(t, f, "")
			tok := f.MintToken(fakeaws.TokenSpec{Subject: "system:serviceaccount:team-b:puller"})
			return workloadRequest(image, tok, `{}`), []string{"--config", cfg}, ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := awsEnv(t)
			stdin, args, stsToken := tt.setup(t, f)
			code, out, errOut, took := runPlugin(stdin, args...)
			if code != 0 {
				t.Fatalf("exit %d; stderr %q", code, errOut)
			}
			if took > clientBudget-500*time.Millisecond {
				t.Errorf("fallback took %s, too close to the %s budget", took, clientBudget)
			}
			noSecrets(t, "stderr", errOut, f.Secrets()...)
			if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "daemon not reachable at ") ||
				!strings.Contains(errOut, "fetched the credential for "+hostWest+" directly from AWS") {
				t.Errorf("stderr %q; want one line saying it fell back", errOut)
			}
			if !strings.Contains(errOut, tt.why) {
				t.Errorf("stderr %q lacks %q", errOut, tt.why)
			}
			r := decodeResponse(t, []byte(out))
			a := r.Auth[hostWest]
			tok, ok := f.LookupECRToken(a.Password)
			if !ok || a.Username != "AWS" || tok.Region != "us-west-2" {
				t.Errorf("auth %v is not an ECR token of us-west-2 from the fake (%+v)", r.Auth, tok)
			}
			if got := f.Calls(fakeaws.ActionAssumeRoleWithWebIdentity); got != tt.sts {
				t.Errorf("%d AssumeRoleWithWebIdentity calls, want %d", got, tt.sts)
			}
			if got := f.Calls(fakeaws.ActionGetAuthorizationToken); got != 1 {
				t.Errorf("%d GetAuthorizationToken calls, want 1", got)
			}
			if stsToken != "" {
				seen := f.STSTokensSeen()
				if len(seen) != 1 || seen[0] != stsToken {
					t.Errorf("STS did not get the pod's token")
				}
				for _, c := range f.IssuedCredentials() {
					if c.RoleARN != roleTeam {
						t.Errorf("credentials issued for %s, want the pod's role", c.RoleARN)
					}
				}
			}
		})
	}
}

// TestKubeletPluginFallbackFails: with the daemon down and AWS failing or
// hanging, the plugin fails within its 5 s budget with one actionable line
// and nothing on stdout; IMDS gets one attempt per call (case 27).
func TestKubeletPluginFallbackFails(t *testing.T) {
	image := hostWest + "/cilium/cilium:v1.16"
	tests := []struct {
		name       string
		setup      func(t *testing.T, f *fakeaws.Fake) []string
		min, max   time.Duration
		wantStderr func(f *fakeaws.Fake) []string
	}{
		{name: "STS hangs", min: 4 * time.Second, max: 6 * time.Second,
			setup: func(t *testing.T, f *fakeaws.Fake) []string {
				f.HangConnections(fakeaws.ActionAssumeRoleWithWebIdentity, -1)
				cfg, _ := nodeConfig(t, f, "")
				return []string{"--config", cfg}
			},
			wantStderr: func(f *fakeaws.Fake) []string {
				return []string{"STS AssumeRoleWithWebIdentity (region us-west-2) did not answer for web identity " + roleNode}
			}},
		{name: "ECR hangs", min: 4 * time.Second, max: 6 * time.Second,
			setup: func(t *testing.T, f *fakeaws.Fake) []string {
				f.HangConnections(fakeaws.ActionGetAuthorizationToken, -1)
				cfg, _ := nodeConfig(t, f, "")
				return []string{"--config", cfg}
			},
			wantStderr: func(f *fakeaws.Fake) []string {
				return []string{"ECR GetAuthorizationToken at " + f.ECRURL() + " did not answer"}
			}},
		{name: "access denied", max: 2 * time.Second,
			setup: func(t *testing.T, f *fakeaws.Fake) []string {
				f.InjectErrorAlways(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrAccessDenied)
				cfg, _ := nodeConfig(t, f, "")
				return []string{"--config", cfg}
			},
			wantStderr: func(f *fakeaws.Fake) []string { return []string{"trust policy rejected sub=" + fakeaws.DefaultSubject} }},
		{name: "token file missing", max: 2 * time.Second,
			setup: func(t *testing.T, f *fakeaws.Fake) []string {
				cfg, _ := nodeConfig(t, f, "")
				c, _ := os.ReadFile(cfg)
				os.WriteFile(cfg, bytes.Replace(c, []byte("/token\n"), []byte("/gone\n"), 1), 0o600)
				return []string{"--config", cfg}
			},
			wantStderr: func(f *fakeaws.Fake) []string { return []string{"web identity token file", "does not exist"} }},
		{name: "invalid config", max: 2 * time.Second,
			setup: func(t *testing.T, f *fakeaws.Fake) []string {
				cfg, _ := nodeConfig(t, f, "bogusKey: 1\n")
				t.Setenv(api.EnvSocket, filepath.Join(shortDir(t), "absent.sock"))
				return []string{"--config", cfg}
			},
			wantStderr: func(f *fakeaws.Fake) []string { return []string{"direct fetch failed: config:", "bogusKey"} }},
		{name: "IMDS blackholed, no config, no AWS env", max: 2*direct.IMDSTimeout + 2*time.Second,
			setup: func(t *testing.T, f *fakeaws.Fake) []string {
				t.Setenv("AWS_EC2_METADATA_DISABLED", "")
				t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", blackhole(t, &imdsRequests))
				t.Setenv(api.EnvSocket, filepath.Join(shortDir(t), "absent.sock"))
				return []string{"--config", filepath.Join(shortDir(t), "missing.yaml")}
			},
			wantStderr: func(f *fakeaws.Fake) []string { return []string{"the default AWS credential chain"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := awsEnv(t)
			imdsRequests.Store(0)
			args := tt.setup(t, f)
			code, out, errOut, took := runPlugin(request(kubeletplugin.APIVersionV1, image), args...)
			if code != 1 || out != "" {
				t.Fatalf("exit %d stdout %q; want 1 and nothing", code, out)
			}
			t.Logf("took %s: %s", took, errOut)
			if took < tt.min || took > tt.max {
				t.Errorf("failed after %s; want between %s and %s", took, tt.min, tt.max)
			}
			noSecrets(t, "stderr", errOut, f.Secrets()...)
			want := append([]string{"ecr-node-auth kubelet-plugin: getting credentials for registry " + hostWest +
				": ecr-node-auth daemon not reachable at ", " and direct fetch failed: ", "; check `systemctl status ecr-node-auth`\n"}, tt.wantStderr(f)...)
			if strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", errOut)
			}
			for _, w := range want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if n := imdsRequests.Load(); n > 2 {
				t.Errorf("%d IMDS requests: retries", n)
			}
		})
	}
}

var imdsRequests atomic.Int64

// blackhole starts an HTTP server that counts requests and never answers
// (a blackholed IMDS); it returns its URL.
func blackhole(t *testing.T, n *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(done)
		srv.Close()
	})
	return "http://" + ln.Addr().String()
}
