package config

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// FuzzParseConfig: Parse never panics; every error names the file (and a
// line where there is one); an accepted config holds only valid values,
// and written back out as YAML it parses to the same config.
func FuzzParseConfig(f *testing.F) {
	f.Setenv("AWS_REGION", "") // the region must come from the file
	for _, c := range badCases(f.TempDir()) {
		f.Add([]byte(c.yaml))
	}
	for _, s := range []string{
		"",
		"registries: []\n",
		"awsECR:\n  roleArn: arn:aws:iam::999999999999:role/mk8s-ecr-driver\n  region: us-east-1\nregistries:\n  - " + useast + "\n  - " + euwest + "\n" +
			"identity:\n  tokenFile: /var/run/secrets/ecr-node-auth/token\n  audience: sts.amazonaws.com\ncontainerd:\n  certsDir: /etc/containerd/certs.d\n" +
			"socket: /run/ecr-node-auth/auth.sock\nlog:\n  level: debug\n  format: json\n",
		"registries:\n  - host: " + useast + "\n    endpoint: https://127.0.0.1:5000\n",
		"registries:\n  - " + cn + "\nlearnRegistries: true\nmetricsAddress: \"\"\n",
		"socketGroup: root\nmetricsAddress: '[::1]:9469'\n",
		"awsECR: ~\nlog: {level: warn}\nregistries: [" + strings.ToUpper(useast) + "]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config with its error %v", err)
			}
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "fuzz.yaml:") {
					t.Fatalf("error does not name the file: %q", e)
				}
			}
			return
		}
		checkValid(t, c)
		out := render(t, c)
		again, err := Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("accepted config, written back as\n%s\nis refused: %v", out, err)
		}
		if a, b := withoutLines(c), withoutLines(again); !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip through\n%s\nchanged the config:\n %+v\n %+v", out, a, b)
		}
	})
}

func checkValid(t *testing.T, c *Config) {
	t.Helper()
	for _, p := range []string{c.Identity.TokenFile, c.Containerd.CertsDir, c.Containerd.ConfigFile, c.Socket} {
		if !filepath.IsAbs(p) {
			t.Fatalf("accepted a relative path %q", p)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) ||
		!slices.Contains([]string{"auto", "json", "console", "journal"}, c.Log.Format) {
		t.Fatalf("accepted log %+v", c.Log)
	}
	seen := map[string]bool{}
	for _, r := range c.Registries {
		if h, err := ecrhost.Parse(r.Host.Name); err != nil || h != r.Host {
			t.Fatalf("registry %+v does not re-parse to itself: %+v, %v", r.Host, h, err)
		}
		if seen[r.Host.Name] {
			t.Fatalf("registry %s accepted twice", r.Host.Name)
		}
		seen[r.Host.Name] = true
		if p := c.AWSECR.RolePartition(); p != "" && r.Host.Partition != p {
			t.Fatalf("registry %s in partition %s accepted with a role in %s", r.Host.Name, r.Host.Partition, p)
		}
		if r.CA != "" && r.Endpoint == "" {
			t.Fatalf("registry %s: ca without endpoint accepted", r.Host.Name)
		}
	}
	for _, m := range c.Mirrors {
		if h, err := ecrhost.Parse(m.ECR.Name); err != nil || h != m.ECR || m.Prefix == "" {
			t.Fatalf("mirror %+v: its ECR host does not re-parse (%v) or it has no prefix", m, err)
		}
		if seen[m.Upstream] || m.Upstream == m.ECR.Name {
			t.Fatalf("mirror upstream %s accepted twice, beside a registry, or as its own cache", m.Upstream)
		}
		seen[m.Upstream] = true
	}
	if c.AWSECR.RoleARN != "" && c.AWSECR.RolePartition() == "" {
		t.Fatalf("accepted role ARN %q without a partition", c.AWSECR.RoleARN)
	}
	if c.STSRegion == "" && (c.AWSECR.Region != "" || len(c.Registries) > 0) {
		t.Fatalf("no STS region for %+v", c)
	}
}

// render writes c in the documented schema.
func render(t *testing.T, c *Config) []byte {
	t.Helper()
	doc := map[string]any{
		"identity":        map[string]string{"tokenFile": c.Identity.TokenFile, "audience": c.Identity.Audience},
		"containerd":      map[string]string{"certsDir": c.Containerd.CertsDir, "configFile": c.Containerd.ConfigFile},
		"socket":          c.Socket,
		"log":             map[string]string{"level": c.Log.Level, "format": c.Log.Format},
		"learnRegistries": c.LearnRegistries,
		"metricsAddress":  c.MetricsAddress,
	}
	ecr := map[string]string{}
	if c.AWSECR.RoleARN != "" {
		ecr["roleArn"] = c.AWSECR.RoleARN
	}
	if c.AWSECR.Region != "" {
		ecr["region"] = c.AWSECR.Region
	}
	doc["awsECR"] = ecr
	if c.SocketGroup != "" {
		doc["socketGroup"] = c.SocketGroup
	}
	regs := []any{}
	for _, r := range c.Registries {
		if r.Endpoint == "" {
			regs = append(regs, r.Host.Name)
			continue
		}
		m := map[string]string{"host": r.Host.Name, "endpoint": r.Endpoint}
		if r.CA != "" {
			m["ca"] = r.CA
		}
		regs = append(regs, m)
	}
	doc["registries"] = regs
	if len(c.Mirrors) > 0 {
		var ms []any
		for _, m := range c.Mirrors {
			e := map[string]string{"upstream": m.Upstream, "ecr": m.ECR.Name + "/" + m.Prefix}
			if m.Endpoint != "" {
				e["endpoint"] = m.Endpoint
			}
			if m.CA != "" {
				e["ca"] = m.CA
			}
			ms = append(ms, e)
		}
		doc["mirrors"] = ms
	}
	if c.PublicECR {
		doc["publicECR"] = true
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func withoutLines(c *Config) Config {
	out := *c
	out.Registries = nil
	for _, r := range c.Registries {
		r.Line = 0
		out.Registries = append(out.Registries, r)
	}
	out.Mirrors = nil
	for _, m := range c.Mirrors {
		m.Line = 0
		out.Mirrors = append(out.Mirrors, m)
	}
	return out
}
