package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"k8s.io/utils/clock"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// Mode values of Status.Mode.
const (
	ModeWebIdentity  = "web-identity"
	ModeDefaultChain = "default-chain"
)

// DefaultAudience is the audience STS expects in a web identity token.
const DefaultAudience = "sts.amazonaws.com"

// DefaultDuration is the session length requested from STS: one hour.
//
// Longer is useless here. AWS caps any role session reached by role chaining
// at 1 h (asking for more fails with ValidationError, case 8), and the
// kubelet rotates the projected token well within its own lifetime (80 % of
// at most a few hours), so a fresh exchange is always possible; credentials
// are refreshed at about half their life anyway (refresh.At). One hour also
// bounds how long leaked credentials stay valid.
const DefaultDuration = time.Hour

// DefaultCallTimeout bounds one shared STS call, whichever caller started it.
const DefaultCallTimeout = 30 * time.Second

// credentialSource is aws.Credentials.Source for credentials from WebIdentity.
const credentialSource = "ecr-node-auth/web-identity"

// STSAPI is the part of the STS client WebIdentity uses; *sts.Client
// satisfies it.
type STSAPI interface {
	AssumeRoleWithWebIdentity(ctx context.Context, params *sts.AssumeRoleWithWebIdentityInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error)
}

// Status is what the daemon reports about its AWS identity. It holds no secret.
type Status struct {
	Mode                string    `json:"mode"`                // ModeWebIdentity or ModeDefaultChain
	RoleARN             string    `json:"roleArn,omitempty"`   // the role assumed (web identity)
	TokenFile           string    `json:"tokenFile,omitempty"` // the token file (web identity)
	Audience            string    `json:"audience,omitempty"`  // the expected audience (web identity)
	Claims              Claims    `json:"claims,omitzero"`     // of the last token decoded (also an expired one)
	CredentialSource    string    `json:"credentialSource,omitempty"`
	CredentialsExpireAt time.Time `json:"credentialsExpireAt,omitzero"`
	NextRefresh         time.Time `json:"nextRefresh,omitzero"` // when cached credentials stop being reused
	LastRefresh         time.Time `json:"lastRefresh,omitzero"` // the last successful fetch
	LastError           string    `json:"lastError,omitempty"`  // the last failed refresh, cleared on success
	ErrorClass          string    `json:"errorClass,omitempty"` // refresh.Class of LastError
}

// Source is an identity the daemon can use and report on uniformly.
type Source interface {
	aws.CredentialsProvider
	Status() Status
}

// Options configure a WebIdentity provider.
type Options struct {
	STS         STSAPI
	RoleARN     string
	SessionName string // see SessionName; default "ecr-node-auth"
	TokenFile   string // the projected service-account token
	// TokenSource, if set, supplies the token instead of TokenFile (for a
	// token received in memory; see ParseToken). It is called for each STS
	// call and must return a token ParseToken or ReadToken validated, or a
	// *TokenError.
	TokenSource func() (Token, error)
	Audience    string        // expected aud, checked before calling STS; default DefaultAudience
	Duration    time.Duration // DurationSeconds asked of STS; default DefaultDuration (see there)
	CallTimeout time.Duration // bound of one STS call shared by concurrent callers; default DefaultCallTimeout
	Clock       clock.PassiveClock
	Rand        refresh.Rand
	Log         *zap.Logger
}

// WebIdentity is an aws.CredentialsProvider that exchanges the projected
// service-account token for role credentials with AssumeRoleWithWebIdentity.
//
// It reuses its credentials until refresh.At, then calls STS once for all
// concurrent callers. It never sends a token known to be empty, malformed or
// expired. When a refresh fails while the cached credentials have not yet
// expired, it returns them (the last good credentials carry the daemon
// through an STS or token outage) and records the error for Status; it then
// waits refresh.DefaultBackoff before calling STS again, unless the token file
// changes (TokenChanged).
type WebIdentity struct {
	o     Options
	group singleflight.Group

	mu          sync.Mutex
	creds       aws.Credentials
	have        bool
	fetched     time.Time
	refreshAt   time.Time
	claims      Claims
	lastErr     *refresh.Classified
	gen         int       // completed refreshes, successful or not
	failures    int       // consecutive failed refreshes
	retryAt     time.Time // no STS call before this while cached creds are served
	warnedAud   [sha256.Size]byte
	warnedAudOK bool
}

var _ Source = (*WebIdentity)(nil)

