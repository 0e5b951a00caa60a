package tokens

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	testclock "k8s.io/utils/clock/testing"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

const (
	testIssuer  = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
	roleA       = "arn:aws:iam::111122223333:role/team-a-pull"
	roleB       = "arn:aws:iam::111122223333:role/team-b-pull"
	wlSecretKey = "wJalrXUtnFEMI/K7MDENG/WORKLOADSECRET"
	wlSessTok   = "FwoGZXIvYXdzWORKLOADSESSIONTOKEN"
)

// saToken builds a genuine service-account JWT for ns/name expiring at exp:
// the issuer "signs" it by recording its signature part in minted, which the
// stub STS checks. The signature is unique per call, so tests can spot a
// leaked token.
var (
	tokenSerial atomic.Int64
	minted      sync.Map // signature part -> true
)

func saToken(t testing.TB, ns, name string, iat, exp time.Time) string {
	t.Helper()
	tok := jwtFor(t, `{"alg":"RS256","kid":"k"}`, ns, name, iat, exp, "SIGNATURE-SECRET-%04d")
	minted.Store(tok[strings.LastIndexByte(tok, '.')+1:], true)
	return tok
}

// forgedToken builds a JWT with the same claims saToken would, but that the
// issuer never signed (as anyone can write).
func forgedToken(t testing.TB, ns, name string, iat, exp time.Time) string {
	t.Helper()
	return jwtFor(t, `{"alg":"none"}`, ns, name, iat, exp, "SIGNATURE-SECRET-FORGED-%04d")
}

func jwtFor(t testing.TB, header, ns, name string, iat, exp time.Time, sig string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	p, err := json.Marshal(map[string]any{"iss": testIssuer, "sub": "system:serviceaccount:" + ns + ":" + name,
		"aud": []string{"sts.amazonaws.com"}, "iat": iat.Unix(), "exp": exp.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return enc([]byte(header)) + "." + enc(p) + "." + enc([]byte(fmt.Sprintf(sig, tokenSerial.Add(1))))
}

func isMinted(tok string) bool {
	_, ok := minted.Load(tok[strings.LastIndexByte(tok, '.')+1:])
	return ok
}

type stsCall struct{ role, session, token string }

// wlSTS is a scripted STS for workloads. It "verifies the signature" of a
// token by recognising the tokens saToken minted: any other is refused with
// reject (default InvalidIdentityToken).
type wlSTS struct {
	clock  *testclock.FakeClock
	gate   chan struct{}
	mu     sync.Mutex
	calls  []stsCall
	fail   func(in *sts.AssumeRoleWithWebIdentityInput) error
	reject error
}

func (f *wlSTS) AssumeRoleWithWebIdentity(_ context.Context, in *sts.AssumeRoleWithWebIdentityInput, _ ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, stsCall{aws.ToString(in.RoleArn), aws.ToString(in.RoleSessionName), aws.ToString(in.WebIdentityToken)})
	if f.fail != nil {
		if err := f.fail(in); err != nil {
			return nil, err
		}
	}
	if !isMinted(aws.ToString(in.WebIdentityToken)) {
		if f.reject != nil {
			return nil, f.reject
		}
		return nil, apiErr("InvalidIdentityToken", "Couldn't verify the token's signature")
	}
	exp := f.clock.Now().Add(time.Duration(aws.ToInt32(in.DurationSeconds)) * time.Second)
	return &sts.AssumeRoleWithWebIdentityOutput{
		Credentials: &ststypes.Credentials{
			// The key ID names the role, session and call: ECR tokens made
			// from it show whose credentials were used.
			AccessKeyId:     aws.String(fmt.Sprintf("ASIA-%s-%s-%d", aws.ToString(in.RoleArn), aws.ToString(in.RoleSessionName), len(f.calls))),
			SecretAccessKey: aws.String(wlSecretKey),
			SessionToken:    aws.String(wlSessTok),
			Expiration:      &exp,
		},
	}, nil
}

func (f *wlSTS) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *wlSTS) setFail(fail func(in *sts.AssumeRoleWithWebIdentityInput) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *wlSTS) last() stsCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[len(f.calls)-1]
}

