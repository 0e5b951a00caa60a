package fakeaws

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/ecrpublic"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	clocktesting "k8s.io/utils/clock/testing"
)

func newFake(t *testing.T, opts Options) *Fake {
	t.Helper()
	f, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func stsClient(f *Fake) *sts.Client {
	return sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()), RetryMaxAttempts: 1})
}

func ecrClient(f *Fake, region string, creds aws.CredentialsProvider) *ecr.Client {
	return ecr.New(ecr.Options{Region: region, BaseEndpoint: aws.String(f.ECRURL()), RetryMaxAttempts: 1, Credentials: creds})
}

func assume(ctx context.Context, f *Fake, token string) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	return stsClient(f).AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(DefaultRoleARN), RoleSessionName: aws.String("node-1"), WebIdentityToken: aws.String(token),
	})
}

// stsCreds exchanges a fresh token for static credentials.
func stsCreds(t *testing.T, f *Fake) aws.Credentials {
	t.Helper()
	out, err := assume(context.Background(), f, f.MintToken(TokenSpec{}))
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	return aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken}
}

func static(c aws.Credentials) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
}

// wantAPIError checks code, message substring and HTTP status of an SDK error.
func wantAPIError(t *testing.T, err error, code, msg string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s, got success", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want smithy.APIError %s, got %T %v", code, err, err)
	}
	if ae.ErrorCode() != code {
		t.Errorf("code = %q, want %q (%v)", ae.ErrorCode(), code, err)
	}
	if !strings.Contains(ae.ErrorMessage(), msg) {
		t.Errorf("message = %q, want it to contain %q", ae.ErrorMessage(), msg)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("no HTTP response in %v", err)
	}
	if re.HTTPStatusCode() != status {
		t.Errorf("status = %d, want %d", re.HTTPStatusCode(), status)
	}
}

