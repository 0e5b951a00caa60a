package tokens

import (
	"context"
	"errors"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// ECRAPI is the part of the ECR API the agent calls. *ecr.Client satisfies it.
type ECRAPI interface {
	GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, optFns ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error)
}

var _ ECRAPI = (*ecr.Client)(nil)

// ErrPublicUnsupported is returned by NewECRFactory's function for an ECR
// Public service.
var ErrPublicUnsupported = errors.New("ECR Public is not supported yet")

// sdkRetryMaxAttempts keeps the SDK's own retries short: the agent's backoff
// governs, and long SDK retries would hide throttling from it.
const sdkRetryMaxAttempts = 2

// NewECRFactory returns an Options.NewECR that builds one *ecr.Client per
// service from base (credentials, HTTP client, endpoint overrides), caching it:
//   - Region is the service's region, never base's;
//   - the FIPS API endpoint is used exactly for FIPS services, whatever
//     AWS_USE_FIPS_ENDPOINT says, unless a custom endpoint is configured
//     (AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL or base.BaseEndpoint): the SDK
//     refuses FIPS and dual-stack with a custom endpoint, so both are then off
//     and the custom endpoint is used as it is;
//   - the SDK makes at most 2 attempts per call.
//
// ECR Public services get ErrPublicUnsupported.
func NewECRFactory(base aws.Config) func(ecrhost.Service) (ECRAPI, error) {
	var (
		mu      sync.Mutex
		clients = map[ecrhost.Service]*ecr.Client{}
	)
	return func(svc ecrhost.Service) (ECRAPI, error) {
		if svc.Public {
			return nil, ErrPublicUnsupported
		}
		if svc.Region == "" {
			return nil, errors.New("ECR service has no region")
		}
		mu.Lock()
		defer mu.Unlock()
		if c, ok := clients[svc]; ok {
			return c, nil
		}
		c := newECRClient(base, svc)
		clients[svc] = c
		return c, nil
	}
}

func newECRClient(base aws.Config, svc ecrhost.Service) *ecr.Client {
	cfg := base.Copy()
	cfg.Region = svc.Region
	return ecr.NewFromConfig(cfg, func(o *ecr.Options) {
		o.Region = svc.Region
		o.RetryMaxAttempts = sdkRetryMaxAttempts
		// NewFromConfig has resolved BaseEndpoint (from base.BaseEndpoint and
		// the AWS_ENDPOINT_URL[_ECR] settings) before running this function.
		if o.BaseEndpoint != nil && *o.BaseEndpoint != "" {
			o.EndpointOptions.UseFIPSEndpoint = aws.FIPSEndpointStateDisabled
			o.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateDisabled
			return
		}
		if svc.FIPS {
			o.EndpointOptions.UseFIPSEndpoint = aws.FIPSEndpointStateEnabled
		} else {
			o.EndpointOptions.UseFIPSEndpoint = aws.FIPSEndpointStateDisabled
		}
		// A dkr-ecr host is how a node on an IPv6-only network reaches ECR:
		// call the API there the same way.
		if svc.DualStack {
			o.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateEnabled
		} else {
			o.EndpointOptions.UseDualStackEndpoint = aws.DualStackEndpointStateDisabled
		}
	})
}

// Endpoint returns the URL a client built by NewECRFactory sends its calls to,
// resolved the way the SDK does for every call, without any network traffic.
// The daemon logs it at start and doctor prints it.
func Endpoint(ctx context.Context, api ECRAPI) (string, error) {
	c, ok := api.(*ecr.Client)
	if !ok {
		return "", errors.New("not an *ecr.Client")
	}
	o := c.Options()
	params := ecr.EndpointParameters{
		Region:       aws.String(o.Region),
		UseFIPS:      aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack: aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		Endpoint:     o.BaseEndpoint,
	}
	ep, err := o.EndpointResolverV2.ResolveEndpoint(ctx, params)
	if err != nil {
		return "", err
	}
	return ep.URI.String(), nil
}
