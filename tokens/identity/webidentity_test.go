package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

const (
	testRole   = "arn:aws:iam::999999999999:role/mk8s-ecr-driver"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
	testSessTk = "FwoGZXIvYXdzSESSIONTOKENdoNotLeak"
)

// fixedRand is a jitter source that always returns v.
type fixedRand float64

func (f fixedRand) Float64() float64 { return float64(f) }

// fakeSTS is a scripted STS. Each call takes the next result from results
// (the last repeats); a nil error gives credentials valid for the requested
// duration from the clock's now.
type fakeSTS struct {
	clock   *clocktesting.FakeClock
	gate    chan struct{} // if set, each call waits for a receive (or close)
	entered atomic.Int32  // calls that reached the gate

	mu      sync.Mutex
	results []error
	inputs  []sts.AssumeRoleWithWebIdentityInput
	issued  int // credentials issued over the fake's life, for distinct key IDs
}

func (f *fakeSTS) AssumeRoleWithWebIdentity(ctx context.Context, in *sts.AssumeRoleWithWebIdentityInput, _ ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	if f.gate != nil {
		f.entered.Add(1)
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.inputs)
	f.inputs = append(f.inputs, *in)
	var err error
	if len(f.results) > 0 {
		err = f.results[min(n, len(f.results)-1)]
	}
	if err != nil {
		return nil, err
	}
	f.issued++
	exp := f.clock.Now().Add(time.Duration(aws.ToInt32(in.DurationSeconds)) * time.Second)
	return &sts.AssumeRoleWithWebIdentityOutput{
		Credentials: &ststypes.Credentials{
			AccessKeyId:     aws.String(fmt.Sprintf("ASIAEXAMPLE%04d", f.issued)),
			SecretAccessKey: aws.String(testSecret),
			SessionToken:    aws.String(testSessTk),
			Expiration:      &exp,
		},
		AssumedRoleUser: &ststypes.AssumedRoleUser{Arn: aws.String("arn:aws:sts::999999999999:assumed-role/mk8s-ecr-driver/" + aws.ToString(in.RoleSessionName))},
	}, nil
}

func (f *fakeSTS) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.inputs)
}

func (f *fakeSTS) setResults(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results = errs
	f.inputs = nil
}

// stsError builds the error the SDK returns for an STS error response.
func stsError(status int, code, msg string) error {
	return &smithy.OperationError{
		ServiceID: "STS", OperationName: "AssumeRoleWithWebIdentity",
		Err: &awshttp.ResponseError{
			RequestID: "req-1",
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      &smithy.GenericAPIError{Code: code, Message: msg, Fault: smithy.FaultClient},
			},
		},
	}
}

type harness struct {
	clk  *clocktesting.FakeClock
	sts  *fakeSTS
	logs *observer.ObservedLogs
	path string
	p    *WebIdentity
}

func newHarness(t *testing.T, o Options) *harness {
	t.Helper()
	clk := clocktesting.NewFakeClock(t0)
	core, logs := observer.New(zap.DebugLevel)
	h := &harness{clk: clk, sts: &fakeSTS{clock: clk}, logs: logs, path: filepath.Join(t.TempDir(), "token")}
	o.STS, o.RoleARN, o.TokenFile, o.Clock, o.Rand, o.Log = h.sts, testRole, h.path, clk, fixedRand(0.5), zap.New(core)
	if o.SessionName == "" {
		o.SessionName = SessionName("ip-10-0-0-1.ec2.internal")
	}
	p, err := NewWebIdentity(o)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	return h
}

// writeToken writes a token valid for 24 h with the given audience.
func (h *harness) writeToken(t *testing.T, aud ...string) string {
	t.Helper()
	if len(aud) == 0 {
		aud = []string{"sts.amazonaws.com"}
	}
	tok := makeJWT(t, stdClaims(aud, h.clk.Now().Add(24*time.Hour)))
	writeFile(t, h.path, tok)
	return tok
}

