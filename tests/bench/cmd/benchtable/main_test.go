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
BenchmarkPluginExec-2   	     300	         0 aws_calls_per_1000	         %s exec_ratio	         5.990 exec_ratio_mean	         3.624 go_exec_ratio	         2.332 gohello_ms	         1.950 gohello_ratio	         8.451 plugin_ms	         1.196 true_ms	         7.512 version_ms
BenchmarkPulls/warm-2        	      20	         0 aws_calls_per_1000_pulls	      6624 pulls/s
BenchmarkPulls/cold-2        	      20	         1.000 aws_calls_per_1000_pulls	         %s ecr_calls_per_new_region	         %s ecr_calls_per_new_region-max	         1.000 ecr_calls_per_new_region-min	       107.8 ms/1000_pulls
PASS
ok  	github.com/ecr-node-auth/ecr-node-auth/tests/bench	3.617s
goos: linux
goarch: amd64
pkg: github.com/ecr-node-auth/ecr-node-auth/tests/bench
cpu: AMD EPYC
BenchmarkDaemonSteadyRSS-2   	       1	       221.0 ecr_refreshes	        17.10 go_sys_mib	        36.00 goroutines	         3.945 heap_inuse_mib	         0 lookup_errors	     21764 lookups	       240.0 refreshes	         7.855 rss_anon_mib	        12.97 rss_file_mib	         0.2148 rss_growth_mib	        20.99 rss_hwm_mib	        %s rss_mib	        17.18 rss_ready_mib	        31.06 soak_s	         1.188 stack_inuse_mib	        19.00 sts_refreshes
--- BENCH: BenchmarkDaemonSteadyRSS-2
    soak_bench_test.go:94: daemon VmRSS 17.3 MiB when ready
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
	code, out, errs := runSample(t, fill("0.6694", "1.2", "1", "19.5"))
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
		"tests/bench.PluginExec", "exec_ratio", "≤ 1.5", "go_exec_ratio", "PluginExec 1.95 gohello_ratio", "PluginExec 7.51 version_ms",
		"tests/bench.Pulls/warm 0 aws_calls_per_1000_pulls = 0 pass 6624 pulls/s, 20 iterations",
		"tests/bench.Pulls/cold 1 ecr_calls_per_new_region = 1 pass max 1, min 1,", "108 ms/1000_pulls",
		"tests/bench.Pulls/cold 1 aws_calls_per_1000_pulls - -",
		"tests/bench.DaemonSteadyRSS 19.5 rss_mib ≤ 20 pass", "rss_anon_mib", "rss_growth_mib",
		"tests/bench.DaemonSteadyRSS 240 refreshes ≥ 200 pass",
		"note: tests/bench.DaemonSteadyRSS: daemon VmRSS 17.3 MiB when ready",
		"all 11 targets met",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// fill puts the rotation time, the plugin's exec ratio, the ECR calls per new region
// (mean and max) and the daemon's RSS in the sample.
func fill(rotation, ratio, coldCalls, rss string) string {
	s := sample
	for _, v := range []string{rotation, ratio, coldCalls, coldCalls, rss} {
		s = strings.Replace(s, "%s", v, 1)
	}
	return s
}

func TestMissedTarget(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		rotation, ratio, cold, rss string
		missed                     []string // rows that must read MISS
		summary                    string
	}{
		{"rotation and exec", "150.5", "7.07", "1", "19.5", []string{"RotationPickup 150 ms/rotation", "PluginExec 7.07 exec_ratio"}, "2 targets missed (of 11)"},
		{"rss", "0.6", "1.2", "1", "20.83", []string{"DaemonSteadyRSS 20.8 rss_mib ≤ 20 MISS"}, "1 target missed (of 11)"},
		// Two calls for one new region: the concurrent requests did not share one.
		{"cold calls", "0.6", "1.2", "2", "19.5", []string{"Pulls/cold 2 ecr_calls_per_new_region = 1 MISS"}, "1 target missed (of 11)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := fill(tc.rotation, tc.ratio, tc.cold, tc.rss)
			code, out, _ := runSample(t, in)
			flat := regexp.MustCompile(` {2,}`).ReplaceAllString(out, " ")
			summary := tc.summary
			if code != 0 || strings.Count(out, "MISS") != len(tc.missed) || !strings.Contains(out, summary) {
				t.Fatalf("exit %d, want 0 (a report) with %d MISS rows and %q:\n%s", code, len(tc.missed), summary, out)
			}
			for _, m := range tc.missed {
				if !strings.Contains(flat, m) {
					t.Errorf("table lacks %q:\n%s", m, out)
				}
			}
			t.Setenv(envStrict, "1")
			if code, out, errs := runSample(t, in); code != 1 || !strings.Contains(errs, strings.Fields(tc.summary)[0]+" target") {
				t.Fatalf("%s=1: exit %d, want 1:\n%s%s", envStrict, code, out, errs)
			}
		})
	}
}

// A run without the soak (it failed, or -bench left it out) misses its targets.
func TestSoakAbsent(t *testing.T) {
	in := fill("0.6694", "1.2", "1", "19.5")
	var kept []string
	for _, l := range strings.Split(in, "\n") {
		if !strings.Contains(l, "DaemonSteadyRSS") && !strings.Contains(l, "VmRSS") {
			kept = append(kept, l)
		}
	}
	in = strings.Join(kept, "\n")
	code, out, _ := runSample(t, in)
	flat := regexp.MustCompile(` {2,}`).ReplaceAllString(out, " ")
	for _, want := range []string{
		"DaemonSteadyRSS - rss_mib ≤ 20 MISS not in the input",
		"DaemonSteadyRSS - refreshes ≥ 200 MISS not in the input",
		"2 targets missed (of 11)",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

func TestMissingAndFailed(t *testing.T) {
	in := "pkg: github.com/ecr-node-auth/ecr-node-auth/tokens\nBenchmarkLookup-2 10 5 ns/op\ngoroutine 1 [chan receive]:\nFAIL\tgithub.com/ecr-node-auth/ecr-node-auth/tokens\t1.0s\n"
	code, out, errs := runSample(t, in)
	if code != 1 || !strings.Contains(out, "not in the input") || !strings.Contains(errs, "goroutine 1") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
}
