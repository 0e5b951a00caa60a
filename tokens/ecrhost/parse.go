package ecrhost

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Public registry host names. ecr-public.aws.com is the dual-stack (IPv6)
// name of public.ecr.aws.
const (
	PublicHost          = "public.ecr.aws"
	PublicDualStackHost = "ecr-public.aws.com"

	// publicRegion is the only region whose ecr-public API issues tokens.
	publicRegion = "us-east-1"
)

// Limits keep error messages and work bounded for hostile input; a real
// image reference is far shorter.
const (
	maxInput = 4096
	maxHost  = 253
	maxLabel = 63
)

// Expected is appended, in parentheses, to "not an ECR host" errors so the
// user sees a valid form. Callers that accept only private hosts replace it.
const Expected = "expected <12-digit account>.dkr.ecr.<region>.amazonaws.com or public.ecr.aws"

const expected = Expected

// partitionInfo holds what Parse and Endpoint need to know of one AWS partition.
type partitionInfo struct {
	name string
	// regionPrefix selects the partition from a region name; "" is the
	// fallback (aws), so new commercial regions work without a code change.
	regionPrefix string
	// registrySuffix ends <acct>.dkr.ecr[-fips].<region>.<registrySuffix>.
	registrySuffix string
	// dualStackRegistrySuffix ends <acct>.dkr-ecr[-fips].<region>.<suffix>; ""
	// when the partition has no dual-stack registry hosts.
	dualStackRegistrySuffix string
	// apiSuffix and dualStackAPISuffix are the SDK's dnsSuffix and
	// dualStackDnsSuffix for the partition (see endpoint_test.go).
	apiSuffix          string
	dualStackAPISuffix string
}

// partitions is ordered so that longer region prefixes win (us-isob- before
// us-iso-); the aws fallback is last.
var partitions = []partitionInfo{
	{"aws-us-gov", "us-gov-", "amazonaws.com", "on.aws", "amazonaws.com", "api.aws"},
	{"aws-iso-b", "us-isob-", "sc2s.sgov.gov", "", "sc2s.sgov.gov", "api.aws.scloud"},
	{"aws-iso-f", "us-isof-", "csp.hci.ic.gov", "", "csp.hci.ic.gov", "api.aws.hci.ic.gov"},
	{"aws-iso", "us-iso-", "c2s.ic.gov", "", "c2s.ic.gov", "api.aws.ic.gov"},
	{"aws-iso-e", "eu-isoe-", "cloud.adc-e.uk", "", "cloud.adc-e.uk", "api.cloud-aws.adc-e.uk"},
	{"aws-cn", "cn-", "amazonaws.com.cn", "on.amazonwebservices.com.cn", "amazonaws.com.cn", "api.amazonwebservices.com.cn"},
	{"aws-eusc", "eusc-", "amazonaws.eu", "", "amazonaws.eu", "api.amazonwebservices.eu"},
	{"aws", "", "amazonaws.com", "on.aws", "amazonaws.com", "api.aws"},
}

func partitionForRegion(region string) *partitionInfo {
	for i := range partitions {
		if strings.HasPrefix(region, partitions[i].regionPrefix) {
			return &partitions[i]
		}
	}
	return nil // unreachable: the last entry matches everything
}

func partitionByName(name string) *partitionInfo {
	for i := range partitions {
		if partitions[i].name == name {
			return &partitions[i]
		}
	}
	return nil
}

// ParseError says which input was rejected and why.
type ParseError struct {
	Input  string
	Reason string
}

func (e *ParseError) Error() string {
	in := e.Input
	if len(in) > 200 {
		in = in[:200] + "..."
	}
	return fmt.Sprintf("%q: %s", in, e.Reason)
}

func errorf(input, format string, args ...any) error {
	return &ParseError{Input: input, Reason: fmt.Sprintf(format, args...)}
}

