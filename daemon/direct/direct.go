// Package direct fetches one ECR registry credential straight from AWS, for
// the node's short-lived clients (the kubelet exec plugin and the docker
// credential helper) when the daemon's socket does not answer.
//
// It runs the daemon's own code once: the identity of package identity (web
// identity from the config's roleArn and token file, or the default AWS
// credential chain when there is no roleArn) and the token agent of package
// tokens (one GetAuthorizationToken for the image's partition and region,
// the same validation and error classification), then stops.
//
// The whole fetch is bounded by the caller's context deadline (DefaultBudget
// when it has none), and every AWS client is set up so that the bound is
// never spent on retries: one attempt per SDK call, and, only when the
// default chain needs it, an IMDS client with a short timeout and no
// retries; with a role (the config's or a pod's), IMDS is turned off.
package direct

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin/lookup"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
)

// DefaultBudget bounds a fetch whose context has no deadline. The kubelet
// kills its exec plugin after one minute; a direct fetch ends far sooner.
const DefaultBudget = 5 * time.Second

// IMDSTimeout bounds each call to the EC2 instance metadata service when the
// default chain reaches it. The client makes one attempt per call (the token
// call and, should it fail, the IMDSv1 call), so a node whose IMDS is
// blackholed (hop limit 1 in a container) fails in about two of these.
const IMDSTimeout = time.Second

// Request says what to fetch and with which identity.
type Request struct {
	// Host is the ECR registry.
	Host ecrhost.Host
	// Config is the node's config. Nil means there is none: the default AWS
	// credential chain, with regions from the host.
	Config *config.Config
	// RoleARN and ServiceAccountToken select workload mode (KEP-4412): the
	// role from the pod's service-account annotations, assumed with the
	// pod's token. With RoleARN empty the node's identity is used. The
	// token is a secret: it never appears in an error.
	RoleARN             string
	ServiceAccountToken string
	// SessionName is the STS role session name; default
	// identity.SessionName(hostname).
	SessionName string
	// Log receives the AWS SDK's own lines (see logging.SDK); nil drops them.
	Log *zap.Logger
}

// Fetch returns the credential for r.Host. Errors describe what failed (the
// identity, STS, ECR or the deadline) in one line and never hold a secret.
func Fetch(ctx context.Context, r Request) (lookup.Credential, error) {
	start := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultBudget)
		defer cancel()
	}
	if r.Host.Name == "" {
		return lookup.Credential{}, errors.New("no registry host")
	}
	if r.Host.Public {
		// Anonymous pulls work there; a direct fetch is for private ECR.
		return lookup.Credential{}, fmt.Errorf("%w: %s is Amazon ECR Public: its token comes only from the daemon (publicECR)", lookup.ErrNotFound, r.Host.Name)
	}
	if r.RoleARN != "" && r.ServiceAccountToken == "" {
		return lookup.Credential{}, errors.New("a workload role needs the pod's service-account token")
	}
	f, err := newFetcher(ctx, r)
	if err != nil {
		return lookup.Credential{}, f.scrub(err)
	}
	cred, err := f.run(ctx, start)
	return cred, f.scrub(err)
}

type fetcher struct {
	r         Request
	cfg       *config.Config
	mode      string // what identity is used, for messages
	stsRegion string
	track     tracker
}

func newFetcher(ctx context.Context, r Request) (*fetcher, error) {
	f := &fetcher{r: r, cfg: r.Config}
	if f.cfg == nil {
		f.cfg = config.Default()
	}
	roleARN := f.cfg.AWSECR.RoleARN
	if r.RoleARN != "" {
		roleARN = r.RoleARN
	}
	// ClientLogMode stays 0: no request or response bodies reach the logger.
	sdkLog := logging.SDK(r.Log)
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRetryMaxAttempts(1), awsconfig.WithLogger(sdkLog)}
	if f.cfg.STSRegion != "" {
		opts = append(opts, awsconfig.WithRegion(f.cfg.STSRegion))
	}
	if roleARN != "" {
		// A role is assumed with a web identity token: no instance role,
		// so no IMDS call at all.
		opts = append(opts, awsconfig.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	} else {
		opts = append(opts, awsconfig.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) {
			// imds.New still honours AWS_EC2_METADATA_DISABLED and
			// AWS_EC2_METADATA_SERVICE_ENDPOINT.
			o.Client = imds.New(imds.Options{
				Retryer:    aws.NopRetryer{},
				HTTPClient: &http.Client{Timeout: IMDSTimeout},
				Logger:     sdkLog,
			})
		}))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return f, fmt.Errorf("loading the AWS SDK configuration: %w", err)
	}
	f.stsRegion = awsCfg.Region
	if f.stsRegion == "" {
		f.stsRegion = r.Host.Region
		awsCfg.Region = f.stsRegion
	}

	session := r.SessionName
	if session == "" {
		node, _ := os.Hostname()
		session = identity.SessionName(node)
	}
	var source aws.CredentialsProvider
	switch {
	case r.RoleARN != "":
		f.mode = "the pod's role " + r.RoleARN
		source = aws.NewCredentialsCache(stscreds.NewWebIdentityRoleProvider(f.newSTS(awsCfg), r.RoleARN,
			staticToken(r.ServiceAccountToken), func(o *stscreds.WebIdentityRoleOptions) { o.RoleSessionName = session }))
	case roleARN != "":
		f.mode = "web identity " + roleARN
		web, err := identity.NewWebIdentity(identity.Options{
			STS:         f.newSTS(awsCfg),
			RoleARN:     roleARN,
			SessionName: session,
			TokenFile:   f.cfg.Identity.TokenFile,
			Audience:    f.cfg.Identity.Audience,
			CallTimeout: time.Until(deadline(ctx)),
		})
		if err != nil {
			return f, err
		}
		source = web
	default:
		f.mode = "the default AWS credential chain"
		source = identity.NewDefaultChain(awsCfg.Credentials, nil)
	}
	f.track.source = source
	ecrCfg := awsCfg.Copy()
	ecrCfg.Credentials = &f.track
	f.track.newECR = tokens.NewECRFactory(ecrCfg)
	return f, nil
}

