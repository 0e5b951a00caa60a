package tokens

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"k8s.io/utils/clock"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// Defaults for WorkloadOptions.
const (
	DefaultMaxWorkloads = 256
	DefaultWorkloadIdle = 2 * time.Hour
	// maxWorkloadHosts bounds the registry names one entry remembers for
	// status (the credentials themselves are per ECR service).
	maxWorkloadHosts = 64
	// sweepEvery is the least time between two idle sweeps made by Get.
	sweepEvery = time.Minute
	// maxTokenHashes bounds the token hashes one entry remembers as accepted
	// by STS (least recently used dropped first), and apart the hashes of
	// tokens STS refused, for the backoff.
	maxTokenHashes = 64
)

// WorkloadOptions configures Workloads. STS and NewECR are required.
type WorkloadOptions struct {
	Clock clock.PassiveClock // default clock.RealClock{}
	Rand  refresh.Rand       // jitter source; default refresh.NewRand(); calls are serialised
	Log   *zap.Logger        // default zap.NewNop()
	// STS is called anonymously (AssumeRoleWithWebIdentity is unsigned).
	STS identity.STSAPI
	// NewECR returns, for one workload's credentials, the ECR client
	// factory to use with them (see WorkloadECRFactory). It is called once
	// per cache entry.
	NewECR func(aws.CredentialsProvider) func(ecrhost.Service) (ECRAPI, error)
	// Audience is the audience STS expects (a mismatch is logged before the
	// call); default identity.DefaultAudience.
	Audience string
	// MaxEntries bounds the cached (role, service account) entries; the
	// least recently used is evicted beyond it (default 256).
	MaxEntries int
	// Idle: an entry not used for this long is dropped (default 2h).
	Idle time.Duration
	// CallTimeout bounds one shared STS + ECR exchange (default 30s).
	CallTimeout time.Duration
}

// WorkloadECRFactory returns a WorkloadOptions.NewECR that builds ECR clients
// from base (HTTP client, endpoint overrides) with a workload's credentials,
// as NewECRFactory does for the node's.
func WorkloadECRFactory(base aws.Config) func(aws.CredentialsProvider) func(ecrhost.Service) (ECRAPI, error) {
	return func(p aws.CredentialsProvider) func(ecrhost.Service) (ECRAPI, error) {
		cfg := base.Copy()
		cfg.Credentials = p
		return NewECRFactory(cfg)
	}
}

// WorkloadRequest asks for a registry credential on behalf of a pod: the
// kubelet's service-account token mode (KEP-4412). Printing it never shows
// the token.
type WorkloadRequest struct {
	RoleARN             string // the role to assume (from the SA's annotations)
	ServiceAccountToken string // the pod's service-account token (a JWT): secret
	Host                ecrhost.Host
}

func (r WorkloadRequest) String() string {
	tok := ""
	if r.ServiceAccountToken != "" {
		tok = redacted
	}
	return fmt.Sprintf("WorkloadRequest{RoleARN:%q ServiceAccountToken:%q Host:%q}", r.RoleARN, tok, r.Host.Name)
}

// GoString redacts the token (the %#v verb).
func (r WorkloadRequest) GoString() string { return "tokens." + r.String() }

// Format makes every fmt verb print the redacted form.
func (r WorkloadRequest) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.String())) }

// WorkloadEntry describes one cached (role, service account) entry for
// status. It holds no secret.
type WorkloadEntry struct {
	RoleARN     string `json:"roleArn"`
	Issuer      string `json:"issuer"`
	Subject     string `json:"subject"`
	SessionName string `json:"sessionName"`
	// Registries are the registry hosts requested with this identity, sorted.
	Registries []string `json:"registries"`
	// ExpiresAt is the expiry of the ECR token held for each registry host.
	ExpiresAt map[string]time.Time `json:"expiresAt,omitempty"`
	// CredentialsExpireAt is when the role credentials from STS expire.
	CredentialsExpireAt time.Time `json:"credentialsExpireAt,omitzero"`
	LastUsed            time.Time `json:"lastUsed"`
	// LastError is the last failure (STS or ECR) not yet followed by a
	// success; never a secret.
	LastError string `json:"lastError,omitempty"`
}

