package cri

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from Render")

// fakeAuth is base64("AWS:example"): obviously not a real token.
const (
	fakeAuth = "Basic QVdTOmV4YW1wbGU="
	ecrHost  = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	// mirrorECR holds the pull-through caches in these tests.
	mirrorECR = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
)

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name string
		h    HostConfig
	}{
		{"plain", HostConfig{Host: ecrHost, Authorization: fakeAuth}},
		{"endpoint", HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", Authorization: fakeAuth}},
		{"endpoint_ca", HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443/", CA: "/etc/ecr-node-auth/ca.pem", Authorization: fakeAuth}},
		{"mirror", HostConfig{Host: "docker.io", Authorization: fakeAuth, Mirror: &Mirror{ECRHost: mirrorECR, Prefix: "docker-hub"}}},
		{"mirror_endpoint_ca", HostConfig{Host: "ghcr.io", Endpoint: "https://127.0.0.1:5443", CA: "/etc/ecr-node-auth/ca.pem", Authorization: fakeAuth,
			Mirror: &Mirror{ECRHost: mirrorECR, Prefix: "cache/ghcr"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(tt.h)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./cri -run TestRenderGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
			if !bytes.HasPrefix(got, []byte(Marker+"\n")) {
				t.Errorf("marker is not the first line")
			}
		})
	}
}

func withMirror(upstream, ecr, prefix string) HostConfig {
	return HostConfig{Host: upstream, Authorization: fakeAuth, Mirror: &Mirror{ECRHost: ecr, Prefix: prefix}}
}

func TestRenderValidation(t *testing.T) {
	ok := HostConfig{Host: ecrHost, Authorization: fakeAuth}
	with := func(f func(*HostConfig)) HostConfig { h := ok; f(&h); return h }
	tests := []struct {
		name    string
		h       HostConfig
		wantErr string // "" means valid
	}{
		{"plain", ok, ""},
		{"host with port", with(func(h *HostConfig) { h.Host = "registry.local:5000" }), ""},
		{"ipv4 host", with(func(h *HostConfig) { h.Host = "10.0.0.1" }), ""},
		{"http endpoint", with(func(h *HostConfig) { h.Endpoint = "http://127.0.0.1:5000" }), ""},
		{"ipv6 endpoint", with(func(h *HostConfig) { h.Endpoint = "https://[::1]:5443" }), ""},
		{"quote and backslash in auth", with(func(h *HostConfig) { h.Authorization = `Basic a"b\c` }), ""},
		{"empty host", with(func(h *HostConfig) { h.Host = "" }), "registry host is empty"},
		{"dotdot", with(func(h *HostConfig) { h.Host = ".." }), "empty label"},
		{"dot", with(func(h *HostConfig) { h.Host = "." }), "empty label"},
		{"slash", with(func(h *HostConfig) { h.Host = "a/b" }), `contains "/"`},
		{"traversal", with(func(h *HostConfig) { h.Host = "../etc" }), `contains "/"`},
		{"backslash", with(func(h *HostConfig) { h.Host = `a\b` }), `contains "\\"`},
		{"nul", with(func(h *HostConfig) { h.Host = "a\x00b" }), `contains "\x00"`},
		{"space", with(func(h *HostConfig) { h.Host = "a b" }), `contains " "`},
		{"non-ascii", with(func(h *HostConfig) { h.Host = "régistry.example" }), "non-ASCII"},
		{"upper case", with(func(h *HostConfig) { h.Host = "Registry.example" }), "lower case"},
		{"underscore", with(func(h *HostConfig) { h.Host = "_default" }), `contains "_"`},
		{"bad port", with(func(h *HostConfig) { h.Host = "a.example:99999" }), "port must be"},
		{"empty port", with(func(h *HostConfig) { h.Host = "a.example:" }), "port must be"},
		{"no name", with(func(h *HostConfig) { h.Host = ":443" }), "no name"},
		{"hyphen label", with(func(h *HostConfig) { h.Host = "-a.example" }), "starts or ends"},
		{"long label", with(func(h *HostConfig) { h.Host = strings.Repeat("a", 64) + ".example" }), "longer than 63"},
		{"endpoint ftp", with(func(h *HostConfig) { h.Endpoint = "ftp://x.example" }), "must start with https://"},
		{"endpoint no scheme", with(func(h *HostConfig) { h.Endpoint = "127.0.0.1:5443" }), "must start with https://"},
		{"endpoint no host", with(func(h *HostConfig) { h.Endpoint = "https://" }), "has no host"},
		{"endpoint query", with(func(h *HostConfig) { h.Endpoint = "https://x.example?a=b" }), "query or fragment"},
		{"endpoint empty query", with(func(h *HostConfig) { h.Endpoint = "https://x.example?" }), "query or fragment"},
		{"endpoint fragment", with(func(h *HostConfig) { h.Endpoint = "https://x.example#f" }), "query or fragment"},
		{"endpoint path", with(func(h *HostConfig) { h.Endpoint = "https://x.example/v2/mirror" }), "must not have a path"},
		{"endpoint userinfo", with(func(h *HostConfig) { h.Endpoint = "https://u:p@x.example" }), "user info"},
		{"endpoint userinfo redacted", with(func(h *HostConfig) { h.Endpoint = "ftp://AWS:c2VjcmV0@x.example" }), `"ftp://REDACTED@x.example" must start`},
		{"endpoint userinfo no scheme", with(func(h *HostConfig) { h.Endpoint = "AWS:c2VjcmV0@x.example" }), `"REDACTED@x.example"`},
		{"endpoint bad url with userinfo", with(func(h *HostConfig) { h.Endpoint = "https://AWS:c2VjcmV0@x.example:port" }), `"https://REDACTED@x.example:port" is not a URL`},
		{"endpoint bad host", with(func(h *HostConfig) { h.Endpoint = "https://x_y.example" }), `contains "_"`},
		{"ca relative", with(func(h *HostConfig) { h.CA = "ca.pem" }), "absolute path"},
		{"ca newline", with(func(h *HostConfig) { h.CA = "/etc/ca\n.pem" }), "control character"},
		{"ca with http", with(func(h *HostConfig) { h.Endpoint = "http://127.0.0.1:5000"; h.CA = "/etc/ca.pem" }), "plain http"},
		{"auth empty", with(func(h *HostConfig) { h.Authorization = "" }), "authorization header value is empty"},
		{"auth crlf", with(func(h *HostConfig) { h.Authorization = "Basic c2VjcmV0\r\nX-Evil: 1" }), "offset 14 (value redacted)"},
		{"auth non-ascii", with(func(h *HostConfig) { h.Authorization = "Basic sécret" }), "non-ASCII"},
		{"mirror", withMirror("docker.io", mirrorECR, "docker-hub"), ""},
		{"mirror nested prefix", withMirror("ghcr.io", mirrorECR, "cache/ghcr-io"), ""},
		{"mirror empty prefix", withMirror("docker.io", mirrorECR, ""), `repository prefix "" is not a repository name`},
		{"mirror prefix traversal", withMirror("docker.io", mirrorECR, "../x"), `repository prefix "../x" is not a repository name`},
		{"mirror prefix slash", withMirror("docker.io", mirrorECR, "hub/"), `repository prefix "hub/" is not a repository name`},
		{"mirror prefix quote", withMirror("docker.io", mirrorECR, `hub"x`), `is not a repository name`},
		{"mirror bad ECR host", withMirror("docker.io", "a/b", "hub"), `mirror for docker.io: ECR registry host "a/b" contains "/"`},
		{"mirror of itself", withMirror(mirrorECR, mirrorECR, "hub"), "the ECR host is the upstream itself"},
		{"mirror bad upstream", withMirror("Docker.io", mirrorECR, "hub"), "must be lower case"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Render(tt.h)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if out != nil {
				t.Errorf("output returned with an error")
			}
			if strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("error leaks a password: %q", err)
			}
			if len(tt.h.Authorization) > 6 && strings.Contains(err.Error(), tt.h.Authorization[6:]) {
				t.Errorf("error leaks the authorization value: %q", err)
			}
		})
	}
}

