package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// DefaultPollInterval is how often the watcher stats and reads the token file
// whatever inotify says, and retries arming watches that are gone.
const DefaultPollInterval = 60 * time.Second

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	Clock        clock.WithTicker // drives the poll; nil: the real clock
	PollInterval time.Duration    // default DefaultPollInterval
	Log          *zap.Logger
}

// Watcher reports changes of the web identity token file's content.
//
// The kubelet updates a projected volume by an atomic symlink swap: it writes
// a new "..<timestamp>" directory, points a "..data_tmp" symlink at it,
// renames "..data_tmp" over "..data" (the token file is a symlink into
// "..data") and removes the old directory. A watch on the file itself dies at
// the first swap (case 2), so the Watcher watches the file's directory and
// that directory's parent, re-arms after a Remove or Rename of the directory
// (including its deletion and re-creation), and every PollInterval stats and
// reads the file and re-arms any watch that is gone, catching whatever inotify
// missed.
//
// It signals on Changes only when the content's SHA-256 differs from the last
// content seen (an empty or unreadable file is skipped as a write in
// progress), coalesced in a buffer of one. The content itself is never kept.
type Watcher struct {
	path, dir, parent string
	o                 WatcherOptions
	changes           chan struct{}
	rearms            atomic.Int64
	running           atomic.Bool

	// Owned by the Run goroutine.
	fsw          *fsnotify.Watcher
	dirArmed     bool
	dirInfo      os.FileInfo // the directory inode the watch is on
	parentArmed  bool
	sum          [sha256.Size]byte
	haveSum      bool
	readFailures int
}

// NewWatcher returns a watcher for the token file at path. Nothing is watched
// until Run.
func NewWatcher(path string, opts WatcherOptions) (*Watcher, error) {
	if path == "" {
		return nil, errors.New("identity: watcher needs a token file path")
	}
	if opts.PollInterval < 0 {
		return nil, fmt.Errorf("identity: negative poll interval %s", opts.PollInterval)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	return &Watcher{path: path, dir: dir, parent: filepath.Dir(dir), o: opts, changes: make(chan struct{}, 1)}, nil
}

// Changes signals that the token file's content changed. Signals coalesce.
func (w *Watcher) Changes() <-chan struct{} { return w.changes }

// Rearms counts the watches re-added after a directory was removed, renamed
// or replaced (not the initial arming).
func (w *Watcher) Rearms() int { return int(w.rearms.Load()) }

// Run watches until ctx is done, then returns nil. The content present when
// Run starts is the baseline and is not signalled; a file missing at start is
// signalled once it appears. Run may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("identity: watcher already running")
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("identity: start watching %s: %w", w.path, err)
	}
	defer fsw.Close()
	w.fsw = fsw

	w.arm("start", false)
	w.check(false)
	ticker := w.o.Clock.NewTicker(w.o.PollInterval)
	defer ticker.Stop()
	w.o.Log.Debug("watching web identity token file", zap.String("token_file", w.path),
		zap.Bool("dir_watched", w.dirArmed), zap.Bool("parent_watched", w.parentArmed),
		zap.Duration("poll_interval", w.o.PollInterval))

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return fmt.Errorf("identity: watch on %s closed", w.path)
			}
			w.handle(ev)
		case err, ok := <-fsw.Errors:
			if !ok {
				return fmt.Errorf("identity: watch on %s closed", w.path)
			}
			w.o.Log.Warn("token file watch error; checking the file", zap.String("token_file", w.path), zap.Error(err))
			if reason := w.stale(); reason != "" {
				w.arm(reason, true)
			}
			w.check(true)
		case <-ticker.C():
			if reason := w.stale(); reason != "" {
				w.arm("poll: "+reason, true)
			}
			w.check(true)
		}
	}
}

