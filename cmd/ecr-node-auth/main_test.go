package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
)

func TestUsageErrors(t *testing.T) {
	t.Setenv(api.EnvSocket, "")
	missing := filepath.Join(shortDir(t), "none.sock")
	tests := []struct {
		args       []string
		code       int
		wantStderr string
	}{
		{nil, 2, "usage: ecr-node-auth COMMAND"},
		{[]string{"bogus"}, 2, `unknown command "bogus"`},
		{[]string{"run", "--nope"}, 2, "usage: ecr-node-auth run [--config PATH]"},
		{[]string{"run", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"status", "-o", "yaml"}, 2, `-o "yaml": use table or json`},
		{[]string{"status", "--socket"}, 2, "flag needs an argument"},
		{[]string{"status", "-h"}, 0, "usage: ecr-node-auth status"},
		{[]string{"credential-helper", "-h"}, 0, "when no\ndaemon answers, it fetches the token directly from AWS with the config's identity. The\nsocket is --socket, else $ECR_NODE_AUTH_SOCKET, else the config's socket, else\n/run/ecr-node-auth/auth.sock."},
		{[]string{"run", "--config", filepath.Join(shortDir(t), "missing.yaml")}, 1, "missing.yaml not found: create it (the packages install a default at /etc/ecr-node-auth/config.yaml) or pass --config"},
		{[]string{"status", "--socket", missing}, 1, "cannot reach ecr-node-auth at " + missing + ": is the daemon running? (systemctl status ecr-node-auth)"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := run(tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(errb.String(), tt.wantStderr) {
			t.Errorf("%v: exit %d stderr %q; want exit %d with %q", tt.args, code, errb.String(), tt.code, tt.wantStderr)
		}
	}
}

func TestVersionLine(t *testing.T) {
	tests := []struct{ version, commit, want string }{
		{"dev", "unknown", "ecr-node-auth dev (commit unknown, go1.26.8)"},
		{"v1.2.0", "d3fe099", "ecr-node-auth v1.2.0 (commit d3fe099, go1.26.8)"},
		{"v1.2.0-3-gd3fe099", "d3fe099", "ecr-node-auth v1.2.0-3-gd3fe099 (commit d3fe099, go1.26.8)"},
		{"d3fe099", "d3fe099", "ecr-node-auth d3fe099 (go1.26.8)"},
		{"d3fe099-dirty", "d3fe099", "ecr-node-auth d3fe099-dirty (go1.26.8)"},
	}
	for _, tt := range tests {
		if got := versionLine(tt.version, tt.commit, "go1.26.8"); got != tt.want {
			t.Errorf("versionLine(%q, %q) = %q, want %q", tt.version, tt.commit, got, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "ecr-node-auth dev (commit unknown, go") {
		t.Errorf("version: %d %q", code, out.String())
	}
}

func TestStatusOutput(t *testing.T) {
	now := time.Now()
	st := api.Status{
		Version: "v1", State: "serving 1 registry", Ready: true,
		Identity: api.Identity{Mode: "web-identity", RoleARN: "arn:aws:iam::111122223333:role/r", Subject: "system:serviceaccount:ns:sa"},
		Registries: []api.Registry{{Host: "111122223333.dkr.ecr.us-east-1.amazonaws.com", Region: "us-east-1",
			ExpiresAt: now.Add(11*time.Hour + 14*time.Minute), LastRefresh: now.Add(-5 * time.Minute), NextRefresh: now.Add(5 * time.Hour),
			FileState: "written"}, {Host: "444455556666.dkr.ecr.eu-west-1.amazonaws.com", LastError: "AccessDeniedException: no", ErrorClass: "permanent"}},
	}
	dir := shortDir(t)
	sock := filepath.Join(dir, "auth.sock")
	srv, err := api.Listen(sock, &stubDaemon{st: st}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())

	// The socket comes from the config file when no flag or env is given.
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("socket: "+sock+"\n"), 0o600)
	t.Setenv(api.EnvSocket, "")
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("status: %d %s", code, errb.String())
	}
	table := out.String()
	for _, want := range []string{
		"ecr-node-auth v1: serving 1 registry",
		"REGISTRY", "EXPIRES IN", "LAST REFRESH", "NEXT REFRESH", "ERROR",
		"111122223333.dkr.ecr.us-east-1.amazonaws.com  11h14m", "5m ago", "5h",
		"444455556666.dkr.ecr.eu-west-1.amazonaws.com  -", "never", "permanent: AccessDeniedException: no",
		"identity: web-identity role=arn:aws:iam::111122223333:role/r sub=system:serviceaccount:ns:sa",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	out.Reset()
	t.Setenv(api.EnvSocket, sock)
	if code := run([]string{"status", "-o", "json", "--config", "/nonexistent"}, &out, &errb); code != 0 {
		t.Fatalf("status json: %d %s", code, errb.String())
	}
	var got api.Status
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Version != "v1" || len(got.Registries) != 2 {
		t.Errorf("json: %v %+v", err, got)
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{
		11*time.Hour + 14*time.Minute: "11h14m", 5 * time.Hour: "5h", 90 * time.Second: "1m30s", 4 * time.Second: "4s", 2 * time.Minute: "2m",
	} {
		if got := short(d); got != want {
			t.Errorf("short(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestDaemonGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	for _, tc := range []struct {
		env  string // GOGC in the environment ("" unset)
		want int
	}{
		{"", daemonGCPercent},
		{"100", 100}, // the operator's choice is left alone
		{"off", 100},
	} {
		t.Run("GOGC="+tc.env, func(t *testing.T) {
			debug.SetGCPercent(100)
			t.Setenv("GOGC", tc.env)
			if tc.env == "" {
				os.Unsetenv("GOGC")
			}
			setDaemonGC()
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("GC percent %d, want %d", got, tc.want)
			}
		})
	}
}
