package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
)

func TestPrintTableMirrors(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		mirrors []api.Mirror
		want    []string
		notWant []string
	}{
		{"no mirrors", nil, nil, []string{"MIRROR FOR"}},
		{"one mirror", []api.Mirror{{Upstream: "docker.io", ECR: "111122223333.dkr.ecr.eu-west-1.amazonaws.com/docker-hub",
			URL: "https://111122223333.dkr.ecr.eu-west-1.amazonaws.com/v2/docker-hub", FileState: "written"}},
			[]string{"MIRROR FOR", "docker.io", "https://111122223333.dkr.ecr.eu-west-1.amazonaws.com/v2/docker-hub", "written"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printTable(&b, api.Status{Version: "test", State: "serving 1 registry", Mirrors: tt.mirrors}, now)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("table lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(b.String(), w) {
					t.Errorf("table has %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// TestStatusBrokenConfig: an explicit --config that cannot be read is an
// error naming it when it is what names the socket; --socket or the env
// variable make it irrelevant.
func TestStatusBrokenConfig(t *testing.T) {
	dir := shortDir(t)
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("sockett: /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missingSock := filepath.Join(dir, "none.sock")
	tests := []struct {
		name   string
		env    string
		args   []string
		code   int
		stderr string
	}{
		{"broken", "", []string{"--config", broken}, 2, "--config " + broken + ": " + broken + `:1: unknown key "sockett"`},
		{"missing", "", []string{"--config", filepath.Join(dir, "nope.yaml")}, 2, "nope.yaml not found"},
		{"broken but --socket given", "", []string{"--config", broken, "--socket", missingSock}, 1, "cannot reach ecr-node-auth at " + missingSock},
		{"broken but env socket given", missingSock, []string{"--config", broken}, 1, "cannot reach ecr-node-auth at " + missingSock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(api.EnvSocket, tt.env)
			var out, errb bytes.Buffer
			code := run(append([]string{"status"}, tt.args...), &out, &errb)
			if code != tt.code || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("exit %d stderr %q; want exit %d with %q", code, errb.String(), tt.code, tt.stderr)
			}
		})
	}
}
