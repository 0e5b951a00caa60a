// Package fakeaws is a fake AWS for tests: STS (AssumeRoleWithWebIdentity, query protocol),
// ECR and ECR Public (GetAuthorizationToken, JSON 1.1 protocol with SigV4 verification), an
// OIDC token minter, and an HTTPS OCI registry gated by the ECR tokens it issued (see
// NewRegistry). Clients are the real AWS SDK over HTTP: point it at STSURL(), ECRURL() and
// ECRPublicURL() with BaseEndpoint or AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL_ECR /
// AWS_ENDPOINT_URL_ECR_PUBLIC (see Env).
//
// Every operation is an entry in a per-action handler table (Handle), so new operations are
// added by registering an ActionSpec. All knobs (injected errors, drops, hangs, latency,
// lifetimes) and counters are safe for concurrent use.
package fakeaws

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Defaults for Options.
const (
	DefaultIssuer           = "https://oidc.eks.us-east-1.amazonaws.com/id/FAKEAWS0123456789"
	DefaultAudience         = "sts.amazonaws.com"
	DefaultAccountID        = "111122223333"
	DefaultRoleARN          = "arn:aws:iam::111122223333:role/ecr-node-auth"
	DefaultECRTokenLifetime = 12 * time.Hour
	DefaultSTSLifetime      = time.Hour
)

// Options configures a Fake. Zero values take the defaults above.
type Options struct {
	// Clock decides token and credential expiry. Default: the real clock. Latency and hangs
	// always use real time.
	Clock clock.PassiveClock
	// SigV4Clock is the clock X-Amz-Date is checked against (more than 5 min off:
	// InvalidSignatureException "Signature expired"). Default: Clock. The SDK signs with
	// real time, so tests that step a fake Clock by more than minutes set this to
	// clock.RealClock{}.
	SigV4Clock clock.PassiveClock
	// ECRTokenLifetime is the lifetime of ECR (and ECR Public) tokens. Default 12h.
	ECRTokenLifetime time.Duration
	// STSCredentialLifetime is the lifetime of STS credentials. A smaller DurationSeconds in
	// the request wins. Default 1h.
	STSCredentialLifetime time.Duration
	// Issuer is the OIDC issuer STS trusts and MintToken uses. Default DefaultIssuer.
	Issuer string
	// Audience is the audience STS accepts. Default "sts.amazonaws.com".
	Audience string
	// AccountID is the ECR registry account in proxyEndpoint. Default 111122223333.
	AccountID string
	// AllowedRoleARNs, if set, are the only roles STS lets web identities assume (others get
	// AccessDenied). Default: any well-formed arn:aws:iam::<12 digits>:role/... .
	AllowedRoleARNs []string
	// InMemory starts no listener: the services are reached only through Transport (for
	// simulations that run many clients on a fake clock, e.g. under testing/synctest).
	InMemory bool
}

// Service names a faked AWS service; each has its own listener.
type Service string

// Faked services.
const (
	ServiceSTS       Service = "sts"
	ServiceECR       Service = "ecr"
	ServiceECRPublic Service = "ecr-public"
)

// Action is "<service>:<operation>", e.g. "sts:AssumeRoleWithWebIdentity".
type Action string

// Built-in actions.
const (
	ActionAssumeRoleWithWebIdentity   Action = "sts:AssumeRoleWithWebIdentity"
	ActionAssumeRole                  Action = "sts:AssumeRole"
	ActionGetCallerIdentity           Action = "sts:GetCallerIdentity"
	ActionGetAuthorizationToken       Action = "ecr:GetAuthorizationToken"
	ActionPublicGetAuthorizationToken Action = "ecr-public:GetAuthorizationToken"
)

