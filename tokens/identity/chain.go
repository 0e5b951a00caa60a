package identity

import (
	"context"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"k8s.io/utils/clock"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// DefaultChain wraps any credentials provider (normally the SDK's default
// chain, already cached by config.LoadDefaultConfig) so the daemon reports it
// like WebIdentity. Errors are returned as *refresh.Classified.
type DefaultChain struct {
	p     aws.CredentialsProvider
	clock clock.PassiveClock

	mu          sync.Mutex
	have        bool
	key         string // AccessKeyID of the credentials last seen, to spot a refresh
	expires     time.Time
	source      string
	lastRefresh time.Time
	lastErr     *refresh.Classified
}

var _ Source = (*DefaultChain)(nil)

// NewDefaultChain wraps p; clk (nil: the real clock) dates refreshes.
func NewDefaultChain(p aws.CredentialsProvider, clk clock.PassiveClock) *DefaultChain {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &DefaultChain{p: p, clock: clk}
}

// Retrieve calls the wrapped provider and records the outcome for Status.
func (d *DefaultChain) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := d.p.Retrieve(ctx)
	now := d.clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.lastErr = refresh.Classify(err)
		return aws.Credentials{}, d.lastErr
	}
	if !d.have || creds.AccessKeyID != d.key || !creds.Expires.Equal(d.expires) {
		d.lastRefresh = now
	}
	d.have, d.key, d.source, d.lastErr = true, creds.AccessKeyID, creds.Source, nil
	d.expires = time.Time{}
	if creds.CanExpire {
		d.expires = creds.Expires
	}
	return creds, nil
}

// Status reports the wrapped chain's state; it holds no secret.
func (d *DefaultChain) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Status{Mode: ModeDefaultChain, CredentialSource: d.source,
		CredentialsExpireAt: d.expires, LastRefresh: d.lastRefresh}
	if d.lastErr != nil {
		s.LastError = d.lastErr.Error()
		s.ErrorClass = d.lastErr.Class.String()
	}
	return s
}
