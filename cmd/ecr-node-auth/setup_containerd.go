package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/ecr-node-auth/ecr-node-auth/cri/containerdconfig"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// containerdUnit is the systemd unit --restart restarts.
const containerdUnit = "containerd.service"

// restartFunc restarts a systemd unit and waits for the job's result; a
// variable so tests can stand in for systemd.
var restartFunc = restartUnit

// errNoSystemd: --restart on a host whose init is not systemd.
var errNoSystemd = errors.New("systemd is not running on this host (no /run/systemd/system)")

func setupContainerdCmd(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("setup-containerd", flag.ContinueOnError)
	flags.SetOutput(stderr)
	cfgPath := flags.String("config", config.DefaultPath, "ecr-node-auth config file (certs dir and containerd config come from it; used when present)")
	ctrdCfg := flags.String("containerd-config", "", "containerd config file (default: containerd.configFile from the config, else "+config.DefaultConfigFile+")")
	certsDir := flags.String("certs-dir", "", "certs dir containerd must read (default: containerd.certsDir from the config, else "+config.DefaultCertsDir+")")
	bin := flags.String("containerd-bin", "containerd", "the installed containerd binary, used to check the new config")
	restart := flags.Bool("restart", false, "restart containerd through systemd (D-Bus) after a change; rolls back if it fails to start")
	dryRun := flags.Bool("dry-run", false, "print the change, write nothing")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth setup-containerd [--config PATH] [--containerd-config PATH] [--certs-dir DIR] [--containerd-bin PATH] [--restart] [--dry-run]")
		fmt.Fprint(stderr, `
Sets the CRI registry config_path to the certs dir in the registry table the file already
uses (version 3+: io.containerd.cri.v1.images; version 2: io.containerd.grpc.v1.cri, or the
images table if that is the one present), changing one line and keeping everything else.
A missing file is created for the installed containerd's config version. A second run
changes nothing. Inline registry mirrors are refused (config_path beside them stops the CRI
plugin from loading): move them to <certs dir>/<host>/hosts.toml yourself. Every new file is
checked with `+"`containerd --config NEW config dump`"+` and its effective registry settings
before it replaces the old one, which is kept as <file>.ecr-node-auth.bak-<time>.

`)
		flags.PrintDefaults()
	}
	if code, ok := parseFlags(flags, args); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ecr-node-auth setup-containerd: "+format+"\n", a...)
		return 1
	}

	cfg, err := loadOptionalConfig(flags, *cfgPath)
	if err != nil {
		return fail("%s", singleLine(err.Error()))
	}
	if *ctrdCfg == "" {
		*ctrdCfg = cfg.Containerd.ConfigFile
	}
	if *certsDir == "" {
		*certsDir = cfg.Containerd.CertsDir
	}
	if !filepath.IsAbs(*ctrdCfg) {
		return fail("--containerd-config %q must be an absolute path", *ctrdCfg)
	}
	if err := containerdconfig.ValidateCertsDir(*certsDir); err != nil {
		return fail("%v", err)
	}
	*certsDir = filepath.Clean(*certsDir)
	ctx := context.Background()
	ctrd, err := containerdconfig.DetectContainerd(ctx, *bin)
	if err != nil {
		return fail("%v (it checks every new config before it is written)", err)
	}

	data, err := os.ReadFile(*ctrdCfg)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail("read %s: %v", *ctrdCfg, errors.Unwrap(err))
	}
	edit, err := containerdconfig.Plan(*ctrdCfg, data, exists, *certsDir, containerdconfig.PlanOptions{NewFileVersion: ctrd.ConfigVersion})
	if err != nil {
		return fail("%v", err)
	}
	for _, n := range edit.Notes {
		fmt.Fprintln(stdout, "note: "+n)
	}
	if !edit.Changed {
		// The file says so; make sure containerd's effective config (after
		// imports and migrations) agrees.
		if err := ctrd.Verify(ctx, *ctrdCfg, *certsDir); err != nil {
			return fail("%s: %s, but %v", *ctrdCfg, edit.Summary, err)
		}
		fmt.Fprintf(stdout, "%s: %s; nothing to do\n", *ctrdCfg, edit.Summary)
		if *restart {
			fmt.Fprintln(stdout, "not restarting containerd: nothing changed (if it has not been restarted since config_path was set, run `systemctl restart containerd`)")
		}
		return 0
	}

	verify := func(ctx context.Context, candidate string) error {
		if r, err := containerdconfig.Check(candidate, *certsDir); err != nil {
			return err
		} else if errs := r.Errors(); len(errs) > 0 {
			return errors.New(errs[0].Message)
		}
		return ctrd.Verify(ctx, candidate, *certsDir)
	}

	if *dryRun {
		fmt.Fprintf(stdout, "dry run: would %s\n", edit.Summary)
		printDiff(stdout, *ctrdCfg, data, edit.Content)
		dir, err := os.MkdirTemp("", "ecr-node-auth-setup-")
		if err != nil {
			return fail("%v", err)
		}
		defer os.RemoveAll(dir)
		cand := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(cand, edit.Content, 0o600); err != nil {
			return fail("%v", err)
		}
		if err := verify(ctx, cand); err != nil {
			return fail("dry run: the new config would be rejected: %v", err)
		}
		fmt.Fprintf(stdout, "dry run: containerd %s accepts the new config; nothing written\n", ctrd.Version)
		return 0
	}

	res, err := containerdconfig.Apply(ctx, *ctrdCfg, edit.Content, verify, time.Now())
	if err != nil {
		return fail("%v", err)
	}
	printDiff(stdout, *ctrdCfg, data, edit.Content)
	if res.Backup != "" {
		fmt.Fprintf(stdout, "updated %s: %s (backup %s)\n", *ctrdCfg, edit.Summary, res.Backup)
	} else {
		fmt.Fprintf(stdout, "updated %s: %s\n", *ctrdCfg, edit.Summary)
	}
	if !*restart {
		fmt.Fprintln(stdout, "containerd reads its config only at start: run `systemctl restart containerd` now (running containers keep running)")
		return 0
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := restartFunc(rctx, containerdUnit); err != nil {
		if errors.Is(err, errNoSystemd) || errors.Is(err, errDBus) {
			return fail("%s updated, but containerd was not restarted: %v; restart containerd with your init system", *ctrdCfg, err)
		}
		// containerd did not come back with the new file: put the old one back.
		rerr := containerdconfig.Rollback(*ctrdCfg, res)
		if rerr != nil {
			return fail("containerd failed to restart with the new config (%v) and restoring %s from %s failed: %v; restore it by hand and run `systemctl restart containerd`",
				err, *ctrdCfg, orDash(res.Backup), rerr)
		}
		if err2 := restartFunc(rctx, containerdUnit); err2 != nil {
			return fail("containerd failed to restart with the new config (%v); %s rolled back, but restarting containerd again failed too: %v", err, *ctrdCfg, err2)
		}
		return fail("containerd failed to restart with the new config (%v); %s rolled back and containerd restarted with the old one", err, *ctrdCfg)
	}
	fmt.Fprintf(stdout, "restarted %s\n", containerdUnit)
	return 0
}

