// Package tokens turns AWS credentials into ECR registry tokens and keeps the
// auth map (registry host → credential, expiry, last error) that the writers
// and servers read. One GetAuthorizationToken call per ECR service (partition,
// region, FIPS, public) serves every host of that service; refreshes follow
// the timing rule of package refresh. Clock, ECR clients, jitter source and
// logger are parameters: the package keeps no global state.
package tokens

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// Defaults for Options.
const (
	DefaultCallTimeout      = 30 * time.Second
	DefaultRefreshNowMinGap = 10 * time.Second
	DefaultReauthMinGap     = time.Minute
	// DefaultRewarnEvery is how often a failure that keeps repeating unchanged
	// is logged again at warn (in between, repeats are logged at debug).
	DefaultRewarnEvery = time.Hour
	// DefaultMaxOnDemand bounds the registries Get adds on demand.
	DefaultMaxOnDemand = 64
	// DefaultOnDemandIdle is how long an on-demand registry is kept (and
	// refreshed) without being looked up.
	DefaultOnDemandIdle = 24 * time.Hour
)

// ErrTooManyOnDemand is returned (wrapped) by Get when the on-demand registry
// limit (Options.MaxOnDemand) is reached.
var ErrTooManyOnDemand = errors.New("too many on-demand registries")

// minRetryGap is the shortest wait between two attempts for one service, so no
// combination of rules can make a tight loop.
const minRetryGap = time.Second

// Entry is the auth map's answer for one registry host. It never holds a
// secret other than inside Credential, which redacts itself when printed.
type Entry struct {
	Host ecrhost.Host
	// Credential is nil until the first success; after failures the last good
	// one is kept (check Valid before serving it). Shared: read-only.
	Credential *Credential
	// LastRefresh is the time of the last successful fetch, LastAttempt of
	// the last attempt, NextRefresh of the next planned one.
	LastRefresh, LastAttempt, NextRefresh time.Time
	// LastError describes the last attempt's failure ("" after a success):
	// reason, AWS error code and message, never a secret.
	LastError string
	// ErrorClass is "transient", "throttled" or "permanent" ("" after a success).
	ErrorClass string
	// ErrorCode is the AWS error code of the last failure, if any.
	ErrorCode string
	// ErrorReason is the operator-facing reason of the last failure.
	ErrorReason string
	// Attempts counts consecutive failed attempts (0 after a success).
	Attempts int
	// OnDemand is true for a host that is not configured but was added by Get
	// (a request for it reached the daemon). It is refreshed like the others
	// while it is looked up, is dropped after Options.OnDemandIdle without a
	// lookup, and does not count for Ready.
	OnDemand bool
	// BestEffort is true for an ECR Public host: anonymous pulls from it work
	// without a token, so it does not count for Ready, and an unchanged
	// failure is logged once at warn (again only when the reason changes or
	// after a recovery), not on every retry.
	BestEffort bool
}

// Options configures an Agent. Every field is optional except NewECR.
type Options struct {
	Clock  clock.WithTicker // default clock.RealClock{}
	Rand   refresh.Rand     // jitter source; default refresh.NewRand(); calls are serialised
	Log    *zap.Logger      // default zap.NewNop()
	NewECR func(ecrhost.Service) (ECRAPI, error)
	// OnChange is called for each host of a service after each refresh attempt
	// of that service, success or failure, and for hosts added to a service
	// that already holds a credential (on-demand hosts too: Entry.OnDemand
	// tells them apart). It runs on the service's refresh
	// goroutine: it must not block long.
	OnChange func(Entry)
	// OnRemove is called with the name of each host that leaves the map:
	// dropped by SetRegistries, or an on-demand host idle for OnDemandIdle.
	OnRemove func(host string)
	// CallTimeout bounds each AWS call (default 30s).
	CallTimeout time.Duration
	// RefreshNowMinGap is the least time between an attempt and a retry that
	// RefreshNow brings forward (default 10s), so a flapping trigger cannot
	// cause a tight loop.
	RefreshNowMinGap time.Duration
	// ReauthMinGap is the least time between an attempt and a refetch that
	// RefreshHost asks for on a healthy service (default 1m).
	ReauthMinGap time.Duration
	// RewarnEvery: an unchanged failure is logged at warn again after this
	// long (default 1h); repeats in between go to debug, counted.
	RewarnEvery time.Duration
	// MaxOnDemand bounds the hosts Get adds on demand (default 64), so a
	// flood of distinct hosts cannot make the agent refresh without end.
	MaxOnDemand int
	// OnDemandIdle: an on-demand host neither looked up (Lookup, Get) for
	// this long is dropped, OnRemove called (default 24h).
	OnDemandIdle time.Duration
}