// assertClean fails if any error, log line or status shows a secret.
func (h *harness) assertClean(t *testing.T, toks []string, errs ...error) {
	t.Helper()
	secrets := append([]string{testSecret, testSessTk}, toks...)
	for _, tk := range toks {
		secrets = append(secrets, strings.Split(tk, ".")...)
	}
	for _, err := range errs {
		if err != nil {
			assertNoSecret(t, "error", err.Error(), secrets...)
		}
	}
	for _, e := range h.logs.All() {
		assertNoSecret(t, "log", e.Message+" "+fmt.Sprint(e.ContextMap()), secrets...)
	}
	assertNoSecret(t, "status", fmt.Sprintf("%+v", h.p.Status()), secrets...)
}

func TestWebIdentityCachesUntilRefreshTime(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.writeToken(t)
	ctx := context.Background()

	c1, err := h.p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.sts.calls() != 1 {
		t.Fatalf("calls = %d", h.sts.calls())
	}
	in := h.sts.inputs[0]
	if aws.ToInt32(in.DurationSeconds) != 3600 || aws.ToString(in.RoleArn) != testRole ||
		aws.ToString(in.RoleSessionName) != "ecr-node-auth-ip-10-0-0-1.ec2.internal" || aws.ToString(in.WebIdentityToken) != tok {
		t.Errorf("STS input = %+v", in)
	}
	if !c1.CanExpire || !c1.Expires.Equal(t0.Add(time.Hour)) || c1.AccountID != "999999999999" || c1.SecretAccessKey != testSecret {
		t.Errorf("creds = %+v", c1)
	}
	// refresh.At with jitter 0.5: 30m + 0.5*6m = 33m.
	want := refresh.At(t0, t0.Add(time.Hour), fixedRand(0.5))
	if st := h.p.Status(); !st.NextRefresh.Equal(want) || !st.LastRefresh.Equal(t0) || st.Mode != ModeWebIdentity ||
		st.Claims.Subject != testSub || st.LastError != "" || !st.CredentialsExpireAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("status = %+v", st)
	}
	h.clk.SetTime(want.Add(-time.Second))
	c2, err := h.p.Retrieve(ctx)
	if err != nil || c2 != c1 || h.sts.calls() != 1 {
		t.Fatalf("before refresh time: err=%v same=%v calls=%d", err, c2 == c1, h.sts.calls())
	}
	h.clk.SetTime(want)
	c3, err := h.p.Retrieve(ctx)
	if err != nil || c3.AccessKeyID == c1.AccessKeyID || h.sts.calls() != 2 {
		t.Fatalf("at refresh time: err=%v key=%s calls=%d", err, c3.AccessKeyID, h.sts.calls())
	}
	h.assertClean(t, []string{tok})
}

func TestWebIdentityConcurrentCallsShareOneSTSCall(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.writeToken(t)
	h.sts.gate = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.p.Retrieve(context.Background())
			errs <- err
		}()
	}
	// Hold the first STS call until it is in flight, then let every call
	// through: a second call would show in calls() instead of hanging.
	deadline := time.Now().Add(5 * time.Second)
	for h.sts.entered.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no STS call")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the other callers pile up on the shared call
	close(h.sts.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := h.sts.calls(); n != 1 {
		t.Fatalf("STS calls = %d, want 1", n)
	}
	h.assertClean(t, []string{tok})
}

func TestWebIdentityCallerCancelDoesNotBreakSharedCall(t *testing.T) {
	h := newHarness(t, Options{})
	h.writeToken(t)
	h.sts.gate = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := h.p.Retrieve(ctx)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	h.sts.gate <- struct{}{}
	close(h.sts.gate) // later calls pass freely
	deadline := time.Now().Add(5 * time.Second)
	for h.p.Status().LastRefresh.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("shared call never completed")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := h.p.Retrieve(context.Background()); err != nil || h.sts.calls() != 1 {
		t.Fatalf("err=%v calls=%d", err, h.sts.calls())
	}
}

