package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// BenchmarkPluginExec measures what the kubelet pays per image without a
// cached credential: one exec of the built binary in kubelet-plugin mode
// against a running daemon (the real socket server with a stub provider),
// interleaved with as many execs of /bin/true, both with the same stdin and
// pipes. The plugin process has a fake AWS in its environment, so any AWS
// call it made would be counted.
//
// Metrics: ns/op and plugin_ms are one plugin exec; true_ms one /bin/true
// exec; exec_ratio their ratio (target ≤ 1.5); aws_calls_per_1000 the AWS
// calls per 1,000 plugin execs (target 0: a warm lookup never leaves the
// node).
func BenchmarkPluginExec(b *testing.B) {
	bin := binary(b)
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	d := newStub(time.Now())
	sock := serve(b, d)

	env := []string{api.EnvSocket + "=" + sock, "AWS_EC2_METADATA_DISABLED=true", "AWS_ACCESS_KEY_ID=AKIDBENCH", "AWS_SECRET_ACCESS_KEY=bench"}
	for k, v := range f.Env() {
		env = append(env, k+"="+v)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, api.EnvSocket+"=") {
			env = append(env, kv)
		}
	}
	req := []byte(request(kubeletplugin.APIVersionV1, hostEast+"/app:1"))
	var out bytes.Buffer
	execOnce := func(path string, args ...string) time.Duration {
		out.Reset()
		cmd := exec.Command(path, args...)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(req)
		cmd.Stdout = &out
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err != nil {
			b.Fatalf("%s: %v", path, err)
		}
		return took
	}
	// Warm the page cache for both binaries.
	execOnce(bin, "kubelet-plugin")
	execOnce("/bin/true")
	d.calls.Store(0)

	var plugin, trivial time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plugin += execOnce(bin, "kubelet-plugin")
		if !bytes.Contains(out.Bytes(), []byte(`"password":"node-secret-east"`)) {
			b.Fatalf("unexpected plugin answer: %s", out.Bytes())
		}
		trivial += execOnce("/bin/true")
	}
	b.StopTimer()
	if got := d.calls.Load(); got != int64(b.N) {
		b.Fatalf("the daemon answered %d lookups for %d execs", got, b.N)
	}
	n := float64(b.N)
	b.ReportMetric(float64(plugin.Nanoseconds())/n, "ns/op")
	b.ReportMetric(float64(plugin.Microseconds())/n/1000, "plugin_ms")
	b.ReportMetric(float64(trivial.Microseconds())/n/1000, "true_ms")
	b.ReportMetric(float64(plugin)/float64(trivial), "exec_ratio")
	b.ReportMetric(float64(len(f.CallLog()))*1000/n, "aws_calls_per_1000")
}