func TestSTSAssumeRoleWithWebIdentitySuccess(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := clocktesting.NewFakeClock(now)
	f := newFake(t, Options{Clock: clk})
	tok := f.MintToken(TokenSpec{})
	out, err := assume(context.Background(), f, tok)
	if err != nil {
		t.Fatal(err)
	}
	c := out.Credentials
	if !strings.HasPrefix(*c.AccessKeyId, "ASIA") || *c.SecretAccessKey == "" || *c.SessionToken == "" {
		t.Errorf("credentials = %+v", c)
	}
	if !c.Expiration.Equal(now.Add(time.Hour)) {
		t.Errorf("expiration = %v, want %v", c.Expiration, now.Add(time.Hour))
	}
	if got := aws.ToString(out.SubjectFromWebIdentityToken); got != DefaultSubject {
		t.Errorf("subject = %q", got)
	}
	if got := aws.ToString(out.Audience); got != DefaultAudience {
		t.Errorf("audience = %q", got)
	}
	if got := aws.ToString(out.Provider); !strings.Contains(got, "oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/") {
		t.Errorf("provider = %q", got)
	}
	if got := aws.ToString(out.AssumedRoleUser.Arn); got != "arn:aws:sts::111122223333:assumed-role/ecr-node-auth/node-1" {
		t.Errorf("assumed role arn = %q", got)
	}
	if got := f.STSTokensSeen(); len(got) != 1 || got[0] != tok {
		t.Errorf("tokens seen = %d", len(got))
	}
	if f.Calls(ActionAssumeRoleWithWebIdentity) != 1 || f.Successes(ActionAssumeRoleWithWebIdentity) != 1 {
		t.Errorf("calls/successes = %d/%d", f.Calls(ActionAssumeRoleWithWebIdentity), f.Successes(ActionAssumeRoleWithWebIdentity))
	}
	// DurationSeconds below the configured lifetime wins.
	out, err = stsClient(f).AssumeRoleWithWebIdentity(context.Background(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(DefaultRoleARN), RoleSessionName: aws.String("s" + "x"), WebIdentityToken: aws.String(tok),
		DurationSeconds: aws.Int32(900),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Credentials.Expiration.Equal(now.Add(15 * time.Minute)) {
		t.Errorf("expiration with DurationSeconds=900: %v", out.Credentials.Expiration)
	}
	// Lifetime changeable at runtime.
	f.SetSTSCredentialLifetime(20 * time.Minute)
	out, err = assume(context.Background(), f, tok)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Credentials.Expiration.Equal(now.Add(20 * time.Minute)) {
		t.Errorf("expiration after SetSTSCredentialLifetime: %v", out.Credentials.Expiration)
	}
}

func TestSTSErrors(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := clocktesting.NewFakeClock(now)
	f := newFake(t, Options{Clock: clk, AllowedRoleARNs: []string{DefaultRoleARN}})
	tests := []struct {
		name    string
		token   string
		role    string
		session string
		dur     int32
		code    string
		msg     string
		status  int
	}{
		{name: "wrong audience (case 4)", token: f.MintToken(TokenSpec{Audience: []string{"sts.amazon.com"}}),
			code: "InvalidIdentityToken", msg: "Incorrect token audience", status: 400},
		{name: "expired", token: f.MintToken(TokenSpec{IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Minute)}),
			code: "ExpiredTokenException", msg: "Token expired: current date/time", status: 400},
		{name: "malformed", token: "not-a-jwt",
			code: "InvalidIdentityToken", msg: "not a valid JWT", status: 400},
		{name: "garbage segments", token: "a.b.c",
			code: "InvalidIdentityToken", msg: "not a valid JWT", status: 400},
		{name: "foreign signature", token: f.MintToken(TokenSpec{SignWithForeignKey: true}),
			code: "InvalidIdentityToken", msg: "could not be validated", status: 400},
		{name: "unknown issuer", token: f.MintToken(TokenSpec{Issuer: "https://evil.example"}),
			code: "InvalidIdentityToken", msg: "No OpenIDConnect provider found in your account for https://evil.example", status: 400},
		{name: "bad role arn", role: "arn:aws:iam::123:role/x",
			code: "ValidationError", msg: "Request ARN is invalid", status: 400},
		{name: "role not allowed", role: "arn:aws:iam::999999999999:role/other",
			code: "AccessDenied", msg: "Not authorized to perform sts:AssumeRoleWithWebIdentity", status: 403},
		{name: "bad session name", session: "a b",
			code: "ValidationError", msg: "roleSessionName", status: 400},
		{name: "duration too short", dur: 100,
			code: "ValidationError", msg: "greater than or equal to 900", status: 400},
		{name: "duration too long", dur: 43201,
			code: "ValidationError", msg: "less than or equal to 43200", status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &sts.AssumeRoleWithWebIdentityInput{
				RoleArn: aws.String(DefaultRoleARN), RoleSessionName: aws.String("node-1"), WebIdentityToken: aws.String(tc.token),
			}
			if tc.token == "" {
				in.WebIdentityToken = aws.String(f.MintToken(TokenSpec{}))
			}
			if tc.role != "" {
				in.RoleArn = aws.String(tc.role)
			}
			if tc.session != "" {
				in.RoleSessionName = aws.String(tc.session)
			}
			if tc.dur != 0 {
				in.DurationSeconds = aws.Int32(tc.dur)
			}
			_, err := stsClient(f).AssumeRoleWithWebIdentity(context.Background(), in)
			wantAPIError(t, err, tc.code, tc.msg, tc.status)
		})
	}
	if f.Successes(ActionAssumeRoleWithWebIdentity) != 0 {
		t.Errorf("successes = %d", f.Successes(ActionAssumeRoleWithWebIdentity))
	}
}

