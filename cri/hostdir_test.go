package cri

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// escapingHosts are registry names that, used as a directory name, could leave the
// certs dir or be read as another name: traversal, separators, absolute paths, NUL,
// percent-encoding and unicode lookalikes or controls.
var escapingHosts = []struct{ name, host, want string }{
	{"empty", "", "registry host is empty"},
	{"dot", ".", "empty label"},
	{"dotdot", "..", "empty label"},
	{"dotdot with port", "..:443", "empty label"},
	{"traversal", "../etc", "contains \"/\""},
	{"deep traversal", "../../../../etc/containerd", "contains \"/\""},
	{"absolute", "/etc/passwd", "contains \"/\""},
	{"slash inside", "registry.example.com/x", "contains \"/\""},
	{"trailing slash", "registry.example.com/", "contains \"/\""},
	{"backslash", `..\..\etc`, `contains "\\"`},
	{"backslash inside", `registry\example.com`, `contains "\\"`},
	{"nul", "registry.example.com\x00.evil", `contains "\x00"`},
	{"percent dots", "%2e%2e", `contains "%"`},
	{"percent slash", "registry%2fexample.com", `contains "%"`},
	{"one-dot leader", "\u2024\u2024", "non-ASCII"},
	{"one-dot leader in name", "registry\u2024example.com", "non-ASCII"},
	{"fullwidth solidus", "..\uff0fetc", "non-ASCII"},
	{"rtl override", "moc.elpmaxe\u202e", "non-ASCII"},
	{"zero-width joiner", "registry\u200d.example.com", "non-ASCII"},
	{"invalid utf-8", "registry\xff.example.com", "non-ASCII"},
	{"leading dot", ".hidden", "empty label"},
	{"trailing dot", "registry.example.com.", "empty label"},
	{"upper case", "Registry.example.com", "lower case"},
	{"space", "registry example.com", "contains \" \""},
	{"newline", "registry.example.com\n", "contains \"\\n\""},
	{"tilde", "~root", "contains \"~\""},
	{"port only", ":443", "no name before the port"},
	{"bad port", "registry.example.com:0", "port must be"},
	{"two colons", "a:1:2", `contains ":"`},
	{"underscore", "_default", "contains \"_\""},
	{"ipv6", "[::1]:443", `contains "["`},
}

// entries lists every path below root, relative to it.
func entries(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestWriterRefusesEscapingHosts(t *testing.T) {
	for _, tt := range escapingHosts {
		for _, existing := range []bool{false, true} {
			name := tt.name
			if existing {
				name += "/certs dir exists"
			}
			t.Run(name, func(t *testing.T) {
				root := t.TempDir()
				certs := filepath.Join(root, "etc", "containerd", "certs.d")
				var before []string
				if existing {
					if err := os.MkdirAll(certs, 0o755); err != nil {
						t.Fatal(err)
					}
					before = entries(t, root)
				}
				w := NewWriter(certs, nil)
				if _, err := w.Write(hc(tt.host, fakeAuth)); err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Write(%q) error %v, want one containing %q", tt.host, err, tt.want)
				}
				// The writer's own check, below Render's: a host that got past
				// every earlier validation is still refused.
				if _, err := w.write(tt.host, []byte(Marker+"\n")); err == nil || !strings.Contains(err.Error(), "refusing to write below "+certs) {
					t.Errorf("write(%q) error %v, want a refusal naming the certs dir", tt.host, err)
				}
				if err := w.Remove(tt.host); err == nil {
					t.Errorf("Remove(%q) accepted the host", tt.host)
				}
				rep, err := w.Reconcile([]HostConfig{hc(tt.host, fakeAuth)})
				if err != nil || rep.Errors[tt.host] == "" || len(rep.Written) != 0 {
					t.Errorf("Reconcile(%q) = %+v, %v; want a per-host error and nothing written", tt.host, rep, err)
				}
				if got := entries(t, root); !slices.Equal(got, before) {
					t.Errorf("files were created for %q: %v (before: %v)", tt.host, got, before)
				}
				// And nothing next to the temp root either (an escape would land there).
				if sib := entries(t, filepath.Dir(root)); slices.ContainsFunc(sib, func(p string) bool {
					return strings.HasPrefix(p, "etc") || strings.Contains(p, "passwd")
				}) {
					t.Errorf("a file appeared beside the temp root: %v", sib)
				}
			})
		}
	}
}