// Workloads answers registry credential requests made with a pod's
// service-account token: it assumes the requested role with that token
// (AssumeRoleWithWebIdentity) and gets ECR tokens with the role's credentials.
//
// Everything is cached per (role ARN, token issuer, token subject): the
// service account's identity, never the registry alone. Within an entry the
// role credentials follow the timing rule (refresh.At), each STS call
// carrying the newest accepted token; ECR tokens are kept per ECR service
// until refresh.At and fetched when requested, one call for concurrent
// requests.
//
// One workload's credentials never reach another, even through a caller that
// forges a token: the claims that pick the entry are read without verifying
// the token's signature, so nothing cached is served for a token until STS
// has accepted it for that entry's role and session. Each entry remembers the
// SHA-256 of the last 64 tokens STS accepted (never the tokens themselves);
// a token not among them is first exchanged with STS (AssumeRoleWithWebIdentity
// with that token; one call for concurrent requests with the same token).
// The credentials that exchange returns become the entry's role credentials,
// and the ECR tokens cached for the entry stay shared by all its accepted
// tokens: a new token costs exactly one STS call and no ECR call, a token
// seen before costs none. A token STS refuses gets STS's error (retried after
// refresh.DefaultBackoff, per token) and nothing cached; when STS cannot be
// reached, an unverified token gets a transient error, while an accepted one
// is still served from the cache. An accepted token that has expired is
// refused before any call, as is every expired token.
type Workloads struct {
	o    WorkloadOptions
	rand *lockedRand

	mu        sync.Mutex
	entries   map[workloadKey]*workload
	lastSweep time.Time
}

type workloadKey struct{ role, issuer, subject string }

// workload is one cache entry. Fields marked (mu) are guarded by
// Workloads.mu.
type workload struct {
	key     workloadKey
	session string
	// web holds the entry's role credentials: replaced by the provider of
	// each successful verification (see verify).
	web    atomic.Pointer[identity.WebIdentity]
	newECR func(ecrhost.Service) (ECRAPI, error)
	tok    atomic.Pointer[identity.Token] // the newest accepted token
	group  singleflight.Group             // per ECR service
	verify singleflight.Group             // per token hash

	lastUsed  time.Time                        // (mu)
	regs      map[ecrhost.Service]*workloadReg // (mu)
	hosts     map[string]ecrhost.Service       // (mu) registries requested
	stsErr    *refresh.Classified              // (mu) last STS failure, nil after a success
	stsFails  int                              // (mu)
	stsRetry  time.Time                        // (mu) no STS call before, while stsErr is set
	accepted  []tokenHash                      // (mu) tokens STS accepted, least recently used first
	rejected  []*tokenRejection                // (mu) tokens STS refused, oldest first
	verifyErr *refresh.Classified              // (mu) last verification failure, nil after a success
}

// tokenHash is the SHA-256 of a raw service-account token.
type tokenHash [sha256.Size]byte

// tokenRejection is STS's last answer to a token it did not accept.
type tokenRejection struct {
	hash     tokenHash
	err      *refresh.Classified
	failures int
	retryAt  time.Time // no new verification of this token before
}

// workloadReg is an entry's ECR token for one service.
type workloadReg struct {
	cred      *Credential
	refreshAt time.Time
	lastErr   *refresh.Classified
	failures  int
	retryAt   time.Time
}

