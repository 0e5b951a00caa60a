package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// roleAnnotations name the role of a pod's pulls (see api.RoleAnnotations).
var roleAnnotations = api.RoleAnnotations()

// Credentials answers GET /v1/credentials with the node's identity. A
// configured (or already on-demand) host with a usable token is a lock-free
// map lookup with no parsing and no AWS call; any other ECR host is fetched
// on demand through Agent.Get, within ctx (the API's request deadline).
func (d *daemon) Credentials(ctx context.Context, image string) (api.Credentials, error) {
	spelled := registryAsSpelled(image)
	p := d.currentPipe()
	if p == nil {
		return api.Credentials{}, api.Errorf(api.CodeNotReady, "ecr-node-auth is starting: no credentials yet")
	}
	if e, ok := p.agent.Lookup(spelled); ok && e.Credential.Usable(time.Now()) {
		return answer(spelled, e), nil
	}
	h, err := d.ecrHost(image, spelled)
	if err != nil {
		return api.Credentials{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, api.CredentialsTimeout)
	defer cancel()
	e, err := p.agent.Get(ctx, h)
	if err != nil {
		if h.Public {
			// "No credentials" lets the kubelet and docker pull anonymously,
			// where an error would fail the pull.
			return api.Credentials{}, api.Errorf(api.CodeNoCredentials, "no ECR Public token for %s (pull anonymously, at the lower anonymous rate limit): %s", h.Name, oneLine(err.Error()))
		}
		return api.Credentials{}, getError(h, err)
	}
	return answer(spelled, e), nil
}

// WorkloadCredentials answers POST /v1/credentials (KEP-4412): with a role
// annotation, the pod's role assumed with its service-account token, cached
// per role and service account; without one, the node's identity.
func (d *daemon) WorkloadCredentials(ctx context.Context, req api.WorkloadRequest) (api.Credentials, error) {
	role := roleFrom(req.ServiceAccountAnnotations)
	if role == "" {
		return d.Credentials(ctx, req.Image)
	}
	if req.ServiceAccountToken == "" {
		return api.Credentials{}, api.Errorf(api.CodeBadRequest,
			"the service account names role %s but the request carries no serviceAccountToken; set tokenAttributes.serviceAccountTokenAudience in the kubelet's CredentialProviderConfig", role)
	}
	spelled := registryAsSpelled(req.Image)
	h, err := d.ecrHost(req.Image, spelled)
	if err != nil {
		return api.Credentials{}, err
	}
	return d.workloadCredentials(ctx, role, req.ServiceAccountToken, h, spelled)
}

// Registries answers GET /v1/registries: hosts holding a usable token.
func (d *daemon) Registries() []string {
	p := d.currentPipe()
	if p == nil {
		return []string{}
	}
	now := time.Now()
	out := []string{}
	for _, e := range p.agent.Snapshot() {
		if e.Credential.Usable(now) {
			out = append(out, e.Host.Name)
		}
	}
	sort.Strings(out)
	return out
}

// currentPipe is the pipeline in use, without a lock.
func (d *daemon) currentPipe() *pipeline { return d.cur.Load() }

func answer(registry string, e tokens.Entry) api.Credentials {
	src := api.SourceConfigured
	if e.OnDemand {
		src = api.SourceOnDemand
	}
	return api.Credentials{Registry: registry, Username: e.Credential.Username, Password: e.Credential.Password,
		ExpiresAt: e.Credential.ExpiresAt, FetchedAt: e.Credential.FetchedAt, Source: src}
}

// ecrHost parses image and refuses what the daemon cannot serve: not ECR
// (404), ECR Public without publicECR and other partitions (404), malformed
// ECR hosts (400).
func (d *daemon) ecrHost(image, spelled string) (ecrhost.Host, error) {
	h, err := ecrhost.Parse(image)
	if err != nil {
		var pe *ecrhost.ParseError
		reason := err.Error()
		if errors.As(err, &pe) {
			reason = pe.Reason
		}
		if !looksLikeECR(spelled) {
			return h, api.Errorf(api.CodeNotECR, "%s is not an Amazon ECR registry: ecr-node-auth serves only ECR hosts (<account>.dkr.ecr.<region>.amazonaws.com and the other ECR forms)", quoteHost(spelled))
		}
		return h, api.Errorf(api.CodeBadRequest, "%s is not a valid Amazon ECR registry: %s", quoteHost(spelled), reason)
	}
	d.mu.Lock()
	part, public := d.cfg.AWSECR.RolePartition(), d.cfg.PublicECR
	d.mu.Unlock()
	if h.Public && !public {
		return h, api.Errorf(api.CodeNoCredentials, "%s is Amazon ECR Public and publicECR is off in the config: public images pull anonymously (set publicECR: true for authenticated pulls)", h.Name)
	}
	if part != "" && h.Partition != part {
		return h, api.Errorf(api.CodeNotECR, "%s is in AWS partition %s but this daemon's identity (awsECR.roleArn) is in partition %s: it cannot get credentials for it", h.Name, h.Partition, part)
	}
	return h, nil
}

// getError maps Agent.Get's errors to API errors.
func getError(h ecrhost.Host, err error) error {
	switch {
	case errors.Is(err, tokens.ErrTooManyOnDemand):
		return api.Errorf(api.CodeTooMany, "%v", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return api.Errorf(api.CodeNotReady, "no ECR token for %s within %s: %v", h.Name, api.CredentialsTimeout, err)
	}
	if strings.Contains(err.Error(), h.Name) {
		return api.Errorf(api.CodeNotReady, "%v", err) // already names the host and the last error
	}
	return api.Errorf(api.CodeNotReady, "no usable ECR token for %s: %v", h.Name, err)
}

// registryAsSpelled is the registry part of an image reference as written
// (":443" kept), without a scheme.
func registryAsSpelled(image string) string {
	s := strings.TrimSpace(image)
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return s
}

// looksLikeECR tells a malformed ECR host (400, with the parser's reason)
// from a host that is not ECR at all (404).
func looksLikeECR(host string) bool {
	h := strings.ToLower(host)
	for _, m := range []string{".dkr.ecr.", ".dkr.ecr-fips.", ".dkr-ecr.", ".dkr-ecr-fips.", "dkr.ecr", "public.ecr.aws", "ecr-public.aws.com"} {
		if strings.Contains(h, m) {
			return true
		}
	}
	return false
}

func quoteHost(h string) string {
	if h == "" {
		return `""`
	}
	if len(h) > 200 {
		h = h[:200] + "..."
	}
	return fmt.Sprintf("%q", h)
}

func roleFrom(ann map[string]string) string {
	for _, k := range roleAnnotations {
		if v := strings.TrimSpace(ann[k]); v != "" {
			return v
		}
	}
	return ""
}