func (w *Watcher) handle(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	gone := ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	switch {
	case name == w.dir:
		if gone {
			w.dirArmed = false
			w.arm("directory "+opName(ev), true)
		} else if ev.Has(fsnotify.Create) {
			w.arm("directory created", true)
		}
		w.check(true)
	case name == w.parent:
		if gone {
			w.parentArmed, w.dirArmed = false, false
			w.arm("parent directory "+opName(ev), true)
			w.check(true)
		}
	case filepath.Dir(name) == w.dir:
		// The file itself, or the "..data" swap of a projected volume.
		w.check(true)
	}
}

func opName(ev fsnotify.Event) string {
	if ev.Has(fsnotify.Remove) {
		return "removed"
	}
	return "renamed"
}

// stale says why the watches need re-arming, or "" if they are in place.
func (w *Watcher) stale() string {
	list := w.fsw.WatchList()
	if w.parent != w.dir && (!w.parentArmed || !slices.Contains(list, w.parent)) {
		return "parent directory not watched"
	}
	if !w.dirArmed || !slices.Contains(list, w.dir) {
		return "directory not watched"
	}
	if fi, err := os.Stat(w.dir); err != nil {
		return "directory missing"
	} else if w.dirInfo != nil && !os.SameFile(fi, w.dirInfo) {
		return "directory replaced"
	}
	return ""
}

// arm (re-)adds the watches on the parent and the directory. Missing
// directories are left for the next event or poll.
func (w *Watcher) arm(reason string, rearm bool) {
	if w.parent != w.dir && (!w.parentArmed || !slices.Contains(w.fsw.WatchList(), w.parent)) {
		_ = w.fsw.Remove(w.parent)
		if err := w.fsw.Add(w.parent); err != nil {
			w.parentArmed = false
			w.o.Log.Debug("cannot watch the token file's parent directory yet; will retry",
				zap.String("dir", w.parent), zap.String("reason", reason), zap.Error(err))
		} else {
			w.parentArmed = true
			w.counted(rearm, reason, w.parent)
		}
	}
	fi, err := os.Stat(w.dir)
	if err != nil {
		w.dirArmed = false
		w.o.Log.Debug("token file directory missing; will re-arm when it appears",
			zap.String("dir", w.dir), zap.String("reason", reason), zap.Error(err))
		return
	}
	if w.dirArmed && w.dirInfo != nil && os.SameFile(fi, w.dirInfo) && slices.Contains(w.fsw.WatchList(), w.dir) {
		return // already watching this very directory
	}
	_ = w.fsw.Remove(w.dir) // a watch left on a replaced inode
	if err := w.fsw.Add(w.dir); err != nil {
		w.dirArmed = false
		w.o.Log.Debug("cannot watch the token file directory yet; will retry",
			zap.String("dir", w.dir), zap.String("reason", reason), zap.Error(err))
		return
	}
	w.dirArmed, w.dirInfo = true, fi
	w.counted(rearm, reason, w.dir)
}

func (w *Watcher) counted(rearm bool, reason, dir string) {
	if !rearm {
		return
	}
	n := w.rearms.Add(1)
	w.o.Log.Debug("re-armed token file watch", zap.String("dir", dir), zap.String("reason", reason), zap.Int64("rearms", n))
}

// check reads the file and signals if its content changed. notify is false
// for the baseline read at start.
func (w *Watcher) check(notify bool) {
	content, err := readLimited(w.path)
	if err != nil || len(bytes.TrimSpace(content)) == 0 {
		w.readFailures++
		if w.readFailures == 1 {
			w.o.Log.Debug("token file not readable or empty; waiting for it", zap.String("token_file", w.path), zap.Error(err))
		}
		return
	}
	w.readFailures = 0
	sum := sha256.Sum256(content)
	if w.haveSum && sum == w.sum {
		return
	}
	w.sum, w.haveSum = sum, true
	if !notify {
		return
	}
	w.o.Log.Debug("token file content changed", zap.String("token_file", w.path))
	select {
	case w.changes <- struct{}{}:
	default:
	}
}
