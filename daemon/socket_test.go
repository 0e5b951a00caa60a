package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	host1 = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
	host2 = "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
)

// startLearning starts a daemon for host1 with learnRegistries on, its AWS
// the fake f.
func startLearning(t *testing.T) (h *harness, f *fakeaws.Fake) {
	t.Helper()
	h = newHarness(t, "["+host1+"]")
	h.extra = "learnRegistries: true\n"
	h.writeConfig("[" + host1 + "]")
	f = h.useFakeAWS()
	h.start()
	return h, f
}

// ecrCalls counts the GetAuthorizationToken requests f received.
func ecrCalls(f *fakeaws.Fake) int { return f.Calls(fakeaws.ActionGetAuthorizationToken) }

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSocketCredentialsAndMetrics(t *testing.T) {
	h, f := startLearning(t)
	st := h.waitStatus("ready", func(st api.Status) bool { return st.Ready && len(st.Registries) == 1 })
	if st.MetricsAddress == "" {
		t.Fatalf("no metrics address in status: %+v", st)
	}
	c := api.NewClient(h.sock)
	ctx := context.Background()

	tests := []struct {
		name       string
		image      string
		wantReg    string
		wantSource string
		wantErr    string // substring; "" = success
		wantCode   string
		wantStatus int
	}{
		{"configured", host1 + "/app:1", host1, api.SourceConfigured, "", "", 0},
		{"configured, digest", host1 + "/k8s/pause:3.9@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097", host1, api.SourceConfigured, "", "", 0},
		{"configured, :443 kept", host1 + ":443/app:1", host1 + ":443", api.SourceConfigured, "", "", 0},
		{"configured, URL", "https://" + host1 + "/v2/", host1, api.SourceConfigured, "", "", 0},
		{"on demand", host2 + "/app:1", host2, api.SourceOnDemand, "", "", 0},
		{"on demand again", host2, host2, api.SourceOnDemand, "", "", 0},
		{"not ECR", "ghcr.io/org/app:1", "", "", `"ghcr.io" is not an Amazon ECR registry`, api.CodeNotECR, 404},
		{"docker hub", "docker.io/library/nginx:1.27", "", "", `"docker.io" is not an Amazon ECR registry`, api.CodeNotECR, 404},
		{"ECR public", "public.ecr.aws/a/b", "", "", "Amazon ECR Public", api.CodeNoCredentials, 404},
		{"malformed ECR", "1234.dkr.ecr.us-east-1.amazonaws.com/app", "", "", "must be 12 digits", api.CodeBadRequest, 400},
		{"bad port", host1 + ":5000/app", "", "", "port 5000", api.CodeBadRequest, 400},
	}
	// issued is the password of the one token the fake issued in region.
	issued := func(t *testing.T, region string) string {
		t.Helper()
		var pws []string
		for _, tok := range f.ECRTokens() {
			if tok.Region == region {
				pws = append(pws, tok.Password)
			}
		}
		if len(pws) != 1 {
			t.Fatalf("%d ECR tokens issued in %s, want 1", len(pws), region)
		}
		return pws[0]
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Credentials(ctx, tt.image)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Credentials: %v", err)
				}
				region := strings.Split(tt.wantReg, ".")[3] // <account>.dkr.ecr.<region>.amazonaws.com
				if got.Registry != tt.wantReg || got.Source != tt.wantSource || got.Username != "AWS" || got.Password != issued(t, region) ||
					time.Until(got.ExpiresAt) < 11*time.Hour || got.FetchedAt.IsZero() {
					t.Errorf("got %v, want the token issued in %s", got, region)
				}
				return
			}
			var ae *api.APIError
			if !errors.As(err, &ae) || ae.Code != tt.wantCode || ae.Status != tt.wantStatus || !strings.Contains(ae.Message, tt.wantErr) {
				t.Errorf("error %#v, want %d %s %q", err, tt.wantStatus, tt.wantCode, tt.wantErr)
			}
			if (tt.wantCode == api.CodeNotECR) != errors.Is(err, api.ErrNotECR) {
				t.Errorf("errors.Is(ErrNotECR) wrong for %v", err)
			}
			if (tt.wantCode == api.CodeNoCredentials) != errors.Is(err, api.ErrNoCredentials) {
				t.Errorf("errors.Is(ErrNoCredentials) wrong for %v", err)
			}
		})
	}

	// KEP-4412 request without a role annotation: the node identity.
	w, err := c.WorkloadCredentials(ctx, api.WorkloadRequest{Image: host1 + "/app:1", ServiceAccountToken: "sa-TOKEN-xyz", ServiceAccountAnnotations: map[string]string{}})
	if err != nil || w.Source != api.SourceConfigured || w.Password != issued(t, "us-east-1") {
		t.Errorf("POST without role: %v %v", w, err)
	}
	// With a role but no token: a clear 400.
	_, err = c.WorkloadCredentials(ctx, api.WorkloadRequest{Image: host1, ServiceAccountAnnotations: map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/a"}})
	if ae := (*api.APIError)(nil); !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, "no serviceAccountToken") {
		t.Errorf("role without token: %v", err)
	}

	regs, err := c.Registries(ctx)
	if err != nil || strings.Join(regs, ",") != host1+","+host2 {
		t.Errorf("registries %v %v", regs, err)
	}

	// Warm lookups cost no AWS call.
	before := ecrCalls(f)
	for range 200 {
		if _, err := c.Credentials(ctx, host1+"/app:1"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Credentials(ctx, host2+"/app:1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := ecrCalls(f) - before; n != 0 {
		t.Errorf("%d AWS calls for 400 warm lookups", n)
	}

	// Status: the on-demand host is there, flagged, with its file (learnRegistries).
	st = h.waitStatus("on-demand file", func(st api.Status) bool {
		return len(st.Registries) == 2 && st.Registries[1].FileState != "pending" && st.Registries[1].FileState != ""
	})
	if r := st.Registries[1]; r.Host != host2 || !r.OnDemand || r.Region != "eu-west-1" || !r.Valid || r.NextRefresh.IsZero() {
		t.Errorf("on-demand registry %+v", r)
	}
	if st.Registries[0].OnDemand || !st.Ready || st.State != "serving 1 registry" {
		t.Errorf("status %+v", st)
	}
	if _, err := os.Stat(filepath.Join(h.certs, host2, "hosts.toml")); err != nil {
		t.Errorf("learned registry has no hosts.toml: %v", err)
	}

	// Metrics, health and readiness.
	base := "http://" + st.MetricsAddress
	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d %s", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz %d %s", code, body)
	}
	code, body := httpGet(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics %d", code)
	}
	for _, want := range []string{
		`ecr_node_auth_token_valid{registry="` + host1 + `"} 1`,
		`ecr_node_auth_token_valid{registry="` + host2 + `"} 1`,
		`ecr_node_auth_token_expiry_seconds{registry="` + host1 + `"} 4`,
		`ecr_node_auth_refresh_total{result="success",service="aws/us-east-1"} 1`,
		`ecr_node_auth_refresh_total{result="success",service="aws/eu-west-1"} 1`,
		`ecr_node_auth_aws_calls_total{api="ECR:GetAuthorizationToken",result="success"} 2`,
		`ecr_node_auth_aws_call_duration_seconds_count{api="ECR:GetAuthorizationToken"} 2`,
		`ecr_node_auth_socket_requests_total{code="200",path="/v1/credentials"}`,
		`ecr_node_auth_socket_requests_total{code="404",path="/v1/credentials"} 3`,
		`ecr_node_auth_socket_request_duration_seconds_bucket{path="/v1/credentials",le="0.0002"}`,
		`ecr_node_auth_token_file_rearms_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	noSecretIn(t, f, "/metrics", body)
	if strings.Contains(body, "sa-TOKEN-xyz") {
		t.Fatalf("/metrics holds the service account token")
	}
	h.stop()
	noSecretIn(t, f, "the logs", h.logs.String())
	if strings.Contains(h.logs.String(), "sa-TOKEN-xyz") {
		t.Fatalf("logs hold the service account token")
	}
}

// /readyz is 503 with the reason while a configured registry has no token;
// status stays free of secrets.
func TestReadyzWithoutToken(t *testing.T) {
	h := newHarness(t, "["+host1+"]")
	t.Setenv("AWS_ENDPOINT_URL_ECR", "http://127.0.0.1:1")
	h.start()
	st := h.waitStatus("a failed attempt", func(st api.Status) bool {
		return len(st.Registries) == 1 && st.Registries[0].LastError != ""
	})
	code, body := httpGet(t, "http://"+st.MetricsAddress+"/readyz")
	if code != 503 || !strings.Contains(body, "registry "+host1+" has no valid token") {
		t.Errorf("/readyz %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+st.MetricsAddress+"/healthz"); code != 200 {
		t.Errorf("/healthz %d while the loop runs", code)
	}
	_, err := api.NewClient(h.sock).Credentials(context.Background(), host1)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != api.CodeNotReady || !strings.Contains(ae.Message, "no ECR token for "+host1) || !strings.Contains(ae.Message, "connection refused") {
		t.Errorf("credentials without token: %v", err)
	}
	_, body = httpGet(t, "http://"+st.MetricsAddress+"/metrics")
	for _, want := range []string{`ecr_node_auth_token_valid{registry="` + host1 + `"} 0`, `ecr_node_auth_errors_total{class="transient",kind="ecr"}`,
		`ecr_node_auth_refresh_total{result="failure",service="aws/us-east-1"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	h.stop()
}
