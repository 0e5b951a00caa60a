package kubeletplugin

import (
	"bytes"
	"encoding/json"
	"flag"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	kubeletconfigv1 "k8s.io/kubelet/config/v1"
	kjson "sigs.k8s.io/json"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// --- The kubelet's matching rule, ported from kubernetes/kubernetes
// pkg/credentialprovider/keyring.go (URLsMatchStr, URLsMatch,
// ParseSchemelessURL, SplitURL). The kubelet uses it twice: matchImages
// against the image (pluginProvider.isImageAllowed), and the response's auth
// keys against the image (BasicDockerKeyring.Lookup).

func kubeletURLsMatchStr(glob, target string) (bool, error) {
	globURL, err := kubeletParseSchemelessURL(glob)
	if err != nil {
		return false, err
	}
	targetURL, err := kubeletParseSchemelessURL(target)
	if err != nil {
		return false, err
	}
	return kubeletURLsMatch(globURL, targetURL)
}

func kubeletURLsMatch(globURL, targetURL *url.URL) (bool, error) {
	globURLParts, globPort := kubeletSplitURL(globURL)
	targetURLParts, targetPort := kubeletSplitURL(targetURL)
	if globPort != targetPort {
		return false, nil // port doesn't match
	}
	if len(globURLParts) != len(targetURLParts) {
		return false, nil // host name does not have the same number of parts
	}
	if !strings.HasPrefix(targetURL.Path, globURL.Path) {
		return false, nil // the path of the credential must be a prefix
	}
	for k, globURLPart := range globURLParts {
		matched, err := filepath.Match(globURLPart, targetURLParts[k])
		if err != nil {
			return false, err
		}
		if !matched {
			return false, nil // glob mismatch for some part
		}
	}
	return true, nil
}

func kubeletParseSchemelessURL(schemelessURL string) (*url.URL, error) {
	parsed, err := url.Parse("https://" + schemelessURL)
	if err != nil {
		return nil, err
	}
	parsed.Scheme = ""
	return parsed, nil
}

func kubeletSplitURL(u *url.URL) (parts []string, port string) {
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return strings.Split(host, "."), port
}

// TestKubeletURLsMatchVectors runs the kubelet's own test vectors
// (keyring_test.go TestURLsMatch) against the port, so the coverage tests
// below judge with the real rule: one label per "*", a "*" may also be part
// of a label, exact port, path prefix.
func TestKubeletURLsMatchVectors(t *testing.T) {
	tests := []struct {
		glob, target string
		want         bool
	}{
		// match when there is no path component
		{"*.kubernetes.io", "prefix.kubernetes.io", true},
		{"prefix.*.io", "prefix.kubernetes.io", true},
		{"prefix.kubernetes.*", "prefix.kubernetes.io", true},
		{"*-good.kubernetes.io", "prefix-good.kubernetes.io", true},
		// match with path components
		{"*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true},
		{"prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true},
		// match with path components and ports
		{"*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", true},
		{"prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", true},
		// no match when number of parts mismatch
		{"*.kubernetes.io", "kubernetes.io", false},
		{"*.*.kubernetes.io", "prefix.kubernetes.io", false},
		{"*.*.kubernetes.io", "kubernetes.io", false},
		// no match when some parts mismatch
		{"kubernetes.io", "kubernetes.com", false},
		{"k*.io", "quay.io", false},
		// no match when ports mismatch
		{"*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", false},
		{"prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", false},
		// keyring_test.go TestDockerKeyringForGlob / TestKeyringMiss (schemeless)
		{"*.docker.io:8888", "prefix.docker.io:8888/foo/bar", true},
		{"prefix.docker.io:1111", "prefix.docker.io:1111/path/foo/bar", true},
		{"*.docker.com", "prefix.docker.io/foo/bar", false},
		{"suffix.*.io", "prefix.docker.io/foo/bar", false},
		{"prefix.docker.c*", "prefix.docker.io/foo/bar", false},
		// the consequences for ECR (case 29)
		{"*.dkr.ecr.*.amazonaws.com", "111122223333.dkr.ecr.us-east-1.amazonaws.com/a", true},
		{"*.dkr.ecr.*.amazonaws.com", "111122223333.dkr.ecr.us-east-1.amazonaws.com:443/a", false},
		{"*.dkr.ecr.*.amazonaws.com", "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/a", false},
		{"*.dkr.ecr.*.amazonaws.com", "111122223333.dkr.ecr-fips.us-gov-west-1.amazonaws.com/a", false},
		{"*.dkr.ecr*.*.amazonaws.com", "111122223333.dkr.ecr-fips.us-gov-west-1.amazonaws.com/a", true},
		{"*.dkr.ecr.*.amazonaws.com:443", "111122223333.dkr.ecr.us-east-1.amazonaws.com:443/a", true},
	}
	for _, tt := range tests {
		got, err := kubeletURLsMatchStr(tt.glob, tt.target)
		if err != nil || got != tt.want {
			t.Errorf("URLsMatchStr(%q, %q) = %v, %v; want %v", tt.glob, tt.target, got, err, tt.want)
		}
	}
}

// decodeConfig reads PrintConfig's YAML the way the kubelet does (YAML to
// JSON, then a strict, case-sensitive decode into the real
// kubelet.config.k8s.io/v1 type) and applies the kubelet's validation
// (validateCredentialProviderConfig in pkg/credentialprovider/plugin).
func decodeConfig(t *testing.T, doc []byte) kubeletconfigv1.CredentialProviderConfig {
	t.Helper()
	var generic any
	if err := yaml.Unmarshal(doc, &generic); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, doc)
	}
	asJSON, err := json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	var cfg kubeletconfigv1.CredentialProviderConfig
	strictErrs, err := kjson.UnmarshalStrict(asJSON, &cfg)
	if err != nil || len(strictErrs) > 0 {
		t.Fatalf("not a strict CredentialProviderConfig: %v %v\n%s", err, strictErrs, doc)
	}
	if cfg.APIVersion != ConfigAPIVersion || cfg.Kind != ConfigKind {
		t.Errorf("apiVersion/kind %s/%s", cfg.APIVersion, cfg.Kind)
	}
	if len(cfg.Providers) != 1 {
		t.Fatalf("%d providers", len(cfg.Providers))
	}
	p := cfg.Providers[0]
	if p.Name == "" || p.Name == "." || p.Name == ".." || strings.ContainsAny(p.Name, "/ ") {
		t.Errorf("invalid provider name %q", p.Name)
	}
	if !slices.Contains(SupportedAPIVersions(), p.APIVersion) {
		t.Errorf("provider apiVersion %q", p.APIVersion)
	}
	if len(p.MatchImages) == 0 {
		t.Error("no matchImages")
	}
	for _, m := range p.MatchImages {
		if _, err := kubeletParseSchemelessURL(m); err != nil {
			t.Errorf("matchImage %q is invalid: %v", m, err)
		}
	}
	if p.DefaultCacheDuration == nil || p.DefaultCacheDuration.Duration < 0 {
		t.Errorf("defaultCacheDuration %v", p.DefaultCacheDuration)
	}
	if ta := p.TokenAttributes; ta != nil {
		if ta.ServiceAccountTokenAudience == "" || ta.RequireServiceAccount == nil || p.APIVersion != APIVersionV1 {
			t.Errorf("invalid tokenAttributes %+v", ta)
		}
		if ta.CacheType != kubeletconfigv1.TokenServiceAccountTokenCacheType && ta.CacheType != kubeletconfigv1.ServiceAccountServiceAccountTokenCacheType {
			t.Errorf("cacheType %q", ta.CacheType)
		}
		if *ta.RequireServiceAccount == false && len(ta.RequiredServiceAccountAnnotationKeys) > 0 {
			t.Error("requiredServiceAccountAnnotationKeys without requireServiceAccount")
		}
		for _, k := range ta.OptionalServiceAccountAnnotationKeys {
			if err := checkAnnotationKey(k); err != nil {
				t.Error(err)
			}
		}
	}
	return cfg
}

func printConfig(t *testing.T, opts ConfigOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := PrintConfig(&buf, opts); err != nil {
		t.Fatalf("PrintConfig(%+v): %v", opts, err)
	}
	return buf.Bytes()
}

func TestPrintConfig(t *testing.T) {
	f := false
	tests := []struct {
		name   string
		opts   ConfigOptions
		golden string
		check  func(t *testing.T, p kubeletconfigv1.CredentialProvider)
	}{
		{"default", ConfigOptions{}, "kubelet-config.golden", func(t *testing.T, p kubeletconfigv1.CredentialProvider) {
			if p.Name != "ecr-node-auth" || p.APIVersion != APIVersionV1 || !slices.Equal(p.Args, []string{"kubelet-plugin"}) ||
				p.DefaultCacheDuration.Duration != 10*time.Minute || p.TokenAttributes != nil || p.Env != nil {
				t.Errorf("provider %+v", p)
			}
			if !slices.Equal(p.MatchImages, MatchImages()) {
				t.Errorf("matchImages %v, want %v", p.MatchImages, MatchImages())
			}
		}},
		{"token attributes", ConfigOptions{TokenAttributes: true}, "kubelet-config-token.golden", func(t *testing.T, p kubeletconfigv1.CredentialProvider) {
			want := &kubeletconfigv1.ServiceAccountTokenAttributes{
				ServiceAccountTokenAudience:          "sts.amazonaws.com",
				RequireServiceAccount:                &f,
				CacheType:                            kubeletconfigv1.TokenServiceAccountTokenCacheType,
				OptionalServiceAccountAnnotationKeys: []string{"eks.amazonaws.com/ecr-role-arn", "eks.amazonaws.com/role-arn", "ecr-node-auth.io/role-arn"},
			}
			if got, _ := json.Marshal(p.TokenAttributes); string(got) != string(must(json.Marshal(want))) {
				t.Errorf("tokenAttributes %s", got)
			}
		}},
		{"everything", ConfigOptions{Name: "ecr-auth", ExtraArgs: []string{"--config", "/etc/ecr node/c.yaml"}, Socket: `/run/x "y"/auth.sock`, DefaultCacheDuration: time.Hour,
			TokenAttributes: true, Audience: "sts.amazonaws.com.cn", AnnotationKeys: []string{"example.com/ecr-role"}}, "",
			func(t *testing.T, p kubeletconfigv1.CredentialProvider) {
				if p.Name != "ecr-auth" || !slices.Equal(p.Args, []string{"kubelet-plugin", "--config", "/etc/ecr node/c.yaml"}) ||
					len(p.Env) != 1 || p.Env[0].Name != SocketEnv || p.Env[0].Value != `/run/x "y"/auth.sock` ||
					p.DefaultCacheDuration.Duration != time.Hour || p.TokenAttributes.ServiceAccountTokenAudience != "sts.amazonaws.com.cn" ||
					!slices.Equal(p.TokenAttributes.OptionalServiceAccountAnnotationKeys, []string{"example.com/ecr-role"}) {
					t.Errorf("provider %+v", p)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := printConfig(t, tt.opts)
			cfg := decodeConfig(t, doc)
			tt.check(t, cfg.Providers[0])
			if tt.golden == "" {
				return
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, doc, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(doc, want) {
				t.Errorf("output differs from %s (run go test -update and review):\n%s", path, doc)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestPrintConfigRejects(t *testing.T) {
	for _, opts := range []ConfigOptions{
		{Name: "bin/ecr"},
		{Name: ".."},
		{Name: "a b"},
		{DefaultCacheDuration: -time.Second},
		{Audience: "sts.amazonaws.com"},
		{AnnotationKeys: []string{"a"}},
		{TokenAttributes: true, AnnotationKeys: []string{"bad key"}},
		{TokenAttributes: true, AnnotationKeys: []string{"-x.example.com/a"}},
		{TokenAttributes: true, AnnotationKeys: []string{"example.com/"}},
		{TokenAttributes: true, AnnotationKeys: []string{"a", "a"}},
	} {
		var buf bytes.Buffer
		if err := PrintConfig(&buf, opts); err == nil {
			t.Errorf("PrintConfig(%+v) accepted", opts)
		}
		if buf.Len() != 0 {
			t.Errorf("PrintConfig(%+v) wrote output on error", opts)
		}
	}
}

// hostForms is every host form ecrhost.Parse accepts, one per partition and
// flavour.
var hostForms = []string{
	acct + ".dkr.ecr.us-east-1.amazonaws.com",
	acct + ".dkr.ecr.ap-southeast-7.amazonaws.com",
	acct + ".dkr.ecr-fips.us-east-2.amazonaws.com",
	acct + ".dkr-ecr.eu-west-1.on.aws",
	acct + ".dkr-ecr-fips.us-west-2.on.aws",
	acct + ".dkr.ecr.us-gov-west-1.amazonaws.com",
	acct + ".dkr.ecr-fips.us-gov-east-1.amazonaws.com",
	acct + ".dkr-ecr.us-gov-east-1.on.aws",
	acct + ".dkr-ecr-fips.us-gov-west-1.on.aws",
	acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn",
	acct + ".dkr.ecr-fips.cn-north-1.amazonaws.com.cn",
	acct + ".dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn",
	acct + ".dkr-ecr-fips.cn-northwest-1.on.amazonwebservices.com.cn",
	acct + ".dkr.ecr.us-iso-east-1.c2s.ic.gov",
	acct + ".dkr.ecr-fips.us-iso-west-1.c2s.ic.gov",
	acct + ".dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
	acct + ".dkr.ecr-fips.us-isob-east-1.sc2s.sgov.gov",
	acct + ".dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
	acct + ".dkr.ecr-fips.eu-isoe-west-1.cloud.adc-e.uk",
	acct + ".dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
	acct + ".dkr.ecr-fips.us-isof-south-1.csp.hci.ic.gov",
	acct + ".dkr.ecr.eusc-de-east-1.amazonaws.eu",
	acct + ".dkr.ecr-fips.eusc-de-east-1.amazonaws.eu",
	"public.ecr.aws",
	"ecr-public.aws.com",
}

// case29Refs are the references of case 29, verbatim.
var case29Refs = []string{
	"111122223333.dkr.ecr.us-east-1.amazonaws.com/a",
	"111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/a",
	"111122223333.dkr.ecr-fips.us-gov-west-1.amazonaws.com/a",
	"111122223333.dkr-ecr.us-east-2.on.aws/a",
	"111122223333.dkr.ecr.us-east-1.amazonaws.com:443/a",
	"public.ecr.aws/a/b",
	"ecr-public.aws.com/a/b",
}

func matching(patterns []string, image string) []string {
	var out []string
	for _, p := range patterns {
		if ok, _ := kubeletURLsMatchStr(p, image); ok {
			out = append(out, p)
		}
	}
	return out
}

// TestMatchImagesCoverEveryHostForm is case 29: under the kubelet's rule,
// every host form (bare, with a repository and tag, with a digest, and each
// again with ":443") and every case-29 reference matches a pattern of the
// printed config; non-ECR hosts match none; and no pattern is dead.
func TestMatchImagesCoverEveryHostForm(t *testing.T) {
	cfg := decodeConfig(t, printConfig(t, ConfigOptions{}))
	patterns := cfg.Providers[0].MatchImages
	used := map[string]bool{}

	var refs []string
	for _, h := range hostForms {
		if _, err := ecrhost.Parse(h); err != nil {
			t.Fatalf("host form %q is not accepted by ecrhost.Parse: %v", h, err)
		}
		for _, hp := range []string{h, h + ":443"} {
			refs = append(refs, hp, hp+"/team/app:1.2", hp+"/app@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097")
		}
	}
	refs = append(refs, case29Refs...)
	for _, ref := range refs {
		m := matching(patterns, ref)
		if len(m) == 0 {
			t.Errorf("%s matches no matchImages pattern", ref)
		}
		for _, p := range m {
			used[p] = true
		}
	}
	for _, p := range patterns {
		if !used[p] {
			t.Errorf("pattern %q matches no host form: dead or the host table is incomplete", p)
		}
	}

	for _, ref := range []string{
		"ghcr.io/org/app:1",
		"docker.io/library/nginx:1.27",
		"nginx",
		"evil.com.amazonaws.com.attacker.io/a",
		acct + ".dkr.ecr.us-east-1.amazonaws.com.attacker.io/a",
		"attacker.io/" + acct + ".dkr.ecr.us-east-1.amazonaws.com/a",
		"dkr.ecr.us-east-1.amazonaws.com/a",
		"x." + acct + ".dkr.ecr.us-east-1.amazonaws.com/a",
		acct + ".dkr.ecr.us-east-1.amazonaws.com:5000/a",
		"public.ecr.aws.attacker.io/a",
		"public.ecr.aws:8443/a",
		"registry.k8s.io/pause:3.9",
		"quay.io/a/b",
	} {
		if m := matching(patterns, ref); len(m) > 0 {
			t.Errorf("non-ECR %s matches %v", ref, m)
		}
	}
}

// TestMatchImagesAreECROnly: substituting plausible labels for the globs
// yields hosts ecrhost.Parse accepts, so no pattern is wider than the forms
// the plugin serves (modulo junk in the "*" labels, which the plugin refuses).
func TestMatchImagesAreECROnly(t *testing.T) {
	for _, p := range MatchImages() {
		host := strings.TrimSuffix(p, ":443")
		region := "us-east-1"
		switch {
		case strings.HasSuffix(host, ".amazonaws.com.cn"), strings.HasSuffix(host, ".amazonwebservices.com.cn"):
			region = "cn-north-1"
		case strings.HasSuffix(host, ".c2s.ic.gov"):
			region = "us-iso-east-1"
		case strings.HasSuffix(host, ".sc2s.sgov.gov"):
			region = "us-isob-east-1"
		case strings.HasSuffix(host, ".cloud.adc-e.uk"):
			region = "eu-isoe-west-1"
		case strings.HasSuffix(host, ".csp.hci.ic.gov"):
			region = "us-isof-south-1"
		case strings.HasSuffix(host, ".amazonaws.eu"):
			region = "eusc-de-east-1"
		}
		host = strings.Replace(host, "*", acct, 1)
		host = strings.Replace(host, "*", region, 1)
		if strings.Contains(host, "*") {
			t.Errorf("pattern %q has more than two globs", p)
		}
		if _, err := ecrhost.Parse(host + "/a"); err != nil {
			t.Errorf("pattern %q: %s is not an ECR host: %v", p, host, err)
		}
	}
}
