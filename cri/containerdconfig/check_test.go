package containerdconfig

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/edited/*.toml from Plan")

const certs = "/etc/containerd/certs.d"

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hasProblem(r Report, sev Severity, substr string) bool {
	for _, p := range r.Problems {
		if p.Severity == sev && strings.Contains(p.Message, substr) && p.Fix != "" {
			return true
		}
	}
	return false
}

func TestCheck(t *testing.T) {
	images := `plugins."io.containerd.cri.v1.images".registry`
	grpc := `plugins."io.containerd.grpc.v1.cri".registry`
	tests := []struct {
		file     string
		certs    string
		version  int
		table    string
		paths    []string
		defaults bool
		includes bool
		ok       bool
		problem  string // substring of one problem
	}{
		{"containerd-1.6-default.toml", certs, 2, grpc, nil, false, false, false, `sets config_path = "": containerd 1.x then reads no certs dir`},
		{"containerd-1.6-minimal.toml", certs, 2, grpc, nil, false, false, false, "sets no config_path"},
		{"containerd-1.7-eks.toml", certs, 2, grpc, []string{certs, "/etc/docker/certs.d"}, false, true, true, "config_path lists 2 dirs"},
		{"containerd-1.7-eks.toml", "/etc/docker/certs.d", 2, grpc, []string{certs, "/etc/docker/certs.d"}, false, true, false, "lists /etc/containerd/certs.d before the certs dir"},
		{"containerd-1.7-eks.toml", "/run/ena/certs.d", 2, grpc, []string{certs, "/etc/docker/certs.d"}, false, false, false, "does not include the certs dir /run/ena/certs.d"},
		{"containerd-2.4-default.toml", certs, 4, images, []string{certs, "/etc/docker/certs.d"}, true, true, true, "falls back to its default"},
		{"containerd-2.4-default.toml", "/run/ena/certs.d", 4, images, []string{certs, "/etc/docker/certs.d"}, true, false, false, "default config_path"},
		{"containerd-2.x-v3.toml", certs, 3, images, []string{certs, "/etc/docker/certs.d"}, true, true, true, "sets no config_path"},
		{"case19a.toml", certs, 3, images, []string{certs, "/etc/docker/certs.d"}, true, true, true, `sets config_path = ""`},
		{"case19b.toml", certs, 2, images, nil, false, false, false, "only containerd 2.x reads that table"},
		{"case19c.toml", certs, 2, grpc, []string{certs}, false, true, true, ""},
		{"case19d.toml", certs, 3, images, []string{certs, "/etc/docker/certs.d"}, false, true, true, "lists 2 dirs"},
		{"case18.toml", certs, 2, grpc, nil, false, false, false, "inline mirrors for docker.io and no config_path"},
		{"configs-auth.toml", certs, 2, grpc, nil, false, false, false, "inline registry.configs/auths for registry.example.com"},
		{"dotted.toml", certs, 2, grpc, nil, false, false, false, "sets no config_path"},
		{"v1.toml", certs, 1, "plugins.cri.registry", nil, false, false, false, "sets no config_path"},
		{"syntax.toml", certs, 0, "", nil, false, false, false, "line 2"},
		{"duplicate.toml", certs, 0, "", nil, false, false, false, "line 4"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"@"+tt.certs, func(t *testing.T) {
			r, err := Check(filepath.Join("testdata", tt.file), tt.certs)
			if err != nil {
				t.Fatal(err)
			}
			if r.Version != tt.version || r.Table != tt.table || !slices.Equal(r.ConfigPaths, tt.paths) ||
				r.Defaulted != tt.defaults || r.IncludesCertsDir != tt.includes || r.OK() != tt.ok {
				t.Errorf("got version %d table %s paths %q defaulted %v includes %v ok %v\nwant %d %s %q %v %v %v\nproblems: %v",
					r.Version, r.Table, r.ConfigPaths, r.Defaulted, r.IncludesCertsDir, r.OK(),
					tt.version, tt.table, tt.paths, tt.defaults, tt.includes, tt.ok, r.Problems)
			}
			if tt.problem != "" && !slices.ContainsFunc(r.Problems, func(p Problem) bool { return strings.Contains(p.Message, tt.problem) && p.Fix != "" }) {
				t.Errorf("no problem with %q (and a fix): %v", tt.problem, r.Problems)
			}
			if tt.problem == "" && len(r.Problems) > 0 {
				t.Errorf("unexpected problems: %v", r.Problems)
			}
		})
	}
}

func TestCheckCase18BothSet(t *testing.T) {
	data := bytes.Replace(read(t, "case18.toml"), []byte(`config_path = ""`), []byte(`config_path = "/etc/containerd/certs.d"`), 1)
	r := CheckBytes("x.toml", data, true, certs)
	if r.OK() || !hasProblem(r, Error, "containerd refuses to load the CRI plugin") || !slices.Equal(r.Mirrors, []string{"docker.io"}) {
		t.Errorf("case 18 with config_path: %+v", r)
	}
}

func TestCheckMissingFile(t *testing.T) {
	r, err := Check(filepath.Join(t.TempDir(), "config.toml"), certs)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exists || !r.Defaulted || !r.IncludesCertsDir || !hasProblem(r, Warning, "does not exist") {
		t.Errorf("%+v", r)
	}
	r, _ = Check(filepath.Join(t.TempDir(), "config.toml"), "/var/lib/ena/certs.d")
	if r.OK() || r.IncludesCertsDir {
		t.Errorf("missing file, other certs dir: %+v", r)
	}
	if _, err := Check(t.TempDir(), certs); err == nil {
		t.Error("a directory as config: no error")
	}
}

// TestPlan edits every testdata file (golden output in testdata/edited),
// checks the edit changes only what it must, and that a second Plan on the
// result is a no-op ("already set").
func TestPlan(t *testing.T) {
	tests := []struct {
		file    string
		refused string // substring of the refusal
		changed bool
	}{
		{"containerd-1.6-default.toml", "", true},
		{"containerd-1.6-minimal.toml", "", true},
		{"containerd-1.7-eks.toml", "", false},
		{"containerd-2.4-default.toml", "", true},
		{"containerd-2.x-v3.toml", "", true},
		{"case19a.toml", "", true},
		{"case19b.toml", "", true},
		{"case19c.toml", "", false},
		{"case19d.toml", "", false},
		{"case18.toml", "inline mirrors for docker.io", false},
		{"configs-auth.toml", "", true},
		{"dotted.toml", "", true},
		{"inline.toml", "is an inline table", false},
		{"v1.toml", "", true},
		{"syntax.toml", "line 2", false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			in := read(t, tt.file)
			e, err := Plan(tt.file, in, true, certs, PlanOptions{})
			if tt.refused != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("want refusal with %q, got %v", tt.refused, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Changed != tt.changed {
				t.Fatalf("changed = %v, want %v (%s)", e.Changed, tt.changed, e.Summary)
			}
			if !tt.changed {
				if !bytes.Equal(e.Content, in) || !strings.HasPrefix(e.Summary, "already set") {
					t.Fatalf("unchanged plan altered content or summary %q", e.Summary)
				}
				return
			}
			// Only lines are added or one value replaced: every old line except
			// a config_path line survives in order.
			old := strings.Split(string(in), "\n")
			neu := strings.Split(string(e.Content), "\n")
			j := 0
			for _, l := range old {
				for j < len(neu) && neu[j] != l {
					if strings.Contains(l, "config_path") {
						break
					}
					j++
				}
				if j == len(neu) {
					t.Fatalf("line %q lost:\n%s", l, e.Content)
				}
			}
			if d := len(neu) - len(old); d < 0 || d > 3 {
				t.Errorf("edit added %d lines", d)
			}
			golden := filepath.Join("testdata", "edited", tt.file)
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				os.WriteFile(golden, e.Content, 0o644)
			}
			if want := read(t, filepath.Join("edited", tt.file)); !bytes.Equal(e.Content, want) {
				t.Errorf("edited %s differs from %s:\n%s", tt.file, golden, e.Content)
			}
			after := CheckBytes(tt.file, e.Content, true, certs)
			if after.ConfigPaths[0] != certs || after.Defaulted || after.Table != e.Before.Table {
				t.Errorf("after edit: %+v", after)
			}
			again, err := Plan(tt.file, e.Content, true, certs, PlanOptions{})
			if err != nil || again.Changed || !strings.HasPrefix(again.Summary, "already set") {
				t.Errorf("second plan: %v changed=%v %q", err, again.Changed, again.Summary)
			}
		})
	}
}

func TestPlanNormalisesMultiPath(t *testing.T) {
	e, err := Plan("eks.toml", read(t, "containerd-1.7-eks.toml"), true, "/run/ena/certs.d", PlanOptions{})
	if err != nil || !e.Changed {
		t.Fatal(err, e.Changed)
	}
	if !bytes.Contains(e.Content, []byte(`config_path = "/run/ena/certs.d"`+"\n")) ||
		!slices.ContainsFunc(e.Notes, func(n string) bool {
			return strings.Contains(n, "no longer reads /etc/containerd/certs.d, /etc/docker/certs.d")
		}) {
		t.Errorf("content:\n%s\nnotes %q", e.Content, e.Notes)
	}
}

func TestPlanNewFile(t *testing.T) {
	for v, want := range map[int]string{
		2: "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
		3: "version = 3\n\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
		4: "version = 4\n\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
	} {
		e, err := Plan("new.toml", nil, false, certs, PlanOptions{NewFileVersion: v})
		if err != nil || !e.Changed || !strings.HasSuffix(string(e.Content), want) {
			t.Errorf("v%d: %v %q", v, err, e.Content)
		}
		if r := CheckBytes("new.toml", e.Content, true, certs); !r.OK() || len(r.Problems) != 0 {
			t.Errorf("v%d new file has problems: %v", v, r.Problems)
		}
	}
	if _, err := Plan("new.toml", nil, false, certs, PlanOptions{}); err == nil {
		t.Error("no version: no error")
	}
}

func TestValidateCertsDir(t *testing.T) {
	for _, bad := range []string{"", "certs.d", "/a:/b", "/a\nb"} {
		if err := ValidateCertsDir(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := ValidateCertsDir("/etc/containerd/certs.d"); err != nil {
		t.Error(err)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{`/a`: `"/a"`, `/a"b\c`: `"/a\"b\\c"`, "/a\tb": `"/a\u0009b"`} {
		if got := quote(in, false); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := quote("/a", true); got != "'/a'" {
		t.Errorf("literal: %s", got)
	}
	if got := quote("/a'b", true); got != `"/a'b"` {
		t.Errorf("literal with quote: %s", got)
	}
}

func TestApplyBackupAndRollback(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	orig := []byte("version = 2\n# mine\n")
	os.WriteFile(path, orig, 0o640)
	now := time.Date(2026, 12, 3, 20, 0, 0, 0, time.UTC)

	// A rejecting verifier leaves the file alone and no backup or temp behind.
	_, err := Apply(context.Background(), path, []byte("version = 3\n"), func(context.Context, string) error { return errors.New("nope") }, now)
	if err == nil || !strings.Contains(err.Error(), "left unchanged: nope") {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left files: %v", ents)
	}
	var seen string
	res, err := Apply(context.Background(), path, []byte("version = 3\n"), func(_ context.Context, c string) error {
		b, _ := os.ReadFile(c)
		seen = string(b)
		return nil
	}, now)
	if err != nil || seen != "version = 3\n" {
		t.Fatal(err, seen)
	}
	if res.Backup != path+".ecr-node-auth.bak-20261203T200000Z" {
		t.Errorf("backup %s", res.Backup)
	}
	if b, _ := os.ReadFile(res.Backup); !bytes.Equal(b, orig) {
		t.Errorf("backup content %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := Rollback(path, res); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, orig) {
		t.Errorf("after rollback %q", b)
	}
	// A second Apply in the same second keeps the first backup.
	res2, err := Apply(context.Background(), path, []byte("version = 3\n"), nil, now)
	if err != nil || res2.Backup == res.Backup {
		t.Errorf("second backup %v %s", err, res2.Backup)
	}

	// Created files are removed on rollback; symlinks are followed.
	real := filepath.Join(dir, "real.toml")
	link := filepath.Join(dir, "link.toml")
	os.Symlink(real, link)
	res3, err := Apply(context.Background(), link, []byte("version = 2\n"), nil, now)
	if err != nil || !res3.Created {
		t.Fatal(err, res3)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("symlink replaced")
	}
	if err := Rollback(link, res3); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(real); !os.IsNotExist(err) {
		t.Errorf("created file not removed: %v", err)
	}
}

// TestVerifyWithRealContainerd runs the edited files through the installed
// containerd binaries (`config dump`), where present.
func TestVerifyWithRealContainerd(t *testing.T) {
	bins := []string{"/usr/bin/containerd", "../../.cache/tools/containerd"}
	ran := false
	for _, b := range bins {
		if _, err := os.Stat(b); err != nil {
			continue
		}
		ran = true
		c, err := DetectContainerd(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		t.Run("containerd-"+c.Version, func(t *testing.T) {
			files := []string{"containerd-1.6-default.toml", "containerd-1.6-minimal.toml", "configs-auth.toml", "dotted.toml", "v1.toml"}
			if c.Major >= 2 {
				files = append(files, "containerd-2.4-default.toml", "containerd-2.x-v3.toml", "case19a.toml", "case19b.toml")
			}
			dir := t.TempDir()
			for _, f := range files {
				cand := filepath.Join(dir, f)
				os.WriteFile(cand, read(t, filepath.Join("edited", f)), 0o600)
				if err := c.Verify(context.Background(), cand, certs); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
			if c.Major == 1 {
				// Case 19 b on containerd 1.x: the images table is not read.
				cand := filepath.Join(dir, "19b.toml")
				os.WriteFile(cand, read(t, filepath.Join("edited", "case19b.toml")), 0o600)
				if err := c.Verify(context.Background(), cand, certs); err == nil || !strings.Contains(err.Error(), "ignores the table") {
					t.Errorf("case 19b on 1.x: %v", err)
				}
			}
			// The original (unedited) 1.6 default does not read the certs dir.
			orig := filepath.Join(dir, "orig.toml")
			os.WriteFile(orig, read(t, "containerd-1.6-default.toml"), 0o600)
			if err := c.Verify(context.Background(), orig, certs); err == nil || !strings.Contains(err.Error(), "config_path") {
				t.Errorf("unedited: %v", err)
			}
			// Case 18: dump accepts it, Verify does not.
			c18 := filepath.Join(dir, "c18.toml")
			os.WriteFile(c18, bytes.Replace(read(t, "case18.toml"), []byte(`config_path = ""`), []byte(`config_path = "/etc/containerd/certs.d"`), 1), 0o600)
			if out, err := exec.Command(c.Path, "--config", c18, "config", "dump").CombinedOutput(); err != nil {
				t.Logf("dump rejected case 18 itself: %v %s", err, out)
			}
			if err := c.Verify(context.Background(), c18, certs); err == nil || !strings.Contains(err.Error(), "mirrors") {
				t.Errorf("case 18: %v", err)
			}
			syn := filepath.Join(dir, "syntax.toml")
			os.WriteFile(syn, read(t, "syntax.toml"), 0o600)
			if err := c.Verify(context.Background(), syn, certs); err == nil || !strings.Contains(err.Error(), "rejects it") {
				t.Errorf("syntax: %v", err)
			}
		})
	}
	if !ran {
		t.Skip("no containerd binary here")
	}
}

func TestCheckImports(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "conf.d", "10-mirror.toml"), []byte("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/other'\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "conf.d", "20-other.toml"), []byte("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n"), 0o644)
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte("version = 3\nimports = ['conf.d/*.toml']\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n"), 0o644)
	r, err := Check(cfg, certs)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(r, Warning, "10-mirror.toml also sets") || hasProblem(r, Warning, "20-other") {
		t.Errorf("%v", r.Problems)
	}
}