// Parse recognises an Amazon ECR registry host in s. Host forms:
//
//	<account>.dkr.ecr[-fips].<region>.<suffix>   suffix by partition: amazonaws.com
//	                                             (aws, aws-us-gov), amazonaws.com.cn,
//	                                             c2s.ic.gov, sc2s.sgov.gov, cloud.adc-e.uk,
//	                                             csp.hci.ic.gov, amazonaws.eu
//	<account>.dkr-ecr[-fips].<region>.on.aws     dual-stack (aws, aws-us-gov)
//	<account>.dkr-ecr[-fips].<region>.on.amazonwebservices.com.cn   dual-stack (aws-cn)
//	public.ecr.aws, ecr-public.aws.com           ECR Public (the latter dual-stack)
//
// s may be the bare host, host:443, an http(s) URL (with or without a /v2/
// path) or a full image reference with repository, tag and digest, in any
// case. The partition follows from the region and must agree with the suffix.
// The result's Name is safe to use as a single directory name: Parse accepts
// only lower-case ASCII DNS labels. Errors are *ParseError.
func Parse(s string) (Host, error) {
	if s == "" {
		return Host{}, errorf(s, "empty registry host (%s)", expected)
	}
	if len(s) > maxInput {
		return Host{}, errorf(s, "too long (%d bytes, at most %d)", len(s), maxInput)
	}
	// Check the whole input, not only the host: an image reference is plain
	// ASCII, so anything else is a mistake or an attempt to smuggle a path or
	// a lookalike letter past the host checks.
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			r, _ := utf8.DecodeRuneInString(s[i:])
			return Host{}, errorf(s, "non-ASCII character %U at byte %d (registry hosts are plain ASCII; a lookalike letter is not the same host)", r, i)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			return Host{}, errorf(s, "contains whitespace at byte %d", i)
		case c < 0x20 || c == 0x7f:
			return Host{}, errorf(s, "contains control character %#02x at byte %d", c, i)
		case c == '\\':
			return Host{}, errorf(s, "contains a backslash at byte %d", i)
		}
	}
	rest := strings.ToLower(s)
	if scheme, after, ok := strings.Cut(rest, "://"); ok {
		if scheme != "https" && scheme != "http" {
			return Host{}, errorf(s, "unsupported scheme %q (use https://, http:// or no scheme)", scheme)
		}
		rest = after
	}
	hostport, path, hasPath := strings.Cut(rest, "/")
	if strings.Contains(hostport, "..") {
		return Host{}, errorf(s, `contains ".." in the host (an empty DNS label)`)
	}
	if hasPath && (strings.HasPrefix(path, "/") || strings.Contains(path, "//")) {
		return Host{}, errorf(s, "empty path component after the host")
	}
	// A tag may hold ".." (1..2); a whole "." or ".." component is a path trick.
	for _, c := range strings.Split(path, "/") {
		if hasPath && (c == "." || c == "..") {
			return Host{}, errorf(s, "contains %q as a path component after the host (path traversal)", c)
		}
	}
	if hostport == "" {
		return Host{}, errorf(s, "no registry host (%s)", expected)
	}

	if strings.Contains(hostport, "@") {
		// user:pass@host would otherwise read as a port; ECR needs no userinfo.
		return Host{}, errorf(s, "'@' is not allowed in a registry host (no user:password@ and no digest without a repository)")
	}
	host := hostport
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
		host = hostport[:i]
		port := hostport[i+1:]
		if port == "" {
			return Host{}, errorf(s, "empty port after ':'")
		}
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			if !hasPath {
				return Host{}, errorf(s, "port %q is not a port number (a tag needs a repository: <host>/<repository>:<tag>)", port)
			}
			return Host{}, errorf(s, "port %q is not a port number", port)
		}
		if n != 443 {
			return Host{}, errorf(s, "port %d: Amazon ECR registries serve HTTPS on port 443 only; drop the port", n)
		}
	}
	if err := checkHostSyntax(s, host); err != nil {
		return Host{}, err
	}

	switch host {
	case PublicHost:
		return Host{Name: host, Region: publicRegion, Partition: "aws", Public: true}, nil
	case PublicDualStackHost:
		return Host{Name: host, Region: publicRegion, Partition: "aws", Public: true, DualStack: true}, nil
	}
	return parsePrivate(s, host)
}

// checkHostSyntax accepts only lower-case LDH DNS labels: what Name may hold.
func checkHostSyntax(input, host string) error {
	if host == "" {
		// ":443" or "https://:443/app": only a port.
		return errorf(input, "no registry host before the port (%s)", expected)
	}
	if len(host) > maxHost {
		return errorf(input, "host name is %d bytes long, at most %d", len(host), maxHost)
	}
	if strings.HasSuffix(host, ".") {
		return errorf(input, "host has a trailing dot; write it without one")
	}
	if strings.HasPrefix(host, ".") {
		return errorf(input, "host starts with a dot")
	}
	for _, label := range strings.Split(host, ".") {
		if len(label) > maxLabel {
			return errorf(input, "DNS label %q is longer than %d bytes", label, maxLabel)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return errorf(input, "character %q is not allowed in a registry host (%s)", c, expected)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errorf(input, "DNS label %q starts or ends with '-'", label)
		}
	}
	return nil
}

