package config

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"go.yaml.in/yaml/v3"
)

// decoder walks the yaml.Node tree so that every error carries a line.
type decoder struct {
	name string
	errs []error
	// publicLine is the line of publicECR: true (0 when not set), for the
	// mirror check that needs it.
	publicLine int
}

func (d *decoder) errf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s", d.name, n.Line, fmt.Sprintf(format, args...)))
}

func (d *decoder) decode(data []byte, c *Config) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// yaml.v3 errors read "yaml: line 3: …"; keep the file name in front.
		d.errs = append(d.errs, fmt.Errorf("%s: %s", d.name, strings.TrimPrefix(err.Error(), "yaml: ")))
		return
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return // an empty file: every default
	}
	root := doc.Content[0]
	if root.Tag == "!!null" {
		return
	}
	d.mapping(root, "", map[string]func(*yaml.Node){
		"awsECR": func(n *yaml.Node) {
			d.mapping(n, "awsECR", map[string]func(*yaml.Node){
				"roleArn": d.str("awsECR.roleArn", &c.AWSECR.RoleARN, checkRoleARN),
				"region":  d.str("awsECR.region", &c.AWSECR.Region, checkRegion),
			})
		},
		"registries": func(n *yaml.Node) { d.registries(n, c) },
		"mirrors":    func(n *yaml.Node) { d.mirrors(n, c) },
		"identity": func(n *yaml.Node) {
			d.mapping(n, "identity", map[string]func(*yaml.Node){
				"tokenFile": d.str("identity.tokenFile", &c.Identity.TokenFile, checkAbs),
				"audience":  d.str("identity.audience", &c.Identity.Audience, nil),
			})
		},
		"containerd": func(n *yaml.Node) {
			d.mapping(n, "containerd", map[string]func(*yaml.Node){
				"certsDir":   d.str("containerd.certsDir", &c.Containerd.CertsDir, checkCertsDir),
				"configFile": d.str("containerd.configFile", &c.Containerd.ConfigFile, checkAbs),
			})
		},
		"socket": d.str("socket", &c.Socket, checkAbs),
		"socketGroup": func(n *yaml.Node) {
			d.str("socketGroup", &c.SocketGroup, nil)(n)
			if c.SocketGroup == "" {
				return
			}
			gid, err := lookupGroup(c.SocketGroup)
			if err != nil {
				d.errf(n, "socketGroup: %v", err)
				c.SocketGroup = ""
				return
			}
			c.SocketGID = gid
		},
		"learnRegistries": d.boolean("learnRegistries", &c.LearnRegistries),
		"publicECR": func(n *yaml.Node) {
			d.boolean("publicECR", &c.PublicECR)(n)
			if c.PublicECR {
				d.publicLine = n.Line
			}
		},
		"metricsAddress": func(n *yaml.Node) {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && n.Value == "" {
				c.MetricsAddress = "" // an explicit "" turns the server off
				return
			}
			d.str("metricsAddress", &c.MetricsAddress, checkHostPort)(n)
		},
		"log": func(n *yaml.Node) {
			d.mapping(n, "log", map[string]func(*yaml.Node){
				"level":  d.str("log.level", &c.Log.Level, oneOf("debug", "info", "warn", "error")),
				"format": d.str("log.format", &c.Log.Format, oneOf("auto", "json", "console", "journal")),
			})
		},
	})
	d.checkMirrors(c)
	d.checkPartitions(c)
}

// mapping calls fields[key] for each key of n, refusing unknown and repeated
// keys. A null section keeps its defaults.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]func(*yaml.Node)) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errf(n, "%s: expected a mapping of keys, got %s", orTop(path), describe(n))
		return
	}
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		full := k.Value
		if path != "" {
			full = path + "." + k.Value
		}
		if line, dup := seen[k.Value]; dup {
			d.errf(k, "key %q is repeated (first at line %d)", full, line)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		switch {
		case ok:
			f(v)
		default:
			d.errf(k, "unknown key %q (known: %s)", full, strings.Join(known, ", "))
		}
	}
}