// Agent keeps one ECR token per service (partition, region, FIPS, public) and
// the auth map of registry host → Entry. Lookups read an immutable snapshot
// through an atomic pointer and never take a lock.
type Agent struct {
	clock       clock.WithTicker
	rand        *lockedRand
	log         *zap.Logger
	newECR      func(ecrhost.Service) (ECRAPI, error)
	onChange    func(Entry)
	onRemove    func(string)
	callTimeout time.Duration
	minGap      time.Duration
	reauthGap   time.Duration
	rewarn      time.Duration
	maxOnDemand int
	idle        time.Duration

	mu         sync.Mutex
	services   map[ecrhost.Service]*service
	configured []ecrhost.Host           // (mu) as SetRegistries gave them, deduplicated
	onDemand   map[string]*onDemandHost // (mu) hosts Get added, by name; never configured ones
	runCtx     context.Context          // non-nil while Run runs
	wg         sync.WaitGroup

	snap atomic.Pointer[snapshot]
}

type snapshot struct {
	byHost map[string]*Entry
	sorted []Entry
	// onDemand holds the on-demand hosts, so a lookup can mark them used
	// without a lock.
	onDemand map[string]*onDemandHost
}

// onDemandHost is a host Get added. used is written without a lock by
// lookups (the clock's Unix nanoseconds of the last one).
type onDemandHost struct {
	host ecrhost.Host
	used atomic.Int64
}

func (o *onDemandHost) touch(now time.Time) {
	// Several lookups may race: keep the latest.
	n := now.UnixNano()
	for {
		old := o.used.Load()
		if old >= n || o.used.CompareAndSwap(old, n) {
			return
		}
	}
}

func (o *onDemandHost) lastUsed() time.Time { return time.Unix(0, o.used.Load()) }

// service is the refresh state of one ECR API endpoint. Fields marked (mu)
// are guarded by Agent.mu; the others belong to the service's goroutine.
type service struct {
	key  ecrhost.Service
	kick chan struct{} // RefreshNow, RefreshHost; capacity 1
	// wake makes the goroutine re-plan its timer (an on-demand host joined,
	// so an idle deadline may come first); capacity 1.
	wake   chan struct{}
	replan atomic.Bool // set with wake, cleared once the timer is re-planned
	force  atomic.Bool // RefreshHost: refetch even if healthy

	hosts  []ecrhost.Host     // (mu) sorted by name
	cancel context.CancelFunc // (mu) nil until started

	cred                                  *Credential // (mu)
	lastRefresh, lastAttempt, nextRefresh time.Time   // (mu)
	lastErr                               *refresh.Classified
	attempts                              int  // (mu)
	fetching                              bool // (mu) an attempt is under way
	// done is closed (and replaced) when an attempt ends or the service is
	// removed: Get waits on it. (mu)
	done chan struct{}

	client ECRAPI
	// log deduplication
	logKey   string
	repeats  int
	lastWarn time.Time
}

