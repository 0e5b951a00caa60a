package cri

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"
)

const (
	fileName = "hosts.toml"
	// Temp files start with a dot and do not end in .toml, .crt, .cert or
	// .key, so containerd never reads one, even after a crash.
	tmpPrefix  = ".hosts.toml.ecr-node-auth-"
	tmpSuffix  = ".tmp"
	tmpPattern = tmpPrefix + "*" + tmpSuffix
	// Our files are a few hundred bytes; a bigger file is someone else's
	// or at least not equal to what we would write.
	maxRead = 1 << 20
	// The fix shown with every permission error.
	fixWritable = "make it writable by root or set containerd.certsDir"
)

// ErrUnmanaged is wrapped by errors about a hosts.toml (or host directory)
// that ecr-node-auth did not write and therefore never changes.
var ErrUnmanaged = errors.New("not managed by ecr-node-auth")

type unmanagedError struct{ path, reason string }

func (e *unmanagedError) Error() string {
	return fmt.Sprintf("%s %s, so it is %v and left alone: move it away or add the registry elsewhere",
		e.path, e.reason, ErrUnmanaged)
}

func (e *unmanagedError) Unwrap() error { return ErrUnmanaged }

// Report is the outcome of one Reconcile. Lists are sorted host names.
type Report struct {
	Written   []string // created or replaced
	Unchanged []string // already had the wanted content: not rewritten
	Removed   []string // managed files of hosts no longer wanted
	// Unmanaged lists wanted hosts whose hosts.toml (or directory) exists
	// without our marker or is a symlink: never touched. Other registries'
	// files that we do not want are not listed: they are simply not ours.
	Unmanaged []string
	Errors    map[string]string // host -> error (never contains a secret)
}

// Writer owns the daemon's files under one containerd certs dir. It is safe
// for concurrent use; all file operations are serialised.
type Writer struct {
	certsDir string
	log      *zap.Logger

	mu sync.Mutex
	// warned holds the last problem logged per host, so a periodic
	// Reconcile logs a broken host once per distinct state, not every run.
	warned map[string]string
	rename func(oldpath, newpath string) error // seam for failure tests
}

// NewWriter returns a Writer for certsDir (e.g. /etc/containerd/certs.d).
// A nil log discards messages.
func NewWriter(certsDir string, log *zap.Logger) *Writer {
	if log == nil {
		log = zap.NewNop()
	}
	return &Writer{
		certsDir: filepath.Clean(certsDir),
		log:      log,
		warned:   map[string]string{},
		rename:   os.Rename,
	}
}

// CertsDir returns the directory the Writer owns files in.
func (w *Writer) CertsDir() string { return w.certsDir }

// Path returns the hosts.toml path for host. A host:port lives in
// "host_port_", the name containerd looks up first, so our file wins over
// a "host:port" directory.
func (w *Writer) Path(host string) string {
	return filepath.Join(w.certsDir, dirName(host), fileName)
}

// dirName mirrors containerd's hostDirectory.
func dirName(host string) string {
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}

// hostFromDir inverts dirName for names we could have created; ok is false
// for anything else (e.g. containerd's "_default"), which is never touched.
func hostFromDir(name string) (host string, ok bool) {
	host = name
	if strings.HasSuffix(name, "_") {
		if i := strings.LastIndexByte(name[:len(name)-1], '_'); i > 0 {
			host = name[:i] + ":" + name[i+1:len(name)-1]
		}
	}
	if ValidateHost(host) != nil || dirName(host) != name {
		return "", false
	}
	return host, true
}

// Write renders h and replaces its hosts.toml atomically. It does nothing
// (changed=false) when the file already has that content, so a periodic
// reconcile costs a read. A file without our marker is never replaced: the
// error wraps ErrUnmanaged.
func (w *Writer) Write(h HostConfig) (changed bool, err error) {
	content, err := Render(h)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	changed, err = w.write(h.Host, content)
	if err == nil {
		delete(w.warned, h.Host)
	}
	return changed, err
}

// hostDir is certsDir/<host's directory>, or an error when that would not be
// exactly one clean path element directly below certsDir. Callers validate
// the host before; this is the last line of defence before a file
// operation, so a host that slipped past them never names another path.
func (w *Writer) hostDir(host string) (string, error) {
	if err := ValidateHost(host); err != nil {
		return "", fmt.Errorf("refusing to write below %s: %w", w.certsDir, err)
	}
	name := dirName(host)
	dir := filepath.Join(w.certsDir, name)
	if name == "." || name == ".." || !filepath.IsLocal(name) || strings.ContainsAny(name, "/\\\x00") ||
		filepath.Base(name) != name || filepath.Dir(dir) != w.certsDir {
		return "", fmt.Errorf("refusing to write below %s: registry host %q does not name a single directory there", w.certsDir, host)
	}
	return dir, nil
}

