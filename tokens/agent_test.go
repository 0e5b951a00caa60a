package tokens

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	testclock "k8s.io/utils/clock/testing"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

func TestFirstFetchImmediateOneCallPerService(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	use1a, use1b := host("111122223333", "us-east-1"), host("444455556666", "us-east-1")
	euw1 := host("111122223333", "eu-west-1")
	gov := fipsHost("111122223333", "us-gov-west-1")
	govPlain := host("111122223333", "us-gov-west-1")
	h.agent.SetRegistries([]ecrhost.Host{use1a, use1b, euw1, gov, govPlain, use1a /* duplicate */})
	if h.agent.Ready() {
		t.Fatal("Ready before any fetch with hosts configured")
	}
	if e := h.lookup(use1a.Name); e.Credential != nil || !e.LastAttempt.IsZero() {
		t.Fatalf("entry before Run: %+v", e)
	}
	h.run()

	for _, tc := range []struct {
		svc  ecrhost.Service
		want int
	}{
		{use1a.Service(), 1},
		{euw1.Service(), 1},
		{gov.Service(), 1},
		{govPlain.Service(), 1},
	} {
		if got := h.ecr.count(tc.svc); got != tc.want {
			t.Errorf("calls to %v = %d, want %d", tc.svc, got, tc.want)
		}
		if ts := h.ecr.callTimes(tc.svc); len(ts) > 0 && !ts[0].Equal(t0) {
			t.Errorf("first call to %v at %v, want immediately (%v)", tc.svc, ts[0], t0)
		}
	}
	if got := h.ecr.total(); got != 4 {
		t.Errorf("total calls = %d, want 4 (one per service)", got)
	}
	// Each host carries the token of its own service (field case 11).
	for _, hh := range []ecrhost.Host{use1a, use1b, euw1, gov, govPlain} {
		e := h.lookup(hh.Name)
		if e.Credential == nil || e.Credential.Password != password(hh.Service(), 0) {
			t.Errorf("%s: credential %v, want the token of %v", hh.Name, e.Credential, hh.Service())
		}
		if e.Credential.Username != "AWS" || !e.Credential.ExpiresAt.Equal(t0.Add(12*time.Hour)) || !e.LastRefresh.Equal(t0) {
			t.Errorf("%s: entry %+v", hh.Name, e)
		}
	}
	if !h.agent.Ready() {
		t.Error("not Ready after every service fetched")
	}
	snap := h.agent.Snapshot()
	if len(snap) != 5 {
		t.Fatalf("Snapshot has %d entries, want 5", len(snap))
	}
	for i := 1; i < len(snap); i++ {
		if snap[i-1].Host.Name >= snap[i].Host.Name {
			t.Errorf("Snapshot not sorted: %q before %q", snap[i-1].Host.Name, snap[i].Host.Name)
		}
	}
	// OnChange: once per host after the first attempt.
	got := map[string]int{}
	for len(h.changes) > 0 {
		got[(<-h.changes).Host.Name]++
	}
	for _, hh := range []ecrhost.Host{use1a, use1b, euw1, gov, govPlain} {
		if got[hh.Name] != 1 {
			t.Errorf("OnChange for %s: %d calls, want 1", hh.Name, got[hh.Name])
		}
	}
}

func TestLookupNormalizes(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	hh := host("111122223333", "us-east-1")
	h.start(hh)
	for _, name := range []string{hh.Name, strings.ToUpper(hh.Name), "https://" + hh.Name + "/", hh.Name + ":443"} {
		if _, ok := h.agent.Lookup(name); !ok {
			t.Errorf("Lookup(%q) not found", name)
		}
	}
	if _, ok := h.agent.Lookup("999999999999.dkr.ecr.us-east-1.amazonaws.com"); ok {
		t.Error("Lookup of an unconfigured host found an entry")
	}
}

