package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/dockerhelper"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

type helperCase struct {
	name   string
	args   []string // after the helper's name
	stdin  string
	code   int
	stdout string // exact, unless stdoutJSON is set
	// stdoutJSON is the expected stdout decoded as JSON.
	stdoutJSON any
	stderr     string // substring; "" means nothing at all
}

// helperCases are the docker helper protocol against a daemon serving
// hostEast and hostWest (case 31).
func helperCases() []helperCase {
	get := func(serverURL string) map[string]any {
		return map[string]any{"ServerURL": serverURL, "Username": "AWS", "Secret": "node-secret-east"}
	}
	return []helperCase{
		{name: "get host", args: []string{"get"}, stdin: hostEast, stdoutJSON: get(hostEast)},
		{name: "get https URL", args: []string{"get"}, stdin: "https://" + hostEast + "/v2/\n", stdoutJSON: get("https://" + hostEast + "/v2/")},
		{name: "get host:443", args: []string{"get"}, stdin: hostEast + ":443", stdoutJSON: get(hostEast + ":443")},
		{name: "get ghcr.io", args: []string{"get"}, stdin: "ghcr.io", code: 1, stdout: dockerhelper.NotFoundMessage + "\n"},
		{name: "get docker.io", args: []string{"get"}, stdin: "docker.io", code: 1, stdout: dockerhelper.NotFoundMessage + "\n"},
		{name: "get ECR host not served", args: []string{"get"}, stdin: "444455556666.dkr.ecr.eu-west-1.amazonaws.com", code: 1, stdout: dockerhelper.NotFoundMessage + "\n"},
		{name: "get ECR Public without a token", args: []string{"get"}, stdin: "public.ecr.aws", code: 1, stdout: dockerhelper.NotFoundMessage + "\n"},
		{name: "store ECR login", args: []string{"store"}, stdin: `{"ServerURL":"` + hostEast + `","Username":"AWS","Secret":"x"}`},
		{name: "erase", args: []string{"erase"}, stdin: hostEast},
		{name: "list", args: []string{"list"}, stdoutJSON: map[string]any{hostEast: "AWS", hostWest: "AWS"}},
		{name: "unknown verb", args: []string{"bogus"}, code: 2, stderr: `unknown verb "bogus"`},
		{name: "no verb", args: nil, code: 2, stderr: "missing verb"},
		{name: "two verbs", args: []string{"get", "list"}, code: 2, stderr: "unexpected argument"},
	}
}

func checkHelper(t *testing.T, tt helperCase, code int, stdout, stderr string) {
	t.Helper()
	if code != tt.code {
		t.Errorf("exit %d, want %d (stdout %q stderr %q)", code, tt.code, stdout, stderr)
	}
	if tt.stdoutJSON != nil {
		var got any
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Errorf("stdout is not JSON: %q", stdout)
		}
		want, _ := json.Marshal(tt.stdoutJSON)
		gotJSON, _ := json.Marshal(got)
		if !bytes.Equal(gotJSON, want) {
			t.Errorf("stdout %s, want %s", gotJSON, want)
		}
	} else if stdout != tt.stdout {
		t.Errorf("stdout %q, want %q", stdout, tt.stdout)
	}
	if tt.stderr == "" && stderr != "" || !strings.Contains(stderr, tt.stderr) {
		t.Errorf("stderr %q, want %q", stderr, tt.stderr)
	}
	noSecrets(t, "stderr", stderr, "node-secret-east", "node-secret-west")
}

// TestCredentialHelper runs `ecr-node-auth credential-helper VERB` in
// process, the socket given by $ECR_NODE_AUTH_SOCKET as docker would.
func TestCredentialHelper(t *testing.T) {
	clearAWSEnv(t)
	sock := serve(t, newStub(time.Now()))
	t.Setenv(api.EnvSocket, sock)
	for _, tt := range helperCases() {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runIO(append([]string{"credential-helper"}, tt.args...), strings.NewReader(tt.stdin), &out, &errb)
			checkHelper(t, tt, code, out.String(), errb.String())
		})
	}
}

