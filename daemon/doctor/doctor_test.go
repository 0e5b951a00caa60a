package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	testRole = fakeaws.DefaultRoleARN
	hostUSE1 = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	hostEUW1 = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
)

// node is one test's node: a fake AWS with the SDK pointed at it, and temp
// dirs for the token, the certs dir and containerd's config.
type node struct {
	t         *testing.T
	fake      *fakeaws.Fake
	dir       string
	tokenFile string
	certsDir  string
	ctrConfig string
	endpoint  string // the registries' endpoint (hosts.toml server)

	roleARN    string // "" = default chain
	region     string // awsECR.region ("" = not set)
	audience   string
	registries []string
	extra      string // appended to the config
}

func newNode(t *testing.T, opts fakeaws.Options) *node {
	t.Helper()
	f, err := fakeaws.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	dir := t.TempDir()
	f.UseOnly(t)
	t.Setenv("ECR_NODE_AUTH_SOCKET", "")
	n := &node{t: t, fake: f, dir: dir,
		tokenFile: filepath.Join(dir, "token"), certsDir: filepath.Join(dir, "certs.d"), ctrConfig: filepath.Join(dir, "containerd.toml"),
		endpoint: "https://127.0.0.1:5443", roleARN: testRole, region: "us-east-1", audience: fakeaws.DefaultAudience, registries: []string{hostUSE1}}
	if err := os.Mkdir(n.certsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.writeToken(f.MintToken(fakeaws.TokenSpec{}))
	n.writeContainerd(fmt.Sprintf("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", n.certsDir))
	return n
}

func (n *node) writeToken(tok string) {
	n.t.Helper()
	if err := os.WriteFile(n.tokenFile, []byte(tok), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) writeContainerd(content string) {
	n.t.Helper()
	if err := os.WriteFile(n.ctrConfig, []byte(content), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// writeHosts writes every registry's hosts.toml as the daemon does.
func (n *node) writeHosts() {
	n.t.Helper()
	w := cri.NewWriter(n.certsDir, nil)
	for _, h := range n.registries {
		if _, err := w.Write(cri.HostConfig{Host: h, Endpoint: n.endpoint, Authorization: "Basic QVdTOnNlY3JldC1lY3ItcGFzc3dvcmQ="}); err != nil {
			n.t.Fatal(err)
		}
	}
}

func (n *node) hostsPath(h string) string { return cri.NewWriter(n.certsDir, nil).Path(h) }

func (n *node) configFile() string {
	n.t.Helper()
	var b strings.Builder
	b.WriteString("awsECR:\n")
	if n.roleARN != "" {
		fmt.Fprintf(&b, "  roleArn: %q\n", n.roleARN)
	}
	if n.region != "" {
		fmt.Fprintf(&b, "  region: %q\n", n.region)
	}
	b.WriteString("registries:\n")
	for _, h := range n.registries {
		fmt.Fprintf(&b, "  - host: %q\n    endpoint: %q\n", h, n.endpoint)
	}
	fmt.Fprintf(&b, "identity:\n  tokenFile: %q\n  audience: %q\n", n.tokenFile, n.audience)
	fmt.Fprintf(&b, "containerd:\n  certsDir: %q\n  configFile: %q\n", n.certsDir, n.ctrConfig)
	fmt.Fprintf(&b, "socket: %q\nmetricsAddress: \"\"\n", filepath.Join(n.dir, "no-daemon.sock"))
	b.WriteString(n.extra)
	p := filepath.Join(n.dir, "config.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		n.t.Fatal(err)
	}
	return p
}

func (n *node) run() []Result {
	n.t.Helper()
	rs := Run(context.Background(), Options{ConfigPath: n.configFile(), CRISocket: filepath.Join(n.dir, "no-containerd.sock"), Timeout: 5 * time.Second})
	js, err := json.Marshal(rs)
	if err != nil {
		n.t.Fatal(err)
	}
	for _, s := range append(n.fake.Secrets(), "QVdTOnNlY3JldC1lY3ItcGFzc3dvcmQ=", "secret-ecr-password") {
		if len(s) >= 16 && strings.Contains(string(js), s) {
			n.t.Errorf("doctor output holds a secret (%.8s…)", s)
		}
	}
	for _, r := range rs {
		if r.Status == Fail && r.Fix == "" {
			n.t.Errorf("%s fails without a fix: %s", r.Name, r.Detail)
		}
		if r.OK != (r.Status != Fail) {
			n.t.Errorf("%s: ok=%v with status %s", r.Name, r.OK, r.Status)
		}
	}
	return rs
}

// want is what one named check must report.
type want struct {
	name   string
	status Status
	detail string // substring
	fix    string // substring
}

func TestRun(t *testing.T) {
	tests := []struct {
		name    string
		opts    fakeaws.Options
		prepare func(n *node)
		want    []want
		failed  bool
	}{
		{
			name: "healthy node but no containerd",
			want: []want{
				{name: "config", status: OK, detail: ": 1 registry, web identity for " + testRole},
				{name: "token file", status: OK, detail: "aud=sts.amazonaws.com sub=system:serviceaccount:"},
				{name: "aws identity", status: OK, detail: "assumed " + testRole + " with web identity at http://127.0.0.1:"},
				{name: "ecr us-east-1", status: OK, detail: "GetAuthorizationToken at http://127.0.0.1:"},
				{name: "certs dir", status: OK, detail: "is writable"},
				{name: "hosts.toml " + hostUSE1, status: OK, detail: "Authorization header present (not shown)"},
				{name: "daemon", status: Warn, detail: "no daemon answers", fix: "systemctl start ecr-node-auth"},
				{name: "containerd config", status: OK, detail: "config_path"},
				{name: "cri", status: Fail, detail: "no-containerd.sock", fix: "start containerd"},
			},
			failed: true,
		},
		{
			name:    "invalid config skips the rest",
			prepare: func(n *node) { n.extra = "bogusKey: 1\n" },
			want: []want{
				{name: "config", status: Fail, detail: "bogusKey", fix: "fix each key named above"},
				{name: "token file", status: Skip},
				{name: "cri", status: Skip},
			},
			failed: true,
		},
		{
			name: "wrong audience names both and the fix",
			prepare: func(n *node) {
				n.writeToken(n.fake.MintToken(fakeaws.TokenSpec{Audience: []string{"kubernetes.default.svc"}}))
			},
			want: []want{
				{name: "token file", status: Fail, detail: `token's aud is kubernetes.default.svc, the configured identity.audience is "sts.amazonaws.com"`,
					fix: `set the projected token's audience to "sts.amazonaws.com"`},
				{name: "aws identity", status: Skip, detail: "token file is unusable"},
				{name: "ecr us-east-1", status: Skip},
			},
			failed: true,
		},
		{
			name: "expired token",
			prepare: func(n *node) {
				now := time.Now()
				n.writeToken(n.fake.MintToken(fakeaws.TokenSpec{IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}))
			},
			want: []want{
				{name: "token file", status: Fail, detail: "token expired at", fix: "the kubelet has not rotated the token"},
				{name: "aws identity", status: Skip},
			},
			failed: true,
		},
		{
			name:    "missing token file",
			prepare: func(n *node) { os.Remove(n.tokenFile) },
			want:    []want{{name: "token file", status: Fail, detail: "does not exist", fix: "mount the projected service-account token volume"}},
			failed:  true,
		},
		{
			name:    "malformed token",
			prepare: func(n *node) { n.writeToken("not-a-jwt") },
			want:    []want{{name: "token file", status: Fail, detail: "malformed", fix: "exactly one JWT"}},
			failed:  true,
		},
		{
			name: "STS rejects the role",
			opts: fakeaws.Options{AllowedRoleARNs: []string{"arn:aws:iam::111122223333:role/other"}},
			want: []want{
				{name: "aws identity", status: Fail, detail: "AssumeRoleWithWebIdentity for " + testRole, fix: "ecr-node-auth trust-policy"},
				{name: "ecr us-east-1", status: Skip, detail: "no AWS credentials"},
			},
			failed: true,
		},
		{
			name: "ECR denies GetAuthorizationToken, per region",
			prepare: func(n *node) {
				n.registries = []string{hostUSE1, hostEUW1}
				n.fake.InjectErrorAlways(fakeaws.ActionGetAuthorizationToken, fakeaws.APIError{Code: "AccessDeniedException", Message: "not authorized to perform ecr:GetAuthorizationToken"})
			},
			want: []want{
				{name: "aws identity", status: OK},
				{name: "ecr us-east-1", status: Fail, detail: "for " + hostUSE1, fix: "allow ecr:GetAuthorizationToken to " + testRole},
				{name: "ecr eu-west-1", status: Fail, detail: "for " + hostEUW1, fix: "AmazonEC2ContainerRegistryReadOnly"},
			},
			failed: true,
		},
		{
			name: "default chain: no token file, static credentials",
			prepare: func(n *node) {
				n.roleARN = ""
				n.fake.AddStaticCredentials("AKIDDOCTORTEST", "doctor-secret-access-key", "", time.Time{})
				n.t.Setenv("AWS_ACCESS_KEY_ID", "AKIDDOCTORTEST")
				n.t.Setenv("AWS_SECRET_ACCESS_KEY", "doctor-secret-access-key")
			},
			want: []want{
				{name: "token file", status: Skip, detail: "no awsECR.roleArn"},
				{name: "aws identity", status: OK, detail: "default AWS credential chain: credentials from EnvConfigCredentials"},
				{name: "ecr us-east-1", status: OK},
			},
			failed: true, // no containerd
		},
		{
			name: "default chain without credentials",
			prepare: func(n *node) {
				n.roleARN = ""
			},
			want:   []want{{name: "aws identity", status: Fail, detail: "found no credentials", fix: "set awsECR.roleArn"}},
			failed: true,
		},
		{
			name: "no STS region and no registries",
			prepare: func(n *node) {
				n.region, n.registries = "", nil
			},
			want: []want{
				{name: "config", status: OK, detail: "STS region unset"},
				{name: "aws identity", status: Fail, detail: "no STS region", fix: "set awsECR.region"},
				{name: "ecr", status: Skip, detail: "no registries configured"},
			},
			failed: true,
		},
		{
			name:    "certs dir missing",
			prepare: func(n *node) { os.RemoveAll(n.certsDir) },
			want: []want{
				{name: "certs dir", status: Fail, detail: "does not exist", fix: "`mkdir -p CERTS` (the deb and rpm packages create /etc/containerd/certs.d)"},
				{name: "hosts.toml " + hostUSE1, status: Fail, detail: "is missing"},
			},
			failed: true,
		},
		{
			name: "a file where the certs dir should be",
			prepare: func(n *node) {
				os.RemoveAll(n.certsDir)
				if err := os.WriteFile(n.certsDir, nil, 0o600); err != nil {
					n.t.Fatal(err)
				}
			},
			// The config refuses it at load, so doctor names it on its first line.
			want:   []want{{name: "config", status: Fail, detail: "containerd.certsDir", fix: "fix each key named above"}},
			failed: true,
		},
		{
			name: "hosts.toml without the marker",
			prepare: func(n *node) {
				p := n.hostsPath(hostUSE1)
				b, _ := os.ReadFile(p)
				os.WriteFile(p, []byte(strings.TrimPrefix(string(b), cri.Marker+"\n")), 0o600)
			},
			want:   []want{{name: "hosts.toml " + hostUSE1, status: Fail, detail: "has no ecr-node-auth marker line", fix: "move it away"}},
			failed: true,
		},
		{
			name: "hosts.toml without the header",
			prepare: func(n *node) {
				content := cri.Marker + "\nserver = \"" + n.endpoint + "\"\n\n[host.\"" + n.endpoint + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
				os.WriteFile(n.hostsPath(hostUSE1), []byte(content), 0o600)
			},
			want:   []want{{name: "hosts.toml " + hostUSE1, status: Fail, detail: "no Authorization: Basic header", fix: "ecr-node-auth status"}},
			failed: true,
		},
		{
			name:    "hosts.toml for another endpoint",
			prepare: func(n *node) { n.endpoint = "https://127.0.0.1:6000" },
			want: []want{{name: "hosts.toml " + hostUSE1, status: Fail,
				detail: `server = "https://127.0.0.1:5443", the config wants "https://127.0.0.1:6000"`, fix: "systemctl reload ecr-node-auth"}},
			failed: true,
		},
		{
			name: "stale hosts.toml",
			prepare: func(n *node) {
				old := time.Now().Add(-13 * time.Hour)
				os.Chtimes(n.hostsPath(hostUSE1), old, old)
			},
			want:   []want{{name: "hosts.toml " + hostUSE1, status: Fail, detail: "longer than an ECR token lives", fix: "the daemon is not refreshing"}},
			failed: true,
		},
		{
			name:    "hosts.toml readable by others",
			prepare: func(n *node) { os.Chmod(n.hostsPath(hostUSE1), 0o644) },
			want:    []want{{name: "hosts.toml " + hostUSE1, status: Warn, detail: "not 0600", fix: "chmod 0600"}},
			failed:  true,
		},
		{
			name:    "containerd config without config_path",
			prepare: func(n *node) { n.writeContainerd("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n") },
			want:    []want{{name: "containerd config", status: Fail, detail: "sets no config_path", fix: "`ecr-node-auth setup-containerd --config CONFIG`"}},
			failed:  true,
		},
		{
			name: "containerd config with inline mirrors and config_path",
			prepare: func(n *node) {
				n.writeContainerd(fmt.Sprintf("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n"+
					"[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://mirror.example\"]\n", n.certsDir))
			},
			want: []want{{name: "containerd config", status: Fail, detail: "both config_path and inline mirrors for docker.io",
				fix: "move each mirror into <certs dir>/<host>/hosts.toml"}},
			failed: true,
		},
		{
			name: "config_path with two dirs is only a warning",
			prepare: func(n *node) {
				n.writeContainerd(fmt.Sprintf("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", n.certsDir+":/etc/docker/certs.d"))
			},
			want:   []want{{name: "containerd config", status: Warn, detail: "config_path lists 2 dirs"}},
			failed: true, // no containerd
		},
		{
			name: "the CRI socket comes from the containerd config's [grpc] address",
			prepare: func(n *node) {
				n.writeContainerd(fmt.Sprintf("version = 2\n[grpc]\n  address = %q\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n",
					filepath.Join(n.dir, "ctr-from-config.sock"), n.certsDir))
			},
			want:   []want{{name: "cri", status: Fail, detail: "ctr-from-config.sock ([grpc] address of", fix: "--cri-socket"}},
			failed: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.opts)
			n.writeHosts()
			if tc.prepare != nil {
				tc.prepare(n)
			}
			var rs []Result
			if strings.Contains(tc.name, "[grpc] address") {
				// No --cri-socket: the address must come from containerd's config.
				rs = Run(context.Background(), Options{ConfigPath: n.configFile(), Timeout: 5 * time.Second})
			} else {
				rs = n.run()
			}
			for _, r := range rs {
				t.Logf("%-4s %s: %s; fix: %s", r.Status, r.Name, r.Detail, r.Fix)
			}
			byName := map[string]Result{}
			for _, r := range rs {
				if _, dup := byName[r.Name]; !dup {
					byName[r.Name] = r
				}
			}
			for _, w := range tc.want {
				r, ok := byName[w.name]
				if !ok {
					t.Errorf("no %q result in %+v", w.name, rs)
					continue
				}
				fix := strings.NewReplacer("CERTS", n.certsDir, "CONFIG", n.configFile()).Replace(w.fix)
				if r.Status != w.status || !strings.Contains(r.Detail, w.detail) || !strings.Contains(r.Fix, fix) {
					t.Errorf("%s = %s %q fix %q\nwant %s, detail with %q, fix with %q", w.name, r.Status, r.Detail, r.Fix, w.status, w.detail, fix)
				}
			}
			if got := Failed(rs); got != tc.failed {
				t.Errorf("Failed = %v, want %v: %+v", got, tc.failed, rs)
			}
		})
	}
}

// TestOrder: the checks come in the order of the issue, one per line.
func TestOrder(t *testing.T) {
	n := newNode(t, fakeaws.Options{})
	n.writeHosts()
	var names []string
	for _, r := range n.run() {
		names = append(names, r.Name)
	}
	want := []string{"config", "token file", "aws identity", "ecr us-east-1", "certs dir", "hosts.toml " + hostUSE1, "daemon", "containerd config", "cri"}
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("checks %q, want %q", names, want)
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{10 * time.Second: "10s", time.Minute: "1m", 90 * time.Minute: "1h30m", 12 * time.Hour: "12h", -5 * time.Second: "5s"} {
		if got := short(d); got != want {
			t.Errorf("short(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestSetupCommand: setup-containerd hints carry doctor's --config unless it
// is the default (setup-containerd reads that one itself).
func TestSetupCommand(t *testing.T) {
	fix := "run `ecr-node-auth setup-containerd` (sets config_path = \"/x\")"
	tests := []struct {
		config, want string
	}{
		{"", fix},
		{config.DefaultPath, fix},
		{"/etc/ecr-node-auth/../ecr-node-auth/config.yaml", fix},
		{"/tmp/c.yaml", "run `ecr-node-auth setup-containerd --config /tmp/c.yaml` (sets config_path = \"/x\")"},
		{"/tmp/my config.yaml", "run `ecr-node-auth setup-containerd --config '/tmp/my config.yaml'` (sets config_path = \"/x\")"},
	}
	for _, tt := range tests {
		r := &run{o: Options{ConfigPath: tt.config}}
		if got := r.setupCommand(fix); got != tt.want {
			t.Errorf("ConfigPath %q: %s\nwant %s", tt.config, got, tt.want)
		}
	}
}