const (
	stsXMLNS                  = "https://sts.amazonaws.com/doc/2011-06-15/"
	stsVersion                = "2011-06-15"
	jsonContentType           = "application/x-amz-json-1.1"
	maxBody                   = 1 << 20
	maxSkew                   = 5 * time.Minute
	amzDateFormat             = "20060102T150405Z"
	sessionNamePattern        = `^[\w+=,.@-]{2,64}$`
	roleARNPattern            = `^arn:aws[\w-]*:iam::(\d{12}):role/((?:[\w+=,.@-]+/)*)([\w+=,.@-]{1,64})$`
	durationValidationFmt     = "1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value %s"
	unrecognizedClientMessage = "The security token included in the request is invalid."
)

var (
	sessionNameRE = regexp.MustCompile(sessionNamePattern)
	roleARNRE     = regexp.MustCompile(roleARNPattern)
)

type protocol int

const (
	protoQuery protocol = iota // STS: form-encoded request, XML response
	protoJSON                  // ECR: JSON 1.1, X-Amz-Target
)

type serviceInfo struct {
	proto        protocol
	targetPrefix string // JSON: X-Amz-Target prefix
	signingName  string // SigV4 service in the credential scope
}

var services = map[Service]serviceInfo{
	ServiceSTS:       {proto: protoQuery, signingName: "sts"},
	ServiceECR:       {proto: protoJSON, targetPrefix: "AmazonEC2ContainerRegistry_V20150921", signingName: "ecr"},
	ServiceECRPublic: {proto: protoJSON, targetPrefix: "SpencerFrontendService", signingName: "ecr-public"},
}

// Call is one request as a handler sees it.
type Call struct {
	Fake      *Fake
	Action    Action
	Request   *http.Request
	Body      []byte
	Params    url.Values   // query protocol: the form parameters
	Creds     *Credentials // SigV4 identity (signed actions only)
	Region    string       // SigV4 credential-scope region (signed actions only)
	RequestID string
}

// Handler serves one action. For query-protocol services the result must XML-marshal to the
// <OperationResult> element (set XMLName); for JSON services it is marshalled as the body.
type Handler func(c *Call) (any, *APIError)

// ActionSpec is one entry of the handler table.
type ActionSpec struct {
	Action Action
	// Signed requires a valid SigV4 signature from credentials the fake knows.
	Signed  bool
	Handler Handler
}

// Credentials are AWS credentials the fake issued (STS) or had registered (static).
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string    // empty for static long-term keys
	Expires         time.Time // zero: never
	RoleARN         string    // STS-issued only
	PrincipalARN    string    // STS-issued only: the assumed-role ARN
	UserID          string    // STS-issued only: AROA...:session
	Account         string    // STS-issued only: the role's account
	Subject         string    // STS-issued only: sub of the web identity token
	SessionName     string    // STS-issued only: RoleSessionName
}

// ECRToken is an ECR authorization token the fake issued.
type ECRToken struct {
	Password  string
	Expires   time.Time
	Region    string
	AccountID string
	Public    bool
}

// CallRecord is one request the fake received.
type CallRecord struct {
	Action      Action
	Time        time.Time // fake clock
	Region      string    // SigV4 scope region, signed actions only
	AccessKeyID string
	Caller      string // Call.Caller()
	Status      int    // HTTP status sent; 0 for dropped/hung
	ErrorCode   string // empty on success
}

type faultKind int

const (
	faultError faultKind = iota
	faultDrop
	faultHang
)

type fault struct {
	kind faultKind
	err  APIError
}

type actionState struct {
	queue       []fault
	always      *fault
	interceptor Interceptor
	latency     time.Duration
	quota       *quotaState
	calls       int
	successes   int
}

// Fake is a running fake AWS.
type Fake struct {
	opts       Options
	clock      clock.PassiveClock
	key        *oidcKey
	foreignKey *oidcKey
	closing    chan struct{}
	closeOnce  sync.Once
	servers    map[Service]*http.Server
	urls       map[Service]string

	mu          sync.Mutex
	handlers    map[Action]ActionSpec
	actions     map[Action]*actionState
	ecrLifetime time.Duration
	stsLifetime time.Duration
	audience    string
	creds       map[string]*Credentials // by access key id
	ecrTokens   map[string]*ECRToken    // by password
	secrets     []Secret
	secretSet   map[string]bool
	tokensSeen  []string
	log         []CallRecord
}