// wlECR issues ECR tokens whose password names the AWS access key used.
type wlECR struct {
	clock    *testclock.FakeClock
	lifetime time.Duration
	mu       sync.Mutex
	calls    int
	fail     error
}

func (f *wlECR) newECR(p aws.CredentialsProvider) func(ecrhost.Service) (ECRAPI, error) {
	return func(svc ecrhost.Service) (ECRAPI, error) { return &wlECRClient{f: f, p: p, svc: svc}, nil }
}

func (f *wlECR) n() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type wlECRClient struct {
	f   *wlECR
	p   aws.CredentialsProvider
	svc ecrhost.Service
}

func (c *wlECRClient) GetAuthorizationToken(ctx context.Context, _ *ecr.GetAuthorizationTokenInput, _ ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error) {
	creds, err := c.p.Retrieve(ctx) // as the SDK's signer does
	if err != nil {
		return nil, err
	}
	f := c.f
	f.mu.Lock()
	f.calls++
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	pw := "ecrpw-" + creds.AccessKeyID + "-" + c.svc.String()
	return &ecr.GetAuthorizationTokenOutput{AuthorizationData: []ecrtypes.AuthorizationData{{
		AuthorizationToken: aws.String(base64.StdEncoding.EncodeToString([]byte("AWS:" + pw))),
		ExpiresAt:          aws.Time(f.clock.Now().Add(f.lifetime)),
	}}}, nil
}

type wlHarness struct {
	clock *testclock.FakeClock
	sts   *wlSTS
	ecr   *wlECR
	logs  *observer.ObservedLogs
	w     *Workloads
}

func newWLHarness(t *testing.T, opt ...func(*WorkloadOptions)) *wlHarness {
	t.Helper()
	fc := testclock.NewFakeClock(t0)
	core, logs := observer.New(zapcore.DebugLevel)
	h := &wlHarness{clock: fc, sts: &wlSTS{clock: fc}, ecr: &wlECR{clock: fc, lifetime: 12 * time.Hour}, logs: logs}
	o := WorkloadOptions{Clock: fc, Rand: constRand(0.5), Log: zap.New(core), STS: h.sts, NewECR: h.ecr.newECR}
	for _, f := range opt {
		f(&o)
	}
	w, err := NewWorkloads(o)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	return h
}

// assertNoSecrets checks errors, logs and a status dump for any token or key.
func (h *wlHarness) assertNoSecrets(t *testing.T, tokens []string, texts ...string) {
	t.Helper()
	for _, e := range h.logs.All() {
		texts = append(texts, e.Message, fmt.Sprint(e.ContextMap()))
	}
	st, _ := json.Marshal(h.w.Snapshot())
	texts = append(texts, string(st), fmt.Sprintf("%+v", h.w.Snapshot()))
	secrets := append([]string{wlSecretKey, wlSessTok, "SIGNATURE-SECRET", "ecrpw-"}, tokens...)
	for _, s := range texts {
		for _, sec := range secrets {
			if sec != "" && strings.Contains(s, sec) {
				t.Errorf("secret %q leaked in %q", sec, s)
			}
		}
	}
}