// NewAgent returns an agent with no registries; call SetRegistries and Run.
func NewAgent(o Options) *Agent {
	a := &Agent{
		clock:       o.Clock,
		log:         o.Log,
		newECR:      o.NewECR,
		onChange:    o.OnChange,
		onRemove:    o.OnRemove,
		callTimeout: o.CallTimeout,
		minGap:      o.RefreshNowMinGap,
		reauthGap:   o.ReauthMinGap,
		rewarn:      o.RewarnEvery,
		maxOnDemand: o.MaxOnDemand,
		idle:        o.OnDemandIdle,
		services:    map[ecrhost.Service]*service{},
		onDemand:    map[string]*onDemandHost{},
	}
	if a.clock == nil {
		a.clock = clock.RealClock{}
	}
	r := o.Rand
	if r == nil {
		r = refresh.NewRand()
	}
	a.rand = &lockedRand{r: r}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if a.newECR == nil {
		a.newECR = func(ecrhost.Service) (ECRAPI, error) { return nil, errors.New("no ECR client factory configured") }
	}
	if a.callTimeout <= 0 {
		a.callTimeout = DefaultCallTimeout
	}
	if a.minGap <= 0 {
		a.minGap = DefaultRefreshNowMinGap
	}
	if a.reauthGap <= 0 {
		a.reauthGap = DefaultReauthMinGap
	}
	if a.rewarn <= 0 {
		a.rewarn = DefaultRewarnEvery
	}
	if a.maxOnDemand <= 0 {
		a.maxOnDemand = DefaultMaxOnDemand
	}
	if a.idle <= 0 {
		a.idle = DefaultOnDemandIdle
	}
	a.snap.Store(&snapshot{byHost: map[string]*Entry{}})
	return a
}

// SetRegistries replaces the set of configured registry hosts (at start and
// on reload). Hosts are matched by Name; duplicates are ignored. A service
// that is new is fetched at once (no jitter) if Run is running, else when Run
// starts. Hosts added to a service that already has a token share it at once.
// Removed hosts leave the auth map, and a service without hosts stops
// refreshing. On-demand hosts (see Get) are kept; one that is now configured
// stops being on-demand (OnChange is called for it with OnDemand false).
func (a *Agent) SetRegistries(hosts []ecrhost.Host) {
	seen := map[string]bool{}
	configured := make([]ecrhost.Host, 0, len(hosts))
	for _, h := range hosts {
		if h.Name == "" || seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		configured = append(configured, h)
	}

	a.mu.Lock()
	a.configured = configured
	var promoted []string
	for name := range a.onDemand {
		if seen[name] {
			delete(a.onDemand, name)
			promoted = append(promoted, name)
		}
	}
	changed, removed := a.reconcileLocked()
	for _, name := range promoted {
		if s, h, ok := a.findLocked(name); ok && !s.lastAttempt.IsZero() &&
			!slices.ContainsFunc(changed, func(e Entry) bool { return e.Host.Name == name }) {
			changed = append(changed, a.entryLocked(s, h))
		}
	}
	a.mu.Unlock()
	a.notify(changed, removed)
}

// notify runs the callbacks for a membership change, outside the lock.
func (a *Agent) notify(changed []Entry, removed []string) {
	if a.onRemove != nil {
		for _, name := range removed {
			a.onRemove(name)
		}
	}
	if a.onChange != nil {
		for _, e := range changed {
			a.onChange(e)
		}
	}
}

// reconcileLocked makes the services match the configured and on-demand
// hosts: new services start (if Run runs), services without hosts stop. It
// returns the entries of hosts added to a service that already made an
// attempt (to report) and the names of hosts that left the map.
func (a *Agent) reconcileLocked() (changed []Entry, removed []string) {
	want := map[ecrhost.Service][]ecrhost.Host{}
	names := map[string]bool{}
	for _, h := range a.configured {
		names[h.Name] = true
		want[h.Service()] = append(want[h.Service()], h)
	}
	for name, o := range a.onDemand {
		if names[name] {
			continue
		}
		names[name] = true
		want[o.host.Service()] = append(want[o.host.Service()], o.host)
	}

	for key, s := range a.services {
		if _, ok := want[key]; !ok {
			for _, h := range s.hosts {
				removed = append(removed, h.Name)
			}
			if s.cancel != nil {
				s.cancel()
			}
			delete(a.services, key)
			s.signalLocked()
		}
	}
	for key, hs := range want {
		slices.SortFunc(hs, func(x, y ecrhost.Host) int { return strings.Compare(x.Name, y.Name) })
		s, ok := a.services[key]
		if !ok {
			s = &service{key: key, kick: make(chan struct{}, 1), wake: make(chan struct{}, 1), hosts: hs, done: make(chan struct{})}
			a.services[key] = s
			if a.runCtx != nil {
				a.startLocked(s)
			}
			continue
		}
		old := map[string]bool{}
		for _, h := range s.hosts {
			old[h.Name] = true
			if !names[h.Name] {
				removed = append(removed, h.Name)
			}
		}
		s.hosts = hs
		if !s.lastAttempt.IsZero() {
			for _, h := range hs {
				if !old[h.Name] {
					changed = append(changed, a.entryLocked(s, h))
				}
			}
		}
	}
	a.publishLocked()
	return changed, removed
}

