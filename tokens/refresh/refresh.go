// Package refresh holds the one timing rule for every token the daemon holds
// (AWS credentials and ECR tokens alike), the retry backoff, and the
// classification of AWS errors into transient, throttled and permanent.
//
// It has no state: callers pass the clock's "now" and a random source, so the
// rules run the same on a fake clock and in the fleet simulation.
package refresh

import (
	"math/rand/v2"
	"time"
)

// Rand is the jitter source: a float in [0, 1). *rand.Rand satisfies it.
type Rand interface{ Float64() float64 }

// NewRand returns a jitter source seeded from the runtime's entropy.
func NewRand() Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

// maxMargin bounds how close to expiry a refresh may ever be scheduled.
const maxMargin = time.Hour

// Margin is how long before expiry a token must have been replaced:
// min(1h, lifetime/4). Clients that cache a token (the kubelet) should stop
// using it this long before it expires.
func Margin(lifetime time.Duration) time.Duration {
	if lifetime <= 0 {
		return 0
	}
	return min(maxMargin, lifetime/4)
}

// At returns when a token fetched at fetched and expiring at expires should be
// refreshed: after half its lifetime plus a jitter of up to a tenth of it, and
// never later than Margin before expiry. A 12 h ECR token is thus refreshed
// between 6 h and 7.2 h; a 15 s test token between 7.5 s and 9 s.
func At(fetched, expires time.Time, r Rand) time.Time {
	lifetime := expires.Sub(fetched)
	if lifetime <= 0 {
		return fetched
	}
	at := fetched.Add(lifetime/2 + time.Duration(r.Float64()*float64(lifetime/10)))
	if latest := expires.Add(-Margin(lifetime)); at.After(latest) {
		at = latest
	}
	return at
}

// Class says how an error should be retried.
type Class int

const (
	// Transient errors (5xx, timeouts, refused connections, an IdP that STS
	// could not reach) are retried within seconds.
	Transient Class = iota
	// Throttled errors are retried like transient ones; they are counted apart.
	Throttled
	// Permanent errors (access denied, an untrusted OIDC provider, a bad
	// audience) need an operator; they are retried every few minutes so that a
	// fix is picked up without a restart, but never in a tight loop.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Throttled:
		return "throttled"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// Backoff is a full-jitter exponential backoff above a floor: the n-th retry
// (n from 0) waits a uniform time in [base, min(cap, base*2^(n+1))]. The first
// retry is jittered too: agents throttled together must not retry together.
type Backoff struct {
	Base, Cap time.Duration
}

// DefaultBackoff returns the backoff for an error class: seconds to two
// minutes for transient and throttled errors, one to ten minutes for permanent
// ones.
func DefaultBackoff(c Class) Backoff {
	if c == Permanent {
		return Backoff{Base: time.Minute, Cap: 10 * time.Minute}
	}
	return Backoff{Base: time.Second, Cap: 2 * time.Minute}
}

// Delay returns the wait before retry number attempt (0 for the first retry).
func (b Backoff) Delay(attempt int, r Rand) time.Duration {
	ceiling := b.Base
	for i := 0; i <= attempt && ceiling < b.Cap; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.Cap)
	return b.Base + time.Duration(r.Float64()*float64(ceiling-b.Base))
}