// New starts a fake on 127.0.0.1 random ports (one per service, plain HTTP).
func New(opts Options) (*Fake, error) {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.SigV4Clock == nil {
		opts.SigV4Clock = opts.Clock
	}
	if opts.ECRTokenLifetime <= 0 {
		opts.ECRTokenLifetime = DefaultECRTokenLifetime
	}
	if opts.STSCredentialLifetime <= 0 {
		opts.STSCredentialLifetime = DefaultSTSLifetime
	}
	if opts.Issuer == "" {
		opts.Issuer = DefaultIssuer
	}
	if opts.Audience == "" {
		opts.Audience = DefaultAudience
	}
	if opts.AccountID == "" {
		opts.AccountID = DefaultAccountID
	}
	key, err := newOIDCKey()
	if err != nil {
		return nil, err
	}
	foreign, err := newOIDCKey()
	if err != nil {
		return nil, err
	}
	foreign.kid = key.kid // same kid, different key: a signature mismatch
	f := &Fake{
		opts:        opts,
		clock:       opts.Clock,
		key:         key,
		foreignKey:  foreign,
		closing:     make(chan struct{}),
		servers:     map[Service]*http.Server{},
		urls:        map[Service]string{},
		handlers:    map[Action]ActionSpec{},
		actions:     map[Action]*actionState{},
		ecrLifetime: opts.ECRTokenLifetime,
		stsLifetime: opts.STSCredentialLifetime,
		audience:    opts.Audience,
		creds:       map[string]*Credentials{},
		ecrTokens:   map[string]*ECRToken{},
		secretSet:   map[string]bool{},
	}
	f.Handle(ActionSpec{Action: ActionAssumeRoleWithWebIdentity, Handler: handleAssumeRoleWithWebIdentity})
	f.Handle(ActionSpec{Action: ActionAssumeRole, Signed: true, Handler: handleAssumeRole})
	f.Handle(ActionSpec{Action: ActionGetCallerIdentity, Signed: true, Handler: handleGetCallerIdentity})
	f.Handle(ActionSpec{Action: ActionGetAuthorizationToken, Signed: true, Handler: handleECRGetAuthorizationToken})
	f.Handle(ActionSpec{Action: ActionPublicGetAuthorizationToken, Signed: true, Handler: handleECRPublicGetAuthorizationToken})
	for _, svc := range []Service{ServiceSTS, ServiceECR, ServiceECRPublic} {
		if opts.InMemory {
			f.urls[svc] = "http://" + string(svc) + inMemoryDomain
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Close()
			return nil, err
		}
		srv := &http.Server{Handler: f.serviceHandler(svc), ReadHeaderTimeout: 10 * time.Second}
		f.servers[svc] = srv
		f.urls[svc] = "http://" + ln.Addr().String()
		go func() { _ = srv.Serve(ln) }()
	}
	return f, nil
}

// Close stops all listeners and releases hung requests.
func (f *Fake) Close() {
	f.closeOnce.Do(func() {
		close(f.closing)
		for _, s := range f.servers {
			_ = s.Close()
		}
	})
}

// URL returns the base URL of a service ("http://127.0.0.1:PORT").
func (f *Fake) URL(s Service) string { return f.urls[s] }

// STSURL is the STS endpoint (for AWS_ENDPOINT_URL_STS or sts.Options.BaseEndpoint).
func (f *Fake) STSURL() string { return f.urls[ServiceSTS] }

// ECRURL is the ECR API endpoint (AWS_ENDPOINT_URL_ECR or ecr.Options.BaseEndpoint).
func (f *Fake) ECRURL() string { return f.urls[ServiceECR] }