// findLocked returns the service serving the host named name.
func (a *Agent) findLocked(name string) (*service, ecrhost.Host, bool) {
	for _, s := range a.services {
		for _, h := range s.hosts {
			if h.Name == name {
				return s, h, true
			}
		}
	}
	return nil, ecrhost.Host{}, false
}

// signalLocked wakes the Get calls waiting for the current attempt.
func (s *service) signalLocked() {
	close(s.done)
	s.done = make(chan struct{})
}

// Get returns the entry for h with a credential that has not expired,
// adding h as an on-demand host if it is not in the map: for a request about
// a registry that is not configured. A host in the map with a usable
// credential is answered at once, without a lock.
//
// Otherwise h joins its service if the agent has one (its token serves at
// once), or a new service starts with an immediate fetch; Get then waits until
// that service's attempt under way (or its first) completes, or ctx ends.
// Concurrent calls for hosts of one service share that one
// GetAuthorizationToken call. If the service's last attempt failed and none
// is under way, Get does not wait for the backed-off retry: it returns an
// error at once, which wraps the attempt's *refresh.Classified.
//
// An on-demand host is refreshed like the others from then on and dropped
// (OnRemove) after Options.OnDemandIdle without a lookup. At most
// Options.MaxOnDemand hosts are on demand; beyond, Get returns an error
// wrapping ErrTooManyOnDemand.
func (a *Agent) Get(ctx context.Context, h ecrhost.Host) (Entry, error) {
	sn := a.snap.Load()
	if e, ok := sn.byHost[h.Name]; ok {
		now := a.clock.Now()
		if e.Credential.Usable(now) {
			if e.OnDemand {
				if o := sn.onDemand[e.Host.Name]; o != nil {
					o.touch(now)
				}
			}
			return *e, nil
		}
	}
	return a.getSlow(ctx, h)
}