func TestEmptyRegistriesReady(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	h.start()
	if !h.agent.Ready() {
		t.Error("agent with no registries is not Ready")
	}
	if len(h.agent.Snapshot()) != 0 || h.ecr.total() != 0 {
		t.Error("agent with no registries has entries or calls")
	}
}

func TestRefreshTiming(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		rand     float64
		want     time.Duration // after the fetch
	}{
		{"12h no jitter", 12 * time.Hour, 0, 6 * time.Hour},
		{"12h mid jitter", 12 * time.Hour, 0.5, 6*time.Hour + 36*time.Minute},
		{"12h max jitter", 12 * time.Hour, 0.999, 6*time.Hour + time.Duration(0.999*float64(72*time.Minute))},
		{"15s no jitter", 15 * time.Second, 0, 7500 * time.Millisecond},
		{"15s mid jitter", 15 * time.Second, 0.5, 8250 * time.Millisecond},
		{"15s max jitter", 15 * time.Second, 0.999, 7500*time.Millisecond + time.Duration(0.999*float64(1500*time.Millisecond))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.lifetime, tc.rand)
			hh := host("111122223333", "eu-west-1")
			h.start(hh)
			e := h.lookup(hh.Name)
			got := e.NextRefresh.Sub(e.LastRefresh)
			if got != tc.want {
				t.Errorf("next refresh %v after fetch, want %v", got, tc.want)
			}
			// The window of the timing rule: half-life + up to a tenth, never
			// within the margin of expiry.
			lo, hi := tc.lifetime/2, tc.lifetime/2+tc.lifetime/10
			if got < lo || got > hi || got > tc.lifetime-refresh.Margin(tc.lifetime) {
				t.Errorf("next refresh %v outside [%v, %v]", got, lo, hi)
			}
			// Nothing happens before it; the refresh happens at it.
			h.step(tc.want - time.Millisecond)
			if n := h.ecr.count(hh.Service()); n != 1 {
				t.Fatalf("%d calls before the planned refresh, want 1", n)
			}
			h.step(time.Millisecond)
			if n := h.ecr.count(hh.Service()); n != 2 {
				t.Fatalf("%d calls at the planned refresh, want 2", n)
			}
			e = h.lookup(hh.Name)
			if e.Credential.Password != password(hh.Service(), 1) || !e.LastRefresh.Equal(t0.Add(tc.want)) {
				t.Errorf("after refresh: %+v", e)
			}
			if !e.Credential.Valid(h.clock.Now()) || !h.agent.Ready() {
				t.Error("refreshed credential not valid")
			}
		})
	}
}