// checkHostWrite is the writer's promise for any host string s: Write either refuses
// it and leaves root untouched, or writes exactly certsDir/<one element>/hosts.toml,
// which Remove then deletes again.
func checkHostWrite(t *testing.T, root, s string) (ok bool) {
	t.Helper()
	certs := filepath.Join(root, "certs.d")
	w := NewWriter(certs, nil)
	_, err := w.Write(hc(s, fakeAuth))
	got := entries(t, root)
	if err != nil {
		if len(got) != 0 {
			t.Fatalf("Write(%q) refused (%v) but created %v", s, err, got)
		}
		if err := w.Remove(s); err == nil {
			t.Fatalf("Remove(%q) accepted a host Write refused", s)
		}
		return false
	}
	elem := dirName(s)
	if elem == "" || elem == "." || elem == ".." || strings.ContainsAny(elem, "/\\\x00") || !filepath.IsLocal(elem) {
		t.Fatalf("Write(%q) accepted a host whose directory is %q", s, elem)
	}
	want := []string{"certs.d", filepath.Join("certs.d", elem), filepath.Join("certs.d", elem, fileName)}
	if !slices.Equal(got, want) {
		t.Fatalf("Write(%q) created %v, want exactly %v", s, got, want)
	}
	if p := w.Path(s); filepath.Dir(filepath.Dir(p)) != certs {
		t.Fatalf("Path(%q) = %s: not one element below %s", s, p, certs)
	}
	if err := w.Remove(s); err != nil {
		t.Fatalf("Remove(%q): %v", s, err)
	}
	if got := entries(t, root); !slices.Equal(got, []string{"certs.d"}) {
		t.Fatalf("after Remove(%q): %v", s, got)
	}
	return true
}

// hostPieces build random host strings: mostly valid labels, mixed with separators,
// traversal, encodings and unicode that must never reach the file system.
var hostPieces = []string{
	"a", "registry", "111122223333", "dkr", "ecr", "us-east-1", "amazonaws", "com", "io", "xn--80ak6aa92e", "0", "-",
	".", ".", ".", ":443", ":5000", ":0", ":", "/", "..", "../", "\\", "\x00", "%2e", "%2f", "%", "_", " ", "A", "~",
	"\u2024", "\uff0f", "\uff0e", "\u202e", "\u200d", "\u200b", "\xff", "\n", "[", "]", "@",
}

func randomHost(r *rand.Rand) string {
	var b strings.Builder
	for n := 1 + r.IntN(7); n > 0; n-- {
		b.WriteString(hostPieces[r.IntN(len(hostPieces))])
	}
	return b.String()
}

func TestWriterHostProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 3))
	root := t.TempDir()
	accepted, refused := 0, 0
	for i := 0; i < 3000; i++ {
		s := randomHost(r)
		dir := filepath.Join(root, "r")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if checkHostWrite(t, dir, s) {
			accepted++
		} else {
			refused++
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d random hosts written, %d refused", accepted, refused)
	// Both outcomes must be exercised, or the property proves little.
	if accepted < 100 || refused < 100 {
		t.Fatalf("%d accepted, %d refused: the generator no longer covers both outcomes", accepted, refused)
	}
}

func FuzzWriterHost(f *testing.F) {
	for _, tt := range escapingHosts {
		f.Add(tt.host)
	}
	for _, s := range []string{hostA, "registry.example.com:5000", "10.0.0.1", "localhost"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkHostWrite(t, t.TempDir(), s)
	})
}
