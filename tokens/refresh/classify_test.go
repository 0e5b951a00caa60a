package refresh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func apiErr(code, msg string) error {
	return &smithy.GenericAPIError{Code: code, Message: msg}
}

func withStatus(status int, err error) error {
	return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: err}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		class  Class
		reason string
	}{
		// Case 5: STS answers that are transient.
		{"jwks fetch", apiErr("InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements"), Transient, "signing keys"},
		{"idp communication", apiErr("IDPCommunicationError", "connection failed"), Transient, "could not reach"},
		{"sts throttling", apiErr("Throttling", "Rate exceeded"), Throttled, "throttled"},
		// Case 5: permanent, each with its own reason.
		{"not validated", apiErr("InvalidIdentityToken", "The web identity token provided could not be validated"), Permanent, "OIDC provider missing or untrusted"},
		{"access denied", apiErr("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"), Permanent, "access denied"},
		{"thumbprint", apiErr("InvalidIdentityToken", "OpenIDConnect provider's HTTPS certificate doesn't match configured thumbprint"), Permanent, "thumbprint mismatch"},
		// Case 4.
		{"audience", apiErr("InvalidIdentityToken", "Incorrect token audience"), Permanent, "audience"},
		{"ecr throttling", apiErr("ThrottlingException", "Rate exceeded"), Throttled, "throttled"},
		{"ecr access denied", apiErr("AccessDeniedException", "not authorized to perform ecr:GetAuthorizationToken"), Permanent, "access denied"},
		{"ecr server", apiErr("ServerException", "boom"), Transient, "AWS service error"},
		{"expired token", apiErr("ExpiredTokenException", "Token expired"), Permanent, "expired"},
		{"unknown 4xx", withStatus(400, apiErr("SomethingNew", "x")), Permanent, "refused"},
		{"unknown 429", withStatus(429, apiErr("SomethingNew", "x")), Throttled, "throttled"},
		{"unknown 503", withStatus(503, apiErr("SomethingNew", "x")), Transient, "AWS service error"},
		{"timeout", fmt.Errorf("call: %w", context.DeadlineExceeded), Transient, "timed out"},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, Transient, "network error"},
		{"plain", errors.New("something"), Transient, "transient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Classify(fmt.Errorf("operation error: %w", tt.err))
			if c.Class != tt.class {
				t.Errorf("class = %v, want %v", c.Class, tt.class)
			}
			if !strings.Contains(c.Reason, tt.reason) {
				t.Errorf("reason = %q, want it to contain %q", c.Reason, tt.reason)
			}
			if !errors.Is(c, tt.err) {
				t.Errorf("Classified does not unwrap to the original error")
			}
		})
	}
}

func TestClassifyKeepsInnerClassification(t *testing.T) {
	inner := &Classified{Class: Permanent, Reason: "web identity token expired", Err: errors.New("expired")}
	got := Classify(fmt.Errorf("failed to retrieve credentials: %w", inner))
	if got != inner {
		t.Fatalf("Classify re-classified an already classified error: %+v", got)
	}
	if Classify(nil) != nil {
		t.Fatal("Classify(nil) != nil")
	}
}
