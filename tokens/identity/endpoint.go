package identity

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// globalSTSHost is the legacy global endpoint, which private VPCs often cannot
// reach (case 6). It is never chosen without an explicit override.
const globalSTSHost = "sts.amazonaws.com"

// STSEndpoint returns the URL the STS client calls for region, as the SDK's
// own endpoint rules resolve it: the regional, partition-aware endpoint
// (https://sts.eu-west-1.amazonaws.com, https://sts.cn-north-1.amazonaws.com.cn),
// the FIPS one when useFIPS, or override when set (the SDK refuses FIPS with
// an override). The daemon logs it at start. An empty region or "aws-global"
// is an error: the global endpoint is never used by default.
func STSEndpoint(ctx context.Context, region string, useFIPS bool, override string) (string, error) {
	if region == "" {
		return "", fmt.Errorf("identity: no STS region: set awsECR.region or AWS_REGION (the global STS endpoint is never used)")
	}
	if region == "aws-global" && override == "" {
		return "", fmt.Errorf("identity: STS region %q selects the global endpoint %s; set the node's real region", region, globalSTSHost)
	}
	params := sts.EndpointParameters{
		Region:            aws.String(region),
		UseFIPS:           aws.Bool(useFIPS),
		UseDualStack:      aws.Bool(false),
		UseGlobalEndpoint: aws.Bool(false),
	}
	if override != "" {
		params.Endpoint = aws.String(override)
	}
	ep, err := sts.NewDefaultEndpointResolverV2().ResolveEndpoint(ctx, params)
	if err != nil {
		return "", fmt.Errorf("identity: resolve the STS endpoint for region %s (fips=%t): %w", region, useFIPS, err)
	}
	if override == "" && ep.URI.Host == globalSTSHost {
		return "", fmt.Errorf("identity: STS region %q resolved to the global endpoint %s; set the node's real region", region, globalSTSHost)
	}
	return ep.URI.String(), nil
}
