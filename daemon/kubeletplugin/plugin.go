// Package kubeletplugin implements the client side of the kubelet's exec
// credential provider protocol (credentialprovider.kubelet.k8s.io v1, v1beta1
// and v1alpha1) for Amazon ECR, and prints the kubelet's
// CredentialProviderConfig for it. Where the credentials come from is the
// caller's Lookup (the daemon's socket, or a direct fetch).
//
// The kubelet runs the plugin once per image it has no cached credentials
// for, writes a CredentialProviderRequest to its stdin and reads the
// CredentialProviderResponse from its stdout; it requires the response in the
// request's own apiVersion, and it kills the plugin after one minute.
//
// Decoding is strict like the kubelet's own decoder (sigs.k8s.io/json: case
// sensitive, no unknown or duplicate fields). The wire types at the end of
// this file mirror k8s.io/kubelet/pkg/apis/credentialprovider field for field
// rather than importing it: the API types pull in k8s.io/apimachinery, which
// measured here adds 7.5 MB to the binary and about 2 ms to every exec of the
// plugin (1.7 ms against 3.7 ms for a whole exec), and exec time is a product
// target. The tests hold the mirror to the real types: the same JSON fields
// and kinds, requests encoded with the real types decode the same, and every
// response decodes strictly into the real types, in all three versions.
package kubeletplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	kjson "sigs.k8s.io/json"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin/lookup"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// Credential, Lookup and ErrNotFound are the shared client contract (see
// package lookup), named here as the kubelet plugin uses them.
type (
	Credential = lookup.Credential
	Lookup     = lookup.Func
)

// ErrNotFound is lookup.ErrNotFound.
var ErrNotFound = lookup.ErrNotFound

// The kinds and API versions of the exec protocol.
const (
	RequestKind  = "CredentialProviderRequest"
	ResponseKind = "CredentialProviderResponse"

	APIVersionV1       = "credentialprovider.kubelet.k8s.io/v1"
	APIVersionV1beta1  = "credentialprovider.kubelet.k8s.io/v1beta1"
	APIVersionV1alpha1 = "credentialprovider.kubelet.k8s.io/v1alpha1"
)

// SupportedAPIVersions lists the request versions Handle answers, newest first.
func SupportedAPIVersions() []string {
	return []string{APIVersionV1, APIVersionV1beta1, APIVersionV1alpha1}
}

// maxRequest bounds stdin: a real request (image, a service-account JWT and a
// few annotations) is a few KiB.
const maxRequest = 1 << 20

// Cache-duration bounds; see CacheDuration.
const (
	// MaxClientMargin caps how long before expiry the kubelet stops using a
	// cached credential.
	MaxClientMargin = 30 * time.Minute
	// ShortCacheDuration is the answer for a token already inside its margin
	// (the daemon should have replaced it): the kubelet asks again soon.
	ShortCacheDuration = time.Minute
	// MinCacheDuration is the floor: the kubelet reads 0 as "do not cache",
	// which would exec the plugin on every pull.
	MinCacheDuration = time.Second
)

// Request is a decoded CredentialProviderRequest.
type Request struct {
	// APIVersion is the request's apiVersion; the response uses the same.
	APIVersion string
	// Image is the image reference as the kubelet sent it.
	Image string
	// Host is the ECR registry the image lives in.
	Host ecrhost.Host
	// Registry is the auth key of the response: the registry host exactly as
	// the image spells it, including ":443" when the image has it, because the
	// kubelet matches auth keys against the image with the same glob rules as
	// matchImages (same labels, same port, path prefix).
	Registry string
	// ServiceAccountToken and ServiceAccountAnnotations are the KEP-4412
	// fields (v1 only): the pod's service-account token, when the kubelet is
	// configured with tokenAttributes, and the annotations it was told to
	// pass. The token is a secret: never log it. Request's fmt and slog forms
	// redact it.
	ServiceAccountToken       string
	ServiceAccountAnnotations map[string]string
}

// String describes r without its service-account token.
func (r Request) String() string {
	tok := ""
	if r.ServiceAccountToken != "" {
		tok = "REDACTED"
	}
	return fmt.Sprintf("{APIVersion:%s Image:%s Registry:%s ServiceAccountToken:%s ServiceAccountAnnotations:%v}",
		r.APIVersion, r.Image, r.Registry, tok, r.ServiceAccountAnnotations)
}

// GoString is String, so %#v redacts too.
func (r Request) GoString() string { return "kubeletplugin.Request" + r.String() }

// Format makes every fmt verb print the redacted form.
func (r Request) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = fmt.Fprint(f, r.GoString())
		return
	}
	_, _ = fmt.Fprint(f, r.String())
}

// LogValue keeps the token out of slog records.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("apiVersion", r.APIVersion),
		slog.String("image", r.Image),
		slog.String("registry", r.Registry),
		slog.Bool("serviceAccountToken", r.ServiceAccountToken != ""),
		slog.Any("serviceAccountAnnotations", r.ServiceAccountAnnotations),
	)
}

