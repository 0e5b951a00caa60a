// Command demo runs ecr-node-auth's main job on a local default: the fake AWS (STS, ECR) and
// a private HTTPS registry from tests/fakeaws, run in-process, and the real daemon binary as a
// child process. It prints what happened, the `ecr-node-auth status` table and the hosts.toml
// the daemon wrote (Authorization redacted), then, as root with containerd installed, pulls
// the image through a private containerd's CRI with no credentials in the request.
//
//	go run ./tests/demo -bin bin/ecr-node-auth [-keep] [-pull auto|skip|require]
//
// `make demo` runs it after `make build`. Nothing it prints carries a secret: every line goes
// through a filter that knows every secret the fake issued, and a hit fails the demo.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	region   = "us-east-1"
	roleARN  = "arn:aws:iam::111122223333:role/ecr-node-auth-demo"
	repo     = "app"
	tag      = "v1"
	audience = fakeaws.DefaultAudience
)

func main() {
	code, _ := run(os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(code)
}

// options are the command line.
type options struct {
	bin        string
	keep       bool
	pull       string // auto, skip, require
	containerd string
	timeout    time.Duration
}

// demo is one run.
type demo struct {
	o      options
	out    *secretFilter // stdout, secrets replaced and counted
	errw   *secretFilter // stderr
	fake   *fakeaws.Fake
	reg    *fakeaws.Registry
	dir    string
	env    []string
	cfg    string
	sock   string
	certs  string
	tokDir *harness.TokenDir
	logf   string
	ecrImg string
	ecrHst string
	digest string
	passwd string // the ECR password in hosts.toml: compared, never printed
	ctrCfg string

	daemon   *exec.Cmd
	done     chan struct{}
	waitErr  error
	cleanups []func()
}

// run is the whole demo. It returns the exit code and, for tests, every secret the fake
// issued (never printed).
func run(args []string, stdout, stderr io.Writer) (int, []string) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "bin/ecr-node-auth", "the ecr-node-auth binary (make build)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (config, token, certs.d, daemon log, containerd's files)")
	fs.StringVar(&o.pull, "pull", "auto", "CRI pull through a private containerd: auto (when root with containerd), skip, require")
	fs.StringVar(&o.containerd, "containerd", "", "containerd binary (default: /usr/bin/containerd, else .cache/tools/containerd)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Second, "how long to wait for the daemon's first hosts.toml")
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	if o.pull != "auto" && o.pull != "skip" && o.pull != "require" {
		fmt.Fprintf(stderr, "demo: -pull %q: use auto, skip or require\n", o.pull)
		return 2, nil
	}
	d := &demo{o: o}
	d.out = &secretFilter{w: stdout, secrets: d.secrets}
	d.errw = &secretFilter{w: stderr, secrets: d.secrets}
	err := d.main()
	d.cleanup()
	var secrets []string
	if d.fake != nil {
		secrets = d.fake.Secrets()
		d.fake.Close()
	}
	if n := d.out.hits + d.errw.hits; n > 0 && err == nil {
		err = fmt.Errorf("%d secret(s) reached the demo's output (redacted above): a bug", n)
	}
	if err != nil {
		fmt.Fprintf(d.errw, "\ndemo FAILED: %v\n", err)
		return 1, secrets
	}
	fmt.Fprintln(d.out, "\ndemo OK: every step passed; no secret was printed.")
	return 0, secrets
}

func (d *demo) secrets() []string {
	if d.fake == nil {
		return nil
	}
	return d.fake.Secrets()
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }

func (d *demo) defer_(f func()) { d.cleanups = append(d.cleanups, f) }

func (d *demo) cleanup() {
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
}