func TestWorkloadsIsolateIdentities(t *testing.T) {
	h := newWLHarness(t)
	reg := host("999999999999", "eu-west-1")
	exp := t0.Add(time.Hour)
	type call struct {
		name, role, ns, sa, session string
	}
	calls := []call{
		{"team-a", roleA, "team-a", "puller", "ecr-node-auth-team-a-puller"},
		{"team-b, other role", roleB, "team-b", "puller", "ecr-node-auth-team-b-puller"},
		{"same SA, other role", roleB, "team-a", "puller", "ecr-node-auth-team-a-puller"},
		{"same role, other SA", roleA, "team-a", "builder", "ecr-node-auth-team-a-builder"},
		{"same role, same SA name, other namespace", roleA, "team-c", "puller", "ecr-node-auth-team-c-puller"},
	}
	seen := map[string]string{}
	var toks []string
	for i, c := range calls {
		tok := saToken(t, c.ns, c.sa, t0, exp)
		toks = append(toks, tok)
		cred, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: c.role, ServiceAccountToken: tok, Host: reg})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if h.sts.n() != i+1 || h.ecr.n() != i+1 {
			t.Fatalf("%s: %d STS, %d ECR calls, want %d each", c.name, h.sts.n(), h.ecr.n(), i+1)
		}
		if got := h.sts.last(); got.role != c.role || got.session != c.session || got.token != tok {
			t.Errorf("%s: STS called with role %s session %s (token matches: %v)", c.name, got.role, got.session, got.token == tok)
		}
		if !strings.Contains(cred.Password, c.role+"-"+c.session) {
			t.Errorf("%s: credential from the wrong identity", c.name)
		}
		if other, dup := seen[cred.Password]; dup {
			t.Errorf("%s got the credential of %s", c.name, other)
		}
		seen[cred.Password] = c.name
	}
	// Repeats with the same token are answered from the cache, each with its
	// own credential.
	for i, c := range calls {
		cred, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: c.role, ServiceAccountToken: toks[i], Host: reg})
		if err != nil {
			t.Fatal(err)
		}
		if seen[cred.Password] != c.name {
			t.Errorf("%s: repeat got %q's credential", c.name, seen[cred.Password])
		}
	}
	if h.sts.n() != len(calls) || h.ecr.n() != len(calls) {
		t.Errorf("repeats made calls: %d STS, %d ECR", h.sts.n(), h.ecr.n())
	}
	// A fresh token (as the kubelet sends after rotation) is first verified
	// by STS, one call each, then gets its own entry's cached ECR token.
	for _, c := range calls {
		tok := saToken(t, c.ns, c.sa, t0, exp.Add(time.Minute))
		toks = append(toks, tok)
		cred, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: c.role, ServiceAccountToken: tok, Host: reg})
		if err != nil {
			t.Fatal(err)
		}
		if seen[cred.Password] != c.name {
			t.Errorf("%s: fresh token got %q's credential", c.name, seen[cred.Password])
		}
		if got := h.sts.last(); got.role != c.role || got.session != c.session || got.token != tok {
			t.Errorf("%s: fresh token verified with role %s session %s (token matches: %v)", c.name, got.role, got.session, got.token == tok)
		}
	}
	if h.sts.n() != 2*len(calls) || h.ecr.n() != len(calls) {
		t.Errorf("fresh tokens: %d STS, %d ECR calls, want %d, %d", h.sts.n(), h.ecr.n(), 2*len(calls), len(calls))
	}
	snap := h.w.Snapshot()
	if len(snap) != len(calls) || h.w.Len() != len(calls) {
		t.Fatalf("snapshot has %d entries", len(snap))
	}
	for _, e := range snap {
		if e.Issuer != testIssuer || !strings.HasPrefix(e.Subject, "system:serviceaccount:") || len(e.Registries) != 1 ||
			e.Registries[0] != reg.Name || !e.ExpiresAt[reg.Name].Equal(t0.Add(12*time.Hour)) ||
			!e.CredentialsExpireAt.Equal(t0.Add(time.Hour)) || e.LastError != "" {
			t.Errorf("snapshot entry %+v", e)
		}
	}
	h.assertNoSecrets(t, toks)
}

