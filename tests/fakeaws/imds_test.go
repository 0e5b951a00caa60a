package fakeaws

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/smithy-go/logging"
	testclock "k8s.io/utils/clock/testing"
)

// The SDK's own IMDS client and EC2 role provider against the fake: the
// credentials it gets are accepted by the fake's ECR, and the token flow
// (IMDSv2, or the IMDSv1 fallback with its warning) is the one asked for.
func TestIMDSWithTheSDK(t *testing.T) {
	const role = "node-role"
	tests := []struct {
		name      string
		opts      IMDSOptions
		wantCreds bool
		wantWarn  bool
		want      []IMDSRequest // in order
	}{
		{"IMDSv2", IMDSOptions{Role: role}, true, false, []IMDSRequest{
			{"PUT", imdsTokenPath, 200, false}, {"GET", imdsCredsPath, 200, true}, {"GET", imdsCredsPath + role, 200, true}}},
		{"IMDSv2 required", IMDSOptions{Role: role, RequireToken: true}, true, false, []IMDSRequest{
			{"PUT", imdsTokenPath, 200, false}, {"GET", imdsCredsPath, 200, true}, {"GET", imdsCredsPath + role, 200, true}}},
		{"no IMDSv2 (404): IMDSv1", IMDSOptions{Role: role, TokenStatus: 404}, true, true, []IMDSRequest{
			{"PUT", imdsTokenPath, 404, false}, {"GET", imdsCredsPath, 200, false}, {"GET", imdsCredsPath + role, 200, false}}},
		{"no IMDSv2 (403), no role", IMDSOptions{TokenStatus: 403}, false, true, []IMDSRequest{
			{"PUT", imdsTokenPath, 403, false}, {"GET", imdsCredsPath, 404, false}}},
		{"IMDSv2, no role", IMDSOptions{}, false, false, []IMDSRequest{
			{"PUT", imdsTokenPath, 200, false}, {"GET", imdsCredsPath, 404, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, Options{})
			m := StartIMDS(t, f, tt.opts)
			var mu sync.Mutex
			var logged []string
			client := imds.New(imds.Options{Endpoint: m.URL(), Retryer: aws.NopRetryer{},
				Logger: logging.LoggerFunc(func(_ logging.Classification, format string, v ...any) {
					mu.Lock()
					defer mu.Unlock()
					logged = append(logged, fmt.Sprintf(format, v...))
				})})
			provider := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client })
			creds, err := provider.Retrieve(context.Background())
			if tt.wantCreds != (err == nil) {
				t.Fatalf("Retrieve: %+v, %v; want credentials %v", creds, err, tt.wantCreds)
			}
			if got := m.Requests(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("requests\n got %v\nwant %v", got, tt.want)
			}
			mu.Lock()
			warned := strings.Contains(strings.Join(logged, "\n"), "falling back to IMDSv1")
			mu.Unlock()
			if warned != tt.wantWarn {
				t.Errorf("IMDSv1 fallback warning %v, want %v: %q", warned, tt.wantWarn, logged)
			}
			if !tt.wantCreds {
				return
			}
			out, err := ecrClient(f, "eu-west-1", provider).GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
			if err != nil || len(out.AuthorizationData) != 1 {
				t.Fatalf("ECR with the instance credentials: %v", err)
			}
			var issued *Credentials
			for _, c := range f.IssuedCredentials() {
				if c.AccessKeyID == creds.AccessKeyID {
					issued = &c
				}
			}
			if issued == nil || issued.SessionName != IMDSInstanceID || issued.RoleARN != "arn:aws:iam::"+DefaultAccountID+":role/"+role ||
				!creds.CanExpire || !creds.Expires.Equal(issued.Expires) {
				t.Errorf("credentials %+v, issued %+v", creds, issued)
			}
		})
	}
}

