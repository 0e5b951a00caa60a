package fakeaws

import (
	"strings"
	"time"
)

// Quota is a request quota as AWS documents them: a token bucket per account and region
// that refills at Rate requests per second up to Burst.
type Quota struct {
	Rate  float64 // requests per second
	Burst int     // bucket size
}

// ECRGetAuthorizationTokenQuota is ECR's documented GetAuthorizationToken quota: 20 requests
// per second with a burst of 200, per account and region.
var ECRGetAuthorizationTokenQuota = Quota{Rate: 20, Burst: 200}

type quotaKey struct{ account, region string }

type bucket struct {
	tokens float64
	last   time.Time
}

type quotaState struct {
	q       Quota
	err     APIError
	buckets map[quotaKey]*bucket
}

// take spends one request of account's bucket in region at now, or returns the throttling
// error when the bucket is empty. Throttled requests cost nothing, as with AWS.
func (s *quotaState) take(account, region string, now time.Time) *APIError {
	k := quotaKey{account, region}
	b := s.buckets[k]
	if b == nil {
		b = &bucket{tokens: float64(s.q.Burst), last: now}
		s.buckets[k] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(s.q.Burst), b.tokens+el.Seconds()*s.q.Rate)
		b.last = now
	}
	if b.tokens < 1 {
		e := s.err
		return &e
	}
	b.tokens--
	return nil
}

// SetQuota makes signed calls of action subject to q, a token bucket per caller account
// (the role's account for STS-issued credentials, Options.AccountID for static keys) and
// SigV4 region, on the fake's clock. Calls beyond it are answered with the service's
// throttling error (ECR: 400 ThrottlingException "Rate exceeded"; STS: 400 Throttling) and
// counted in Calls but not Successes. A zero Quota removes the limit. Injected faults and
// interceptors come first and do not spend the quota.
func (f *Fake) SetQuota(a Action, q Quota) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state(a)
	if q.Rate <= 0 && q.Burst <= 0 {
		st.quota = nil
		return
	}
	e := ErrECRThrottling
	if strings.HasPrefix(string(a), string(ServiceSTS)+":") {
		e = ErrSTSThrottling
	}
	st.quota = &quotaState{q: q, err: e, buckets: map[quotaKey]*bucket{}}
}

func (c *Credentials) accountOr(def string) string {
	if c.Account != "" {
		return c.Account
	}
	return def
}
