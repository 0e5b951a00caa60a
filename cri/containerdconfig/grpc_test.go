package containerdconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGRPCAddress(t *testing.T) {
	tests := []struct {
		name, content string
		noFile        bool
		want, err     string
	}{
		{name: "no file", noFile: true, want: DefaultGRPCAddress},
		{name: "no grpc table", content: "version = 2\n", want: DefaultGRPCAddress},
		{name: "empty address", content: "[grpc]\n  address = \"\"\n", want: DefaultGRPCAddress},
		{name: "version 2", content: "version = 2\n[grpc]\n  address = \"/tmp/c.sock\"\n", want: "/tmp/c.sock"},
		{name: "version 3, unix scheme", content: "version = 3\n[grpc]\n  address = 'unix:///run/k3s/containerd.sock'\n", want: "/run/k3s/containerd.sock"},
		{name: "syntax error names the line", content: "version = 2\n[grpc\n", err: "line 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.toml")
			if !tc.noFile {
				if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := GRPCAddress(p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("GRPCAddress = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