// ECRPublicURL is the ECR Public API endpoint (AWS_ENDPOINT_URL_ECR_PUBLIC).
func (f *Fake) ECRPublicURL() string { return f.urls[ServiceECRPublic] }

// Env returns the environment variables that point the AWS SDK's default loader at the fake.
func (f *Fake) Env() map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL_STS":        f.STSURL(),
		"AWS_ENDPOINT_URL_ECR":        f.ECRURL(),
		"AWS_ENDPOINT_URL_ECR_PUBLIC": f.ECRPublicURL(),
	}
}

// Issuer is the OIDC issuer STS trusts.
func (f *Fake) Issuer() string { return f.opts.Issuer }

// AccountID is the ECR account in proxyEndpoint.
func (f *Fake) AccountID() string { return f.opts.AccountID }

// Now is the fake's clock.
func (f *Fake) Now() time.Time { return f.now() }

func (f *Fake) now() time.Time { return f.clock.Now() }

// Handle adds or replaces an entry of the handler table.
func (f *Fake) Handle(spec ActionSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[spec.Action] = spec
}

// ---- knobs ----

func (f *Fake) state(a Action) *actionState {
	st := f.actions[a]
	if st == nil {
		st = &actionState{}
		f.actions[a] = st
	}
	return st
}

// InjectErrors queues errors answered, in order, by the next calls of action (before any
// validation). A zero HTTPStatus takes DefaultStatus(Code).
func (f *Fake) InjectErrors(a Action, errs ...APIError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state(a)
	for _, e := range errs {
		st.queue = append(st.queue, fault{kind: faultError, err: e})
	}
}

// InjectErrorAlways answers every call of action with err until ClearFaults (queued faults
// go first).
func (f *Fake) InjectErrorAlways(a Action, err APIError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state(a).always = &fault{kind: faultError, err: err}
}

// DropConnections closes the connection without a response for the next n calls of action;
// n < 0 drops every call until ClearFaults.
func (f *Fake) DropConnections(a Action, n int) {
	f.addFaults(a, faultDrop, n)
}

// HangConnections holds the next n calls of action open without answering until the client
// gives up (or the fake closes); n < 0 hangs every call until ClearFaults. Use it for
// client timeouts.
func (f *Fake) HangConnections(a Action, n int) {
	f.addFaults(a, faultHang, n)
}

func (f *Fake) addFaults(a Action, k faultKind, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state(a)
	if n < 0 {
		st.always = &fault{kind: k}
		return
	}
	for range n {
		st.queue = append(st.queue, fault{kind: k})
	}
}

// ClearFaults removes queued and permanent faults of action.
func (f *Fake) ClearFaults(a Action) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state(a)
	st.queue = nil
	st.always = nil
}

// SetLatency delays every answer of action by d (real time; cut short if the client goes
// away).
func (f *Fake) SetLatency(a Action, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state(a).latency = d
}

// SetECRTokenLifetime changes the lifetime of ECR tokens issued from now on.
func (f *Fake) SetECRTokenLifetime(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ecrLifetime = d
}

// SetSTSCredentialLifetime changes the lifetime of STS credentials issued from now on.
func (f *Fake) SetSTSCredentialLifetime(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stsLifetime = d
}

// SetAudience changes the audience STS accepts.
func (f *Fake) SetAudience(aud string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.audience = aud
}

// AddStaticCredentials registers a long-term (sessionToken "") or temporary key pair the ECR
// side accepts, e.g. for default-chain tests through AWS_ACCESS_KEY_ID. A zero expires never
// expires.
func (f *Fake) AddStaticCredentials(accessKeyID, secretAccessKey, sessionToken string, expires time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creds[accessKeyID] = &Credentials{AccessKeyID: accessKeyID, SecretAccessKey: secretAccessKey, SessionToken: sessionToken, Expires: expires}
	f.addSecretLocked(SecretAccessKey, secretAccessKey)
	f.addSecretLocked(SecretSessionToken, sessionToken)
}