func TestErrorBackoff(t *testing.T) {
	throttle := apiErr("ThrottlingException", "Rate exceeded")
	denied := apiErr("AccessDeniedException", "User: arn:aws:sts::111122223333:assumed-role/node is not authorized to perform: ecr:GetAuthorizationToken")
	for _, tc := range []struct {
		name     string
		err      error
		class    refresh.Class
		failures int
		min, max time.Duration // bounds of every delay
	}{
		{"throttled: seconds, growing", throttle, refresh.Throttled, 5, time.Second, 2 * time.Minute},
		{"transient 5xx: seconds", apiErr("ServiceUnavailableException", "try later"), refresh.Transient, 4, time.Second, 2 * time.Minute},
		{"permanent: minutes", denied, refresh.Permanent, 4, time.Minute, 10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const r = 0.999
			h := newHarness(t, 12*time.Hour, r)
			h.ecr.fail = func(_ ecrhost.Service, n int) error {
				if n < tc.failures {
					return tc.err
				}
				return nil
			}
			hh := host("111122223333", "us-west-2")
			h.start(hh)
			var prev time.Duration
			for i := 0; i < tc.failures; i++ {
				e := h.lookup(hh.Name)
				if e.Credential != nil || h.agent.Ready() {
					t.Fatalf("failure %d: credential held or Ready without any success", i)
				}
				if e.Attempts != i+1 || e.ErrorClass != tc.class.String() || e.LastError == "" || e.ErrorCode == "" {
					t.Fatalf("failure %d: entry %+v", i, e)
				}
				delay := e.NextRefresh.Sub(e.LastAttempt)
				if want := refresh.DefaultBackoff(tc.class).Delay(i, constRand(r)); delay != want {
					t.Errorf("failure %d: retry after %v, want %v", i, delay, want)
				}
				if delay < tc.min || delay > tc.max || delay < prev {
					t.Errorf("failure %d: retry after %v (previous %v), want growing within [%v, %v]", i, delay, prev, tc.min, tc.max)
				}
				prev = delay
				h.fireNext()
			}
			e := h.lookup(hh.Name)
			if e.Credential == nil || e.Attempts != 0 || e.LastError != "" || e.ErrorClass != "" || !h.agent.Ready() {
				t.Errorf("after recovery: %+v, Ready=%v", e, h.agent.Ready())
			}
			if n := h.ecr.count(hh.Service()); n != tc.failures+1 {
				t.Errorf("%d calls, want %d", n, tc.failures+1)
			}
			// After a success the normal timing rule applies again.
			if d := e.NextRefresh.Sub(e.LastRefresh); d < 6*time.Hour || d > 7*time.Hour+12*time.Minute {
				t.Errorf("next refresh %v after recovery", d)
			}
		})
	}
}

// The last good credential is served through failures while valid, retries
// never wait past its expiry, and the node recovers once AWS answers.
func TestLastGoodCredentialKept(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.999)
	var down atomic.Bool
	h.ecr.fail = func(_ ecrhost.Service, _ int) error {
		if down.Load() {
			return apiErr("AccessDeniedException", "not authorized")
		}
		return nil
	}
	hh := host("111122223333", "ap-south-1")
	h.start(hh)
	first := h.lookup(hh.Name).Credential
	down.Store(true)

	little := 30 * time.Second
	limit := first.ExpiresAt.Add(-little)
	sawValidUntil := false
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("too many attempts")
		}
		at := h.fireNext()
		e := h.lookup(hh.Name)
		if e.Credential != first {
			t.Fatalf("at %v: credential replaced during outage", at.Sub(t0))
		}
		if e.Attempts == 0 || e.ErrorClass != "permanent" {
			t.Fatalf("at %v: entry %+v", at.Sub(t0), e)
		}
		now := h.clock.Now()
		if first.Valid(now) != h.agent.Ready() {
			t.Errorf("at %v: Ready=%v, credential valid=%v", now.Sub(t0), h.agent.Ready(), first.Valid(now))
		}
		if !first.Valid(now) {
			sawValidUntil = true
		}
		if now.Before(limit) && e.NextRefresh.After(limit) {
			t.Fatalf("at %v: retry planned at %v, after the held credential's expiry less %v", now.Sub(t0), e.NextRefresh.Sub(t0), little)
		}
		if e.NextRefresh.Sub(now) < time.Second {
			t.Fatalf("at %v: retry in %v: tight loop", now.Sub(t0), e.NextRefresh.Sub(now))
		}
		if !now.Before(limit) {
			break
		}
	}
	if !h.clock.Now().Equal(limit) {
		t.Errorf("last attempt before expiry at %v, want exactly expiry-%v", h.clock.Now().Sub(t0), little)
	}
	if !sawValidUntil {
		t.Error("credential never stopped counting as valid during a 12h outage")
	}
	// AWS answers again: the next retry replaces the credential.
	down.Store(false)
	h.fireNext()
	e := h.lookup(hh.Name)
	if e.Credential == first || !e.Credential.Valid(h.clock.Now()) || !h.agent.Ready() {
		t.Errorf("after AWS came back: %+v Ready=%v", e, h.agent.Ready())
	}
}

