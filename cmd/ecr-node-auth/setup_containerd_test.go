package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeContainerd writes a stand-in containerd: --version, `config default`
// (version v) and `config dump` (prints the file, as a v>=3 dump would show
// it; exits 1 for a file containing "REJECT").
func fakeContainerd(t *testing.T, major, v int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "containerd")
	ver := "v2.4.2 abc"
	mod := "github.com/containerd/containerd/v2"
	if major == 1 {
		ver, mod = "1.6.20~ds1 1.6.20~ds1-1", "github.com/containerd/containerd"
	}
	script := `#!/bin/sh
case "$1" in
--version) echo "containerd ` + mod + ` ` + ver + `";;
config) echo "version = ` + string(rune('0'+v)) + `";;
--config) if grep -q REJECT "$2"; then echo 'level=error msg="bad config"' >&2; exit 1; fi; cat "$2";;
esac
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func runSetup(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	empty := filepath.Join(t.TempDir(), "config.yaml") // every default
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code := run(append([]string{"setup-containerd", "--config", empty}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func backups(t *testing.T, dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.ecr-node-auth.bak-*"))
	return m
}

const v3NoPath = `# containerd 2.x
version = 3
root = '/var/lib/containerd'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
`

func TestSetupContainerdEditAndIdempotent(t *testing.T) {
	bin := fakeContainerd(t, 2, 3)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(v3NoPath), 0o600)
	certs := filepath.Join(dir, "certs.d")
	// An explicit --config that is missing is an error; the default is optional.
	var o, e bytes.Buffer
	if code := run([]string{"setup-containerd", "--config", filepath.Join(dir, "nope.yaml"), "--containerd-bin", bin, "--containerd-config", cfg}, &o, &e); code != 1 || !strings.Contains(e.String(), "not found") {
		t.Errorf("missing explicit --config: %d %q", code, e.String())
	}

	code, out, errs := runSetup(t, "--containerd-bin", bin, "--containerd-config", cfg, "--certs-dir", certs)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	want := v3NoPath + "\n  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = '" + certs + "'\n"
	if b, _ := os.ReadFile(cfg); string(b) != want {
		t.Errorf("config:\n%s\nwant:\n%s", b, want)
	}
	for _, s := range []string{"+  [plugins.'io.containerd.cri.v1.images'.registry]", "updated " + cfg, "backup " + cfg + ".ecr-node-auth.bak-", "run `systemctl restart containerd`"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if b := backups(t, dir); len(b) != 1 {
		t.Fatalf("backups %v", b)
	} else if got, _ := os.ReadFile(b[0]); string(got) != v3NoPath {
		t.Errorf("backup %q", got)
	}

	code, out, _ = runSetup(t, "--containerd-bin", bin, "--containerd-config", cfg, "--certs-dir", certs, "--restart")
	if code != 0 || !strings.Contains(out, "already set") || !strings.Contains(out, "not restarting containerd: nothing changed") {
		t.Errorf("second run: %d %q", code, out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != want || len(backups(t, dir)) != 1 {
		t.Error("second run changed something")
	}
}

func TestSetupContainerdCreatesFile(t *testing.T) {
	for _, tt := range []struct {
		major, v int
		want     string
	}{
		{1, 2, "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n"},
		{2, 4, "version = 4\n\n[plugins.\"io.containerd.cri.v1.images\".registry]\n"},
	} {
		bin := fakeContainerd(t, tt.major, tt.v)
		cfg := filepath.Join(t.TempDir(), "sub", "config.toml")
		code, out, errs := runSetup(t, "--containerd-bin", bin, "--containerd-config", cfg, "--certs-dir", "/etc/containerd/certs.d")
		b, _ := os.ReadFile(cfg)
		if code != 0 || !strings.Contains(string(b), tt.want) || !strings.Contains(out, "create "+cfg) {
			t.Errorf("containerd %d: %d %s %s\n%s", tt.major, code, out, errs, b)
		}
	}
}

func TestSetupContainerdRefusals(t *testing.T) {
	bin := fakeContainerd(t, 2, 3)
	dir := t.TempDir()
	case18 := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"\"\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n    endpoint = [\"https://mirror.example.com\"]\n"
	for name, tt := range map[string]struct {
		content string
		args    []string
		want    string
	}{
		"case 18 mirrors":    {case18, nil, "inline mirrors for docker.io"},
		"syntax":             {"version = 2\n[plugins\n", nil, "line 2"},
		"containerd rejects": {"version = 2\n# REJECT\n", nil, "candidate config rejected, " + filepath.Join(dir, "syntax") + ""},
		"relative certs":     {"version = 2\n", []string{"--certs-dir", "certs.d"}, "must be an absolute path"},
		"no containerd":      {"version = 2\n", []string{"--containerd-bin", filepath.Join(dir, "missing")}, "not found (stat "},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			os.WriteFile(cfg, []byte(tt.content), 0o644)
			want := strings.Replace(tt.want, filepath.Join(dir, "syntax"), cfg, 1)
			args := append([]string{"--containerd-bin", bin, "--containerd-config", cfg, "--certs-dir", "/etc/containerd/certs.d"}, tt.args...)
			code, out, errs := runSetup(t, args...)
			if code != 1 || !strings.Contains(errs, want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "ecr-node-auth setup-containerd: ") {
				t.Errorf("exit %d stderr %q (want one line with %q) stdout %q", code, errs, want, out)
			}
			if b, _ := os.ReadFile(cfg); string(b) != tt.content {
				t.Errorf("file changed: %q", b)
			}
			if b := backups(t, dir); len(b) != 0 {
				t.Errorf("backups left: %v", b)
			}
		})
	}
}

func TestSetupContainerdDryRun(t *testing.T) {
	bin := fakeContainerd(t, 2, 3)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, []byte(v3NoPath), 0o644)
	code, out, errs := runSetup(t, "--containerd-bin", bin, "--containerd-config", cfg, "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run: would set") || !strings.Contains(out, "+    config_path = '/etc/containerd/certs.d'") || !strings.Contains(out, "nothing written") {
		t.Errorf("%d %s %s", code, out, errs)
	}
	if b, _ := os.ReadFile(cfg); string(b) != v3NoPath || len(backups(t, filepath.Dir(cfg))) != 0 {
		t.Error("dry run wrote")
	}
}

func TestSetupContainerdRestart(t *testing.T) {
	bin := fakeContainerd(t, 2, 3)
	orig := restartFunc
	t.Cleanup(func() { restartFunc = orig })
	var calls []string
	for _, tt := range []struct {
		name     string
		results  []error
		code     int
		want     string
		restored bool
	}{
		{"ok", []error{nil}, 0, "restarted containerd.service", false},
		{"no systemd", []error{errNoSystemd}, 1, "updated, but containerd was not restarted: systemd is not running", false},
		{"fails to start", []error{errors.New(`systemd job to restart containerd.service ended "failed"`), nil}, 1, "rolled back and containerd restarted with the old one", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config.toml")
			os.WriteFile(cfg, []byte(v3NoPath), 0o644)
			calls = nil
			restartFunc = func(_ context.Context, unit string) error {
				b, _ := os.ReadFile(cfg)
				calls = append(calls, unit+":"+string(b))
				err := tt.results[0]
				tt.results = tt.results[1:]
				return err
			}
			code, out, errs := runSetup(t, "--containerd-bin", bin, "--containerd-config", cfg, "--restart")
			if code != tt.code || !strings.Contains(out+errs, tt.want) {
				t.Errorf("exit %d, out %q err %q; want %d with %q", code, out, errs, tt.code, tt.want)
			}
			b, _ := os.ReadFile(cfg)
			if restored := string(b) == v3NoPath; restored != tt.restored {
				t.Errorf("restored = %v, file:\n%s", restored, b)
			}
			if !strings.Contains(calls[0], "config_path") {
				t.Errorf("first restart ran before the new file was in place: %q", calls[0])
			}
			if tt.restored && (len(calls) != 2 || strings.Contains(calls[1], "config_path")) {
				t.Errorf("second restart should run on the old file: %q", calls)
			}
		})
	}
}

func TestRestartUnitWithoutSystemd(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd runs here")
	}
	if err := restartUnit(context.Background(), containerdUnit); !errors.Is(err, errNoSystemd) {
		t.Errorf("got %v", err)
	}
}

func TestSetupContainerdRealBinaries(t *testing.T) {
	bins := []string{"/usr/bin/containerd", "../../.cache/tools/containerd"}
	for _, b := range bins {
		if _, err := os.Stat(b); err != nil {
			continue
		}
		t.Run(b, func(t *testing.T) {
			src, err := os.ReadFile("../../cri/containerdconfig/testdata/containerd-1.6-default.toml")
			if err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(t.TempDir(), "config.toml")
			os.WriteFile(cfg, src, 0o644)
			code, out, errs := runSetup(t, "--containerd-bin", b, "--containerd-config", cfg)
			if code != 0 {
				t.Fatalf("%d %s %s", code, out, errs)
			}
			got, _ := os.ReadFile(cfg)
			if want := bytes.Replace(src, []byte(`config_path = ""`), []byte(`config_path = "/etc/containerd/certs.d"`), 1); !bytes.Equal(got, want) {
				t.Errorf("edit is not the one-line change:\n%s", out)
			}
			if code, out, _ := runSetup(t, "--containerd-bin", b, "--containerd-config", cfg); code != 0 || !strings.Contains(out, "already set") {
				t.Errorf("second run: %d %s", code, out)
			}
		})
	}
}
