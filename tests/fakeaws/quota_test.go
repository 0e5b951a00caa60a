package fakeaws

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

func memECR(f *Fake, region string, creds aws.CredentialsProvider) *ecr.Client {
	return ecr.New(ecr.Options{Region: region, BaseEndpoint: aws.String(f.ECRURL()), RetryMaxAttempts: 1,
		Credentials: creds, HTTPClient: &http.Client{Transport: f.Transport()}})
}

// The GetAuthorizationToken quota is a token bucket per caller account and region, and
// its refusals are ECR's real ThrottlingException.
func TestQuotaPerAccountAndRegion(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Now())
	f := newFake(t, Options{InMemory: true, Clock: fc, SigV4Clock: clock.RealClock{}})
	f.SetQuota(ActionGetAuthorizationToken, ECRGetAuthorizationTokenQuota)
	f.AddStaticCredentials("AKIAQUOTAEXAMPLE", "quota-secret", "", time.Time{})
	static := credentials.NewStaticCredentialsProvider("AKIAQUOTAEXAMPLE", "quota-secret", "")

	stsc := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()), RetryMaxAttempts: 1,
		HTTPClient: &http.Client{Transport: f.Transport()}})
	out, err := stsc.AssumeRoleWithWebIdentity(context.Background(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String("arn:aws:iam::444455556666:role/other"), RoleSessionName: aws.String("node-b"),
		WebIdentityToken: aws.String(f.MintToken(TokenSpec{ExpiresAt: fc.Now().Add(24 * time.Hour)})),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	other := credentials.NewStaticCredentialsProvider(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)

	a := memECR(f, "eu-west-1", static)
	call := func(cl *ecr.Client) error {
		_, err := cl.GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
		return err
	}
	// burst spends n calls, which must all pass, then checks the next is throttled.
	burst := func(what string, cl *ecr.Client, n int) {
		t.Helper()
		for i := range n {
			if err := call(cl); err != nil {
				t.Fatalf("%s: call %d of %d: %v", what, i+1, n, err)
			}
		}
		wantAPIError(t, call(cl), "ThrottlingException", "Rate exceeded", 400)
	}
	burst("burst", a, 200)
	// Other buckets are untouched: same account in another region, another account.
	if err := call(memECR(f, "us-east-1", static)); err != nil {
		t.Errorf("same account, other region: %v", err)
	}
	if err := call(memECR(f, "eu-west-1", other)); err != nil {
		t.Errorf("other account, same region: %v", err)
	}
	// 20/s: 150 ms refill 3 requests.
	fc.Step(150 * time.Millisecond)
	burst("after 150ms", a, 3)
	// The bucket never holds more than the burst.
	fc.Step(time.Hour)
	burst("after an hour", a, 200)

	// An injected outage comes first and does not spend the quota.
	fc.Step(time.Hour)
	f.InjectErrors(ActionGetAuthorizationToken, ErrECRServerException, ErrECRServerException)
	for range 2 {
		wantAPIError(t, call(a), "ServerException", "internal", 500)
	}
	burst("after an outage", a, 200)
	// So does an interceptor's answer (the fleet's outage is one).
	fc.Step(time.Hour)
	f.SetInterceptor(ActionGetAuthorizationToken, func(*Call) *APIError { e := ErrServiceUnavailable; return &e })
	for range 3 {
		wantAPIError(t, call(a), "ServiceUnavailable", "unavailable", 503)
	}
	f.SetInterceptor(ActionGetAuthorizationToken, nil)
	burst("after an interceptor", a, 200)

	f.SetQuota(ActionGetAuthorizationToken, Quota{})
	for i := range 5 {
		if err := call(a); err != nil {
			t.Fatalf("quota removed: call %d: %v", i, err)
		}
	}
	var throttled int
	for _, r := range f.CallLog() {
		if r.ErrorCode == "ThrottlingException" {
			throttled++
		}
	}
	if throttled != 5 {
		t.Errorf("call log holds %d throttled calls, want 5", throttled)
	}
}

// The in-memory transport serves every service without a socket and turns a dropped
// connection into an error.
func TestInMemoryTransport(t *testing.T) {
	f := newFake(t, Options{InMemory: true})
	if f.ECRURL() != "http://ecr.fakeaws.invalid" {
		t.Errorf("ECRURL = %q", f.ECRURL())
	}
	f.AddStaticCredentials("AKIAMEMEXAMPLE", "mem-secret", "", time.Time{})
	cl := memECR(f, "eu-west-1", credentials.NewStaticCredentialsProvider("AKIAMEMEXAMPLE", "mem-secret", ""))
	out, err := cl.GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.AuthorizationData[0].ProxyEndpoint); got != "https://111122223333.dkr.ecr.eu-west-1.amazonaws.com" {
		t.Errorf("proxyEndpoint %q", got)
	}
	f.DropConnections(ActionGetAuthorizationToken, 1)
	_, err = cl.GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
	if !errors.Is(err, errConnectionClosed) {
		t.Errorf("dropped connection: %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://elsewhere.invalid/", nil)
	if _, err := f.Transport().RoundTrip(req); err == nil {
		t.Error("request to an unknown host succeeded")
	}
}
