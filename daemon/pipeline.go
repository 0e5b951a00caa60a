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
	loadOpts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRetryMaxAttempts(sdkRetryMaxAttempts)}
	if d.metrics != nil {
		// Every client built from this config (STS, ECR, workload STS) is
		// instrumented at the SDK boundary.
		loadOpts = append(loadOpts, awsconfig.WithAPIOptions([]func(*middleware.Stack) error{d.metrics.AWSMiddleware()}))
	}
	if cfg.STSRegion != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(cfg.STSRegion))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, err
	}
	log := d.log.Named("identity")
	p := &pipeline{key: keyOf(cfg), log: log}
	if cfg.AWSECR.RoleARN == "" {
		p.source = identity.NewDefaultChain(awsCfg.Credentials, nil)
		log.Info("using the default AWS credential chain (no awsECR.roleArn)")
	} else {
		if err := d.newWebIdentity(ctx, p, cfg, awsCfg, log); err != nil {
			return nil, err
		}
	}
	ecrCfg := awsCfg.Copy()
	ecrCfg.Credentials = p.source
	p.agent = tokens.NewAgent(tokens.Options{
		Log:      d.log.Named("tokens"),
		NewECR:   tokens.NewECRFactory(ecrCfg),
		OnChange: d.onChange,
		OnRemove: d.onRemove,
	})
	p.workloads = d.newWorkloads(awsCfg, cfg)
	p.agent.SetRegistries(hostsOf(cfg))
	return p, nil
}

func (d *daemon) newWebIdentity(ctx context.Context, p *pipeline, cfg *config.Config, awsCfg aws.Config, log *zap.Logger) error {
	region := awsCfg.Region
	override := firstNonEmpty(os.Getenv("AWS_ENDPOINT_URL_STS"), os.Getenv("AWS_ENDPOINT_URL"), aws.ToString(awsCfg.BaseEndpoint))
	fips := os.Getenv("AWS_USE_FIPS_ENDPOINT") == "true"
	if ep, err := identity.STSEndpoint(ctx, region, fips && override == "", override); err != nil {
		log.Warn("cannot resolve the STS endpoint; credentials will fail until it is fixed", zap.Error(err))
	} else {
		p.stsEndpoint = ep
		log.Info("using web identity", zap.String("role_arn", cfg.AWSECR.RoleARN), zap.String("sts_endpoint", ep),
			zap.String("region", region), zap.String("region_from", cfg.STSRegionFrom),
			zap.String("token_file", cfg.Identity.TokenFile), zap.String("audience", cfg.Identity.Audience))
	}
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
		return err
	}
	w, err := identity.NewWatcher(cfg.Identity.TokenFile, identity.WatcherOptions{Log: log})
	if err != nil {
		return err
	}
	p.source, p.web, p.watcher = web, web, w
	return nil
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

// hostsOf is the hosts the agent keeps tokens for: the registries, and
// public.ecr.aws with publicECR.
func hostsOf(c *config.Config) []ecrhost.Host {
	hs := make([]ecrhost.Host, len(c.Registries), len(c.Registries)+1)
	for i, r := range c.Registries {
		hs[i] = r.Host
	}
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