// NewWebIdentity checks o and returns the provider. Nothing is read or called
// until the first Retrieve.
func NewWebIdentity(o Options) (*WebIdentity, error) {
	if o.STS == nil {
		return nil, errors.New("identity: web identity needs an STS client")
	}
	if o.RoleARN == "" {
		return nil, errors.New("identity: web identity needs a role ARN (awsECR.roleArn)")
	}
	if o.TokenFile == "" && o.TokenSource == nil {
		return nil, errors.New("identity: web identity needs a token file (identity.tokenFile)")
	}
	if o.SessionName == "" {
		o.SessionName = sessionPrefix
	}
	if err := validSessionName(o.SessionName); err != nil {
		return nil, err
	}
	if o.Audience == "" {
		o.Audience = DefaultAudience
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Duration < 15*time.Minute || o.Duration > 12*time.Hour {
		return nil, fmt.Errorf("identity: session duration %s out of STS's range 15m..12h", o.Duration)
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
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
	return &WebIdentity{o: o}, nil
}

// Retrieve returns role credentials, from the cache until their refresh time.
// Errors are *refresh.Classified and never contain the token.
func (w *WebIdentity) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, ok, gen := w.cached(w.o.Clock.Now())
	if ok {
		return c, nil
	}
	ch := w.group.DoChan("refresh", func() (any, error) {
		// A caller that looked at the cache just before the previous shared
		// call ended starts a new one: give it that call's outcome instead.
		w.mu.Lock()
		if w.gen != gen {
			c, last := w.creds, w.lastErr
			valid := w.have && w.o.Clock.Now().Before(c.Expires)
			w.mu.Unlock()
			if last == nil || valid {
				return c, nil
			}
			return aws.Credentials{}, last
		}
		w.mu.Unlock()
		// Not tied to the first caller's cancellation: the call is shared.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.o.CallTimeout)
		defer cancel()
		return w.refresh(cctx)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return aws.Credentials{}, r.Err
		}
		return r.Val.(aws.Credentials), nil
	case <-ctx.Done():
		return aws.Credentials{}, ctx.Err()
	}
}

// cached returns the credentials to reuse without calling STS: before their
// refresh time, or, after a failed refresh, until the backoff has passed
// (while they have not expired). gen is the count of completed refreshes seen.
func (w *WebIdentity) cached(now time.Time) (c aws.Credentials, ok bool, gen int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.have && now.Before(w.refreshAt) {
		return w.creds, true, w.gen
	}
	if w.have && w.lastErr != nil && now.Before(w.retryAt) && now.Before(w.creds.Expires) {
		return w.creds, true, w.gen
	}
	return aws.Credentials{}, false, w.gen
}

// refresh reads the token, calls STS and updates the cache. On failure it
// returns the cached credentials if they have not expired.
func (w *WebIdentity) refresh(ctx context.Context) (aws.Credentials, error) {
	now := w.o.Clock.Now()
	tok, err := w.token(now)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) && !te.Claims.isZero() {
			w.setClaims(te.Claims)
		}
		return w.fail(now, tokenClassified(err))
	}
	w.setClaims(tok.Claims)
	w.checkAudience(tok)

	out, err := w.o.STS.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn:          aws.String(w.o.RoleARN),
		RoleSessionName:  aws.String(w.o.SessionName),
		WebIdentityToken: aws.String(tok.Raw()),
		DurationSeconds:  aws.Int32(int32(w.o.Duration / time.Second)),
	})
	if err != nil {
		return w.fail(w.o.Clock.Now(), w.enrich(err, tok))
	}
	if out == nil || out.Credentials == nil || out.Credentials.AccessKeyId == nil ||
		out.Credentials.SecretAccessKey == nil || out.Credentials.SessionToken == nil {
		return w.fail(w.o.Clock.Now(), &refresh.Classified{Class: refresh.Transient,
			Reason: "STS returned no credentials", Err: errors.New("empty AssumeRoleWithWebIdentity response")})
	}
	fetched := w.o.Clock.Now()
	expires := fetched.Add(w.o.Duration)
	if out.Credentials.Expiration != nil {
		expires = *out.Credentials.Expiration
	}
	creds := aws.Credentials{
		AccessKeyID:     *out.Credentials.AccessKeyId,
		SecretAccessKey: *out.Credentials.SecretAccessKey,
		SessionToken:    *out.Credentials.SessionToken,
		Source:          credentialSource,
		CanExpire:       true,
		Expires:         expires,
	}
	if out.AssumedRoleUser != nil && out.AssumedRoleUser.Arn != nil {
		creds.AccountID = accountFromARN(*out.AssumedRoleUser.Arn)
	}
	at := refresh.At(fetched, expires, w.o.Rand)

	w.mu.Lock()
	recovered := w.lastErr != nil
	w.creds, w.have, w.fetched, w.refreshAt = creds, true, fetched, at
	w.lastErr, w.failures, w.retryAt = nil, 0, time.Time{}
	w.gen++
	w.mu.Unlock()

	fields := []zap.Field{zap.String("role_arn", w.o.RoleARN), zap.Time("expires_at", expires),
		zap.Time("refresh_at", at), zap.String("sub", tok.Claims.Subject)}
	if recovered {
		w.o.Log.Info("web identity credentials refreshed after errors", fields...)
	} else {
		w.o.Log.Debug("web identity credentials refreshed", fields...)
	}
	return creds, nil
}

