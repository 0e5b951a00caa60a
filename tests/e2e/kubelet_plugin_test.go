package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Roles of the service-account (KEP-4412) scenario; the fake STS lets web identities
// assume these and the node's role only.
const (
	roleTeamA    = "arn:aws:iam::111122223333:role/team-a-pull"
	roleTeamB    = "arn:aws:iam::111122223333:role/team-b-pull"
	subjectTeamA = "system:serviceaccount:team-a:app"
	subjectTeamB = "system:serviceaccount:team-b:app"

	apiV1       = "credentialprovider.kubelet.k8s.io/v1"
	apiV1beta1  = "credentialprovider.kubelet.k8s.io/v1beta1"
	apiV1alpha1 = "credentialprovider.kubelet.k8s.io/v1alpha1"
)

// clientWorld is a fake AWS and registry and a running daemon (a process, web identity
// for fakeaws.DefaultRoleARN, metrics off), for the clients that ask the daemon's socket:
// the kubelet plugin and the docker credential helper. No containerd is needed, but the
// daemon binary is built only where the e2e prerequisites hold.
type clientWorld struct {
	t      *testing.T
	fake   *fakeaws.Fake
	reg    *fakeaws.Registry
	digest string // of imageRef's manifest
	dir    string
	d      *harness.Daemon
	// outputs are the client processes' stderr, and their stdout where it does not
	// carry credentials by design, checked for secrets at the end like the daemon's logs.
	outputs map[string][]byte
	seq     int
}