// RevokeCredentials forgets an access key: later requests get UnrecognizedClientException.
func (f *Fake) RevokeCredentials(accessKeyID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.creds, accessKeyID)
}

// Interceptor runs after authentication and before the action's handler; a non-nil error is
// answered instead. It allows per-caller behaviour (see FailFirstPerCaller).
type Interceptor func(c *Call) *APIError

// SetInterceptor installs fn for action (nil removes it).
func (f *Fake) SetInterceptor(a Action, fn Interceptor) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state(a).interceptor = fn
}

// Caller names who is calling, stable across STS and ECR for one node: the RoleSessionName
// (from the request for STS web identity calls, from the credentials for signed calls made
// with STS-issued credentials), else the access key id.
func (c *Call) Caller() string {
	if c.Creds != nil {
		if c.Creds.SessionName != "" {
			return c.Creds.SessionName
		}
		return c.Creds.AccessKeyID
	}
	return c.Params.Get("RoleSessionName")
}

// FailFirstPerCaller returns an Interceptor that answers err to each caller's first n calls
// (case 10: every node is throttled three times, then served). Safe for concurrent use.
func FailFirstPerCaller(n int, err APIError) Interceptor {
	var mu sync.Mutex
	seen := map[string]int{}
	return func(c *Call) *APIError {
		mu.Lock()
		defer mu.Unlock()
		k := c.Caller()
		seen[k]++
		if seen[k] <= n {
			e := err
			return &e
		}
		return nil
	}
}

// ---- counters ----

// Calls is the number of requests received for action (including faulted ones).
func (f *Fake) Calls(a Action) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state(a).calls
}

// Successes is the number of 2xx answers for action.
func (f *Fake) Successes(a Action) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state(a).successes
}

// STSTokensSeen returns every WebIdentityToken received by STS, in order (including calls
// answered with an injected fault).
func (f *Fake) STSTokensSeen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.tokensSeen)
}

// CallLog returns every request received, in order.
func (f *Fake) CallLog() []CallRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// IssuedCredentials returns the credentials STS issued and those registered, by access key.
func (f *Fake) IssuedCredentials() []Credentials {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Credentials, 0, len(f.creds))
	for _, c := range f.creds {
		out = append(out, *c)
	}
	return out
}

// ECRTokens returns every ECR token issued.
func (f *Fake) ECRTokens() []ECRToken {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ECRToken, 0, len(f.ecrTokens))
	for _, t := range f.ecrTokens {
		out = append(out, *t)
	}
	return out
}

// Secrets returns every secret the fake minted or issued: JWTs, secret access keys, session
// tokens, ECR passwords, "AWS:<password>", and its base64 form. Tests grep logs for them.
func (f *Fake) Secrets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.secrets))
	for i, s := range f.secrets {
		out[i] = s.Value
	}
	return out
}

// Kinds of Secret, for messages that say what leaked without showing it.
const (
	SecretJWT          = "web identity token (JWT)"
	SecretAccessKey    = "secret access key"
	SecretSessionToken = "session token"
	SecretECRPassword  = "ECR password"
	SecretECRUserPass  = "AWS:<ECR password>"
	SecretECRBasic     = "ECR authorization token (base64 AWS:<password>)"
)

// Secret is one secret the fake issued and what it is.
type Secret struct {
	Kind  string
	Value string
}

// SecretsWithKind is Secrets with each secret's kind.
func (f *Fake) SecretsWithKind() []Secret {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.secrets)
}

func (f *Fake) addSecret(kind, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addSecretLocked(kind, s)
}

func (f *Fake) addSecretLocked(kind, s string) {
	if s == "" || f.secretSet[s] {
		return
	}
	f.secretSet[s] = true
	f.secrets = append(f.secrets, Secret{Kind: kind, Value: s})
}

