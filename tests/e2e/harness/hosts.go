package harness

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/pelletier/go-toml/v2"
)

// ManagedMarker starts every hosts.toml the daemon writes (design.md).
const ManagedMarker = "# Managed by ecr-node-auth."

// HostsFile describes a hand-written hosts.toml (the shape design.md gives the daemon).
type HostsFile struct {
	Endpoint string // https://127.0.0.1:PORT: both server and the [host] table
	CA       string // CA file for Endpoint; "" for none
	// Password is the ECR token's password half; "" writes no Authorization header.
	Password string
	// Managed writes the daemon's marker line first, so the daemon may replace the file.
	Managed bool
}

// Render returns the file's TOML.
func (h HostsFile) Render() string {
	var b strings.Builder
	if h.Managed {
		b.WriteString(ManagedMarker + " Rewritten on every token refresh; local edits are lost.\n")
	}
	fmt.Fprintf(&b, "server = %q\n\n", h.Endpoint)
	// containerd 1.6 ignores a hosts.toml without at least one [host."…"] table.
	fmt.Fprintf(&b, "[host.%q]\n", h.Endpoint)
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if h.CA != "" {
		fmt.Fprintf(&b, "  ca = %q\n", h.CA)
	}
	if h.Password != "" {
		fmt.Fprintf(&b, "  [host.%q.header]\n", h.Endpoint)
		fmt.Fprintf(&b, "    Authorization = [%q]\n", BasicAuth("AWS", h.Password))
	}
	return b.String()
}

// BasicAuth is the Authorization header value for user:password.
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// HostsPath is certs.d/<host>/hosts.toml for a registry host name.
func HostsPath(certsDir, host string) string {
	return filepath.Join(certsDir, hostDirName(host), "hosts.toml")
}

// hostDirName is containerd's directory name for a host ("h:5000" -> "h_5000_").
func hostDirName(host string) string {
	if i := strings.LastIndex(host, ":"); i > 0 {
		return host[:i] + "_" + host[i+1:] + "_"
	}
	return host
}

var portDirRE = regexp.MustCompile(`^(.+)_(\d+)_$`)

// hostFromDirName undoes hostDirName.
func hostFromDirName(name string) string {
	if m := portDirRE.FindStringSubmatch(name); m != nil {
		return m[1] + ":" + m[2]
	}
	return name
}

// WriteHostsFile writes certs.d/<host>/hosts.toml atomically (temp file and rename in the
// same directory), as a careful writer would.
func WriteHostsFile(certsDir, host string, h HostsFile) error {
	path := HostsPath(certsDir, host)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".e2e-tmp"
	if err := os.WriteFile(tmp, []byte(h.Render()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ParsedHosts is what containerd's own loader made of one certs.d/<host> directory.
type ParsedHosts struct {
	Host     string // the registry name (directory)
	Path     string
	Raw      []byte
	Mode     os.FileMode
	Endpoint string // scheme://host of the first configured host
	// URLPath is that host's path as containerd will use it: /v2, or the
	// mirror's /v2/<prefix> with override_path.
	URLPath string
	// Fallback is scheme://host of the second host containerd tries (the
	// server entry), "" when there is none.
	Fallback string
	// FallbackHasAuth: the fallback would get an Authorization header too.
	FallbackHasAuth bool
	// Authorization is the header value containerd will send; "" when none.
	Authorization string
	// User and Password are the decoded Basic credentials ("" when none).
	User, Password string
}

// ParseHostsDir parses certs.d/<host>/hosts.toml with containerd's own loader
// (config.ConfigureHosts with config.HostDirFromRoot), and fails where containerd
// would silently fall back instead: the file must be valid TOML (containerd logs a
// decode error and ignores it), must configure at least one host other than the
// default, and any Authorization header must be a well-formed Basic one.
func ParseHostsDir(certsDir, host string) (*ParsedHosts, error) {
	path := HostsPath(certsDir, host)
	// Read once: the content checked is the content reported. The daemon may rename a
	// new file in between this read and the loader's; both must be whole files.
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	p := &ParsedHosts{Host: host, Path: path, Raw: raw, Mode: st.Mode().Perm()}
	if len(raw) == 0 {
		return p, fmt.Errorf("%s: empty file", path)
	}
	var doc map[string]any
	if err := toml.Unmarshal(raw, &doc); err != nil {
		return p, fmt.Errorf("%s: not valid TOML (containerd would ignore it): %v\n%s", path, err, raw)
	}
	hostsFn := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: config.HostDirFromRoot(certsDir)})
	rhosts, err := hostsFn(host)
	if err != nil {
		return p, fmt.Errorf("%s: containerd's loader: %v", path, err)
	}
	if len(rhosts) == 0 {
		return p, fmt.Errorf("%s: containerd's loader found no hosts", path)
	}
	rh := rhosts[0]
	if rh.Host == host && len(rh.Header) == 0 {
		// The loader fell back to the default host: the file configured nothing.
		return p, fmt.Errorf("%s: containerd's loader fell back to the default host (no [host] table?):\n%s", path, raw)
	}
	p.Endpoint = rh.Scheme + "://" + rh.Host
	p.URLPath = rh.Path
	if len(rhosts) > 1 {
		p.Fallback = rhosts[1].Scheme + "://" + rhosts[1].Host
		p.FallbackHasAuth = rhosts[1].Header.Get("Authorization") != ""
	}
	if vals := rh.Header.Values("Authorization"); len(vals) > 0 {
		if len(vals) != 1 {
			return p, fmt.Errorf("%s: %d Authorization values", path, len(vals))
		}
		p.Authorization = vals[0]
		user, pass, err := decodeBasic(vals[0])
		if err != nil {
			return p, fmt.Errorf("%s: %v", path, err)
		}
		p.User, p.Password = user, pass
	}
	return p, nil
}

func decodeBasic(v string) (user, pass string, err error) {
	enc, ok := strings.CutPrefix(v, "Basic ")
	if !ok {
		return "", "", fmt.Errorf("authorization header is not Basic")
	}
	dec, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", "", fmt.Errorf("authorization header: bad base64: %v", err)
	}
	user, pass, ok = strings.Cut(string(dec), ":")
	if !ok || user == "" || pass == "" {
		return "", "", fmt.Errorf("authorization header: not user:password")
	}
	return user, pass, nil
}

// ParseAllHosts parses every certs.d/<host> directory (ParseHostsDir) and returns them
// by host. Directories without hosts.toml are reported as errors too.
func ParseAllHosts(certsDir string) (map[string]*ParsedHosts, error) {
	ents, err := os.ReadDir(certsDir)
	if err != nil {
		return nil, err
	}
	out := map[string]*ParsedHosts{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		host := hostFromDirName(e.Name())
		p, err := ParseHostsDir(certsDir, host)
		if err != nil {
			return out, err
		}
		out[host] = p
	}
	return out, nil
}

// EndpointHost is the host[:port] of a URL such as https://127.0.0.1:5443.
func EndpointHost(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	return u.Host
}
