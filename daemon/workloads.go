package daemon

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// workloadCredentials serves a pod's role (KEP-4412 mode).
func (d *daemon) workloadCredentials(ctx context.Context, role, saToken string, h ecrhost.Host, spelled string) (api.Credentials, error) {
	p := d.currentPipe()
	if p == nil || p.workloads == nil {
		return api.Credentials{}, api.Errorf(api.CodeNotReady, "service-account (KEP-4412) credentials are disabled; see the daemon's log")
	}
	ctx, cancel := context.WithTimeout(ctx, api.CredentialsTimeout)
	defer cancel()
	c, err := p.workloads.Get(ctx, tokens.WorkloadRequest{RoleARN: role, ServiceAccountToken: saToken, Host: h})
	if err != nil {
		return api.Credentials{}, workloadError(role, h, err)
	}
	return api.Credentials{Registry: spelled, Username: c.Username, Password: c.Password,
		ExpiresAt: c.ExpiresAt, FetchedAt: c.FetchedAt, Source: api.SourceWorkload}, nil
}

// workloadError maps Workloads.Get's errors (which never hold the token) to
// API errors: the caller's mistakes (a role that is no role ARN, a token that
// is malformed or expired) are 400; AWS refusals and outages are 503.
func workloadError(role string, h ecrhost.Host, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return api.Errorf(api.CodeNotReady, "no ECR token for %s with role %s within %s: %v", h.Name, role, api.CredentialsTimeout, err)
	}
	var c *refresh.Classified
	if errors.As(err, &c) && c.Class == refresh.Permanent && c.Code == "" && !errors.Is(err, context.Canceled) {
		return api.Errorf(api.CodeBadRequest, "cannot use role %s for %s: %v", role, h.Name, err)
	}
	return api.Errorf(api.CodeNotReady, "no usable ECR token for %s with role %s: %v", h.Name, role, err)
}

// workloadStatus lists the per role and service-account entries.
func (d *daemon) workloadStatus() []api.Workload {
	p := d.currentPipe()
	if p == nil || p.workloads == nil {
		return nil
	}
	snap := p.workloads.Snapshot()
	out := make([]api.Workload, 0, len(snap))
	for _, e := range snap {
		regs := e.Registries
		if regs == nil {
			regs = []string{}
		}
		out = append(out, api.Workload{RoleARN: e.RoleARN, Subject: e.Subject, Registries: regs,
			CredentialsExpireAt: e.CredentialsExpireAt, LastError: e.LastError})
	}
	return out
}

// newWorkloads builds the KEP-4412 credential cache for a pipeline: its own
// anonymous STS client (AssumeRoleWithWebIdentity is unsigned) and ECR
// clients built like the node's, all instrumented through awsCfg.
func (d *daemon) newWorkloads(awsCfg aws.Config, cfg *config.Config) *tokens.Workloads {
	stsCfg := awsCfg.Copy()
	if stsCfg.Region == "" {
		// No awsECR.region, AWS_REGION or registry: the aws partition's
		// STS answers in us-east-1.
		stsCfg.Region = "us-east-1"
	}
	stsClient := sts.NewFromConfig(stsCfg, func(o *sts.Options) { o.Credentials = aws.AnonymousCredentials{} })
	ecrBase := awsCfg.Copy()
	w, err := tokens.NewWorkloads(tokens.WorkloadOptions{
		Log:      d.log.Named("workloads"),
		STS:      stsClient,
		NewECR:   tokens.WorkloadECRFactory(ecrBase),
		Audience: cfg.Identity.Audience,
	})
	if err != nil {
		d.log.Error("service-account (KEP-4412) credentials disabled", zap.Error(err))
		return nil
	}
	return w
}
