package daemon

import (
	"context"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go/middleware"
	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
)

// sdkRetryMaxAttempts keeps the SDK's retries short: the agent's backoff
// governs and long SDK retries would hide throttling.
const sdkRetryMaxAttempts = 2

// pipeline is everything left of the auth map for one identity config: the
// identity source, the token file watcher and the token agent. A reload
// that changes the identity replaces the whole pipeline.
type pipeline struct {
	key         identityKey
	source      identity.Source
	web         *identity.WebIdentity // nil with the default chain
	watcher     *identity.Watcher     // nil with the default chain
	agent       *tokens.Agent
	workloads   *tokens.Workloads // KEP-4412 credentials; nil if disabled
	stsEndpoint string
	log         *zap.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// identityKey is the part of the config that the pipeline is built from.
type identityKey struct {
	roleARN, stsRegion, tokenFile, audience string
}

func keyOf(c *config.Config) identityKey {
	return identityKey{c.AWSECR.RoleARN, c.STSRegion, c.Identity.TokenFile, c.Identity.Audience}
}

// newPipeline builds (but does not start) the pipeline for cfg. It calls no
// AWS API: loading the SDK config only reads the environment and files.
func (d *daemon) newPipeline(ctx context.Context, cfg *config.Config) (*pipeline, error) {
	var apiOpts []func(*middleware.Stack) error
	if d.metrics != nil {
		// Every client built from this config (STS, ECR, workload STS) is
		// instrumented at the SDK boundary.
		apiOpts = append(apiOpts, d.metrics.AWSMiddleware())
	}
	log := d.log.Named("identity")
	id, err := NewAWSIdentity(ctx, cfg, log, apiOpts...)
	if err != nil {
		return nil, err
	}
	p := &pipeline{key: keyOf(cfg), log: log, source: id.Source, web: id.Web, stsEndpoint: id.STSEndpoint}
	if id.Web == nil {
		log.Info("using the default AWS credential chain (no awsECR.roleArn)")
	} else {
		if id.STSEndpointErr != nil {
			log.Warn("cannot resolve the STS endpoint; credentials will fail until it is fixed", zap.Error(id.STSEndpointErr))
		} else {
			log.Info("using web identity", zap.String("role_arn", cfg.AWSECR.RoleARN), zap.String("sts_endpoint", id.STSEndpoint),
				zap.String("region", id.Config.Region), zap.String("region_from", cfg.STSRegionFrom),
				zap.String("token_file", cfg.Identity.TokenFile), zap.String("audience", cfg.Identity.Audience))
		}
		w, err := identity.NewWatcher(cfg.Identity.TokenFile, identity.WatcherOptions{Log: log})
		if err != nil {
			return nil, err
		}
		p.watcher = w
	}
	p.agent = tokens.NewAgent(tokens.Options{
		Log:      d.log.Named("tokens"),
		NewECR:   tokens.NewECRFactory(id.ECRConfig()),
		OnChange: d.onChange,
		OnRemove: d.onRemove,
	})
	p.workloads = d.newWorkloads(id.Config, cfg)
	p.agent.SetRegistries(hostsOf(cfg))
	return p, nil
}

// AWSIdentity is the AWS side the daemon builds from a config: the SDK
// config (STS region, short SDK retries), the identity source and the STS
// endpoint it calls. `doctor` builds it with the same function.
type AWSIdentity struct {
	Config aws.Config
	Source identity.Source
	Web    *identity.WebIdentity // nil with the default chain
	// STSEndpoint is the URL AssumeRoleWithWebIdentity goes to (web identity
	// only); STSEndpointErr says why it could not be resolved.
	STSEndpoint    string
	STSEndpointErr error
}

// ECRConfig is the SDK config the ECR clients are built from: Config with
// the identity's credentials.
func (a *AWSIdentity) ECRConfig() aws.Config {
	c := a.Config.Copy()
	c.Credentials = a.Source
	return c
}

// NewAWSIdentity loads the SDK config (AWS_REGION, AWS_ENDPOINT_URL_STS and
// the rest of the standard environment) and builds web identity for
// awsECR.roleArn, else the default credential chain. It calls no AWS API.
func NewAWSIdentity(ctx context.Context, cfg *config.Config, log *zap.Logger, apiOpts ...func(*middleware.Stack) error) (*AWSIdentity, error) {
	if log == nil {
		log = zap.NewNop()
	}
	// The SDK's lines go through log, never raw to stderr; ClientLogMode stays 0
	// (no request or response bodies, so no secret, reach the logger).
	loadOpts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRetryMaxAttempts(sdkRetryMaxAttempts),
		awsconfig.WithLogger(logging.SDK(log))}
	if len(apiOpts) > 0 {
		loadOpts = append(loadOpts, awsconfig.WithAPIOptions(apiOpts))
	}
	if cfg.STSRegion != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(cfg.STSRegion))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, err
	}
	id := &AWSIdentity{Config: awsCfg}
	if cfg.AWSECR.RoleARN == "" {
		id.Source = identity.NewDefaultChain(awsCfg.Credentials, nil)
		return id, nil
	}
	override := firstNonEmpty(os.Getenv("AWS_ENDPOINT_URL_STS"), os.Getenv("AWS_ENDPOINT_URL"), aws.ToString(awsCfg.BaseEndpoint))
	fips := os.Getenv("AWS_USE_FIPS_ENDPOINT") == "true"
	id.STSEndpoint, id.STSEndpointErr = identity.STSEndpoint(ctx, awsCfg.Region, fips && override == "", override)
	stsClient := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		o.Credentials = aws.AnonymousCredentials{} // AssumeRoleWithWebIdentity is unsigned
	})
	node, _ := os.Hostname()
	web, err := identity.NewWebIdentity(identity.Options{
		STS:         stsClient,
		RoleARN:     cfg.AWSECR.RoleARN,
		SessionName: identity.SessionName(node),
		TokenFile:   cfg.Identity.TokenFile,
		Audience:    cfg.Identity.Audience,
		Log:         log,
	})
	if err != nil {
		return nil, err
	}
	id.Source, id.Web = web, web
	return id, nil
}

// start runs the watcher and the agent until stop.
func (p *pipeline) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	p.cancel = cancel
	if p.watcher != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.watcher.Run(ctx); err != nil {
				p.log.Warn("token file watcher stopped; rotations are no longer noticed before the next refresh", zap.Error(err))
			}
		}()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.agent.Run(ctx) //nolint:errcheck // returns nil when ctx is done
	}()
}

// stop stops the watcher and the agent and waits for them.
func (p *pipeline) stop() {
	if p == nil {
		return
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
}

// tokenChanges is the current watcher's channel (nil: never ready).
func (d *daemon) tokenChanges() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pipe == nil || d.pipe.watcher == nil {
		return nil
	}
	return d.pipe.watcher.Changes()
}

// tokenChanged: a rotated token may fix a failing STS exchange at once.
func (d *daemon) tokenChanged() {
	d.mu.Lock()
	p := d.pipe
	d.mu.Unlock()
	d.log.Info("web identity token file changed; retrying failed refreshes now")
	if p.web != nil {
		p.web.TokenChanged()
	}
	p.agent.RefreshNow()
}

// hostsOf is every host the agent keeps tokens for: the registries, the
// mirrors' ECR hosts, and public.ecr.aws with publicECR.
func hostsOf(c *config.Config) []ecrhost.Host {
	hs := c.ECRHosts()
	if c.PublicECR {
		hs = append(hs, publicHost)
	}
	return hs
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
