package cri

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	hostA = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	hostB = "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
	hostC = "777788889999.dkr.ecr.ap-south-1.amazonaws.com"
)

func hc(host, auth string) HostConfig { return HostConfig{Host: host, Authorization: auth} }

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tempFiles lists our temp files anywhere under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

func TestWriteCreatesFilesAtomically(t *testing.T) {
	certs := filepath.Join(t.TempDir(), "etc", "containerd", "certs.d") // does not exist yet
	w := NewWriter(certs, nil)
	h := hc(hostA, fakeAuth)
	changed, err := w.Write(h)
	if err != nil || !changed {
		t.Fatalf("Write = %v, %v; want true, nil", changed, err)
	}
	want, _ := Render(h)
	if got := mustRead(t, w.Path(hostA)); got != string(want) {
		t.Errorf("content:\n%s", got)
	}
	checkMode := func(path string, want os.FileMode) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	checkMode(w.Path(hostA), 0o600)
	checkMode(filepath.Dir(w.Path(hostA)), 0o700)
	if fi, err := os.Stat(certs); err != nil || fi.Mode().Perm()&0o022 != 0 || fi.Mode().Perm()&0o700 != 0o700 {
		t.Errorf("certs dir mode: %v, %v", fi.Mode(), err)
	}
	if tf := tempFiles(t, certs); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
}

func TestWriteUnchangedIsNotRewritten(t *testing.T) {
	w := NewWriter(t.TempDir(), nil)
	if _, err := w.Write(hc(hostA, fakeAuth)); err != nil {
		t.Fatal(err)
	}
	path := w.Path(hostA)
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, past, past); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)

	changed, err := w.Write(hc(hostA, fakeAuth))
	if err != nil || changed {
		t.Fatalf("second Write = %v, %v; want false, nil", changed, err)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || !after.ModTime().Equal(past) {
		t.Errorf("unchanged content was rewritten (inode or mtime changed)")
	}

	// A new token replaces the file: a new inode by rename, never in place.
	changed, err = w.Write(hc(hostA, "Basic QVdTOm5ldw=="))
	if err != nil || !changed {
		t.Fatalf("Write with new token = %v, %v", changed, err)
	}
	replaced, _ := os.Stat(path)
	if os.SameFile(before, replaced) {
		t.Errorf("file was modified in place, not replaced")
	}
	if !strings.Contains(mustRead(t, path), "Basic QVdTOm5ldw==") {
		t.Errorf("new token not written")
	}
}

