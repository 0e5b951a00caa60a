package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/doctor"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// doctorNode writes a node for doctor: fake AWS, web identity, one registry
// whose hosts.toml is written, containerd's config reading the certs dir,
// and no containerd (so the CRI check always fails).
func doctorNode(t *testing.T, sock string, token string) (cfg string, f *fakeaws.Fake) {
	t.Helper()
	f = awsEnv(t)
	dir := shortDir(t)
	certs := filepath.Join(dir, "certs.d")
	if _, err := cri.NewWriter(certs, nil).Write(cri.HostConfig{Host: hostEast, Authorization: "Basic QVdTOmRvY3Rvci1jbWQtc2VjcmV0"}); err != nil {
		t.Fatal(err)
	}
	ctr := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(ctr, []byte(fmt.Sprintf("version = 2\n[grpc]\n  address = %q\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", filepath.Join(dir, "ctr.sock"), certs)), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if token == "" {
		token = f.MintToken(fakeaws.TokenSpec{})
	}
	if err := os.WriteFile(tok, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "config.yaml")
	body := fmt.Sprintf("awsECR:\n  roleArn: %s\n  region: us-east-1\nregistries:\n  - %s\nidentity:\n  tokenFile: %s\ncontainerd:\n  certsDir: %s\n  configFile: %s\nsocket: %s\nmetricsAddress: \"\"\n",
		roleNode, hostEast, tok, certs, ctr, sock)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, f
}

func TestDoctorCmd(t *testing.T) {
	ready := newStub(time.Now())
	ready.st = api.Status{Version: "test", Ready: true, State: "serving 1 registry"}
	notReady := newStub(time.Now())
	notReady.st = api.Status{Version: "test", State: "waiting for credentials", Identity: api.Identity{LastError: "token audience not accepted"}}
	tests := []struct {
		name     string
		daemon   *stubDaemon // nil: no daemon
		args     []string
		token    string
		code     int
		contains []string // in stdout
		stderr   string
	}{
		{name: "table: every check, the CRI failure names its fix", code: 1,
			contains: []string{"OK    config ", "OK    token file ", "OK    aws identity ", "OK    ecr us-east-1 ", "OK    hosts.toml " + hostEast,
				"WARN  daemon ", "FAIL  cri ", "ctr.sock ([grpc] address of", "=> fix: start containerd", "1 of 9 checks failed"}},
		{name: "a ready daemon", daemon: ready, code: 1, contains: []string{"OK    daemon ", "daemon test at", "serving 1 registry"}},
		{name: "a daemon that is not ready fails", daemon: notReady, code: 1,
			contains: []string{"FAIL  daemon ", "not ready: identity: token audience not accepted", "=> fix: the checks above name the cause"}},
		{name: "--cri-socket wins over the containerd config", args: []string{"--cri-socket", "/nonexistent/cri.sock"}, code: 1,
			contains: []string{"/nonexistent/cri.sock (--cri-socket)"}},
		{name: "--pull is skipped without CRI", args: []string{"--pull", hostEast + "/app:v1"}, code: 1,
			contains: []string{"SKIP  pull " + hostEast + "/app:v1"}},
		{name: "bad -o", args: []string{"-o", "yaml"}, code: 2, stderr: `-o "yaml": use table or json`},
		{name: "stray argument", args: []string{"extra"}, code: 2, stderr: `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(shortDir(t), "absent.sock")
			if tc.daemon != nil {
				sock = serve(t, tc.daemon)
			}
			cfg, f := doctorNode(t, sock, tc.token)
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"doctor", "--config", cfg}, tc.args...), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, s := range tc.contains {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			if tc.stderr != "" && !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr.String())
			}
			noSecrets(t, "doctor output", stdout.String()+stderr.String(), append(f.Secrets(), "QVdTOmRvY3Rvci1jbWQtc2VjcmV0", "doctor-cmd-secret")...)
		})
	}
}

// TestDoctorJSON: -o json is a list of {name, ok, status, detail, fix}; an
// expired token fails with its fix and exit status 1.
func TestDoctorJSON(t *testing.T) {
	sock := filepath.Join(shortDir(t), "absent.sock")
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now := time.Now()
	expired := f.MintToken(fakeaws.TokenSpec{IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)})
	cfg, _ := doctorNode(t, sock, expired)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"doctor", "--config", cfg, "-o", "json"}, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d, want 1; stderr: %s", code, stderr.String())
	}
	var rs []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &rs); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	var tok map[string]any
	for _, r := range rs {
		for _, k := range []string{"name", "ok", "status", "detail"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %v has no %q", r, k)
			}
		}
		if r["name"] == "token file" {
			tok = r
		}
	}
	if tok == nil || tok["ok"] != false || tok["status"] != string(doctor.Fail) || !strings.Contains(tok["fix"].(string), "the kubelet has not rotated the token") {
		t.Errorf("token file result = %v, want a failure naming the kubelet rotation fix", tok)
	}
	noSecrets(t, "doctor -o json", stdout.String(), append(f.Secrets(), expired)...)
}
