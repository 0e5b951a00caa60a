package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/direct"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin/lookup"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// Budgets of the credential clients (the kubelet plugin and the docker
// helper). The whole run, daemon and fallback included, ends within
// clientBudget: the kubelet kills a plugin after one minute, and docker sets
// no limit at all. A daemon that answers does so in well under a
// millisecond; one that accepts but does not answer gets daemonBudget, then
// the direct fetch has what is left.
const (
	clientBudget = direct.DefaultBudget
	daemonBudget = 2 * time.Second
)

// credSource answers credential lookups from the daemon's socket and, when
// no daemon answers, straight from AWS (package direct).
type credSource struct {
	socket     string
	configPath string
	client     *api.Client
	stderr     io.Writer
	// loadConfig reads the config for the fallback (config.Load).
	loadConfig func(string) (*config.Config, error)
}

func newCredSource(socketFlag, configPath string, stderr io.Writer) *credSource {
	sock, _ := api.ResolveSocket(socketFlag, configPath)
	return &credSource{socket: sock, configPath: configPath, client: api.NewClient(sock), stderr: stderr, loadConfig: config.Load}
}

// kubeletLookup is the kubelet plugin's lookup: the node's credential, or,
// when the request carries a service-account token (KEP-4412), the pod's.
func (s *credSource) kubeletLookup(ctx context.Context, host ecrhost.Host) (lookup.Credential, error) {
	req, _ := kubeletplugin.RequestFromContext(ctx)
	if req.ServiceAccountToken == "" {
		return s.nodeLookup(ctx, host)
	}
	image := req.Image
	if image == "" {
		image = host.Name
	}
	dctx, cancel := context.WithTimeout(ctx, daemonBudget)
	c, err := s.client.WorkloadCredentials(dctx, api.WorkloadRequest{
		Image:                     image,
		ServiceAccountToken:       req.ServiceAccountToken,
		ServiceAccountAnnotations: req.ServiceAccountAnnotations,
	})
	cancel()
	if err == nil {
		return fromAPI(c), nil
	}
	return s.fallback(ctx, host, err, workloadRole(req.ServiceAccountAnnotations), req.ServiceAccountToken)
}

// nodeLookup asks the daemon for the node's credential for host.
func (s *credSource) nodeLookup(ctx context.Context, host ecrhost.Host) (lookup.Credential, error) {
	dctx, cancel := context.WithTimeout(ctx, daemonBudget)
	c, err := s.client.Credentials(dctx, host.Name)
	cancel()
	if err == nil {
		return fromAPI(c), nil
	}
	return s.fallback(ctx, host, err, "", "")
}

// fallback handles a daemon error: not-ECR and no-credentials (pull
// anonymously) become lookup.ErrNotFound, an
// unreachable daemon a direct fetch, anything else is returned as it is.
func (s *credSource) fallback(ctx context.Context, host ecrhost.Host, daemonErr error, role, token string) (lookup.Credential, error) {
	switch {
	case errors.Is(daemonErr, api.ErrNotECR), errors.Is(daemonErr, api.ErrNoCredentials):
		return lookup.Credential{}, fmt.Errorf("%w: %s", lookup.ErrNotFound, oneLineFull(daemonErr.Error()))
	case !errors.Is(daemonErr, api.ErrDaemonUnreachable):
		return lookup.Credential{}, errors.New(oneLineFull(daemonErr.Error()))
	}
	where := s.socket + unreachableReason(daemonErr)
	if ctx.Err() != nil {
		return lookup.Credential{}, fmt.Errorf("ecr-node-auth daemon not reachable at %s and no time is left for a direct fetch; check `systemctl status ecr-node-auth`", where)
	}
	if host.Service().Public {
		// Anonymous pulls from ECR Public work: "no credentials" lets the
		// client try them, where an error would fail the pull.
		return lookup.Credential{}, fmt.Errorf("%w: ecr-node-auth daemon not reachable at %s; ECR Public credentials come only from the daemon", lookup.ErrNotFound, where)
	}
	cfg, err := s.fallbackConfig()
	if err == nil {
		// The SDK's warnings (e.g. an IMDS fallback) go to stderr as log
		// lines; its debug lines are dropped.
		req := direct.Request{Host: host, Config: cfg, Log: zap.New(zapcore.NewCore(
			zapcore.NewConsoleEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(s.stderr), zapcore.WarnLevel))}
		if role != "" {
			req.RoleARN, req.ServiceAccountToken = role, token
		}
		var cred lookup.Credential
		if cred, err = direct.Fetch(ctx, req); err == nil {
			fmt.Fprintf(s.stderr, "ecr-node-auth: daemon not reachable at %s; fetched the credential for %s directly from AWS (check `systemctl status ecr-node-auth`)\n", where, host.Name)
			return cred, nil
		}
	}
	reason := oneLineFull(err.Error())
	if token != "" {
		reason = strings.ReplaceAll(reason, token, "<redacted>")
	}
	return lookup.Credential{}, fmt.Errorf("ecr-node-auth daemon not reachable at %s and direct fetch failed: %s; check `systemctl status ecr-node-auth`", where, reason)
}

// fallbackConfig is the node's config for a direct fetch: nil when the file
// does not exist (the default chain, regions from the host), an error when
// it is invalid.
func (s *credSource) fallbackConfig() (*config.Config, error) {
	if s.configPath == "" {
		return nil, nil
	}
	cfg, err := s.loadConfig(s.configPath)
	if errors.Is(err, config.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// registries lists the hosts the daemon serves; with no daemon, the
// config's registries (a get for them is fetched directly).
func (s *credSource) registries(ctx context.Context) ([]string, error) {
	dctx, cancel := context.WithTimeout(ctx, daemonBudget)
	hosts, err := s.client.Registries(dctx)
	cancel()
	if err == nil || !errors.Is(err, api.ErrDaemonUnreachable) {
		return hosts, err
	}
	cfg, cerr := s.fallbackConfig()
	if cerr != nil || cfg == nil {
		fmt.Fprintf(s.stderr, "ecr-node-auth: daemon not reachable at %s%s; no registries listed\n", s.socket, unreachableReason(err))
		return nil, nil
	}
	for _, r := range cfg.Registries {
		hosts = append(hosts, r.Host.Name)
	}
	fmt.Fprintf(s.stderr, "ecr-node-auth: daemon not reachable at %s%s; listing the registries of %s\n", s.socket, unreachableReason(err), s.configPath)
	return hosts, nil
}

// workloadRole is the role a pod's service-account annotations name, in the
// order of kubeletplugin.DefaultAnnotationKeys; "" means the node identity.
func workloadRole(annotations map[string]string) string {
	for _, k := range kubeletplugin.DefaultAnnotationKeys() {
		if v := strings.TrimSpace(annotations[k]); v != "" {
			return v
		}
	}
	return ""
}

// unreachableReason adds why the socket did not answer, when it is not
// simply absent or refused.
func unreachableReason(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "permission denied"):
		return " (permission denied: the socket is for root and the socketGroup)"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "deadline exceeded"), strings.Contains(msg, "Timeout"):
		return fmt.Sprintf(" (no answer within %s)", daemonBudget)
	}
	return ""
}

func fromAPI(c api.Credentials) lookup.Credential {
	return lookup.Credential{Username: c.Username, Password: c.Password, ExpiresAt: c.ExpiresAt, FetchedAt: c.FetchedAt}
}

// oneLineFull joins a multi-line message (errors.Join) into one line.
func oneLineFull(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