func TestRefreshNowAfterPermanentError(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.999, func(o *Options) { o.RefreshNowMinGap = 10 * time.Second })
	var denied atomic.Bool
	denied.Store(true)
	bad, good := host("111122223333", "eu-central-1"), host("111122223333", "eu-north-1")
	h.ecr.fail = func(svc ecrhost.Service, _ int) error {
		if svc == bad.Service() && denied.Load() {
			return apiErr("InvalidIdentityToken", "Incorrect token audience")
		}
		return nil
	}
	h.start(bad, good)
	e := h.lookup(bad.Name)
	if e.ErrorClass != "permanent" || e.NextRefresh.Sub(e.LastAttempt) < time.Minute {
		t.Fatalf("after a permanent error: %+v", e)
	}
	goodNext := h.lookup(good.Name).NextRefresh

	// The identity was fixed; RefreshNow many times (a flapping watcher).
	denied.Store(false)
	h.step(3 * time.Second)
	for i := 0; i < 50; i++ {
		h.agent.RefreshNow()
	}
	want := e.LastAttempt.Add(10 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for !h.lookup(bad.Name).NextRefresh.Equal(want) {
		if time.Now().After(deadline) {
			t.Fatalf("RefreshNow did not bring the retry to %v: %+v", want.Sub(t0), h.lookup(bad.Name))
		}
		time.Sleep(time.Millisecond)
	}
	h.waitIdle()
	if n := h.ecr.count(bad.Service()); n != 1 {
		t.Fatalf("RefreshNow retried before the minimum gap: %d calls", n)
	}
	h.step(7 * time.Second) // = last attempt + 10s
	if n := h.ecr.count(bad.Service()); n != 2 {
		t.Fatalf("%d calls after the gap, want 2", n)
	}
	if e := h.lookup(bad.Name); e.Credential == nil || e.Attempts != 0 || !h.agent.Ready() {
		t.Errorf("after RefreshNow retry: %+v", e)
	}
	// The healthy service was left alone.
	if n := h.ecr.count(good.Service()); n != 1 || !h.lookup(good.Name).NextRefresh.Equal(goodNext) {
		t.Errorf("RefreshNow touched a healthy service: %d calls", n)
	}
	// RefreshNow with nothing failing does nothing.
	h.agent.RefreshNow()
	h.step(time.Minute)
	if n := h.ecr.total(); n != 3 {
		t.Errorf("RefreshNow with nothing failing: %d calls, want 3", n)
	}
}

// A registry rejecting the token (field case 9) brings one refetch forward,
// rate-limited.
func TestRefreshHost(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5, func(o *Options) { o.ReauthMinGap = time.Minute })
	a, b := host("111122223333", "us-east-1"), host("444455556666", "us-east-1")
	h.start(a, b)
	h.step(30 * time.Second)
	if h.agent.RefreshHost("unknown.dkr.ecr.us-east-1.amazonaws.com") {
		t.Error("RefreshHost of an unknown host reported true")
	}
	waitNext := func(want time.Time) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !h.lookup(a.Name).NextRefresh.Equal(want) {
			if time.Now().After(deadline) {
				t.Fatalf("next refresh %v, want %v", h.lookup(a.Name).NextRefresh.Sub(t0), want.Sub(t0))
			}
			time.Sleep(time.Millisecond)
		}
		h.waitIdle()
	}
	for i := 0; i < 20; i++ {
		if !h.agent.RefreshHost(strings.ToUpper(b.Name)) {
			t.Fatal("RefreshHost of a configured host reported false")
		}
	}
	waitNext(t0.Add(time.Minute))
	h.step(30 * time.Second)
	if n := h.ecr.count(a.Service()); n != 2 {
		t.Fatalf("%d calls after RefreshHost, want 2", n)
	}
	if e := h.lookup(a.Name); e.Credential.Password != password(a.Service(), 1) {
		t.Errorf("credential not replaced: %v", e.Credential)
	}
	h.agent.RefreshHost(a.Name)
	waitNext(t0.Add(2 * time.Minute))
	h.step(59 * time.Second)
	if n := h.ecr.count(a.Service()); n != 2 {
		t.Fatalf("refetch within the gap: %d calls", n)
	}
	h.step(time.Second)
	if n := h.ecr.count(a.Service()); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
}

