package identity

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	clocktesting "k8s.io/utils/clock/testing"
)

const (
	testPoll = time.Minute
	waitFor  = 5 * time.Second        // real-time deadline for an expected signal
	quiet    = 150 * time.Millisecond // real-time wait to assert no signal
)

// projected mimics the kubelet's atomic writer for a projected volume in dir.
type projected struct {
	t   *testing.T
	dir string
	seq int
}

// swap does one kubelet update: a new "..<ts>" dir with the token, a
// "..data_tmp" symlink to it renamed over "..data", the old dir removed, and
// "token" a symlink into "..data" (replacing a plain file if needed).
func (p *projected) swap(content string) {
	t := p.t
	t.Helper()
	p.seq++
	ts := fmt.Sprintf("..2026_06_01_12_%02d_00.%09d", p.seq, p.seq)
	must(t, os.MkdirAll(filepath.Join(p.dir, ts), 0o755))
	writeFile(t, filepath.Join(p.dir, ts, "token"), content)
	old, _ := os.Readlink(filepath.Join(p.dir, "..data"))
	must(t, os.Symlink(ts, filepath.Join(p.dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(p.dir, "..data_tmp"), filepath.Join(p.dir, "..data")))
	if fi, err := os.Lstat(filepath.Join(p.dir, "token")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		must(t, os.Symlink("..data/token", filepath.Join(p.dir, "token.tmp")))
		must(t, os.Rename(filepath.Join(p.dir, "token.tmp"), filepath.Join(p.dir, "token")))
	}
	if old != "" {
		must(t, os.RemoveAll(filepath.Join(p.dir, old)))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type watchHarness struct {
	t    *testing.T
	w    *Watcher
	clk  *clocktesting.FakeClock
	logs *observer.ObservedLogs
	done chan error
}

// startWatcher runs a watcher on path and returns once its baseline is taken
// (the poll ticker exists).
func startWatcher(t *testing.T, path string) *watchHarness {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	core, logs := observer.New(zap.DebugLevel)
	w, err := NewWatcher(path, WatcherOptions{Clock: clk, PollInterval: testPoll, Log: zap.New(core)})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := &watchHarness{t: t, w: w, clk: clk, logs: logs, done: make(chan error, 1)}
	go func() { h.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(waitFor)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("watcher did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return h
}

func (h *watchHarness) expectChange(what string) {
	h.t.Helper()
	select {
	case <-h.w.Changes():
	case <-time.After(waitFor):
		h.t.Fatalf("%s: no change signalled within %s", what, waitFor)
	}
}

func (h *watchHarness) expectNoChange(what string) {
	h.t.Helper()
	select {
	case <-h.w.Changes():
		h.t.Fatalf("%s: unexpected change signal", what)
	case <-time.After(quiet):
	}
}

// poll steps the fake clock by one poll interval.
func (h *watchHarness) poll() { h.clk.Step(testPoll) }

func (h *watchHarness) assertNoContent(contents ...string) {
	h.t.Helper()
	for _, e := range h.logs.All() {
		assertNoSecret(h.t, "watcher log", e.Message+" "+fmt.Sprint(e.ContextMap()), contents...)
	}
}

// Case 2(a): three kubelet swaps in a row. The fake clock is not stepped, so
// the poll never runs: inotify alone must see all three (a watch on the file
// itself would die at the first).
func TestWatcherDetectsEverySwap(t *testing.T) {
	d := filepath.Join(t.TempDir(), "D")
	p := &projected{t: t, dir: d}
	p.swap("jwt-A")
	h := startWatcher(t, filepath.Join(d, "token"))
	for i, c := range []string{"jwt-B", "jwt-C", "jwt-D"} {
		p.swap(c)
		h.expectChange(fmt.Sprintf("swap %d", i+1))
	}
	p.swap("jwt-D") // same content: no signal
	h.expectNoChange("swap with the same content")
	h.assertNoContent("jwt-A", "jwt-B", "jwt-C", "jwt-D")
}

func TestWatcherScenarios(t *testing.T) {
	type step struct {
		name   string
		do     func(t *testing.T, d string, p *projected)
		poll   bool // step the fake clock one poll interval after do
		change bool // a signal is expected
		// rearmed: before do, wait until Rearms() reaches this, so that the
		// watcher has handled the events of earlier steps and any signal
		// comes from a re-armed watch.
		rearmed int
	}
	rmrf := func(t *testing.T, d string, _ *projected) { must(t, os.RemoveAll(d)) }
	mkdir := func(t *testing.T, d string, _ *projected) { must(t, os.MkdirAll(d, 0o755)) }
	write := func(c string) func(*testing.T, string, *projected) {
		return func(t *testing.T, d string, _ *projected) { writeFile(t, filepath.Join(d, "token"), c) }
	}
	swap := func(c string) func(*testing.T, string, *projected) {
		return func(_ *testing.T, _ string, p *projected) { p.swap(c) }
	}
	seq := func(fs ...func(*testing.T, string, *projected)) func(*testing.T, string, *projected) {
		return func(t *testing.T, d string, p *projected) {
			for _, f := range fs {
				f(t, d, p)
			}
		}
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, d string, p *projected)
		steps     []step
		minRearms int
	}{
		{
			name:  "case 2(b): rm -rf D, mkdir D, write, then one more swap",
			setup: swap("jwt-A"),
			steps: []step{
				{name: "swap", do: swap("jwt-B"), change: true},
				{name: "rm -rf D && mkdir D && write C", do: seq(rmrf, mkdir, write("jwt-C")), poll: true, change: true},
				{name: "swap after re-creation", do: swap("jwt-D"), poll: true, change: true},
				{name: "next swap via inotify alone", do: swap("jwt-E"), change: true, rearmed: 1},
			},
			minRearms: 1,
		},
		{
			name:  "directory renamed away and re-created",
			setup: swap("jwt-A"),
			steps: []step{
				{name: "mv D D.old && mkdir D && write", do: func(t *testing.T, d string, p *projected) {
					must(t, os.Rename(d, d+".old"))
					mkdir(t, d, p)
					write("jwt-B")(t, d, p)
				}, poll: true, change: true},
				{name: "rewrite via inotify alone", do: write("jwt-C"), change: true, rearmed: 1},
			},
			minRearms: 1,
		},
		{
			name:  "parent removed too: only the poll can re-arm",
			setup: swap("jwt-A"),
			steps: []step{
				{name: "rm -rf parent", do: func(t *testing.T, d string, _ *projected) { must(t, os.RemoveAll(filepath.Dir(d))) }, poll: true},
				{name: "re-create parent and D with a token", do: seq(mkdir, write("jwt-B")), poll: true, change: true},
				{name: "swap via inotify alone", do: swap("jwt-C"), change: true, rearmed: 2},
			},
			minRearms: 2,
		},
		{
			name:  "plain in-place rewrite",
			setup: seq(mkdir, write("jwt-A")),
			steps: []step{
				{name: "rewrite", do: write("jwt-B"), change: true},
				{name: "same content again", do: write("jwt-B")},
				{name: "empty mid-write", do: write("")},
				{name: "content back", do: write("jwt-C"), change: true},
				{name: "removed", do: func(t *testing.T, d string, _ *projected) { must(t, os.Remove(filepath.Join(d, "token"))) }, poll: true},
				{name: "created again, same content", do: write("jwt-C"), poll: true},
			},
		},
		{
			name:  "missing file at start, then created",
			setup: mkdir,
			steps: []step{
				{name: "poll with no file", poll: true},
				{name: "create", do: write("jwt-A"), change: true},
			},
		},
		{
			name:  "missing directory at start, then created",
			setup: func(*testing.T, string, *projected) {},
			steps: []step{
				{name: "create D and the token", do: seq(mkdir, write("jwt-A")), change: true},
				{name: "rewrite", do: write("jwt-B"), change: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "P", "D")
			must(t, os.MkdirAll(filepath.Dir(d), 0o755))
			p := &projected{t: t, dir: d}
			tt.setup(t, d, p)
			h := startWatcher(t, filepath.Join(d, "token"))
			for _, s := range tt.steps {
				deadline := time.Now().Add(waitFor)
				for h.w.Rearms() < s.rearmed {
					if time.Now().After(deadline) {
						t.Fatalf("%s: Rearms() = %d, want %d", s.name, h.w.Rearms(), s.rearmed)
					}
					time.Sleep(time.Millisecond)
				}
				if s.do != nil {
					s.do(t, d, p)
				}
				if s.poll {
					h.poll()
				}
				if s.change {
					h.expectChange(s.name)
				} else {
					h.expectNoChange(s.name)
				}
			}
			if got := h.w.Rearms(); got < tt.minRearms {
				t.Errorf("Rearms() = %d, want >= %d", got, tt.minRearms)
			}
			if tt.minRearms > 0 {
				if n := len(h.logs.FilterMessage("re-armed token file watch").All()); n < tt.minRearms {
					t.Errorf("%d re-arm log lines, want >= %d", n, tt.minRearms)
				}
				for _, e := range h.logs.FilterMessage("re-armed token file watch").All() {
					if r, _ := e.ContextMap()["reason"].(string); r == "" || e.Level != zap.DebugLevel {
						t.Errorf("re-arm log without reason or not at debug: %+v", e)
					}
				}
			}
			h.assertNoContent("jwt-A", "jwt-B", "jwt-C", "jwt-D", "jwt-E")
		})
	}
}

// Signals coalesce: a burst of changes the consumer has not read yet leaves
// exactly one pending signal, and the watcher never blocks on the channel.
// check is driven directly so the test does not depend on event timing.
func TestWatcherCoalesces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	w, err := NewWatcher(path, WatcherOptions{})
	must(t, err)
	w.check(false) // baseline: missing
	for i := range 5 {
		writeFile(t, path, fmt.Sprintf("v%d", i))
		w.check(true)
		w.check(true) // unchanged content: nothing new
	}
	if n := len(w.Changes()); n != 1 {
		t.Fatalf("pending signals = %d, want 1", n)
	}
	<-w.Changes()
	w.check(true)
	if n := len(w.Changes()); n != 0 {
		t.Fatalf("signal without a change")
	}
}

func TestNewWatcherOptions(t *testing.T) {
	if _, err := NewWatcher("", WatcherOptions{}); err == nil || !strings.Contains(err.Error(), "path") {
		t.Errorf("empty path: %v", err)
	}
	if _, err := NewWatcher("/x/token", WatcherOptions{PollInterval: -time.Second}); err == nil {
		t.Error("negative poll interval accepted")
	}
	w, err := NewWatcher("/x/y/token", WatcherOptions{})
	if err != nil || w.o.PollInterval != DefaultPollInterval || w.dir != "/x/y" || w.parent != "/x" {
		t.Errorf("defaults: %+v, %v", w, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := w.Run(ctx); err == nil {
		t.Error("second Run accepted")
	}
}