func TestSTSErrorWireFormat(t *testing.T) {
	f := newFake(t, Options{})
	form := url.Values{"Action": {"AssumeRoleWithWebIdentity"}, "Version": {"2011-06-15"},
		"RoleArn": {DefaultRoleARN}, "RoleSessionName": {"n"}, "WebIdentityToken": {f.MintToken(TokenSpec{Audience: []string{"x"}})}}
	form.Set("RoleSessionName", "node")
	resp, err := http.PostForm(f.STSURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>InvalidIdentityToken</Code>
    <Message>Incorrect token audience</Message>
  </Error>
  <RequestId>`
	if resp.StatusCode != 400 || !strings.HasPrefix(string(body), want) {
		t.Errorf("status %d body:\n%s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Amzn-RequestId") == "" {
		t.Error("no X-Amzn-RequestId")
	}
	// Unknown action.
	resp2, err := http.PostForm(f.STSURL(), url.Values{"Action": {"DecodeAuthorizationMessage"}, "Version": {"2011-06-15"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != 400 || !strings.Contains(string(body), "<Code>InvalidAction</Code>") {
		t.Errorf("unknown action: %d %s", resp2.StatusCode, body)
	}
}

// Case 5: the STS error sequence, injected, comes back through the SDK in order.
func TestSTSInjectedErrors(t *testing.T) {
	f := newFake(t, Options{})
	seq := []APIError{
		{Code: "InvalidIdentityToken", Message: "Couldn't retrieve verification key from your identity provider"},
		ErrIDPCommunication,
		ErrSTSThrottling,
		{Code: "InvalidIdentityToken", Message: "The web identity token provided could not be validated"},
		ErrAccessDenied,
		{Code: "InvalidIdentityToken", Message: "OpenIDConnect provider's HTTPS certificate doesn't match configured thumbprint"},
		ErrInternalFailure,
		{Code: "ServiceUnavailable", Message: "busy", HTTPStatus: 503},
	}
	f.InjectErrors(ActionAssumeRoleWithWebIdentity, seq...)
	for i, e := range seq {
		tok := f.MintToken(TokenSpec{Subject: "system:serviceaccount:ns:sa" + string(rune('a'+i))})
		_, err := assume(context.Background(), f, tok)
		wantAPIError(t, err, e.Code, e.Message, e.status())
	}
	tok := f.MintToken(TokenSpec{})
	if _, err := assume(context.Background(), f, tok); err != nil {
		t.Fatalf("after the queue: %v", err)
	}
	seen := f.STSTokensSeen()
	if len(seen) != len(seq)+1 || seen[len(seen)-1] != tok {
		t.Errorf("tokens seen: %d", len(seen))
	}
	// Always until cleared.
	f.InjectErrorAlways(ActionAssumeRoleWithWebIdentity, ErrSTSThrottling)
	for range 3 {
		_, err := assume(context.Background(), f, tok)
		wantAPIError(t, err, "Throttling", "Rate exceeded", 400)
	}
	f.ClearFaults(ActionAssumeRoleWithWebIdentity)
	if _, err := assume(context.Background(), f, tok); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Calls(ActionAssumeRoleWithWebIdentity), len(seq)+5; got != want {
		t.Errorf("calls = %d, want %d", got, want)
	}
	if got := f.Successes(ActionAssumeRoleWithWebIdentity); got != 2 {
		t.Errorf("successes = %d", got)
	}
}

func TestECRWithSTSCredentials(t *testing.T) {
	f := newFake(t, Options{})
	tok := f.MintToken(TokenSpec{})
	// The real web identity provider, as the daemon would use it.
	prov := stscreds.NewWebIdentityRoleProvider(stsClient(f), DefaultRoleARN,
		tokenString(tok))
	for _, region := range []string{"us-east-1", "eu-west-1", "cn-north-1"} {
		t.Run(region, func(t *testing.T) {
			start := time.Now()
			out, err := ecrClient(f, region, aws.NewCredentialsCache(prov)).GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.AuthorizationData) != 1 {
				t.Fatalf("authorizationData: %d", len(out.AuthorizationData))
			}
			d := out.AuthorizationData[0]
			raw, err := base64.StdEncoding.DecodeString(aws.ToString(d.AuthorizationToken))
			if err != nil {
				t.Fatal(err)
			}
			pw, ok := strings.CutPrefix(string(raw), "AWS:")
			if !ok {
				t.Fatalf("token %q", raw)
			}
			tk, ok := f.LookupECRToken(pw)
			if !ok || tk.Region != region {
				t.Errorf("issued token %+v", tk)
			}
			if exp := d.ExpiresAt.Sub(start); exp < 12*time.Hour-time.Minute || exp > 12*time.Hour+time.Minute {
				t.Errorf("expiresAt in %v", exp)
			}
			want := "https://111122223333.dkr.ecr." + region + ".amazonaws.com"
			if region == "cn-north-1" {
				want += ".cn"
			}
			if aws.ToString(d.ProxyEndpoint) != want {
				t.Errorf("proxyEndpoint = %q, want %q", aws.ToString(d.ProxyEndpoint), want)
			}
		})
	}
	log := f.CallLog()
	if last := log[len(log)-1]; last.Action != ActionGetAuthorizationToken || last.Region != "cn-north-1" || last.Status != 200 {
		t.Errorf("last call %+v", last)
	}
	if f.Successes(ActionGetAuthorizationToken) != 3 {
		t.Errorf("successes %d", f.Successes(ActionGetAuthorizationToken))
	}
	// registryIds give one entry per account.
	//lint:ignore SA1019 deprecated in the API, still sent by older clients
	in := &ecr.GetAuthorizationTokenInput{RegistryIds: []string{"444455556666", "777788889999"}}
	out, err := ecrClient(f, "us-east-1", static(stsCreds(t, f))).GetAuthorizationToken(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AuthorizationData) != 2 || !strings.HasPrefix(aws.ToString(out.AuthorizationData[1].ProxyEndpoint), "https://777788889999.") {
		t.Errorf("registryIds: %+v", out.AuthorizationData)
	}
}

func TestECRRejects(t *testing.T) {
	now := time.Now()
	clk := clocktesting.NewFakeClock(now)
	f := newFake(t, Options{Clock: clk})
	good := stsCreds(t, f)
	f.SetSTSCredentialLifetime(2 * time.Minute)
	short := stsCreds(t, f)
	f.AddStaticCredentials("AKIASTATICEXAMPLE", "static-secret", "", time.Time{})
	tests := []struct {
		name   string
		creds  aws.CredentialsProvider
		step   time.Duration // fake clock step before the call
		code   string
		msg    string
		status int
	}{
		{name: "unsigned", creds: aws.AnonymousCredentials{}, code: "MissingAuthenticationTokenException", msg: "Missing Authentication Token", status: 400},
		{name: "wrong secret", creds: static(aws.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: "wrong", SessionToken: good.SessionToken}),
			code: "InvalidSignatureException", msg: "does not match the signature you provided", status: 400},
		{name: "unknown key", creds: static(aws.Credentials{AccessKeyID: "ASIAUNKNOWN", SecretAccessKey: "x", SessionToken: "y"}),
			code: "UnrecognizedClientException", msg: "security token included in the request is invalid", status: 400},
		{name: "wrong session token", creds: static(aws.Credentials{AccessKeyID: good.AccessKeyID, SecretAccessKey: good.SecretAccessKey, SessionToken: "other"}),
			code: "UnrecognizedClientException", msg: "security token included in the request is invalid", status: 400},
		{name: "static key without session token is fine", creds: static(aws.Credentials{AccessKeyID: "AKIASTATICEXAMPLE", SecretAccessKey: "static-secret"})},
		{name: "static key wrong secret", creds: static(aws.Credentials{AccessKeyID: "AKIASTATICEXAMPLE", SecretAccessKey: "nope"}),
			code: "InvalidSignatureException", msg: "does not match", status: 400},
		{name: "expired credentials", creds: static(short), step: 3 * time.Minute,
			code: "ExpiredTokenException", msg: "The security token included in the request is expired", status: 400},
		{name: "date skewed (fake clock 10m ahead)", creds: static(good), step: 7 * time.Minute,
			code: "InvalidSignatureException", msg: "Signature expired", status: 400},
		{name: "date in the future (fake clock 20m behind)", creds: static(good), step: -20 * time.Minute,
			code: "InvalidSignatureException", msg: "Signature not yet current", status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk.Step(tc.step)
			_, err := ecrClient(f, "us-east-1", tc.creds).GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantAPIError(t, err, tc.code, tc.msg, tc.status)
		})
	}
}

func TestECRInjectedFaults(t *testing.T) {
	f := newFake(t, Options{})
	c := ecrClient(f, "us-east-1", static(stsCreds(t, f)))
	call := func(ctx context.Context) error {
		_, err := c.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
		return err
	}
	f.InjectErrors(ActionGetAuthorizationToken, ErrECRThrottling, ErrECRThrottling, ErrECRServerException,
		APIError{Code: "AccessDeniedException", Message: "User is not authorized to perform: ecr:GetAuthorizationToken"})
	wantAPIError(t, call(context.Background()), "ThrottlingException", "Rate exceeded", 400)
	wantAPIError(t, call(context.Background()), "ThrottlingException", "Rate exceeded", 400)
	wantAPIError(t, call(context.Background()), "ServerException", "internal server error", 500)
	wantAPIError(t, call(context.Background()), "AccessDeniedException", "not authorized", 400)
	if err := call(context.Background()); err != nil {
		t.Fatal(err)
	}

	f.DropConnections(ActionGetAuthorizationToken, 1)
	if err := call(context.Background()); err == nil {
		t.Fatal("dropped connection: want error")
	}
	if err := call(context.Background()); err != nil {
		t.Fatalf("after the drop: %v", err)
	}

	f.HangConnections(ActionGetAuthorizationToken, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := call(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: want deadline exceeded, got %v", err)
	}
	f.ClearFaults(ActionGetAuthorizationToken)

	f.SetLatency(ActionGetAuthorizationToken, 150*time.Millisecond)
	start := time.Now()
	if err := call(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("latency %v", d)
	}
	f.SetLatency(ActionGetAuthorizationToken, 0)

	f.SetECRTokenLifetime(15 * time.Second)
	out, err := c.GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.AuthorizationData[0].ExpiresAt); d > 16*time.Second || d < 10*time.Second {
		t.Errorf("expiresAt in %v after SetECRTokenLifetime(15s)", d)
	}
}

func TestECRPublic(t *testing.T) {
	f := newFake(t, Options{})
	creds := static(stsCreds(t, f))
	client := func(region string) *ecrpublic.Client {
		return ecrpublic.New(ecrpublic.Options{Region: region, BaseEndpoint: aws.String(f.ECRPublicURL()), RetryMaxAttempts: 1, Credentials: creds})
	}
	out, err := client("us-east-1").GetAuthorizationToken(context.Background(), &ecrpublic.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(aws.ToString(out.AuthorizationData.AuthorizationToken))
	if !strings.HasPrefix(string(raw), "AWS:") || out.AuthorizationData.ExpiresAt == nil {
		t.Errorf("public token %q", raw)
	}
	_, err = client("ap-northeast-1").GetAuthorizationToken(context.Background(), &ecrpublic.GetAuthorizationTokenInput{})
	wantAPIError(t, err, "UnsupportedCommandException", "only supported in us-east-1", 400)
	if f.Successes(ActionPublicGetAuthorizationToken) != 1 || f.Calls(ActionPublicGetAuthorizationToken) != 2 {
		t.Errorf("counters %d/%d", f.Successes(ActionPublicGetAuthorizationToken), f.Calls(ActionPublicGetAuthorizationToken))
	}
}

// The default credential chain and endpoint env vars, as the daemon loads them.
func TestDefaultChainThroughEnv(t *testing.T) {
	f := newFake(t, Options{})
	f.AddStaticCredentials("AKIAENVEXAMPLE", "env-secret", "", time.Time{})
	for k, v := range f.Env() {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	out, err := ecr.NewFromConfig(cfg).GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.AuthorizationData[0].ProxyEndpoint); got != "https://111122223333.dkr.ecr.eu-west-1.amazonaws.com" {
		t.Errorf("proxyEndpoint %q", got)
	}
	// STS through AWS_ENDPOINT_URL_STS.
	if _, err := sts.NewFromConfig(cfg).AssumeRoleWithWebIdentity(context.Background(), &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(DefaultRoleARN), RoleSessionName: aws.String("env"), WebIdentityToken: aws.String(f.MintToken(TokenSpec{})),
	}); err != nil {
		t.Fatal(err)
	}
}

func TestSecrets(t *testing.T) {
	f := newFake(t, Options{})
	tok := f.MintToken(TokenSpec{})
	prov := stscreds.NewWebIdentityRoleProvider(stsClient(f), DefaultRoleARN,
		tokenString(tok))
	creds, err := prov.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, err := ecrClient(f, "us-east-1", static(creds)).GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	basic := aws.ToString(out.AuthorizationData[0].AuthorizationToken)
	raw, _ := base64.StdEncoding.DecodeString(basic)
	pw := strings.TrimPrefix(string(raw), "AWS:")
	set := map[string]bool{}
	for _, s := range f.Secrets() {
		set[s] = true
	}
	for name, s := range map[string]string{"jwt": tok, "secret": creds.SecretAccessKey, "session": creds.SessionToken,
		"password": pw, "AWS:password": string(raw), "base64": basic} {
		if !set[s] {
			t.Errorf("Secrets() lacks the %s", name)
		}
	}
	kinds := map[string]string{}
	for _, s := range f.SecretsWithKind() {
		kinds[s.Value] = s.Kind
	}
	for s, want := range map[string]string{tok: SecretJWT, creds.SecretAccessKey: SecretAccessKey, creds.SessionToken: SecretSessionToken,
		pw: SecretECRPassword, string(raw): SecretECRUserPass, basic: SecretECRBasic} {
		if kinds[s] != want {
			t.Errorf("SecretsWithKind() kind %q, want %q", kinds[s], want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	f := newFake(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	f.InjectErrors(ActionGetAuthorizationToken, ErrECRThrottling, ErrECRThrottling)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%5 == 0 {
				f.SetLatency(ActionGetAuthorizationToken, time.Millisecond)
			}
			tok := f.MintToken(TokenSpec{})
			out, err := assume(context.Background(), f, tok)
			if err != nil {
				errs <- err
				return
			}
			c := out.Credentials
			_, err = ecrClient(f, "us-west-2", credentials.NewStaticCredentialsProvider(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)).
				GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
			var ae smithy.APIError
			if err != nil && !(errors.As(err, &ae) && ae.ErrorCode() == "ThrottlingException") {
				errs <- err
			}
			_ = f.Secrets()
			_ = f.CallLog()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := f.Successes(ActionGetAuthorizationToken); got != 18 {
		t.Errorf("successes = %d, want 18", got)
	}
}

type tokenString string

func (s tokenString) GetIdentityToken() ([]byte, error) { return []byte(s), nil }

// Case 8: role chaining (web identity, then AssumeRole) is capped at one hour.
func TestSTSAssumeRoleChaining(t *testing.T) {
	f := newFake(t, Options{STSCredentialLifetime: 12 * time.Hour})
	hop1 := stsCreds(t, f)
	c := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()), RetryMaxAttempts: 1, Credentials: static(hop1)})
	_, err := c.AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::444455556666:role/ecr-pull"), RoleSessionName: aws.String("hop2"), DurationSeconds: aws.Int32(43200),
	})
	wantAPIError(t, err, "ValidationError", "exceeds the 1 hour session limit for roles assumed by role chaining", 400)
	out, err := c.AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::444455556666:role/ecr-pull"), RoleSessionName: aws.String("hop2"), DurationSeconds: aws.Int32(3600),
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*out.Credentials.Expiration); d > time.Hour+time.Minute || d < 59*time.Minute {
		t.Errorf("hop 2 expires in %v", d)
	}
	// The chained credentials work against ECR and identify as the second role.
	hop2 := static(aws.Credentials{AccessKeyID: *out.Credentials.AccessKeyId, SecretAccessKey: *out.Credentials.SecretAccessKey, SessionToken: *out.Credentials.SessionToken})
	if _, err := ecrClient(f, "us-east-1", hop2).GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{}); err != nil {
		t.Fatal(err)
	}
	id, err := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()), RetryMaxAttempts: 1, Credentials: hop2}).
		GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(id.Arn) != "arn:aws:sts::444455556666:assumed-role/ecr-pull/hop2" || aws.ToString(id.Account) != "444455556666" {
		t.Errorf("caller identity %s %s", aws.ToString(id.Arn), aws.ToString(id.Account))
	}
	// STS spells authentication errors the query-protocol way.
	bad := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()), RetryMaxAttempts: 1,
		Credentials: static(aws.Credentials{AccessKeyID: hop1.AccessKeyID, SecretAccessKey: "wrong", SessionToken: hop1.SessionToken})})
	_, err = bad.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	wantAPIError(t, err, "SignatureDoesNotMatch", "does not match", 403)
	unknown := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()), RetryMaxAttempts: 1,
		Credentials: static(aws.Credentials{AccessKeyID: "ASIANOPE", SecretAccessKey: "x", SessionToken: "y"})})
	_, err = unknown.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	wantAPIError(t, err, "InvalidClientTokenId", "security token included in the request is invalid", 403)
}

// Case 10: each node is throttled on its first 3 calls, then served.
func TestFailFirstPerCaller(t *testing.T) {
	f := newFake(t, Options{})
	f.SetInterceptor(ActionGetAuthorizationToken, FailFirstPerCaller(3, ErrECRThrottling))
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session := "node-" + string(rune('a'+i))
			out, err := stsClient(f).AssumeRoleWithWebIdentity(context.Background(), &sts.AssumeRoleWithWebIdentityInput{
				RoleArn: aws.String(DefaultRoleARN), RoleSessionName: aws.String(session), WebIdentityToken: aws.String(f.MintToken(TokenSpec{})),
			})
			if err != nil {
				t.Error(err)
				return
			}
			c := ecrClient(f, "us-east-1", credentials.NewStaticCredentialsProvider(*out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken))
			for j := range 4 {
				_, err := c.GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
				if j < 3 {
					wantAPIError(t, err, "ThrottlingException", "Rate exceeded", 400)
				} else if err != nil {
					t.Errorf("%s call %d: %v", session, j, err)
				}
			}
		}()
	}
	wg.Wait()
	if got := f.Successes(ActionGetAuthorizationToken); got != 10 {
		t.Errorf("successes %d", got)
	}
	for _, r := range f.CallLog() {
		if r.Action == ActionGetAuthorizationToken && !strings.HasPrefix(r.Caller, "node-") {
			t.Errorf("caller %q", r.Caller)
		}
	}
	f.SetInterceptor(ActionGetAuthorizationToken, nil)
}

// The handler table is the extension point: a new signed JSON action, with faults and counters.
func TestHandleNewAction(t *testing.T) {
	f := newFake(t, Options{})
	const describe Action = "ecr:DescribeRegistry"
	f.Handle(ActionSpec{Action: describe, Signed: true, Handler: func(c *Call) (any, *APIError) {
		return map[string]any{"registryId": c.Fake.AccountID()}, nil
	}})
	c := ecrClient(f, "us-east-1", static(stsCreds(t, f)))
	out, err := c.DescribeRegistry(context.Background(), &ecr.DescribeRegistryInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.RegistryId) != DefaultAccountID {
		t.Errorf("registryId %q", aws.ToString(out.RegistryId))
	}
	f.InjectErrors(describe, APIError{Code: "ValidationException", Message: "nope"})
	_, err = c.DescribeRegistry(context.Background(), &ecr.DescribeRegistryInput{})
	wantAPIError(t, err, "ValidationException", "nope", 400)
	// An action nobody registered.
	_, err = c.DescribeRepositories(context.Background(), &ecr.DescribeRepositoriesInput{})
	wantAPIError(t, err, "UnknownOperationException", "", 400)
	if f.Calls(describe) != 2 || f.Successes(describe) != 1 {
		t.Errorf("calls/successes %d/%d", f.Calls(describe), f.Successes(describe))
	}
}