// str returns a field decoder for a string; check (if any) validates a
// non-empty value. A null or empty value keeps the default.
func (d *decoder) str(path string, dst *string, check func(string) error) func(*yaml.Node) {
	return func(n *yaml.Node) {
		if n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			d.errf(n, "%s: expected a string, got %s", path, describe(n))
			return
		}
		if n.Value == "" {
			return
		}
		if check != nil {
			if err := check(n.Value); err != nil {
				d.errf(n, "%s: %v", path, err)
				return
			}
		}
		*dst = n.Value
	}
}

// boolean returns a field decoder for a YAML boolean (true/false); null
// keeps the default.
func (d *decoder) boolean(path string, dst *bool) func(*yaml.Node) {
	return func(n *yaml.Node) {
		if n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.errf(n, "%s: expected true or false, got %s", path, describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.errf(n, "%s: %v", path, err)
			return
		}
		*dst = b
	}
}

func (d *decoder) registries(n *yaml.Node, c *Config) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, "registries: expected a list of registry hosts, got %s", describe(n))
		return
	}
	first := map[string]int{}
	for i, item := range n.Content {
		path := fmt.Sprintf("registries[%d]", i)
		r, ok := d.registry(item, path)
		if !ok {
			continue
		}
		if line, dup := first[r.Host.Name]; dup {
			d.errf(item, "%s: registry %s is listed twice (first at line %d)", path, r.Host.Name, line)
			continue
		}
		first[r.Host.Name] = r.Line
		c.Registries = append(c.Registries, r)
	}
}

// registry reads a host string or a {host, endpoint, ca} mapping.
func (d *decoder) registry(n *yaml.Node, path string) (Registry, bool) {
	r := Registry{Line: n.Line}
	var host string
	hostNode := n
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!str":
		host = n.Value
	case n.Kind == yaml.MappingNode:
		nerr := len(d.errs)
		d.mapping(n, path, map[string]func(*yaml.Node){
			"host":     func(v *yaml.Node) { hostNode = v; d.str(path+".host", &host, nil)(v) },
			"endpoint": d.str(path+".endpoint", &r.Endpoint, checkEndpoint),
			"ca":       d.str(path+".ca", &r.CA, checkCA),
		})
		if len(d.errs) > nerr {
			return r, false
		}
		if host == "" {
			d.errf(n, "%s: missing key \"host\" (the ECR registry host)", path)
			return r, false
		}
		if r.CA != "" && r.Endpoint == "" {
			d.errf(n, "%s: ca is set without endpoint; ca is the CA of the endpoint", path)
			return r, false
		}
	default:
		d.errf(n, "%s: expected a registry host or a mapping {host, endpoint, ca}, got %s", path, describe(n))
		return r, false
	}
	if strings.Contains(host, "/") {
		d.errf(hostNode, "%s: %q: write the registry host only (no scheme, path or repository), e.g. 111122223333.dkr.ecr.us-east-1.amazonaws.com", path, host)
		return r, false
	}
	h, err := ecrhost.Parse(host)
	if err != nil {
		d.errf(hostNode, "%s: invalid registry %v", path, privateOnly(err))
		return r, false
	}
	if h.Public {
		d.errf(hostNode, "%s: %s is Amazon ECR Public, not a private registry: remove it from registries and set publicECR: true", path, h.Name)
		return r, false
	}
	r.Host = h
	return r, true
}

