package fakeaws

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AssumeRoleWithWebIdentityResult is the XML result element, field for field as AWS sends it.
type AssumeRoleWithWebIdentityResult struct {
	XMLName                     xml.Name        `xml:"AssumeRoleWithWebIdentityResult"`
	SubjectFromWebIdentityToken string          `xml:"SubjectFromWebIdentityToken"`
	Audience                    string          `xml:"Audience"`
	AssumedRoleUser             AssumedRoleUser `xml:"AssumedRoleUser"`
	Credentials                 STSCredentials  `xml:"Credentials"`
	Provider                    string          `xml:"Provider"`
}

// AssumedRoleUser is part of the STS result.
type AssumedRoleUser struct {
	AssumedRoleID string `xml:"AssumedRoleId"`
	Arn           string `xml:"Arn"`
}

// STSCredentials is the Credentials element of an STS result.
type STSCredentials struct {
	SessionToken    string `xml:"SessionToken"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	Expiration      string `xml:"Expiration"`
	AccessKeyID     string `xml:"AccessKeyId"`
}

func validationError(field, value, constraint string) *APIError {
	v := "null"
	if value != "" {
		v = "'" + value + "'"
	}
	return &APIError{Code: "ValidationError", Message: fmt.Sprintf(
		"1 validation error detected: Value %s at '%s' failed to satisfy constraint: %s", v, field, constraint)}
}

func handleAssumeRoleWithWebIdentity(c *Call) (any, *APIError) {
	f := c.Fake
	p := c.Params
	if v := p.Get("Version"); v != "" && v != stsVersion {
		return nil, &APIError{Code: "InvalidAction", Message: fmt.Sprintf("Could not find operation AssumeRoleWithWebIdentity for version %s", v)}
	}
	roleARN, session, token := p.Get("RoleArn"), p.Get("RoleSessionName"), p.Get("WebIdentityToken")
	if roleARN == "" {
		return nil, validationError("roleArn", "", "Member must not be null")
	}
	if token == "" {
		return nil, validationError("webIdentityToken", "", "Member must not be null")
	}
	if session == "" {
		return nil, validationError("roleSessionName", "", "Member must not be null")
	}
	if !sessionNameRE.MatchString(session) {
		return nil, validationError("roleSessionName", session, `Member must satisfy regular expression pattern: [\w+=,.@-]*`)
	}
	m := roleARNRE.FindStringSubmatch(roleARN)
	if m == nil {
		return nil, &APIError{Code: "ValidationError", Message: "Request ARN is invalid"}
	}
	account, roleName := m[1], m[3]

	f.mu.Lock()
	lifetime, audience := f.stsLifetime, f.audience
	f.mu.Unlock()
	requested, aerr := durationSeconds(p.Get("DurationSeconds"))
	if aerr != nil {
		return nil, aerr
	}
	if requested > 0 && requested < lifetime {
		lifetime = requested
	}

	id, aerr := f.verifyWebIdentityToken(token, audience)
	if aerr != nil {
		return nil, aerr
	}
	if len(f.opts.AllowedRoleARNs) > 0 && !slices.Contains(f.opts.AllowedRoleARNs, roleARN) {
		return nil, &APIError{Code: "AccessDenied", Message: "Not authorized to perform sts:AssumeRoleWithWebIdentity"}
	}

	creds, user := f.issueSTSCredentials(roleARN, account, roleName, session, id.Subject, lifetime)
	provider := "arn:aws:iam::" + account + ":oidc-provider/" + strings.TrimPrefix(id.Issuer, "https://")
	return &AssumeRoleWithWebIdentityResult{
		SubjectFromWebIdentityToken: id.Subject,
		Audience:                    id.Audience,
		AssumedRoleUser:             user,
		Credentials:                 creds.wire(),
		Provider:                    provider,
	}, nil
}

// durationSeconds validates DurationSeconds ("" gives 0).
func durationSeconds(ds string) (time.Duration, *APIError) {
	if ds == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(ds)
	if err != nil {
		return 0, &APIError{Code: "ValidationError", Message: fmt.Sprintf("Value '%s' for parameter DurationSeconds is invalid.", ds)}
	}
	if n < 900 {
		return 0, &APIError{Code: "ValidationError", Message: fmt.Sprintf(durationValidationFmt, ds, "greater than or equal to 900")}
	}
	if n > 43200 {
		return 0, &APIError{Code: "ValidationError", Message: fmt.Sprintf(durationValidationFmt, ds, "less than or equal to 43200")}
	}
	return time.Duration(n) * time.Second, nil
}

// issueSTSCredentials creates, records and returns temporary credentials for a role session.
func (f *Fake) issueSTSCredentials(roleARN, account, roleName, session, subject string, lifetime time.Duration) (*Credentials, AssumedRoleUser) {
	user := AssumedRoleUser{
		AssumedRoleID: "AROA" + randFrom(upperAlnum, 17) + ":" + session,
		Arn:           "arn:aws:sts::" + account + ":assumed-role/" + roleName + "/" + session,
	}
	creds := &Credentials{
		AccessKeyID:     "ASIA" + randFrom(upperAlnum, 16),
		SecretAccessKey: base64.StdEncoding.EncodeToString(randBytes(30)),
		SessionToken:    "IQoJb3JpZ2luX2VjE" + base64.StdEncoding.EncodeToString(randBytes(240)),
		Expires:         f.now().Add(lifetime).Truncate(time.Second),
		RoleARN:         roleARN,
		PrincipalARN:    user.Arn,
		UserID:          user.AssumedRoleID,
		Account:         account,
		Subject:         subject,
		SessionName:     session,
	}
	f.mu.Lock()
	f.creds[creds.AccessKeyID] = creds
	f.addSecretLocked(SecretAccessKey, creds.SecretAccessKey)
	f.addSecretLocked(SecretSessionToken, creds.SessionToken)
	f.mu.Unlock()
	return creds, user
}

func (c *Credentials) wire() STSCredentials {
	return STSCredentials{
		SessionToken:    c.SessionToken,
		SecretAccessKey: c.SecretAccessKey,
		Expiration:      c.Expires.UTC().Format(time.RFC3339),
		AccessKeyID:     c.AccessKeyID,
	}
}

// AssumeRoleResult is the XML result element of sts:AssumeRole.
type AssumeRoleResult struct {
	XMLName         xml.Name        `xml:"AssumeRoleResult"`
	AssumedRoleUser AssumedRoleUser `xml:"AssumedRoleUser"`
	Credentials     STSCredentials  `xml:"Credentials"`
}

// handleAssumeRole serves sts:AssumeRole (signed). Callers with temporary credentials are
// role chaining, which AWS caps at one hour (case 8).
func handleAssumeRole(c *Call) (any, *APIError) {
	f, p := c.Fake, c.Params
	roleARN, session := p.Get("RoleArn"), p.Get("RoleSessionName")
	if roleARN == "" {
		return nil, validationError("roleArn", "", "Member must not be null")
	}
	if session == "" {
		return nil, validationError("roleSessionName", "", "Member must not be null")
	}
	if !sessionNameRE.MatchString(session) {
		return nil, validationError("roleSessionName", session, `Member must satisfy regular expression pattern: [\w+=,.@-]*`)
	}
	m := roleARNRE.FindStringSubmatch(roleARN)
	if m == nil {
		return nil, &APIError{Code: "ValidationError", Message: "Request ARN is invalid"}
	}
	requested, aerr := durationSeconds(p.Get("DurationSeconds"))
	if aerr != nil {
		return nil, aerr
	}
	if c.Creds.SessionToken != "" && requested > time.Hour {
		return nil, &APIError{Code: "ValidationError", Message: "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."}
	}
	if len(f.opts.AllowedRoleARNs) > 0 && !slices.Contains(f.opts.AllowedRoleARNs, roleARN) {
		return nil, &APIError{Code: "AccessDenied", Message: fmt.Sprintf("User: %s is not authorized to perform: sts:AssumeRole on resource: %s", c.Creds.principal(f), roleARN)}
	}
	lifetime := time.Hour
	if requested > 0 {
		lifetime = requested
	}
	f.mu.Lock()
	if f.stsLifetime < lifetime {
		lifetime = f.stsLifetime
	}
	f.mu.Unlock()
	creds, user := f.issueSTSCredentials(roleARN, m[1], m[3], session, c.Creds.Subject, lifetime)
	return &AssumeRoleResult{AssumedRoleUser: user, Credentials: creds.wire()}, nil
}

func (c *Credentials) principal(f *Fake) string {
	if c.PrincipalARN != "" {
		return c.PrincipalARN
	}
	return "arn:aws:iam::" + f.opts.AccountID + ":user/static"
}

// GetCallerIdentityResult is the XML result element of sts:GetCallerIdentity.
type GetCallerIdentityResult struct {
	XMLName xml.Name `xml:"GetCallerIdentityResult"`
	Arn     string   `xml:"Arn"`
	UserID  string   `xml:"UserId"`
	Account string   `xml:"Account"`
}

func handleGetCallerIdentity(c *Call) (any, *APIError) {
	account, userID := c.Creds.Account, c.Creds.UserID
	if account == "" {
		account = c.Fake.opts.AccountID
	}
	if userID == "" {
		userID = c.Creds.AccessKeyID
	}
	return &GetCallerIdentityResult{Arn: c.Creds.principal(c.Fake), UserID: userID, Account: account}, nil
}