func TestWorkloadsRefuseUnusableToken(t *testing.T) {
	h := newWLHarness(t)
	reg := host("999999999999", "eu-west-1")
	expired := saToken(t, "team-a", "puller", t0.Add(-2*time.Hour), t0.Add(-time.Hour))
	tests := []struct {
		name, role, token string
		want              []string
	}{
		{"expired", roleA, expired, []string{"service account token expired at", "sub=system:serviceaccount:team-a:puller"}},
		{"empty", roleA, "", []string{"service account token is empty"}},
		{"malformed", roleA, "not-a-jwt", []string{"service account token is malformed"}},
		{"not a role", "arn:aws:iam::111122223333:user/bob", saToken(t, "a", "b", t0, t0.Add(time.Hour)), []string{"not an IAM role ARN"}},
		{"no role", "", saToken(t, "a", "b", t0, t0.Add(time.Hour)), []string{"not an IAM role ARN"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: tc.role, ServiceAccountToken: tc.token, Host: reg})
			var c *refresh.Classified
			if !errors.As(err, &c) || c.Class != refresh.Permanent {
				t.Fatalf("err = %v, want a permanent *refresh.Classified", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			h.assertNoSecrets(t, []string{tc.token}, err.Error())
		})
	}
	if h.sts.n() != 0 || h.ecr.n() != 0 {
		t.Errorf("%d STS, %d ECR calls for unusable tokens", h.sts.n(), h.ecr.n())
	}
}

func TestWorkloadsConcurrentSameKeyOneCall(t *testing.T) {
	h := newWLHarness(t)
	h.sts.gate = make(chan struct{})
	const n = 20
	var wg sync.WaitGroup
	creds := make([]Credential, n)
	errs := make([]error, n)
	// Every request carries the same (new) token, as pods of one SA do.
	tok := saToken(t, "team-a", "puller", t0, t0.Add(time.Hour))
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds[i], errs[i] = h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: host("999999999999", "eu-west-1")})
		}()
	}
	// Let every request reach the shared call, then answer it.
	time.Sleep(50 * time.Millisecond)
	close(h.sts.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || creds[i].Password != creds[0].Password {
			t.Fatalf("request %d: %v %v", i, creds[i], errs[i])
		}
	}
	if h.sts.n() != 1 || h.ecr.n() != 1 {
		t.Errorf("%d STS and %d ECR calls for %d concurrent requests, want 1 each", h.sts.n(), h.ecr.n(), n)
	}
	// Another registry of the same ECR service: the same token, no call.
	c, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: host("888888888888", "eu-west-1")})
	if err != nil || c.Password != creds[0].Password || h.ecr.n() != 1 {
		t.Errorf("same service, other registry: %v, %d ECR calls", err, h.ecr.n())
	}
	// Another region: one ECR call with the cached role credentials.
	if _, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: host("999999999999", "us-east-1")}); err != nil {
		t.Fatal(err)
	}
	if h.sts.n() != 1 || h.ecr.n() != 2 {
		t.Errorf("other region: %d STS, %d ECR calls, want 1, 2", h.sts.n(), h.ecr.n())
	}

	// A new token of the same SA sent by many requests at once: one STS call
	// verifies it for all, and the cached ECR token is served.
	tok2 := saToken(t, "team-a", "puller", t0, t0.Add(2*time.Hour))
	h.sts.gate = make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds[i], errs[i] = h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok2, Host: host("999999999999", "eu-west-1")})
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(h.sts.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || creds[i].Password != c.Password {
			t.Fatalf("new token, request %d: %v, same ECR token %v", i, errs[i], creds[i].Password == c.Password)
		}
	}
	if h.sts.n() != 2 || h.ecr.n() != 2 || h.sts.last().token != tok2 {
		t.Errorf("%d concurrent requests with a new token: %d STS, %d ECR calls, want 2, 2", n, h.sts.n(), h.ecr.n())
	}
}