func TestSetRegistriesAddRemove(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	a := host("111122223333", "us-east-1")
	b := host("111122223333", "eu-west-1")
	c := host("444455556666", "us-east-1")
	h.start(a)
	for len(h.changes) > 0 {
		<-h.changes
	}
	h.step(time.Hour)

	// Add b (new service: fetched at once) and c (existing service: shares
	// its token without a call).
	h.agent.SetRegistries([]ecrhost.Host{a, b, c})
	h.waitIdle()
	if n := h.ecr.count(b.Service()); n != 1 {
		t.Errorf("new service: %d calls, want 1", n)
	}
	if ts := h.ecr.callTimes(b.Service()); len(ts) == 1 && !ts[0].Equal(t0.Add(time.Hour)) {
		t.Errorf("new service fetched at %v, want at once", ts[0].Sub(t0))
	}
	if n := h.ecr.count(a.Service()); n != 1 {
		t.Errorf("existing service: %d calls, want 1", n)
	}
	if ec := h.lookup(c.Name); ec.Credential == nil || ec.Credential != h.lookup(a.Name).Credential {
		t.Errorf("added host of an existing service: %+v", ec)
	}
	got := map[string]bool{}
	for len(h.changes) > 0 {
		got[(<-h.changes).Host.Name] = true
	}
	if !got[b.Name] || !got[c.Name] || got[a.Name] {
		t.Errorf("OnChange after adding: %v", got)
	}
	if !h.agent.Ready() {
		t.Error("not Ready after adding")
	}

	// Remove a and b: their entries go, b's service stops.
	h.agent.SetRegistries([]ecrhost.Host{c})
	h.waitIdle()
	if _, ok := h.agent.Lookup(a.Name); ok {
		t.Error("removed host still in the map")
	}
	if _, ok := h.agent.Lookup(b.Name); ok {
		t.Error("removed host still in the map")
	}
	removed := map[string]bool{}
	for len(h.removed) > 0 {
		removed[<-h.removed] = true
	}
	if len(removed) != 2 || !removed[a.Name] || !removed[b.Name] {
		t.Errorf("OnRemove: %v", removed)
	}
	if h.services() != 1 {
		t.Errorf("%d services, want 1", h.services())
	}
	for i := 0; i < 24; i++ {
		h.step(time.Hour)
	}
	if n := h.ecr.count(b.Service()); n != 1 {
		t.Errorf("removed service still refreshed: %d calls", n)
	}
	if n := h.ecr.count(c.Service()); n < 4 {
		t.Errorf("remaining service: %d calls in 25h, want ≥ 4", n)
	}
	if len(h.agent.Snapshot()) != 1 || !h.agent.Ready() {
		t.Errorf("snapshot %v Ready=%v", h.agent.Snapshot(), h.agent.Ready())
	}

	// Everything removed: ready and idle.
	h.agent.SetRegistries(nil)
	h.waitIdle()
	if len(h.agent.Snapshot()) != 0 || !h.agent.Ready() || h.clock.Waiters() != 0 {
		t.Errorf("after removing all: %d entries, Ready=%v, %d timers", len(h.agent.Snapshot()), h.agent.Ready(), h.clock.Waiters())
	}
}

