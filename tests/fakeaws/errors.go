package fakeaws

import (
	"fmt"
	"net/http"
)

// APIError is an AWS service error as the fake sends it on the wire. It is used both for
// errors the fake produces itself and for errors injected by tests.
type APIError struct {
	// Code is the AWS error code, e.g. "InvalidIdentityToken", "ThrottlingException".
	Code string
	// Message is the human-readable message.
	Message string
	// HTTPStatus is the status code; 0 picks the status AWS uses for Code (see DefaultStatus).
	HTTPStatus int
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.status())
}

func (e *APIError) status() int {
	if e.HTTPStatus != 0 {
		return e.HTTPStatus
	}
	return DefaultStatus(e.Code)
}

// faultType is "Sender" for 4xx and "Receiver" for 5xx, as in STS's XML errors.
func (e *APIError) faultType() string {
	if e.status() >= 500 {
		return "Receiver"
	}
	return "Sender"
}

// defaultStatus holds the HTTP status AWS uses for well-known codes.
var defaultStatus = map[string]int{
	"AccessDenied":                http.StatusForbidden,
	"AccessDeniedException":       http.StatusBadRequest,
	"IDPRejectedClaim":            http.StatusForbidden,
	"InternalFailure":             http.StatusInternalServerError,
	"InternalError":               http.StatusInternalServerError,
	"ServerException":             http.StatusInternalServerError,
	"ServiceUnavailable":          http.StatusServiceUnavailable,
	"ServiceUnavailableException": http.StatusServiceUnavailable,
}

// DefaultStatus returns the HTTP status AWS uses for an error code: 403 for AccessDenied and
// IDPRejectedClaim, 5xx for server-side codes, 400 for everything else (including Throttling,
// ThrottlingException, InvalidIdentityToken, ExpiredTokenException, IDPCommunicationError).
func DefaultStatus(code string) int {
	if s, ok := defaultStatus[code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// Well-known errors, ready to inject.
var (
	ErrSTSThrottling       = APIError{Code: "Throttling", Message: "Rate exceeded", HTTPStatus: 400}
	ErrECRThrottling       = APIError{Code: "ThrottlingException", Message: "Rate exceeded", HTTPStatus: 400}
	ErrIDPCommunication    = APIError{Code: "IDPCommunicationError", Message: "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements", HTTPStatus: 400}
	ErrAccessDenied        = APIError{Code: "AccessDenied", Message: "Not authorized to perform sts:AssumeRoleWithWebIdentity", HTTPStatus: 403}
	ErrInternalFailure     = APIError{Code: "InternalFailure", Message: "An internal error occurred", HTTPStatus: 500}
	ErrServiceUnavailable  = APIError{Code: "ServiceUnavailable", Message: "Service is unavailable", HTTPStatus: 503}
	ErrECRServerException  = APIError{Code: "ServerException", Message: "An internal server error occurred", HTTPStatus: 500}
	ErrInvalidTokenGeneric = APIError{Code: "InvalidIdentityToken", Message: "The web identity token provided could not be validated", HTTPStatus: 400}
)
