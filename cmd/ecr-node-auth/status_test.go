package main

import (
	"bytes"
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
			printTable(&b, api.Status{Version: "test", State: "serving 1 registries", Mirrors: tt.mirrors}, now)
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