// checkPartitions refuses registries outside the role's partition: the
// credentials of one partition are never valid in another.
func (d *decoder) checkPartitions(c *Config) {
	p := c.AWSECR.RolePartition()
	if p == "" {
		return
	}
	if c.PublicECR && p != "aws" {
		d.errs = append(d.errs, fmt.Errorf("%s: publicECR: Amazon ECR Public exists only in the aws partition but awsECR.roleArn is in partition %s; set publicECR: false (public images still pull anonymously)",
			d.name, p))
	}
	for i, r := range c.Registries {
		if r.Host.Partition != p {
			d.errs = append(d.errs, fmt.Errorf("%s:%d: registries[%d]: registry %s is in partition %s but awsECR.roleArn is in partition %s; credentials of one partition never work in another (use one daemon config per partition)",
				d.name, r.Line, i, r.Host.Name, r.Host.Partition, p))
		}
	}
	for i, m := range c.Mirrors {
		if m.ECR.Partition != p {
			d.errs = append(d.errs, fmt.Errorf("%s:%d: mirrors[%d]: ECR host %s is in partition %s but awsECR.roleArn is in partition %s; credentials of one partition never work in another",
				d.name, m.Line, i, m.ECR.Name, m.ECR.Partition, p))
		}
	}
}

// mirrors reads the list of {upstream, ecr, endpoint, ca} mappings.
func (d *decoder) mirrors(n *yaml.Node, c *Config) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, "mirrors: expected a list of {upstream, ecr} mappings, got %s", describe(n))
		return
	}
	first := map[string]int{}
	for i, item := range n.Content {
		path := fmt.Sprintf("mirrors[%d]", i)
		m, ok := d.mirror(item, path)
		if !ok {
			continue
		}
		if line, dup := first[m.Upstream]; dup {
			d.errf(item, "%s: upstream %s has a mirror already (line %d); containerd reads one hosts.toml per registry", path, m.Upstream, line)
			continue
		}
		first[m.Upstream] = m.Line
		c.Mirrors = append(c.Mirrors, m)
	}
}

func (d *decoder) mirror(n *yaml.Node, path string) (Mirror, bool) {
	m := Mirror{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		d.errf(n, "%s: expected a mapping {upstream, ecr, endpoint, ca}, got %s", path, describe(n))
		return m, false
	}
	var ecr string
	ecrNode := n
	nerr := len(d.errs)
	d.mapping(n, path, map[string]func(*yaml.Node){
		"upstream": d.str(path+".upstream", &m.Upstream, checkUpstream),
		"ecr":      func(v *yaml.Node) { ecrNode = v; d.str(path+".ecr", &ecr, nil)(v) },
		"endpoint": d.str(path+".endpoint", &m.Endpoint, checkEndpoint),
		"ca":       d.str(path+".ca", &m.CA, checkCA),
	})
	if len(d.errs) > nerr {
		return m, false
	}
	switch {
	case m.Upstream == "":
		d.errf(n, "%s: missing key \"upstream\" (the registry the cache serves, e.g. docker.io)", path)
		return m, false
	case ecr == "":
		d.errf(n, "%s: missing key \"ecr\" (the cache as <ECR host>/<repository prefix>, e.g. 111122223333.dkr.ecr.eu-west-1.amazonaws.com/docker-hub)", path)
		return m, false
	case m.CA != "" && m.Endpoint == "":
		d.errf(n, "%s: ca is set without endpoint; ca is the CA of the endpoint", path)
		return m, false
	}
	h, prefix, err := parseMirrorECR(ecr)
	if err != nil {
		d.errf(ecrNode, "%s.ecr: %v", path, err)
		return m, false
	}
	if h.Name == m.Upstream {
		d.errf(ecrNode, "%s: upstream and ecr are the same host %s; a mirror serves another registry (list ECR hosts under registries)", path, h.Name)
		return m, false
	}
	m.ECR, m.Prefix = h, prefix
	return m, true
}

// privateExpected replaces ecrhost.Expected where only private registries
// are accepted (registries, mirrors[].ecr): public.ecr.aws is refused there.
const privateExpected = "expected <12-digit account>.dkr.ecr.<region>.amazonaws.com; for ECR Public set publicECR: true instead"

// privateOnly is err's text with the private form only.
func privateOnly(err error) string {
	return strings.ReplaceAll(err.Error(), ecrhost.Expected, privateExpected)
}

