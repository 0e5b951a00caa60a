package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerdBinary is one containerd build to test against.
type ContainerdBinary struct {
	Path    string
	Version string // e.g. "1.6.20~ds1", "2.4.2"
	Major   int
}

// Name is a subtest name, e.g. "containerd-1.6.20".
func (b ContainerdBinary) Name() string {
	v := b.Version
	if i := strings.IndexAny(v, "~+-"); i > 0 {
		v = v[:i]
	}
	return "containerd-" + v
}

// DefaultContainerdPaths are tried when ECR_NODE_AUTH_E2E_CONTAINERD is unset:
// Debian's containerd 1.6 and the v2 that `make tools` builds.
func DefaultContainerdPaths(moduleRoot string) []string {
	return []string{"/usr/bin/containerd", filepath.Join(moduleRoot, ".cache", "tools", "containerd")}
}

// FindContainerd returns the containerd binaries to test: the paths in
// ECR_NODE_AUTH_E2E_CONTAINERD (each must work), else those of DefaultContainerdPaths
// that exist. Problems with explicitly named binaries are returned as errors.
func FindContainerd(moduleRoot string) ([]ContainerdBinary, error) {
	var paths []string
	explicit := false
	if env := strings.TrimSpace(os.Getenv(EnvContainerd)); env != "" {
		explicit = true
		for _, p := range strings.Split(env, ",") {
			if p = strings.TrimSpace(p); p != "" {
				paths = append(paths, p)
			}
		}
	} else {
		for _, p := range DefaultContainerdPaths(moduleRoot) {
			if _, err := os.Stat(p); err == nil {
				paths = append(paths, p)
			}
		}
	}
	var out []ContainerdBinary
	var errs []error
	for _, p := range paths {
		b, err := DetectContainerd(p)
		if err != nil {
			if explicit {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, b)
	}
	return out, errors.Join(errs...)
}

var containerdVersionRE = regexp.MustCompile(`^containerd\s+\S+\s+v?(\d+)\.(\d+)\S*`)

// DetectContainerd runs `containerd --version` and parses the version, e.g.
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3" or
// "containerd github.com/containerd/containerd/v2 v2.4.2 <commit>".
func DetectContainerd(path string) (ContainerdBinary, error) {
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return ContainerdBinary{}, fmt.Errorf("%s --version: %v: %s", path, err, out)
	}
	line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	m := containerdVersionRE.FindStringSubmatch(line)
	if m == nil {
		return ContainerdBinary{}, fmt.Errorf("%s --version: cannot parse %q", path, line)
	}
	major, _ := strconv.Atoi(m[1])
	if major != 1 && major != 2 {
		return ContainerdBinary{}, fmt.Errorf("%s: containerd major version %d is not supported by the harness", path, major)
	}
	fields := strings.Fields(line)
	return ContainerdBinary{Path: path, Version: strings.TrimPrefix(fields[2], "v"), Major: major}, nil
}

// Containerd is a running private containerd: its own root, state, opt, CNI and gRPC
// socket under Dir, reading registry hosts from CertsDir (config_path).
type Containerd struct {
	Bin        ContainerdBinary
	Dir        string
	CertsDir   string
	ConfigFile string
	Socket     string
	LogFile    string

	Images  runtimeapi.ImageServiceClient
	Runtime runtimeapi.RuntimeServiceClient

	cmd     *exec.Cmd
	conn    *grpc.ClientConn
	done    chan struct{}
	waitErr error
	t       testing.TB
}

// ConfigTOML renders containerd's config for a binary: version 2 with the
// io.containerd.grpc.v1.cri plugin for 1.x, version 3 with io.containerd.cri.v1.images
// for 2.x (the containerd lab's tested files).
func ConfigTOML(major int, dir, certsDir string) string {
	sock := filepath.Join(dir, "c.sock")
	if major >= 2 {
		return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.nri.v1.nri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins.'io.containerd.internal.v1.opt']
  path = %[5]q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %[6]q
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = %[7]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
			filepath.Join(dir, "opt"), certsDir, filepath.Join(dir, "cni"))
	}
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
		filepath.Join(dir, "opt"), certsDir, filepath.Join(dir, "cni"))
}

// ContainerdOptions changes the config StartContainerdWith writes.
type ContainerdOptions struct {
	// SandboxImage is the pod sandbox (pause) image containerd pulls itself:
	// sandbox_image in the 1.x CRI table, pinned_images.sandbox in 2.x.
	SandboxImage string
}

// WithSandboxImage adds the sandbox image setting to a ConfigTOML output.
func WithSandboxImage(major int, cfg, image string) string {
	if major >= 2 {
		return cfg + fmt.Sprintf("[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = %q\n", image)
	}
	const table = "[plugins.\"io.containerd.grpc.v1.cri\"]\n"
	return strings.Replace(cfg, table, table+fmt.Sprintf("  sandbox_image = %q\n", image), 1)
}

// StartContainerd starts bin with private dirs under a new short temp dir, config_path
// = certsDir (made if missing), and waits until CRI answers RuntimeService.Version. It
// is stopped at test cleanup (and its log tail printed if the test failed).
func StartContainerd(t testing.TB, bin ContainerdBinary, certsDir string) *Containerd {
	t.Helper()
	return StartContainerdWith(t, bin, certsDir, ContainerdOptions{})
}

