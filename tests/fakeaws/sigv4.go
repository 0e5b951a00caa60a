package fakeaws

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const signatureMismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."

// parseAuthorization splits "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
func parseAuthorization(h string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return nil, false
	}
	out := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, false
		}
		out[k] = v
	}
	return out, out["Credential"] != "" && out["SignedHeaders"] != "" && out["Signature"] != ""
}

// verifySigV4 authenticates r the way AWS does: it re-signs a copy of the request with the
// secret the fake knows for the access key, the request's own X-Amz-Date and the body's
// hash, and compares signatures. It returns the caller's credentials and scope region.
func (f *Fake) verifySigV4(r *http.Request, body []byte, signingName string) (*Credentials, string, *APIError) {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return nil, "", &APIError{Code: "MissingAuthenticationTokenException", Message: "Missing Authentication Token"}
	}
	fields, ok := parseAuthorization(authz)
	if !ok {
		return nil, "", &APIError{Code: "IncompleteSignatureException", Message: "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization=" + strings.SplitN(authz, " ", 2)[0]}
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return nil, "", &APIError{Code: "IncompleteSignatureException", Message: "Credential should be scoped to a valid region."}
	}
	akid, scopeDate, region, service := scope[0], scope[1], scope[2], scope[3]

	amzDate := r.Header.Get("X-Amz-Date")
	signingTime, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return nil, "", &APIError{Code: "IncompleteSignatureException", Message: "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."}
	}
	now := f.opts.SigV4Clock.Now().UTC()
	nowS := now.Format(amzDateFormat)
	if signingTime.Before(now.Add(-maxSkew)) {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: fmt.Sprintf(
			"Signature expired: %s is now earlier than %s (%s - 5 min.)", amzDate, now.Add(-maxSkew).Format(amzDateFormat), nowS)}
	}
	if signingTime.After(now.Add(maxSkew)) {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: fmt.Sprintf(
			"Signature not yet current: %s is still later than %s (%s + 5 min.)", amzDate, now.Add(maxSkew).Format(amzDateFormat), nowS)}
	}
	if scopeDate != amzDate[:8] {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: fmt.Sprintf(
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", scopeDate, amzDate[:8], amzDate)}
	}
	if service != signingName {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: fmt.Sprintf("Credential should be scoped to correct service: '%s'. ", signingName)}
	}

	f.mu.Lock()
	c, known := f.creds[akid]
	var creds Credentials
	if known {
		creds = *c
	}
	f.mu.Unlock()
	if !known || r.Header.Get("X-Amz-Security-Token") != creds.SessionToken {
		return nil, "", &APIError{Code: "UnrecognizedClientException", Message: unrecognizedClientMessage}
	}
	if !creds.Expires.IsZero() && !f.now().Before(creds.Expires) {
		return nil, "", &APIError{Code: "ExpiredTokenException", Message: "The security token included in the request is expired"}
	}

	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	cp, err := http.NewRequestWithContext(context.Background(), r.Method, u.String(), nil)
	if err != nil {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: signatureMismatch}
	}
	cp.Host = r.Host
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			if vals := r.Header.Values(h); len(vals) > 0 {
				cp.Header[http.CanonicalHeaderKey(h)] = vals
			}
		}
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{
		AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey, SessionToken: creds.SessionToken,
	}, cp, hex.EncodeToString(sum[:]), service, region, signingTime)
	if err != nil {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: signatureMismatch}
	}
	want, _ := parseAuthorization(cp.Header.Get("Authorization"))
	if !hmac.Equal([]byte(want["Signature"]), []byte(fields["Signature"])) {
		return nil, "", &APIError{Code: "InvalidSignatureException", Message: signatureMismatch}
	}
	return &creds, region, nil
}

// queryAuthError renames an authentication error the way query-protocol services (STS) spell
// it: MissingAuthenticationToken, InvalidClientTokenId, SignatureDoesNotMatch, ExpiredToken,
// IncompleteSignature; all 403 but IncompleteSignature (400).
func queryAuthError(e *APIError) *APIError {
	out := *e
	switch e.Code {
	case "MissingAuthenticationTokenException":
		out = APIError{Code: "MissingAuthenticationToken", Message: "Request is missing Authentication Token", HTTPStatus: 403}
	case "UnrecognizedClientException":
		out.Code, out.HTTPStatus = "InvalidClientTokenId", 403
	case "InvalidSignatureException":
		out.Code, out.HTTPStatus = "SignatureDoesNotMatch", 403
	case "ExpiredTokenException":
		out.Code, out.HTTPStatus = "ExpiredToken", 403
	case "IncompleteSignatureException":
		out.Code, out.HTTPStatus = "IncompleteSignature", 400
	}
	return &out
}