func (d *demo) main() error {
	bin, err := filepath.Abs(d.o.bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("daemon binary: %v (run `make build` first, or pass -bin)", err)
	}
	d.o.bin = bin
	start := time.Now()

	// 1. The fake AWS and the private registry, with one image.
	d.fake, err = fakeaws.New(fakeaws.Options{AllowedRoleARNs: []string{roleARN}})
	if err != nil {
		return fmt.Errorf("start the fake AWS: %w", err)
	}
	d.reg, err = fakeaws.NewRegistry(d.fake)
	if err != nil {
		return fmt.Errorf("start the fake registry: %w", err)
	}
	d.defer_(d.reg.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.digest, err = d.reg.PushRandomImageContext(ctx, repo, tag)
	if err != nil {
		return fmt.Errorf("push the demo image: %w", err)
	}
	d.ecrHst = d.fake.AccountID() + ".dkr.ecr." + region + ".amazonaws.com"
	d.ecrImg = d.ecrHst + "/" + repo + ":" + tag
	d.say("== ecr-node-auth demo: the daemon against a local fake AWS and a private registry")
	d.say("1. Started a fake AWS on loopback (real wire protocols: STS %s, ECR %s)", d.fake.STSURL(), d.fake.ECRURL())
	d.say("   and a private HTTPS registry at %s standing in for %s;", d.reg.URL(), d.ecrHst)
	d.say("   pushed %s (%s). The registry accepts only `Basic AWS:<ECR token>` from that fake ECR.", d.ecrImg, shortDigest(d.digest))

	// 2. Files: token (kubelet layout), CA, config.
	d.dir, err = os.MkdirTemp("/tmp", "ena-demo-")
	if err != nil {
		return err
	}
	d.defer_(func() {
		if d.o.keep {
			fmt.Fprintf(d.out, "kept %s (-keep): config.yaml, token/, certs.d/, daemon.log%s\n", d.dir,
				map[bool]string{true: ", containerd/", false: ""}[d.ctrCfg != ""])
			return
		}
		harness.UnmountUnder(d.dir)
		if err := os.RemoveAll(d.dir); err != nil {
			fmt.Fprintf(d.errw, "demo: removing %s: %v\n", d.dir, err)
		}
	})
	if err := d.writeFiles(); err != nil {
		return err
	}
	d.say("2. Wrote, in %s:", d.dir)
	d.say("   token/token  a projected service-account token (JWT) in the kubelet's ..data symlink layout")
	d.say("   ca.pem       the registry's CA;  config.yaml: roleArn %s, one registry", roleARN)
	d.say("                (%s, endpoint %s), certsDir certs.d/, socket auth.sock", d.ecrHst, d.reg.URL())

	// 3. The daemon.
	if err := d.startDaemon(); err != nil {
		return err
	}
	d.defer_(d.killDaemon)
	d.say("3. Started `%s run --config config.yaml` (pid %d) with AWS_REGION=%s and", filepath.Base(d.o.bin), d.daemon.Process.Pid, region)
	d.say("   AWS_ENDPOINT_URL_STS/ECR pointing at the fake; no other AWS settings reach it.")
	auth, elapsed, err := d.waitHostsToml()
	if err != nil {
		return err
	}
	d.say("4. In %s the daemon exchanged the token with STS (AssumeRoleWithWebIdentity), got an", elapsed.Round(time.Millisecond))
	d.say("   ECR token (GetAuthorizationToken) and wrote certs.d/%s/hosts.toml.", filepath.Base(filepath.Dir(d.hostsPath())))
	if err := d.checkToken(auth); err != nil {
		return err
	}
	d.say("   STS calls: %d, ECR calls: %d. The registry accepts the written credentials: GET /v2/%s/manifests/%s -> 200.",
		d.fake.Successes(fakeaws.ActionAssumeRoleWithWebIdentity), d.fake.Successes(fakeaws.ActionGetAuthorizationToken), repo, tag)

	// 5. status and hosts.toml.
	if err := d.waitReady(); err != nil {
		return err
	}
	st, err := d.status()
	if err != nil {
		return err
	}
	d.say("\n5. What the daemon reports (the real client, over the Unix socket), and the file containerd reads:")
	d.say("\n$ ecr-node-auth status --socket %s", d.sock)
	fmt.Fprint(d.out, indent(st))
	raw, err := os.ReadFile(d.hostsPath())
	if err != nil {
		return err
	}
	d.say("\n$ cat %s   # Authorization redacted by the demo", d.hostsPath())
	fmt.Fprint(d.out, indent(redactHostsToml(string(raw))))

	// 6. The pull.
	if err := d.pullStep(); err != nil {
		return err
	}

	// 7. Stop.
	code, err := d.stopDaemon()
	if err != nil {
		return err
	}
	d.say("\n7. Sent SIGTERM: the daemon exited with status %d (hosts.toml stays for containerd). Total %s.", code, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func (d *demo) hostsPath() string {
	return harness.HostsPath(d.certs, d.ecrHst)
}

func (d *demo) writeFiles() error {
	ca := filepath.Join(d.dir, "ca.pem")
	if err := os.WriteFile(ca, d.reg.CAPEM(), 0o644); err != nil {
		return err
	}
	now := time.Now()
	tok := d.fake.MintToken(fakeaws.TokenSpec{IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	td, err := harness.NewTokenDir(filepath.Join(d.dir, "token"), tok)
	if err != nil {
		return fmt.Errorf("write the token: %w", err)
	}
	d.tokDir = td
	d.certs = filepath.Join(d.dir, "certs.d")
	d.sock = filepath.Join(d.dir, "auth.sock")
	d.cfg = filepath.Join(d.dir, "config.yaml")
	d.logf = filepath.Join(d.dir, "daemon.log")
	// containerd's config: the daemon only checks that it exists; the pull step uses it.
	ctrDir := filepath.Join(d.dir, "containerd")
	if err := os.MkdirAll(ctrDir, 0o755); err != nil {
		return err
	}
	ctrCfg := filepath.Join(ctrDir, "config.toml")
	if err := os.WriteFile(ctrCfg, []byte(harness.ConfigTOML(2, ctrDir, d.certs)), 0o600); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`awsECR:
  roleArn: %q
  region: %q
registries:
  - host: %q
    endpoint: %q
    ca: %q
identity:
  tokenFile: %q
  audience: %q
containerd:
  certsDir: %q
  configFile: %q
socket: %q
log:
  level: info
  format: json
`, roleARN, region, d.ecrHst, d.reg.URL(), ca, td.Path(), audience, d.certs, ctrCfg, d.sock)
	if err := os.WriteFile(d.cfg, []byte(cfg), 0o600); err != nil {
		return err
	}
	home := filepath.Join(d.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	// The child's whole environment: nothing from ours (AWS_PROFILE, AWS_ACCESS_KEY_ID,
	// shared config files, IMDS) can stand in for the web identity.
	d.env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"AWS_CONFIG_FILE=" + filepath.Join(home, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "no-aws-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_REGION=" + region,
	}
	for k, v := range d.fake.Env() {
		d.env = append(d.env, k+"="+v)
	}
	return nil
}

func (d *demo) startDaemon() error {
	logf, err := os.Create(d.logf)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.o.bin, "run", "--config", d.cfg)
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start the daemon: %w", err)
	}
	d.daemon, d.done = cmd, make(chan struct{})
	go func() {
		d.waitErr = cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	return nil
}

func (d *demo) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// killDaemon is the cleanup when a step failed before the SIGTERM step.
func (d *demo) killDaemon() {
	if d.daemon == nil || d.exited() {
		return
	}
	_ = d.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.daemon.Process.Kill()
		<-d.done
	}
}

func (d *demo) stopDaemon() (int, error) {
	if d.exited() {
		return -1, fmt.Errorf("the daemon exited on its own: %v\n%s", d.waitErr, d.logTail())
	}
	_ = d.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.daemon.Process.Kill()
		<-d.done
		return -1, fmt.Errorf("the daemon did not exit within 10s of SIGTERM (killed)\n%s", d.logTail())
	}
	if d.waitErr != nil {
		return d.daemon.ProcessState.ExitCode(), fmt.Errorf("the daemon exited with %v after SIGTERM, want status 0\n%s", d.waitErr, d.logTail())
	}
	return 0, nil
}

func (d *demo) logTail() string {
	return "daemon log tail (" + d.logf + "):\n" + indent(harness.TailFile(d.logf, 20))
}

var authRE = regexp.MustCompile(`Authorization = \["([^"]*)"\]`)

// waitHostsToml waits for hosts.toml with an Authorization header and returns the header.
func (d *demo) waitHostsToml() (string, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(d.o.timeout)
	for {
		if b, err := os.ReadFile(d.hostsPath()); err == nil {
			if m := authRE.FindSubmatch(b); m != nil {
				return string(m[1]), time.Since(start), nil
			}
		}
		if d.exited() {
			return "", 0, fmt.Errorf("the daemon exited before writing hosts.toml: %v\n%s", d.waitErr, d.logTail())
		}
		if time.Now().After(deadline) {
			return "", 0, fmt.Errorf("no hosts.toml with credentials at %s after %s\n%s", d.hostsPath(), d.o.timeout, d.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkToken checks that the header carries a token the fake ECR issued and that the
// registry takes it.
func (d *demo) checkToken(auth string) error {
	enc, ok := strings.CutPrefix(auth, "Basic ")
	if !ok {
		return errors.New("hosts.toml: Authorization is not Basic")
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return errors.New("hosts.toml: Authorization is not valid base64")
	}
	user, pw, _ := strings.Cut(string(raw), ":")
	if user != "AWS" {
		return fmt.Errorf("hosts.toml: Authorization user is %q, want AWS", user)
	}
	d.passwd = pw
	if _, ok := d.fake.LookupECRToken(pw); !ok {
		return errors.New("hosts.toml: Authorization holds a token the fake ECR never issued")
	}
	req, err := http.NewRequest(http.MethodGet, d.reg.URL()+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := d.reg.Client().Do(req)
	if err != nil {
		return fmt.Errorf("registry check: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the registry refused the credentials in hosts.toml: %s", resp.Status)
	}
	return nil
}

// waitReady waits until the status API says ready and the file state is known.
func (d *demo) waitReady() error {
	c := api.NewClient(d.sock)
	deadline := time.Now().Add(5 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil && st.Ready && len(st.Registries) == 1 && st.Registries[0].FileState != "pending" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("not ready: %s", st.State)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("status API: %v", last)
}

// status runs the real `ecr-node-auth status` client.
func (d *demo) status() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.o.bin, "status", "--socket", d.sock)
	cmd.Env = d.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ecr-node-auth status: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if !strings.Contains(stdout.String(), "REGISTRY") {
		return "", fmt.Errorf("ecr-node-auth status printed no registry table:\n%s", stdout.String())
	}
	return stdout.String(), nil
}

// redactHostsToml replaces each Authorization value by its size.
func redactHostsToml(s string) string {
	return authRE.ReplaceAllStringFunc(s, func(m string) string {
		v := authRE.FindStringSubmatch(m)[1]
		scheme, cred, ok := strings.Cut(v, " ")
		if !ok {
			scheme, cred = "", v
		}
		return fmt.Sprintf(`Authorization = ["%s <redacted: %d bytes>"]`, scheme, len(cred))
	})
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "    " + strings.Join(lines, "\n    ") + "\n"
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19] + "…"
	}
	return d
}

// secretFilter writes through to w with every secret the fake issued replaced by
// "<redacted>", counting replacements (any is a bug the demo reports).
type secretFilter struct {
	w       io.Writer
	secrets func() []string
	mu      sync.Mutex
	hits    int
}

func (f *secretFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := string(p)
	for _, sec := range f.secrets() {
		if len(sec) < 8 { // nothing short is a secret; avoid mangling text
			continue
		}
		if n := strings.Count(s, sec); n > 0 {
			f.hits += n
			s = strings.ReplaceAll(s, sec, "<redacted>")
		}
	}
	if _, err := io.WriteString(f.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}