// StartContainerdWith is StartContainerd with options.
func StartContainerdWith(t testing.TB, bin ContainerdBinary, certsDir string, opts ContainerdOptions) *Containerd {
	t.Helper()
	dir := TempDir(t)
	for _, d := range []string{"root", "state", "opt", "cni"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(certsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.toml")
	cfg := ConfigTOML(bin.Major, dir, certsDir)
	if opts.SandboxImage != "" {
		cfg = WithSandboxImage(bin.Major, cfg, opts.SandboxImage)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := launchContainerd(t, bin, dir, cfgPath)
	c.CertsDir = certsDir
	lastErr := c.waitCRI(func(err error) bool { return err == nil })
	if !c.Alive() {
		t.Fatalf("containerd %s exited during start: %v\n%s", bin.Version, c.waitErr, TailFile(c.LogFile, 30))
	}
	if lastErr != nil {
		t.Fatalf("containerd %s: CRI not ready after 30s: %v\n%s", bin.Version, lastErr, TailFile(c.LogFile, 30))
	}
	t.Logf("containerd %s (pid %d) CRI ready in %v; socket %s, config_path %s",
		bin.Version, c.PID(), time.Since(start).Round(time.Millisecond), c.Socket, certsDir)
	return c
}

// StartContainerdConfig starts bin with cfg, a config file the caller wrote whose
// private dirs and socket (c.sock) are under dir; it is stopped at cleanup as
// StartContainerd's is. It waits, at most 30s, until containerd exits or
// RuntimeService.Version answers with an error up accepts (nil: CRI is ready), and
// returns the last answer; what that means for the test is the caller's to judge.
func StartContainerdConfig(t testing.TB, bin ContainerdBinary, dir, cfg string, up func(error) bool) (*Containerd, error) {
	t.Helper()
	c := launchContainerd(t, bin, dir, cfg)
	return c, c.waitCRI(up)
}

// launchContainerd starts bin --config cfg (socket dir/c.sock, log in dir), stops it
// at test cleanup (printing its log tail if the test failed) and dials its socket.
func launchContainerd(t testing.TB, bin ContainerdBinary, dir, cfg string) *Containerd {
	t.Helper()
	c := &Containerd{
		Bin:        bin,
		Dir:        dir,
		ConfigFile: cfg,
		Socket:     filepath.Join(dir, "c.sock"),
		LogFile:    filepath.Join(dir, "containerd.log"),
		done:       make(chan struct{}),
		t:          t,
	}
	logf, err := os.Create(c.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(bin.Path, "--log-level", "debug", "--config", c.ConfigFile)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C on `go test` reaches the test, which stops containerd.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", bin.Path, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd %s log tail (%s):\n%s", bin.Version, c.LogFile, TailFile(c.LogFile, 30))
		}
		c.Stop()
		// containerd logs request headers at debug level but leaves Authorization out
		// (remotes/docker requestFields, 1.6 and 2.x), so its log is checked too.
		_ = RecordFile(t.Name()+"/containerd-"+bin.Version+".log", c.LogFile)
	})

	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn
	c.Images = runtimeapi.NewImageServiceClient(conn)
	c.Runtime = runtimeapi.NewRuntimeServiceClient(conn)
	return c
}

// waitCRI asks RuntimeService.Version every 100ms, for at most 30s, until up accepts
// the answer or containerd exits, and returns the last answer (the socket's stat
// error while it does not exist yet).
func (c *Containerd) waitCRI(up func(error) bool) error {
	var lastErr error
	WaitFor(30*time.Second, 100*time.Millisecond, func() bool {
		if !c.Alive() {
			return true
		}
		if _, err := os.Stat(c.Socket); err != nil {
			lastErr = err
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, lastErr = c.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
		return up(lastErr)
	})
	return lastErr
}

// PID is containerd's process id.
func (c *Containerd) PID() int { return c.cmd.Process.Pid }

// Alive reports whether the containerd process is still running.
func (c *Containerd) Alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Pull pulls ref through CRI with no credentials in the request, as the kubelet does
// when it has none: containerd must find them in certs.d/<host>/hosts.toml.
func (c *Containerd) Pull(ref string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.Images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err
}

// RemoveImage removes ref so that the next Pull goes to the registry again. A missing
// image is not an error.
func (c *Containerd) RemoveImage(ref string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	return err
}

// ImagePresent reports whether CRI lists ref.
func (c *Containerd) ImagePresent(ref string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return false, err
	}
	return resp.GetImage() != nil, nil
}

// FreshPull removes ref, pulls it, and checks CRI lists it afterwards.
func (c *Containerd) FreshPull(ref string) error {
	if err := c.RemoveImage(ref); err != nil {
		return fmt.Errorf("remove before pull: %w", err)
	}
	if err := c.Pull(ref); err != nil {
		return err
	}
	ok, err := c.ImagePresent(ref)
	if err != nil {
		return fmt.Errorf("image status after pull: %w", err)
	}
	if !ok {
		return fmt.Errorf("pull of %s returned no error but CRI does not list the image", ref)
	}
	return nil
}

var deniedRE = regexp.MustCompile(`401 Unauthorized|authorization failed|no basic auth credentials`)

// IsDenied reports whether a pull error is the registry refusing credentials (containerd
// 1.6: "401 Unauthorized"; 2.x: "authorization failed: no basic auth credentials"), as
// opposed to any other failure.
func IsDenied(err error) bool { return err != nil && deniedRE.MatchString(err.Error()) }

// LoadedHostDirCount counts containerd's "loading host directory" debug lines: one per
// resolve that read certs.d.
func (c *Containerd) LoadedHostDirCount() int {
	b, _ := os.ReadFile(c.LogFile)
	return strings.Count(string(b), "loading host directory")
}

// Stop stops containerd: SIGTERM, then SIGKILL after 10s; then unmounts anything left
// under its dir. Safe to call twice.
func (c *Containerd) Stop() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	if c.Alive() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.t.Logf("containerd %d did not stop on SIGTERM in 10s; killing", c.PID())
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	UnmountUnder(c.Dir)
}

// UnmountUnder lazily unmounts every mount point at or below dir, deepest first.
func UnmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
