// Package cri renders and writes the containerd registry host files
// (certs.d/<host>/hosts.toml) that carry the ECR Authorization header.
// It knows nothing about AWS: callers hand it finished header values.
package cri

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Marker is the first line of every file this package owns. A hosts.toml
// without it on its first line is never overwritten or deleted.
const Marker = "# Managed by ecr-node-auth. Rewritten on every token refresh; local edits are lost."

// HostConfig is one registry's hosts.toml.
type HostConfig struct {
	// Host is the registry host as it appears in image references, e.g.
	// 111122223333.dkr.ecr.us-east-1.amazonaws.com. It names the directory.
	Host string
	// Endpoint is where containerd really connects, e.g. https://127.0.0.1:5443.
	// "" means https://<Host>.
	Endpoint string
	// CA is an optional absolute path of a CA bundle for Endpoint.
	CA string
	// Authorization is the header value "Basic <base64 AWS:token>". Secret:
	// it is never put in an error or a log line.
	Authorization string
	// Mirror, when set, makes this an ECR pull-through cache for Host (the
	// upstream, e.g. docker.io): containerd asks the cache first, with the
	// header, then falls back to the upstream itself, without it. Endpoint
	// and CA then belong to the cache.
	Mirror *Mirror
}

// Mirror is the ECR side of a pull-through cache.
type Mirror struct {
	// ECRHost is the ECR registry holding the cache; containerd connects to
	// it unless Endpoint is set.
	ECRHost string
	// Prefix is the cache rule's repository prefix, e.g. docker-hub:
	// <Host>/library/alpine is served as <ECRHost>/docker-hub/library/alpine.
	Prefix string
}

// upstreamServer is the URL containerd itself uses for host: Docker Hub's
// images are named docker.io but served by registry-1.docker.io.
func upstreamServer(host string) string {
	if host == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

// repositoryNameRe is an OCI repository name (lower-case components joined
// by '/'). It is compiled on first use: package init runs in every exec of
// the binary, the kubelet plugin's included.
var repositoryNameRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
})

// IsRepositoryName reports whether s is an OCI repository name: lower-case
// components joined by '/', each alphanumerics joined by '.', '_', '__' or
// '-'. A mirror's prefix must be one; it becomes part of a URL path
// containerd uses as written.
func IsRepositoryName(s string) bool { return repositoryNameRe().MatchString(s) }

// URL is the scheme and host containerd connects to: the endpoint's if set,
// else https://<Host>, or https://<Mirror.ECRHost> for a mirror. It is also
// server, except for a mirror, whose server is the upstream. Call Validate
// first.
func (h HostConfig) URL() string {
	if h.Endpoint == "" {
		if h.Mirror != nil {
			return "https://" + h.Mirror.ECRHost
		}
		return "https://" + h.Host
	}
	u, err := url.Parse(h.Endpoint)
	if err != nil {
		return h.Endpoint
	}
	return u.Scheme + "://" + u.Host
}

// HostURL is the URL of the [host."…"] table, the one containerd tries
// first: URL(), and for a mirror the cache's path below it, /v2/<prefix>
// (written with override_path). Call Validate first.
func (h HostConfig) HostURL() string {
	if h.Mirror != nil {
		return h.URL() + "/v2/" + h.Mirror.Prefix
	}
	return h.URL()
}

