package tokens

import (
	"context"
	"encoding/base64"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	testclock "k8s.io/utils/clock/testing"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// constRand is a deterministic jitter source.
type constRand float64

func (r constRand) Float64() float64 { return float64(r) }

func host(account, region string) ecrhost.Host {
	partition := "aws"
	switch {
	case len(region) > 3 && region[:3] == "cn-":
		partition = "aws-cn"
	case len(region) > 7 && region[:7] == "us-gov-":
		partition = "aws-us-gov"
	}
	return ecrhost.Host{
		Name:      account + ".dkr.ecr." + region + ".amazonaws.com",
		Account:   account,
		Region:    region,
		Partition: partition,
	}
}

func fipsHost(account, region string) ecrhost.Host {
	h := host(account, region)
	h.Name = account + ".dkr.ecr-fips." + region + ".amazonaws.com"
	h.FIPS = true
	return h
}

// fakeECR stands in for the ECR API of every service.
type fakeECR struct {
	t        testing.TB
	clock    *testclock.FakeClock
	mu       sync.Mutex
	lifetime time.Duration
	calls    map[ecrhost.Service][]time.Time
	// fail, if set, decides the outcome of call n (0-based) to svc: a non-nil
	// error is returned instead of a token.
	fail func(svc ecrhost.Service, n int) error
	// raw, if set, replaces the whole answer.
	raw func(svc ecrhost.Service, n int) *ecr.GetAuthorizationTokenOutput
}

func newFakeECR(t testing.TB, c *testclock.FakeClock, lifetime time.Duration) *fakeECR {
	return &fakeECR{t: t, clock: c, lifetime: lifetime, calls: map[ecrhost.Service][]time.Time{}}
}

// password is the secret the fake hands out for call n of svc.
func password(svc ecrhost.Service, n int) string {
	return fmt.Sprintf("s3cr3t-%s-%s-%t-%d", svc.Partition, svc.Region, svc.FIPS, n)
}

func (f *fakeECR) factory(svc ecrhost.Service) (ECRAPI, error) {
	return &fakeClient{f: f, svc: svc}, nil
}

func (f *fakeECR) count(svc ecrhost.Service) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls[svc])
}

func (f *fakeECR) callTimes(svc ecrhost.Service) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls[svc]...)
}

func (f *fakeECR) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += len(c)
	}
	return n
}

type fakeClient struct {
	f   *fakeECR
	svc ecrhost.Service
}

func (c *fakeClient) GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, _ ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error) {
	f := c.f
	//lint:ignore SA1019 asserting that the deprecated field stays unset
	if ids := in.RegistryIds; len(ids) != 0 {
		f.t.Errorf("GetAuthorizationToken called with registryIds %v", ids)
	}
	now := f.clock.Now()
	f.mu.Lock()
	n := len(f.calls[c.svc])
	f.calls[c.svc] = append(f.calls[c.svc], now)
	fail, raw, lifetime := f.fail, f.raw, f.lifetime
	f.mu.Unlock()
	if fail != nil {
		if err := fail(c.svc, n); err != nil {
			return nil, err
		}
	}
	if raw != nil {
		return raw(c.svc, n), nil
	}
	tok := base64.StdEncoding.EncodeToString([]byte("AWS:" + password(c.svc, n)))
	return &ecr.GetAuthorizationTokenOutput{AuthorizationData: []ecrtypes.AuthorizationData{{
		AuthorizationToken: aws.String(tok),
		ExpiresAt:          aws.Time(now.Add(lifetime)),
		ProxyEndpoint:      aws.String("https://" + c.svc.Region + ".example"),
	}}}, nil
}

func apiErr(code, msg string) error {
	return &smithy.GenericAPIError{Code: code, Message: msg, Fault: smithy.FaultClient}
}

// harness runs one agent on a fake clock.
type harness struct {
	t       testing.TB
	clock   *testclock.FakeClock
	ecr     *fakeECR
	agent   *Agent
	logs    *observer.ObservedLogs
	cancel  context.CancelFunc
	done    chan error
	changes chan Entry
	removed chan string
}

func newHarness(t testing.TB, lifetime time.Duration, r float64, opt ...func(*Options)) *harness {
	t.Helper()
	fc := testclock.NewFakeClock(t0)
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{
		t:       t,
		clock:   fc,
		ecr:     newFakeECR(t, fc, lifetime),
		logs:    logs,
		changes: make(chan Entry, 10000),
		removed: make(chan string, 100),
	}
	o := Options{
		Clock:    fc,
		Rand:     constRand(r),
		Log:      zap.New(core),
		NewECR:   h.ecr.factory,
		OnChange: func(e Entry) { h.changes <- e },
		OnRemove: func(name string) { h.removed <- name },
	}
	for _, f := range opt {
		f(&o)
	}
	h.agent = NewAgent(o)
	return h
}

// start runs the agent and waits until every service made its first attempt.
func (h *harness) start(hosts ...ecrhost.Host) {
	h.t.Helper()
	h.agent.SetRegistries(hosts)
	h.run()
}

// run starts Run and waits until it runs and every service made its first
// attempt.
func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.agent.Run(ctx) }()
	h.t.Cleanup(h.stop)
	for deadline := time.Now().Add(5 * time.Second); ; {
		h.agent.mu.Lock()
		running := h.agent.runCtx != nil
		h.agent.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatal("Run did not start")
		}
		time.Sleep(100 * time.Microsecond)
	}
	h.waitIdle()
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Errorf("Run did not return after cancel")
	}
}

func (h *harness) services() int {
	h.agent.mu.Lock()
	defer h.agent.mu.Unlock()
	return len(h.agent.services)
}

// waitIdle waits until every service goroutine waits on its timer.
func waitIdle(t testing.TB, fc *testclock.FakeClock, n func() int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for fc.Waiters() != n() {
		if time.Now().After(deadline) {
			t.Fatalf("agent not idle: %d waiters, want %d", fc.Waiters(), n())
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

func (h *harness) waitIdle() {
	h.t.Helper()
	waitIdle(h.t, h.clock, h.services)
	// An on-demand host added by Get wakes its service to re-plan its timer.
	for deadline := time.Now().Add(10 * time.Second); h.agent.replanPending(); {
		if time.Now().After(deadline) {
			h.t.Fatal("agent did not re-plan after a wake")
		}
		time.Sleep(50 * time.Microsecond)
	}
	waitIdle(h.t, h.clock, h.services)
}

// step advances the fake clock by d and waits for the agent to settle.
func (h *harness) step(d time.Duration) {
	h.t.Helper()
	h.clock.Step(d)
	h.waitIdle()
}

// nextRefresh is the earliest planned attempt over all entries.
func (h *harness) nextRefresh() time.Time {
	var next time.Time
	for _, e := range h.agent.Snapshot() {
		if next.IsZero() || e.NextRefresh.Before(next) {
			next = e.NextRefresh
		}
	}
	return next
}

// fireNext sets the clock to the earliest planned attempt and waits for it.
func (h *harness) fireNext() time.Time {
	h.t.Helper()
	next := h.nextRefresh()
	h.clock.SetTime(next)
	h.waitIdle()
	return next
}

func (h *harness) lookup(name string) Entry {
	h.t.Helper()
	e, ok := h.agent.Lookup(name)
	if !ok {
		h.t.Fatalf("Lookup(%q): not found", name)
	}
	return e
}
