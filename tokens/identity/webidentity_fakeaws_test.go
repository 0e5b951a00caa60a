package identity

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

const failedMsg = "web identity refresh failed"

// realSTS is a WebIdentity with the real SDK against tests/fakeaws, on a fake clock.
type realSTS struct {
	clk  *clocktesting.FakeClock
	f    *fakeaws.Fake
	logs *observer.ObservedLogs
	path string
	p    *WebIdentity
}

func newRealSTS(t *testing.T) *realSTS {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Now())
	f, err := fakeaws.New(fakeaws.Options{Clock: clk, SigV4Clock: clock.RealClock{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	core, logs := observer.New(zap.DebugLevel)
	r := &realSTS{clk: clk, f: f, logs: logs, path: filepath.Join(t.TempDir(), "token")}
	r.rotate(t)
	client := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(f.STSURL()),
		RetryMaxAttempts: 1, Credentials: aws.AnonymousCredentials{}})
	r.p, err = NewWebIdentity(Options{STS: client, RoleARN: "arn:aws:iam::" + f.AccountID() + ":role/ecr-node-auth",
		TokenFile: r.path, Clock: clk, Rand: fixedRand(0.5), Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rotate writes a fresh token, as the kubelet does.
func (r *realSTS) rotate(t *testing.T) {
	t.Helper()
	writeFile(t, r.path, r.f.MintToken(fakeaws.TokenSpec{ExpiresAt: r.clk.Now().Add(24 * time.Hour)}))
}

func (r *realSTS) calls() int { return r.f.Calls(fakeaws.ActionAssumeRoleWithWebIdentity) }

// failures returns the levels and repeats of the "refresh failed" lines.
func (r *realSTS) failures() (levels []zapcore.Level, repeats []int64) {
	for _, e := range r.logs.FilterMessage(failedMsg).All() {
		levels = append(levels, e.Level)
		n, _ := e.ContextMap()["repeats"].(int64)
		repeats = append(repeats, n)
	}
	return levels, repeats
}

func loudCount(levels []zapcore.Level) int {
	n := 0
	for _, l := range levels {
		if l > zapcore.DebugLevel {
			n++
		}
	}
	return n
}

// Before the first success, callers during the backoff (sequential and
// concurrent, as ECR SDK attempts and regions are) get the last error
// without a call to STS.
func TestWebIdentityBackoffBeforeFirstSuccess(t *testing.T) {
	r := newRealSTS(t)
	r.f.InjectErrorAlways(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrSTSThrottling)
	ctx := context.Background()
	_, first := r.p.Retrieve(ctx)
	var c *refresh.Classified
	if !errors.As(first, &c) || c.Code != "Throttling" {
		t.Fatalf("first error = %v, want a classified Throttling", first)
	}
	const n = 20
	for range n {
		if _, err := r.p.Retrieve(ctx); err == nil || err.Error() != first.Error() {
			t.Fatalf("during the backoff: err = %v, want the last error %v", err, first)
		}
	}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := r.p.Retrieve(ctx); err == nil {
				t.Error("concurrent Retrieve during the backoff succeeded")
			}
		})
	}
	wg.Wait()
	if got := r.calls(); got != 1 {
		t.Fatalf("%d Retrieve calls during the backoff made %d STS calls, want 1", 2*n+1, got)
	}
	// After the backoff (transient: at most 2 min), STS is called again, once.
	r.clk.Step(3 * time.Minute)
	for range 3 {
		_, _ = r.p.Retrieve(ctx)
	}
	if got := r.calls(); got != 2 {
		t.Fatalf("after the backoff: %d STS calls, want 2", got)
	}
	// STS is back: the next call after the backoff succeeds.
	r.f.ClearFaults(fakeaws.ActionAssumeRoleWithWebIdentity)
	r.clk.Step(3 * time.Minute)
	if _, err := r.p.Retrieve(ctx); err != nil {
		t.Fatalf("recovery: %v", err)
	}
}

// A token rotation lifts the backoff before the first success too: the
// next Retrieve calls STS at once.
func TestWebIdentityTokenRotationRetriesAtOnce(t *testing.T) {
	r := newRealSTS(t)
	r.f.InjectErrors(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrAccessDenied)
	ctx := context.Background()
	if _, err := r.p.Retrieve(ctx); err == nil {
		t.Fatal("want AccessDenied")
	}
	if _, err := r.p.Retrieve(ctx); err == nil || r.calls() != 1 {
		t.Fatalf("within the backoff: err=%v calls=%d, want the error and 1 call", err, r.calls())
	}
	r.rotate(t)
	r.p.TokenChanged()
	if _, err := r.p.Retrieve(ctx); err != nil || r.calls() != 2 {
		t.Fatalf("after rotation: err=%v calls=%d, want success with 2 calls", err, r.calls())
	}
}

// K identical failures log one error line, repeats at debug with a count; a
// new reason and a failure after a recovery are logged loudly again.
func TestWebIdentityRepeatedFailureLoggedOnce(t *testing.T) {
	r := newRealSTS(t)
	r.f.InjectErrorAlways(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrSTSThrottling)
	ctx := context.Background()
	const k = 6
	for range k {
		_, _ = r.p.Retrieve(ctx)
		r.clk.Step(3 * time.Minute) // past the backoff: each Retrieve calls STS
	}
	if r.calls() != k {
		t.Fatalf("STS calls = %d, want %d", r.calls(), k)
	}
	levels, repeats := r.failures()
	if len(levels) != k || levels[0] != zapcore.ErrorLevel || loudCount(levels) != 1 {
		t.Fatalf("levels = %v, want one error line then %d debug lines", levels, k-1)
	}
	if repeats[k-1] != k-1 {
		t.Errorf("repeats = %v, want the last at %d", repeats, k-1)
	}
	// The reason changes: loud again.
	r.f.ClearFaults(fakeaws.ActionAssumeRoleWithWebIdentity)
	r.f.InjectErrorAlways(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrIDPCommunication)
	_, _ = r.p.Retrieve(ctx)
	if levels, _ = r.failures(); loudCount(levels) != 2 || levels[len(levels)-1] != zapcore.ErrorLevel {
		t.Fatalf("new reason: levels = %v, want a second error line", levels)
	}
	// Recovery, then the same failure as before it: loud again. (The next
	// failure comes once the credentials need a refresh; they are valid, so
	// it is a warning.)
	r.f.ClearFaults(fakeaws.ActionAssumeRoleWithWebIdentity)
	r.clk.Step(10 * time.Minute)
	if _, err := r.p.Retrieve(ctx); err != nil {
		t.Fatalf("recovery: %v", err)
	}
	r.f.InjectErrorAlways(fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ErrIDPCommunication)
	r.clk.SetTime(r.p.Status().NextRefresh)
	_, _ = r.p.Retrieve(ctx)
	served := r.logs.FilterMessage("web identity refresh failed; serving the last good credentials until they expire").All()
	if len(served) != 1 || served[0].Level != zapcore.WarnLevel {
		t.Fatalf("after recovery: %d serving lines %v, want one warning", len(served), served)
	}
	for _, e := range r.logs.All() {
		assertNoSecret(t, "log", e.Message+" "+fmt.Sprint(e.ContextMap()), r.f.Secrets()...)
	}
}
