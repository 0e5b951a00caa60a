package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	useast = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	euwest = "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
	cn     = "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn"
)

// writeCA writes a self-signed CA certificate (PEM) to path.
func writeCA(path string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func TestParseGood(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := writeCA(ca); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		yaml  string
		env   string // AWS_REGION
		check func(t *testing.T, c *Config)
	}{
		{
			name: "empty file gives every default",
			yaml: "",
			check: func(t *testing.T, c *Config) {
				want := Default()
				if c.Identity != want.Identity || c.Containerd != want.Containerd || c.Socket != want.Socket || c.Log != want.Log {
					t.Errorf("defaults: got %+v", c)
				}
				if c.Identity.TokenFile != "/var/run/secrets/ecr-node-auth/token" || c.Identity.Audience != "sts.amazonaws.com" ||
					c.Containerd.CertsDir != "/etc/containerd/certs.d" || c.Containerd.ConfigFile != "/etc/containerd/config.toml" ||
					c.Socket != "/run/ecr-node-auth/auth.sock" || c.Log.Level != "info" || c.Log.Format != "auto" {
					t.Errorf("defaults differ from design.md: %+v", c)
				}
				if len(c.Registries) != 0 || c.STSRegion != "" {
					t.Errorf("registries %v region %q", c.Registries, c.STSRegion)
				}
			},
		},
		{
			name: "empty registries list is valid",
			yaml: "registries: []\n",
			check: func(t *testing.T, c *Config) {
				if len(c.Registries) != 0 {
					t.Errorf("got %v", c.Registries)
				}
			},
		},
		{
			name: "full example from design.md",
			yaml: `awsECR:
  roleArn: arn:aws:iam::999999999999:role/mk8s-ecr-driver
  region: us-east-1
registries:
  - ` + useast + `
  - host: ` + euwest + `
    endpoint: https://127.0.0.1:5443
    ca: ` + ca + `
identity:
  tokenFile: /tmp/token
  audience: my-aud
containerd:
  certsDir: /tmp/certs.d
  configFile: /tmp/config.toml
socket: /tmp/auth.sock
log:
  level: debug
  format: json
`,
			check: func(t *testing.T, c *Config) {
				if c.AWSECR.RoleARN != "arn:aws:iam::999999999999:role/mk8s-ecr-driver" || c.AWSECR.RolePartition() != "aws" {
					t.Errorf("awsECR %+v", c.AWSECR)
				}
				if len(c.Registries) != 2 || c.Registries[0].Host.Name != useast || c.Registries[0].Line != 5 {
					t.Fatalf("registries %+v", c.Registries)
				}
				r := c.Registries[1]
				if r.Host.Name != euwest || r.Host.Region != "eu-west-1" || r.Endpoint != "https://127.0.0.1:5443" || r.CA != ca || r.Line != 6 {
					t.Errorf("registry 1 %+v", r)
				}
				if c.Identity.TokenFile != "/tmp/token" || c.Identity.Audience != "my-aud" || c.Containerd.CertsDir != "/tmp/certs.d" ||
					c.Containerd.ConfigFile != "/tmp/config.toml" || c.Socket != "/tmp/auth.sock" || c.Log.Level != "debug" || c.Log.Format != "json" {
					t.Errorf("got %+v", c)
				}
				if c.STSRegion != "us-east-1" || c.STSRegionFrom != "awsECR.region" {
					t.Errorf("sts region %q from %q", c.STSRegion, c.STSRegionFrom)
				}
			},
		},
		{
			name: "STS region from AWS_REGION before the registry",
			yaml: "registries: [" + euwest + "]\n",
			env:  "ap-south-1",
			check: func(t *testing.T, c *Config) {
				if c.STSRegion != "ap-south-1" || c.STSRegionFrom != "AWS_REGION" {
					t.Errorf("got %q from %q", c.STSRegion, c.STSRegionFrom)
				}
			},
		},
		{
			name: "STS region from the first registry",
			yaml: "registries: [" + euwest + ", " + useast + "]\n",
			check: func(t *testing.T, c *Config) {
				if c.STSRegion != "eu-west-1" {
					t.Errorf("got %q", c.STSRegion)
				}
			},
		},
		{
			name: "china role with china registry",
			yaml: "awsECR: {roleArn: 'arn:aws-cn:iam::111122223333:role/path/r'}\nregistries: [" + cn + "]\n",
			check: func(t *testing.T, c *Config) {
				if c.AWSECR.RolePartition() != "aws-cn" || c.Registries[0].Host.Partition != "aws-cn" {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "STS region for publicECR alone is us-east-1",
			yaml: "publicECR: true\n",
			check: func(t *testing.T, c *Config) {
				if !c.PublicECR || c.STSRegion != "us-east-1" || !strings.HasPrefix(c.STSRegionFrom, "publicECR") {
					t.Errorf("got %v %q from %q", c.PublicECR, c.STSRegion, c.STSRegionFrom)
				}
			},
		},
		{
			name: "null sections keep defaults",
			yaml: "awsECR:\nidentity:\nlog:\n  level:\n",
			check: func(t *testing.T, c *Config) {
				if c.Log.Level != "info" || c.Identity.Audience != DefaultAudience {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "mirrors",
			yaml: "registries: [" + useast + "]\nmirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub/\n  - upstream: ghcr.io\n    ecr: " + useast + "/cache/ghcr\n    endpoint: https://127.0.0.1:5443\n    ca: " + ca + "\n",
			check: func(t *testing.T, c *Config) {
				if len(c.Mirrors) != 2 {
					t.Fatalf("mirrors %+v", c.Mirrors)
				}
				m := c.Mirrors[0]
				if m.Upstream != "docker.io" || m.ECR.Name != euwest || m.ECR.Region != "eu-west-1" || m.Prefix != "docker-hub" || m.Endpoint != "" || m.Line != 3 {
					t.Errorf("mirror 0 %+v", m)
				}
				m = c.Mirrors[1]
				if m.Upstream != "ghcr.io" || m.ECR.Name != useast || m.Prefix != "cache/ghcr" || m.Endpoint != "https://127.0.0.1:5443" || m.CA != ca || m.Line != 5 {
					t.Errorf("mirror 1 %+v", m)
				}
				// The registry first, then the mirror's new host; useast only once.
				hs := c.ECRHosts()
				if len(hs) != 2 || hs[0].Name != useast || hs[1].Name != euwest {
					t.Errorf("ECRHosts %+v", hs)
				}
			},
		},
		{
			name: "STS region from the first mirror",
			yaml: "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub\n",
			check: func(t *testing.T, c *Config) {
				if c.STSRegion != "eu-west-1" || c.STSRegionFrom != "first mirror ("+euwest+")" {
					t.Errorf("got %q from %q", c.STSRegion, c.STSRegionFrom)
				}
			},
		},
		{
			name: ":443 is dropped from the host",
			yaml: "registries: ['" + useast + ":443']\n",
			check: func(t *testing.T, c *Config) {
				if c.Registries[0].Host.Name != useast {
					t.Errorf("got %q", c.Registries[0].Host.Name)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_REGION", tt.env)
			c, err := Parse("config.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

type badCase struct {
	name string
	yaml string
	want []string // every string must be in the error
}

// badCases are configs Parse must refuse; dir is an existing directory (it
// gets a ca.pem). They seed FuzzParseConfig too.
func badCases(dir string) []badCase {
	caFile := filepath.Join(dir, "ca.pem")
	if err := writeCA(caFile); err != nil {
		panic(err)
	}
	notPEM := filepath.Join(dir, "hostname")
	if err := os.WriteFile(notPEM, []byte("node-1\n"), 0o600); err != nil {
		panic(err)
	}
	return []badCase{
		{"certs dir is root", "containerd:\n  certsDir: /\n",
			[]string{`config.yaml:2: containerd.certsDir: "/" is the filesystem root`}},
		{"certs dir is a file", "containerd:\n  certsDir: " + notPEM + "\n",
			[]string{`config.yaml:2: containerd.certsDir: "` + notPEM + `" is not a directory`}},
		{"ca not PEM", "registries:\n  - host: " + useast + "\n    endpoint: https://h\n    ca: " + notPEM + "\n",
			[]string{`config.yaml:4: registries[0].ca: CA file ` + notPEM + ` holds no PEM certificate`}},
		{"unknown top key", "socket: /tmp/s\nregsitries: []\n",
			[]string{`config.yaml:2: unknown key "regsitries" (known: awsECR, containerd, identity, learnRegistries, log, metricsAddress, mirrors, publicECR, registries, socket, socketGroup)`}},
		{"unknown nested key", "awsECR:\n  roleARN: x\n",
			[]string{`config.yaml:2: unknown key "awsECR.roleARN" (known: region, roleArn)`}},
		{"mirrors not a list", "mirrors: docker.io\n",
			[]string{`config.yaml:1: mirrors: expected a list of {upstream, ecr} mappings, got the string "docker.io"`}},
		{"mirror as a string", "mirrors:\n  - docker.io\n",
			[]string{`config.yaml:2: mirrors[0]: expected a mapping {upstream, ecr, endpoint, ca}`}},
		{"mirror unknown key", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub\n    prefix: x\n",
			[]string{`config.yaml:4: unknown key "mirrors[0].prefix" (known: ca, ecr, endpoint, upstream)`}},
		{"mirror without upstream", "mirrors:\n  - ecr: " + euwest + "/docker-hub\n",
			[]string{`config.yaml:2: mirrors[0]: missing key "upstream"`}},
		{"mirror without ecr", "mirrors:\n  - upstream: docker.io\n",
			[]string{`config.yaml:2: mirrors[0]: missing key "ecr"`}},
		{"mirror upstream with scheme", "mirrors:\n  - upstream: https://docker.io\n    ecr: " + euwest + "/docker-hub\n",
			[]string{`config.yaml:2: mirrors[0].upstream: "https://docker.io": write the registry host only`}},
		{"mirror upstream index.docker.io", "mirrors:\n  - upstream: registry-1.docker.io\n    ecr: " + euwest + "/docker-hub\n",
			[]string{`config.yaml:2: mirrors[0].upstream: "registry-1.docker.io": image references name Docker Hub as docker.io`}},
		{"mirror upstream upper case", "mirrors:\n  - upstream: Docker.io\n    ecr: " + euwest + "/docker-hub\n",
			[]string{`config.yaml:2: mirrors[0].upstream: registry host "Docker.io" must be lower case`}},
		{"mirror ecr not ECR", "mirrors:\n  - upstream: docker.io\n    ecr: ghcr.io/docker-hub\n",
			[]string{`config.yaml:3: mirrors[0].ecr: invalid ECR host "ghcr.io": not an Amazon ECR registry host (expected <12-digit account>.dkr.ecr.<region>.amazonaws.com; for ECR Public set publicECR: true instead)`}},
		{"mirror ecr without prefix", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "\n",
			[]string{`config.yaml:3: mirrors[0].ecr: "` + euwest + `" has no repository prefix; add the cache rule's prefix, e.g. ` + euwest + `/docker-hub`}},
		{"mirror ecr with scheme", "mirrors:\n  - upstream: docker.io\n    ecr: https://" + euwest + "/docker-hub\n",
			[]string{`config.yaml:3: mirrors[0].ecr: "https://` + euwest + `/docker-hub": write <ECR host>/<repository prefix> without a scheme`}},
		{"mirror ecr with v2", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/v2/docker-hub\n",
			[]string{`config.yaml:3: mirrors[0].ecr: "` + euwest + `/v2/docker-hub": leave out /v2`}},
		{"mirror ecr bad prefix", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/Docker_Hub\n",
			[]string{`repository prefix "Docker_Hub" is not a valid repository name`}},
		{"mirror ecr public", "mirrors:\n  - upstream: docker.io\n    ecr: public.ecr.aws/docker-hub\n",
			[]string{`config.yaml:3: mirrors[0].ecr: "public.ecr.aws/docker-hub": a pull-through cache lives in a private ECR registry`}},
		{"mirror ca not a file", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub\n    endpoint: https://h\n    ca: " + dir + "\n",
			[]string{`config.yaml:5: mirrors[0].ca: CA file ` + dir + ` is not a regular file`}},
		{"mirror ca without endpoint", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub\n    ca: " + caFile + "\n",
			[]string{`config.yaml:2: mirrors[0]: ca is set without endpoint`}},
		{"mirror endpoint with path", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub\n    endpoint: https://h/v2/docker-hub\n",
			[]string{`config.yaml:4: mirrors[0].endpoint: "https://h/v2/docker-hub" must be https://host[:port]`}},
		{"mirror upstream twice", "mirrors:\n  - upstream: docker.io\n    ecr: " + euwest + "/docker-hub\n  - upstream: docker.io\n    ecr: " + useast + "/hub\n",
			[]string{`config.yaml:4: mirrors[1]: upstream docker.io has a mirror already (line 2)`}},
		{"mirror upstream is a registry", "registries: [" + useast + "]\nmirrors:\n  - upstream: " + useast + "\n    ecr: " + euwest + "/docker-hub\n",
			[]string{`config.yaml:3: mirrors[0]: upstream ` + useast + ` is also in registries (line 1)`}},
		{"mirror of public.ecr.aws with publicECR", "publicECR: true\nmirrors:\n  - upstream: public.ecr.aws\n    ecr: " + euwest + "/ecr-public\n",
			[]string{`config.yaml:3: mirrors[0]: upstream public.ecr.aws is also served by publicECR: true (line 1); one hosts.toml per host, so remove the mirror or set publicECR: false`}},
		{"mirror of itself", "mirrors:\n  - upstream: " + euwest + "\n    ecr: " + euwest + "/docker-hub\n",
			[]string{`config.yaml:3: mirrors[0]: upstream and ecr are the same host`}},
		{"mirror partition mismatch", "awsECR:\n  roleArn: arn:aws:iam::111122223333:role/r\nmirrors:\n  - upstream: docker.io\n    ecr: " + cn + "/docker-hub\n",
			[]string{`config.yaml:4: mirrors[0]: ECR host ` + cn + ` is in partition aws-cn but awsECR.roleArn is in partition aws`}},
		{"publicECR not bool", "publicECR: \"on\"\n",
			[]string{`config.yaml:1: publicECR: expected true or false, got the string "on"`}},
		{"public host in registries", "registries:\n  - public.ecr.aws\n",
			[]string{`config.yaml:2: registries[0]: public.ecr.aws is Amazon ECR Public, not a private registry: remove it from registries and set publicECR: true`}},
		{"dual-stack public host in registries", "registries: [{host: ecr-public.aws.com}]\n",
			[]string{`config.yaml:1: registries[0]: ecr-public.aws.com is Amazon ECR Public`}},
		{"publicECR outside the aws partition", "awsECR: {roleArn: 'arn:aws-cn:iam::111122223333:role/r'}\npublicECR: true\n",
			[]string{`config.yaml: publicECR: Amazon ECR Public exists only in the aws partition but awsECR.roleArn is in partition aws-cn`}},
		{"socketGroup unknown", "\nsocketGroup: no-such-group-xyz\n",
			[]string{`config.yaml:2: socketGroup: group "no-such-group-xyz" does not exist on this node`}},
		{"socketGroup unknown gid", "socketGroup: \"987654\"\n",
			[]string{`config.yaml:1: socketGroup: group id 987654 does not exist on this node`}},
		{"socketGroup number", "socketGroup: 0\n",
			[]string{`config.yaml:1: socketGroup: expected a string, got the number 0 (quote it if it is meant as text)`}},
		{"learnRegistries not bool", "learnRegistries: yes please\n",
			[]string{`config.yaml:1: learnRegistries: expected true or false, got the string "yes please"`}},
		{"metricsAddress no port", "metricsAddress: 127.0.0.1\n",
			[]string{`config.yaml:1: metricsAddress: "127.0.0.1" is not host:port (e.g. 127.0.0.1:9469, [::1]:9469, :9469): missing port in address`}},
		{"metricsAddress nonsense", "metricsAddress: nonsense\n",
			[]string{`config.yaml:1: metricsAddress: "nonsense" is not host:port (e.g. 127.0.0.1:9469, [::1]:9469, :9469): missing port in address`}},
		{"metricsAddress too many colons", "metricsAddress: \"::1:9100\"\n",
			[]string{`metricsAddress: "::1:9100" is not host:port (e.g. 127.0.0.1:9469, [::1]:9469, :9469): too many colons in address`}},
		{"metricsAddress bad port", "metricsAddress: 127.0.0.1:99999\n",
			[]string{`config.yaml:1: metricsAddress: "127.0.0.1:99999": port "99999" is not a number from 0 to 65535`}},
		{"repeated key", "socket: /a\nsocket: /b\n",
			[]string{`config.yaml:2: key "socket" is repeated (first at line 1)`}},
		{"wrong type: number", "identity:\n  audience: 12\n",
			[]string{`config.yaml:2: identity.audience: expected a string, got the number 12`}},
		{"wrong type: list for string", "socket: [a]\n",
			[]string{`config.yaml:1: socket: expected a string, got a list`}},
		{"wrong type: section is scalar", "log: debug\n",
			[]string{`config.yaml:1: log: expected a mapping of keys, got the string "debug"`}},
		{"registries not a list", "registries: " + useast + "\n",
			[]string{`config.yaml:1: registries: expected a list of registry hosts`}},
		{"invalid registry", "registries:\n  - " + useast + "\n  - ghcr.io\n",
			[]string{`config.yaml:3: registries[1]: invalid registry "ghcr.io": not an Amazon ECR registry host (expected <12-digit account>.dkr.ecr.<region>.amazonaws.com; for ECR Public set publicECR: true instead)`}},
		{"invalid registry empty", "registries:\n  - \"\"\n",
			[]string{`(expected <12-digit account>.dkr.ecr.<region>.amazonaws.com; for ECR Public set publicECR: true instead)`}},
		{"registry with path", "registries:\n  - " + useast + "/app\n",
			[]string{`config.yaml:2: registries[0]: "` + useast + `/app": write the registry host only`}},
		{"registry number", "registries:\n  - 5\n",
			[]string{`config.yaml:2: registries[0]: expected a registry host or a mapping {host, endpoint, ca}, got the number 5`}},
		{"duplicate registry", "registries:\n  - " + useast + "\n  - host: " + strings.ToUpper(useast[:12]) + useast[12:] + "\n",
			[]string{`config.yaml:3: registries[1]: registry ` + useast + ` is listed twice (first at line 2)`}},
		{"mapping without host", "registries:\n  - endpoint: https://x\n",
			[]string{`config.yaml:2: registries[0]: missing key "host"`}},
		{"unknown registry key", "registries:\n  - host: " + useast + "\n    ednpoint: https://x\n",
			[]string{`config.yaml:3: unknown key "registries[0].ednpoint" (known: ca, endpoint, host)`}},
		{"http endpoint", "registries:\n  - host: " + useast + "\n    endpoint: http://127.0.0.1:5000\n",
			[]string{`config.yaml:3: registries[0].endpoint: "http://127.0.0.1:5000" must be an https:// URL`}},
		{"endpoint with path", "registries:\n  - host: " + useast + "\n    endpoint: https://h/v2/x\n",
			[]string{`config.yaml:3: registries[0].endpoint: "https://h/v2/x" must be https://host[:port]`}},
		{"relative ca", "registries:\n  - host: " + useast + "\n    endpoint: https://h\n    ca: ca.pem\n",
			[]string{`config.yaml:4: registries[0].ca: "ca.pem" must be an absolute path`}},
		{"missing ca", "registries:\n  - host: " + useast + "\n    endpoint: https://h\n    ca: " + dir + "/nope.pem\n",
			[]string{`config.yaml:4: registries[0].ca: CA file ` + dir + `/nope.pem cannot be read: no such file or directory`}},
		{"ca is a directory", "registries:\n  - host: " + useast + "\n    endpoint: https://h\n    ca: " + dir + "\n",
			[]string{`config.yaml:4: registries[0].ca: CA file ` + dir + ` is not a regular file`}},
		{"role ARN of a user", "awsECR:\n  roleArn: arn:aws:iam::111122223333:user/bob\n",
			[]string{`config.yaml:2: awsECR.roleArn: "arn:aws:iam::111122223333:user/bob" is not an IAM role ARN`}},
		{"role ARN short account", "awsECR:\n  roleArn: arn:aws:iam::1111:role/r\n",
			[]string{`config.yaml:2: awsECR.roleArn: "arn:aws:iam::1111:role/r" is not a valid IAM role ARN`}},
		{"role name over 512 characters", "awsECR:\n  roleArn: arn:aws:iam::111122223333:role/" + strings.Repeat("r", 513) + "\n",
			[]string{`config.yaml:2: awsECR.roleArn: "arn:aws:iam::111122223333:role/` + strings.Repeat("r", 513) + `" is not a valid IAM role ARN`}},
		{"role ARN not an ARN", "awsECR:\n  roleArn: my-role\n",
			[]string{`config.yaml:2: awsECR.roleArn: "my-role" is not an ARN`}},
		{"partition mismatch", "awsECR:\n  roleArn: arn:aws:iam::111122223333:role/r\nregistries:\n  - " + useast + "\n  - " + cn + "\n",
			[]string{`config.yaml:5: registries[1]: registry ` + cn + ` is in partition aws-cn but awsECR.roleArn is in partition aws`}},
		{"bad region", "awsECR:\n  region: useast1\n",
			[]string{`config.yaml:2: awsECR.region: "useast1" is not an AWS region name`}},
		{"bad log level", "log:\n  level: verbose\n",
			[]string{`config.yaml:2: log.level: "verbose" is not one of debug, info, warn, error`}},
		{"bad log format", "log:\n  format: text\n",
			[]string{`config.yaml:2: log.format: "text" is not one of auto, json, console, journal`}},
		{"relative socket", "socket: auth.sock\n",
			[]string{`config.yaml:1: socket: "auth.sock" must be an absolute path`}},
		{"top level list", "- a\n",
			[]string{`config.yaml:1: config: expected a mapping of keys, got a list`}},
		{"yaml syntax", "socket: [\n",
			[]string{`config.yaml: line`}},
		{"several errors at once", "socket: x\nlog:\n  level: loud\n",
			[]string{`config.yaml:1: socket:`, `config.yaml:3: log.level:`}},
	}
}

func TestParseBad(t *testing.T) {
	for _, tt := range badCases(t.TempDir()) {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("config.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n  %v\nwant it to contain\n  %s", err, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "config.yaml")
	_, err := Load(missing)
	want := "config file " + missing + " not found: create it (the packages install a default at /etc/ecr-node-auth/config.yaml) or pass --config with an existing file"
	if !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("missing file: %v\nwant %s", err, want)
	}
	if msg := (notFoundError{DefaultPath}).Error(); strings.Count(msg, DefaultPath) != 1 || !strings.Contains(msg, "--config PATH") {
		t.Errorf("missing default file: %s", msg)
	}
	if err := os.WriteFile(missing, []byte("registries: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(missing)
	if err != nil || c.Path != missing {
		t.Fatalf("Load: %v %+v", err, c)
	}
	if err := os.WriteFile(missing, []byte("sockett: /x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(missing); err == nil || !strings.HasPrefix(err.Error(), missing+":1: unknown key") {
		t.Errorf("bad file: %v", err)
	}
}

func TestSocketAndMetricsKeys(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		group   string
		gid     int
		learn   bool
		metrics string
		public  bool
	}{
		{"defaults", "", "", -1, false, DefaultMetricsAddress, false},
		{"publicECR", "publicECR: true\n", "", -1, false, DefaultMetricsAddress, true},
		{"publicECR off", "publicECR: false\n", "", -1, false, DefaultMetricsAddress, false},
		{"group by name", "socketGroup: root\n", "root", 0, false, DefaultMetricsAddress, false},
		{"group by gid", "socketGroup: \"0\"\n", "0", 0, false, DefaultMetricsAddress, false},
		{"learn", "learnRegistries: true\n", "", -1, true, DefaultMetricsAddress, false},
		{"metrics off", "metricsAddress: \"\"\n", "", -1, false, "", false},
		{"metrics null keeps default", "metricsAddress:\n", "", -1, false, DefaultMetricsAddress, false},
		{"metrics ipv6", "metricsAddress: \"[::1]:9100\"\n", "", -1, false, "[::1]:9100", false},
		{"metrics all interfaces", "metricsAddress: \":9100\"\n", "", -1, false, ":9100", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("config.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if c.SocketGroup != tt.group || c.SocketGID != tt.gid || c.LearnRegistries != tt.learn || c.MetricsAddress != tt.metrics || c.PublicECR != tt.public {
				t.Errorf("got group=%q gid=%d learn=%v metrics=%q public=%v", c.SocketGroup, c.SocketGID, c.LearnRegistries, c.MetricsAddress, c.PublicECR)
			}
		})
	}
}

// TestParseRefusesEscapingHosts: a registry name that could leave the certs dir as a
// directory name (or read as another name) is refused wherever a host enters the
// config, with the field and line, before the daemon would touch a file.
func TestParseRefusesEscapingHosts(t *testing.T) {
	tests := []struct {
		name     string
		host     string
		registry string // substring of the error for registries[0]
		upstream string // ... for mirrors[0].upstream
	}{
		{"dotdot", "..", `contains ".."`, "empty label"},
		{"dot", ".", "trailing dot", "empty label"},
		{"traversal", "../etc", "write the registry host only", "write the registry host only"},
		{"absolute path", "/etc/containerd", "write the registry host only", "write the registry host only"},
		{"backslashes", `..\..\etc`, "backslash", `contains "\\"`},
		{"nul", "docker.io\x00x", "control character", `contains "\x00"`},
		{"one-dot leader", "\u2024\u2024", "non-ASCII character U+2024", "non-ASCII character"},
		{"fullwidth solidus", "docker\uff0fio", "non-ASCII character U+FF0F", "non-ASCII character"},
		{"rtl override", "\u202edocker.io", "non-ASCII character U+202E", "non-ASCII character"},
		{"zero-width joiner", "docker\u200d.io", "non-ASCII character U+200D", "non-ASCII character"},
		{"percent-encoded dots", "%2e%2e", "character '%' is not allowed", `contains "%"`},
		{"percent-encoded dot", "docker%2eio", "character '%' is not allowed", `contains "%"`},
		{"tilde", "~root", "not allowed", `contains "~"`},
	}
	for _, tt := range tests {
		q := strconv.Quote(tt.host) // a YAML double-quoted scalar
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct{ where, yaml, field, reason string }{
				{"registries scalar", "registries:\n  - " + q + "\n", "config.yaml:2: registries[0]", tt.registry},
				{"registries host", "registries:\n  - host: " + q + "\n", "config.yaml:2: registries[0]", tt.registry},
				{"mirrors upstream", "mirrors:\n  - upstream: " + q + "\n    ecr: " + euwest + "/docker-hub\n", "config.yaml:2: mirrors[0].upstream: ", tt.upstream},
				{"mirrors ecr", "mirrors:\n  - upstream: docker.io\n    ecr: " + strconv.Quote(tt.host+"/docker-hub") + "\n", "config.yaml:3: mirrors[0].ecr: ", ""},
			} {
				cfg, err := Parse("config.yaml", []byte(c.yaml))
				if err == nil {
					t.Errorf("%s: accepted %q: %+v", c.where, tt.host, cfg)
					continue
				}
				if !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), c.reason) {
					t.Errorf("%s: error\n  %v\nwant it to name %q and say %q", c.where, err, c.field, c.reason)
				}
			}
		})
	}
}