// The protocol's edges, by hand: what the SDK never sends but EC2 answers.
func TestIMDSProtocol(t *testing.T) {
	clk := testclock.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	f := newFake(t, Options{Clock: clk})
	required := StartIMDS(t, f, IMDSOptions{Role: "r", RequireToken: true})
	optional := StartIMDS(t, f, IMDSOptions{Role: "r"})
	do := func(m *IMDS, method, path string, hdr map[string]string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, m.URL()+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b), resp.Header
	}
	ttl := map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}
	code, tok, hdr := do(required, "PUT", imdsTokenPath, ttl)
	if code != 200 || tok == "" || hdr.Get("X-aws-ec2-metadata-token-ttl-seconds") != "60" {
		t.Fatalf("token: %d %q %v", code, tok, hdr)
	}
	withTok := map[string]string{"X-aws-ec2-metadata-token": tok}
	tests := []struct {
		name   string
		m      *IMDS
		method string
		path   string
		hdr    map[string]string
		want   int
		body   string // substring
	}{
		{"no TTL", required, "PUT", imdsTokenPath, nil, 400, ""},
		{"TTL 0", required, "PUT", imdsTokenPath, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "0"}, 400, ""},
		{"TTL above 6h", required, "PUT", imdsTokenPath, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21601"}, 400, ""},
		{"through a proxy", required, "PUT", imdsTokenPath, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1"}, 403, ""},
		{"GET the token path", required, "GET", imdsTokenPath, nil, 405, ""},
		{"required, no token", required, "GET", imdsCredsPath, nil, 401, ""},
		{"required, bad token", required, "GET", imdsCredsPath, map[string]string{"X-aws-ec2-metadata-token": "bogus"}, 401, ""},
		{"required, token", required, "GET", imdsCredsPath, withTok, 200, "r"},
		{"token of another IMDS", optional, "GET", imdsCredsPath, withTok, 401, ""},
		{"optional, no token", optional, "GET", imdsCredsPath + "r", nil, 200, `"Code": "Success"`},
		{"other role", required, "GET", imdsCredsPath + "other", withTok, 404, ""},
		{"other path", required, "GET", "/latest/meta-data/ami-id", withTok, 404, ""},
		{"POST", optional, "POST", imdsCredsPath, nil, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := do(tt.m, tt.method, tt.path, tt.hdr)
			if code != tt.want || !strings.Contains(body, tt.body) {
				t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, code, body, tt.want, tt.body)
			}
		})
	}

	// Tokens expire on the Fake's clock; credentials are renewed once expired.
	keyID := func(tok string) string {
		t.Helper()
		code, body, _ := do(required, "GET", imdsCredsPath+"r", map[string]string{"X-aws-ec2-metadata-token": tok})
		var doc struct{ Code, AccessKeyID string }
		if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || doc.Code != "Success" || !strings.HasPrefix(doc.AccessKeyID, "ASIA") {
			t.Fatalf("credentials: %d %v %s", code, err, body)
		}
		return doc.AccessKeyID
	}
	first := keyID(tok)
	clk.Step(61 * time.Second)
	if code, _, _ := do(required, "GET", imdsCredsPath, withTok); code != 401 {
		t.Errorf("expired token: %d, want 401", code)
	}
	_, tok2, _ := do(required, "PUT", imdsTokenPath, ttl)
	if again := keyID(tok2); again != first {
		t.Errorf("credentials changed before they expired: %s, then %s", first, again)
	}
	clk.Step(DefaultSTSLifetime)
	_, tok3, _ := do(required, "PUT", imdsTokenPath, ttl)
	if renewed := keyID(tok3); renewed == first {
		t.Errorf("expired credentials %s not renewed", first)
	}
	for _, s := range f.SecretsWithKind() {
		if s.Value == tok && s.Kind == SecretIMDSToken {
			return
		}
	}
	t.Errorf("the IMDSv2 token is not among Secrets()")
}

func TestNewIMDSRejectsContradictions(t *testing.T) {
	f := newFake(t, Options{})
	for _, o := range []IMDSOptions{{TokenStatus: 500}, {TokenStatus: 401}, {TokenStatus: 404, RequireToken: true}} {
		if m, err := NewIMDS(f, o); err == nil {
			m.Close()
			t.Errorf("%+v accepted", o)
		}
	}
}
