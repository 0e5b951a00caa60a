package fakeaws

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// IMDS wire names, as the SDK's feature/ec2/imds client sends them.
const (
	imdsTokenPath   = "/latest/api/token"
	imdsCredsPath   = "/latest/meta-data/iam/security-credentials/"
	imdsTTLHeader   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	imdsTokenHeader = "X-Aws-Ec2-Metadata-Token"
	imdsMaxTTL      = 21600 // seconds, EC2's documented maximum
	// IMDSInstanceID is the instance the role credentials' session is named after.
	IMDSInstanceID = "i-0fa4e5b6c7d8e9f01"
	// SecretIMDSToken is the Secret kind of IMDSv2 session tokens.
	SecretIMDSToken = "IMDSv2 session token"
)

// IMDSOptions configures an IMDS.
type IMDSOptions struct {
	// Role is the instance profile's role name; its credentials are issued by (and valid at)
	// the Fake. "" = no instance profile: the credentials listing is 404, as on EC2.
	Role string
	// TokenStatus, if nonzero (403, 404 or 405), answers PUT /latest/api/token with that status
	// instead of a session token: an IMDS without IMDSv2, so the SDK falls back to IMDSv1 and
	// warns "falling back to IMDSv1".
	TokenStatus int
	// RequireToken is HttpTokens=required: a GET without a valid session token gets 401.
	RequireToken bool
}

// IMDSRequest is one request the IMDS received.
type IMDSRequest struct {
	Method string
	Path   string
	Status int
	Token  bool // carried X-aws-ec2-metadata-token
}

// IMDS is the credentials part of the EC2 instance metadata service over HTTP: PUT
// /latest/api/token (IMDSv2 session tokens, TTL 1..21600 s on the Fake's clock), GET
// /latest/meta-data/iam/security-credentials/ (the role name) and .../<role> (the JSON
// document with temporary credentials the Fake's services accept).
type IMDS struct {
	fake *Fake
	opts IMDSOptions
	srv  *http.Server
	url  string

	mu       sync.Mutex
	tokens   map[string]time.Time // session token -> expiry (fake clock)
	creds    *Credentials
	requests []IMDSRequest
}

// NewIMDS starts an IMDS on 127.0.0.1 (plain HTTP, as IMDS is) whose role credentials come
// from f.
func NewIMDS(f *Fake, opts IMDSOptions) (*IMDS, error) {
	switch opts.TokenStatus {
	case 0, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
	default:
		return nil, fmt.Errorf("fakeaws: IMDSOptions.TokenStatus %d: want 0 (IMDSv2), 403, 404 or 405", opts.TokenStatus)
	}
	if opts.RequireToken && opts.TokenStatus != 0 {
		return nil, fmt.Errorf("fakeaws: IMDSOptions: RequireToken needs IMDSv2 (TokenStatus 0)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &IMDS{fake: f, opts: opts, url: "http://" + ln.Addr().String(), tokens: map[string]time.Time{}}
	m.srv = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

// StartIMDS is NewIMDS for a test: a failure fails t, and the IMDS closes with t.
func StartIMDS(t testing.TB, f *Fake, opts IMDSOptions) *IMDS {
	t.Helper()
	m, err := NewIMDS(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// Close stops the server.
func (m *IMDS) Close() { _ = m.srv.Close() }

// URL is "http://127.0.0.1:PORT" (AWS_EC2_METADATA_SERVICE_ENDPOINT or imds.Options.Endpoint).
func (m *IMDS) URL() string { return m.url }

// Env turns IMDS on for the SDK's default loader and points it here.
func (m *IMDS) Env() map[string]string {
	return map[string]string{"AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": m.url}
}

// Requests returns every request received, in order.
func (m *IMDS) Requests() []IMDSRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]IMDSRequest(nil), m.requests...)
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	status, body := m.answer(w, r)
	m.mu.Lock()
	m.requests = append(m.requests, IMDSRequest{Method: r.Method, Path: r.URL.Path, Status: status, Token: r.Header.Get(imdsTokenHeader) != ""})
	m.mu.Unlock()
	if status != http.StatusOK {
		w.Header().Set("Content-Type", "text/html")
		body = fmt.Sprintf("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html><head><title>%d - %s</title></head></html>\n", status, http.StatusText(status))
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// answer decides the status and, on 200, the body (headers set on w).
func (m *IMDS) answer(w http.ResponseWriter, r *http.Request) (int, string) {
	if r.URL.Path == imdsTokenPath {
		return m.issueToken(w, r)
	}
	if r.Method != http.MethodGet {
		return http.StatusMethodNotAllowed, ""
	}
	if tok := r.Header.Get(imdsTokenHeader); tok != "" || m.opts.RequireToken {
		m.mu.Lock()
		exp, ok := m.tokens[tok]
		m.mu.Unlock()
		if !ok || !m.fake.now().Before(exp) {
			return http.StatusUnauthorized, ""
		}
	}
	role, under := strings.CutPrefix(r.URL.Path, imdsCredsPath)
	switch {
	case !under || m.opts.Role == "":
		return http.StatusNotFound, ""
	case role == "":
		w.Header().Set("Content-Type", "text/plain")
		return http.StatusOK, m.opts.Role
	case role != m.opts.Role:
		return http.StatusNotFound, ""
	}
	c := m.roleCredentials()
	b, _ := json.MarshalIndent(map[string]string{
		"Code": "Success", "LastUpdated": m.fake.now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
		"AccessKeyId": c.AccessKeyID, "SecretAccessKey": c.SecretAccessKey, "Token": c.SessionToken,
		"Expiration": c.Expires.UTC().Format(time.RFC3339),
	}, "", "  ")
	w.Header().Set("Content-Type", "text/plain")
	return http.StatusOK, string(b)
}

func (m *IMDS) issueToken(w http.ResponseWriter, r *http.Request) (int, string) {
	if r.Method != http.MethodPut {
		return http.StatusMethodNotAllowed, ""
	}
	if m.opts.TokenStatus != 0 {
		return m.opts.TokenStatus, ""
	}
	// EC2 refuses token requests that went through a proxy.
	if r.Header.Get("X-Forwarded-For") != "" {
		return http.StatusForbidden, ""
	}
	ttl, err := strconv.Atoi(r.Header.Get(imdsTTLHeader))
	if err != nil || ttl < 1 || ttl > imdsMaxTTL {
		return http.StatusBadRequest, ""
	}
	tok := base64.StdEncoding.EncodeToString(randBytes(42))
	m.mu.Lock()
	m.tokens[tok] = m.fake.now().Add(time.Duration(ttl) * time.Second)
	m.mu.Unlock()
	m.fake.addSecret(SecretIMDSToken, tok)
	w.Header().Set(imdsTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	return http.StatusOK, tok
}

// roleCredentials are the instance's current credentials, renewed once they expire (EC2
// rotates them well before; the SDK refreshes on its own schedule).
func (m *IMDS) roleCredentials() *Credentials {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.creds == nil || !m.fake.now().Before(m.creds.Expires) {
		f := m.fake
		f.mu.Lock()
		lifetime := f.stsLifetime
		f.mu.Unlock()
		acct := f.opts.AccountID
		m.creds, _ = f.issueSTSCredentials("arn:aws:iam::"+acct+":role/"+m.opts.Role, acct, m.opts.Role, IMDSInstanceID, "", lifetime)
	}
	return m.creds
}
