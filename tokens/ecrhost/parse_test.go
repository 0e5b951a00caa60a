package ecrhost

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

const acct = "111122223333"

func TestParse(t *testing.T) {
	priv := func(name, region, partition string, fips, dual bool) Host {
		return Host{Name: name, Account: acct, Region: region, Partition: partition, FIPS: fips, DualStack: dual}
	}
	use1 := priv(acct+".dkr.ecr.us-east-1.amazonaws.com", "us-east-1", "aws", false, false)
	pub := Host{Name: "public.ecr.aws", Region: "us-east-1", Partition: "aws", Public: true}
	pubDual := Host{Name: "ecr-public.aws.com", Region: "us-east-1", Partition: "aws", Public: true, DualStack: true}

	tests := []struct {
		name string
		in   string
		want Host
	}{
		// Every partition and host form.
		{"aws", acct + ".dkr.ecr.us-east-1.amazonaws.com", use1},
		{"tag with two dots", acct + ".dkr.ecr.us-east-1.amazonaws.com/app:1..2", use1}, // found by FuzzImageReference
		{"aws new region", acct + ".dkr.ecr.ap-southeast-7.amazonaws.com", priv(acct+".dkr.ecr.ap-southeast-7.amazonaws.com", "ap-southeast-7", "aws", false, false)},
		{"aws fips", acct + ".dkr.ecr-fips.us-east-2.amazonaws.com", priv(acct+".dkr.ecr-fips.us-east-2.amazonaws.com", "us-east-2", "aws", true, false)},
		{"aws dual-stack", acct + ".dkr-ecr.eu-west-1.on.aws", priv(acct+".dkr-ecr.eu-west-1.on.aws", "eu-west-1", "aws", false, true)},
		{"aws dual-stack fips", acct + ".dkr-ecr-fips.us-west-2.on.aws", priv(acct+".dkr-ecr-fips.us-west-2.on.aws", "us-west-2", "aws", true, true)},
		{"aws-us-gov", acct + ".dkr.ecr.us-gov-west-1.amazonaws.com", priv(acct+".dkr.ecr.us-gov-west-1.amazonaws.com", "us-gov-west-1", "aws-us-gov", false, false)},
		{"aws-us-gov fips", acct + ".dkr.ecr-fips.us-gov-east-1.amazonaws.com", priv(acct+".dkr.ecr-fips.us-gov-east-1.amazonaws.com", "us-gov-east-1", "aws-us-gov", true, false)},
		{"aws-us-gov dual-stack fips", acct + ".dkr-ecr-fips.us-gov-west-1.on.aws", priv(acct+".dkr-ecr-fips.us-gov-west-1.on.aws", "us-gov-west-1", "aws-us-gov", true, true)},
		{"aws-cn", acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn", priv(acct+".dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1", "aws-cn", false, false)},
		{"aws-cn dual-stack", acct + ".dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn", priv(acct+".dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn", "cn-northwest-1", "aws-cn", false, true)},
		{"aws-iso", acct + ".dkr.ecr.us-iso-east-1.c2s.ic.gov", priv(acct+".dkr.ecr.us-iso-east-1.c2s.ic.gov", "us-iso-east-1", "aws-iso", false, false)},
		{"aws-iso-b", acct + ".dkr.ecr.us-isob-east-1.sc2s.sgov.gov", priv(acct+".dkr.ecr.us-isob-east-1.sc2s.sgov.gov", "us-isob-east-1", "aws-iso-b", false, false)},
		{"aws-iso-e", acct + ".dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", priv(acct+".dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", "eu-isoe-west-1", "aws-iso-e", false, false)},
		{"aws-iso-f", acct + ".dkr.ecr.us-isof-south-1.csp.hci.ic.gov", priv(acct+".dkr.ecr.us-isof-south-1.csp.hci.ic.gov", "us-isof-south-1", "aws-iso-f", false, false)},
		{"aws-eusc", acct + ".dkr.ecr.eusc-de-east-1.amazonaws.eu", priv(acct+".dkr.ecr.eusc-de-east-1.amazonaws.eu", "eusc-de-east-1", "aws-eusc", false, false)},
		{"public", "public.ecr.aws", pub},
		{"public dual-stack", "ecr-public.aws.com", pubDual},

		// Input shapes.
		{"port 443 dropped", acct + ".dkr.ecr.us-east-1.amazonaws.com:443", use1},
		{"https scheme", "https://" + acct + ".dkr.ecr.us-east-1.amazonaws.com", use1},
		{"http scheme", "http://" + acct + ".dkr.ecr.us-east-1.amazonaws.com", use1},
		{"https trailing slash", "https://" + acct + ".dkr.ecr.us-east-1.amazonaws.com/", use1},
		{"https port 443 v2", "https://" + acct + ".dkr.ecr.us-east-1.amazonaws.com:443/v2/", use1},
		{"v2 path", acct + ".dkr.ecr.us-east-1.amazonaws.com/v2/team/app/manifests/latest", use1},
		{"image tag", acct + ".dkr.ecr.us-east-1.amazonaws.com/team/app:v1.2.3", use1},
		{"image digest", acct + ".dkr.ecr.us-east-1.amazonaws.com/app@sha256:" + strings.Repeat("ab", 32), use1},
		{"image tag and digest", acct + ".dkr.ecr.us-east-1.amazonaws.com:443/a/b/c:TAG_1@sha256:" + strings.Repeat("0f", 32), use1},
		{"uppercase", "HTTPS://" + strings.ToUpper(acct+".dkr.ECR.US-EAST-1.amazonaws.COM") + "/App:Latest", use1},
		{"public image", "public.ecr.aws/docker/library/alpine:3.20", pub},
		{"public uppercase scheme", "https://PUBLIC.ECR.AWS/v2/", pub},
		{"public port 443", "PUBLIC.ECR.AWS:443", pub},
		{"public dual-stack image", "ecr-public.aws.com/nginx/nginx:latest", pubDual},
		{"dual-stack image ref", "https://" + acct + ".dkr-ecr.eu-west-1.on.aws:443/x:y", priv(acct+".dkr-ecr.eu-west-1.on.aws", "eu-west-1", "aws", false, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
			if got.String() != got.Name {
				t.Errorf("String() = %q, want Name %q", got.String(), got.Name)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const ecr = acct + ".dkr.ecr.us-east-1.amazonaws.com"
	tests := []struct {
		name string
		in   string
		want string // substring of the error
	}{
		{"empty", "", "empty registry host"},
		{"ghcr", "ghcr.io/x", `"ghcr.io/x": not an Amazon ECR registry host (expected <12-digit account>.dkr.ecr.<region>.amazonaws.com or public.ecr.aws)`},
		{"docker hub", "docker.io/library/alpine", "not an Amazon ECR registry host"},
		{"bare name", "alpine", "not an Amazon ECR registry host"},
		{"ecr api host", "api.ecr.us-east-1.amazonaws.com", "not an Amazon ECR registry host"},
		{"public lookalike", "public.ecr.aws.evil.com", "not an Amazon ECR registry host"},
		{"11-digit account", "11112222333.dkr.ecr.us-east-1.amazonaws.com", `account ID "11112222333" must be 12 digits`},
		{"13-digit account", "1111222233334.dkr.ecr.us-east-1.amazonaws.com", "must be 12 digits"},
		{"letters in account", "11112222333a.dkr.ecr.us-east-1.amazonaws.com", "must be 12 digits"},
		{"no account", "dkr.ecr.us-east-1.amazonaws.com", "account ID missing"},
		{"two-label account", "x." + ecr, "must be a single label"},
		{"region missing", acct + ".dkr.ecr.amazonaws.com", "region missing"},
		{"region missing dual", acct + ".dkr-ecr.on.aws", "region missing"},
		{"region missing cn", acct + ".dkr.ecr.amazonaws.com.cn", "region missing"},
		{"nothing after marker", acct + ".dkr.ecr", "region and DNS suffix missing"},
		{"suffix missing", acct + ".dkr.ecr.us-east-1", "DNS suffix missing"},
		{"bad region", acct + ".dkr.ecr.useast1.amazonaws.com", "not an AWS region name"},
		{"region with underscore", acct + ".dkr.ecr.us_east-1.amazonaws.com", "not allowed"},
		{"unknown suffix", acct + ".dkr.ecr.us-east-1.amazonaws.org", `DNS suffix "amazonaws.org" does not match`},
		{"extra label", acct + ".dkr.ecr.us-east-1.amazonaws.com.evil.com", "does not match"},
		{"cn region on com", acct + ".dkr.ecr.cn-north-1.amazonaws.com", "partition aws-cn"},
		{"aws region on cn", acct + ".dkr.ecr.us-east-1.amazonaws.com.cn", "partition aws"},
		{"iso region on com", acct + ".dkr.ecr.us-iso-east-1.amazonaws.com", "c2s.ic.gov"},
		{"eusc on com", acct + ".dkr.ecr.eusc-de-east-1.amazonaws.com", "amazonaws.eu"},
		{"iso dual-stack", acct + ".dkr-ecr.us-iso-east-1.on.aws", "no dual-stack registry hosts"},
		{"cn dual-stack on aws", acct + ".dkr-ecr.cn-north-1.on.aws", "on.amazonwebservices.com.cn"},
		{"dual on amazonaws", acct + ".dkr-ecr.us-east-1.amazonaws.com", "does not match"},
		{"port 5000", ecr + ":5000", "port 5000: Amazon ECR registries serve HTTPS on port 443 only"},
		{"port 80 url", "http://" + ecr + ":80/v2/", "port 443 only"},
		{"empty port", ecr + ":/x", "empty port"},
		{"tag without repo", ecr + ":latest", "a tag needs a repository"},
		{"port zero", ecr + ":0", "not a port number"},
		{"huge port", ecr + ":99999999999999999999", "not a port number"},
		{"port 65536", ecr + ":65536/x", "not a port number"},
		{"ftp scheme", "ftp://" + ecr, `unsupported scheme "ftp"`},
		{"docker scheme", "docker://" + ecr + "/x", "unsupported scheme"},
		{"only scheme", "https://", "no registry host"},
		{"leading slash", "/" + ecr, "no registry host"},
		{"only a port (found by FuzzHandler)", ":443", "no registry host before the port"},
		{"scheme and port only", "https://:443/app:1", "no registry host before the port"},
		{"dotdot host", "..", `contains ".."`},
		{"dotdot path", ecr + "/../../etc", `contains ".."`},
		{"empty label", acct + ".dkr.ecr..us-east-1.amazonaws.com", `contains ".."`},
		{"trailing dot", ecr + ".", "trailing dot"},
		{"trailing dot with path", ecr + "./x", "trailing dot"},
		{"leading dot", "." + ecr, "starts with a dot"},
		{"backslash", ecr + `\x`, "backslash"},
		{"backslash in host", acct + `.dkr.ecr.us-east-1\amazonaws.com`, "backslash"},
		{"double slash", ecr + "//x", "empty path component"},
		{"url double slash", "https:///" + ecr, "no registry host"},
		{"nul", ecr + "\x00", "control character"},
		{"space", " " + ecr, "whitespace"},
		{"newline", ecr + "\n", "whitespace"},
		{"tab inside", acct + ".dkr.ecr.us-east-1\t.amazonaws.com", "whitespace"},
		{"cyrillic e", acct + ".dkr.\u0435cr.us-east-1.amazonaws.com", "non-ASCII character U+0435"},
		{"cyrillic a public", "public.ecr.\u0430ws", "non-ASCII"},
		{"fullwidth dot", acct + ".dkr.ecr.us-east-1\uff0eamazonaws.com", "non-ASCII"},
		{"zero width", acct + ".dkr.ecr.us-east-1.amazonaws.com\u200b", "non-ASCII"},
		{"invalid utf8", ecr + "\xff", "non-ASCII"},
		// Names that, as a certs.d directory, could escape it or read as another name.
		{"one-dot leader", acct + ".dkr.ecr.us-east-1\u2024amazonaws.com", "non-ASCII character U+2024"},
		{"one-dot leaders as dotdot", "\u2024\u2024/" + ecr, "non-ASCII character U+2024"},
		{"fullwidth solidus", ecr + "\uff0f..\uff0fetc", "non-ASCII character U+FF0F"},
		{"rtl override", "\u202e" + ecr, "non-ASCII character U+202E"},
		{"zero-width joiner", acct + ".dkr.ecr.us-east-1.amazonaws\u200d.com", "non-ASCII character U+200D"},
		{"percent-encoded dots", "%2e%2e/" + ecr, `character '%' is not allowed`},
		{"percent-encoded dot in host", acct + "%2edkr.ecr.us-east-1.amazonaws.com", `character '%' is not allowed`},
		{"percent-encoded slash", acct + ".dkr.ecr.us-east-1.amazonaws.com%2fetc", `character '%' is not allowed`},
		{"absolute path", "/etc/containerd/certs.d", "no registry host"},
		{"dotdot slash", "../" + ecr, `contains ".."`},
		{"nul inside", acct + ".dkr.ecr.us-east-1\x00.amazonaws.com", "control character"},
		{"backslash traversal", `..\..\etc`, "backslash"},
		{"file scheme", "file:///etc/passwd", `unsupported scheme "file"`},
		{"userinfo", "https://user:pass@" + ecr, "not allowed"},
		{"query", ecr + "?x=/y", "not allowed"},
		{"ipv6 literal", "[::1]:443", "not allowed"},
		{"label hyphen", acct + ".dkr.ecr.us-east-1.-amazonaws.com", "starts or ends with '-'"},
		{"long label", strings.Repeat("a", 64) + ".io", "longer than 63"},
		{"long host", strings.Repeat("a.", 130) + "io", "at most 253"},
		{"too long", strings.Repeat("a", maxInput+1), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error containing %q", tt.in, got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%q) error\n %v\nwant it to contain\n %s", tt.in, err, tt.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Input != tt.in {
				t.Errorf("error %v is not a *ParseError naming the input", err)
			}
			if got != (Host{}) {
				t.Errorf("Parse(%q) returned %+v with its error, want zero Host", tt.in, got)
			}
		})
	}
}

func TestParseErrorTruncatesInput(t *testing.T) {
	_, err := Parse(strings.Repeat("x", 1000) + "/y")
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("error too long or missing: %d bytes", len(err.Error()))
	}
}

// namePattern is what a Name may look like: lower-case ASCII DNS labels,
// safe as one directory name.
var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		acct + ".dkr.ecr.us-east-1.amazonaws.com",
		"https://" + acct + ".dkr-ecr-fips.us-gov-west-1.on.aws:443/v2/",
		acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn/a/b:c@sha256:00",
		"public.ecr.aws/docker/library/alpine:3",
		"ecr-public.aws.com",
		acct + ".dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
		"ghcr.io/x",
		acct + ".dkr.ecr.us-east-1.amazonaws.com/../x",
		acct + ".dkr.ecr.us-east-1\u2024amazonaws.com",
		"%2e%2e/" + acct + ".dkr.ecr.us-east-1.amazonaws.com",
		"\u202e" + acct + ".dkr.ecr.us-east-1.amazonaws.com\uff0fx",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			if h != (Host{}) {
				t.Fatalf("Parse(%q) returned %+v with error %v", s, h, err)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Input != s || !strings.HasPrefix(err.Error(), `"`) {
				t.Fatalf("Parse(%q) error does not name the input: %v", s, err)
			}
			return
		}
		if !namePattern.MatchString(h.Name) || len(h.Name) > maxHost {
			t.Fatalf("Parse(%q).Name = %q: not a strict lower-case DNS name", s, h.Name)
		}
		if strings.ContainsAny(h.Name, "/\\ ") || strings.Contains(h.Name, "..") {
			t.Fatalf("Parse(%q).Name = %q contains a path character", s, h.Name)
		}
		again, err := Parse(h.Name)
		if err != nil || again != h {
			t.Fatalf("re-parse of %q (from %q) = %+v, %v; want %+v", h.Name, s, again, err, h)
		}
		if h.Public != (h.Account == "") || h.Region == "" || h.Partition == "" {
			t.Fatalf("Parse(%q) = %+v: inconsistent fields", s, h)
		}
		if h.Service().Endpoint() == "" {
			t.Fatalf("Parse(%q) = %+v: no API endpoint", s, h)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	const ref = "https://" + acct + ".dkr.ecr.us-west-2.amazonaws.com:443/team/service/app:v1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(ref); err != nil {
			b.Fatal(err)
		}
	}
}