// newSTS is an STS client for AssumeRoleWithWebIdentity (unsigned) with one
// attempt per call.
func (f *fetcher) newSTS(awsCfg aws.Config) identity.STSAPI {
	c := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		o.Credentials = aws.AnonymousCredentials{}
		o.RetryMaxAttempts = 1
	})
	return stsTracked{c: c, t: &f.track}
}

// run lets a token agent make its first attempt for the host and returns
// its outcome, or a timeout error naming the call that did not answer.
func (f *fetcher) run(ctx context.Context, start time.Time) (lookup.Credential, error) {
	host := f.r.Host
	got := make(chan tokens.Entry, 1)
	agent := tokens.NewAgent(tokens.Options{
		NewECR: func(s ecrhost.Service) (tokens.ECRAPI, error) {
			c, err := f.track.newECR(s)
			if err != nil {
				return nil, err
			}
			return ecrTracked{c: c, t: &f.track}, nil
		},
		CallTimeout: time.Until(deadline(ctx)),
		OnChange: func(e tokens.Entry) {
			if e.Host.Name != host.Name {
				return
			}
			select {
			case got <- e:
			default:
			}
		},
	})
	agent.SetRegistries([]ecrhost.Host{host})
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(actx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	timedOut := func() error {
		took := time.Since(start).Round(100 * time.Millisecond)
		return fmt.Errorf("no answer within %s: %s", took, f.track.stuck(f.mode, f.stsRegion, host))
	}
	select {
	case e := <-got:
		if e.Credential == nil && (ctx.Err() != nil || strings.Contains(e.LastError, context.DeadlineExceeded.Error())) {
			return lookup.Credential{}, timedOut() // the budget ran out, not AWS
		}
		if e.Credential == nil || e.Credential.Password == "" {
			msg := e.LastError
			if msg == "" {
				msg = "no credential"
			}
			return lookup.Credential{}, fmt.Errorf("%s (identity: %s)", msg, f.mode)
		}
		c := e.Credential
		return lookup.Credential{Username: c.Username, Password: c.Password, ExpiresAt: c.ExpiresAt, FetchedAt: c.FetchedAt}, nil
	case <-ctx.Done():
		return lookup.Credential{}, timedOut()
	}
}

// scrub keeps the pod's token out of an error, should a service ever echo it.
func (f *fetcher) scrub(err error) error {
	if err == nil || f == nil || f.r.ServiceAccountToken == "" || !strings.Contains(err.Error(), f.r.ServiceAccountToken) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), f.r.ServiceAccountToken, "<redacted>"))
}

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(DefaultBudget)
}

// staticToken hands the pod's token to stscreds.
type staticToken string

func (t staticToken) GetIdentityToken() ([]byte, error) { return []byte(t), nil }

// Call stages, for the timeout message.
const (
	stageNone = iota
	stageCredentials
	stageSTS
	stageECR
)

// tracker remembers which AWS call is in flight, so that a timeout names the
// one that did not answer. It is also the ECR clients' credentials provider.
type tracker struct {
	source aws.CredentialsProvider
	newECR func(ecrhost.Service) (tokens.ECRAPI, error)

	mu          sync.Mutex
	stage       int
	ecrEndpoint string
}

func (t *tracker) set(stage int) (prev int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev, t.stage = t.stage, stage
	return prev
}

// Retrieve gets the identity's credentials for an ECR call.
func (t *tracker) Retrieve(ctx context.Context) (aws.Credentials, error) {
	prev := t.set(stageCredentials)
	c, err := t.source.Retrieve(ctx)
	if err == nil {
		t.set(prev)
	}
	return c, err
}

func (t *tracker) stuck(mode, stsRegion string, host ecrhost.Host) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.stage {
	case stageSTS:
		return fmt.Sprintf("STS AssumeRoleWithWebIdentity (region %s) did not answer for %s", stsRegion, mode)
	case stageCredentials:
		return "no AWS credentials from " + mode
	case stageECR:
		ep := t.ecrEndpoint
		if ep == "" {
			ep = "region " + host.Region
		}
		return fmt.Sprintf("ECR GetAuthorizationToken at %s did not answer", ep)
	}
	return "AWS did not answer"
}

// stsTracked marks the STS stage and keeps one attempt per call.
type stsTracked struct {
	c *sts.Client
	t *tracker
}

func (s stsTracked) AssumeRoleWithWebIdentity(ctx context.Context, in *sts.AssumeRoleWithWebIdentityInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	prev := s.t.set(stageSTS)
	out, err := s.c.AssumeRoleWithWebIdentity(ctx, in, optFns...)
	if err == nil {
		s.t.set(prev)
	}
	return out, err
}

// ecrTracked marks the ECR stage and makes one attempt per call (the
// factory's clients allow two, for the daemon).
type ecrTracked struct {
	c tokens.ECRAPI
	t *tracker
}

func (e ecrTracked) GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, optFns ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error) {
	if ep, err := tokens.Endpoint(ctx, e.c); err == nil {
		e.t.mu.Lock()
		e.t.ecrEndpoint = ep
		e.t.mu.Unlock()
	}
	e.t.set(stageECR)
	optFns = append(optFns, func(o *ecr.Options) { o.RetryMaxAttempts = 1 })
	return e.c.GetAuthorizationToken(ctx, in, optFns...)
}