// fail records c and returns the cached credentials if still valid, else c.
func (w *WebIdentity) fail(now time.Time, c *refresh.Classified) (aws.Credentials, error) {
	w.mu.Lock()
	w.lastErr = c
	w.gen++
	delay := refresh.DefaultBackoff(c.Class).Delay(w.failures, w.o.Rand)
	w.failures++
	w.retryAt = now.Add(delay)
	valid := w.have && now.Before(w.creds.Expires)
	creds := w.creds
	w.mu.Unlock()

	fields := []zap.Field{zap.String("role_arn", w.o.RoleARN), zap.String("class", c.Class.String()),
		zap.String("code", c.Code), zap.String("reason", c.Reason), zap.Error(c)}
	if valid {
		w.o.Log.Warn("web identity refresh failed; serving the last good credentials until they expire",
			append(fields, zap.Time("expires_at", creds.Expires), zap.Time("retry_at", now.Add(delay)))...)
		return creds, nil
	}
	w.o.Log.Error("web identity refresh failed", fields...)
	return aws.Credentials{}, c
}

// TokenChanged tells the provider that the token file changed (the watcher
// saw a rotation). It reads the new token's claims at once, so status and the
// audience self-check describe the token the next STS call will carry, and,
// if the last refresh failed, lets the next Retrieve call STS without waiting
// for the backoff, so a fixed token recovers at once.
func (w *WebIdentity) TokenChanged() {
	if tok, err := w.token(w.o.Clock.Now()); err == nil {
		w.setClaims(tok.Claims)
		w.checkAudience(tok)
	}
	w.mu.Lock()
	w.retryAt = time.Time{}
	w.mu.Unlock()
}

// token reads the token from TokenSource, else TokenFile.
func (w *WebIdentity) token(now time.Time) (Token, error) {
	if w.o.TokenSource != nil {
		return w.o.TokenSource()
	}
	return ReadToken(w.o.TokenFile, now)
}

// Status reports the provider's state; it holds no secret.
func (w *WebIdentity) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Status{Mode: ModeWebIdentity, RoleARN: w.o.RoleARN, TokenFile: w.o.TokenFile,
		Audience: w.o.Audience, Claims: w.claims}
	if w.have {
		s.CredentialSource = w.creds.Source
		s.CredentialsExpireAt = w.creds.Expires
		s.NextRefresh = w.refreshAt
		s.LastRefresh = w.fetched
	}
	if w.lastErr != nil {
		s.LastError = w.lastErr.Error()
		s.ErrorClass = w.lastErr.Class.String()
	}
	return s
}

func (w *WebIdentity) setClaims(c Claims) {
	w.mu.Lock()
	w.claims = c
	w.mu.Unlock()
}

// checkAudience warns, once per distinct token, when the token's aud does not
// contain the configured audience. STS stays the authority: it is still called.
func (w *WebIdentity) checkAudience(tok Token) {
	if tok.Claims.HasAudience(w.o.Audience) {
		return
	}
	sum := sha256.Sum256([]byte(tok.raw))
	w.mu.Lock()
	seen := w.warnedAudOK && w.warnedAud == sum
	w.warnedAud, w.warnedAudOK = sum, true
	w.mu.Unlock()
	if seen {
		return
	}
	w.o.Log.Warn("web identity token audience does not contain the configured audience; STS will likely reject it",
		zap.Strings("token_aud", tok.Claims.Audience), zap.String("expected_audience", w.o.Audience),
		zap.String("iss", tok.Claims.Issuer), zap.String("sub", tok.Claims.Subject),
		zap.String("token_file", tok.Path))
}

// tokenClassified turns a ReadToken error into a *refresh.Classified: an
// empty or missing file is transient, an expired or malformed token is
// permanent (slow retries until the kubelet or the operator fixes it).
func tokenClassified(err error) *refresh.Classified {
	c := &refresh.Classified{Class: refresh.Permanent, Reason: err.Error(), Err: notSent{err}}
	var te *TokenError
	if errors.As(err, &te) && (te.Kind == ErrTokenEmpty || te.Kind == ErrTokenMissing) {
		// A write in progress, or a volume still mounting at boot: retry in seconds.
		c.Class = refresh.Transient
	}
	return c
}

