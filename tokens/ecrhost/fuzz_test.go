package ecrhost

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// The distribution spec's grammar for what follows the registry host.
var (
	repositoryPattern = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagPattern        = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestPattern     = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// FuzzImageReference: any well-formed image reference in an accepted
// registry, in any spelling the clients use (scheme, ":443", tag, digest),
// names exactly that registry; and a rejected input's error names it.
func FuzzImageReference(f *testing.F) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, s := range []struct {
		host, repo, tag, digest string
		scheme, port            bool
	}{
		{acct + ".dkr.ecr.us-east-1.amazonaws.com", "app", "v1", "", false, false},
		{acct + ".dkr.ecr-fips.us-gov-west-1.amazonaws.com", "team/service/app", "1.2.3", digest, true, true},
		{acct + ".dkr-ecr.eu-west-1.on.aws", "a__b/c-d.e", "latest", "", true, false},
		{acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn", "x", "", digest, false, true},
		{"public.ecr.aws", "docker/library/alpine", "3", "", false, false},
		{"ecr-public.aws.com", "nginx/nginx", "stable-alpine", "", true, false},
		{acct + ".dkr.ecr.us-isob-east-1.sc2s.sgov.gov", "../etc", "x", "", false, false},
		{"ghcr.io", "a/b", "c", "", false, false},
	} {
		f.Add(s.host, s.repo, s.tag, s.digest, s.scheme, s.port)
	}
	f.Fuzz(func(t *testing.T, host, repo, tag, dgst string, scheme, port bool) {
		h, err := Parse(host)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Input != host || !strings.HasPrefix(err.Error(), `"`) {
				t.Fatalf("Parse(%q): error %v does not name the input", host, err)
			}
			return
		}
		if !repositoryPattern.MatchString(repo) || len(repo) > 255 {
			return
		}
		ref := h.Name
		if port {
			ref += ":443"
		}
		if scheme {
			ref = "https://" + ref
		}
		ref += "/" + repo
		if tagPattern.MatchString(tag) {
			ref += ":" + tag
		}
		if digestPattern.MatchString(dgst) {
			ref += "@" + dgst
		}
		got, err := Parse(ref)
		if err != nil || got != h {
			t.Fatalf("Parse(%q) = %+v, %v; want the registry %+v", ref, got, err, h)
		}
		// Upper case is the same registry too (hosts are case-insensitive).
		if got, err := Parse(strings.ToUpper(h.Name) + "/" + repo); err != nil || got != h {
			t.Fatalf("Parse(upper %q) = %+v, %v; want %+v", h.Name, got, err, h)
		}
	})
}
