package fakeaws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ecrpublic"
)

// rawPublicCall sends a hand-signed ecr-public GetAuthorizationToken, so the
// signing name and region can be wrong on purpose.
func rawPublicCall(t *testing.T, f *Fake, creds aws.Credentials, service, region, target string) (int, map[string]any) {
	t.Helper()
	body := []byte("{}")
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.ECRPublicURL()+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", jsonContentType)
	req.Header.Set("X-Amz-Target", target)
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, hex.EncodeToString(sum[:]), service, region, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	return resp.StatusCode, out
}

// The wire protocol as the SDK's ecrpublic client speaks it (JSON 1.1,
// SpencerFrontendService, SigV4 as ecr-public in us-east-1), checked by hand.
func TestECRPublicWire(t *testing.T) {
	f := newFake(t, Options{})
	creds := stsCreds(t, f)
	const target = "SpencerFrontendService.GetAuthorizationToken"
	for _, tc := range []struct {
		name, service, region, target string
		status                        int
		code                          string
	}{
		{"ok", "ecr-public", "us-east-1", target, 200, ""},
		{"signed as ecr", "ecr", "us-east-1", target, 400, "InvalidSignatureException"},
		{"other region", "ecr-public", "ap-northeast-1", target, 400, "UnsupportedCommandException"},
		{"private ECR target", "ecr-public", "us-east-1", "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken", 400, "UnknownOperationException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := rawPublicCall(t, f, creds, tc.service, tc.region, tc.target)
			if status != tc.status || (tc.code != "" && out["__type"] != tc.code) {
				t.Fatalf("%d %v, want %d %s", status, out, tc.status, tc.code)
			}
			if tc.code != "" {
				return
			}
			d, _ := out["authorizationData"].(map[string]any)
			if _, ok := d["authorizationToken"].(string); !ok {
				t.Errorf("authorizationData is not one object with a token: %v", out)
			}
			if _, ok := d["expiresAt"].(float64); !ok {
				t.Errorf("expiresAt is not epoch seconds: %v", out)
			}
		})
	}
}

// Faults are injected per action as for ECR, and do not touch private ECR.
func TestECRPublicFaults(t *testing.T) {
	f := newFake(t, Options{})
	c := ecrpublic.New(ecrpublic.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.ECRPublicURL()),
		RetryMaxAttempts: 1, Credentials: static(stsCreds(t, f))})
	call := func() error {
		_, err := c.GetAuthorizationToken(context.Background(), &ecrpublic.GetAuthorizationTokenInput{})
		return err
	}
	a := ActionPublicGetAuthorizationToken
	f.InjectErrors(a, ErrECRThrottling, APIError{Code: "AccessDeniedException", Message: "not authorized"})
	wantAPIError(t, call(), "ThrottlingException", "Rate exceeded", 400)
	wantAPIError(t, call(), "AccessDeniedException", "not authorized", 400)
	if err := call(); err != nil {
		t.Fatalf("after the queued faults: %v", err)
	}
	f.DropConnections(a, 1)
	if err := call(); err == nil {
		t.Error("dropped connection answered")
	}
	f.InjectErrorAlways(a, ErrServiceUnavailable)
	for range 3 {
		wantAPIError(t, call(), "ServiceUnavailable", "unavailable", 503)
	}
	if f.Calls(ActionGetAuthorizationToken) != 0 {
		t.Error("private ECR counted ecr-public calls")
	}
	f.ClearFaults(a)
	if err := call(); err != nil {
		t.Fatal(err)
	}
	if f.Calls(a) != 8 || f.Successes(a) != 2 {
		t.Errorf("calls %d successes %d", f.Calls(a), f.Successes(a))
	}
}