func TestWorkloadsRefreshUsesNewestToken(t *testing.T) {
	h := newWLHarness(t, func(o *WorkloadOptions) { o.Idle = 24 * time.Hour })
	reg := host("999999999999", "eu-west-1")
	get := func(tok string) Credential {
		t.Helper()
		c, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := get(saToken(t, "ns", "sa", t0, t0.Add(2*time.Hour)))
	// Later tokens: each is verified once by STS; the newest (latest expiry)
	// is kept for the next exchange, an older one presented after it is not.
	h.clock.Step(time.Hour)
	newest := saToken(t, "ns", "sa", t0.Add(time.Hour), t0.Add(10*time.Hour))
	older := saToken(t, "ns", "sa", t0.Add(time.Hour), t0.Add(9*time.Hour))
	if c := get(newest); c.Password != first.Password || h.sts.n() != 2 {
		t.Errorf("cached ECR token not reused before its refresh time, or %d STS calls", h.sts.n())
	}
	h.clock.Step(5 * time.Hour) // +6h: before the ECR token's refresh time (6h36m with jitter 0.5)
	get(older)
	if h.ecr.n() != 1 || h.sts.n() != 3 {
		t.Fatalf("%d ECR, %d STS calls before the refresh time, want 1, 3", h.ecr.n(), h.sts.n())
	}
	h.clock.Step(time.Hour) // +7h: refresh due; role credentials (1h, from +6h) expired
	c := get(older)
	if c.Password == first.Password || h.ecr.n() != 2 || h.sts.n() != 4 {
		t.Fatalf("after the refresh time: same token %v, %d ECR, %d STS calls", c.Password == first.Password, h.ecr.n(), h.sts.n())
	}
	if h.sts.last().token != newest {
		t.Error("the STS call did not carry the newest token presented")
	}
}

func TestWorkloadsSTSFailure(t *testing.T) {
	h := newWLHarness(t)
	h.sts.fail = func(*sts.AssumeRoleWithWebIdentityInput) error {
		return apiErr("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
	reg := host("999999999999", "eu-west-1")
	tok := saToken(t, "team-a", "puller", t0, t0.Add(time.Hour))
	_, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg})
	var c *refresh.Classified
	if !errors.As(err, &c) || c.Class != refresh.Permanent || c.Code != "AccessDenied" {
		t.Fatalf("err = %#v", err)
	}
	for _, want := range []string{"trust policy rejected sub=system:serviceaccount:team-a:puller", roleA, testIssuer} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// Within the backoff: the same answer without a call.
	_, err2 := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg})
	if err2 == nil || h.sts.n() != 1 || h.ecr.n() != 0 {
		t.Errorf("retry within the backoff: %v, %d STS calls", err2, h.sts.n())
	}
	if snap := h.w.Snapshot(); len(snap) != 1 || !strings.Contains(snap[0].LastError, "trust policy rejected") {
		t.Errorf("snapshot %+v", snap)
	}
	// Fixed; after the backoff (1 min .. 10 min) it works.
	h.sts.mu.Lock()
	h.sts.fail = nil
	h.sts.mu.Unlock()
	h.clock.Step(2 * time.Minute)
	if _, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg}); err != nil {
		t.Fatalf("after the fix: %v", err)
	}
	if snap := h.w.Snapshot(); snap[0].LastError != "" {
		t.Errorf("LastError kept after success: %q", snap[0].LastError)
	}
	h.assertNoSecrets(t, []string{tok}, err.Error(), err2.Error())
}

func TestWorkloadsECRFailureServesLastGood(t *testing.T) {
	h := newWLHarness(t, func(o *WorkloadOptions) { o.Idle = 24 * time.Hour })
	reg := host("999999999999", "eu-west-1")
	tok := func() string { return saToken(t, "ns", "sa", h.clock.Now(), h.clock.Now().Add(time.Hour)) }
	get := func() (Credential, error) {
		return h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok(), Host: reg})
	}
	good, err := get()
	if err != nil {
		t.Fatal(err)
	}
	h.ecr.mu.Lock()
	h.ecr.fail = apiErr("ThrottlingException", "Rate exceeded")
	h.ecr.mu.Unlock()
	h.clock.Step(7 * time.Hour) // refresh due, token still valid (until 9h)
	if c, err := get(); err != nil || c.Password != good.Password {
		t.Fatalf("throttled refresh: %v, same token %v", err, c.Password == good.Password)
	}
	calls := h.ecr.n()
	if c, err := get(); err != nil || c.Password != good.Password || h.ecr.n() != calls {
		t.Errorf("within the backoff: %v, %d calls (was %d)", err, h.ecr.n(), calls)
	}
	h.clock.Step(5 * time.Hour) // expired
	_, err = get()
	if err == nil || !strings.Contains(err.Error(), "throttled by AWS") || !strings.Contains(err.Error(), "sub=system:serviceaccount:ns:sa") {
		t.Errorf("expired and throttled: %v", err)
	}
}