func TestWebIdentityUnusableTokenIsNeverSent(t *testing.T) {
	tests := []struct {
		name    string
		content func(t *testing.T) *string // nil: no file
		kind    error
		class   refresh.Class
		reason  string
	}{
		{"expired", func(t *testing.T) *string {
			return ptr(makeJWT(t, stdClaims([]string{"sts.amazonaws.com"}, t0.Add(-60*time.Second))))
		}, ErrTokenExpired, refresh.Permanent, "web identity token expired at 2026-06-01T11:59:00Z; waiting for kubelet rotation"},
		{"empty", func(*testing.T) *string { return ptr("") }, ErrTokenEmpty, refresh.Transient, "is empty"},
		{"malformed", func(t *testing.T) *string {
			return ptr(makeJWT(t, stdClaims("sts.amazonaws.com", t0.Add(time.Hour))) + "\nlog line")
		}, ErrTokenMalformed, refresh.Permanent, "trailing data"},
		{"missing", func(*testing.T) *string { return nil }, ErrTokenMissing, refresh.Transient, "mount the projected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			content := tt.content(t)
			if content != nil {
				writeFile(t, h.path, *content)
			}
			_, err := h.p.Retrieve(context.Background())
			var c *refresh.Classified
			if !errors.As(err, &c) {
				t.Fatalf("err %T %v is not *refresh.Classified", err, err)
			}
			if c.Class != tt.class || !strings.Contains(c.Reason, tt.reason) || !errors.Is(err, tt.kind) {
				t.Errorf("class=%v reason=%q is(%v)=%v", c.Class, c.Reason, tt.kind, errors.Is(err, tt.kind))
			}
			if !strings.Contains(err.Error(), h.path) {
				t.Errorf("error %q does not name the file", err)
			}
			if h.sts.calls() != 0 {
				t.Fatalf("STS was called %d times with an unusable token", h.sts.calls())
			}
			st := h.p.Status()
			if st.ErrorClass != tt.class.String() || st.LastError != err.Error() {
				t.Errorf("status = %+v", st)
			}
			if tt.kind == ErrTokenExpired && st.Claims.Subject != testSub {
				t.Errorf("status claims of the expired token = %+v", st.Claims)
			}
			var toks []string
			if content != nil {
				toks = append(toks, strings.TrimSpace(strings.SplitN(*content, "\n", 2)[0]))
			}
			h.assertClean(t, toks, err)
		})
	}
}

