package refresh

import "time"

// DefaultRewarnEvery is how often a failure that keeps repeating unchanged
// is logged loudly again (in between, repeats are logged at debug).
const DefaultRewarnEvery = time.Hour

// Repeats de-duplicates the log lines of a failure that keeps recurring: the
// first failure with a given key is loud (warn or error), identical ones after
// it are quiet (debug) with a count, until the key changes, Reset is called
// (a recovery), or rewarn has passed since the last loud line. Callers
// serialise access (it has no lock of its own).
type Repeats struct {
	key      string
	n        int
	lastLoud time.Time
}

// Failure records a failure identified by key at now and reports whether to
// log it loudly and how many identical failures came before it in a row.
// rewarn <= 0 means an unchanged failure is never loud again.
func (r *Repeats) Failure(key string, now time.Time, rewarn time.Duration) (loud bool, repeats int) {
	loud = true
	if key == r.key {
		r.n++
		if rewarn <= 0 || now.Sub(r.lastLoud) < rewarn {
			loud = false
		}
	} else {
		r.key, r.n = key, 0
	}
	if loud {
		r.lastLoud = now
	}
	return loud, r.n
}

// Reset forgets the failure (after a success), so the next one is loud.
func (r *Repeats) Reset() { *r = Repeats{} }