func (a *Agent) getSlow(ctx context.Context, h ecrhost.Host) (Entry, error) {
	if h.Name == "" || (!h.Public && h.Region == "") {
		return Entry{}, fmt.Errorf("not an ECR registry host: %q", h.Name)
	}
	a.mu.Lock()
	now := a.clock.Now()
	s, hh, ok := a.findLocked(h.Name)
	var changed []Entry
	var removed []string
	if ok {
		if o := a.onDemand[h.Name]; o != nil {
			o.touch(now)
		}
	} else {
		if len(a.onDemand) >= a.maxOnDemand {
			removed = a.dropIdleLocked(now, nil)
		}
		if len(a.onDemand) >= a.maxOnDemand {
			a.mu.Unlock()
			a.notify(nil, removed)
			return Entry{}, fmt.Errorf("%w: %s is not configured and the limit of %d registries served on demand is reached; add it to the config's registries",
				ErrTooManyOnDemand, h.Name, a.maxOnDemand)
		}
		o := &onDemandHost{host: h}
		o.touch(now)
		a.onDemand[h.Name] = o
		var gone []string
		changed, gone = a.reconcileLocked()
		removed = append(removed, gone...)
		s, hh, _ = a.findLocked(h.Name)
		s.replan.Store(true)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		a.log.Info("serving an ECR registry on demand", zap.String("registry", h.Name),
			zap.String("service", s.key.String()), zap.String("region", h.Region), zap.Int("on_demand", len(a.onDemand)))
	}
	e, done, err := a.answerLocked(s, hh, now)
	a.mu.Unlock()
	a.notify(changed, removed)
	if done == nil {
		return e, err
	}

	select {
	case <-done:
	case <-ctx.Done():
		return Entry{}, fmt.Errorf("waiting for the ECR token of %s (ECR API %s): %w", h.Name, s.key, ctx.Err())
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.services[s.key] != s || !slices.ContainsFunc(s.hosts, func(x ecrhost.Host) bool { return x.Name == h.Name }) {
		return Entry{}, fmt.Errorf("registry %s was removed while its ECR token was fetched", h.Name)
	}
	e, done, err = a.answerLocked(s, hh, a.clock.Now())
	if done != nil {
		// Only if the service was restarted meanwhile (Run stopped and
		// started): report it rather than wait again.
		return Entry{}, fmt.Errorf("no ECR token for %s (ECR API %s) yet", h.Name, s.key)
	}
	return e, err
}

// answerLocked returns h's entry if its credential is usable, the error of
// the service's last attempt if that failed and none is under way, or else
// the channel to wait on for the next attempt.
func (a *Agent) answerLocked(s *service, h ecrhost.Host, now time.Time) (Entry, <-chan struct{}, error) {
	if s.cred.Usable(now) {
		return a.entryLocked(s, h), nil, nil
	}
	if s.fetching || s.lastAttempt.IsZero() || s.lastErr == nil {
		return Entry{}, s.done, nil
	}
	return Entry{}, nil, fmt.Errorf("no ECR token for %s (ECR API %s; %d failed attempts, next retry %s): %w",
		h.Name, s.key, s.attempts, s.nextRefresh.UTC().Format(time.RFC3339), s.lastErr)
}

// dropIdleLocked removes the on-demand hosts (of service only, if not nil)
// not looked up for OnDemandIdle and returns their names.
func (a *Agent) dropIdleLocked(now time.Time, only *service) []string {
	var dropped []string
	for name, o := range a.onDemand {
		if only != nil && o.host.Service() != only.key {
			continue
		}
		if !now.Before(o.lastUsed().Add(a.idle)) {
			delete(a.onDemand, name)
			dropped = append(dropped, name)
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	_, removed := a.reconcileLocked()
	slices.Sort(removed)
	a.log.Info("dropping on-demand ECR registries not looked up recently", zap.Strings("registry", removed),
		zap.Duration("idle", a.idle), zap.Int("on_demand", len(a.onDemand)))
	return removed
}

// replanPending reports whether a service has yet to re-plan its timer after
// a wake (for tests that wait for the agent to settle).
func (a *Agent) replanPending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.services {
		if s.replan.Load() {
			return true
		}
	}
	return false
}

// idleDeadline is when the first on-demand host of s becomes idle.
func (a *Agent) idleDeadline(s *service) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var at time.Time
	for _, h := range s.hosts {
		if o := a.onDemand[h.Name]; o != nil {
			if t := o.lastUsed().Add(a.idle); at.IsZero() || t.Before(at) {
				at = t
			}
		}
	}
	return at, !at.IsZero()
}

// evictIdle drops the idle on-demand hosts of s; it reports whether s still
// runs.
func (a *Agent) evictIdle(s *service) bool {
	a.mu.Lock()
	removed := a.dropIdleLocked(a.clock.Now(), s)
	alive := a.services[s.key] == s
	a.mu.Unlock()
	a.notify(nil, removed)
	return alive
}

// Run refreshes every service until ctx is done, then waits for the refresh
// goroutines to stop and returns nil. Only one Run may be active at a time.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.runCtx != nil {
		a.mu.Unlock()
		return errors.New("tokens: Agent.Run is already running")
	}
	a.runCtx = ctx
	for _, s := range a.services {
		a.startLocked(s)
	}
	a.mu.Unlock()

	<-ctx.Done()

	a.mu.Lock()
	a.runCtx = nil
	for _, s := range a.services {
		if s.cancel != nil {
			s.cancel()
			s.cancel = nil
		}
	}
	a.mu.Unlock()
	a.wg.Wait()
	return nil
}

