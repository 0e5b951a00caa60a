package fakeaws

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"time"
)

var accountRE = regexp.MustCompile(`^\d{12}$`)

// AuthorizationData is one entry of ECR's GetAuthorizationToken response.
type AuthorizationData struct {
	AuthorizationToken string  `json:"authorizationToken"`
	ExpiresAt          float64 `json:"expiresAt"`
	ProxyEndpoint      string  `json:"proxyEndpoint,omitempty"`
}

// dnsSuffix is the partition's DNS suffix for region.
func dnsSuffix(region string) string {
	if strings.HasPrefix(region, "cn-") {
		return "amazonaws.com.cn"
	}
	return "amazonaws.com"
}

// issueECRToken creates and records a token; "AWS:<password>" and its base64 go to Secrets.
func (f *Fake) issueECRToken(region, account string, public bool) (*ECRToken, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// ECR passwords are long base64 blobs; ms precision matches the wire format.
	pw := "eyJwYXlsb2FkIjoi" + base64.StdEncoding.EncodeToString(randBytes(96))
	t := &ECRToken{
		Password:  pw,
		Expires:   f.now().Add(f.ecrLifetime).Truncate(time.Millisecond),
		Region:    region,
		AccountID: account,
		Public:    public,
	}
	f.ecrTokens[pw] = t
	basic := base64.StdEncoding.EncodeToString([]byte("AWS:" + pw))
	f.addSecretLocked(SecretECRPassword, pw)
	f.addSecretLocked(SecretECRUserPass, "AWS:"+pw)
	f.addSecretLocked(SecretECRBasic, basic)
	return t, basic
}

// IssueECRToken issues an ECR token as if GetAuthorizationToken had been called in region,
// without going through the API (not counted). It returns the password.
func (f *Fake) IssueECRToken(region string) string {
	t, _ := f.issueECRToken(region, f.opts.AccountID, false)
	return t.Password
}

// LookupECRToken returns the token with this password.
func (f *Fake) LookupECRToken(password string) (ECRToken, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.ecrTokens[password]
	if !ok {
		return ECRToken{}, false
	}
	return *t, true
}

func epochSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func handleECRGetAuthorizationToken(c *Call) (any, *APIError) {
	var in struct {
		RegistryIDs []string `json:"registryIds"`
	}
	if len(c.Body) > 0 {
		if err := json.Unmarshal(c.Body, &in); err != nil {
			return nil, &APIError{Code: "SerializationException", Message: "Start of structure or map found where not expected."}
		}
	}
	accounts := in.RegistryIDs
	if len(accounts) == 0 {
		accounts = []string{c.Fake.opts.AccountID}
	}
	out := struct {
		AuthorizationData []AuthorizationData `json:"authorizationData"`
	}{}
	for _, acct := range accounts {
		if !accountRE.MatchString(acct) {
			return nil, &APIError{Code: "InvalidParameterException", Message: "Invalid parameter at 'registryIds' failed to satisfy constraint: 'Member must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]{12}]'"}
		}
		t, basic := c.Fake.issueECRToken(c.Region, acct, false)
		out.AuthorizationData = append(out.AuthorizationData, AuthorizationData{
			AuthorizationToken: basic,
			ExpiresAt:          epochSeconds(t.Expires),
			ProxyEndpoint:      "https://" + acct + ".dkr.ecr." + c.Region + "." + dnsSuffix(c.Region),
		})
	}
	return out, nil
}

func handleECRPublicGetAuthorizationToken(c *Call) (any, *APIError) {
	if c.Region != "us-east-1" {
		return nil, &APIError{Code: "UnsupportedCommandException", Message: "GetAuthorizationToken command is only supported in us-east-1."}
	}
	t, basic := c.Fake.issueECRToken(c.Region, "", true)
	return struct {
		AuthorizationData AuthorizationData `json:"authorizationData"`
	}{AuthorizationData{AuthorizationToken: basic, ExpiresAt: epochSeconds(t.Expires)}}, nil
}
