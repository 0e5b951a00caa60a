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
)

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
}

// Options configures an Agent. Every field is optional except NewECR.
type Options struct {
	Clock  clock.WithTicker // default clock.RealClock{}
	Rand   refresh.Rand     // jitter source; default refresh.NewRand(); calls are serialised
	Log    *zap.Logger      // default zap.NewNop()
	NewECR func(ecrhost.Service) (ECRAPI, error)
	// OnChange is called for each host of a service after each refresh attempt
	// of that service, success or failure, and for hosts added to a service
	// that already holds a credential. It runs on the service's refresh
	// goroutine: it must not block long.
	OnChange func(Entry)
	// OnRemove is called with the name of each host that SetRegistries drops.
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

	mu       sync.Mutex
	services map[ecrhost.Service]*service
	runCtx   context.Context // non-nil while Run runs
	wg       sync.WaitGroup

	snap atomic.Pointer[snapshot]
}

type snapshot struct {
	byHost map[string]*Entry
	sorted []Entry
}

// service is the refresh state of one ECR API endpoint. Fields marked (mu)
// are guarded by Agent.mu; the others belong to the service's goroutine.
type service struct {
	key   ecrhost.Service
	kick  chan struct{} // RefreshNow, RefreshHost; capacity 1
	force atomic.Bool   // RefreshHost: refetch even if healthy

	hosts  []ecrhost.Host     // (mu) sorted by name
	cancel context.CancelFunc // (mu) nil until started

	cred                                  *Credential // (mu)
	lastRefresh, lastAttempt, nextRefresh time.Time   // (mu)
	lastErr                               *refresh.Classified
	attempts                              int // (mu)

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
		services:    map[ecrhost.Service]*service{},
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
	a.snap.Store(&snapshot{byHost: map[string]*Entry{}})
	return a
}

// SetRegistries replaces the set of registry hosts (at start and on reload).
// Hosts are matched by Name; duplicates are ignored. A service that is new is
// fetched at once (no jitter) if Run is running, else when Run starts. Hosts
// added to a service that already has a token share it at once. Removed hosts
// leave the auth map, and a service without hosts stops refreshing.
func (a *Agent) SetRegistries(hosts []ecrhost.Host) {
	want := map[ecrhost.Service][]ecrhost.Host{}
	seen := map[string]bool{}
	for _, h := range hosts {
		if h.Name == "" || seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		want[h.Service()] = append(want[h.Service()], h)
	}

	var changed []Entry
	var removed []string
	a.mu.Lock()
	for key, s := range a.services {
		if _, ok := want[key]; !ok {
			for _, h := range s.hosts {
				removed = append(removed, h.Name)
			}
			if s.cancel != nil {
				s.cancel()
			}
			delete(a.services, key)
		}
	}
	for key, hs := range want {
		slices.SortFunc(hs, func(x, y ecrhost.Host) int { return strings.Compare(x.Name, y.Name) })
		s, ok := a.services[key]
		if !ok {
			s = &service{key: key, kick: make(chan struct{}, 1), hosts: hs}
			a.services[key] = s
			if a.runCtx != nil {
				a.startLocked(s)
			}
			continue
		}
		old := map[string]bool{}
		for _, h := range s.hosts {
			old[h.Name] = true
			if !seen[h.Name] {
				removed = append(removed, h.Name)
			}
		}
		s.hosts = hs
		if !s.lastAttempt.IsZero() {
			for _, h := range hs {
				if !old[h.Name] {
					changed = append(changed, s.entryLocked(h))
				}
			}
		}
	}
	a.publishLocked()
	a.mu.Unlock()

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
// scheme, ":443", a trailing slash) are normalised.
func (a *Agent) Lookup(host string) (Entry, bool) {
	s := a.snap.Load()
	if e, ok := s.byHost[host]; ok {
		return *e, true
	}
	if n := normalizeHost(host); n != host {
		if e, ok := s.byHost[n]; ok {
			return *e, true
		}
	}
	return Entry{}, false
}

// Snapshot returns every entry, sorted by host name.
func (a *Agent) Snapshot() []Entry {
	return slices.Clone(a.snap.Load().sorted)
}

// Ready reports whether every configured host holds a valid credential. With
// no hosts configured the agent is ready (and idle).
func (a *Agent) Ready() bool {
	now := a.clock.Now()
	entries := a.snap.Load().sorted
	for i := range entries {
		if !entries[i].Credential.Valid(now) {
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
			wait := next.Sub(a.clock.Now())
			if wait <= 0 {
				a.report(report, first)
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
			}
			if fired {
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
	cred, err := a.fetch(ctx, s)
	now := a.clock.Now()

	a.mu.Lock()
	defer a.mu.Unlock()
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
		report = append(report, s.entryLocked(h))
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
	out, err := s.client.GetAuthorizationToken(cctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, err
	}
	return credentialFrom(out, a.clock.Now())
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
// at debug with a repeat count, and at warn again every RewarnEvery.
func (a *Agent) logFailure(s *service, c *refresh.Classified, now, next time.Time) {
	held := s.cred.Usable(now)
	key := fmt.Sprintf("%d|%s|%s|%t", c.Class, c.Code, c.Reason, held)
	level := zapcore.WarnLevel
	if !held {
		level = zapcore.ErrorLevel
	}
	if key == s.logKey {
		s.repeats++
		if now.Sub(s.lastWarn) < a.rewarn {
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
	a.log.Log(level, "ECR token fetch failed", fields...)
}

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

func (s *service) entryLocked(h ecrhost.Host) Entry {
	e := Entry{
		Host:        h,
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
	sn := &snapshot{byHost: make(map[string]*Entry, n), sorted: make([]Entry, 0, n)}
	for _, s := range a.services {
		for _, h := range s.hosts {
			sn.sorted = append(sn.sorted, s.entryLocked(h))
		}
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