func TestWorkloadsEviction(t *testing.T) {
	h := newWLHarness(t, func(o *WorkloadOptions) { o.MaxEntries = 2 })
	reg := host("999999999999", "eu-west-1")
	get := func(sa string) {
		t.Helper()
		tok := saToken(t, "ns", sa, h.clock.Now(), h.clock.Now().Add(time.Hour))
		if _, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg}); err != nil {
			t.Fatal(err)
		}
	}
	subjects := func() []string {
		var out []string
		for _, e := range h.w.Snapshot() {
			out = append(out, strings.TrimPrefix(e.Subject, "system:serviceaccount:ns:"))
		}
		return out
	}
	get("a")
	h.clock.Step(time.Minute)
	get("b")
	h.clock.Step(time.Minute)
	get("a") // a is now the most recently used
	h.clock.Step(time.Minute)
	get("c") // full: b goes
	if got := strings.Join(subjects(), ","); got != "a,c" {
		t.Errorf("after LRU eviction: %s, want a,c", got)
	}
	calls := h.sts.n()
	get("b") // back: a new exchange
	if h.sts.n() != calls+1 {
		t.Errorf("evicted entry answered from a cache")
	}
	// Idle: 2 h without use drops everything.
	h.clock.Step(2 * time.Hour)
	if n := len(h.w.Snapshot()); n != 0 {
		t.Errorf("%d entries after the idle time", n)
	}
	get("a")
	if h.sts.n() != calls+2 {
		t.Errorf("idle-evicted entry answered from a cache")
	}
}

func TestWorkloadRequestRedacted(t *testing.T) {
	tok := saToken(t, "ns", "sa", t0, t0.Add(time.Hour))
	r := WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: host("999999999999", "eu-west-1")}
	for _, s := range []string{fmt.Sprint(r), fmt.Sprintf("%+v", r), fmt.Sprintf("%#v", r), fmt.Sprintf("%s", r), r.String()} {
		if strings.Contains(s, tok) || strings.Contains(s, "SIGNATURE") || !strings.Contains(s, roleA) {
			t.Errorf("printed request %q", s)
		}
	}
}

func TestWorkloadSession(t *testing.T) {
	for _, tc := range []struct{ sub, want string }{
		{"system:serviceaccount:team-a:puller", "ecr-node-auth-team-a-puller"},
		{"system:serviceaccount:kube-system:ecr agent!", "ecr-node-auth-kube-system-ecr-agent-"},
		{"system:serviceaccount:" + strings.Repeat("n", 60) + ":sa", "ecr-node-auth-" + strings.Repeat("n", 50)},
		{"weird/subject", "ecr-node-auth-weird-subject"},
	} {
		if got := workloadSession(tc.sub); got != tc.want {
			t.Errorf("workloadSession(%q) = %q, want %q", tc.sub, got, tc.want)
		}
	}
}

