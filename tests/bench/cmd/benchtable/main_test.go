package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/ecr-node-auth/ecr-node-auth/tokens
cpu: AMD EPYC
BenchmarkLookup-2   	79340386	        24.79 ns/op	       0 B/op	       0 allocs/op
PASS
ok  	github.com/ecr-node-auth/ecr-node-auth/tokens	5.280s
pkg: github.com/ecr-node-auth/ecr-node-auth/tests/bench
BenchmarkStartToFirstHostsToml-2   	      20	         8.872 ms/start	        13.65 ms/start-max	         8.312 ms/start-p50
BenchmarkRotationPickup-2          	      20	         %s ms/rotation	         1.228 ms/rotation-max	         0.5625 ms/rotation-p50
--- BENCH: BenchmarkRotationPickup-2
    bench_test.go:475: measured: swap to /v1/status
PASS
ok  	github.com/ecr-node-auth/ecr-node-auth/tests/bench	3.617s
`

func runSample(t *testing.T, in string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(strings.NewReader(in), &out, &errb)
	return code, out.String(), errb.String()
}

func TestPass(t *testing.T) {
	code, out, errs := runSample(t, strings.Replace(sample, "%s", "0.6694", 1))
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"machine: ", "nproc ", "date: ",
		"tokens.Lookup", "24.8", "ns/op",
		"tests/bench.StartToFirstHostsToml  8.87",
		"≤ 500", "pass", "p50 8.31, max 13.", "20 iterations", "0 B/op, 0 allocs/op",
		"tests/bench.RotationPickup", "0.669", "ms/rotation",
		"note: tests/bench.RotationPickup: measured: swap to /v1/status",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestMissedTarget(t *testing.T) {
	code, out, _ := runSample(t, strings.Replace(sample, "%s", "150.5", 1))
	if code != 1 || !strings.Contains(out, "FAIL") {
		t.Fatalf("exit %d, want 1 with a FAIL row:\n%s", code, out)
	}
}

func TestMissingAndFailed(t *testing.T) {
	in := "pkg: github.com/ecr-node-auth/ecr-node-auth/tokens\nBenchmarkLookup-2 10 5 ns/op\ngoroutine 1 [chan receive]:\nFAIL\tgithub.com/ecr-node-auth/ecr-node-auth/tokens\t1.0s\n"
	code, out, errs := runSample(t, in)
	if code != 1 || !strings.Contains(out, "not in the input") || !strings.Contains(errs, "goroutine 1") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
}
