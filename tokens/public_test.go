package tokens

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"

	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

const publicFailedMsg = "ECR Public token fetch failed; pulls from ECR Public stay anonymous (lower rate limit) until it works"

func publicHost(t *testing.T) ecrhost.Host {
	t.Helper()
	h, err := ecrhost.Parse("public.ecr.aws")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// publicSetup runs a fake AWS on the harness's fake clock and an agent whose
// clients are the real SDK, loaded by the default loader from env (with
// AWS_REGION as given and AWS_ENDPOINT_URL_ECR_PUBLIC pointing at the fake).
func publicSetup(t *testing.T, region string, opt ...func(*Options)) (*harness, *fakeaws.Fake) {
	t.Helper()
	isolateAWSEnv(t)
	h := newHarness(t, 0, 0.5, opt...)
	// The SDK signs with real time; the fake checks X-Amz-Date against it.
	f, err := fakeaws.New(fakeaws.Options{Clock: h.clock, SigV4Clock: clock.RealClock{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	f.AddStaticCredentials("AKIAPUBLICTEST", "public-test-secret", "", time.Time{})
	for k, v := range f.Env() {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_REGION", region)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAPUBLICTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "public-test-secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != region {
		t.Fatalf("loaded region %q, want %q", cfg.Region, region)
	}
	h.agent.newECR = NewECRFactory(cfg)
	return h, f
}

// The ecr-public token is always requested in us-east-1, whatever the
// node's region (field case 13), and the fake refuses any other region.
func TestPublicRegionForcedToUSEast1(t *testing.T) {
	for _, region := range []string{"ap-northeast-1", "eu-west-1", "us-east-1"} {
		t.Run(region, func(t *testing.T) {
			h, f := publicSetup(t, region)
			pub := publicHost(t)
			h.start(pub)
			e := h.lookup(pub.Name)
			if !e.Credential.Valid(h.clock.Now()) || e.LastError != "" || !e.BestEffort {
				t.Fatalf("entry %+v", e)
			}
			tok, ok := f.LookupECRToken(e.Credential.Password)
			if !ok || !tok.Public || tok.Region != PublicRegion || e.Credential.Username != "AWS" {
				t.Errorf("credential is not an ECR Public token the fake issued in us-east-1: %+v (found %t)", tok, ok)
			}
			if !e.Credential.ExpiresAt.Equal(tok.Expires) {
				t.Errorf("expires %s, fake says %s", e.Credential.ExpiresAt, tok.Expires)
			}
			log := f.CallLog()
			if len(log) != 1 || log[0].Action != fakeaws.ActionPublicGetAuthorizationToken || log[0].Region != "us-east-1" || log[0].Status != 200 {
				t.Errorf("call log %+v, want one ecr-public call signed for us-east-1", log)
			}
			if f.Calls(fakeaws.ActionGetAuthorizationToken) != 0 {
				t.Error("the private ECR API was called for public.ecr.aws")
			}
		})
	}
}

// With no endpoint override the public client resolves the us-east-1 API
// (dual-stack for ecr-public.aws.com) whatever the node's region.
func TestPublicEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name, host string
		env        map[string]string
		want       string
	}{
		{"standard", "public.ecr.aws", nil, "https://api.ecr-public.us-east-1.amazonaws.com"},
		{"dual-stack host", "ecr-public.aws.com", nil, "https://ecr-public.us-east-1.api.aws"},
		{"FIPS env ignored", "public.ecr.aws", map[string]string{"AWS_USE_FIPS_ENDPOINT": "true"}, "https://api.ecr-public.us-east-1.amazonaws.com"},
		{"AWS_ENDPOINT_URL_ECR_PUBLIC", "public.ecr.aws", map[string]string{"AWS_ENDPOINT_URL_ECR_PUBLIC": "http://127.0.0.1:4566"}, "http://127.0.0.1:4566"},
		{"AWS_ENDPOINT_URL_ECR does not apply", "public.ecr.aws", map[string]string{"AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:4566"}, "https://api.ecr-public.us-east-1.amazonaws.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadConfig(t, tc.env) // region ap-northeast-1
			h, err := ecrhost.Parse(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			api, err := NewECRFactory(cfg)(h.Service())
			if err != nil {
				t.Fatal(err)
			}
			got, err := Endpoint(t.Context(), api)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("endpoint %s, want %s", got, tc.want)
			}
			if o := api.(*publicClient).c.Options(); o.Region != PublicRegion || o.RetryMaxAttempts != sdkRetryMaxAttempts {
				t.Errorf("client region %s retries %d", o.Region, o.RetryMaxAttempts)
			}
		})
	}
}

// A failing ecr-public call is logged once at warn across many retries,
// again when the reason changes and after a recovery; the agent stays ready
// and the retries follow the permanent/transient backoff.
func TestPublicFailureLoggedOnce(t *testing.T) {
	accessDenied := fakeaws.APIError{Code: "AccessDeniedException",
		Message: "User: arn:aws:iam::111122223333:user/node is not authorized to perform: ecr-public:GetAuthorizationToken"}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, h *harness, f *fakeaws.Fake)
		fix   func(t *testing.T, h *harness, f *fakeaws.Fake)
		class string
		code  string
	}{
		{"access denied",
			func(_ *testing.T, _ *harness, f *fakeaws.Fake) {
				f.InjectErrorAlways(fakeaws.ActionPublicGetAuthorizationToken, accessDenied)
			},
			func(_ *testing.T, _ *harness, f *fakeaws.Fake) {
				f.ClearFaults(fakeaws.ActionPublicGetAuthorizationToken)
			},
			"permanent", "AccessDeniedException"},
		{"no credentials",
			func(t *testing.T, h *harness, f *fakeaws.Fake) {
				cfg := loadedConfig(t)
				cfg.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
					return aws.Credentials{}, errors.New("no EC2 IMDS role found")
				})
				h.agent.newECR = NewECRFactory(cfg)
			},
			func(t *testing.T, h *harness, f *fakeaws.Fake) {
				h.agent.mu.Lock()
				for _, s := range h.agent.services {
					s.client = nil // rebuilt from the working config
				}
				h.agent.newECR = NewECRFactory(loadedConfig(t))
				h.agent.mu.Unlock()
			},
			"transient", ""},
		{"unreachable",
			func(t *testing.T, h *harness, f *fakeaws.Fake) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				dead := "http://" + ln.Addr().String()
				ln.Close()
				t.Setenv("AWS_ENDPOINT_URL_ECR_PUBLIC", dead)
				h.agent.newECR = NewECRFactory(loadedConfig(t))
			},
			func(t *testing.T, h *harness, f *fakeaws.Fake) {
				t.Setenv("AWS_ENDPOINT_URL_ECR_PUBLIC", f.ECRPublicURL())
				h.agent.mu.Lock()
				for _, s := range h.agent.services {
					s.client = nil
				}
				h.agent.newECR = NewECRFactory(loadedConfig(t))
				h.agent.mu.Unlock()
			},
			"transient", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A short re-warn period shows that it does not apply here.
			h, f := publicSetup(t, "ap-northeast-1", func(o *Options) { o.RewarnEvery = 5 * time.Minute })
			tc.setup(t, h, f)
			pub := publicHost(t)
			h.start(pub)
			const retries = 8
			prev := h.lookup(pub.Name).LastAttempt
			for i := range retries {
				at := h.fireNext()
				e := h.lookup(pub.Name)
				if !e.LastAttempt.Equal(at) || e.Attempts != i+2 {
					t.Fatalf("retry %d: attempt at %s (planned %s), %d attempts", i, e.LastAttempt, at, e.Attempts)
				}
				gap := e.LastAttempt.Sub(prev)
				if tc.class == "permanent" && gap < time.Minute {
					t.Errorf("retry %d after %s: permanent errors back off for minutes", i, gap)
				}
				if gap < time.Second {
					t.Errorf("retry %d after %s: tight loop", i, gap)
				}
				prev = e.LastAttempt
			}
			e := h.lookup(pub.Name)
			if e.Credential != nil || e.ErrorClass != tc.class || e.ErrorCode != tc.code || e.LastError == "" {
				t.Errorf("entry %+v", e)
			}
			if !h.agent.Ready() {
				t.Error("a failing ECR Public token made the agent not ready")
			}
			warns := func() []string {
				var out []string
				for _, l := range h.logs.FilterMessage(publicFailedMsg).All() {
					if l.Level >= zapcore.WarnLevel {
						out = append(out, l.ContextMap()["reason"].(string))
					}
					if l.Level > zapcore.WarnLevel {
						t.Errorf("logged at %s: %+v", l.Level, l.ContextMap())
					}
				}
				return out
			}
			if w := warns(); len(w) != 1 {
				t.Fatalf("%d warnings over %d attempts, want 1: %v", len(w), retries+1, w)
			}
			if n := h.logs.FilterMessage(publicFailedMsg).Len(); n != retries+1 {
				t.Errorf("%d failure lines (warn + debug), want %d", n, retries+1)
			}
			// Several re-warn periods of retries later: still the one warning.
			for h.clock.Now().Before(t0.Add(20 * time.Minute)) {
				h.fireNext()
			}
			if w := warns(); len(w) != 1 {
				t.Errorf("after 20m of retries: %d warnings, want 1", len(w))
			}

			// Recovery: a token, an info line; a new failure warns again.
			tc.fix(t, h, f)
			h.fireNext()
			e = h.lookup(pub.Name)
			if !e.Credential.Valid(h.clock.Now()) || e.LastError != "" {
				t.Fatalf("not recovered: %+v", e)
			}
			if _, ok := f.LookupECRToken(e.Credential.Password); !ok {
				t.Error("recovered credential not issued by the fake")
			}
			f.InjectErrorAlways(fakeaws.ActionPublicGetAuthorizationToken, accessDenied)
			h.fireNext() // the planned refresh fails
			h.fireNext()
			w := warns()
			if len(w) != 2 {
				t.Fatalf("warnings after recovery and a new failure: %v, want 2", w)
			}
			// The reason changes: one more warning.
			f.ClearFaults(fakeaws.ActionPublicGetAuthorizationToken)
			f.InjectErrorAlways(fakeaws.ActionPublicGetAuthorizationToken, fakeaws.ErrECRThrottling)
			h.fireNext()
			h.fireNext()
			if w := warns(); len(w) != 3 || w[2] != "throttled by AWS" {
				t.Errorf("warnings after the reason changed: %v", w)
			}
			for _, s := range f.Secrets() {
				for _, l := range h.logs.All() {
					for k, v := range l.ContextMap() {
						if str, ok := v.(string); ok && strings.Contains(str, s) {
							t.Errorf("secret in log field %s of %q", k, l.Message)
						}
					}
				}
			}
		})
	}
}

