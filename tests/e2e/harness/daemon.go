package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// EnvDaemonRace builds the daemon with the race detector (needs cgo and a C compiler).
const EnvDaemonRace = "ECR_NODE_AUTH_E2E_DAEMON_RACE"

// BuildDaemon builds ./cmd/ecr-node-auth of the module at moduleRoot into outDir and
// returns the binary's path. With ECR_NODE_AUTH_E2E_DAEMON_RACE=1 it is built with -race.
func BuildDaemon(moduleRoot, outDir string) (string, error) {
	bin := filepath.Join(outDir, "ecr-node-auth")
	args := []string{"build", "-o", bin}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv(EnvDaemonRace) == "1" {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	cmd := exec.Command(LookGo(), append(args, "./cmd/ecr-node-auth")...)
	cmd.Dir = moduleRoot
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ecr-node-auth: %v\n%s", err, out)
	}
	return bin, nil
}

// Artifact is text a process of the run produced (a daemon or containerd log, a status,
// doctor or metrics output, a client's stderr), kept in memory past the test's temp
// dirs for the secret hygiene check TestMain makes after the run.
type Artifact struct {
	Name string
	Data []byte
}

var (
	artifactsMu sync.Mutex
	artifacts   []Artifact

	// Every daemon start must leave a recorded log: the hygiene check compares.
	daemonStarts, daemonLogs atomic.Int64
)

// RecordArtifact keeps data for Artifacts.
func RecordArtifact(name string, data []byte) {
	artifactsMu.Lock()
	defer artifactsMu.Unlock()
	artifacts = append(artifacts, Artifact{Name: name, Data: bytes.Clone(data)})
}

// RecordFile records the file at path as an artifact; a missing file records nothing
// and returns the error.
func RecordFile(name, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	RecordArtifact(name, b)
	return nil
}

// Artifacts returns every artifact recorded so far in this process.
func Artifacts() []Artifact {
	artifactsMu.Lock()
	defer artifactsMu.Unlock()
	return append([]Artifact(nil), artifacts...)
}

// DaemonLogCoverage is how many daemon processes were started in this process and how
// many of their logs were recorded as artifacts.
func DaemonLogCoverage() (starts, recorded int64) {
	return daemonStarts.Load(), daemonLogs.Load()
}

// Registry is one entry of the daemon config's registries list.
type Registry struct {
	Host     string
	Endpoint string
	CA       string
}

// Mirror is one entry of the daemon config's mirrors list.
type Mirror struct {
	Upstream string
	ECR      string // <ECR host>/<prefix>
	Endpoint string
	CA       string
}

// DaemonConfig is the daemon's config.yaml (design.md) as the tests use it.
type DaemonConfig struct {
	RoleArn          string
	Region           string
	Registries       []Registry
	Mirrors          []Mirror
	TokenFile        string
	Audience         string
	CertsDir         string
	ContainerdConfig string
	Socket           string
	// MetricsAddress: nil leaves the key out; tests running daemons in parallel set "".
	MetricsAddress *string
	LogLevel       string // default debug: the most output for the hygiene check
	LogFormat      string // default json
	// PublicECR renders publicECR: true (ECR Public tokens).
	PublicECR bool
}

// YAML renders the config.
func (c DaemonConfig) YAML() string {
	var b strings.Builder
	b.WriteString("awsECR:\n")
	if c.RoleArn != "" {
		fmt.Fprintf(&b, "  roleArn: %q\n", c.RoleArn)
	}
	if c.Region != "" {
		fmt.Fprintf(&b, "  region: %q\n", c.Region)
	}
	b.WriteString("registries:\n")
	for _, r := range c.Registries {
		fmt.Fprintf(&b, "  - host: %q\n", r.Host)
		if r.Endpoint != "" {
			fmt.Fprintf(&b, "    endpoint: %q\n", r.Endpoint)
		}
		if r.CA != "" {
			fmt.Fprintf(&b, "    ca: %q\n", r.CA)
		}
	}
	if len(c.Mirrors) > 0 {
		b.WriteString("mirrors:\n")
	}
	for _, m := range c.Mirrors {
		fmt.Fprintf(&b, "  - upstream: %q\n    ecr: %q\n", m.Upstream, m.ECR)
		if m.Endpoint != "" {
			fmt.Fprintf(&b, "    endpoint: %q\n", m.Endpoint)
		}
		if m.CA != "" {
			fmt.Fprintf(&b, "    ca: %q\n", m.CA)
		}
	}
	fmt.Fprintf(&b, "identity:\n  tokenFile: %q\n", c.TokenFile)
	if c.Audience != "" {
		fmt.Fprintf(&b, "  audience: %q\n", c.Audience)
	}
	fmt.Fprintf(&b, "containerd:\n  certsDir: %q\n", c.CertsDir)
	if c.ContainerdConfig != "" {
		fmt.Fprintf(&b, "  configFile: %q\n", c.ContainerdConfig)
	}
	fmt.Fprintf(&b, "socket: %q\n", c.Socket)
	if c.MetricsAddress != nil {
		fmt.Fprintf(&b, "metricsAddress: %q\n", *c.MetricsAddress)
	}
	if c.PublicECR {
		b.WriteString("publicECR: true\n")
	}
	level, format := c.LogLevel, c.LogFormat
	if level == "" {
		level = "debug"
	}
	if format == "" {
		format = "json"
	}
	fmt.Fprintf(&b, "log:\n  level: %s\n  format: %s\n", level, format)
	return b.String()
}

