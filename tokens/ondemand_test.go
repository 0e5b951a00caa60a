package tokens

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

func account(i int) string { return fmt.Sprintf("%012d", 100000000000+i) }

// drainChanges returns the OnChange calls so far, by host.
func (h *harness) drainChanges() map[string][]Entry {
	got := map[string][]Entry{}
	for len(h.changes) > 0 {
		e := <-h.changes
		got[e.Host.Name] = append(got[e.Host.Name], e)
	}
	return got
}

func (h *harness) drainRemoved() []string {
	var got []string
	for len(h.removed) > 0 {
		got = append(got, <-h.removed)
	}
	slices.Sort(got)
	return got
}

// waitFor polls cond (real time) until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestGetConcurrentOnDemandShareOneCall(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	gate := make(chan struct{})
	h.ecr.fail = func(_ ecrhost.Service, n int) error {
		if n == 0 {
			<-gate // hold the first call until every Get has joined
		}
		return nil
	}
	h.start() // nothing configured
	const n = 50
	hosts := make([]ecrhost.Host, n)
	for i := range hosts {
		hosts[i] = host(account(i), "eu-west-1")
	}
	entries := make([]Entry, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			entries[i], errs[i] = h.agent.Get(context.Background(), hosts[i])
		}()
	}
	waitFor(t, "every host to join", func() bool { return len(h.agent.Snapshot()) == n })
	close(gate)
	wg.Wait()
	h.waitIdle()

	svc := hosts[0].Service()
	if got := h.ecr.count(svc); got != 1 {
		t.Fatalf("%d GetAuthorizationToken calls for %d concurrent Gets, want 1", got, n)
	}
	for i, e := range entries {
		if errs[i] != nil {
			t.Fatalf("Get(%s): %v", hosts[i].Name, errs[i])
		}
		if e.Host.Name != hosts[i].Name || !e.OnDemand || e.Credential == nil || e.Credential.Password != password(svc, 0) {
			t.Errorf("Get(%s) = %+v", hosts[i].Name, e)
		}
	}
	// The service goroutine reports after arming its timer.
	waitFor(t, "OnChange for every host", func() bool { return len(h.changes) >= n })
	changes := h.drainChanges()
	for _, hh := range hosts {
		if c := changes[hh.Name]; len(c) != 1 || !c[0].OnDemand {
			t.Errorf("OnChange for %s: %+v, want one with OnDemand", hh.Name, c)
		}
	}
	if h.services() != 1 {
		t.Errorf("%d services, want 1", h.services())
	}
	// Warm: no call, no lock, no allocation.
	for _, hh := range hosts {
		if _, err := h.agent.Get(context.Background(), hh); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.ecr.count(svc); got != 1 {
		t.Errorf("%d calls after warm Gets, want 1", got)
	}
	if !raceEnabled {
		ctx := context.Background()
		if allocs := testing.AllocsPerRun(100, func() { _, _ = h.agent.Get(ctx, hosts[7]) }); allocs != 0 {
			t.Errorf("warm Get allocates %.1f times", allocs)
		}
	}
}