// Validate checks every field; the error names the field and, for the
// secret, only the position of the offending byte.
func (h HostConfig) Validate() error {
	if err := ValidateHost(h.Host); err != nil {
		return err
	}
	if m := h.Mirror; m != nil {
		if err := ValidateHost(m.ECRHost); err != nil {
			return fmt.Errorf("mirror for %s: ECR %w", h.Host, err)
		}
		if m.ECRHost == h.Host {
			return fmt.Errorf("mirror for %s: the ECR host is the upstream itself", h.Host)
		}
		if !IsRepositoryName(m.Prefix) {
			return fmt.Errorf("mirror for %s: repository prefix %q is not a repository name (lower-case a-z, 0-9, '.', '_', '-', components joined by '/')", h.Host, m.Prefix)
		}
	}
	scheme := "https"
	if h.Endpoint != "" {
		var err error
		if scheme, err = validateEndpoint(h.Endpoint); err != nil {
			return fmt.Errorf("registry %s: %w", h.Host, err)
		}
	}
	if h.CA != "" {
		if err := validateCA(h.CA); err != nil {
			return fmt.Errorf("registry %s: %w", h.Host, err)
		}
		if scheme != "https" {
			return fmt.Errorf("registry %s: ca %q is set but endpoint %q is plain http; use an https endpoint or drop ca", h.Host, h.CA, h.Endpoint)
		}
	}
	if err := validateAuthorization(h.Authorization); err != nil {
		return fmt.Errorf("registry %s: %w", h.Host, err)
	}
	return nil
}

// ValidateHost accepts a lower-case DNS name or IPv4 address, optionally with
// ":port". The host becomes a directory name, so anything that could escape
// the certs dir or be read differently by containerd is refused.
func ValidateHost(host string) error {
	if host == "" {
		return errors.New("registry host is empty")
	}
	if len(host) > 253+6 {
		return fmt.Errorf("registry host %.40q… is longer than a DNS name can be", host)
	}
	name, port := host, ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i+1:]
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return fmt.Errorf("registry host %q: port must be a number 1-65535", host)
		}
	}
	if name == "" {
		return fmt.Errorf("registry host %q has no name before the port", host)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("registry host %q must be lower case (one directory per registry)", host)
		case c >= 0x80:
			return fmt.Errorf("registry host %q contains a non-ASCII character; use its punycode (xn--) form", host)
		default:
			return fmt.Errorf("registry host %q contains %q; only a-z, 0-9, '-', '.' and one ':port' are allowed", host, string(rune(c)))
		}
	}
	for _, label := range strings.Split(name, ".") {
		switch {
		case label == "":
			return fmt.Errorf("registry host %q has an empty label (leading, trailing or double dot)", host)
		case len(label) > 63:
			return fmt.Errorf("registry host %q has a label longer than 63 characters", host)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("registry host %q has a label that starts or ends with '-'", host)
		}
	}
	return nil
}

// validateEndpoint returns the endpoint's scheme.
func validateEndpoint(endpoint string) (string, error) {
	if !strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q must start with https:// (or http://)", redactUserinfo(endpoint))
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		// url.Error repeats the raw URL, which may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("endpoint %q is not a URL: %w", redactUserinfo(endpoint), err)
	}
	endpoint = redactUserinfo(endpoint) // only used in messages from here on
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return "", fmt.Errorf("endpoint %q must start with https:// (or http://)", endpoint)
	case u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("endpoint %q has no host; write it as https://host[:port]", endpoint)
	case u.User != nil:
		return "", fmt.Errorf("endpoint %q must not carry user info; credentials go in the Authorization header", endpoint)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(endpoint, "#"):
		return "", fmt.Errorf("endpoint %q must not have a query or fragment", endpoint)
	case u.Path != "" && u.Path != "/":
		// containerd would append /v2 to the path; a path means a mirror,
		// which needs override_path and is not what this field is for.
		return "", fmt.Errorf("endpoint %q must not have a path; write it as https://host[:port]", endpoint)
	}
	if strings.HasPrefix(u.Host, "[") {
		if u.Hostname() == "" {
			return "", fmt.Errorf("endpoint %q has an empty IPv6 address", endpoint)
		}
	} else if err := ValidateHost(strings.ToLower(u.Host)); err != nil {
		return "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	return u.Scheme, nil
}

// redactUserinfo hides anything before an '@' in a URL's authority: a
// password must not reach an error message.
func redactUserinfo(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	end := len(s)
	if i := strings.IndexAny(s[start:], "/?#"); i >= 0 {
		end = start + i
	}
	if i := strings.LastIndexByte(s[start:end], '@'); i >= 0 {
		return s[:start] + "REDACTED" + s[start+i:]
	}
	return s
}

