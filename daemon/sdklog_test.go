package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// captureStderr collects what is written to the process's stderr during fn:
// the SDK's default logger writes there directly.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	defer func() {
		os.Stderr = saved
	}()
	fn()
	os.Stderr = saved
	w.Close()
	return <-done
}

// The SDK's own lines (the IMDS fallback warning) reach the daemon's JSON
// log as JSON lines of the "sdk" logger, never as raw text on stderr.
func TestAWSIdentitySDKLogsAreJSON(t *testing.T) {
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// An instance without a role, its IMDS with or without IMDSv2.
	v1Only := fakeaws.StartIMDS(t, f, fakeaws.IMDSOptions{TokenStatus: http.StatusNotFound})
	v2 := fakeaws.StartIMDS(t, f, fakeaws.IMDSOptions{})
	tests := []struct {
		name     string
		imds     string
		wantWarn bool // the SDK warns "falling back to IMDSv1"
		asked    *fakeaws.IMDS
	}{
		// Nothing listens: the SDK gives up on IMDS without a warning.
		{"closed port", "http://127.0.0.1:1", false, nil},
		// The IMDSv2 token request is answered 404: the SDK warns that
		// it falls back to IMDSv1.
		{"IMDSv1 only", v1Only.URL(), true, v1Only},
		// IMDSv2 answers: no fallback, no warning, still no credentials.
		{"IMDSv2", v2.URL(), false, v2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeaws.ClearAWSEnv(t) // no credentials anywhere
			t.Setenv("AWS_EC2_METADATA_DISABLED", "false")
			t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", tt.imds)
			t.Setenv("AWS_REGION", "eu-west-1")
			var buf bytes.Buffer
			log, _, err := logging.New(logging.Options{Level: "debug", Format: logging.FormatJSON, Stderr: &buf,
				JournalStream: func() bool { return false }})
			if err != nil {
				t.Fatal(err)
			}
			raw := captureStderr(t, func() {
				id, err := NewAWSIdentity(context.Background(), config.Default(), log)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := id.Source.Retrieve(context.Background()); err == nil {
					t.Fatal("credentials found with none configured")
				}
			})
			if raw != "" {
				t.Errorf("raw lines on stderr: %q", raw)
			}
			warned := false
			sc := bufio.NewScanner(&buf)
			for sc.Scan() {
				var line map[string]any
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Errorf("not a JSON line: %q: %v", sc.Text(), err)
					continue
				}
				if line["logger"] == "sdk" && line["level"] == "warn" && strings.Contains(line["msg"].(string), "falling back to IMDSv1") {
					warned = true
				}
			}
			if warned != tt.wantWarn {
				t.Errorf("sdk IMDS warning logged = %v, want %v; log:\n%s", warned, tt.wantWarn, buf.String())
			}
			// The SDK did ask this IMDS for the instance's role (and got none).
			if tt.asked != nil && !askedForRole(tt.asked) {
				t.Errorf("the SDK never asked IMDS for a role: %+v", tt.asked.Requests())
			}
		})
	}
}

// askedForRole reports whether m was asked for the instance's role
// credentials list and answered 404 (no role attached).
func askedForRole(m *fakeaws.IMDS) bool {
	for _, r := range m.Requests() {
		if r.Method == http.MethodGet && r.Path == "/latest/meta-data/iam/security-credentials/" && r.Status == http.StatusNotFound {
			return true
		}
	}
	return false
}