func TestGetConfiguredServiceNoExtraCall(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	cfg := host("111122223333", "us-east-1")
	h.start(cfg)
	waitFor(t, "the first report", func() bool { return len(h.changes) == 1 })
	h.drainChanges()
	ctx := context.Background()

	tests := []struct {
		name     string
		h        ecrhost.Host
		onDemand bool
	}{
		{"configured host", cfg, false},
		{"other account, configured service", host("444455556666", "us-east-1"), true},
		{"again", host("444455556666", "us-east-1"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := h.agent.Get(ctx, tc.h)
			if err != nil {
				t.Fatal(err)
			}
			if e.OnDemand != tc.onDemand || e.Credential == nil || e.Credential.Password != password(cfg.Service(), 0) {
				t.Errorf("Get = %+v", e)
			}
			if n := h.ecr.total(); n != 1 {
				t.Errorf("%d ECR calls, want 1 (the configured service's)", n)
			}
		})
	}
	h.waitIdle()
	changes := h.drainChanges()
	od := host("444455556666", "us-east-1").Name
	if c := changes[od]; len(c) != 1 || !c[0].OnDemand || c[0].Credential == nil {
		t.Errorf("OnChange for the on-demand host: %+v", c)
	}
	if len(changes[cfg.Name]) != 0 {
		t.Errorf("OnChange for the configured host: %+v", changes[cfg.Name])
	}
	if e, ok := h.agent.Lookup(od); !ok || !e.OnDemand {
		t.Errorf("Lookup(on-demand) = %+v, %v", e, ok)
	}
	if len(h.agent.Snapshot()) != 2 || h.services() != 1 || !h.agent.Ready() {
		t.Errorf("snapshot %d entries, %d services, ready %v", len(h.agent.Snapshot()), h.services(), h.agent.Ready())
	}
	// The next refresh of the service renews both hosts with one call.
	h.fireNext()
	if n := h.ecr.total(); n != 2 {
		t.Errorf("%d calls after the refresh, want 2", n)
	}
	if e, _ := h.agent.Lookup(od); e.Credential.Password != password(cfg.Service(), 1) {
		t.Errorf("on-demand host not refreshed with its service: %v", e.Credential)
	}
}

func TestGetFailure(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	failing := true
	var mu sync.Mutex
	h.ecr.fail = func(ecrhost.Service, int) error {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return apiErr("AccessDeniedException", "User: arn:aws:sts::111122223333:assumed-role/node/i-1 is not authorized to perform: ecr:GetAuthorizationToken")
		}
		return nil
	}
	cfg := host("111122223333", "us-east-1")
	h.start(cfg) // the configured service fails too
	od := host("111122223333", "ap-south-1")
	ctx := context.Background()

	_, err := h.agent.Get(ctx, od)
	if err == nil {
		t.Fatal("Get succeeded with ECR denying access")
	}
	msg := err.Error()
	for _, want := range []string{od.Name, "aws/ap-south-1", "access denied", "AccessDeniedException", "not authorized to perform: ecr:GetAuthorizationToken", "next retry"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	var c *refresh.Classified
	if !errors.As(err, &c) || c.Class != refresh.Permanent {
		t.Errorf("error is not a permanent *refresh.Classified: %#v", err)
	}
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("error holds a secret: %q", msg)
	}
	h.waitIdle()
	// A second Get does not wait minutes for the backed-off retry, nor call.
	if _, err := h.agent.Get(ctx, od); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("second Get: %v", err)
	}
	if n := h.ecr.count(od.Service()); n != 1 {
		t.Errorf("%d calls for the on-demand service, want 1", n)
	}
	// A Get for a configured host that has no token yet fails the same way.
	if _, err := h.agent.Get(ctx, cfg); err == nil || !strings.Contains(err.Error(), cfg.Name) {
		t.Errorf("Get(configured, failing): %v", err)
	}
	if e, _ := h.agent.Lookup(cfg.Name); e.OnDemand {
		t.Error("a configured host became on-demand")
	}
	// Ready ignores the failing on-demand host but not the configured one.
	if h.agent.Ready() {
		t.Error("Ready with the configured host failing")
	}

	// Fixed: the retry succeeds and Get answers at once.
	mu.Lock()
	failing = false
	mu.Unlock()
	h.fireNext()
	h.fireNext()
	if e, err := h.agent.Get(ctx, od); err != nil || !e.OnDemand || e.Credential == nil {
		t.Errorf("Get after recovery: %+v, %v", e, err)
	}
	if !h.agent.Ready() {
		t.Error("not Ready after recovery")
	}
}

func TestGetWaitBoundByContext(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5) // Run not started: no attempt will come
	od := host("111122223333", "us-west-2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := h.agent.Get(ctx, od)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), od.Name) {
		t.Fatalf("Get = %v, want a deadline error naming the host", err)
	}
	// The host stays on demand: Run fetches it.
	h.run()
	if e, err := h.agent.Get(context.Background(), od); err != nil || e.Credential == nil {
		t.Fatalf("Get after Run: %+v, %v", e, err)
	}
	if n := h.ecr.total(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	for _, bad := range []ecrhost.Host{{}, {Name: "x.example"}} {
		if _, err := h.agent.Get(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "not an ECR registry host") {
			t.Errorf("Get(%+v) = %v", bad, err)
		}
	}
}

