package main

import (
	"bytes"
	"regexp"
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
BenchmarkPluginExec-2   	     300	         0 aws_calls_per_1000	         %s exec_ratio	         5.990 exec_ratio_mean	         3.624 go_exec_ratio	         2.332 gohello_ms	         8.451 plugin_ms	         1.196 true_ms
PASS
ok  	github.com/ecr-node-auth/ecr-node-auth/tests/bench	3.617s
pkg: github.com/ecr-node-auth/ecr-node-auth/daemon
BenchmarkSocketLookup/nethttp-2         	   44438	     29707 ns/op	         0 aws-calls/lookup	        28.19 cpu-µs/lookup	     33662 lookups/s	        24.42 p50-µs	       259.8 p99-µs	    5535 B/op	      64 allocs/op
BenchmarkSocketLookup/raw-2             	   69475	     16747 ns/op	         0 aws-calls/lookup	        16.84 cpu-µs/lookup	     59714 lookups/s	        14.33 p50-µs	        80.58 p99-µs	    2310 B/op	      17 allocs/op
PASS
ok  	github.com/ecr-node-auth/ecr-node-auth/daemon	4.064s
`

func runSample(t *testing.T, in string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(strings.NewReader(in), &out, &errb)
	return code, out.String(), errb.String()
}

func TestPass(t *testing.T) {
	code, out, errs := runSample(t, fill("0.6694", "1.2"))
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	// Column widths follow the longest name, so runs of spaces compare as one.
	flat := regexp.MustCompile(` {2,}`).ReplaceAllString(out, " ")
	for _, want := range []string{
		"machine: ", "nproc ", "date: ",
		"tokens.Lookup", "24.8", "ns/op",
		"tests/bench.StartToFirstHostsToml 8.87",
		"≤ 500", "pass", "p50 8.31, max 13.", "20 iterations", "0 B/op, 0 allocs/op",
		"tests/bench.RotationPickup", "0.669", "ms/rotation",
		"note: tests/bench.RotationPickup: measured: swap to /v1/status",
		"daemon.SocketLookup/raw 80.6", "p99-µs", "≤ 200", "59714", "≥ 50000", "= 0",
		"daemon.SocketLookup/nethttp 260",
		"tests/bench.PluginExec", "exec_ratio", "≤ 1.5", "go_exec_ratio",
		"all 7 targets met",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// fill puts the rotation time and the plugin's exec ratio in the sample.
func fill(rotation, ratio string) string {
	return strings.Replace(strings.Replace(sample, "%s", rotation, 1), "%s", ratio, 1)
}

func TestMissedTarget(t *testing.T) {
	in := fill("150.5", "7.07")
	code, out, _ := runSample(t, in)
	if code != 0 || strings.Count(out, "MISS") != 2 || !strings.Contains(out, "2 targets missed") {
		t.Fatalf("exit %d, want 0 (a report) with two MISS rows and the summary:\n%s", code, out)
	}
	t.Setenv(envStrict, "1")
	if code, out, errs := runSample(t, in); code != 1 || !strings.Contains(errs, "2 targets missed") {
		t.Fatalf("%s=1: exit %d, want 1:\n%s%s", envStrict, code, out, errs)
	}
}

func TestMissingAndFailed(t *testing.T) {
	in := "pkg: github.com/ecr-node-auth/ecr-node-auth/tokens\nBenchmarkLookup-2 10 5 ns/op\ngoroutine 1 [chan receive]:\nFAIL\tgithub.com/ecr-node-auth/ecr-node-auth/tokens\t1.0s\n"
	code, out, errs := runSample(t, in)
	if code != 1 || !strings.Contains(out, "not in the input") || !strings.Contains(errs, "goroutine 1") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
}