// NewWorkloads checks o and returns an empty cache.
func NewWorkloads(o WorkloadOptions) (*Workloads, error) {
	if o.STS == nil {
		return nil, errors.New("tokens: workload credentials need an STS client")
	}
	if o.NewECR == nil {
		return nil, errors.New("tokens: workload credentials need an ECR client factory")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Rand == nil {
		o.Rand = refresh.NewRand()
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Audience == "" {
		o.Audience = identity.DefaultAudience
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxWorkloads
	}
	if o.Idle <= 0 {
		o.Idle = DefaultWorkloadIdle
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	return &Workloads{o: o, rand: &lockedRand{r: o.Rand}, entries: map[workloadKey]*workload{}}, nil
}

// Get returns a registry credential for req.Host obtained with req's role and
// service-account token. An empty, malformed or expired token is refused
// before any AWS call; a token STS has not yet accepted for the entry is
// exchanged with STS before anything cached is served. Errors are
// *refresh.Classified and never hold the token or a credential.
func (w *Workloads) Get(ctx context.Context, req WorkloadRequest) (Credential, error) {
	now := w.o.Clock.Now()
	if err := checkRoleARN(req.RoleARN); err != nil {
		return Credential{}, err
	}
	if req.Host.Name == "" || (!req.Host.Public && req.Host.Region == "") {
		return Credential{}, &refresh.Classified{Class: refresh.Permanent, Reason: "not an ECR registry host",
			Err: fmt.Errorf("host %q", req.Host.Name)}
	}
	tok, err := identity.ParseToken(req.ServiceAccountToken, now)
	if err != nil {
		return Credential{}, &refresh.Classified{Class: refresh.Permanent, Reason: err.Error(), Err: errTokenNotSent{err}}
	}
	if tok.Claims.Issuer == "" || tok.Claims.Subject == "" {
		return Credential{}, &refresh.Classified{Class: refresh.Permanent,
			Reason: "service account token without iss or sub claim (" + tok.Claims.String() + ")",
			Err:    errTokenNotSent{errors.New("token has no iss or sub")}}
	}
	key := workloadKey{role: req.RoleARN, issuer: tok.Claims.Issuer, subject: tok.Claims.Subject}
	svc := req.Host.Service()

	sum := tokenHash(sha256.Sum256([]byte(tok.Raw())))

	w.mu.Lock()
	w.sweepLocked(now, false)
	e, err := w.entryLocked(key, now)
	if err != nil {
		w.mu.Unlock()
		return Credential{}, err
	}
	accepted := e.acceptedLocked(sum)
	w.mu.Unlock()
	if !accepted {
		// Nothing cached is served for a token STS has not accepted, and it
		// never becomes the entry's token nor changes its credentials.
		if err := w.verify(ctx, e, tok, sum); err != nil {
			return Credential{}, err
		}
	}

	w.mu.Lock()
	e.lastUsed = now
	e.offerLocked(tok)
	if _, ok := e.hosts[req.Host.Name]; ok || len(e.hosts) < maxWorkloadHosts {
		e.hosts[req.Host.Name] = svc
	}
	if c, done, err := e.cachedLocked(svc, now); done {
		w.mu.Unlock()
		return c, err
	}
	w.mu.Unlock()

	ch := e.group.DoChan(svc.String(), func() (any, error) {
		// Not tied to the first caller's cancellation: the call is shared.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.o.CallTimeout)
		defer cancel()
		return w.fetch(cctx, e, svc)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Credential{}, r.Err
		}
		return r.Val.(Credential), nil
	case <-ctx.Done():
		return Credential{}, &refresh.Classified{Class: refresh.Transient, Reason: "gave up waiting for the workload's ECR token", Err: ctx.Err()}
	}
}

// cachedLocked answers from the cache when it can: a token before its
// refresh time; else, during the backoff after a failure, the last good
// token while valid or the failure.
func (e *workload) cachedLocked(svc ecrhost.Service, now time.Time) (c Credential, done bool, err error) {
	r := e.regs[svc]
	valid := r != nil && r.cred.Valid(now)
	if valid && now.Before(r.refreshAt) {
		return *r.cred, true, nil
	}
	ecrWait := r != nil && r.lastErr != nil && now.Before(r.retryAt)
	stsWait := e.stsErr != nil && now.Before(e.stsRetry)
	switch {
	case (ecrWait || stsWait) && valid:
		return *r.cred, true, nil
	case ecrWait:
		return Credential{}, true, r.lastErr
	case stsWait:
		return Credential{}, true, e.stsErr
	}
	return Credential{}, false, nil
}

// fetch runs once for concurrent requests of one entry and service.
func (w *Workloads) fetch(ctx context.Context, e *workload, svc ecrhost.Service) (Credential, error) {
	now := w.o.Clock.Now()
	w.mu.Lock()
	if c, done, err := e.cachedLocked(svc, now); done {
		// A shared call that had just ended answered meanwhile.
		w.mu.Unlock()
		return c, err
	}
	w.mu.Unlock()

	if _, err := e.web.Load().Retrieve(ctx); err != nil {
		return w.failed(e, svc, refresh.Classify(err), true)
	}
	w.mu.Lock()
	e.stsErr, e.stsFails, e.stsRetry = nil, 0, time.Time{}
	w.mu.Unlock()

	cred, err := e.ecrToken(ctx, svc, now)
	if err != nil {
		c := refresh.Classify(err)
		return w.failed(e, svc, &refresh.Classified{Class: c.Class, Code: c.Code, Err: c.Err,
			Reason: fmt.Sprintf("ECR token for %s with role %s (sub=%s): %s", svc, e.key.role, e.key.subject, c.Reason)}, false)
	}
	at := later(refresh.At(cred.FetchedAt, cred.ExpiresAt, w.rand), cred.FetchedAt.Add(minRetryGap))

	w.mu.Lock()
	r := e.reg(svc)
	r.cred, r.refreshAt, r.lastErr, r.failures, r.retryAt = cred, at, nil, 0, time.Time{}
	w.mu.Unlock()
	w.o.Log.Debug("workload ECR token fetched", zap.String("role_arn", e.key.role), zap.String("sub", e.key.subject),
		zap.String("service", svc.String()), zap.Time("expires_at", cred.ExpiresAt), zap.Time("refresh_at", at))
	return *cred, nil
}

func (e *workload) ecrToken(ctx context.Context, svc ecrhost.Service, now time.Time) (*Credential, error) {
	api, err := e.newECR(svc)
	if err != nil {
		return nil, &refresh.Classified{Class: refresh.Permanent, Reason: "cannot create the ECR client", Err: err}
	}
	out, err := api.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, err
	}
	return credentialFrom(out, now)
}

// failed records a failure, plans the next attempt after the backoff, and
// returns the last good token while valid, else the failure.
func (w *Workloads) failed(e *workload, svc ecrhost.Service, c *refresh.Classified, sts bool) (Credential, error) {
	now := w.o.Clock.Now()
	w.mu.Lock()
	r := e.reg(svc)
	var retry time.Time
	if sts {
		retry = now.Add(refresh.DefaultBackoff(c.Class).Delay(e.stsFails, w.rand))
		e.stsErr, e.stsRetry = c, retry
		e.stsFails++
	} else {
		retry = now.Add(refresh.DefaultBackoff(c.Class).Delay(r.failures, w.rand))
		r.lastErr, r.retryAt = c, retry
		r.failures++
	}
	valid := r.cred.Valid(now)
	var cred Credential
	if valid {
		cred = *r.cred
	}
	w.mu.Unlock()

	fields := []zap.Field{zap.String("role_arn", e.key.role), zap.String("sub", e.key.subject), zap.String("iss", e.key.issuer),
		zap.String("service", svc.String()), zap.String("class", c.Class.String()), zap.String("code", c.Code),
		zap.String("reason", c.Reason), zap.String("error", c.Error()), zap.Time("next_retry", retry)}
	if valid {
		w.o.Log.Warn("workload credential refresh failed; serving the last good ECR token", append(fields, zap.Time("expires_at", cred.ExpiresAt))...)
		return cred, nil
	}
	w.o.Log.Warn("workload credential request failed", fields...)
	return Credential{}, c
}

func (e *workload) reg(svc ecrhost.Service) *workloadReg {
	r := e.regs[svc]
	if r == nil {
		r = &workloadReg{}
		e.regs[svc] = r
	}
	return r
}

// verify exchanges tok, which STS has not accepted for e yet, with STS (one
// call for concurrent requests with the same token). On success the token is
// accepted and the credentials STS returned become e's role credentials; on
// failure the error is STS's (or, if STS could not answer, a transient "cannot
// verify"), kept for the token's backoff, and nothing of e's is served.
func (w *Workloads) verify(ctx context.Context, e *workload, tok identity.Token, sum tokenHash) error {
	w.mu.Lock()
	if err := e.rejectedLocked(sum, w.o.Clock.Now()); err != nil {
		w.mu.Unlock()
		return err
	}
	w.mu.Unlock()
	ch := e.verify.DoChan(string(sum[:]), func() (any, error) {
		// Not tied to the first caller's cancellation: the call is shared.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.o.CallTimeout)
		defer cancel()
		return nil, w.exchange(cctx, e, tok, sum)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return &refresh.Classified{Class: refresh.Transient, Reason: "gave up waiting for STS to verify the service account token", Err: ctx.Err()}
	}
}

// exchange runs once for concurrent requests with one token.
func (w *Workloads) exchange(ctx context.Context, e *workload, tok identity.Token, sum tokenHash) error {
	w.mu.Lock()
	if e.acceptedLocked(sum) {
		// A shared call that had just ended accepted it meanwhile.
		w.mu.Unlock()
		return nil
	}
	if err := e.rejectedLocked(sum, w.o.Clock.Now()); err != nil {
		w.mu.Unlock()
		return err
	}
	w.mu.Unlock()

	// A provider of its own, whose first call carries this token: its
	// credentials replace the entry's if STS accepts the token.
	cand := &atomic.Pointer[identity.Token]{}
	cand.Store(&tok)
	web, err := w.newWeb(e, cand)
	if err == nil {
		_, err = web.Retrieve(ctx)
	}
	cand.Store(nil) // later calls carry the entry's newest accepted token
	if err != nil {
		c := refresh.Classify(err)
		if c.Class != refresh.Permanent {
			c = &refresh.Classified{Class: refresh.Transient, Code: c.Code, Err: c.Err,
				Reason: "cannot verify the service account token with STS: " + c.Reason}
		}
		now := w.o.Clock.Now()
		w.mu.Lock()
		retry := e.rejectLocked(sum, c, now, w.rand)
		e.verifyErr = c
		w.mu.Unlock()
		w.o.Log.Warn("service account token not accepted by STS; nothing cached served for it",
			zap.String("role_arn", e.key.role), zap.String("sub", e.key.subject), zap.String("iss", e.key.issuer),
			zap.String("class", c.Class.String()), zap.String("code", c.Code), zap.String("reason", c.Reason),
			zap.String("error", c.Error()), zap.Time("next_retry", retry))
		return c
	}

	w.mu.Lock()
	e.acceptLocked(sum)
	e.offerLocked(tok)
	e.web.Store(web)
	e.stsErr, e.stsFails, e.stsRetry = nil, 0, time.Time{}
	e.verifyErr = nil
	w.mu.Unlock()
	w.o.Log.Debug("service account token accepted by STS", zap.String("role_arn", e.key.role),
		zap.String("sub", e.key.subject), zap.String("iss", e.key.issuer))
	return nil
}

// acceptedLocked reports whether STS has accepted the token whose hash is
// sum for e, marking it the most recently used.
func (e *workload) acceptedLocked(sum tokenHash) bool {
	for i, h := range e.accepted {
		if h == sum {
			copy(e.accepted[i:], e.accepted[i+1:])
			e.accepted[len(e.accepted)-1] = sum
			return true
		}
	}
	return false
}

// acceptLocked remembers sum as accepted, forgetting the least recently used
// hash beyond maxTokenHashes, and forgets any rejection of it.
func (e *workload) acceptLocked(sum tokenHash) {
	if !e.acceptedLocked(sum) {
		if len(e.accepted) >= maxTokenHashes {
			e.accepted = slices.Delete(e.accepted, 0, len(e.accepted)-maxTokenHashes+1)
		}
		e.accepted = append(e.accepted, sum)
	}
	e.rejected = slices.DeleteFunc(e.rejected, func(r *tokenRejection) bool { return r.hash == sum })
}

// rejectedLocked returns STS's last refusal of the token whose hash is sum
// while its backoff lasts, else nil.
func (e *workload) rejectedLocked(sum tokenHash, now time.Time) *refresh.Classified {
	for _, r := range e.rejected {
		if r.hash == sum && now.Before(r.retryAt) {
			return r.err
		}
	}
	return nil
}

// rejectLocked records c as the answer to the token whose hash is sum and
// returns when it may be tried again.
func (e *workload) rejectLocked(sum tokenHash, c *refresh.Classified, now time.Time, rand refresh.Rand) time.Time {
	i := slices.IndexFunc(e.rejected, func(r *tokenRejection) bool { return r.hash == sum })
	var r *tokenRejection
	if i >= 0 {
		r = e.rejected[i]
		e.rejected = slices.Delete(e.rejected, i, i+1)
	} else {
		r = &tokenRejection{hash: sum}
		if len(e.rejected) >= maxTokenHashes {
			e.rejected = slices.Delete(e.rejected, 0, len(e.rejected)-maxTokenHashes+1)
		}
	}
	r.err, r.retryAt = c, now.Add(refresh.DefaultBackoff(c.Class).Delay(r.failures, rand))
	r.failures++
	e.rejected = append(e.rejected, r)
	return r.retryAt
}

// offerLocked keeps tok if it is the newest token seen for the entry (the one
// that expires last), for the next STS call. Only accepted tokens are offered.
func (e *workload) offerLocked(tok identity.Token) {
	cur := e.tok.Load()
	if cur == nil || tok.Claims.ExpiresAt.After(cur.Claims.ExpiresAt) ||
		tok.Claims.ExpiresAt.Equal(cur.Claims.ExpiresAt) && !tok.Claims.IssuedAt.Before(cur.Claims.IssuedAt) {
		e.tok.Store(&tok)
	}
}

// entryLocked returns the entry for key, creating it (and evicting the least
// recently used entry if the cache is full).
func (w *Workloads) entryLocked(key workloadKey, now time.Time) (*workload, error) {
	if e := w.entries[key]; e != nil {
		return e, nil
	}
	for len(w.entries) >= w.o.MaxEntries {
		var oldest *workload
		for _, e := range w.entries {
			if oldest == nil || e.lastUsed.Before(oldest.lastUsed) {
				oldest = e
			}
		}
		delete(w.entries, oldest.key)
		w.o.Log.Info("workload credential cache full: dropping the least recently used entry",
			zap.String("role_arn", oldest.key.role), zap.String("sub", oldest.key.subject), zap.Int("max_entries", w.o.MaxEntries))
	}
	e := &workload{key: key, session: workloadSession(key.subject), lastUsed: now,
		regs: map[ecrhost.Service]*workloadReg{}, hosts: map[string]ecrhost.Service{}}
	// Replaced by the first verification; never called before (fetch runs
	// only for accepted tokens).
	web, err := w.newWeb(e, nil)
	if err != nil {
		return nil, &refresh.Classified{Class: refresh.Permanent, Reason: "cannot assume role " + key.role, Err: err}
	}
	e.web.Store(web)
	e.newECR = w.o.NewECR(entryCreds{e})
	w.entries[key] = e
	return e, nil
}

// newWeb returns a role credentials provider for e. Its STS calls carry the
// token in cand while set, else e's newest accepted token.
func (w *Workloads) newWeb(e *workload, cand *atomic.Pointer[identity.Token]) (*identity.WebIdentity, error) {
	return identity.NewWebIdentity(identity.Options{
		STS:         w.o.STS,
		RoleARN:     e.key.role,
		SessionName: e.session,
		TokenSource: func() (identity.Token, error) {
			var t *identity.Token
			if cand != nil {
				t = cand.Load()
			}
			if t == nil {
				t = e.tok.Load()
			}
			if t == nil {
				return identity.Token{}, &identity.TokenError{Kind: identity.ErrTokenMissing,
					Detail: "no service account token accepted by STS yet"}
			}
			// Re-checked at the call: an expired token is never sent.
			return identity.ParseToken(t.Raw(), w.o.Clock.Now())
		},
		Audience:    w.o.Audience,
		CallTimeout: w.o.CallTimeout,
		Clock:       w.o.Clock,
		Rand:        w.rand,
		Log:         w.o.Log,
	})
}

// entryCreds is the credentials provider of an entry's ECR clients: the
// entry's current role credentials.
type entryCreds struct{ e *workload }

func (c entryCreds) Retrieve(ctx context.Context) (aws.Credentials, error) {
	return c.e.web.Load().Retrieve(ctx)
}

// sweepLocked drops the entries idle for Idle, at most once a minute unless
// forced.
func (w *Workloads) sweepLocked(now time.Time, force bool) {
	if !force && now.Sub(w.lastSweep) < sweepEvery && !w.lastSweep.IsZero() {
		return
	}
	w.lastSweep = now
	for key, e := range w.entries {
		if !now.Before(e.lastUsed.Add(w.o.Idle)) {
			delete(w.entries, key)
			w.o.Log.Debug("dropping idle workload credentials", zap.String("role_arn", key.role), zap.String("sub", key.subject))
		}
	}
}

// Len is the number of cached entries.
func (w *Workloads) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.entries)
}

// Snapshot describes every cached entry (after dropping idle ones), sorted by
// role and subject. It holds no secret.
func (w *Workloads) Snapshot() []WorkloadEntry {
	now := w.o.Clock.Now()
	w.mu.Lock()
	w.sweepLocked(now, true)
	entries := make([]*workload, 0, len(w.entries))
	for _, e := range w.entries {
		entries = append(entries, e)
	}
	out := make([]WorkloadEntry, 0, len(entries))
	for _, e := range entries {
		we := WorkloadEntry{RoleARN: e.key.role, Issuer: e.key.issuer, Subject: e.key.subject,
			SessionName: e.session, LastUsed: e.lastUsed, ExpiresAt: map[string]time.Time{}}
		for host, svc := range e.hosts {
			we.Registries = append(we.Registries, host)
			if r := e.regs[svc]; r != nil && r.cred != nil {
				we.ExpiresAt[host] = r.cred.ExpiresAt
			}
		}
		slices.Sort(we.Registries)
		switch {
		case e.stsErr != nil:
			we.LastError = e.stsErr.Error()
		case e.verifyErr != nil:
			we.LastError = e.verifyErr.Error()
		default:
			svcs := make([]ecrhost.Service, 0, len(e.regs))
			for svc, r := range e.regs {
				if r.lastErr != nil {
					svcs = append(svcs, svc)
				}
			}
			slices.SortFunc(svcs, func(x, y ecrhost.Service) int { return strings.Compare(x.String(), y.String()) })
			if len(svcs) > 0 {
				we.LastError = e.regs[svcs[0]].lastErr.Error()
			}
		}
		out = append(out, we)
	}
	w.mu.Unlock()
	// Status takes the provider's own lock: outside ours.
	for i, e := range entries {
		out[i].CredentialsExpireAt = e.web.Load().Status().CredentialsExpireAt
	}
	slices.SortFunc(out, func(x, y WorkloadEntry) int {
		if c := strings.Compare(x.RoleARN, y.RoleARN); c != 0 {
			return c
		}
		return strings.Compare(x.Subject, y.Subject)
	})
	return out
}

// workloadSession is the role session name for a token subject:
// "ecr-node-auth-NAMESPACE-NAME" for system:serviceaccount:NAMESPACE:NAME,
// sanitised and truncated as identity.SessionName does.
func workloadSession(sub string) string {
	if rest, ok := strings.CutPrefix(sub, "system:serviceaccount:"); ok {
		if ns, name, ok := strings.Cut(rest, ":"); ok && ns != "" && name != "" {
			return identity.SessionName(ns + "-" + name)
		}
	}
	return identity.SessionName(sub)
}

// checkRoleARN accepts an IAM role ARN in any partition.
func checkRoleARN(arn string) error {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] != "iam" || parts[4] == "" ||
		!strings.HasPrefix(parts[5], "role/") || len(parts[5]) == len("role/") {
		return &refresh.Classified{Class: refresh.Permanent, Reason: "not an IAM role ARN",
			Err: fmt.Errorf("%q: want arn:PARTITION:iam::ACCOUNT:role/NAME", arn)}
	}
	return nil
}

// errTokenNotSent wraps a token error inside a Classified whose Reason
// already holds its text.
type errTokenNotSent struct{ err error }

func (e errTokenNotSent) Error() string { return "service account token not sent to STS" }
func (e errTokenNotSent) Unwrap() error { return e.err }