// ---- dispatch ----

func (f *Fake) serviceHandler(svc Service) http.Handler {
	info := services[svc]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqID := newRequestID()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			return
		}
		rec := CallRecord{Time: f.now()}
		c := &Call{Fake: f, Request: r, Body: body, RequestID: reqID}
		var op string
		switch info.proto {
		case protoQuery:
			params, perr := url.ParseQuery(string(body))
			if perr != nil || r.Method != http.MethodPost {
				f.writeError(w, info, reqID, &APIError{Code: "InvalidQueryParameter", Message: "bad request"})
				return
			}
			for k, v := range r.URL.Query() {
				params[k] = append(params[k], v...)
			}
			c.Params = params
			op = params.Get("Action")
		case protoJSON:
			prefix, name, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
			if prefix != info.targetPrefix || r.Method != http.MethodPost {
				f.writeError(w, info, reqID, &APIError{Code: "UnknownOperationException", Message: ""})
				return
			}
			op = name
		}
		c.Action = Action(string(svc) + ":" + op)
		rec.Action = c.Action

		f.mu.Lock()
		st := f.state(c.Action)
		st.calls++
		if tok := c.Params.Get("WebIdentityToken"); tok != "" {
			f.tokensSeen = append(f.tokensSeen, tok)
		}
		var flt *fault
		if len(st.queue) > 0 {
			q := st.queue[0]
			st.queue = st.queue[1:]
			flt = &q
		} else if st.always != nil {
			a := *st.always
			flt = &a
		}
		latency := st.latency
		spec, known := f.handlers[c.Action]
		f.mu.Unlock()

		finish := func(status int, code string) {
			rec.Status, rec.ErrorCode = status, code
			f.mu.Lock()
			if status >= 200 && status < 300 {
				f.state(c.Action).successes++
			}
			f.log = append(f.log, rec)
			f.mu.Unlock()
		}

		if latency > 0 && !f.wait(r.Context(), latency) {
			finish(0, "")
			return
		}
		if flt != nil {
			switch flt.kind {
			case faultDrop:
				finish(0, "")
				dropConnection(w)
				return
			case faultHang:
				finish(0, "")
				f.wait(r.Context(), -1)
				dropConnection(w)
				return
			case faultError:
				e := flt.err
				f.writeError(w, info, reqID, &e)
				finish(e.status(), e.Code)
				return
			}
		}
		if !known {
			e := &APIError{Code: "UnknownOperationException"}
			if info.proto == protoQuery {
				e = &APIError{Code: "InvalidAction", Message: fmt.Sprintf("Could not find operation %s for version %s", op, stsVersion)}
			}
			f.writeError(w, info, reqID, e)
			finish(e.status(), e.Code)
			return
		}
		if spec.Signed {
			creds, region, aerr := f.verifySigV4(r, body, info.signingName)
			if aerr != nil && info.proto == protoQuery {
				aerr = queryAuthError(aerr)
			}
			if aerr != nil {
				f.writeError(w, info, reqID, aerr)
				finish(aerr.status(), aerr.Code)
				return
			}
			c.Creds, c.Region = creds, region
			rec.Region, rec.AccessKeyID = region, creds.AccessKeyID
		}
		rec.Caller = c.Caller()
		f.mu.Lock()
		intercept := f.state(c.Action).interceptor
		f.mu.Unlock()
		if intercept != nil {
			if aerr := intercept(c); aerr != nil {
				f.writeError(w, info, reqID, aerr)
				finish(aerr.status(), aerr.Code)
				return
			}
		}
		// The quota is spent by authenticated calls that reach the service.
		var throttled *APIError
		f.mu.Lock()
		if q := f.state(c.Action).quota; q != nil && c.Creds != nil {
			throttled = q.take(c.Creds.accountOr(f.opts.AccountID), c.Region, f.now())
		}
		f.mu.Unlock()
		if throttled != nil {
			f.writeError(w, info, reqID, throttled)
			finish(throttled.status(), throttled.Code)
			return
		}
		out, aerr := spec.Handler(c)
		if aerr != nil {
			f.writeError(w, info, reqID, aerr)
			finish(aerr.status(), aerr.Code)
			return
		}
		if err := f.writeResult(w, info, op, reqID, out); err != nil {
			e := &APIError{Code: "InternalFailure", Message: err.Error()}
			f.writeError(w, info, reqID, e)
			finish(e.status(), e.Code)
			return
		}
		finish(http.StatusOK, "")
	})
}