// loadedConfig loads the SDK config from the test's environment.
func loadedConfig(t *testing.T) aws.Config {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The public token is cached against its own expiry and replaced by the
// timing rule, before it expires: no call in between, one call per refresh.
func TestPublicRefreshedBeforeExpiry(t *testing.T) {
	for _, lifetime := range []time.Duration{12 * time.Hour, 15 * time.Second} {
		t.Run(lifetime.String(), func(t *testing.T) {
			h, f := publicSetup(t, "ap-northeast-1")
			f.SetECRTokenLifetime(lifetime)
			pub := publicHost(t)
			h.start(pub)
			first := h.lookup(pub.Name)
			if first.Credential == nil {
				t.Fatalf("no token: %+v", first)
			}
			// The plan: half the lifetime plus jitter (0.5 of a tenth), never
			// later than min(1h, lifetime/4) before expiry.
			want := t0.Add(lifetime/2 + lifetime/20)
			if !first.NextRefresh.Equal(want) {
				t.Errorf("next refresh %s, want %s", first.NextRefresh, want)
			}
			h.step(first.NextRefresh.Sub(h.clock.Now()) - time.Millisecond)
			if n := f.Calls(fakeaws.ActionPublicGetAuthorizationToken); n != 1 {
				t.Fatalf("%d calls before the planned refresh, want 1 (cached)", n)
			}
			if e := h.lookup(pub.Name); e.Credential != first.Credential {
				t.Error("credential changed before the refresh")
			}
			at := h.fireNext()
			second := h.lookup(pub.Name)
			if n := f.Calls(fakeaws.ActionPublicGetAuthorizationToken); n != 2 {
				t.Fatalf("%d calls after the refresh, want 2", n)
			}
			if second.Credential.Password == first.Credential.Password || !second.LastRefresh.Equal(at) {
				t.Errorf("not refreshed: %+v", second)
			}
			if margin := min(time.Hour, lifetime/4); !at.Before(first.Credential.ExpiresAt.Add(-margin)) && !at.Equal(first.Credential.ExpiresAt.Add(-margin)) {
				t.Errorf("refreshed at %s, later than %s before the expiry %s", at, margin, first.Credential.ExpiresAt)
			}
			if !first.Credential.Valid(at) {
				t.Error("the old token was no longer valid when it was replaced")
			}
			raw, _ := base64.StdEncoding.DecodeString(second.Credential.AuthorizationHeader()[len("Basic "):])
			if tok, ok := f.LookupECRToken(strings.TrimPrefix(string(raw), "AWS:")); !ok || !tok.Public {
				t.Errorf("the header does not carry a public token the fake issued")
			}
		})
	}
}