// loadOptionalConfig loads the ecr-node-auth config: an explicit --config
// must load; the default path is used only when it exists.
func loadOptionalConfig(flags *flag.FlagSet, path string) (*config.Config, error) {
	explicit := false
	flags.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			explicit = true
		}
	})
	cfg, err := config.Load(path)
	if err != nil && !explicit && errors.Is(err, config.ErrNotFound) {
		return config.Default(), nil
	}
	return cfg, err
}

var errDBus = errors.New("cannot reach systemd over D-Bus")

// restartUnit restarts unit through systemd's D-Bus API and waits for the
// job's result ("done" is success).
func restartUnit(ctx context.Context, unit string) error {
	if st, err := os.Stat("/run/systemd/system"); err != nil || !st.IsDir() {
		return errNoSystemd
	}
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", errDBus, err)
	}
	defer conn.Close()
	ch := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("restart %s: %w", unit, err)
	}
	select {
	case result := <-ch:
		if result != "done" {
			return fmt.Errorf("systemd job to restart %s ended %q (see `journalctl -u %s`)", unit, result, strings.TrimSuffix(unit, ".service"))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restart %s: %w", unit, ctx.Err())
	}
}

// singleLine joins a multi-line error (config.Load lists every problem) into one line.
func singleLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// printDiff prints the changed lines (the edit touches one place).
func printDiff(w io.Writer, name string, old, neu []byte) {
	a := strings.SplitAfter(string(old), "\n")
	b := strings.SplitAfter(string(neu), "\n")
	if len(old) == 0 {
		a = nil
	}
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	fmt.Fprintf(w, "--- %s\n+++ %s (new)\n@@ line %d @@\n", name, name, p+1)
	for _, l := range a[p : len(a)-s] {
		fmt.Fprint(w, "-"+strings.TrimSuffix(l, "\n")+"\n")
	}
	for _, l := range b[p : len(b)-s] {
		fmt.Fprint(w, "+"+strings.TrimSuffix(l, "\n")+"\n")
	}
}