// Daemon runs bin/ecr-node-auth as a separate process, restartable; each start logs to
// its own file in Dir.
type Daemon struct {
	Bin        string
	Dir        string
	ConfigFile string
	Socket     string
	Env        []string // the whole environment: nothing leaks in from the test's own

	t       testing.TB
	mu      sync.Mutex
	starts  int
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	LogFile string // the current start's log
}

// NewDaemon writes cfg to dir/config.yaml and prepares (does not start) the daemon.
// env holds the AWS endpoint variables; a minimal, isolated environment is added
// (HOME, no shared config or credentials files, no IMDS). At cleanup the daemon is
// stopped, and every log recorded as an artifact.
func NewDaemon(t testing.TB, bin, dir string, cfg DaemonConfig, env map[string]string) *Daemon {
	t.Helper()
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(dir, "auth.sock")
	}
	d := &Daemon{Bin: bin, Dir: dir, ConfigFile: filepath.Join(dir, "config.yaml"), Socket: cfg.Socket, t: t}
	if err := os.WriteFile(d.ConfigFile, []byte(cfg.YAML()), 0o600); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	d.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"AWS_CONFIG_FILE=" + filepath.Join(home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
	}
	for k, v := range env {
		d.Env = append(d.Env, k+"="+v)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("daemon log tail (%s):\n%s", d.LogFile, TailFile(d.LogFile, 40))
		}
		d.recordLogs()
	})
	return d
}

// recordLogs keeps every start's log as an artifact, and fails the test if a daemon
// built with -race reported a data race.
func (d *Daemon) recordLogs() {
	for i := 1; i <= d.starts; i++ {
		p := filepath.Join(d.Dir, fmt.Sprintf("daemon-%d.log", i))
		if b, err := os.ReadFile(p); err == nil {
			RecordArtifact(d.t.Name()+"/"+filepath.Base(p), b)
			daemonLogs.Add(1)
			if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
				d.t.Errorf("the daemon reported a data race (%s):\n%s", p, b)
			}
		}
	}
}

// Start starts the daemon (`run --config`), logging to a new file.
func (d *Daemon) Start() {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil && d.alive() {
		d.t.Fatalf("daemon already running (pid %d)", d.cmd.Process.Pid)
	}
	d.starts++
	daemonStarts.Add(1)
	d.LogFile = filepath.Join(d.Dir, fmt.Sprintf("daemon-%d.log", d.starts))
	logf, err := os.Create(d.LogFile)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.Bin, "run", "--config", d.ConfigFile)
	cmd.Env = d.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.t.Fatalf("starting daemon: %v", err)
	}
	done := make(chan struct{})
	d.cmd, d.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		d.mu.Lock()
		if d.cmd == cmd {
			d.waitErr = err
		}
		d.mu.Unlock()
		close(done)
	}()
}

func (d *Daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Alive reports whether the current daemon process runs.
func (d *Daemon) Alive() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd != nil && d.alive()
}

// ExitErr is the last process's exit error (after it exited).
func (d *Daemon) ExitErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waitErr
}

// PID is the current process id (0 when never started).
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Kill sends SIGKILL and waits for the process to die.
func (d *Daemon) Kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop sends SIGTERM and waits up to 10s, then SIGKILL. It returns true when the
// daemon exited by itself within that time.
func (d *Daemon) Stop() bool {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return false
	}
}

// Log returns the current start's log.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogFile)
	return string(b)
}

// Metrics GETs /metrics from the daemon's metrics server at addr (host:port, as
// `status` reports it) and records the body as an artifact.
func (d *Daemon) Metrics(addr string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	RecordArtifact(d.t.Name()+"/metrics", b)
	if err != nil {
		return b, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET http://%s/metrics: %s", addr, resp.Status)
	}
	return b, nil
}

// Status runs `ecr-node-auth status --socket S -o json` and returns its stdout. Both
// streams are recorded as artifacts for the hygiene check.
func (d *Daemon) Status() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Bin, "status", "--socket", d.Socket, "-o", "json")
	cmd.Env = d.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	RecordArtifact(d.t.Name()+"/status", append(stdout.Bytes(), stderr.Bytes()...))
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("ecr-node-auth status: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// StatusJSON is Status decoded as JSON.
func (d *Daemon) StatusJSON() (any, []byte, error) {
	out, err := d.Status()
	if err != nil {
		return nil, out, err
	}
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, out, fmt.Errorf("status -o json is not JSON: %v\n%s", err, out)
	}
	return v, out, nil
}