func TestWriteRestoresMode(t *testing.T) {
	w := NewWriter(t.TempDir(), nil)
	if _, err := w.Write(hc(hostA, fakeAuth)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(w.Path(hostA), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := w.Write(hc(hostA, fakeAuth)); err != nil || changed {
		t.Fatalf("Write = %v, %v", changed, err)
	}
	if fi, _ := os.Stat(w.Path(hostA)); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestUnmanagedIsNeverTouched covers every way a host's file can be
// someone else's: Write, Remove and Reconcile must leave it byte for byte.
func TestUnmanagedIsNeverTouched(t *testing.T) {
	const foreign = "server = \"https://mirror.example\"\n"
	tests := []struct {
		name    string
		setup   func(t *testing.T, certs, outside string) // outside: a dir beyond the certs dir
		wantMsg string
	}{
		{"no marker", func(t *testing.T, certs, _ string) {
			mustWriteFile(t, filepath.Join(certs, hostA, "hosts.toml"), foreign)
		}, "has no ecr-node-auth marker"},
		{"marker not first", func(t *testing.T, certs, _ string) {
			mustWriteFile(t, filepath.Join(certs, hostA, "hosts.toml"), "# hand edited\n"+Marker+"\n"+foreign)
		}, "has no ecr-node-auth marker"},
		{"empty file", func(t *testing.T, certs, _ string) {
			mustWriteFile(t, filepath.Join(certs, hostA, "hosts.toml"), "")
		}, "has no ecr-node-auth marker"},
		{"symlinked file", func(t *testing.T, certs, outside string) {
			// Even a target carrying our marker is not followed.
			mustWriteFile(t, filepath.Join(outside, "hosts.toml"), Marker+"\n"+foreign)
			mustWriteFile(t, filepath.Join(certs, hostA, "keep"), "")
			if err := os.Symlink(filepath.Join(outside, "hosts.toml"), filepath.Join(certs, hostA, "hosts.toml")); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink"},
		{"symlinked host dir", func(t *testing.T, certs, outside string) {
			mustWriteFile(t, filepath.Join(outside, "hosts.toml"), Marker+"\n"+foreign)
			if err := os.MkdirAll(certs, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(certs, hostA)); err != nil {
				t.Fatal(err)
			}
		}, "is a symlink"},
		{"hosts.toml is a dir", func(t *testing.T, certs, _ string) {
			mustWriteFile(t, filepath.Join(certs, hostA, "hosts.toml", "x"), "")
		}, "is not a regular file"},
		{"host dir is a file", func(t *testing.T, certs, _ string) {
			mustWriteFile(t, filepath.Join(certs, hostA), foreign)
		}, "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			certs, outside := filepath.Join(root, "certs.d"), filepath.Join(root, "outside")
			tt.setup(t, certs, outside)
			before := snapshot(t, root)

			core, logs := observer.New(zapcore.WarnLevel)
			w := NewWriter(certs, zap.New(core))
			_, err := w.Write(hc(hostA, fakeAuth))
			if !errors.Is(err, ErrUnmanaged) {
				t.Fatalf("Write error = %v, want ErrUnmanaged", err)
			}
			for _, want := range []string{certs, tt.wantMsg, "move it away or add the registry elsewhere"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Write error %q does not mention %q", err, want)
				}
			}
			if err := w.Remove(hostA); !errors.Is(err, ErrUnmanaged) {
				t.Errorf("Remove error = %v, want ErrUnmanaged", err)
			}
			rep, err := w.Reconcile([]HostConfig{hc(hostA, fakeAuth)})
			if err != nil || !reflect.DeepEqual(rep.Unmanaged, []string{hostA}) || len(rep.Written) != 0 {
				t.Errorf("Reconcile(want A) = %+v, %v", rep, err)
			}
			if logs.Len() != 1 {
				t.Errorf("%d warnings, want 1", logs.Len())
			}
			rep, err = w.Reconcile(nil) // not wanted: still not ours to prune
			if err != nil || len(rep.Removed) != 0 || len(rep.Unmanaged) != 0 || len(rep.Errors) != 0 {
				t.Errorf("Reconcile(nil) = %+v, %v", rep, err)
			}
			if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
				t.Errorf("files changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// snapshot maps every path under root to its content or link target.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			m[p] = "-> " + target
		case d.IsDir():
			m[p] = "dir"
		default:
			b, _ := os.ReadFile(p)
			fi, _ := d.Info()
			m[p] = fmt.Sprintf("%v %q", fi.Mode(), b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReconcile(t *testing.T) {
	certs := t.TempDir()
	// Another tool's registry and containerd's default dir: never touched.
	foreign := filepath.Join(certs, "docker.io", "hosts.toml")
	mustWriteFile(t, foreign, "server = \"https://registry-1.docker.io\"\n")
	defaultDir := filepath.Join(certs, "_default", "hosts.toml")
	mustWriteFile(t, defaultDir, Marker+"\n") // even with our marker: not a host dir we create
	w := NewWriter(certs, nil)

	steps := []struct {
		name   string
		before func()
		want   []HostConfig
		report Report
	}{
		{"create", nil, []HostConfig{hc(hostB, fakeAuth), hc(hostA, fakeAuth)},
			Report{Written: []string{hostA, hostB}}},
		{"steady state", nil, []HostConfig{hc(hostA, fakeAuth), hc(hostB, fakeAuth)},
			Report{Unchanged: []string{hostA, hostB}}},
		{"deleted file re-created", func() { os.Remove(w.Path(hostA)) }, []HostConfig{hc(hostA, fakeAuth), hc(hostB, fakeAuth)},
			Report{Written: []string{hostA}, Unchanged: []string{hostB}}},
		{"deleted dir re-created", func() { os.RemoveAll(filepath.Dir(w.Path(hostB))) }, []HostConfig{hc(hostA, fakeAuth), hc(hostB, fakeAuth)},
			Report{Written: []string{hostB}, Unchanged: []string{hostA}}},
		{"token rotated", nil, []HostConfig{hc(hostA, "Basic QVdTOm5ldw=="), hc(hostB, fakeAuth)},
			Report{Written: []string{hostA}, Unchanged: []string{hostB}}},
		{"host dropped", nil, []HostConfig{hc(hostA, "Basic QVdTOm5ldw==")},
			Report{Unchanged: []string{hostA}, Removed: []string{hostB}}},
		{"invalid entry keeps its file", nil, []HostConfig{hc(hostA, "")},
			Report{Errors: map[string]string{hostA: "registry " + hostA + ": authorization header value is empty"}}},
		{"duplicate", nil, []HostConfig{hc(hostA, fakeAuth), hc(hostA, "Basic QVdTOm90aGVy")},
			Report{Written: []string{hostA}, Errors: map[string]string{hostA: "registry " + hostA + " is listed more than once; the first entry is used"}}},
		{"all dropped", nil, nil, Report{Removed: []string{hostA}}},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		rep, err := w.Reconcile(s.want)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if s.report.Errors == nil {
			s.report.Errors = map[string]string{}
		}
		if !reflect.DeepEqual(rep, s.report) {
			t.Errorf("%s:\n got %+v\nwant %+v", s.name, rep, s.report)
		}
	}
	for _, h := range []string{hostA, hostB} {
		if _, err := os.Lstat(filepath.Dir(w.Path(h))); !os.IsNotExist(err) {
			t.Errorf("host dir of %s not pruned: %v", h, err)
		}
	}
	if !strings.HasPrefix(mustRead(t, foreign), "server") || mustRead(t, defaultDir) != Marker+"\n" {
		t.Errorf("foreign files changed")
	}
}

func TestReconcileEmptyWantDoesNotCreateCertsDir(t *testing.T) {
	certs := filepath.Join(t.TempDir(), "certs.d")
	rep, err := NewWriter(certs, nil).Reconcile(nil)
	if err != nil || len(rep.Written)+len(rep.Removed)+len(rep.Errors) != 0 {
		t.Fatalf("Reconcile(nil) = %+v, %v", rep, err)
	}
	if _, err := os.Stat(certs); !os.IsNotExist(err) {
		t.Errorf("certs dir created for nothing: %v", err)
	}
}

func TestRemove(t *testing.T) {
	w := NewWriter(t.TempDir(), nil)
	for _, h := range []string{hostA, hostB} {
		if _, err := w.Write(hc(h, fakeAuth)); err != nil {
			t.Fatal(err)
		}
	}
	// An admin's CA file beside our hosts.toml keeps the directory.
	ca := filepath.Join(filepath.Dir(w.Path(hostB)), "ca.crt")
	mustWriteFile(t, ca, "pem")

	tests := []struct {
		name, host string
		wantErr    string
		dirGone    bool
	}{
		{"managed", hostA, "", true},
		{"managed with other files", hostB, "", false},
		{"already gone", hostA, "", true},
		{"never existed", hostC, "", true},
		{"invalid host", "../etc", `contains "/"`, true},
	}
	for _, tt := range tests {
		err := w.Remove(tt.host)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if _, err := os.Lstat(w.Path(tt.host)); !os.IsNotExist(err) {
			t.Errorf("%s: hosts.toml still there", tt.name)
		}
		if _, err := os.Lstat(filepath.Dir(w.Path(tt.host))); os.IsNotExist(err) != tt.dirGone {
			t.Errorf("%s: host dir gone = %v, want %v", tt.name, os.IsNotExist(err), tt.dirGone)
		}
	}
	if mustRead(t, ca) != "pem" {
		t.Errorf("CA file changed")
	}
}

func TestWriteErrorsNamePathAndFix(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "file")
	mustWriteFile(t, file, "x")
	secret := "Basic c2VjcmV0LXRva2Vu"
	tests := []struct {
		name, certs string
		want        []string
	}{
		// Running as root, permissions cannot be used to provoke errors;
		// a file where a directory should be can.
		{"certs dir is a file", file, []string{"certs dir " + file + " is not a directory", "containerd.certsDir"}},
		{"certs dir under a file", filepath.Join(file, "certs.d"), []string{"certs dir " + filepath.Join(file, "certs.d") + " is not writable", "make it writable by root or set containerd.certsDir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(tt.certs, nil)
			_, err := w.Write(hc(hostA, secret))
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("error leaks the secret: %q", err)
			}
			rep, err := w.Reconcile([]HostConfig{hc(hostA, secret)})
			if err == nil || strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(fmt.Sprint(rep), "c2VjcmV0") {
				t.Errorf("Reconcile = %+v, %v", rep, err)
			}
		})
	}
}

func TestFailedReplaceCleansUpAndKeepsOldFile(t *testing.T) {
	certs := t.TempDir()
	w := NewWriter(certs, nil)
	if _, err := w.Write(hc(hostA, fakeAuth)); err != nil {
		t.Fatal(err)
	}
	old := mustRead(t, w.Path(hostA))
	w.rename = func(string, string) error { return errors.New("injected rename failure") }

	secret := "Basic c2VjcmV0LXRva2Vu"
	changed, err := w.Write(hc(hostA, secret))
	if err == nil || changed {
		t.Fatalf("Write = %v, %v; want an error", changed, err)
	}
	if !strings.Contains(err.Error(), w.Path(hostA)) || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("error should name the path and not the secret: %q", err)
	}
	if tf := tempFiles(t, certs); len(tf) != 0 {
		t.Errorf("temp file left after a failed rename: %v", tf)
	}
	if mustRead(t, w.Path(hostA)) != old {
		t.Errorf("old file damaged")
	}
}

func TestReconcileRemovesOnlyOurTempFiles(t *testing.T) {
	certs := t.TempDir()
	w := NewWriter(certs, nil)
	if _, err := w.Write(hc(hostA, fakeAuth)); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a SIGKILL between create and rename, wanted and unwanted host.
	ours := []string{
		filepath.Join(certs, hostA, tmpPrefix+"123456"+tmpSuffix),
		filepath.Join(certs, hostB, tmpPrefix+"999"+tmpSuffix),
	}
	notOurs := []string{
		filepath.Join(certs, hostA, "foo.tmp"),
		filepath.Join(certs, hostA, ".hosts.toml.swp"),
		filepath.Join(certs, "_default", tmpPrefix+"1"+tmpSuffix), // not a host dir we create
	}
	for _, p := range append(append([]string{}, ours...), notOurs...) {
		mustWriteFile(t, p, Marker+"\npartial")
	}
	rep, err := w.Reconcile([]HostConfig{hc(hostA, fakeAuth)})
	if err != nil || !reflect.DeepEqual(rep.Unchanged, []string{hostA}) {
		t.Fatalf("Reconcile = %+v, %v", rep, err)
	}
	for _, p := range ours {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("leftover temp file %s not removed", p)
		}
	}
	for _, p := range notOurs {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

func TestPathAndHostDirNames(t *testing.T) {
	w := NewWriter("/etc/containerd/certs.d/", nil)
	tests := []struct {
		host, path string
	}{
		{hostA, "/etc/containerd/certs.d/" + hostA + "/hosts.toml"},
		// containerd looks up "host_port_" before "host:port".
		{"registry.local:5000", "/etc/containerd/certs.d/registry.local_5000_/hosts.toml"},
	}
	for _, tt := range tests {
		if got := w.Path(tt.host); got != tt.path {
			t.Errorf("Path(%q) = %s, want %s", tt.host, got, tt.path)
		}
		if h, ok := hostFromDir(filepath.Base(filepath.Dir(tt.path))); !ok || h != tt.host {
			t.Errorf("hostFromDir round trip for %q = %q, %v", tt.host, h, ok)
		}
	}
	for _, name := range []string{"_default", "registry.local:5000", "a_b_", "x_", "_5000_", ".", "..", "Upper.example", "a_0_"} {
		if h, ok := hostFromDir(name); ok {
			t.Errorf("hostFromDir(%q) = %q, want not ours", name, h)
		}
	}
}

// TestLogsOncePerState: a host stuck behind a foreign file is logged once,
// not on every 30 s reconcile, and again when its state changes. No log
// field ever carries the secret.
func TestLogsOncePerState(t *testing.T) {
	certs := t.TempDir()
	core, logs := observer.New(zapcore.DebugLevel)
	w := NewWriter(certs, zap.New(core))
	secret := "Basic c2VjcmV0LXRva2Vu"
	want := []HostConfig{hc(hostA, secret)}
	path := filepath.Join(certs, hostA, "hosts.toml")
	warnings := func() int { return logs.FilterLevelExact(zapcore.WarnLevel).Len() }

	mustWriteFile(t, path, "server = \"https://x.example\"\n")
	for range 3 {
		if _, err := w.Reconcile(want); err != nil {
			t.Fatal(err)
		}
	}
	if n := warnings(); n != 1 {
		t.Errorf("%d warnings after 3 runs, want 1", n)
	}
	// A different foreign state is news.
	os.Remove(path)
	if err := os.Symlink("/etc/hostname", path); err != nil {
		t.Fatal(err)
	}
	w.Reconcile(want)
	w.Reconcile(want)
	if n := warnings(); n != 2 {
		t.Errorf("%d warnings after state change, want 2", n)
	}
	// Fixed, then broken again: warned again.
	os.Remove(path)
	if rep, _ := w.Reconcile(want); len(rep.Written) != 1 {
		t.Fatalf("not written after the fix: %+v", rep)
	}
	os.Remove(path)
	mustWriteFile(t, path, "# mine\n")
	w.Reconcile(want)
	if n := warnings(); n != 3 {
		t.Errorf("%d warnings after fix and relapse, want 3", n)
	}
	if len(w.warned) != 1 {
		t.Errorf("warned set has %d entries", len(w.warned))
	}
	w.Reconcile(nil)
	if len(w.warned) != 0 {
		t.Errorf("warned set not pruned for unwanted hosts: %v", w.warned)
	}
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, "c2VjcmV0") {
			t.Errorf("log line leaks the secret: %s", line)
		}
	}
}

// TestConcurrentUse runs writes, removes and reconciles together; run with
// -race. The end state must be consistent and free of temp files.
func TestConcurrentUse(t *testing.T) {
	certs := t.TempDir()
	w := NewWriter(certs, nil)
	hosts := []string{hostA, hostB, hostC}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 20 {
				h := hosts[(i+j)%len(hosts)]
				switch j % 3 {
				case 0:
					if _, err := w.Write(hc(h, fmt.Sprintf("Basic dG9rZW4t%d", j))); err != nil {
						t.Error(err)
					}
				case 1:
					if err := w.Remove(h); err != nil {
						t.Error(err)
					}
				default:
					if _, err := w.Reconcile([]HostConfig{hc(hostA, fakeAuth)}); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	rep, err := w.Reconcile([]HostConfig{hc(hostA, fakeAuth)})
	if err != nil || len(rep.Errors) != 0 {
		t.Fatalf("final Reconcile = %+v, %v", rep, err)
	}
	entries, _ := os.ReadDir(certs)
	if len(entries) != 1 || entries[0].Name() != hostA {
		t.Errorf("certs dir holds %v", entries)
	}
	if tf := tempFiles(t, certs); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
}

func BenchmarkWriteUnchanged(b *testing.B) {
	w := NewWriter(b.TempDir(), nil)
	h := HostConfig{Host: hostA, Authorization: "Basic " + strings.Repeat("QVdTOmV4YW1wbGU=", 120)}
	if _, err := w.Write(h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if changed, err := w.Write(h); err != nil || changed {
			b.Fatal(changed, err)
		}
	}
}