type requestKey struct{}

// RequestFromContext returns the request Handle is answering, so that a
// Lookup can forward the service-account token and annotations (KEP-4412
// mode) without a change to the Lookup signature.
func RequestFromContext(ctx context.Context) (Request, bool) {
	r, ok := ctx.Value(requestKey{}).(Request)
	return r, ok
}

// Handle answers one exec of the plugin: it decodes the request on stdin,
// asks lookup for the registry's credential and writes the response, in the
// request's apiVersion, to stdout. On error it writes nothing to stdout; the
// caller prints the error on stderr and exits non-zero, which the kubelet
// logs and does not cache. now is the clock for cacheDuration.
func Handle(ctx context.Context, stdin io.Reader, stdout io.Writer, lookup Lookup, now time.Time) error {
	req, err := DecodeRequest(stdin)
	if err != nil {
		return err
	}
	if lookup == nil {
		return fmt.Errorf("no credential source for registry %s: %w", req.Registry, ErrNotFound)
	}
	cred, err := lookup(context.WithValue(ctx, requestKey{}, req), req.Host)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("no credentials for registry %s (image %s): %w", req.Registry, req.Image, err)
		}
		return fmt.Errorf("getting credentials for registry %s: %w", req.Registry, err)
	}
	if cred.Password == "" {
		return fmt.Errorf("getting credentials for registry %s: the answer has an empty password", req.Registry)
	}
	if !cred.ExpiresAt.IsZero() && !now.Before(cred.ExpiresAt) {
		return fmt.Errorf("the credential for registry %s expired at %s (%s ago): the daemon holds no valid token; run `ecr-node-auth status`",
			req.Registry, cred.ExpiresAt.UTC().Format(time.RFC3339), now.Sub(cred.ExpiresAt).Round(time.Second))
	}
	body, err := EncodeResponse(req, cred, now)
	if err != nil {
		return err
	}
	if _, err := stdout.Write(body); err != nil {
		return fmt.Errorf("writing the response: %w", err)
	}
	return nil
}

// DecodeRequest reads and strictly decodes a CredentialProviderRequest of any
// supported apiVersion: unknown or duplicate fields, wrong-case field names and
// trailing data are errors, as in the kubelet's own strict decoder. The image
// must be in an Amazon ECR registry.
func DecodeRequest(r io.Reader) (Request, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxRequest+1))
	if err != nil {
		return Request{}, fmt.Errorf("reading the CredentialProviderRequest from stdin: %w", err)
	}
	if len(data) > maxRequest {
		return Request{}, fmt.Errorf("the CredentialProviderRequest on stdin is larger than %d bytes", maxRequest)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Request{}, errors.New("no CredentialProviderRequest on stdin: this command is run by the kubelet (see `ecr-node-auth print-kubelet-config`)")
	}

	var tm typeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return Request{}, fmt.Errorf("decoding the CredentialProviderRequest: %w", err)
	}
	if tm.Kind != RequestKind {
		return Request{}, fmt.Errorf("kind %q is not %s", tm.Kind, RequestKind)
	}

	req := Request{APIVersion: tm.APIVersion}
	switch tm.APIVersion {
	case APIVersionV1:
		var in requestV1
		if err := strictUnmarshal(data, &in); err != nil {
			return Request{}, err
		}
		req.Image = in.Image
		req.ServiceAccountToken = in.ServiceAccountToken
		req.ServiceAccountAnnotations = in.ServiceAccountAnnotations
	case APIVersionV1beta1, APIVersionV1alpha1:
		var in requestV1beta1
		if err := strictUnmarshal(data, &in); err != nil {
			return Request{}, err
		}
		req.Image = in.Image
	default:
		return Request{}, fmt.Errorf("apiVersion %q is not supported; supported: %s", tm.APIVersion, strings.Join(SupportedAPIVersions(), ", "))
	}

	if req.Image == "" {
		return Request{}, errors.New("the CredentialProviderRequest has no image")
	}
	host, err := ecrhost.Parse(req.Image)
	if err != nil {
		return Request{}, fmt.Errorf("image %q is not in an Amazon ECR registry (check the plugin's matchImages): %w", req.Image, err)
	}
	req.Host = host
	req.Registry = registryKey(req.Image)
	return req, nil
}

// strictUnmarshal decodes like the kubelet's strict JSON decoder: case
// sensitive, no unknown and no duplicate fields.
func strictUnmarshal(data []byte, v any) error {
	strictErrs, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return fmt.Errorf("decoding the CredentialProviderRequest: %w", err)
	}
	if len(strictErrs) > 0 {
		return fmt.Errorf("decoding the CredentialProviderRequest (strict): %w", errors.Join(strictErrs...))
	}
	return nil
}

// registryKey returns the registry part of an image reference as it is
// spelled there (host[:port]), which is also the kubelet's Registry cache key.
// image has been accepted by ecrhost.Parse.
func registryKey(image string) string {
	s := image
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+len("://"):]
	}
	s, _, _ = strings.Cut(s, "/")
	return s
}