// TestRenderEscaping parses the output with a TOML decoder: quotes and
// backslashes in any field must come back byte for byte.
func TestRenderEscaping(t *testing.T) {
	tests := []HostConfig{
		{Host: ecrHost, Authorization: fakeAuth},
		{Host: ecrHost, Authorization: `Basic a"b\c\"d`},
		{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", CA: `/etc/odd "ca"\dir/ca.pem`, Authorization: `Basic \u0041`},
		{Host: ecrHost, CA: "/etc/ünïcode/ca.pem", Authorization: "Basic ' ''' \"\"\" #"},
	}
	for _, h := range tests {
		out, err := Render(h)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Server string `toml:"server"`
			Host   map[string]struct {
				Capabilities []string            `toml:"capabilities"`
				CA           string              `toml:"ca"`
				Header       map[string][]string `toml:"header"`
			} `toml:"host"`
		}
		if err := toml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("output is not valid TOML: %v\n%s", err, out)
		}
		if doc.Server != h.URL() || len(doc.Host) != 1 {
			t.Fatalf("server %q, %d host tables", doc.Server, len(doc.Host))
		}
		ht := doc.Host[h.URL()]
		if ht.CA != h.CA || len(ht.Header["Authorization"]) != 1 || ht.Header["Authorization"][0] != h.Authorization {
			t.Errorf("round trip lost a value: ca %q, header %q", ht.CA, ht.Header["Authorization"])
		}
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`a"b`, `"a\"b"`},
		{`a\b`, `"a\\b"`},
		{"t\tn\nr\r", `"t\tn\nr\r"`},
		{"\x01\x7f", `"\u0001\u007F"`},
		{"ü", `"ü"`},
	}
	for _, tt := range tests {
		if got := quote(tt.in); got != tt.want {
			t.Errorf("quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func BenchmarkRender(b *testing.B) {
	h := HostConfig{Host: ecrHost, Endpoint: "https://127.0.0.1:5443", CA: "/etc/ecr-node-auth/ca.pem",
		Authorization: "Basic " + strings.Repeat("QVdTOmV4YW1wbGU=", 120)} // ECR tokens are ~2 KB
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(h); err != nil {
			b.Fatal(err)
		}
	}
}
