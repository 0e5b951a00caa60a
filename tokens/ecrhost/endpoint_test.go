package ecrhost

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/ecrpublic"
)

// sdkEndpoint resolves s with the SDK's own rules and no override, the way
// the daemon's clients do; Endpoint must never drift from it.
func sdkEndpoint(t *testing.T, s Service) string {
	t.Helper()
	ctx := context.Background()
	if s.Public {
		e, err := ecrpublic.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, ecrpublic.EndpointParameters{
			Region: aws.String(s.Region), UseFIPS: aws.Bool(s.FIPS), UseDualStack: aws.Bool(s.DualStack),
		})
		if err != nil {
			t.Fatalf("ecrpublic resolver for %v: %v", s, err)
		}
		return e.URI.String()
	}
	e, err := ecr.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, ecr.EndpointParameters{
		Region: aws.String(s.Region), UseFIPS: aws.Bool(s.FIPS), UseDualStack: aws.Bool(s.DualStack),
	})
	if err != nil {
		t.Fatalf("ecr resolver for %v: %v", s, err)
	}
	return e.URI.String()
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		host     string
		want     string
		wantName string
	}{
		{acct + ".dkr.ecr.us-east-1.amazonaws.com", "https://api.ecr.us-east-1.amazonaws.com", "aws/us-east-1"},
		// The SDK (ecr v1.69.0) resolves FIPS to api.ecr-fips.<region>, not ecr-fips.<region>.
		{acct + ".dkr.ecr-fips.us-east-1.amazonaws.com", "https://api.ecr-fips.us-east-1.amazonaws.com", "aws/us-east-1/fips"},
		{acct + ".dkr-ecr.eu-west-1.on.aws", "https://ecr.eu-west-1.api.aws", "aws/eu-west-1/dualstack"},
		{acct + ".dkr-ecr-fips.us-west-2.on.aws", "https://ecr-fips.us-west-2.api.aws", "aws/us-west-2/fips/dualstack"},
		{acct + ".dkr.ecr.us-gov-west-1.amazonaws.com", "https://api.ecr.us-gov-west-1.amazonaws.com", "aws-us-gov/us-gov-west-1"},
		{acct + ".dkr.ecr-fips.us-gov-west-1.amazonaws.com", "https://api.ecr-fips.us-gov-west-1.amazonaws.com", "aws-us-gov/us-gov-west-1/fips"},
		{acct + ".dkr-ecr.us-gov-east-1.on.aws", "https://ecr.us-gov-east-1.api.aws", "aws-us-gov/us-gov-east-1/dualstack"},
		{acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn", "https://api.ecr.cn-north-1.amazonaws.com.cn", "aws-cn/cn-north-1"},
		{acct + ".dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn", "https://ecr.cn-northwest-1.api.amazonwebservices.com.cn", "aws-cn/cn-northwest-1/dualstack"},
		{acct + ".dkr.ecr.us-iso-east-1.c2s.ic.gov", "https://api.ecr.us-iso-east-1.c2s.ic.gov", "aws-iso/us-iso-east-1"},
		{acct + ".dkr.ecr-fips.us-iso-west-1.c2s.ic.gov", "https://api.ecr-fips.us-iso-west-1.c2s.ic.gov", "aws-iso/us-iso-west-1/fips"},
		{acct + ".dkr.ecr.us-isob-east-1.sc2s.sgov.gov", "https://api.ecr.us-isob-east-1.sc2s.sgov.gov", "aws-iso-b/us-isob-east-1"},
		{acct + ".dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk", "https://api.ecr.eu-isoe-west-1.cloud.adc-e.uk", "aws-iso-e/eu-isoe-west-1"},
		{acct + ".dkr.ecr.us-isof-south-1.csp.hci.ic.gov", "https://api.ecr.us-isof-south-1.csp.hci.ic.gov", "aws-iso-f/us-isof-south-1"},
		{acct + ".dkr.ecr.eusc-de-east-1.amazonaws.eu", "https://api.ecr.eusc-de-east-1.amazonaws.eu", "aws-eusc/eusc-de-east-1"},
		{"public.ecr.aws", "https://api.ecr-public.us-east-1.amazonaws.com", "public"},
		{"ecr-public.aws.com", "https://ecr-public.us-east-1.api.aws", "public/dualstack"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			h, err := Parse(tt.host)
			if err != nil {
				t.Fatal(err)
			}
			s := h.Service()
			if got := s.Endpoint(); got != tt.want {
				t.Errorf("Endpoint() = %q, want %q", got, tt.want)
			}
			if sdk := sdkEndpoint(t, s); s.Endpoint() != sdk {
				t.Errorf("Endpoint() = %q, but the SDK resolves %q", s.Endpoint(), sdk)
			}
			if got := s.String(); got != tt.wantName {
				t.Errorf("String() = %q, want %q", got, tt.wantName)
			}
		})
	}
}

// TestEndpointMatchesSDKEverywhere checks every partition and flag
// combination, including ones no host form produces today, so a new SDK
// release that moves an endpoint fails here rather than in production.
func TestEndpointMatchesSDKEverywhere(t *testing.T) {
	regions := map[string]string{
		"aws":        "ap-southeast-2",
		"aws-us-gov": "us-gov-east-1",
		"aws-cn":     "cn-north-1",
		"aws-iso":    "us-iso-east-1",
		"aws-iso-b":  "us-isob-east-1",
		"aws-iso-e":  "eu-isoe-west-1",
		"aws-iso-f":  "us-isof-east-1",
		"aws-eusc":   "eusc-de-east-1",
	}
	for _, p := range partitions {
		region, ok := regions[p.name]
		if !ok {
			t.Fatalf("partition %s has no test region", p.name)
		}
		if got := partitionForRegion(region).name; got != p.name {
			t.Fatalf("region %s maps to %s, want %s", region, got, p.name)
		}
		for _, fips := range []bool{false, true} {
			for _, dual := range []bool{false, true} {
				for _, public := range []bool{false, true} {
					if public && p.name != "aws" {
						continue // ECR Public exists only in aws
					}
					s := Service{Partition: p.name, Region: region, FIPS: fips, DualStack: dual, Public: public}
					if got, want := s.Endpoint(), sdkEndpoint(t, s); got != want {
						t.Errorf("%v: Endpoint() = %q, SDK resolves %q", s, got, want)
					}
				}
			}
		}
	}
}

func TestEndpointUnknown(t *testing.T) {
	for _, s := range []Service{{}, {Partition: "aws"}, {Partition: "nope", Region: "us-east-1"}} {
		if got := s.Endpoint(); got != "" {
			t.Errorf("%+v.Endpoint() = %q, want empty", s, got)
		}
	}
}
