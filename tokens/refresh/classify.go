package refresh

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Classified is an AWS (or transport) error with its retry class and a short,
// operator-facing reason. It never holds a secret: only the API's error code
// and message, which AWS does not fill with credentials.
type Classified struct {
	Class  Class
	Code   string // the AWS error code, "" for transport errors
	Reason string // what it means for the operator, e.g. "OIDC provider missing or untrusted"
	Err    error
}

func (c *Classified) Error() string {
	if c.Code != "" {
		return c.Reason + " (" + c.Code + "): " + c.Err.Error()
	}
	return c.Reason + ": " + c.Err.Error()
}

func (c *Classified) Unwrap() error { return c.Err }

// Classify sorts an error from STS, ECR or the network into a retry class.
// Unknown API errors are permanent (slow retries) only for 4xx answers; an
// error we cannot place otherwise is transient, so a glitch never parks the
// daemon for minutes.
func Classify(err error) *Classified {
	if err == nil {
		return nil
	}
	var already *Classified
	if errors.As(err, &already) {
		return already
	}
	c := &Classified{Class: Transient, Err: err, Reason: "transient error"}
	var api smithy.APIError
	if errors.As(err, &api) {
		c.Code = api.ErrorCode()
		msg := strings.ToLower(api.ErrorMessage())
		switch c.Code {
		case "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
			"TooManyRequestsException", "RequestThrottled", "RequestThrottledException", "SlowDown":
			c.Class, c.Reason = Throttled, "throttled by AWS"
		case "IDPCommunicationError", "IDPCommunicationErrorException":
			c.Class, c.Reason = Transient, "STS could not reach the OIDC identity provider"
		case "InvalidIdentityToken", "InvalidIdentityTokenException":
			switch {
			case strings.Contains(msg, "couldn't retrieve verification key"),
				strings.Contains(msg, "could not retrieve verification key"):
				c.Class, c.Reason = Transient, "STS could not fetch the OIDC provider's signing keys"
			case strings.Contains(msg, "audience"):
				c.Class, c.Reason = Permanent, "token audience not accepted"
			case strings.Contains(msg, "thumbprint"):
				c.Class, c.Reason = Permanent, "thumbprint mismatch"
			default:
				c.Class, c.Reason = Permanent, "OIDC provider missing or untrusted"
			}
		case "ExpiredTokenException", "ExpiredToken":
			c.Class, c.Reason = Permanent, "token expired"
		case "AccessDenied", "AccessDeniedException":
			c.Class, c.Reason = Permanent, "access denied"
		case "InvalidClientTokenId", "UnrecognizedClientException", "InvalidSignatureException",
			"SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken":
			c.Class, c.Reason = Permanent, "credentials rejected"
		case "RegionDisabledException":
			c.Class, c.Reason = Permanent, "STS is not activated in this region"
		case "ValidationError", "ValidationException", "InvalidParameterException", "InvalidParameterValue":
			c.Class, c.Reason = Permanent, "request rejected as invalid"
		case "ServerException", "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceUnavailableException":
			c.Class, c.Reason = Transient, "AWS service error"
		default:
			if status := httpStatus(err); status >= 400 && status < 500 && status != 408 && status != 429 {
				c.Class, c.Reason = Permanent, "request refused by AWS"
			} else if status == 429 {
				c.Class, c.Reason = Throttled, "throttled by AWS"
			} else {
				c.Class, c.Reason = Transient, "AWS service error"
			}
		}
		return c
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		c.Reason = "timed out"
	case errors.As(err, &netErr):
		c.Reason = "network error"
	default:
		if status := httpStatus(err); status >= 500 {
			c.Reason = "AWS service error"
		}
	}
	return c
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
