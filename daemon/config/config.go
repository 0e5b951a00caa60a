// Package config reads and validates /etc/ecr-node-auth/config.yaml.
//
// The file is strict: an unknown key, a value of the wrong type or an invalid
// registry is an error that names the key and its line, so a typo never
// silently turns into a default.
package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// DefaultPath is where `run` and the clients look for the config file.
const DefaultPath = "/etc/ecr-node-auth/config.yaml"

// Defaults, as design.md states them.
const (
	DefaultTokenFile  = "/var/run/secrets/ecr-node-auth/token"
	DefaultAudience   = "sts.amazonaws.com"
	DefaultCertsDir   = "/etc/containerd/certs.d"
	DefaultConfigFile = "/etc/containerd/config.toml"
	DefaultSocket     = "/run/ecr-node-auth/auth.sock"
	DefaultLogLevel   = "info"
	DefaultLogFormat  = "auto"
	// DefaultMetricsAddress serves /healthz, /readyz and /metrics on
	// loopback only; "" in the file turns the server off.
	DefaultMetricsAddress = "127.0.0.1:9469"
)

// Config is a parsed, validated config file.
type Config struct {
	// Path is the file the config was read from ("" for built-in defaults).
	Path       string
	AWSECR     AWSECR
	Registries []Registry
	// Mirrors are ECR pull-through caches serving another registry.
	Mirrors    []Mirror
	Identity   Identity
	Containerd Containerd
	Socket     string
	Log        Log

	// SocketGroup is the group (name or numeric gid, as written) whose
	// members may also use the socket ("" = root and the daemon's user
	// only); SocketGID is its gid (-1 when SocketGroup is "").
	SocketGroup string
	SocketGID   int
	// LearnRegistries: ECR hosts first asked for on the socket (on-demand)
	// also get certs.d/<host>/hosts.toml.
	LearnRegistries bool
	// MetricsAddress is host:port of the /healthz, /readyz and /metrics
	// server ("" = off).
	MetricsAddress string
	// PublicECR: also get an ECR Public token (ecr-public, always in
	// us-east-1) and write certs.d/public.ecr.aws/hosts.toml with it. Best
	// effort: without it pulls from public.ecr.aws are anonymous.
	PublicECR bool

	// STSRegion is the region for STS: awsECR.region, else AWS_REGION, else
	// the first registry's region; "" if none of them is set.
	STSRegion string
	// STSRegionFrom says where STSRegion came from, for the start log.
	STSRegionFrom string
}

// AWSECR is the awsECR section (the shape of the cluster add-on manifest).
type AWSECR struct {
	// RoleARN is the IAM role assumed with the projected token; "" means the
	// default AWS credential chain.
	RoleARN string
	// Region is the STS region as written in the file ("" if not set).
	Region string
}

// RolePartition is the partition named by RoleARN ("" without a role).
func (a AWSECR) RolePartition() string {
	if m := roleARNRe().FindStringSubmatch(a.RoleARN); m != nil {
		return m[1]
	}
	return ""
}

// Registry is one configured ECR registry.
type Registry struct {
	Host ecrhost.Host
	// Endpoint is where containerd really connects ("" = the host itself).
	Endpoint string
	// CA is an optional CA bundle for Endpoint.
	CA string
	// Line is the registry's line in the config file.
	Line int
}

// Mirror is one ECR pull-through cache that containerd tries first for
// images of Upstream, falling back to Upstream itself.
type Mirror struct {
	// Upstream is the registry host as it appears in image references
	// (docker.io, ghcr.io, registry.k8s.io, …). It names the directory.
	Upstream string
	// ECR is the ECR registry holding the cache.
	ECR ecrhost.Host
	// Prefix is the cache's repository prefix in ECR (e.g. docker-hub):
	// docker.io/library/alpine is served as <ECR>/<Prefix>/library/alpine.
	Prefix string
	// Endpoint is where containerd really connects ("" = the ECR host).
	Endpoint string
	// CA is an optional CA bundle for Endpoint.
	CA string
	// Line is the mirror's line in the config file.
	Line int
}

// ECRHosts lists every ECR host the daemon needs a token for: the
// registries, then the mirrors' ECR hosts not already among them.
func (c *Config) ECRHosts() []ecrhost.Host {
	hs := make([]ecrhost.Host, 0, len(c.Registries)+len(c.Mirrors))
	seen := map[string]bool{}
	for _, r := range c.Registries {
		seen[r.Host.Name] = true
		hs = append(hs, r.Host)
	}
	for _, m := range c.Mirrors {
		if !seen[m.ECR.Name] {
			seen[m.ECR.Name] = true
			hs = append(hs, m.ECR)
		}
	}
	return hs
}

// Identity is the projected service-account token.
type Identity struct {
	TokenFile string
	Audience  string
}

// Containerd says where containerd reads its registry configuration.
type Containerd struct {
	CertsDir   string
	ConfigFile string
}

// Log selects the log level and format.
type Log struct {
	Level  string // debug, info, warn, error
	Format string // auto, json, console, journal
}

// Default returns the config used when every key is left out.
func Default() *Config {
	return &Config{
		Identity:       Identity{TokenFile: DefaultTokenFile, Audience: DefaultAudience},
		Containerd:     Containerd{CertsDir: DefaultCertsDir, ConfigFile: DefaultConfigFile},
		Socket:         DefaultSocket,
		Log:            Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		SocketGID:      -1,
		MetricsAddress: DefaultMetricsAddress,
	}
}

// ErrNotFound is wrapped by Load's error when the file does not exist.
var ErrNotFound = errors.New("config file not found")

