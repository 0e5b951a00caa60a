// Package harness runs the real parts of the end-to-end tests: a private containerd
// process driven through its CRI socket exactly as the kubelet drives it, the
// ecr-node-auth daemon as a separate process, and a Kubernetes-style projected token
// directory. It knows nothing about the fake AWS; the tests in tests/e2e wire the two.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// EnvRequired makes a missing prerequisite (root, containerd) a failure instead of a skip.
// CI sets it.
const EnvRequired = "ECR_NODE_AUTH_E2E_REQUIRED"

// EnvContainerd is a comma-separated list of containerd binaries to test against.
const EnvContainerd = "ECR_NODE_AUTH_E2E_CONTAINERD"

// EnvKeep keeps every temp dir (containerd root, daemon logs, certs dir) after the test.
const EnvKeep = "ECR_NODE_AUTH_E2E_KEEP"

// Required reports whether prerequisites are mandatory (ECR_NODE_AUTH_E2E_REQUIRED=1).
func Required() bool { return os.Getenv(EnvRequired) == "1" }

// SkipOrFail skips the test with msg, or fails it when ECR_NODE_AUTH_E2E_REQUIRED=1.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (and %s=1 makes this a failure)", msg, EnvRequired)
	}
	t.Skip(msg)
}

// RequireRoot skips (or fails, see SkipOrFail) unless running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "e2e: needs root (containerd mounts overlayfs); run as root, e.g. sudo -E make test")
	}
}

// WaitFor polls cond every interval until it returns true or timeout passes. It returns
// whether cond became true.
func WaitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// TempDir makes a short directory under /tmp (unix socket paths are limited to 108
// bytes, and t.TempDir() paths carry the test name). It is removed at cleanup unless
// ECR_NODE_AUTH_E2E_KEEP=1 or the test failed with keep set.
func TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "ena-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv(EnvKeep) == "1" {
			t.Logf("keeping %s (%s=1)", dir, EnvKeep)
			return
		}
		UnmountUnder(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("removing %s: %v", dir, err)
		}
	})
	return dir
}

// TailFile returns the last n lines of a file, for failure messages.
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LookGo finds the go command: PATH, else /usr/local/go/bin/go.
func LookGo() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// ModuleRoot is the directory holding go.mod, found upwards from the working
// directory (a test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