// EncodeResponse returns the CredentialProviderResponse for req, in req's
// apiVersion, with cacheKeyType Registry, one auth entry keyed by
// req.Registry and cacheDuration from CacheDuration. It holds the password:
// write it to the kubelet and nowhere else.
func EncodeResponse(req Request, cred Credential, now time.Time) ([]byte, error) {
	if !slices.Contains(SupportedAPIVersions(), req.APIVersion) {
		return nil, fmt.Errorf("apiVersion %q is not supported; supported: %s", req.APIVersion, strings.Join(SupportedAPIVersions(), ", "))
	}
	body, err := json.Marshal(response{
		typeMeta:      typeMeta{APIVersion: req.APIVersion, Kind: ResponseKind},
		CacheKeyType:  cacheKeyRegistry,
		CacheDuration: CacheDuration(cred, now).String(),
		Auth:          map[string]authConfig{req.Registry: {Username: cred.Username, Password: cred.Password}},
	})
	if err != nil {
		// Never wrap: a marshalling error could quote the value.
		return nil, errors.New("encoding the CredentialProviderResponse failed")
	}
	return append(body, '\n'), nil
}

// clientMargin is min(MaxClientMargin, refresh.Margin(lifetime)), written out
// so that the plugin does not link tokens/refresh and, through it, the AWS
// SDK's error types; TestClientMarginIsRefreshMargin keeps the two equal.
func clientMargin(lifetime time.Duration) time.Duration {
	return max(0, min(MaxClientMargin, lifetime/4))
}

// CacheDuration is how long the kubelet may cache cred, from now:
//
//	margin = min(MaxClientMargin, refresh.Margin(lifetime)) = min(30m, lifetime/4)
//	cacheDuration = (ExpiresAt - now) - margin
//
// where lifetime is ExpiresAt - FetchedAt when the credential carries
// FetchedAt, else the time left (a lower bound of the lifetime, so the margin
// is never larger than the daemon's). When less than the margin is left — the
// daemon should already have replaced the token — the answer is
// min(ShortCacheDuration, half the time left), so the kubelet asks again soon.
// The result is truncated to whole seconds and never below MinCacheDuration; a
// credential with no expiry gets ShortCacheDuration.
//
// Why 30 minutes and not the daemon's min(1h, lifetime/4): the daemon's margin
// leaves room for its refresh retries, but the kubelet only needs the token to
// outlast a pull that starts just before its cache entry expires, plus clock
// skew; a cached answer stays good after the daemon refreshes (the old token
// is valid until it expires). A fresh 12 h ECR token is cached for 11h30m, 11h14m
// left gives 10h44m, and a 15 s test token is cached for 11 s.
func CacheDuration(cred Credential, now time.Time) time.Duration {
	if cred.ExpiresAt.IsZero() {
		return ShortCacheDuration
	}
	left := cred.ExpiresAt.Sub(now)
	if left <= 0 {
		return MinCacheDuration
	}
	lifetime := left
	if !cred.FetchedAt.IsZero() && cred.ExpiresAt.After(cred.FetchedAt) {
		lifetime = max(left, cred.ExpiresAt.Sub(cred.FetchedAt))
	}
	d := left - clientMargin(lifetime)
	if d <= 0 {
		d = min(ShortCacheDuration, left/2)
	}
	return max(MinCacheDuration, d.Truncate(time.Second))
}

// The JSON shapes of credentialprovider.kubelet.k8s.io, mirroring
// k8s.io/kubelet/pkg/apis/credentialprovider/{v1,v1beta1,v1alpha1} (see the
// package comment; TestWireTypesMirrorKubelet keeps them equal).

// typeMeta is metav1.TypeMeta.
type typeMeta struct {
	Kind       string `json:"kind,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
}

// requestV1 is v1.CredentialProviderRequest.
type requestV1 struct {
	typeMeta
	Image                     string            `json:"image"`
	ServiceAccountToken       string            `json:"serviceAccountToken,omitempty"`
	ServiceAccountAnnotations map[string]string `json:"serviceAccountAnnotations,omitempty"`
}

// requestV1beta1 is v1beta1.CredentialProviderRequest and
// v1alpha1.CredentialProviderRequest.
type requestV1beta1 struct {
	typeMeta
	Image string `json:"image"`
}

// cacheKeyRegistry is RegistryPluginCacheKeyType: the kubelet caches the
// answer for the image's registry host[:port].
const cacheKeyRegistry = "Registry"

// response is CredentialProviderResponse, the same in all three versions.
// CacheDuration is a metav1.Duration: a Go duration string.
type response struct {
	typeMeta
	CacheKeyType  string                `json:"cacheKeyType"`
	CacheDuration string                `json:"cacheDuration,omitempty"`
	Auth          map[string]authConfig `json:"auth,omitempty"`
}

// authConfig is AuthConfig.
type authConfig struct {
	Username string `json:"username"`
	Password string `json:"password"`
}