// notFoundError is Load's one-sentence error for a missing file; it is
// ErrNotFound for errors.Is.
type notFoundError struct{ path string }

func (e notFoundError) Error() string {
	if e.path == DefaultPath {
		return fmt.Sprintf("config file %s not found: install the deb/rpm (which ships it) or create it, or pass --config PATH", e.path)
	}
	return fmt.Sprintf("config file %s not found: create it (the packages install a default at %s) or pass --config with an existing file", e.path, DefaultPath)
}

func (e notFoundError) Is(target error) bool { return target == ErrNotFound }

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFoundError{path}
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

// Parse validates data; name prefixes every error ("name:line: …"). The
// AWS_REGION environment variable takes part in choosing STSRegion.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	d := &decoder{name: name}
	d.decode(data, c)
	if len(d.errs) == 0 {
		d.resolveRegion(c, os.Getenv("AWS_REGION"))
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return c, nil
}

// roleARNRe is an IAM role ARN: arn:<partition>:iam::<account>:role/<path/name>.
// The name's length (at most 512) is checked apart: a bounded repeat makes
// the regexp costly to compile. The regexps of this package are compiled on
// first use, not at package init, which every exec of the kubelet plugin and
// the docker helper would pay although their fast path never reads a config.
var roleARNRe = lazyRegexp(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::([0-9]{12}):role/([\w+=,.@/-]+)$`)

const maxRoleNameLen = 512

var regionRe = lazyRegexp(`^[a-z]{2,4}(-[a-z]+)+-[0-9]+$`)

// lazyRegexp returns a function that compiles expr on its first call.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

func checkRoleARN(arn string) error {
	if m := roleARNRe().FindStringSubmatch(arn); m != nil && len(m[3]) <= maxRoleNameLen && !strings.HasSuffix(arn, "/") {
		return nil
	}
	switch {
	case !strings.HasPrefix(arn, "arn:"):
		return fmt.Errorf("%q is not an ARN; expected arn:aws:iam::<12-digit account>:role/<name>", arn)
	case !strings.Contains(arn, ":iam::"):
		return fmt.Errorf("%q is not an IAM ARN; expected arn:aws:iam::<12-digit account>:role/<name>", arn)
	case !strings.Contains(arn, ":role/"):
		return fmt.Errorf("%q is not an IAM role ARN (a user or policy cannot be assumed); expected arn:aws:iam::<12-digit account>:role/<name>", arn)
	}
	return fmt.Errorf("%q is not a valid IAM role ARN; expected arn:<partition>:iam::<12-digit account>:role/<name> with a known partition (aws, aws-cn, aws-us-gov, …)", arn)
}

func checkAbs(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("%q must be an absolute path", p)
	}
	return nil
}

// lookupGroup resolves a group name or numeric gid; a variable so tests can
// stub the system's group database.
var lookupGroup = func(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%q is not a valid gid", s)
		}
		if _, err := user.LookupGroupId(s); err != nil {
			return 0, fmt.Errorf("group id %d does not exist on this node (%v)", n, err)
		}
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("group %q does not exist on this node; create it (groupadd %s) or fix the name", s, s)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric gid %q", s, g.Gid)
	}
	return n, nil
}

// checkHostPort validates a listen address host:port (host may be empty
// for every interface, a name, or an IP; IPv6 in brackets).
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// SplitHostPort's *net.AddrError repeats the address and wraps
		// nothing: keep only its reason.
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = ae.Err
		}
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:9469, [::1]:9469, :9469): %s", s, reason)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
	}
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("%q: %q is not a host name or IP address", s, host)
	}
	return nil
}

// checkCertsDir: an absolute directory, not the root (containerd reads
// <certsDir>/<host>/hosts.toml); it may not exist yet (the first write makes it).
func checkCertsDir(p string) error {
	if err := checkAbs(p); err != nil {
		return err
	}
	if filepath.Clean(p) == "/" {
		return fmt.Errorf("%q is the filesystem root; use containerd's certs dir, e.g. %s", p, DefaultCertsDir)
	}
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return fmt.Errorf("%q is not a directory; use containerd's certs dir, e.g. %s", p, DefaultCertsDir)
	}
	return nil
}

func checkCA(p string) error {
	if err := checkAbs(p); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("CA file %s cannot be read: %w", p, errors.Unwrap(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("CA file %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("CA file %s is not a regular file", p)
	}
	// containerd would only fail the TLS handshake later, with a vaguer error.
	data, err := io.ReadAll(io.LimitReader(f, maxCABytes))
	if err != nil {
		return fmt.Errorf("CA file %s cannot be read: %w", p, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return fmt.Errorf("CA file %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", p)
	}
	return nil
}

// maxCABytes bounds how much of a CA file is read: bundles are far smaller.
const maxCABytes = 4 << 20

func (d *decoder) resolveRegion(c *Config, envRegion string) {
	switch {
	case c.AWSECR.Region != "":
		c.STSRegion, c.STSRegionFrom = c.AWSECR.Region, "awsECR.region"
	case envRegion != "":
		c.STSRegion, c.STSRegionFrom = envRegion, "AWS_REGION"
	case len(c.Registries) > 0:
		c.STSRegion, c.STSRegionFrom = c.Registries[0].Host.Region, "first registry ("+c.Registries[0].Host.Name+")"
	case len(c.Mirrors) > 0:
		c.STSRegion, c.STSRegionFrom = c.Mirrors[0].ECR.Region, "first mirror ("+c.Mirrors[0].ECR.Name+")"
	case c.PublicECR:
		c.STSRegion, c.STSRegionFrom = "us-east-1", "publicECR (ECR Public tokens come from us-east-1)"
	}
}
