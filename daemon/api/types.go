// Package api is the daemon's local HTTP/JSON API on a Unix socket, and the
// client the command-line tools use to read it. Paths are versioned (/v1/…).
//
// The answers of /v1/credentials carry a registry password by design: that
// is what the kubelet plugin and the docker helper ask for. Every connection
// is therefore checked with SO_PEERCRED (root, the daemon's own user and
// members of socketGroup only), on top of the socket file's mode. The
// answers of /v1/status, /v1/health and /v1/registries never carry a secret:
// their types have no field for one.
package api

import (
	"context"
	"time"
)

// Paths served by the daemon.
const (
	PathStatus      = "/v1/status"
	PathHealth      = "/v1/health"
	PathCredentials = "/v1/credentials"
	PathRegistries  = "/v1/registries"
)

// RoleAnnotations are the service-account annotations that name the role of a
// pod's pulls, in order of precedence (KEP-4412 mode). The daemon, the kubelet
// plugin's direct-fetch fallback and print-kubelet-config all use this one list,
// so the kubelet passes exactly the annotations the daemon honours.
func RoleAnnotations() []string {
	return []string{
		"eks.amazonaws.com/ecr-role-arn",
		"eks.amazonaws.com/role-arn",
		"ecr-node-auth.io/role-arn",
	}
}

// Sources of a credential (Credentials.Source).
const (
	SourceConfigured = "configured" // a registry in the config (node identity)
	SourceOnDemand   = "on-demand"  // an ECR host first asked for on the socket (node identity)
	SourceWorkload   = "workload"   // a pod's role, assumed with its service-account token
)

// Error codes of APIError.Code.
const (
	CodeNotECR     = "not_ecr"     // 404: not an Amazon ECR registry (or one this daemon does not serve)
	CodeNotReady   = "not_ready"   // 503: no usable credential now; Message has the last error
	CodeBadRequest = "bad_request" // 400, 405 or 413
	CodeForbidden  = "forbidden"   // 403: the peer may not use the socket
	CodeTooMany    = "too_many"    // 429: too many distinct on-demand or workload entries
	CodeNotFound   = "not_found"   // 404: no such API path
	// CodeNoCredentials (404): an ECR registry the daemon holds no credential
	// for (ECR Public without publicECR or without a token): pull anonymously.
	CodeNoCredentials = "no_credentials"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version    string     `json:"version"`
	Ready      bool       `json:"ready"` // every registry holds a valid token (true when idle)
	State      string     `json:"state"` // the systemd STATUS= line, e.g. "serving 2 registries"
	Identity   Identity   `json:"identity"`
	Registries []Registry `json:"registries"`
	// Mirrors are the pull-through caches (certs.d/<upstream>/hosts.toml);
	// their ECR host's token is listed under Registries.
	Mirrors    []Mirror `json:"mirrors,omitempty"`
	ConfigPath string   `json:"configPath"`
	CertsDir   string   `json:"certsDir"`
	Socket     string   `json:"socket"`
	// MetricsAddress is where /metrics, /healthz and /readyz are served
	// ("" when off or not running).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// StartedAt and ConfigLoadedAt date the process start and the config in use.
	StartedAt      time.Time `json:"startedAt,omitzero"`
	ConfigLoadedAt time.Time `json:"configLoadedAt,omitzero"`
	// Workloads are the per role and service-account credentials held for
	// pods (KEP-4412 service-account-token mode).
	Workloads []Workload `json:"workloads,omitempty"`
	// Notes are operator hints: "no registries configured: idle", a rejected
	// reload, unmanaged hosts.toml files.
	Notes []string `json:"notes,omitempty"`
}

// Identity is the AWS identity in use.
type Identity struct {
	Mode                string    `json:"mode"` // web-identity or default-chain
	RoleARN             string    `json:"roleArn,omitempty"`
	TokenFile           string    `json:"tokenFile,omitempty"`
	Issuer              string    `json:"issuer,omitempty"`
	Subject             string    `json:"subject,omitempty"`
	Audience            string    `json:"audience,omitempty"` // the audience expected
	TokenAudience       []string  `json:"tokenAudience,omitempty"`
	TokenExpiresAt      time.Time `json:"tokenExpiresAt,omitzero"`
	STSRegion           string    `json:"stsRegion,omitempty"`
	STSEndpoint         string    `json:"stsEndpoint,omitempty"`
	CredentialSource    string    `json:"credentialSource,omitempty"`
	CredentialsExpireAt time.Time `json:"credentialsExpireAt,omitzero"`
	LastRefresh         time.Time `json:"lastRefresh,omitzero"`
	LastError           string    `json:"lastError,omitempty"`
	ErrorClass          string    `json:"errorClass,omitempty"`
}

// Registry is one registry of the auth map: configured, or on-demand (an ECR
// host first asked for on the socket).
type Registry struct {
	Host        string    `json:"host"`
	Region      string    `json:"region"`
	OnDemand    bool      `json:"onDemand,omitempty"`
	Endpoint    string    `json:"endpoint,omitempty"`
	Valid       bool      `json:"valid"` // holds a token that is not near expiry
	ExpiresAt   time.Time `json:"expiresAt,omitzero"`
	LastRefresh time.Time `json:"lastRefresh,omitzero"`
	NextRefresh time.Time `json:"nextRefresh,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	ErrorClass  string    `json:"errorClass,omitempty"`
	// File is the hosts.toml path; FileState is "written", "unchanged",
	// "pending" (no token yet), "unmanaged" (not ours: left alone) or
	// "error: …".
	File      string `json:"file"`
	FileState string `json:"fileState"`
}

// Mirror is one ECR pull-through cache serving an upstream registry.
type Mirror struct {
	Upstream string `json:"upstream"` // e.g. docker.io
	ECR      string `json:"ecr"`      // <ECR host>/<repository prefix>
	Endpoint string `json:"endpoint,omitempty"`
	// URL is the host table containerd tries first, e.g.
	// https://<ECR host>/v2/docker-hub (override_path).
	URL       string `json:"url"`
	File      string `json:"file"`
	FileState string `json:"fileState"` // as Registry.FileState
}

// Workload is one credential held for a pod's role and service account. It
// names the role and the token's subject, never the token.
type Workload struct {
	RoleARN             string    `json:"roleArn"`
	Subject             string    `json:"subject"`
	Registries          []string  `json:"registries"`
	CredentialsExpireAt time.Time `json:"credentialsExpireAt,omitzero"`
	LastError           string    `json:"lastError,omitempty"`
}

// Registries is the answer of GET /v1/registries: the hosts that hold a
// usable credential now.
type Registries struct {
	Registries []string `json:"registries"`
}

// Health is the answer of GET /v1/health: 200 when OK, else 503.
type Health struct {
	Status  string   `json:"status"` // "ok" or "unhealthy"
	Reasons []string `json:"reasons,omitempty"`
}

// Provider supplies the answers; the daemon implements it. Credentials and
// WorkloadCredentials return an *APIError for answers other than 200; any
// other error is a 500 with its text (it must hold no secret).
type Provider interface {
	Status() Status
	Health() Health
	// Credentials answers for an image reference or registry host. ctx has
	// no deadline: the provider bounds a slow path (an AWS call) itself by
	// CredentialsTimeout.
	Credentials(ctx context.Context, image string) (Credentials, error)
	// WorkloadCredentials answers a KEP-4412 request.
	WorkloadCredentials(ctx context.Context, req WorkloadRequest) (Credentials, error)
	// Registries lists the hosts that hold a usable credential now.
	Registries() []string
}
