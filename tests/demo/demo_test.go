package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
)

var daemonBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	root, err := harness.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "ena-demo-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	daemonBin, err = harness.BuildDaemon(root, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// TestDemo runs the demo without the containerd step and checks what it prints.
func TestDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code, secrets := run([]string{"-bin", daemonBin, "-pull", "skip"}, &stdout, &stderr)
	out := stdout.String() + stderr.String()
	if code != 0 {
		t.Fatalf("demo exit code %d, want 0; output:\n%s", code, out)
	}
	if len(secrets) < 4 {
		t.Fatalf("the fake issued only %d secrets; the demo did not exercise STS and ECR", len(secrets))
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the demo printed a secret of %d bytes", len(s))
		}
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s*REGISTRY\s+EXPIRES IN\s+LAST REFRESH\s+NEXT REFRESH\s+ERROR$`),
		regexp.MustCompile(`(?m)^\s*111122223333\.dkr\.ecr\.us-east-1\.amazonaws\.com\s+(1[12]h|11h\d+m\d+s)\s+\S+ ago\s+\S+\s+-$`),
		regexp.MustCompile(`serving 1 registry`),
		regexp.MustCompile(`identity: web-identity role=arn:aws:iam::111122223333:role/`),
		regexp.MustCompile(`(?m)^\s*# Managed by ecr-node-auth\.`),
		regexp.MustCompile(`(?m)^\s*server = "https://127\.0\.0\.1:\d+"$`),
		regexp.MustCompile(`(?m)^\s*Authorization = \["Basic <redacted: \d+ bytes>"\]$`),
		regexp.MustCompile(`CRI pull skipped \(-pull=skip\)`),
		regexp.MustCompile(`exited with status 0`),
		regexp.MustCompile(`demo OK`),
	} {
		if !want.MatchString(out) {
			t.Errorf("output lacks %s", want)
		}
	}
	// Every Authorization line is redacted.
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Authorization") && strings.Contains(line, "Basic ") && !strings.Contains(line, "<redacted: ") {
			t.Errorf("unredacted Authorization line: %q", line)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestRedactHostsToml(t *testing.T) {
	in := "  [host.\"https://h\".header]\n    Authorization = [\"Basic QVdTOnNlY3JldA==\"]\n"
	got := redactHostsToml(in)
	want := "  [host.\"https://h\".header]\n    Authorization = [\"Basic <redacted: 16 bytes>\"]\n"
	if got != want {
		t.Fatalf("redactHostsToml:\n got %q\nwant %q", got, want)
	}
}

func TestSecretFilter(t *testing.T) {
	var b bytes.Buffer
	f := &secretFilter{w: &b, secrets: func() []string { return []string{"s3cr3t-value"} }}
	fmt.Fprintf(f, "a s3cr3t-value b s3cr3t-value\n")
	if b.String() != "a <redacted> b <redacted>\n" || f.hits != 2 {
		t.Fatalf("filter wrote %q with %d hits", b.String(), f.hits)
	}
}