func newClientWorld(t *testing.T) *clientWorld {
	t.Helper()
	requirePrereqs(t)
	needDaemon(t)
	fake, reg, digest := newFakeAWS(t, fakeaws.Options{AllowedRoleARNs: []string{fakeaws.DefaultRoleARN, roleTeamA, roleTeamB}})
	dir := harness.TempDir(t)
	ddir := filepath.Join(dir, "daemon")
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		t.Fatal(err)
	}
	td, err := harness.NewTokenDir(filepath.Join(ddir, "sa-token"), fake.MintToken(fakeaws.TokenSpec{}))
	if err != nil {
		t.Fatal(err)
	}
	// No containerd here: the daemon only checks that its config file exists.
	ctrCfg := filepath.Join(dir, "containerd-config.toml")
	if err := os.WriteFile(ctrCfg, []byte("# not read by this test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Metrics on, on a port the kernel picks (daemons run in parallel): status reports
	// the bound address, and the scenarios scrape /metrics for the hygiene check.
	metrics := "127.0.0.1:0"
	cfg := harness.DaemonConfig{
		RoleArn:          fakeaws.DefaultRoleARN,
		Region:           region,
		Registries:       []harness.Registry{{Host: ecrHost, Endpoint: reg.URL(), CA: reg.CAFile()}},
		TokenFile:        td.Path(),
		Audience:         fakeaws.DefaultAudience,
		CertsDir:         filepath.Join(dir, "certs.d"),
		ContainerdConfig: ctrCfg,
		Socket:           filepath.Join(ddir, "auth.sock"),
		MetricsAddress:   &metrics,
	}
	env := fake.Env()
	env["AWS_REGION"] = region
	cw := &clientWorld{t: t, fake: fake, reg: reg, digest: digest, dir: dir, outputs: map[string][]byte{}}
	cw.d = harness.NewDaemon(t, daemonBin, ddir, cfg, env)
	t.Cleanup(cw.checkNoSecrets)
	start := time.Now()
	cw.d.Start()
	var last string
	ready := harness.WaitFor(30*time.Second, 100*time.Millisecond, func() bool {
		if !cw.d.Alive() {
			return true
		}
		st, out, err := status(cw.d)
		if err != nil {
			last = err.Error()
			return false
		}
		last = string(out)
		return st.Ready
	})
	if !cw.d.Alive() {
		t.Fatalf("the daemon exited (%v)", cw.d.ExitErr())
	}
	if !ready {
		t.Fatalf("the daemon is not ready after 30s; last status: %s", last)
	}
	t.Logf("daemon (pid %d) ready in %v; socket %s", cw.d.PID(), time.Since(start).Round(time.Millisecond), cw.d.Socket)
	return cw
}

// execResult is one run of a client process.
type execResult struct {
	stdout, stderr []byte
	code           int
	took           time.Duration
}

// run execs bin with args, stdin and env (nil: the daemon's environment, which points
// the AWS SDK at the fake), and keeps its stderr for the secret check.
func (cw *clientWorld) run(name string, env []string, stdin string, bin string, args ...string) execResult {
	cw.t.Helper()
	if env == nil {
		env = cw.d.Env
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = cw.dir // not the package dir: a client may look for executables in "."
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := execResult{stdout: stdout.Bytes(), stderr: stderr.Bytes(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		r.code = ee.ExitCode()
	default:
		cw.t.Fatalf("%s: %s %v: %v (after %v)", name, bin, args, err, r.took)
	}
	cw.seq++
	key := fmt.Sprintf("%s/client-%02d-%s", cw.t.Name(), cw.seq, name)
	cw.outputs[key+"/stderr"] = r.stderr
	harness.RecordArtifact(key+"/stderr", r.stderr)
	// The plugin's and the helper's `get` stdout is the credential itself.
	if !slices.Contains(args, "kubelet-plugin") && !slices.Contains(args, "get") {
		cw.outputs[key+"/stdout"] = r.stdout
		harness.RecordArtifact(key+"/stdout", r.stdout)
	}
	return r
}

// plugin runs `ecr-node-auth kubelet-plugin --socket S [extra...]` as the kubelet does.
func (cw *clientWorld) plugin(name, request string, env []string, extra ...string) execResult {
	cw.t.Helper()
	args := append([]string{"kubelet-plugin", "--socket", cw.d.Socket}, extra...)
	return cw.run(name, env, request, daemonBin, args...)
}

// checkNoSecrets greps every daemon log and client output of this world for every
// secret its fake issued, so a leak fails the test that caused it; TestMain checks
// every artifact of the run again afterwards.
func (cw *clientWorld) checkNoSecrets() {
	var arts []harness.Artifact
	logs, _ := filepath.Glob(filepath.Join(cw.d.Dir, "daemon-*.log"))
	for _, p := range logs {
		if b, err := os.ReadFile(p); err == nil {
			arts = append(arts, harness.Artifact{Name: p, Data: b})
		}
	}
	for k, v := range cw.outputs {
		arts = append(arts, harness.Artifact{Name: k, Data: v})
	}
	if len(logs) == 0 {
		cw.t.Errorf("no daemon log to check for secrets")
	}
	checkNoSecrets(cw.t, arts, withSignatures(cw.fake.SecretsWithKind()))
}

// scrapeMetrics GETs the daemon's /metrics (its address from `status`), records it
// for the hygiene check and checks it is the daemon's, with a series for ecrHost.
func (cw *clientWorld) scrapeMetrics() {
	cw.t.Helper()
	st, out, err := status(cw.d)
	if err != nil {
		cw.t.Fatalf("status: %v", err)
	}
	if st.MetricsAddress == "" {
		cw.t.Fatalf("status names no metrics address although metricsAddress is set: %s", out)
	}
	body, err := cw.d.Metrics(st.MetricsAddress)
	if err != nil {
		cw.t.Fatalf("metrics: %v", err)
	}
	cw.outputs[cw.t.Name()+"/metrics"] = body
	for _, want := range []string{`ecr_node_auth_token_valid{registry="` + ecrHost + `"} 1`, "ecr_node_auth_aws_calls_total{", "ecr_node_auth_socket_requests_total{"} {
		if !strings.Contains(string(body), want) {
			cw.t.Errorf("/metrics at %s lacks %s", st.MetricsAddress, want)
		}
	}
	cw.t.Logf("scraped %d bytes of /metrics from %s", len(body), st.MetricsAddress)
}

// registryStatus GETs path from the fake registry with Basic AWS:pw and returns the status.
func (cw *clientWorld) registryStatus(pw, path string) int {
	cw.t.Helper()
	req, err := http.NewRequest(http.MethodGet, cw.reg.URL()+path, nil)
	if err != nil {
		cw.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("AWS:"+pw)))
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	client := cw.reg.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		cw.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// mustBeAccepted fails unless the registry serves /v2/ and the image manifest for pw.
func (cw *clientWorld) mustBeAccepted(what, pw string) {
	cw.t.Helper()
	for _, p := range []string{"/v2/", "/v2/" + repo + "/manifests/" + tag} {
		if code := cw.registryStatus(pw, p); code != http.StatusOK {
			cw.t.Errorf("%s: the registry answers %d to GET %s with the returned password, want 200", what, code, p)
		}
	}
}

// awsCalls counts the fake's calls of action (every call when action is "") with a 2xx.
func (cw *clientWorld) awsCalls(action fakeaws.Action) (all, ok int) {
	for _, c := range cw.fake.CallLog() {
		if action != "" && c.Action != action {
			continue
		}
		all++
		if c.Status >= 200 && c.Status < 300 {
			ok++
		}
	}
	return all, ok
}

// pluginResponse is a CredentialProviderResponse as the kubelet decodes it.
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

func kubeletRequest(apiVersion, image string) string {
	return fmt.Sprintf(`{"apiVersion":%q,"kind":"CredentialProviderRequest","image":%q}`, apiVersion, image)
}

func kubeletSARequest(image, token string, annotations map[string]string) string {
	a, _ := json.Marshal(annotations)
	return fmt.Sprintf(`{"apiVersion":%q,"kind":"CredentialProviderRequest","image":%q,"serviceAccountToken":%q,"serviceAccountAnnotations":%s}`,
		apiV1, image, token, a)
}

// okResponse checks an exit-0 plugin answer in apiVersion for ecrHost and returns the
// password and cacheDuration.
func (cw *clientWorld) okResponse(what string, r execResult, apiVersion string) (string, time.Duration) {
	cw.t.Helper()
	if r.code != 0 {
		cw.t.Fatalf("%s: exit %d, want 0; stderr: %s", what, r.code, r.stderr)
	}
	var resp pluginResponse
	dec := json.NewDecoder(bytes.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&resp); err != nil {
		cw.t.Fatalf("%s: stdout is not a CredentialProviderResponse: %v", what, err)
	}
	if resp.APIVersion != apiVersion || resp.Kind != "CredentialProviderResponse" || resp.CacheKeyType != "Registry" {
		cw.t.Errorf("%s: apiVersion %q kind %q cacheKeyType %q, want %q CredentialProviderResponse Registry",
			what, resp.APIVersion, resp.Kind, resp.CacheKeyType, apiVersion)
	}
	if len(resp.Auth) != 1 {
		cw.t.Fatalf("%s: auth has %d keys, want exactly %s", what, len(resp.Auth), ecrHost)
	}
	a, ok := resp.Auth[ecrHost]
	if !ok || a.Username != "AWS" || a.Password == "" {
		cw.t.Fatalf("%s: auth[%s] present=%v username %q password set=%v, want AWS and a password", what, ecrHost, ok, a.Username, a.Password != "")
	}
	cd, err := time.ParseDuration(resp.CacheDuration)
	if err != nil {
		cw.t.Fatalf("%s: cacheDuration %q is not a Go duration: %v", what, resp.CacheDuration, err)
	}
	return a.Password, cd
}

// TestKubeletPlugin runs the built binary as the kubelet's exec credential provider
// (request on stdin, response on stdout, exit code) against a running daemon and the
// fake AWS: node mode in every apiVersion, service-account mode with two roles, and
// the direct fetch when the daemon is down.
func TestKubeletPlugin(t *testing.T) {
	cw := newClientWorld(t)
	f := cw.fake
	var nodePW string

	t.Run("node", func(t *testing.T) {
		cw := *cw
		cw.t = t
		awsBefore, _ := cw.awsCalls("")
		var took []time.Duration
		for i, v := range []string{apiV1, apiV1beta1, apiV1alpha1} {
			r := cw.plugin("node-"+v[strings.LastIndex(v, "/")+1:], kubeletRequest(v, imageRef), nil)
			took = append(took, r.took)
			pw, cd := cw.okResponse(v, r, v)
			if i == 0 {
				nodePW = pw
				tok, ok := f.LookupECRToken(pw)
				if !ok {
					t.Fatalf("the plugin returned a password the fake never issued")
				}
				left := time.Until(tok.Expires)
				want := left - min(30*time.Minute, fakeaws.DefaultECRTokenLifetime/4)
				if cd <= time.Second || cd >= fakeaws.DefaultECRTokenLifetime || (cd-want).Abs() > 2*time.Minute {
					t.Errorf("cacheDuration %v: want > 1s, < the token lifetime %v, and about %v (time left %v less the margin)",
						cd, fakeaws.DefaultECRTokenLifetime, want.Round(time.Second), left.Round(time.Second))
				}
				t.Logf("v1: cacheDuration %v (token expires in %v)", cd, left.Round(time.Second))
				cw.mustBeAccepted("node mode", pw)
			} else if pw != nodePW {
				t.Errorf("%s: a different password than v1's for the same registry", v)
			}
			if len(r.stderr) != 0 {
				t.Errorf("%s: stderr %q, want nothing on a socket answer", v, r.stderr)
			}
		}
		// An apiVersion the plugin does not know: refused with the supported list.
		r := cw.plugin("node-v2", kubeletRequest("credentialprovider.kubelet.k8s.io/v2", imageRef), nil)
		took = append(took, r.took)
		if r.code == 0 || len(r.stdout) != 0 {
			t.Errorf("v2: exit %d stdout %q, want non-zero and nothing", r.code, r.stdout)
		}
		for _, v := range []string{apiV1, apiV1beta1, apiV1alpha1} {
			if !bytes.Contains(r.stderr, []byte(v)) {
				t.Errorf("v2: stderr does not list %s: %q", v, r.stderr)
			}
		}
		t.Logf("v2 refused (exit %d): %s", r.code, bytes.TrimSpace(r.stderr))
		if awsAfter, _ := cw.awsCalls(""); awsAfter != awsBefore {
			t.Errorf("%d AWS calls during warm socket answers, want 0", awsAfter-awsBefore)
		}
		for i, d := range took {
			if d >= time.Second {
				t.Errorf("exec %d took %v, want a socket answer well under 1s", i, d)
			}
		}
		t.Logf("exec wall times (socket): %v", took)
	})
	if nodePW == "" {
		t.FailNow()
	}

	t.Run("service-account", func(t *testing.T) {
		cw := *cw
		cw.t = t
		tokA := f.MintToken(fakeaws.TokenSpec{Subject: subjectTeamA})
		tokB := f.MintToken(fakeaws.TokenSpec{Subject: subjectTeamB})
		stsBefore, stsOKBefore := cw.awsCalls(fakeaws.ActionAssumeRoleWithWebIdentity)

		rA := cw.plugin("sa-team-a", kubeletSARequest(imageRef, tokA, map[string]string{"eks.amazonaws.com/role-arn": roleTeamA}), nil)
		pwA, _ := cw.okResponse("team-a", rA, apiV1)
		rB := cw.plugin("sa-team-b", kubeletSARequest(imageRef, tokB, map[string]string{"eks.amazonaws.com/ecr-role-arn": roleTeamB}), nil)
		pwB, _ := cw.okResponse("team-b", rB, apiV1)
		t.Logf("team-a exec %v, team-b exec %v (each: STS + ECR through the daemon)", rA.took.Round(time.Millisecond), rB.took.Round(time.Millisecond))
		if pwA == pwB || pwA == nodePW || pwB == nodePW {
			t.Errorf("passwords: team-a==team-b %v, team-a==node %v, team-b==node %v; want three different credentials",
				pwA == pwB, pwA == nodePW, pwB == nodePW)
		}
		cw.mustBeAccepted("team-a", pwA)
		cw.mustBeAccepted("team-b", pwB)

		stsAfter, stsOKAfter := cw.awsCalls(fakeaws.ActionAssumeRoleWithWebIdentity)
		if stsOKAfter-stsOKBefore < 2 {
			t.Errorf("STS answered %d AssumeRoleWithWebIdentity calls (%d received) for the two service accounts, want at least 2",
				stsOKAfter-stsOKBefore, stsAfter-stsBefore)
		}
		for _, want := range []struct{ role, sub string }{{roleTeamA, subjectTeamA}, {roleTeamB, subjectTeamB}} {
			found := slices.ContainsFunc(f.IssuedCredentials(), func(c fakeaws.Credentials) bool {
				return c.RoleARN == want.role && c.Subject == want.sub
			})
			if !found {
				t.Errorf("the fake STS issued no credentials for %s to %s", want.role, want.sub)
			}
		}

		// Cached per role and service account: the same request again makes no AWS call.
		before, _ := cw.awsCalls("")
		rA2 := cw.plugin("sa-team-a-again", kubeletSARequest(imageRef, tokA, map[string]string{"eks.amazonaws.com/role-arn": roleTeamA}), nil)
		if pw, _ := cw.okResponse("team-a again", rA2, apiV1); pw != pwA {
			t.Errorf("team-a again: a different password, want the cached one")
		}
		if after, _ := cw.awsCalls(""); after != before {
			t.Errorf("team-a again: %d AWS calls, want 0 (cached per role and service account)", after-before)
		}
		if rA2.took >= time.Second {
			t.Errorf("team-a again took %v, want well under 1s", rA2.took)
		}

		// No role annotation: the node's identity.
		rN := cw.plugin("sa-no-role", kubeletSARequest(imageRef, tokA, map[string]string{}), nil)
		if pw, _ := cw.okResponse("no role annotation", rN, apiV1); pw != nodePW {
			t.Errorf("no role annotation: not the node's credential")
		}
	})

	// After the node and service-account answers: any of their secrets would show in
	// the series here.
	t.Run("metrics", func(t *testing.T) {
		cw := *cw
		cw.t = t
		cw.scrapeMetrics()
	})

	t.Run("daemon-down", func(t *testing.T) {
		cw := *cw
		cw.t = t
		if !cw.d.Stop() {
			t.Fatalf("the daemon did not stop within 10s of SIGTERM")
		}
		stsBefore, _ := cw.awsCalls(fakeaws.ActionAssumeRoleWithWebIdentity)
		ecrBefore, _ := cw.awsCalls(fakeaws.ActionGetAuthorizationToken)
		// The kubelet's config passes --config; AWS_ENDPOINT_URL_STS/ECR and AWS_REGION are
		// in the daemon's environment, which the plugin gets here.
		r := cw.plugin("direct", kubeletRequest(apiV1, imageRef), nil, "--config", cw.d.ConfigFile)
		pw, cd := cw.okResponse("direct fetch", r, apiV1)
		t.Logf("direct fetch: exit 0 in %v, cacheDuration %v; stderr: %s", r.took.Round(time.Millisecond), cd, bytes.TrimSpace(r.stderr))
		if r.took >= 5*time.Second {
			t.Errorf("direct fetch took %v, want within the 5s budget", r.took)
		}
		if !bytes.Contains(r.stderr, []byte("not reachable")) || !bytes.Contains(r.stderr, []byte("directly")) {
			t.Errorf("direct fetch: stderr does not say the daemon was not reachable and the fetch was direct: %q", r.stderr)
		}
		cw.mustBeAccepted("direct fetch", pw)
		stsAfter, _ := cw.awsCalls(fakeaws.ActionAssumeRoleWithWebIdentity)
		ecrAfter, _ := cw.awsCalls(fakeaws.ActionGetAuthorizationToken)
		if stsAfter == stsBefore || ecrAfter == ecrBefore {
			t.Errorf("direct fetch: STS calls %d, ECR calls %d; want the plugin's own", stsAfter-stsBefore, ecrAfter-ecrBefore)
		}

		// STS never answers: the plugin gives up within its budget with one clear line.
		f.HangConnections(fakeaws.ActionAssumeRoleWithWebIdentity, -1)
		defer f.ClearFaults(fakeaws.ActionAssumeRoleWithWebIdentity)
		r = cw.plugin("direct-sts-hangs", kubeletRequest(apiV1, imageRef), nil, "--config", cw.d.ConfigFile)
		msg := strings.TrimRight(string(r.stderr), "\n")
		t.Logf("STS hanging: exit %d in %v; stderr: %s", r.code, r.took.Round(time.Millisecond), msg)
		if r.code == 0 || len(r.stdout) != 0 {
			t.Errorf("STS hanging: exit %d stdout %d bytes, want non-zero and nothing", r.code, len(r.stdout))
		}
		if r.took > 6500*time.Millisecond {
			t.Errorf("STS hanging: the plugin took %v, want about its 5s budget", r.took)
		}
		if msg == "" || strings.Contains(msg, "\n") || !strings.Contains(msg, "not reachable") || !strings.Contains(msg, "direct fetch failed") {
			t.Errorf("STS hanging: want one line saying the daemon is not reachable and the direct fetch failed, got %q", msg)
		}
	})
}