// A token STS does not accept never gets anything cached for the identity it
// claims, whatever STS answers, and does not disturb that identity.
func TestWorkloadsForgedTokenNeverServed(t *testing.T) {
	tests := []struct {
		name   string
		reject error // STS's answer to the forged token
		class  refresh.Class
		code   string
		want   []string
	}{
		{"bad signature", nil, refresh.Permanent, "InvalidIdentityToken",
			[]string{"OIDC provider missing or untrusted (iss=" + testIssuer + ")"}},
		{"trust policy", apiErr("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"), refresh.Permanent, "AccessDenied",
			[]string{"trust policy rejected sub=system:serviceaccount:team-a:puller", roleA, testIssuer}},
		{"STS outage", apiErr("ServiceUnavailable", "Service unavailable"), refresh.Transient, "ServiceUnavailable",
			[]string{"cannot verify the service account token with STS: AWS service error"}},
		{"STS unreachable", errors.New("dial tcp: connection refused"), refresh.Transient, "",
			[]string{"cannot verify the service account token with STS: transient error"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newWLHarness(t)
			h.sts.reject = tc.reject
			reg := host("999999999999", "eu-west-1")
			get := func(tok string) (Credential, error) {
				return h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg})
			}
			genuine := saToken(t, "team-a", "puller", t0, t0.Add(time.Hour))
			victim, err := get(genuine)
			if err != nil {
				t.Fatal(err)
			}
			toks := []string{genuine}
			var texts []string
			// Same iss and sub as the cached entry: the same exp, a later
			// one (it would become the entry's newest token), and the
			// same forged token again.
			forged := forgedToken(t, "team-a", "puller", t0, t0.Add(time.Hour))
			for i, tok := range []string{forged, forgedToken(t, "team-a", "puller", t0, t0.Add(3*time.Hour)), forged} {
				toks = append(toks, tok)
				c, err := get(tok)
				var cl *refresh.Classified
				if !errors.As(err, &cl) || cl.Class != tc.class || cl.Code != tc.code {
					t.Fatalf("forged token %d: err = %v, want a %s *refresh.Classified with code %q", i, err, tc.class, tc.code)
				}
				if c != (Credential{}) || strings.Contains(err.Error(), victim.Password) {
					t.Fatalf("forged token %d got the victim's credential", i)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				texts = append(texts, err.Error())
			}
			// Each forged token was sent to STS once (the repeat is within
			// its backoff); no ECR call.
			if h.sts.n() != 3 || h.ecr.n() != 1 {
				t.Errorf("%d STS, %d ECR calls, want 3, 1", h.sts.n(), h.ecr.n())
			}
			// The genuine workload is still served from its cache, and
			// its next exchange carries its own token.
			if c, err := get(genuine); err != nil || c.Password != victim.Password || h.sts.n() != 3 || h.ecr.n() != 1 {
				t.Errorf("genuine token after the forgeries: %v, same credential %v, %d STS, %d ECR calls", err, c.Password == victim.Password, h.sts.n(), h.ecr.n())
			}
			h.clock.Step(7 * time.Hour / 10) // +42m: still before the token's expiry; role creds due (refresh at ~30m)
			if _, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: genuine, Host: host("999999999999", "us-east-1")}); err != nil {
				t.Fatalf("genuine token, other region: %v", err)
			}
			if got := h.sts.last(); h.sts.n() != 4 || got.token != genuine {
				t.Errorf("role credentials refreshed with a forged token (%d STS calls)", h.sts.n())
			}
			h.assertNoSecrets(t, toks, texts...)
		})
	}
}