func TestReloadKeepsOnDemand(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	a := host("111122223333", "us-east-1")
	b := host("444455556666", "eu-west-1") // on demand
	c := host("777788889999", "eu-north-1")
	h.start(a)
	if _, err := h.agent.Get(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	waitFor(t, "the first reports", func() bool { return len(h.changes) == 2 })
	h.drainChanges()

	steps := []struct {
		name       string
		configured []ecrhost.Host
		removed    []string
		onDemand   map[string]bool // host → OnDemand; absent hosts must be gone
		changed    map[string]bool // OnChange host → its OnDemand
	}{
		{"configured set replaced, on-demand kept", []ecrhost.Host{c}, []string{a.Name},
			map[string]bool{b.Name: true, c.Name: false}, map[string]bool{}},
		{"on-demand host becomes configured", []ecrhost.Host{b, c}, nil,
			map[string]bool{b.Name: false, c.Name: false}, map[string]bool{b.Name: false}},
		{"no longer configured: removed like any other", []ecrhost.Host{c}, []string{b.Name},
			map[string]bool{c.Name: false}, map[string]bool{}},
	}
	for _, st := range steps {
		h.agent.SetRegistries(st.configured)
		waitFor(t, "every service's first attempt", func() bool {
			return !slices.ContainsFunc(h.agent.Snapshot(), func(e Entry) bool { return e.LastAttempt.IsZero() })
		})
		h.waitIdle()
		if got := h.drainRemoved(); !slices.Equal(got, st.removed) {
			t.Errorf("%s: removed %v, want %v", st.name, got, st.removed)
		}
		snap := h.agent.Snapshot()
		if len(snap) != len(st.onDemand) {
			t.Errorf("%s: %d entries, want %d", st.name, len(snap), len(st.onDemand))
		}
		for _, e := range snap {
			if od, ok := st.onDemand[e.Host.Name]; !ok || od != e.OnDemand || e.Credential == nil {
				t.Errorf("%s: entry %+v", st.name, e)
			}
		}
		changes := h.drainChanges()
		for name, od := range st.changed {
			if cs := changes[name]; len(cs) != 1 || cs[0].OnDemand != od {
				t.Errorf("%s: OnChange for %s: %+v", st.name, name, cs)
			}
		}
		if !h.agent.Ready() {
			t.Errorf("%s: not Ready", st.name)
		}
	}
	// b's service was fetched once, while b was on demand: never again.
	if n := h.ecr.count(b.Service()); n != 1 {
		t.Errorf("%d calls for b's service, want 1", n)
	}
}

func TestOnDemandLimit(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5, func(o *Options) {
		o.MaxOnDemand = 3
		o.OnDemandIdle = time.Hour
	})
	cfg := host("999999999999", "us-east-1")
	h.start(cfg)
	ctx := context.Background()
	for i := range 3 {
		if _, err := h.agent.Get(ctx, host(account(i), "us-east-1")); err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	extra := host(account(3), "us-east-1")
	_, err := h.agent.Get(ctx, extra)
	if !errors.Is(err, ErrTooManyOnDemand) {
		t.Fatalf("Get beyond the limit = %v, want ErrTooManyOnDemand", err)
	}
	for _, want := range []string{extra.Name, "limit of 3", "add it to the config"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// Configured and existing on-demand hosts are not limited.
	if _, err := h.agent.Get(ctx, cfg); err != nil {
		t.Error(err)
	}
	if _, err := h.agent.Get(ctx, host(account(0), "us-east-1")); err != nil {
		t.Error(err)
	}
	if _, ok := h.agent.Lookup(extra.Name); ok || len(h.agent.Snapshot()) != 4 {
		t.Errorf("refused host in the map, or %d entries", len(h.agent.Snapshot()))
	}
	// Once hosts 1 and 2 idle out (0 was looked up at +30m), there is room.
	h.waitIdle()
	h.step(30 * time.Minute)
	if _, ok := h.agent.Lookup(host(account(0), "us-east-1").Name); !ok {
		t.Fatal("host 0 gone")
	}
	h.step(30 * time.Minute)
	if got, want := h.drainRemoved(), []string{host(account(1), "us-east-1").Name, host(account(2), "us-east-1").Name}; !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	if e, err := h.agent.Get(ctx, extra); err != nil || !e.OnDemand {
		t.Errorf("Get after idle eviction: %+v, %v", e, err)
	}
	if n := h.ecr.total(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestOnDemandLimitSweepsIdleWithoutRun(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5, func(o *Options) {
		o.MaxOnDemand = 2
		o.OnDemandIdle = time.Hour
	})
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 2 {
		if _, err := h.agent.Get(done, host(account(i), "us-east-2")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Get %d = %v", i, err)
		}
	}
	if _, err := h.agent.Get(done, host(account(2), "us-east-2")); !errors.Is(err, ErrTooManyOnDemand) {
		t.Fatalf("third Get = %v, want the limit", err)
	}
	h.clock.Step(time.Hour)
	if _, err := h.agent.Get(done, host(account(2), "us-east-2")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after the idle time = %v, want it added (and the wait cancelled)", err)
	}
	if got := h.drainRemoved(); len(got) != 2 {
		t.Errorf("removed %v, want the 2 idle hosts", got)
	}
	if snap := h.agent.Snapshot(); len(snap) != 1 || snap[0].Host.Name != host(account(2), "us-east-2").Name {
		t.Errorf("snapshot %+v", snap)
	}
}

func TestOnDemandIdleEviction(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5) // OnDemandIdle: default 24h
	cfg := host("111122223333", "us-east-1")
	shared := host("444455556666", "us-east-1") // on demand, in the configured service
	alone := host("444455556666", "eu-west-1")  // on demand, its own service
	h.start(cfg)
	ctx := context.Background()
	for _, hh := range []ecrhost.Host{shared, alone} {
		if _, err := h.agent.Get(ctx, hh); err != nil {
			t.Fatal(err)
		}
	}
	h.waitIdle()
	h.drainRemoved()

	// Snapshot, not Lookup: a lookup would keep the host.
	present := func(name string) bool {
		return slices.ContainsFunc(h.agent.Snapshot(), func(e Entry) bool { return e.Host.Name == name })
	}
	for hour := 1; hour <= 50; hour++ {
		h.step(time.Hour)
		if hour == 10 {
			h.agent.Lookup(alone.Name) // a lookup keeps it 24h more
		}
		if hour == 24 || hour == 34 {
			// OnRemove runs just after the service left the map.
			waitFor(t, "OnRemove", func() bool { return len(h.removed) > 0 })
		}
		removed := h.drainRemoved()
		switch hour {
		case 24:
			if !slices.Equal(removed, []string{shared.Name}) {
				t.Errorf("+%dh: removed %v, want %s", hour, removed, shared.Name)
			}
		case 34:
			if !slices.Equal(removed, []string{alone.Name}) {
				t.Errorf("+%dh: removed %v, want %s", hour, removed, alone.Name)
			}
		default:
			if len(removed) != 0 {
				t.Errorf("+%dh: removed %v", hour, removed)
			}
		}
		if got, want := present(shared.Name), hour < 24; got != want {
			t.Fatalf("+%dh: shared present %v, want %v", hour, got, want)
		}
		if got, want := present(alone.Name), hour < 34; got != want {
			t.Fatalf("+%dh: alone present %v, want %v", hour, got, want)
		}
	}
	if h.services() != 1 || !present(cfg.Name) {
		t.Errorf("%d services left, configured present %v", h.services(), present(cfg.Name))
	}
	// The one-off service stopped refreshing: 12 h tokens refreshed at
	// 6h36m intervals over 34 h, then nothing.
	times := h.ecr.callTimes(alone.Service())
	if len(times) == 0 || times[len(times)-1].After(t0.Add(34*time.Hour)) {
		t.Errorf("calls for the evicted service: %v", times)
	}
	if n := h.ecr.count(cfg.Service()); n < 7 {
		t.Errorf("configured service refreshed %d times in 50h", n)
	}
}