// A service removed while its call is in flight does not come back.
func TestRemoveDuringFetch(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0.5)
	a, b := host("111122223333", "us-east-1"), host("111122223333", "eu-west-1")
	h.start(a)
	entered, release := make(chan struct{}), make(chan struct{})
	h.ecr.fail = func(svc ecrhost.Service, _ int) error {
		if svc == b.Service() {
			close(entered)
			<-release
		}
		return nil
	}
	h.agent.SetRegistries([]ecrhost.Host{a, b})
	<-entered
	h.agent.SetRegistries([]ecrhost.Host{a})
	close(release)
	h.waitIdle()
	time.Sleep(10 * time.Millisecond)
	if _, ok := h.agent.Lookup(b.Name); ok {
		t.Error("host removed during its fetch is back in the map")
	}
}

func TestConcurrentLookupWhileRefreshing(t *testing.T) {
	h := newHarness(t, 15*time.Second, 0.3)
	hosts := []ecrhost.Host{
		host("111122223333", "us-east-1"), host("444455556666", "us-east-1"),
		host("111122223333", "eu-west-1"), host("111122223333", "ap-northeast-1"),
	}
	var flaky atomic.Int64
	h.ecr.fail = func(_ ecrhost.Service, n int) error {
		if flaky.Add(1)%3 == 0 {
			return apiErr("ThrottlingException", "Rate exceeded")
		}
		return nil
	}
	h.start(hosts...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				hh := hosts[(g+i)%len(hosts)]
				e, ok := h.agent.Lookup(hh.Name)
				if ok && e.Host.Name != hh.Name {
					t.Errorf("Lookup(%s) = %v, %v", hh.Name, e.Host.Name, ok)
					return
				}
				if e.Credential != nil {
					_ = e.Credential.AuthorizationHeader()
				}
				if i%50 == 0 {
					_ = h.agent.Snapshot()
					_ = h.agent.Ready()
				}
				lookups.Add(1)
			}
		}(g)
	}
	for i := 0; i < 200; i++ {
		h.step(time.Second)
		if i == 100 {
			h.agent.SetRegistries(hosts[:3])
			h.agent.SetRegistries(hosts)
			h.waitIdle()
		}
		if i%20 == 0 {
			h.agent.RefreshNow()
		}
	}
	close(stop)
	wg.Wait()
	if lookups.Load() == 0 || h.ecr.total() < 3*20 {
		t.Errorf("%d lookups, %d calls", lookups.Load(), h.ecr.total())
	}
}

// Over a simulated 48 h with 12 h tokens, a fleet of agents on one clock makes
// at most 2 calls per service in any 12 h (about 1,000 calls in all).
func TestSteadyState48h(t *testing.T) {
	if testing.Short() {
		t.Skip("long simulation")
	}
	const agents = 120
	fc := testclock.NewFakeClock(t0)
	ecrs := make([]*fakeECR, agents)
	svcs := 0
	for i := range agents {
		ecrs[i] = newFakeECR(t, fc, 12*time.Hour)
		a := NewAgent(Options{
			Clock:  fc,
			Rand:   rand.New(rand.NewPCG(uint64(i), 42)),
			Log:    zap.NewNop(),
			NewECR: ecrs[i].factory,
		})
		hosts := []ecrhost.Host{host("111122223333", "us-east-1"), host("444455556666", "us-east-1")}
		if i%2 == 0 {
			hosts = append(hosts, host("111122223333", "eu-west-1"))
			svcs++
		}
		svcs++
		a.SetRegistries(hosts)
		done := make(chan error, 1)
		go func() { done <- a.Run(t.Context()) }()
		t.Cleanup(func() { <-done })
	}
	waitIdle(t, fc, func() int { return svcs })
	for m := 0; m < 48*60; m++ {
		fc.Step(time.Minute)
		waitIdle(t, fc, func() int { return svcs })
	}
	total := 0
	for i, f := range ecrs {
		f.mu.Lock()
		for svc, calls := range f.calls {
			total += len(calls)
			for j := range calls {
				// Calls in [calls[j], calls[j]+12h): at most 2.
				n := 0
				for _, c := range calls[j:] {
					if c.Before(calls[j].Add(12 * time.Hour)) {
						n++
					}
				}
				if n > 2 {
					t.Errorf("agent %d %v: %d calls in the 12 h from %v", i, svc, n, calls[j].Sub(t0))
				}
			}
			if len(calls) < 7 || len(calls) > 9 {
				t.Errorf("agent %d %v: %d calls in 48 h, want 7..9", i, svc, len(calls))
			}
		}
		f.mu.Unlock()
	}
	t.Logf("%d agents, %d services, %d calls in 48 h", agents, svcs, total)
	if total < 1000 {
		t.Errorf("only %d calls simulated", total)
	}
}