// wait sleeps d of real time (d < 0: forever) unless the request or the fake ends first; it
// reports whether the full time passed.
func (f *Fake) wait(ctx context.Context, d time.Duration) bool {
	var timer <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return true
	case <-ctx.Done():
	case <-f.closing:
	}
	return false
}

func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

func (f *Fake) writeResult(w http.ResponseWriter, info serviceInfo, op, reqID string, out any) error {
	var buf bytes.Buffer
	switch info.proto {
	case protoQuery:
		inner, err := xml.MarshalIndent(out, "  ", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(&buf, "<%sResponse xmlns=\"%s\">\n  ", op, stsXMLNS)
		buf.Write(inner)
		fmt.Fprintf(&buf, "\n  <ResponseMetadata>\n    <RequestId>%s</RequestId>\n  </ResponseMetadata>\n</%sResponse>\n", reqID, op)
		w.Header().Set("Content-Type", "text/xml")
	case protoJSON:
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		buf.Write(b)
		w.Header().Set("Content-Type", jsonContentType)
	}
	w.Header().Set("X-Amzn-RequestId", reqID)
	f.setDate(w)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (f *Fake) writeError(w http.ResponseWriter, info serviceInfo, reqID string, e *APIError) {
	var buf bytes.Buffer
	w.Header().Set("X-Amzn-RequestId", reqID)
	switch info.proto {
	case protoQuery:
		buf.WriteString(`<ErrorResponse xmlns="` + stsXMLNS + `">` + "\n  <Error>\n    <Type>")
		_ = xml.EscapeText(&buf, []byte(e.faultType()))
		buf.WriteString("</Type>\n    <Code>")
		_ = xml.EscapeText(&buf, []byte(e.Code))
		buf.WriteString("</Code>\n    <Message>")
		_ = xml.EscapeText(&buf, []byte(e.Message))
		buf.WriteString("</Message>\n  </Error>\n  <RequestId>")
		_ = xml.EscapeText(&buf, []byte(reqID))
		buf.WriteString("</RequestId>\n</ErrorResponse>\n")
		w.Header().Set("Content-Type", "text/xml")
	case protoJSON:
		b, _ := json.Marshal(map[string]string{"__type": e.Code, "message": e.Message})
		buf.Write(b)
		w.Header().Set("Content-Type", jsonContentType)
		w.Header().Set("X-Amzn-ErrorType", e.Code)
	}
	f.setDate(w)
	w.WriteHeader(e.status())
	_, _ = w.Write(buf.Bytes())
}

// setDate dates the answer by the service's own clock, as AWS does: the SDK corrects a
// skewed local clock from it after a signature-expired error.
func (f *Fake) setDate(w http.ResponseWriter) {
	w.Header().Set("Date", f.opts.SigV4Clock.Now().UTC().Format(http.TimeFormat))
}

// ---- helpers ----

const upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randFrom(alphabet string, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func randString(n int) string {
	return randFrom("abcdefghijklmnopqrstuvwxyz0123456789", n)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func newRequestID() string {
	b := hex.EncodeToString(randBytes(16))
	return b[0:8] + "-" + b[8:12] + "-" + b[12:16] + "-" + b[16:20] + "-" + b[20:32]
}