func TestWebIdentitySTSErrors(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		aud    string
		class  refresh.Class
		code   string
		reason []string
	}{
		{"case4 audience", stsError(400, "InvalidIdentityToken", "Incorrect token audience"), "sts.amazon.com", refresh.Permanent, "InvalidIdentityToken",
			[]string{"token aud=sts.amazon.com", "configured audience=sts.amazonaws.com", "iss=" + testIss, "sub=" + testSub}},
		{"case5.1 verification key", stsError(400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements"), "", refresh.Transient, "InvalidIdentityToken",
			[]string{"signing keys", "iss=" + testIss}},
		{"case5.2 IdP communication", stsError(400, "IDPCommunicationError", "The error was due to a problem communicating with the IdP"), "", refresh.Transient, "IDPCommunicationError",
			[]string{"could not reach the OIDC identity provider", "iss=" + testIss}},
		{"case5.3 throttling", stsError(400, "Throttling", "Rate exceeded"), "", refresh.Throttled, "Throttling",
			[]string{"throttled"}},
		{"case5.4 not validated", stsError(400, "InvalidIdentityToken", "The web identity token provided could not be validated"), "", refresh.Permanent, "InvalidIdentityToken",
			[]string{"OIDC provider missing or untrusted (iss=" + testIss + ")"}},
		{"no OIDC provider", stsError(400, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for "+testIss), "", refresh.Permanent, "InvalidIdentityToken",
			[]string{"OIDC provider missing or untrusted (iss=" + testIss + ")"}},
		{"case5.5 access denied", stsError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"), "", refresh.Permanent, "AccessDenied",
			[]string{"trust policy rejected sub=" + testSub, testRole}},
		{"case5.6 thumbprint", stsError(400, "InvalidIdentityToken", "OpenIDConnect provider's HTTPS certificate doesn't match configured thumbprint"), "", refresh.Permanent, "InvalidIdentityToken",
			[]string{"thumbprint mismatch (iss=" + testIss + ")"}},
		{"expired per STS", stsError(400, "ExpiredTokenException", "Token expired: current date/time 1 must be before the expiration date/time 0"), "", refresh.Permanent, "ExpiredTokenException",
			[]string{"STS says the web identity token expired", "sub=" + testSub}},
		{"5xx", stsError(503, "ServiceUnavailable", "try later"), "", refresh.Transient, "ServiceUnavailable", []string{"AWS service error"}},
		{"network", &smithy.OperationError{ServiceID: "STS", OperationName: "AssumeRoleWithWebIdentity", Err: context.DeadlineExceeded}, "", refresh.Transient, "", []string{"timed out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			aud := tt.aud
			if aud == "" {
				aud = "sts.amazonaws.com"
			}
			tok := h.writeToken(t, aud)
			h.sts.setResults(tt.err)
			_, err := h.p.Retrieve(context.Background())
			var c *refresh.Classified
			if !errors.As(err, &c) {
				t.Fatalf("err %T %v", err, err)
			}
			if h.sts.calls() != 1 {
				t.Errorf("STS calls = %d, want 1 (STS is the authority even on an audience mismatch)", h.sts.calls())
			}
			if base := refresh.Classify(tt.err); c.Class != base.Class || c.Class != tt.class || c.Code != tt.code {
				t.Errorf("class=%v code=%q, want %v %q (Classify: %v)", c.Class, c.Code, tt.class, tt.code, base.Class)
			}
			for _, w := range tt.reason {
				if !strings.Contains(c.Reason, w) {
					t.Errorf("reason %q lacks %q", c.Reason, w)
				}
			}
			var api smithy.APIError
			if tt.code != "" && !errors.As(err, &api) {
				t.Errorf("the API error is not reachable with errors.As")
			}
			st := h.p.Status()
			if st.ErrorClass != tt.class.String() || !strings.Contains(st.LastError, c.Reason) {
				t.Errorf("status = %+v", st)
			}
			// The failure is logged with the reason (the daemon's health shows it too).
			found := false
			for _, e := range h.logs.FilterMessage("web identity refresh failed").All() {
				found = found || e.ContextMap()["reason"] == c.Reason
			}
			if !found {
				t.Errorf("no error log with reason %q", c.Reason)
			}
			h.assertClean(t, []string{tok}, err)
		})
	}
}

func TestWebIdentityErrorRedactsEchoedToken(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.writeToken(t)
	h.sts.setResults(stsError(400, "InvalidIdentityToken", "bad token "+tok))
	_, err := h.p.Retrieve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "<redacted>") {
		t.Fatalf("err = %v", err)
	}
	h.assertClean(t, []string{tok}, err)
}

func TestWebIdentityAudienceSelfCheck(t *testing.T) {
	h := newHarness(t, Options{})
	warnings := func() []observer.LoggedEntry {
		return h.logs.FilterMessageSnippet("audience does not contain").All()
	}
	tok1 := h.writeToken(t, "sts.amazon.com")
	for i := range 3 {
		h.clk.Step(time.Hour) // past refresh time: STS is called each time
		if _, err := h.p.Retrieve(context.Background()); err != nil {
			t.Fatal(err)
		}
		if h.sts.calls() != i+1 {
			t.Fatalf("STS not called despite the mismatch")
		}
	}
	if w := warnings(); len(w) != 1 {
		t.Fatalf("warnings for one token = %d, want 1", len(w))
	} else {
		m := w[0].ContextMap()
		if fmt.Sprint(m["token_aud"]) != "[sts.amazon.com]" || m["expected_audience"] != "sts.amazonaws.com" || m["iss"] != testIss || m["sub"] != testSub {
			t.Errorf("warning fields = %v", m)
		}
	}
	h.clk.Step(time.Hour)
	tok2 := h.writeToken(t, "sts.amazon.com") // a new token: warn again
	if _, err := h.p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(warnings()) != 2 {
		t.Fatalf("warnings = %d, want 2", len(warnings()))
	}
	h.clk.Step(time.Hour)
	tok3 := h.writeToken(t, "other", "sts.amazonaws.com") // matches: no warning
	if _, err := h.p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(warnings()) != 2 {
		t.Fatalf("warnings = %d, want 2", len(warnings()))
	}
	h.assertClean(t, []string{tok1, tok2, tok3})
}

