package kubeletplugin

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
)

// The kubelet's CredentialProviderConfig that PrintConfig writes.
const (
	ConfigAPIVersion = "kubelet.config.k8s.io/v1"
	ConfigKind       = "CredentialProviderConfig"

	// DefaultProviderName is the plugin binary's name in the kubelet's
	// --image-credential-provider-bin-dir.
	DefaultProviderName = "ecr-node-auth"
	// PluginArg is the subcommand the kubelet runs.
	PluginArg = "kubelet-plugin"
	// DefaultCacheDurationValue is the kubelet's fallback cache duration; every
	// response carries its own cacheDuration, so it is rarely used.
	DefaultCacheDurationValue = 10 * time.Minute
	// DefaultAudience is the audience of the service-account tokens the kubelet
	// sends in KEP-4412 mode: the one STS AssumeRoleWithWebIdentity expects.
	DefaultAudience = "sts.amazonaws.com"
	// SocketEnv names the daemon's socket for the plugin.
	SocketEnv = "ECR_NODE_AUTH_SOCKET"
)

// DefaultAnnotationKeys are the service-account annotations the kubelet passes
// to the plugin in KEP-4412 mode: exactly the ones the daemon honours
// (api.RoleAnnotations), in its order of precedence.
func DefaultAnnotationKeys() []string {
	return api.RoleAnnotations()
}

// ConfigOptions shape PrintConfig's output. The zero value prints the plain
// node-identity config.
type ConfigOptions struct {
	// Name is the provider (binary) name; default DefaultProviderName.
	Name string
	// ExtraArgs follow "kubelet-plugin" on the plugin's command line.
	ExtraArgs []string
	// Socket, if set, is passed to the plugin as $ECR_NODE_AUTH_SOCKET.
	Socket string
	// DefaultCacheDuration; zero means DefaultCacheDurationValue.
	DefaultCacheDuration time.Duration

	// TokenAttributes adds the KEP-4412 tokenAttributes: the kubelet then
	// sends each pod's service-account token (audience Audience) and the
	// AnnotationKeys annotations of its service account, and caches answers
	// per token (cacheType Token). requireServiceAccount is false, so pods
	// without a service account still pull with the node's identity. Needs the
	// kubelet feature gate KubeletServiceAccountTokenForCredentialProviders.
	TokenAttributes bool
	// Audience; default DefaultAudience.
	Audience string
	// AnnotationKeys are passed as optionalServiceAccountAnnotationKeys;
	// default DefaultAnnotationKeys().
	AnnotationKeys []string
}

// registryPatterns are the matchImages globs for every host form
// ecrhost.Parse accepts. The kubelet matches them label by label: the same
// number of DNS labels, each "*" within one label, the port exactly (so
// ":443" refs need their own patterns), the path as a prefix.
var registryPatterns = []struct{ pattern, form string }{
	{"*.dkr.ecr.*.amazonaws.com", "aws and aws-us-gov"},
	{"*.dkr.ecr-fips.*.amazonaws.com", "aws and aws-us-gov, FIPS"},
	{"*.dkr-ecr.*.on.aws", "aws and aws-us-gov, dual-stack"},
	{"*.dkr-ecr-fips.*.on.aws", "aws and aws-us-gov, dual-stack FIPS"},
	{"*.dkr.ecr.*.amazonaws.com.cn", "aws-cn"},
	{"*.dkr.ecr-fips.*.amazonaws.com.cn", "aws-cn, FIPS form"},
	{"*.dkr-ecr.*.on.amazonwebservices.com.cn", "aws-cn, dual-stack"},
	{"*.dkr-ecr-fips.*.on.amazonwebservices.com.cn", "aws-cn, dual-stack FIPS form"},
	{"*.dkr.ecr.*.c2s.ic.gov", "aws-iso"},
	{"*.dkr.ecr-fips.*.c2s.ic.gov", "aws-iso, FIPS"},
	{"*.dkr.ecr.*.sc2s.sgov.gov", "aws-iso-b"},
	{"*.dkr.ecr-fips.*.sc2s.sgov.gov", "aws-iso-b, FIPS"},
	{"*.dkr.ecr.*.cloud.adc-e.uk", "aws-iso-e"},
	{"*.dkr.ecr-fips.*.cloud.adc-e.uk", "aws-iso-e, FIPS"},
	{"*.dkr.ecr.*.csp.hci.ic.gov", "aws-iso-f"},
	{"*.dkr.ecr-fips.*.csp.hci.ic.gov", "aws-iso-f, FIPS"},
	{"*.dkr.ecr.*.amazonaws.eu", "aws-eusc"},
	{"*.dkr.ecr-fips.*.amazonaws.eu", "aws-eusc, FIPS"},
	{"public.ecr.aws", "ECR Public"},
	{"ecr-public.aws.com", "ECR Public, dual-stack"},
}

// MatchImages returns the matchImages PrintConfig emits: every ECR host form,
// then the same forms with ":443", because the kubelet requires a pattern's
// port to equal the image's (an image written host:443/repo matches no
// portless pattern).
func MatchImages() []string {
	out := make([]string, 0, 2*len(registryPatterns))
	for _, p := range registryPatterns {
		out = append(out, p.pattern)
	}
	for _, p := range registryPatterns {
		out = append(out, p.pattern+":443")
	}
	return out
}