// RefreshNow brings forward the next attempt of every failing service (for
// example after the web identity token rotated following a permanent error).
// The retry happens at once, or RefreshNowMinGap after that service's last
// attempt if that is later; services that are not failing are left alone.
func (a *Agent) RefreshNow() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.services {
		if s.attempts > 0 {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
}

// RefreshHost asks for a new token for host's service although the current
// one should still be good: for when the registry answered 401/403 "token
// expired" or "invalid token" (field case 9). The refetch happens at once,
// or ReauthMinGap after the service's last attempt (RefreshNowMinGap if it is
// failing) if that is later, so repeated rejections cost at most one call per
// gap. It reports whether host is configured.
func (a *Agent) RefreshHost(host string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := normalizeHost(host)
	for _, s := range a.services {
		for _, h := range s.hosts {
			if h.Name == host || h.Name == n {
				s.force.Store(true)
				select {
				case s.kick <- struct{}{}:
				default:
				}
				return true
			}
		}
	}
	return false
}

// Lookup returns the entry for a registry host. It takes no lock and does not
// allocate for a host spelled as configured; other spellings (upper case, a
// scheme, ":443", a trailing slash) are normalised. A lookup of an on-demand
// host keeps it from being dropped as idle.
func (a *Agent) Lookup(host string) (Entry, bool) {
	s := a.snap.Load()
	if e, ok := s.byHost[host]; ok {
		a.touched(s, e)
		return *e, true
	}
	if n := normalizeHost(host); n != host {
		if e, ok := s.byHost[n]; ok {
			a.touched(s, e)
			return *e, true
		}
	}
	return Entry{}, false
}

func (a *Agent) touched(s *snapshot, e *Entry) {
	if e.OnDemand {
		if o := s.onDemand[e.Host.Name]; o != nil {
			o.touch(a.clock.Now())
		}
	}
}

// Snapshot returns every entry, sorted by host name.
func (a *Agent) Snapshot() []Entry {
	return slices.Clone(a.snap.Load().sorted)
}

// Ready reports whether every configured host holds a valid credential
// (on-demand and best-effort hosts do not count). With no hosts configured
// the agent is ready (and idle).
func (a *Agent) Ready() bool {
	now := a.clock.Now()
	entries := a.snap.Load().sorted
	for i := range entries {
		if !entries[i].OnDemand && !entries[i].BestEffort && !entries[i].Credential.Valid(now) {
			return false
		}
	}
	return true
}

func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	h = strings.TrimPrefix(h, "https://")
	h = strings.TrimRight(h, "/")
	return strings.TrimSuffix(h, ":443")
}

func (a *Agent) startLocked(s *service) {
	ctx, cancel := context.WithCancel(a.runCtx)
	s.cancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.loop(ctx, s)
	}()
}

// loop is the refresh goroutine of one service: attempt, arm a timer, report,
// wait; RefreshNow may bring the timer forward.
func (a *Agent) loop(ctx context.Context, s *service) {
	// The first attempt is immediate anyway: requests made before it are met.
	select {
	case <-s.kick:
	default:
	}
	s.force.Store(false)
	for ctx.Err() == nil {
		next, report, ok := a.attempt(ctx, s)
		if !ok {
			return // removed from the agent while fetching
		}
		for first := true; ; first = false {
			// Wake for the next attempt, or earlier when an on-demand host
			// becomes idle.
			s.replan.Store(false)
			wake, idle := next, false
			if at, ok := a.idleDeadline(s); ok && at.Before(wake) {
				wake, idle = at, true
			}
			wait := wake.Sub(a.clock.Now())
			if wait <= 0 {
				a.report(report, first)
				if idle {
					if !a.evictIdle(s) {
						return
					}
					continue
				}
				break
			}
			t := a.clock.NewTimer(wait)
			a.report(report, first)
			fired := false
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
				fired = true
			case <-s.kick:
				t.Stop()
				if n, ok := a.broughtForward(s, next); ok {
					next = n
				}
			case <-s.wake:
				t.Stop()
			}
			if fired {
				if idle {
					if !a.evictIdle(s) {
						return
					}
					continue
				}
				break
			}
		}
	}
}

func (a *Agent) report(entries []Entry, first bool) {
	if !first || a.onChange == nil {
		return
	}
	for _, e := range entries {
		a.onChange(e)
	}
}

// broughtForward returns the earlier next attempt RefreshNow asks for, if any.
func (a *Agent) broughtForward(s *service, next time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	forced := s.force.Swap(false)
	gap := a.minGap
	if s.attempts == 0 {
		if !forced {
			return next, false
		}
		gap = a.reauthGap
	}
	at := later(a.clock.Now(), s.lastAttempt.Add(gap))
	if !at.Before(next) {
		return next, false
	}
	s.nextRefresh = at
	a.publishLocked()
	a.log.Info("fetching ECR token early", append(a.svcFields(s), zap.Time("next_refresh", at), zap.Bool("requested_for_host", forced))...)
	return at, true
}

