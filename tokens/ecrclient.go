package tokens

import (
	"context"
	"errors"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/aws/aws-sdk-go-v2/service/ecrpublic"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// ECRAPI is the part of the ECR API the agent calls. *ecr.Client satisfies it.
type ECRAPI interface {
	GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, optFns ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error)
}

var _ ECRAPI = (*ecr.Client)(nil)

// PublicRegion is the only region whose ecr-public API issues tokens: an
// ECR Public client is always built for it, whatever the node's region
// (field case 13: elsewhere the call fails with UnsupportedCommandException
// or a DNS error).
const PublicRegion = "us-east-1"

// sdkRetryMaxAttempts keeps the SDK's own retries short: the agent's backoff
// governs, and long SDK retries would hide throttling from it.
const sdkRetryMaxAttempts = 2

// NewECRFactory returns an Options.NewECR that builds one client per service
// (an *ecr.Client; ECR Public: see below) from base (credentials, HTTP
// client, endpoint overrides), caching it:
//   - Region is the service's region, never base's;
//   - the FIPS API endpoint is used exactly for FIPS services, whatever
//     AWS_USE_FIPS_ENDPOINT says, unless a custom endpoint is configured
//     (AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL or base.BaseEndpoint): the SDK
//     refuses FIPS and dual-stack with a custom endpoint, so both are then off
//     and the custom endpoint is used as it is;
//   - the SDK makes at most 2 attempts per call.
//
// An ECR Public service gets an ecr-public client in PublicRegion (custom
// endpoint: AWS_ENDPOINT_URL_ECR_PUBLIC), seen through ECRAPI.
func NewECRFactory(base aws.Config) func(ecrhost.Service) (ECRAPI, error) {
	var (
		mu      sync.Mutex
		clients = map[ecrhost.Service]ECRAPI{}
	)
	return func(svc ecrhost.Service) (ECRAPI, error) {
		if svc.Region == "" && !svc.Public {
			return nil, errors.New("ECR service has no region")
		}
		mu.Lock()
		defer mu.Unlock()
		if c, ok := clients[svc]; ok {
			return c, nil
		}
		var c ECRAPI
		if svc.Public {
			c = newPublicClient(base, svc)
		} else {
			c = newECRClient(base, svc)
		}
		clients[svc] = c
		return c, nil
	}
}

// publicClient is an ecr-public client seen as ECRAPI, so ECR Public tokens
// go through the same agent, refresh timing and backoff as every other.
type publicClient struct{ c *ecrpublic.Client }

func newPublicClient(base aws.Config, svc ecrhost.Service) *publicClient {
	cfg := base.Copy()
	cfg.Region = PublicRegion
	return &publicClient{c: ecrpublic.NewFromConfig(cfg, func(o *ecrpublic.Options) {
		o.Region = PublicRegion
		o.RetryMaxAttempts = sdkRetryMaxAttempts
		// ecr-public has no FIPS endpoint.
		o.EndpointOptions.UseFIPSEndpoint, o.EndpointOptions.UseDualStackEndpoint = endpointStates(o.BaseEndpoint, false, svc.DualStack)
	})}
}

// GetAuthorizationToken calls ecr-public's GetAuthorizationToken and returns
// its one authorization data as ECR's answer shape. The input is ignored
// (ecr-public takes no registry ids).
func (p *publicClient) GetAuthorizationToken(ctx context.Context, _ *ecr.GetAuthorizationTokenInput, _ ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error) {
	out, err := p.c.GetAuthorizationToken(ctx, &ecrpublic.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, err
	}
	res := &ecr.GetAuthorizationTokenOutput{ResultMetadata: out.ResultMetadata}
	if d := out.AuthorizationData; d != nil {
		res.AuthorizationData = []ecrtypes.AuthorizationData{{AuthorizationToken: d.AuthorizationToken, ExpiresAt: d.ExpiresAt}}
	}
	return res, nil
}

func newECRClient(base aws.Config, svc ecrhost.Service) *ecr.Client {
	cfg := base.Copy()
	cfg.Region = svc.Region
	return ecr.NewFromConfig(cfg, func(o *ecr.Options) {
		o.Region = svc.Region
		o.RetryMaxAttempts = sdkRetryMaxAttempts
		o.EndpointOptions.UseFIPSEndpoint, o.EndpointOptions.UseDualStackEndpoint = endpointStates(o.BaseEndpoint, svc.FIPS, svc.DualStack)
	})
}

// endpointStates is a client's FIPS and dual-stack settings: both off with a
// custom endpoint, which is used as it is, else as the registry host says (a
// dkr-ecr host is how a node on an IPv6-only network reaches ECR: call the
// API there the same way). NewFromConfig has resolved baseEndpoint (from
// base.BaseEndpoint and the AWS_ENDPOINT_URL[_<service>] settings) before it
// runs the option functions that call this.
func endpointStates(baseEndpoint *string, fips, dualStack bool) (aws.FIPSEndpointState, aws.DualStackEndpointState) {
	f, d := aws.FIPSEndpointStateDisabled, aws.DualStackEndpointStateDisabled
	if baseEndpoint != nil && *baseEndpoint != "" {
		return f, d
	}
	if fips {
		f = aws.FIPSEndpointStateEnabled
	}
	if dualStack {
		d = aws.DualStackEndpointStateEnabled
	}
	return f, d
}

// Endpoint returns the URL a client built by NewECRFactory sends its calls to,
// resolved the way the SDK does for every call, without any network traffic.
// The daemon logs it at start and doctor prints it.
func Endpoint(ctx context.Context, api ECRAPI) (string, error) {
	if p, ok := api.(*publicClient); ok {
		o := p.c.Options()
		ep, err := o.EndpointResolverV2.ResolveEndpoint(ctx, ecrpublic.EndpointParameters{
			Region:       aws.String(o.Region),
			UseFIPS:      aws.Bool(false),
			UseDualStack: aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
			Endpoint:     o.BaseEndpoint,
		})
		if err != nil {
			return "", err
		}
		return ep.URI.String(), nil
	}
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