func validateCA(ca string) error {
	if !filepath.IsAbs(ca) {
		return fmt.Errorf("ca %q must be an absolute path", ca)
	}
	if !utf8.ValidString(ca) {
		return fmt.Errorf("ca %q is not valid UTF-8", ca)
	}
	for i := 0; i < len(ca); i++ {
		if ca[i] < 0x20 || ca[i] == 0x7f {
			return fmt.Errorf("ca %q contains a control character", ca)
		}
	}
	return nil
}

// validateAuthorization never echoes the value: it is the registry password.
func validateAuthorization(v string) error {
	if v == "" {
		return errors.New("authorization header value is empty")
	}
	for i := 0; i < len(v); i++ {
		// Visible ASCII and space only: a CR/LF would split the HTTP header.
		if v[i] < 0x20 || v[i] > 0x7e {
			return fmt.Errorf("authorization header value has a control or non-ASCII byte at offset %d (value redacted)", i)
		}
	}
	return nil
}

// Render returns the hosts.toml for h. The shape is fixed (design.md):
// the marker, server, and always an explicit [host."…"] table, because
// containerd 1.6 ignores a file with root keys only (case 20). With an
// endpoint both server and the table use it, so a failed request never
// falls back to the real ECR name.
func Render(h HostConfig) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	if h.Mirror != nil {
		return renderMirror(h), nil
	}
	u := quote(h.HostURL())
	var b strings.Builder
	b.Grow(320 + len(h.Authorization) + len(h.CA))
	b.WriteString(Marker)
	b.WriteString("\nserver = ")
	b.WriteString(u)
	if h.CA != "" {
		// containerd also tries server itself after the host table fails; with
		// the CA at the top level that fallback trusts the endpoint too.
		b.WriteString("\nca = ")
		b.WriteString(quote(h.CA))
	}
	writeHostTable(&b, u, "", h)
	return []byte(b.String()), nil
}

// renderMirror writes the pull-through cache form (case 24): the upstream
// stays as server, the fallback, and gets neither the header nor the CA;
// the host table names the cache's path with override_path, because
// containerd would otherwise append a second /v2 to a host URL with a path.
func renderMirror(h HostConfig) []byte {
	u := quote(h.HostURL())
	var b strings.Builder
	b.Grow(360 + len(h.Authorization) + len(h.CA))
	b.WriteString(Marker)
	b.WriteString("\n# Pull-through cache: ")
	b.WriteString(h.Host)
	b.WriteString(" is served by ")
	b.WriteString(h.Mirror.ECRHost)
	b.WriteString("/")
	b.WriteString(h.Mirror.Prefix)
	b.WriteString(", then by the upstream itself.\nserver = ")
	b.WriteString(quote(upstreamServer(h.Host)))
	writeHostTable(&b, u, "  override_path = true\n", h)
	return []byte(b.String())
}

// writeHostTable writes the [host."<u>"] table both forms share: pull and
// resolve only, extra (already indented lines, or ""), h's CA if any, and
// the Authorization header.
func writeHostTable(b *strings.Builder, u, extra string, h HostConfig) {
	b.WriteString("\n\n[host.")
	b.WriteString(u)
	b.WriteString("]\n  capabilities = [\"pull\", \"resolve\"]\n")
	b.WriteString(extra)
	if h.CA != "" {
		b.WriteString("  ca = ")
		b.WriteString(quote(h.CA))
		b.WriteString("\n")
	}
	b.WriteString("  [host.")
	b.WriteString(u)
	b.WriteString(".header]\n    Authorization = [")
	b.WriteString(quote(h.Authorization))
	b.WriteString("]\n")
}

// quote returns s as a TOML basic string. Inputs are validated UTF-8; only
// '"', '\' and control characters need escapes.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
