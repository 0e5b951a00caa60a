package direct

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

const (
	roleNode = "arn:aws:iam::111122223333:role/node-pull"
	roleTeam = "arn:aws:iam::111122223333:role/team-a-pull"
)

// setup starts a fake AWS, points the SDK at it with every other source of
// settings cleared, and returns a config using web identity (roleNode).
func setup(t *testing.T) (*fakeaws.Fake, *config.Config) {
	t.Helper()
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	dir := t.TempDir()
	f.UseOnly(t)
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(f.MintToken(fakeaws.TokenSpec{})), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test", []byte("awsECR:\n  roleArn: "+roleNode+"\nidentity:\n  tokenFile: "+tok+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return f, cfg
}

func mustHost(t *testing.T, s string) ecrhost.Host {
	t.Helper()
	h, err := ecrhost.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestFetch(t *testing.T) {
	host := "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
	tests := []struct {
		name    string
		prepare func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request
		sts     int    // AssumeRoleWithWebIdentity calls
		role    string // the role STS issued credentials for
		err     string // substring; "" means success
		ecr     int    // GetAuthorizationToken calls
	}{
		{name: "web identity from the config", sts: 1, ecr: 1, role: roleNode,
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				return Request{Host: mustHost(t, host), Config: cfg}
			}},
		{name: "no config: default chain, regions from the host", ecr: 1,
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				f.AddStaticCredentials("AKIDNODE", "node-secret", "", time.Time{})
				t.Setenv("AWS_ACCESS_KEY_ID", "AKIDNODE")
				t.Setenv("AWS_SECRET_ACCESS_KEY", "node-secret")
				return Request{Host: mustHost(t, host)}
			}},
		{name: "workload role with the pod's token", sts: 1, ecr: 1, role: roleTeam,
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				tok := f.MintToken(fakeaws.TokenSpec{Subject: "system:serviceaccount:team-a:puller"})
				return Request{Host: mustHost(t, host), Config: cfg, RoleARN: roleTeam, ServiceAccountToken: tok}
			}},
		{name: "workload role without a token", err: "needs the pod's service-account token",
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				return Request{Host: mustHost(t, host), Config: cfg, RoleARN: roleTeam}
			}},
		{name: "one attempt per ECR call: a throttle is not retried", sts: 1, ecr: 1, err: "throttled by AWS",
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				f.InjectErrors(fakeaws.ActionGetAuthorizationToken, fakeaws.ErrECRThrottling)
				return Request{Host: mustHost(t, host), Config: cfg}
			}},
		{name: "one attempt per STS call", sts: 1, err: "AWS service error",
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				f.InjectErrors(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrServiceUnavailable)
				return Request{Host: mustHost(t, host), Config: cfg}
			}},
		{name: "ECR Public", err: "ECR Public",
			prepare: func(t *testing.T, f *fakeaws.Fake, cfg *config.Config) Request {
				return Request{Host: mustHost(t, "public.ecr.aws"), Config: cfg}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, cfg := setup(t)
			r := tt.prepare(t, f, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), DefaultBudget)
			defer cancel()
			cred, err := Fetch(ctx, r)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err %v, want %q", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if err != nil {
				for _, s := range append(f.Secrets(), r.ServiceAccountToken) {
					if s != "" && strings.Contains(err.Error(), s) {
						t.Errorf("error holds a secret: %v", err)
					}
				}
			} else {
				tok, ok := f.LookupECRToken(cred.Password)
				if !ok || cred.Username != "AWS" || tok.Region != "eu-west-1" || !cred.ExpiresAt.Equal(tok.Expires) || cred.FetchedAt.IsZero() {
					t.Errorf("credential %v is not the fake's eu-west-1 token", cred)
				}
			}
			if got := f.Calls(fakeaws.ActionAssumeRoleWithWebIdentity); got != tt.sts {
				t.Errorf("%d STS calls, want %d", got, tt.sts)
			}
			if got := f.Calls(fakeaws.ActionGetAuthorizationToken); got != tt.ecr {
				t.Errorf("%d ECR calls, want %d", got, tt.ecr)
			}
			if tt.role != "" {
				for _, c := range f.IssuedCredentials() {
					if c.RoleARN != tt.role {
						t.Errorf("STS issued credentials for %s, want %s", c.RoleARN, tt.role)
					}
				}
			}
		})
	}
}

// TestFetchDeadline: a hanging service ends the fetch at the context's
// deadline with a message naming the call that did not answer.
func TestFetchDeadline(t *testing.T) {
	host := "111122223333.dkr.ecr.us-west-2.amazonaws.com"
	for _, tt := range []struct {
		action fakeaws.Action
		want   string
	}{
		{fakeaws.ActionAssumeRoleWithWebIdentity, "STS AssumeRoleWithWebIdentity (region us-west-2) did not answer for web identity " + roleNode},
		{fakeaws.ActionGetAuthorizationToken, "ECR GetAuthorizationToken at http://"},
	} {
		t.Run(string(tt.action), func(t *testing.T) {
			f, cfg := setup(t)
			f.HangConnections(tt.action, -1)
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := Fetch(ctx, Request{Host: mustHost(t, host), Config: cfg})
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "no answer within") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want %q", err, tt.want)
			}
			if took > time.Second {
				t.Errorf("took %s past a 700ms deadline", took)
			}
		})
	}
}