// TestCredentialHelperDaemonDown: get for an ECR host falls back to a
// direct fetch; other hosts and ECR Public answer "not found"; list names
// the config's registries.
func TestCredentialHelperDaemonDown(t *testing.T) {
	f := awsEnv(t)
	cfg, sock := nodeConfig(t, f, "registries:\n  - "+hostWest+"\n")
	helper := func(verb, stdin string) (int, string, string) {
		var out, errb bytes.Buffer
		code := runIO([]string{"credential-helper", "--config", cfg, verb}, strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errOut := helper("get", "https://"+hostWest)
	var got struct{ ServerURL, Username, Secret string }
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Username != "AWS" || got.ServerURL != "https://"+hostWest {
		t.Fatalf("get: exit %d stdout %q stderr %q", code, out, errOut)
	}
	if tok, ok := f.LookupECRToken(got.Secret); !ok || tok.Region != "us-west-2" {
		t.Errorf("get: the secret is not a us-west-2 token of the fake")
	}
	if !strings.Contains(errOut, "daemon not reachable at "+sock) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("get: stderr %q", errOut)
	}
	noSecrets(t, "stderr", errOut, f.Secrets()...)

	for _, host := range []string{"ghcr.io", "public.ecr.aws"} {
		if code, out, errOut := helper("get", host); code != 1 || out != dockerhelper.NotFoundMessage+"\n" || (host == "ghcr.io" && errOut != "") {
			t.Errorf("get %s: exit %d stdout %q stderr %q", host, code, out, errOut)
		}
	}
	if code, out, errOut := helper("list", ""); code != 0 || strings.TrimSpace(out) != `{"`+hostWest+`":"AWS"}` || !strings.Contains(errOut, "listing the registries of "+cfg) {
		t.Errorf("list: exit %d stdout %q stderr %q", code, out, errOut)
	}
	if n := f.Calls(fakeaws.ActionGetAuthorizationToken); n != 1 {
		t.Errorf("%d GetAuthorizationToken calls, want 1", n)
	}

	// AWS failing: the protocol's error answer on stdout, one actionable line.
	f.InjectErrorAlways(fakeaws.ActionGetAuthorizationToken, fakeaws.APIError{Code: "AccessDeniedException", Message: "not authorized to perform ecr:GetAuthorizationToken", HTTPStatus: 400})
	code, out, _ = helper("get", hostWest)
	if code != 1 || !strings.Contains(out, "ecr-node-auth daemon not reachable at "+sock+" and direct fetch failed: ") ||
		!strings.Contains(out, "AccessDeniedException") || strings.Count(out, "\n") != 1 {
		t.Errorf("get with AWS denying: exit %d stdout %q", code, out)
	}
}

// TestExecHelperSymlink runs the built binary through a symlink named
// docker-credential-ecr-node-auth, as docker does: no flags, the socket
// from the environment, the verb as the only argument (cases 30, 31). It
// also runs kubelet-plugin once as the kubelet does.
func TestExecHelperSymlink(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	link := filepath.Join(dir, helperName)
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	sock := serve(t, newStub(time.Now()))
	env := append(os.Environ(), api.EnvSocket+"="+sock, "AWS_EC2_METADATA_DISABLED=true")
	for _, tt := range helperCases() {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(link, tt.args...)
			cmd.Env = env
			cmd.Stdin = strings.NewReader(tt.stdin)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			checkHelper(t, tt, code, out.String(), errb.String())
		})
	}

	t.Run("kubelet-plugin", func(t *testing.T) {
		cmd := exec.Command(bin, "kubelet-plugin")
		cmd.Env = env
		cmd.Stdin = strings.NewReader(request(kubeletplugin.APIVersionV1, hostEast+"/app:1"))
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil || errb.Len() != 0 {
			t.Fatalf("%v: %s", err, errb.String())
		}
		r := decodeResponse(t, out.Bytes())
		if r.Auth[hostEast].Password != "node-secret-east" {
			t.Errorf("response %+v", r)
		}
	})
}