// attempt fetches the service's token once, updates the map and logs. It
// returns the next attempt's time and the entries to report; ok is false if
// the service was removed meanwhile.
func (a *Agent) attempt(ctx context.Context, s *service) (next time.Time, report []Entry, ok bool) {
	a.mu.Lock()
	s.fetching = true
	a.mu.Unlock()
	cred, err := a.fetch(ctx, s)
	now := a.clock.Now()

	a.mu.Lock()
	defer a.mu.Unlock()
	s.fetching = false
	defer s.signalLocked() // runs before the unlock
	if a.services[s.key] != s || ctx.Err() != nil {
		return time.Time{}, nil, false
	}
	s.lastAttempt = now
	if err == nil {
		recovered := s.attempts
		s.cred, s.lastRefresh, s.lastErr, s.attempts = cred, now, nil, 0
		next = refresh.At(now, cred.ExpiresAt, a.rand)
		next = later(next, now.Add(minRetryGap))
		s.nextRefresh = next
		fields := append(a.svcFields(s),
			zap.Time("expires_at", cred.ExpiresAt), zap.Time("next_refresh", next))
		if recovered > 0 {
			fields = append(fields, zap.Int("failed_attempts_before", recovered))
		}
		a.log.Info("ECR token refreshed", fields...)
		s.logKey, s.repeats = "", 0
	} else {
		c := refresh.Classify(err)
		s.lastErr = c
		s.attempts++
		next = now.Add(refresh.DefaultBackoff(c.Class).Delay(s.attempts-1, a.rand))
		// Never wait past the held credential's expiry (less a little) to
		// retry, so it is replaced as soon as AWS answers again.
		if s.cred.Usable(now) {
			little := min(30*time.Second, s.cred.Lifetime()/20)
			if limit := s.cred.ExpiresAt.Add(-little); limit.After(now) && next.After(limit) {
				next = limit
			}
		}
		next = later(next, now.Add(minRetryGap))
		s.nextRefresh = next
		a.logFailure(s, c, now, next)
	}
	a.publishLocked()
	for _, h := range s.hosts {
		report = append(report, a.entryLocked(s, h))
	}
	return next, report, true
}

func (a *Agent) fetch(ctx context.Context, s *service) (*Credential, error) {
	if s.client == nil {
		c, err := a.newECR(s.key)
		if err != nil {
			return nil, &refresh.Classified{Class: refresh.Permanent, Reason: "cannot create the ECR client", Err: err}
		}
		s.client = c
	}
	cctx, cancel := context.WithTimeout(ctx, a.callTimeout)
	defer cancel()
	return FetchCredential(cctx, s.client, a.clock.Now)
}

// FetchCredential makes one GetAuthorizationToken call and validates the
// answer as the agent does (now dates it). `doctor` uses it. Errors never
// echo the token.
func FetchCredential(ctx context.Context, c ECRAPI, now func() time.Time) (*Credential, error) {
	out, err := c.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, err
	}
	return credentialFrom(out, now())
}

