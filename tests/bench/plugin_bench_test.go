package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
)

// BenchmarkPluginExec measures what the kubelet pays per image without a cached
// credential: one exec of the built binary in kubelet-plugin mode (a v1
// CredentialProviderRequest on stdin, the response read from stdout) against a running
// daemon process that holds a warm token from the fake AWS, interleaved, in rotating
// order, with one exec of /bin/true, one of a hello-world Go binary built the same
// way (static, trimmed) and one of `ecr-node-auth version` (the binary's start alone:
// runtime and package init), all with the same stdin, pipes and environment. The plugin's
// environment points the AWS SDK at the fake, so an AWS call made by the plugin or the
// daemon during the timed loop is counted.
//
// Metrics (the ratios compare medians; the means are beside them):
//   - exec_ratio: plugin / /bin/true (target ≤ 1.5)
//   - go_exec_ratio: plugin / hello-world Go binary (informational)
//   - gohello_ratio: hello-world Go binary / /bin/true (informational: the price of a
//     Go process alone, the floor of exec_ratio for any Go binary)
//   - plugin_ms, true_ms, gohello_ms, version_ms: median exec wall times; plugin_ms
//     less version_ms is what the kubelet-plugin path itself costs
//   - aws_calls_per_1000: AWS calls per 1,000 plugin execs (target 0: a warm lookup
//     never leaves the node)
func BenchmarkPluginExec(b *testing.B) {
	hello := helloBinary(b)
	w := newWorld(b)
	td := w.tokenDir(b)
	cfg, certs, sock, err := w.config(filepath.Join(w.dir, "plugin"), td.Path())
	if err != nil {
		b.Fatal(err)
	}
	p := startServing(b, w, cfg)
	if err := w.waitHostsToml(p, harness.HostsPath(certs, w.ecrHost)); err != nil {
		b.Fatal(err)
	}

	// The kubelet passes the socket in the plugin's env (print-kubelet-config).
	env := append(slices.Clone(w.env), api.EnvSocket+"="+sock)
	req := []byte(`{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"` + w.ecrHost + `/app:v1"}`)
	var out, errOut bytes.Buffer
	execOnce := func(path string, args ...string) time.Duration {
		out.Reset()
		errOut.Reset()
		cmd := exec.Command(path, args...)
		cmd.Env = env
		cmd.Dir = w.dir
		cmd.Stdin = bytes.NewReader(req)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		t0 := time.Now()
		err := cmd.Run()
		took := time.Since(t0)
		if err != nil {
			b.Fatalf("%s: %v: %s", path, err, errOut.Bytes())
		}
		return took
	}
	plugin := func() time.Duration {
		d := execOnce(daemonBin, "kubelet-plugin")
		if !bytes.Contains(out.Bytes(), []byte(`"username":"AWS"`)) || errOut.Len() != 0 {
			b.Fatalf("unexpected plugin answer: stdout %d bytes, stderr %q", out.Len(), errOut.Bytes())
		}
		return d
	}
	trivial := func() time.Duration { return execOnce("/bin/true") }
	goHello := func() time.Duration { return execOnce(hello) }
	version := func() time.Duration { return execOnce(daemonBin, "version") }
	// Warm the page cache for the binaries and the daemon's socket path.
	for range 3 {
		plugin()
		trivial()
		goHello()
		version()
	}

	// One of each per iteration, in rotating order.
	execs := []func() time.Duration{plugin, trivial, goHello, version}
	times := make([][]time.Duration, len(execs))
	calls0 := len(w.fake.CallLog())
	i := 0
	for b.Loop() {
		for k := range execs {
			j := (i + k) % len(execs)
			times[j] = append(times[j], execs[j]())
		}
		i++
	}
	pl, tr, gh, ver := times[0], times[1], times[2], times[3]
	b.StopTimer()
	calls := len(w.fake.CallLog()) - calls0
	n := float64(len(pl))
	med := func(ds []time.Duration) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[len(s)/2]) / float64(time.Millisecond)
	}
	mean := func(ds []time.Duration) float64 {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return float64(sum) / float64(len(ds)) / float64(time.Millisecond)
	}
	b.ReportMetric(0, "ns/op") // the figures are the metrics below
	b.ReportMetric(med(pl)/med(tr), "exec_ratio")
	b.ReportMetric(mean(pl)/mean(tr), "exec_ratio_mean")
	b.ReportMetric(med(pl)/med(gh), "go_exec_ratio")
	b.ReportMetric(med(gh)/med(tr), "gohello_ratio")
	b.ReportMetric(med(pl), "plugin_ms")
	b.ReportMetric(med(tr), "true_ms")
	b.ReportMetric(med(gh), "gohello_ms")
	b.ReportMetric(med(ver), "version_ms")
	b.ReportMetric(float64(calls)*1000/n, "aws_calls_per_1000")
	// Where the plugin's start goes: package init by group (GODEBUG=inittrace=1).
	trace, err := initTrace(daemonBin, "version")
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("package init of the binary (every exec pays it): %s", formatGroups(byGroup(trace)))
}

var (
	helloOnce sync.Once
	helloBin  string
	helloErr  error
)

// helloBinary builds a hello-world Go program as `make build` builds the plugin
// (CGO_ENABLED=0, -trimpath, -s -w): the cheapest Go process there is.
func helloBinary(b *testing.B) string {
	b.Helper()
	helloOnce.Do(func() {
		dir := filepath.Dir(daemonBin)
		src := filepath.Join(dir, "hello.go")
		if helloErr = os.WriteFile(src, []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n"), 0o644); helloErr != nil {
			return
		}
		helloBin = filepath.Join(dir, "gohello")
		cmd := exec.Command(harness.LookGo(), "build", "-trimpath", "-ldflags", "-s -w", "-o", helloBin, src)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GO111MODULE=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			helloErr = &buildError{err: err, out: out}
		}
	})
	if helloErr != nil {
		b.Fatal(helloErr)
	}
	return helloBin
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string {
	return "go build hello.go: " + e.err.Error() + "\n" + string(e.out)
}
