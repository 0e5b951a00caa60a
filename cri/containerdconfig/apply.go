package containerdconfig

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Containerd is the installed containerd binary, used to check candidates.
type Containerd struct {
	Path string
	// Major is the release's major version (1 or 2).
	Major int
	// ConfigVersion is the version of `containerd config default` (2 for 1.x,
	// 3 or 4 for 2.x): the version a new file is written with.
	ConfigVersion int
	Version       string
}

// versionRE is compiled on first use: package init runs in every exec of the
// binary, the kubelet plugin's included.
var versionRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^containerd\s+\S+\s+v?((\d+)\.\d+\S*)`)
})

// DetectContainerd runs `bin --version` and `bin config default`.
func DetectContainerd(ctx context.Context, bin string) (Containerd, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return Containerd{}, fmt.Errorf("containerd binary %q not found (%v); pass --containerd-bin", bin, errors.Unwrap(err))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return Containerd{}, fmt.Errorf("%s --version: %v", path, err)
	}
	line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	m := versionRE().FindStringSubmatch(line)
	if m == nil {
		return Containerd{}, fmt.Errorf("%s --version: cannot parse %q", path, line)
	}
	c := Containerd{Path: path, Version: m[1]}
	c.Major, _ = strconv.Atoi(m[2])
	def, err := exec.CommandContext(ctx, path, "config", "default").Output()
	if err != nil {
		return c, fmt.Errorf("%s config default: %v", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(def))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "version = "); ok {
			c.ConfigVersion, _ = strconv.Atoi(strings.TrimSpace(v))
			break
		}
	}
	if c.ConfigVersion == 0 {
		c.ConfigVersion = 2
		if c.Major >= 2 {
			c.ConfigVersion = 3
		}
	}
	return c, nil
}

// Verify checks a candidate config with the installed containerd: `containerd
// --config FILE config dump` must succeed, and in the config it prints (after
// its own migrations and imports) the CRI registry must read certsDir first
// and have no inline mirrors: dump accepts mirrors beside config_path, which
// then stop the CRI plugin from loading.
func (c Containerd) Verify(ctx context.Context, file, certsDir string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, c.Path, "--config", file, "config", "dump")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("containerd %s rejects it (`containerd --config %s config dump`: %v): %s", c.Version, file, err, lastLine(stderr.String()))
	}
	var dump map[string]any
	if err := toml.Unmarshal(stdout.Bytes(), &dump); err != nil {
		return fmt.Errorf("cannot read `containerd config dump` output: %v", decodeError(err))
	}
	plugin := PluginGRPCCRI
	if v, _ := dump["version"].(int64); v >= 3 {
		plugin = PluginImages
	}
	d := &doc{tree: dump}
	reg, _ := d.get("plugins", plugin, "registry").(map[string]any)
	if reg == nil {
		return fmt.Errorf("containerd %s's effective config has no %s table", c.Version, tableKey(plugin, false))
	}
	if m := mapKeys(reg["mirrors"]); len(m) > 0 {
		return fmt.Errorf("containerd %s's effective config has inline mirrors for %s beside config_path: the CRI plugin would not load", c.Version, strings.Join(m, ", "))
	}
	cp, _ := reg["config_path"].(string)
	if paths := splitList(cp); len(paths) == 0 || paths[0] != filepath.Clean(certsDir) {
		return fmt.Errorf("containerd %s's effective %s.config_path (`config dump`) is %q, not %s: this containerd ignores the table that was edited, or an imported file overrides it", c.Version, tableKey(plugin, false), cp, certsDir)
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// Verifier checks a candidate file before it replaces the config.
type Verifier func(ctx context.Context, candidate string) error

// Result says what Apply did.
type Result struct {
	// Backup is the copy of the previous file ("" when there was none).
	Backup string
	// Created: there was no file before.
	Created bool
}

// Apply writes content to path safely: a candidate in the same directory
// (same mode and owner as the old file), checked by verify, a backup of the
// old file as <path>.ecr-node-auth.bak-<UTC time>, then an atomic rename and
// a directory fsync. A symlinked path is resolved and its target replaced.
// On any failure the old file stays (or is put back) as it was.
func Apply(ctx context.Context, path string, content []byte, verify Verifier, now time.Time) (Result, error) {
	var res Result
	target := resolve(path)
	dir := filepath.Dir(target)
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	st, err := os.Stat(target)
	switch {
	case err == nil:
		mode = st.Mode().Perm()
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
	case errors.Is(err, fs.ErrNotExist):
		res.Created = true
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return res, fmt.Errorf("create %s: %w", dir, err)
		}
	default:
		return res, err
	}
	tmp, err := writeTemp(dir, "."+filepath.Base(target)+".ecr-node-auth-*.tmp", content, mode, uid, gid)
	if err != nil {
		return res, fmt.Errorf("write candidate next to %s: %w", target, err)
	}
	defer os.Remove(tmp)
	if verify != nil {
		if err := verify(ctx, tmp); err != nil {
			return res, fmt.Errorf("candidate config rejected, %s left unchanged: %w", target, err)
		}
	}
	if !res.Created {
		old, err := os.ReadFile(target)
		if err != nil {
			return res, err
		}
		backup := target + ".ecr-node-auth.bak-" + now.UTC().Format("20060102T150405Z")
		if _, err := os.Lstat(backup); err == nil {
			backup += fmt.Sprintf(".%d", now.UnixNano())
		}
		if err := writeFileSync(backup, old, mode, uid, gid); err != nil {
			return res, fmt.Errorf("backup %s: %w", backup, err)
		}
		res.Backup = backup
	}
	if err := os.Rename(tmp, target); err != nil {
		return res, fmt.Errorf("replace %s: %w", target, err)
	}
	syncDir(dir)
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, content) {
		rerr := Rollback(target, res)
		return res, fmt.Errorf("%s does not read back as written (%v); rolled back: %v", target, err, rerr)
	}
	return res, nil
}

// Rollback puts the previous file back (or removes a file Apply created).
func Rollback(path string, res Result) error {
	target := resolve(path)
	if res.Created {
		err := os.Remove(target)
		syncDir(filepath.Dir(target))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if res.Backup == "" {
		return errors.New("no backup to restore")
	}
	old, err := os.ReadFile(res.Backup)
	if err != nil {
		return err
	}
	st, err := os.Stat(res.Backup)
	if err != nil {
		return err
	}
	uid, gid := -1, -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(sys.Uid), int(sys.Gid)
	}
	dir := filepath.Dir(target)
	tmp, err := writeTemp(dir, "."+filepath.Base(target)+".ecr-node-auth-*.tmp", old, st.Mode().Perm(), uid, gid)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(dir)
	return nil
}

// resolve follows symlinks, also to a target that does not exist yet, so
// that the file is replaced and the link kept.
func resolve(path string) string {
	for range 40 {
		link, err := os.Readlink(path)
		if err != nil {
			return path
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(filepath.Dir(path), link)
		}
		path = link
	}
	return path
}

func writeTemp(dir, pattern string, content []byte, mode fs.FileMode, uid, gid int) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	err = fillFile(f, content, mode, uid, gid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

func writeFileSync(path string, content []byte, mode fs.FileMode, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	err = fillFile(f, content, mode, uid, gid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func fillFile(f *os.File, content []byte, mode fs.FileMode, uid, gid int) error {
	if _, err := f.Write(content); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if uid >= 0 && os.Geteuid() == 0 {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	return f.Sync()
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