func TestWebIdentityServesLastGoodCredentialsThroughOutage(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.writeToken(t)
	ctx := context.Background()
	good, err := h.p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	refreshAt := h.p.Status().NextRefresh

	// STS goes down after the refresh time: the cached credentials are served.
	h.sts.setResults(stsError(503, "ServiceUnavailable", "down"))
	h.clk.SetTime(refreshAt)
	got, err := h.p.Retrieve(ctx)
	if err != nil || got != good {
		t.Fatalf("during outage: err=%v same=%v", err, got == good)
	}
	st := h.p.Status()
	if st.ErrorClass != "transient" || !strings.Contains(st.LastError, "AWS service error") || !st.CredentialsExpireAt.Equal(good.Expires) {
		t.Errorf("status = %+v", st)
	}
	// Within the backoff (>= 1 s for transient errors) STS is not called again.
	calls := h.sts.calls()
	for range 5 {
		if got, err := h.p.Retrieve(ctx); err != nil || got != good {
			t.Fatalf("err=%v", err)
		}
	}
	if h.sts.calls() != calls {
		t.Errorf("STS called %d more times within the backoff", h.sts.calls()-calls)
	}
	// After the backoff, STS is tried again; still down, still served.
	h.clk.Step(3 * time.Second)
	if got, err := h.p.Retrieve(ctx); err != nil || got != good || h.sts.calls() != calls+1 {
		t.Fatalf("err=%v calls=%d", err, h.sts.calls())
	}
	// Once the credentials have expired, the error is returned.
	h.clk.SetTime(good.Expires)
	if _, err := h.p.Retrieve(ctx); err == nil {
		t.Fatal("expired credentials were served")
	}
	// STS is back: full recovery, error cleared.
	h.sts.setResults(nil)
	fresh, err := h.p.Retrieve(ctx)
	if err != nil || fresh.AccessKeyID == good.AccessKeyID {
		t.Fatalf("recovery: err=%v", err)
	}
	if st := h.p.Status(); st.LastError != "" || st.ErrorClass != "" || !st.LastRefresh.Equal(good.Expires) {
		t.Errorf("status after recovery = %+v", st)
	}
	h.assertClean(t, []string{tok})
}

// Case 3: expired token on disk (no STS call, cached creds served), a 0-byte
// file mid-write (transient), then a valid token: full recovery.
func TestWebIdentityTokenRotationRecovery(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.writeToken(t)
	ctx := context.Background()
	good, err := h.p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.clk.SetTime(h.p.Status().NextRefresh)
	expired := makeJWT(t, stdClaims([]string{"sts.amazonaws.com"}, h.clk.Now().Add(-60*time.Second)))
	writeFile(t, h.path, expired)
	if got, err := h.p.Retrieve(ctx); err != nil || got != good {
		t.Fatalf("expired token: err=%v", err)
	}
	if h.sts.calls() != 1 {
		t.Fatalf("expired token sent to STS")
	}
	if st := h.p.Status(); st.ErrorClass != "permanent" || !strings.Contains(st.LastError, "waiting for kubelet rotation") {
		t.Errorf("status = %+v", st)
	}
	// 0-byte file mid-write; TokenChanged lifts the backoff.
	writeFile(t, h.path, "")
	h.p.TokenChanged()
	if got, err := h.p.Retrieve(ctx); err != nil || got != good || h.sts.calls() != 1 {
		t.Fatalf("empty token: err=%v calls=%d", err, h.sts.calls())
	}
	if st := h.p.Status(); st.ErrorClass != "transient" {
		t.Errorf("status = %+v", st)
	}
	// The kubelet writes a valid token.
	tok2 := h.writeToken(t)
	h.p.TokenChanged()
	fresh, err := h.p.Retrieve(ctx)
	if err != nil || fresh == good || h.sts.calls() != 2 {
		t.Fatalf("valid token: err=%v calls=%d", err, h.sts.calls())
	}
	if st := h.p.Status(); st.LastError != "" {
		t.Errorf("status = %+v", st)
	}
	h.assertClean(t, []string{tok, expired, tok2})
}

