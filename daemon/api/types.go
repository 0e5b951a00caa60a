// Package api is the daemon's local HTTP/JSON API on a Unix socket, and the
// client the command-line tools use to read it. Paths are versioned (/v1/…).
// No answer ever carries a secret: the types below have no field for one.
package api

import "time"

// Paths served by the daemon.
const (
	PathStatus = "/v1/status"
	PathHealth = "/v1/health"
)

// Status is the answer of GET /v1/status.
type Status struct {
	Version    string     `json:"version"`
	Ready      bool       `json:"ready"` // every registry holds a valid token (true when idle)
	State      string     `json:"state"` // the systemd STATUS= line, e.g. "serving 2 registries"
	Identity   Identity   `json:"identity"`
	Registries []Registry `json:"registries"`
	ConfigPath string     `json:"configPath"`
	CertsDir   string     `json:"certsDir"`
	Socket     string     `json:"socket"`
	// StartedAt and ConfigLoadedAt date the process start and the config in use.
	StartedAt      time.Time `json:"startedAt,omitzero"`
	ConfigLoadedAt time.Time `json:"configLoadedAt,omitzero"`
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

// Registry is one configured registry.
type Registry struct {
	Host        string    `json:"host"`
	Region      string    `json:"region"`
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

// Health is the answer of GET /v1/health: 200 when OK, else 503.
type Health struct {
	Status  string   `json:"status"` // "ok" or "unhealthy"
	Reasons []string `json:"reasons,omitempty"`
}

// Provider supplies the answers; the daemon implements it.
type Provider interface {
	Status() Status
	Health() Health
}
