package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
)

// pullStep pulls the image through a private containerd's CRI when it can (root and a
// containerd binary), else says why not and how to enable it.
func (d *demo) pullStep() error {
	if d.o.pull == "skip" {
		d.say("\n6. CRI pull skipped (-pull=skip); run `sudo make demo` on a machine with containerd to include it.")
		return nil
	}
	bin, why, how := d.findContainerd()
	if why != "" {
		if d.o.pull == "require" {
			return fmt.Errorf("CRI pull required (-pull=require) but %s; %s", why, how)
		}
		d.say("\n6. CRI pull skipped: %s; to include it, %s.", why, how)
		return nil
	}
	d.say("\n6. Starting a private containerd %s (own root, state and socket under %s/containerd,", bin.Version, d.dir)
	d.say("   registry config_path = certs.d) and pulling %s through CRI with no credentials in the request:", d.ecrImg)
	c, err := startContainerd(bin, filepath.Join(d.dir, "containerd"), d.certs)
	if c != nil {
		d.defer_(c.stop)
	}
	if err != nil {
		return err
	}
	d.ctrCfg = c.cfg
	before := len(d.reg.Requests())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := c.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: d.ecrImg}})
	if err != nil {
		if harness.IsDenied(err) {
			return fmt.Errorf("CRI pull of %s denied by the registry: containerd did not use hosts.toml's credentials: %v", d.ecrImg, err)
		}
		return fmt.Errorf("CRI pull of %s: %v\ncontainerd log tail (%s):\n%s", d.ecrImg, err, c.log, indent(harness.TailFile(c.log, 20)))
	}
	st, err := c.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: d.ecrImg}})
	if err != nil || st.GetImage() == nil {
		return fmt.Errorf("CRI pull returned but ImageStatus does not list %s: %v", d.ecrImg, err)
	}
	if !slices.ContainsFunc(st.GetImage().GetRepoDigests(), func(s string) bool { return strings.HasSuffix(s, "@"+d.digest) }) {
		return fmt.Errorf("CRI pulled %s but its repo digests %v do not name the pushed manifest %s", d.ecrImg, st.GetImage().GetRepoDigests(), d.digest)
	}
	d.say("   pulled in %s: manifest %s (the one pushed), image id %s, %d bytes;",
		time.Since(start).Round(time.Millisecond), shortDigest(d.digest), shortDigest(resp.GetImageRef()), st.GetImage().GetSize())
	reqs := d.reg.Requests()[before:]
	for _, r := range reqs {
		if !r.Allowed || r.Password != d.passwd {
			return fmt.Errorf("the registry saw %s %s (status %d) without the token the daemon wrote", r.Method, r.Path, r.Status)
		}
	}
	if len(reqs) == 1 {
		d.say("   containerd made 1 registry request, carrying the token the daemon wrote.")
	} else {
		d.say("   containerd made %d registry requests, each carrying the token the daemon wrote.", len(reqs))
	}
	c.stop()
	d.say("   containerd stopped.")
	return nil
}

// findContainerd returns a containerd binary, or why there is none and how to get one.
func (d *demo) findContainerd() (harness.ContainerdBinary, string, string) {
	if os.Geteuid() != 0 {
		return harness.ContainerdBinary{}, "not running as root (containerd mounts overlayfs)",
			"run `sudo make demo` (containerd and runc installed: apt-get install containerd runc)"
	}
	var paths []string
	if d.o.containerd != "" {
		paths = []string{d.o.containerd}
	} else {
		root, _ := harness.ModuleRoot()
		paths = harness.DefaultContainerdPaths(root)
	}
	var errs []error
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := harness.DetectContainerd(p)
		if err == nil {
			return b, "", ""
		}
		errs = append(errs, err)
	}
	return harness.ContainerdBinary{}, fmt.Sprintf("no usable containerd (%v)", strings.ReplaceAll(errors.Join(errs...).Error(), "\n", "; ")),
		"apt-get install containerd runc (or `make tools` for containerd v2, or pass -containerd PATH), then run `make demo` again"
}

// ctr is a private containerd process (the e2e harness's config, without testing.TB).
type ctr struct {
	dir, cfg, sock, log string
	cmd                 *exec.Cmd
	done                chan struct{}
	conn                *grpc.ClientConn
	images              runtimeapi.ImageServiceClient
}

func startContainerd(bin harness.ContainerdBinary, dir, certsDir string) (*ctr, error) {
	for _, sub := range []string{"root", "state", "opt", "cni"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	c := &ctr{dir: dir, cfg: filepath.Join(dir, "config.toml"), sock: filepath.Join(dir, "c.sock"),
		log: filepath.Join(dir, "containerd.log"), done: make(chan struct{})}
	if err := os.WriteFile(c.cfg, []byte(harness.ConfigTOML(bin.Major, dir, certsDir)), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin.Path, "--config", c.cfg)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin.Path, err)
	}
	go func() {
		_ = c.cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	c.conn, err = grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return c, err
	}
	c.images = runtimeapi.NewImageServiceClient(c.conn)
	rt := runtimeapi.NewRuntimeServiceClient(c.conn)
	var last error
	ok := harness.WaitFor(30*time.Second, 50*time.Millisecond, func() bool {
		select {
		case <-c.done:
			return true
		default:
		}
		if _, err := os.Stat(c.sock); err != nil {
			last = err
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, last = rt.Version(ctx, &runtimeapi.VersionRequest{})
		return last == nil
	})
	select {
	case <-c.done:
		return c, fmt.Errorf("containerd exited during start:\n%s", indent(harness.TailFile(c.log, 20)))
	default:
	}
	if !ok {
		return c, fmt.Errorf("containerd CRI not ready after 30s: %v\n%s", last, indent(harness.TailFile(c.log, 20)))
	}
	return c, nil
}

// stop stops containerd (SIGTERM, SIGKILL after 10s) and unmounts what it left. Idempotent.
func (c *ctr) stop() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	harness.UnmountUnder(c.dir)
}