func TestFailureLogging(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0, func(o *Options) { o.RewarnEvery = time.Hour })
	var code atomic.Value
	code.Store("AccessDeniedException")
	h.ecr.fail = func(_ ecrhost.Service, _ int) error {
		return apiErr(code.Load().(string), "nope")
	}
	hh := host("111122223333", "sa-east-1")
	h.start(hh)
	for i := 0; i < 10; i++ {
		h.fireNext()
	}
	code.Store("ThrottlingException")
	h.fireNext()

	failures := h.logs.FilterMessage("ECR token fetch failed").All()
	if len(failures) != 12 {
		t.Fatalf("%d failure lines for 12 failures", len(failures))
	}
	var levels []zapcore.Level
	for _, l := range failures {
		levels = append(levels, l.Level)
		f := l.ContextMap()
		for _, k := range []string{"registry", "service", "region", "class", "code", "reason", "next_retry", "error", "attempt", "repeats"} {
			if _, ok := f[k]; !ok {
				t.Errorf("failure line without %q: %v", k, f)
			}
		}
	}
	// 1 min each (rand 0): the first at error (no credential held), repeats
	// at debug until an hour has passed, then error again; a new code is
	// logged at once.
	if levels[0] != zapcore.ErrorLevel {
		t.Errorf("first failure at %v", levels[0])
	}
	for i := 1; i < 11; i++ {
		if levels[i] != zapcore.DebugLevel {
			t.Errorf("repeat %d at %v, want debug", i, levels[i])
		}
	}
	if levels[11] != zapcore.ErrorLevel {
		t.Errorf("changed error at %v", levels[11])
	}
	if rep := failures[10].ContextMap()["repeats"]; rep != int64(10) {
		t.Errorf("repeats = %v, want 10", rep)
	}

	// Held credential: warn, with its expiry.
	h2 := newHarness(t, 12*time.Hour, 0)
	h2.start(hh)
	h2.ecr.fail = func(ecrhost.Service, int) error { return apiErr("ServiceUnavailableException", "") }
	h2.fireNext()
	l := h2.logs.FilterMessage("ECR token fetch failed").All()
	if len(l) != 1 || l[0].Level != zapcore.WarnLevel || l[0].ContextMap()["expires_at"] == nil {
		t.Errorf("failure with a held credential: %+v", l)
	}
	ok := h2.logs.FilterMessage("ECR token refreshed").All()
	if len(ok) != 1 || ok[0].Level != zapcore.InfoLevel || ok[0].ContextMap()["expires_at"] == nil || ok[0].ContextMap()["next_refresh"] == nil {
		t.Errorf("success line: %+v", ok)
	}
}

func TestFactoryError(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0, func(o *Options) {
		o.NewECR = func(ecrhost.Service) (ECRAPI, error) { return nil, errors.New("no client for this service") }
	})
	reg := host("111122223333", "eu-west-1")
	h.start(reg)
	e := h.lookup(reg.Name)
	if e.ErrorClass != "permanent" || !strings.Contains(e.LastError, "no client for this service") || h.agent.Ready() {
		t.Errorf("entry %+v", e)
	}
}

func TestRunTwice(t *testing.T) {
	h := newHarness(t, 12*time.Hour, 0)
	h.start()
	if err := h.agent.Run(t.Context()); err == nil {
		t.Error("second concurrent Run did not fail")
	}
	h.stop()
}