func (w *Writer) write(host string, content []byte) (bool, error) {
	// Checked before anything is created, the certs dir included.
	dir, err := w.hostDir(host)
	if err != nil {
		return false, err
	}
	if err := w.ensureCertsDir(); err != nil {
		return false, err
	}
	if err := ensureHostDir(dir); err != nil {
		return false, err
	}
	path := filepath.Join(dir, fileName)
	old, fi, err := readManaged(path)
	if err != nil {
		return false, err
	}
	if fi != nil && bytes.Equal(old, content) {
		if fi.Mode().Perm() != 0o600 {
			if err := os.Chmod(path, 0o600); err != nil {
				return false, fmt.Errorf("cannot chmod %s to 0600: %w; %s", path, err, fixWritable)
			}
		}
		w.log.Debug("hosts.toml unchanged", zap.String("registry", host), zap.String("path", path))
		return false, nil
	}
	if err := w.replace(dir, path, content); err != nil {
		return false, err
	}
	w.log.Info("hosts.toml written", zap.String("registry", host), zap.String("path", path))
	return true, nil
}

func (w *Writer) ensureCertsDir() error {
	if fi, err := os.Stat(w.certsDir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("certs dir %s is not a directory; remove it or set containerd.certsDir", w.certsDir)
		}
		return nil
	}
	// Missing (or unreadable: MkdirAll then says why). 0755 like
	// /etc/containerd itself: containerd runs as root and the secrets sit
	// in 0700 host dirs and 0600 files below.
	if err := os.MkdirAll(w.certsDir, 0o755); err != nil {
		return fmt.Errorf("certs dir %s is not writable: %w; %s", w.certsDir, err, fixWritable)
	}
	return nil
}

// ensureHostDir creates dir 0700 (only root, i.e. containerd, reads the
// token) and refuses a symlink: we never follow one out of the certs dir.
func ensureHostDir(dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("certs dir %s is not writable: cannot create %s: %w; %s",
				filepath.Dir(dir), dir, err, fixWritable)
		}
		return nil
	case err != nil:
		return fmt.Errorf("cannot inspect %s: %w; %s", dir, err, fixWritable)
	case fi.Mode()&fs.ModeSymlink != 0:
		return &unmanagedError{dir, "is a symlink (never followed)"}
	case !fi.IsDir():
		return &unmanagedError{dir, "is not a directory"}
	}
	return nil
}

// readManaged returns the content and info of our file at path, (nil, nil,
// nil) if there is none, or an error wrapping ErrUnmanaged if the file is
// not ours.
func readManaged(path string) ([]byte, fs.FileInfo, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("cannot inspect %s: %w; %s", path, err, fixWritable)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, nil, &unmanagedError{path, "is a symlink (never followed)"}
	case !fi.Mode().IsRegular():
		return nil, nil, &unmanagedError{path, "is not a regular file"}
	}
	// O_NOFOLLOW closes the gap between Lstat and open.
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read %s: %w; %s", path, err, fixWritable)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRead))
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if !hasMarker(b) {
		return nil, nil, &unmanagedError{path, "has no ecr-node-auth marker on its first line"}
	}
	return b, fi, nil
}

func hasMarker(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(bytes.TrimSuffix(line, []byte("\r"))) == Marker
}

// replace writes content to a temp file in dir and renames it over path,
// so containerd sees either the old file or the new one, never a partial
// one. The temp file is removed on every error path.
func (w *Writer) replace(dir, path string, content []byte) (err error) {
	f, err := os.CreateTemp(dir, tmpPattern) // mode 0600
	if err != nil {
		return fmt.Errorf("certs dir %s is not writable: cannot create a temp file in %s: %w; %s",
			w.certsDir, dir, err, fixWritable)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(content); err != nil {
		return fmt.Errorf("cannot write %s: %w; check free space in %s", tmp, err, dir)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w; check the file system of %s", tmp, err, dir)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("cannot close %s: %w; check free space in %s", tmp, err, dir)
	}
	if err = w.rename(tmp, path); err != nil {
		return fmt.Errorf("cannot rename %s to %s: %w; %s", tmp, path, err, fixWritable)
	}
	// The new file is in place; a failed directory sync only weakens
	// durability across a power cut, so it is logged, not returned.
	if serr := syncDir(dir); serr != nil {
		w.log.Warn("cannot sync directory after writing hosts.toml", zap.String("path", dir), zap.Error(serr))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Remove deletes host's hosts.toml if it is ours, then the host directory
// if that is left empty. A missing file is not an error; a file without our
// marker is never deleted (the error wraps ErrUnmanaged).
func (w *Writer) Remove(host string) error {
	if err := ValidateHost(host); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.remove(host)
	return err
}

func (w *Writer) remove(host string) (removed bool, err error) {
	dir, err := w.hostDir(host)
	if err != nil {
		return false, err
	}
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("cannot inspect %s: %w; %s", dir, err, fixWritable)
	case fi.Mode()&fs.ModeSymlink != 0:
		return false, &unmanagedError{dir, "is a symlink (never followed)"}
	case !fi.IsDir():
		return false, &unmanagedError{dir, "is not a directory"}
	}
	w.cleanTemps(dir)
	path := filepath.Join(dir, fileName)
	_, existing, err := readManaged(path)
	if err != nil || existing == nil {
		return false, err
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("cannot remove %s: %w; %s", path, err, fixWritable)
	}
	// Fails harmlessly when the directory holds anything else (e.g. an
	// admin's CA file): that stays.
	if os.Remove(dir) == nil {
		_ = syncDir(w.certsDir)
	} else {
		_ = syncDir(dir)
	}
	w.log.Info("hosts.toml removed", zap.String("registry", host), zap.String("path", path))
	return true, nil
}

// cleanTemps removes temp files matching our own pattern, left by a crash
// between create and rename. Nothing else in dir is touched.
func (w *Writer) cleanTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, tmpPrefix) || !strings.HasSuffix(name, tmpSuffix) {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil {
			w.log.Warn("cannot remove leftover temp file", zap.String("path", p), zap.Error(err))
			continue
		}
		w.log.Info("removed leftover temp file", zap.String("path", p))
	}
}