// Each new token costs one STS call and no ECR call; a token seen before
// costs nothing, until it expires.
func TestWorkloadsTokenVerificationCost(t *testing.T) {
	h := newWLHarness(t)
	reg := host("999999999999", "eu-west-1")
	first := saToken(t, "team-a", "puller", t0, t0.Add(time.Hour))
	second := saToken(t, "team-a", "puller", t0.Add(10*time.Minute), t0.Add(2*time.Hour))
	want, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: first, Host: reg})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		at       time.Duration // since t0
		tok      string
		sts, ecr int // calls made by the step
		credsExp time.Duration
		err      string
	}{
		{"same token repeated", time.Minute, first, 0, 0, time.Hour, ""},
		{"second genuine token", 10 * time.Minute, second, 1, 0, 70 * time.Minute, ""},
		{"second token repeated", 15 * time.Minute, second, 0, 0, 70 * time.Minute, ""},
		{"first token still accepted", 20 * time.Minute, first, 0, 0, 70 * time.Minute, ""},
		{"first token expired", time.Hour, first, 0, 0, 70 * time.Minute, "service account token expired at"},
		{"second token still good", time.Hour, second, 0, 0, 70 * time.Minute, ""},
	}
	for _, st := range steps {
		h.clock.SetTime(t0.Add(st.at))
		sts0, ecr0 := h.sts.n(), h.ecr.n()
		c, err := h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: st.tok, Host: reg})
		switch {
		case st.err == "" && (err != nil || c.Password != want.Password):
			t.Errorf("%s: %v, same ECR token %v", st.name, err, c.Password == want.Password)
		case st.err != "" && (err == nil || !strings.Contains(err.Error(), st.err) || c != (Credential{})):
			t.Errorf("%s: err = %v, want %q", st.name, err, st.err)
		}
		if h.sts.n()-sts0 != st.sts || h.ecr.n()-ecr0 != st.ecr {
			t.Errorf("%s: %d STS, %d ECR calls, want %d, %d", st.name, h.sts.n()-sts0, h.ecr.n()-ecr0, st.sts, st.ecr)
		}
		if st.sts > 0 {
			if got := h.sts.last(); got.token != st.tok || got.role != roleA || got.session != "ecr-node-auth-team-a-puller" {
				t.Errorf("%s: STS called with role %s session %s (token matches: %v)", st.name, got.role, got.session, got.token == st.tok)
			}
		}
		// The verifying exchange's credentials are the entry's.
		if snap := h.w.Snapshot(); len(snap) != 1 || !snap[0].CredentialsExpireAt.Equal(t0.Add(st.credsExp)) {
			t.Errorf("%s: snapshot %+v", st.name, snap)
		}
	}
	h.assertNoSecrets(t, []string{first, second})
}

// While STS is down, an accepted token is served from the cache (the last
// good ECR token while valid) and an unverified one is refused.
func TestWorkloadsSTSOutage(t *testing.T) {
	h := newWLHarness(t, func(o *WorkloadOptions) { o.Idle = 24 * time.Hour })
	reg := host("999999999999", "eu-west-1")
	get := func(tok string) (Credential, error) {
		return h.w.Get(context.Background(), WorkloadRequest{RoleARN: roleA, ServiceAccountToken: tok, Host: reg})
	}
	accepted := saToken(t, "ns", "sa", t0, t0.Add(10*time.Hour))
	good, err := get(accepted)
	if err != nil {
		t.Fatal(err)
	}
	h.sts.setFail(func(*sts.AssumeRoleWithWebIdentityInput) error {
		return apiErr("ServiceUnavailable", "Service unavailable")
	})
	unverified := saToken(t, "ns", "sa", t0.Add(time.Minute), t0.Add(11*time.Hour))
	for _, at := range []time.Duration{time.Minute, 7 * time.Hour} { // before, after the ECR token's refresh time
		h.clock.SetTime(t0.Add(at))
		if c, err := get(accepted); err != nil || c.Password != good.Password {
			t.Errorf("+%s, accepted token: %v, same ECR token %v", at, err, c.Password == good.Password)
		}
		c, err := get(unverified)
		var cl *refresh.Classified
		if !errors.As(err, &cl) || cl.Class != refresh.Transient || c != (Credential{}) ||
			!strings.Contains(err.Error(), "cannot verify the service account token with STS") {
			t.Errorf("+%s, unverified token: %v, credential served %v", at, err, c != (Credential{}))
		}
	}
	// STS back: the new token is verified (one call) and the entry's role
	// credentials renewed with it; the ECR token is refetched as it is due.
	h.sts.setFail(nil)
	h.clock.Step(3 * time.Minute) // past every backoff
	n := h.sts.n()
	c, err := get(unverified)
	if err != nil || c.Password == good.Password || h.sts.n() != n+1 || h.ecr.n() != 2 || h.sts.last().token != unverified {
		t.Errorf("after the outage: %v, %d STS calls (was %d), %d ECR calls", err, h.sts.n(), n, h.ecr.n())
	}
	h.assertNoSecrets(t, []string{accepted, unverified}, fmt.Sprint(err))
}