// checkUpstream accepts a registry host as written in image references.
// containerd looks up certs.d/<host> by that name, so it must be exact.
func checkUpstream(s string) error {
	if strings.Contains(s, "://") || strings.Contains(s, "/") {
		return fmt.Errorf("%q: write the registry host only (no scheme or path), e.g. docker.io", s)
	}
	if s == "index.docker.io" || s == "registry-1.docker.io" {
		return fmt.Errorf("%q: image references name Docker Hub as docker.io; write upstream: docker.io", s)
	}
	return cri.ValidateHost(s)
}

// parseMirrorECR splits "<ECR host>/<prefix>".
func parseMirrorECR(s string) (ecrhost.Host, string, error) {
	if strings.Contains(s, "://") {
		return ecrhost.Host{}, "", fmt.Errorf("%q: write <ECR host>/<repository prefix> without a scheme, e.g. 111122223333.dkr.ecr.eu-west-1.amazonaws.com/docker-hub", s)
	}
	host, prefix, _ := strings.Cut(s, "/")
	prefix = strings.TrimSuffix(prefix, "/")
	h, err := ecrhost.Parse(host)
	if err != nil {
		return ecrhost.Host{}, "", fmt.Errorf("invalid ECR host %v", privateOnly(err))
	}
	if h.Public {
		return ecrhost.Host{}, "", fmt.Errorf("%q: a pull-through cache lives in a private ECR registry (<account>.dkr.ecr.<region>.amazonaws.com), not in ECR Public", s)
	}
	switch {
	case prefix == "":
		return ecrhost.Host{}, "", fmt.Errorf("%q has no repository prefix; add the cache rule's prefix, e.g. %s/docker-hub", s, h.Name)
	case strings.HasPrefix(prefix, "v2/") || prefix == "v2":
		return ecrhost.Host{}, "", fmt.Errorf("%q: leave out /v2; write <ECR host>/<repository prefix>, e.g. %s/docker-hub", s, h.Name)
	case !cri.IsRepositoryName(prefix):
		return ecrhost.Host{}, "", fmt.Errorf("%q: repository prefix %q is not a valid repository name (lower-case letters, digits, '.', '_', '-', components separated by '/')", s, prefix)
	}
	return h, prefix, nil
}

// checkMirrors refuses a mirror whose upstream is also a configured
// registry, or public.ecr.aws with publicECR: both would need the same
// certs.d/<host>/hosts.toml.
func (d *decoder) checkMirrors(c *Config) {
	regs := map[string]int{}
	for _, r := range c.Registries {
		regs[r.Host.Name] = r.Line
	}
	for i, m := range c.Mirrors {
		if line, ok := regs[m.Upstream]; ok {
			d.errs = append(d.errs, fmt.Errorf("%s:%d: mirrors[%d]: upstream %s is also in registries (line %d); one hosts.toml per host, so remove one of them",
				d.name, m.Line, i, m.Upstream, line))
		}
		if c.PublicECR && m.Upstream == ecrhost.PublicHost {
			d.errs = append(d.errs, fmt.Errorf("%s:%d: mirrors[%d]: upstream %s is also served by publicECR: true (line %d); one hosts.toml per host, so remove the mirror or set publicECR: false",
				d.name, m.Line, i, m.Upstream, d.publicLine))
		}
	}
}

func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "https":
		return fmt.Errorf("%q must be an https:// URL", s)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return fmt.Errorf("%q must be https://host[:port] with no user, path, query or fragment", s)
	}
	return nil
}

func checkRegion(s string) error {
	if !regionRe().MatchString(s) {
		return fmt.Errorf("%q is not an AWS region name (e.g. us-east-1)", s)
	}
	return nil
}

func oneOf(values ...string) func(string) error {
	return func(s string) error {
		for _, v := range values {
			if s == v {
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", s, strings.Join(values, ", "))
	}
}

func orTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

// describe names a node's type for an error; the value of a scalar is shown
// because config values are never secret.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!int":
		return fmt.Sprintf("the number %s (quote it if it is meant as text)", n.Value)
	case "!!float":
		return fmt.Sprintf("the number %s", n.Value)
	case "!!bool":
		return fmt.Sprintf("the boolean %s", n.Value)
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	}
	return fmt.Sprintf("%s %q", n.Tag, n.Value)
}