// parsePrivate handles <acct>.dkr.ecr[-fips].<region>.<suffix> and
// <acct>.dkr-ecr[-fips].<region>.<suffix>; host is already syntax-checked.
func parsePrivate(input, host string) (Host, error) {
	labels := strings.Split(host, ".")
	// Find the ECR marker wherever it is, so that a wrong account or a
	// missing region gets its own message rather than "not ECR".
	mark, fips, dual, width := -1, false, false, 0
	for i, l := range labels {
		switch {
		case l == "dkr" && i+1 < len(labels) && (labels[i+1] == "ecr" || labels[i+1] == "ecr-fips"):
			mark, fips, width = i, labels[i+1] == "ecr-fips", 2
		case l == "dkr-ecr" || l == "dkr-ecr-fips":
			mark, fips, dual, width = i, l == "dkr-ecr-fips", true, 1
		default:
			continue
		}
		break
	}
	if mark < 0 {
		return Host{}, errorf(input, "not an Amazon ECR registry host (%s)", expected)
	}

	switch {
	case mark == 0:
		return Host{}, errorf(input, "account ID missing before %q (%s)", labels[0], expected)
	case mark > 1:
		return Host{}, errorf(input, "account ID %q must be a single label of 12 digits", strings.Join(labels[:mark], "."))
	}
	account := labels[0]
	if len(account) != 12 || strings.Trim(account, "0123456789") != "" {
		return Host{}, errorf(input, "account ID %q must be 12 digits (got %d characters)", account, len(account))
	}

	after := labels[mark+width:]
	if len(after) == 0 {
		return Host{}, errorf(input, "region and DNS suffix missing after %q", strings.Join(labels[mark:mark+width], "."))
	}
	region := after[0]
	suffix := strings.Join(after[1:], ".")
	if !validRegion(region) {
		// Distinguish "<acct>.dkr.ecr.amazonaws.com" (no region) from junk.
		if isKnownSuffix(strings.Join(after, "."), dual) {
			return Host{}, errorf(input, "region missing: expected <account>.%s.<region>.%s", strings.Join(labels[mark:mark+width], "."), strings.Join(after, "."))
		}
		return Host{}, errorf(input, "%q is not an AWS region name (like us-east-1)", region)
	}
	p := partitionForRegion(region)
	want := p.registrySuffix
	form := "dkr.ecr"
	if dual {
		want, form = p.dualStackRegistrySuffix, "dkr-ecr"
		if want == "" {
			return Host{}, errorf(input, "partition %s (region %s) has no dual-stack registry hosts; use <account>.dkr.ecr.%s.%s", p.name, region, region, p.registrySuffix)
		}
	}
	if suffix != want {
		if suffix == "" {
			return Host{}, errorf(input, "DNS suffix missing: expected <account>.%s.%s.%s", form, region, want)
		}
		return Host{}, errorf(input, "DNS suffix %q does not match region %s (partition %s): expected <account>.%s.%s.%s", suffix, region, p.name, form, region, want)
	}
	return Host{
		Name:      host,
		Account:   account,
		Region:    region,
		Partition: p.name,
		FIPS:      fips,
		DualStack: dual,
	}, nil
}

func isKnownSuffix(s string, dual bool) bool {
	for _, p := range partitions {
		if (!dual && s == p.registrySuffix) || (dual && s != "" && s == p.dualStackRegistrySuffix) {
			return true
		}
	}
	return false
}

// validRegion accepts region names like us-east-1, us-gov-west-1,
// us-isob-east-1 and eusc-de-east-1: letters, then letter groups, then a
// number, each separated by '-'.
func validRegion(r string) bool {
	parts := strings.Split(r, "-")
	if len(parts) < 3 {
		return false
	}
	for i, p := range parts {
		if p == "" {
			return false
		}
		last := i == len(parts)-1
		for j := 0; j < len(p); j++ {
			c := p[j]
			if last && !(c >= '0' && c <= '9') || !last && !(c >= 'a' && c <= 'z') {
				return false
			}
		}
	}
	return true
}

// String returns the host's Name.
func (h Host) String() string { return h.Name }