// Reconcile makes the certs dir match want: every wanted host is written
// (re-creating deleted files), managed files of other hosts are removed,
// leftover temp files are cleaned, and everything not ours is left alone.
// Per-host problems go to the Report; the error is for the certs dir as a
// whole. A wanted host that fails validation keeps its current file.
func (w *Writer) Reconcile(want []HostConfig) (Report, error) {
	rep := Report{Errors: map[string]string{}}
	w.mu.Lock()
	defer w.mu.Unlock()

	type item struct {
		host    string
		content []byte
	}
	wanted := make(map[string]bool, len(want))
	items := make([]item, 0, len(want))
	for _, h := range want {
		if wanted[h.Host] {
			w.problem(&rep, h.Host, fmt.Errorf("registry %s is listed more than once; the first entry is used", h.Host))
			continue
		}
		wanted[h.Host] = true
		content, err := Render(h)
		if err != nil {
			w.problem(&rep, h.Host, err)
			continue
		}
		items = append(items, item{h.Host, content})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].host < items[j].host })

	if len(items) > 0 {
		if err := w.ensureCertsDir(); err != nil {
			return rep, err
		}
	}
	for _, it := range items {
		changed, err := w.write(it.host, it.content)
		switch {
		case err != nil:
			w.problem(&rep, it.host, err)
		case changed:
			rep.Written = append(rep.Written, it.host)
		default:
			rep.Unchanged = append(rep.Unchanged, it.host)
		}
		if _, flagged := rep.Errors[it.host]; err == nil && !flagged {
			delete(w.warned, it.host)
		}
	}
	// Forget hosts no longer wanted so the set stays small.
	for host := range w.warned {
		if !wanted[host] {
			delete(w.warned, host)
		}
	}

	entries, err := os.ReadDir(w.certsDir)
	if errors.Is(err, fs.ErrNotExist) && len(items) == 0 {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("cannot read certs dir %s: %w; %s", w.certsDir, err, fixWritable)
	}
	for _, e := range entries {
		if !e.IsDir() { // symlinks included: never followed
			continue
		}
		host, ok := hostFromDir(e.Name())
		if !ok {
			continue
		}
		if wanted[host] {
			w.cleanTemps(filepath.Join(w.certsDir, e.Name()))
			continue
		}
		removed, err := w.remove(host)
		switch {
		case errors.Is(err, ErrUnmanaged):
			// Another tool's registry: not ours to report or touch.
		case err != nil:
			rep.Errors[host] = err.Error()
		case removed:
			rep.Removed = append(rep.Removed, host)
		}
	}
	sort.Strings(rep.Unmanaged)
	return rep, nil
}

// problem records a per-host failure and logs it once per distinct state.
func (w *Writer) problem(rep *Report, host string, err error) {
	unmanaged := errors.Is(err, ErrUnmanaged)
	if unmanaged {
		rep.Unmanaged = append(rep.Unmanaged, host)
	} else {
		rep.Errors[host] = err.Error()
	}
	msg := err.Error()
	if w.warned[host] == msg {
		return
	}
	w.warned[host] = msg
	if unmanaged {
		w.log.Warn("registry left unconfigured: its hosts.toml is not ours", zap.String("registry", host), zap.Error(err))
	} else {
		w.log.Error("cannot configure registry", zap.String("registry", host), zap.Error(err))
	}
}