// credentialFrom validates ECR's answer. Errors never echo the token.
func credentialFrom(out *ecr.GetAuthorizationTokenOutput, now time.Time) (*Credential, error) {
	if out == nil || len(out.AuthorizationData) == 0 {
		return nil, errors.New("ECR returned no authorization data")
	}
	d := out.AuthorizationData[0]
	var token string
	if d.AuthorizationToken != nil {
		token = *d.AuthorizationToken
	}
	user, password, err := decodeAuthorizationToken(token)
	if err != nil {
		return nil, err
	}
	if d.ExpiresAt == nil || d.ExpiresAt.IsZero() {
		return nil, errors.New("ECR returned an authorization token without an expiry")
	}
	if !d.ExpiresAt.After(now) {
		return nil, fmt.Errorf("ECR returned an authorization token that expired at %s, not after now (%s): check the node's clock",
			d.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return &Credential{Username: user, Password: password, ExpiresAt: *d.ExpiresAt, FetchedAt: now}, nil
}

// logFailure logs one line per failed attempt: at warn (error when no usable
// credential is held) the first time and whenever the failure changes, then
// at debug with a repeat count, and at warn again every RewarnEvery. A
// best-effort service (ECR Public) logs at warn only, once per distinct
// failure: anonymous pulls work meanwhile, so a repeat is not news.
func (a *Agent) logFailure(s *service, c *refresh.Classified, now, next time.Time) {
	held := s.cred.Usable(now)
	best := bestEffort(s.key)
	key := fmt.Sprintf("%d|%s|%s|%t", c.Class, c.Code, c.Reason, held)
	level := zapcore.WarnLevel
	if best {
		key = fmt.Sprintf("%d|%s|%s", c.Class, c.Code, c.Reason)
	} else if !held {
		level = zapcore.ErrorLevel
	}
	if key == s.logKey {
		s.repeats++
		if best || now.Sub(s.lastWarn) < a.rewarn {
			level = zapcore.DebugLevel
		}
	} else {
		s.logKey, s.repeats = key, 0
	}
	if level != zapcore.DebugLevel {
		s.lastWarn = now
	}
	fields := append(a.svcFields(s),
		zap.String("class", c.Class.String()),
		zap.String("code", c.Code),
		zap.String("reason", c.Reason),
		zap.String("error", c.Error()),
		zap.Int("attempt", s.attempts),
		zap.Int("repeats", s.repeats),
		zap.Time("next_retry", next),
	)
	if s.cred != nil {
		fields = append(fields, zap.Time("expires_at", s.cred.ExpiresAt), zap.Bool("credential_usable", held))
	} else {
		fields = append(fields, zap.Bool("credential_usable", false))
	}
	msg := "ECR token fetch failed"
	if best {
		msg = "ECR Public token fetch failed; pulls from ECR Public stay anonymous (lower rate limit) until it works"
	}
	a.log.Log(level, msg, fields...)
}

// bestEffort reports whether a service's hosts work without a token: ECR
// Public serves anonymous pulls.
func bestEffort(s ecrhost.Service) bool { return s.Public }

func (a *Agent) svcFields(s *service) []zap.Field {
	names := make([]string, len(s.hosts))
	for i, h := range s.hosts {
		names[i] = h.Name
	}
	return []zap.Field{
		zap.Strings("registry", names),
		zap.String("service", s.key.String()),
		zap.String("region", s.key.Region),
	}
}

func (a *Agent) entryLocked(s *service, h ecrhost.Host) Entry {
	e := Entry{
		Host:        h,
		OnDemand:    a.onDemand[h.Name] != nil,
		BestEffort:  bestEffort(s.key),
		Credential:  s.cred,
		LastRefresh: s.lastRefresh,
		LastAttempt: s.lastAttempt,
		NextRefresh: s.nextRefresh,
		Attempts:    s.attempts,
	}
	if c := s.lastErr; c != nil {
		e.LastError, e.ErrorClass, e.ErrorCode, e.ErrorReason = c.Error(), c.Class.String(), c.Code, c.Reason
	}
	return e
}

// publishLocked rebuilds the immutable snapshot Lookup reads.
func (a *Agent) publishLocked() {
	n := 0
	for _, s := range a.services {
		n += len(s.hosts)
	}
	sn := &snapshot{byHost: make(map[string]*Entry, n), sorted: make([]Entry, 0, n),
		onDemand: make(map[string]*onDemandHost, len(a.onDemand))}
	for _, s := range a.services {
		for _, h := range s.hosts {
			sn.sorted = append(sn.sorted, a.entryLocked(s, h))
		}
	}
	for name, o := range a.onDemand {
		sn.onDemand[name] = o
	}
	slices.SortFunc(sn.sorted, func(x, y Entry) int { return strings.Compare(x.Host.Name, y.Host.Name) })
	for i := range sn.sorted {
		sn.byHost[sn.sorted[i].Host.Name] = &sn.sorted[i]
	}
	a.snap.Store(sn)
}

func later(x, y time.Time) time.Time {
	if x.After(y) {
		return x
	}
	return y
}

// lockedRand serialises a jitter source shared by the service goroutines.
type lockedRand struct {
	mu sync.Mutex
	r  refresh.Rand
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}