// notSent wraps a token error inside a Classified whose Reason already holds
// its text, so Error() does not repeat it; errors.Is/As still reach it.
type notSent struct{ err error }

func (e notSent) Error() string { return "token not sent to STS" }
func (e notSent) Unwrap() error { return e.err }

// enrich classifies an STS error with refresh.Classify and adds the decoded
// claims an operator needs, keeping Classify's Class. The token is redacted
// from the wrapped error should STS ever echo it.
func (w *WebIdentity) enrich(err error, tok Token) *refresh.Classified {
	base := refresh.Classify(err)
	c := &refresh.Classified{Class: base.Class, Code: base.Code, Reason: base.Reason,
		Err: redacted{err: err, secret: tok.raw}}
	var api smithy.APIError
	if !errors.As(err, &api) {
		return c
	}
	msg := strings.ToLower(api.ErrorMessage())
	cl := tok.Claims
	switch strings.TrimSuffix(api.ErrorCode(), "Exception") {
	case "AccessDenied":
		c.Reason = fmt.Sprintf("trust policy rejected sub=%s (role %s must trust iss=%s with aud=%s for this sub)",
			orNone(cl.Subject), w.o.RoleARN, orNone(cl.Issuer), orNone(strings.Join(cl.Audience, ",")))
	case "InvalidIdentityToken":
		switch {
		case strings.Contains(msg, "audience"):
			c.Reason = fmt.Sprintf("token audience not accepted: token aud=%s, configured audience=%s (iss=%s sub=%s); fix the projected token's audience or the IAM OIDC provider's client IDs",
				orNone(strings.Join(cl.Audience, ",")), w.o.Audience, orNone(cl.Issuer), orNone(cl.Subject))
		case strings.Contains(msg, "thumbprint"):
			c.Reason = fmt.Sprintf("thumbprint mismatch (iss=%s): update the IAM OIDC provider's thumbprint", orNone(cl.Issuer))
		case strings.Contains(msg, "verification key"):
			c.Reason = fmt.Sprintf("%s (iss=%s)", base.Reason, orNone(cl.Issuer))
		case base.Class == refresh.Permanent:
			c.Reason = fmt.Sprintf("OIDC provider missing or untrusted (iss=%s): register it as an IAM OIDC identity provider in the role's account", orNone(cl.Issuer))
		}
	case "IDPCommunicationError":
		c.Reason = fmt.Sprintf("%s (iss=%s)", base.Reason, orNone(cl.Issuer))
	case "ExpiredToken":
		c.Reason = fmt.Sprintf("STS says the web identity token expired (exp=%s, %s); waiting for kubelet rotation; check the node's clock",
			formatTime(cl.ExpiresAt), cl)
	}
	return c
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "<none>"
	}
	return t.UTC().Format(time.RFC3339)
}

// redacted hides secret in err's text; errors.As/Is still reach err.
type redacted struct {
	err    error
	secret string
}

func (r redacted) Error() string {
	s := r.err.Error()
	if r.secret != "" {
		s = strings.ReplaceAll(s, r.secret, "<redacted>")
	}
	return s
}

func (r redacted) Unwrap() error { return r.err }

func (c Claims) isZero() bool {
	return c.Issuer == "" && len(c.Audience) == 0 && c.Subject == "" && c.ExpiresAt.IsZero() && c.IssuedAt.IsZero()
}

func accountFromARN(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) == 6 {
		return parts[4]
	}
	return ""
}

// sessionPrefix starts every role session name the daemon uses.
const sessionPrefix = "ecr-node-auth"

// maxSessionName is STS's limit on RoleSessionName.
const maxSessionName = 64

// SessionName returns the role session name for a node: "ecr-node-auth-"
// plus the node name with every character outside STS's [\w+=,.@-] replaced
// by '-', truncated to 64 characters. An empty node name gives
// "ecr-node-auth". The daemon passes NODE_NAME, else os.Hostname.
func SessionName(nodeName string) string {
	if nodeName == "" {
		return sessionPrefix
	}
	var b strings.Builder
	b.WriteString(sessionPrefix + "-")
	for _, r := range nodeName {
		if sessionChar(r) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
		if b.Len() >= maxSessionName {
			break
		}
	}
	return b.String()[:min(b.Len(), maxSessionName)]
}

func sessionChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_+=,.@-", r)
}

func validSessionName(s string) error {
	if len(s) < 2 || len(s) > maxSessionName {
		return fmt.Errorf("identity: role session name %q must be 2 to %d characters", s, maxSessionName)
	}
	for _, r := range s {
		if !sessionChar(r) {
			return fmt.Errorf("identity: role session name %q has %q, outside [\\w+=,.@-] (use SessionName)", s, r)
		}
	}
	return nil
}