// PrintConfig writes a kubelet CredentialProviderConfig (YAML) that runs this
// binary as the exec plugin for every ECR host form. Point the kubelet at it
// with --image-credential-provider-config, and put the binary (or a link named
// opts.Name) in --image-credential-provider-bin-dir.
func PrintConfig(w io.Writer, opts ConfigOptions) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	b := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }

	p("# kubelet image credential provider config, printed by `ecr-node-auth print-kubelet-config`.\n")
	p("# kubelet flags: --image-credential-provider-config=<this file>\n")
	p("#                --image-credential-provider-bin-dir=<directory holding %s>\n", opts.Name)
	p("apiVersion: %s\n", ConfigAPIVersion)
	p("kind: %s\n", ConfigKind)
	p("providers:\n")
	p("  - name: %s\n", yamlString(opts.Name))
	p("    # The kubelet matches these label by label: the same number of DNS labels,\n")
	p("    # each \"*\" inside one label, the port exactly, the path as a prefix. So every\n")
	p("    # ECR host form is listed, and again with \":443\" for images that spell the port.\n")
	p("    matchImages:\n")
	for _, m := range registryPatterns {
		p("      - %s  # %s\n", yamlString(m.pattern), m.form)
	}
	for _, m := range registryPatterns {
		p("      - %s\n", yamlString(m.pattern+":443"))
	}
	p("    # Every response carries its own cacheDuration (token expiry less a margin).\n")
	p("    defaultCacheDuration: %s\n", yamlString(opts.DefaultCacheDuration.String()))
	p("    apiVersion: %s\n", APIVersionV1)
	p("    args:\n")
	for _, a := range append([]string{PluginArg}, opts.ExtraArgs...) {
		p("      - %s\n", yamlString(a))
	}
	if opts.Socket != "" {
		p("    env:\n")
		p("      - name: %s\n", SocketEnv)
		p("        value: %s\n", yamlString(opts.Socket))
	}
	if opts.TokenAttributes {
		p("    # KEP-4412: the kubelet sends each pod's service-account token; pods whose\n")
		p("    # service account names no role pull with the node's identity.\n")
		p("    # Needs the kubelet feature gate KubeletServiceAccountTokenForCredentialProviders.\n")
		p("    tokenAttributes:\n")
		p("      serviceAccountTokenAudience: %s\n", yamlString(opts.Audience))
		p("      requireServiceAccount: false\n")
		p("      cacheType: Token\n")
		if len(opts.AnnotationKeys) > 0 {
			p("      optionalServiceAccountAnnotationKeys:\n")
			for _, k := range opts.AnnotationKeys {
				p("        - %s\n", yamlString(k))
			}
		}
	}
	return b.Flush()
}

func (o ConfigOptions) withDefaults() (ConfigOptions, error) {
	if o.Name == "" {
		o.Name = DefaultProviderName
	}
	if o.Name == "." || o.Name == ".." || strings.ContainsAny(o.Name, "/ \t\n\\") {
		return o, fmt.Errorf("provider name %q must be a plain file name", o.Name)
	}
	if o.DefaultCacheDuration < 0 {
		return o, fmt.Errorf("defaultCacheDuration %s is negative", o.DefaultCacheDuration)
	}
	if o.DefaultCacheDuration == 0 {
		o.DefaultCacheDuration = DefaultCacheDurationValue
	}
	if !o.TokenAttributes {
		if o.Audience != "" || len(o.AnnotationKeys) > 0 {
			return o, errors.New("audience and annotation keys need TokenAttributes")
		}
		return o, nil
	}
	if o.Audience == "" {
		o.Audience = DefaultAudience
	}
	if o.AnnotationKeys == nil {
		o.AnnotationKeys = DefaultAnnotationKeys()
	}
	seen := map[string]bool{}
	for _, k := range o.AnnotationKeys {
		if err := checkAnnotationKey(k); err != nil {
			return o, err
		}
		if seen[k] {
			return o, fmt.Errorf("annotation key %q is listed twice", k)
		}
		seen[k] = true
	}
	return o, nil
}

// checkAnnotationKey applies the Kubernetes qualified-name rule the kubelet
// checks annotation keys with: an optional DNS-subdomain prefix and "/", then
// a name of at most 63 alphanumerics, '-', '_' or '.', starting and ending
// alphanumeric (case does not matter).
func checkAnnotationKey(k string) error {
	bad := func(why string) error { return fmt.Errorf("annotation key %q: %s", k, why) }
	name := strings.ToLower(k)
	if prefix, n, ok := strings.Cut(name, "/"); ok {
		if prefix == "" || len(prefix) > 253 {
			return bad("the prefix must be a DNS subdomain of at most 253 characters")
		}
		for _, label := range strings.Split(prefix, ".") {
			if label == "" || label[0] == '-' || label[len(label)-1] == '-' || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				return bad("the prefix must be a DNS subdomain")
			}
		}
		name = n
	}
	if name == "" || len(name) > 63 {
		return bad("the name must be 1 to 63 characters")
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if !alnum(name[0]) || !alnum(name[len(name)-1]) || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") != "" {
		return bad("the name must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric")
	}
	return nil
}

// yamlString quotes s as a YAML double-quoted scalar (JSON string syntax is
// valid YAML), so no value can break the document's structure.
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