func TestNewWebIdentityValidation(t *testing.T) {
	base := Options{STS: &fakeSTS{}, RoleARN: testRole, TokenFile: "/t"}
	tests := []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"no STS", func(o *Options) { o.STS = nil }, "STS client"},
		{"no role", func(o *Options) { o.RoleARN = "" }, "role ARN"},
		{"no token file", func(o *Options) { o.TokenFile = "" }, "token file"},
		{"bad session", func(o *Options) { o.SessionName = "a b" }, "outside"},
		{"too long", func(o *Options) { o.Duration = 13 * time.Hour }, "range"},
		{"ok", func(*Options) {}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mutate(&o)
			p, err := NewWebIdentity(o)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.o.Audience != DefaultAudience || p.o.Duration != time.Hour || p.o.SessionName != "ecr-node-auth" {
					t.Errorf("defaults = %+v", p.o)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSessionName(t *testing.T) {
	long := strings.Repeat("n", 100)
	tests := []struct{ node, want string }{
		{"ip-10-0-0-1.ec2.internal", "ecr-node-auth-ip-10-0-0-1.ec2.internal"},
		{"", "ecr-node-auth"},
		{"node_1+a=b,c@d", "ecr-node-auth-node_1+a=b,c@d"},
		{"node 1/ä:x", "ecr-node-auth-node-1---x"},
		{long, "ecr-node-auth-" + long[:50]},
	}
	for _, tt := range tests {
		got := SessionName(tt.node)
		if got != tt.want {
			t.Errorf("SessionName(%q) = %q, want %q", tt.node, got, tt.want)
		}
		if err := validSessionName(got); err != nil {
			t.Errorf("SessionName(%q) = %q is invalid: %v", tt.node, got, err)
		}
	}
}

func TestDefaultChain(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	var next struct {
		creds aws.Credentials
		err   error
	}
	p := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return next.creds, next.err })
	d := NewDefaultChain(p, clk)
	var _ Source = d

	next.creds = aws.Credentials{AccessKeyID: "AKIA1", SecretAccessKey: testSecret, SessionToken: testSessTk,
		Source: "EC2RoleProvider", CanExpire: true, Expires: t0.Add(6 * time.Hour)}
	if _, err := d.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Minute)
	if _, err := d.Retrieve(context.Background()); err != nil { // same creds: not a refresh
		t.Fatal(err)
	}
	st := d.Status()
	if st.Mode != ModeDefaultChain || st.CredentialSource != "EC2RoleProvider" || !st.CredentialsExpireAt.Equal(t0.Add(6*time.Hour)) || !st.LastRefresh.Equal(t0) {
		t.Errorf("status = %+v", st)
	}
	next.err = stsError(403, "AccessDenied", "no")
	_, err := d.Retrieve(context.Background())
	var c *refresh.Classified
	if !errors.As(err, &c) || c.Class != refresh.Permanent {
		t.Fatalf("err = %v", err)
	}
	if st := d.Status(); st.ErrorClass != "permanent" || st.LastError == "" {
		t.Errorf("status = %+v", st)
	}
	assertNoSecret(t, "status", fmt.Sprintf("%+v", d.Status()), testSecret, testSessTk)
}

// A rotation is taken in at once: status shows the new token's claims before
// any STS call, and the cached credentials stay in use.
func TestWebIdentityTokenChangedReadsClaims(t *testing.T) {
	h := newHarness(t, Options{})
	h.writeToken(t)
	if _, err := h.p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	newExp := h.clk.Now().Add(3 * time.Hour).Truncate(time.Second)
	rotated := makeJWT(t, stdClaims([]string{"sts.amazonaws.com"}, newExp))
	writeFile(t, h.path, rotated)
	h.p.TokenChanged()
	if got := h.p.Status().Claims.ExpiresAt; !got.Equal(newExp) {
		t.Fatalf("claims expiry after TokenChanged = %v, want %v", got, newExp)
	}
	if h.sts.calls() != 1 {
		t.Fatalf("TokenChanged called STS (%d calls)", h.sts.calls())
	}
	// A half-written (empty) file keeps the last claims.
	writeFile(t, h.path, "")
	h.p.TokenChanged()
	if got := h.p.Status().Claims.ExpiresAt; !got.Equal(newExp) {
		t.Fatalf("claims after an empty write = %v, want %v", got, newExp)
	}
}
