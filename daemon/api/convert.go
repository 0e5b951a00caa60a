package api

import (
	"strings"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
)

// RegistryFrom copies the non-secret parts of an auth-map entry. The
// credential's username and password are never read.
func RegistryFrom(e tokens.Entry, now time.Time) Registry {
	r := Registry{
		Host:        e.Host.Name,
		Region:      e.Host.Region,
		OnDemand:    e.OnDemand,
		Valid:       e.Credential.Valid(now),
		LastRefresh: e.LastRefresh,
		NextRefresh: e.NextRefresh,
		LastError:   e.LastError,
		ErrorClass:  e.ErrorClass,
	}
	if e.Credential != nil {
		r.ExpiresAt = e.Credential.ExpiresAt
	}
	return r
}

// IdentityFrom copies an identity source's status.
func IdentityFrom(s identity.Status) Identity {
	return Identity{
		Mode:                s.Mode,
		RoleARN:             s.RoleARN,
		TokenFile:           s.TokenFile,
		Issuer:              s.Claims.Issuer,
		Subject:             s.Claims.Subject,
		Audience:            s.Audience,
		TokenAudience:       s.Claims.Audience,
		TokenExpiresAt:      s.Claims.ExpiresAt,
		CredentialSource:    s.CredentialSource,
		CredentialsExpireAt: s.CredentialsExpireAt,
		LastRefresh:         s.LastRefresh,
		LastError:           s.LastError,
		ErrorClass:          s.ErrorClass,
	}
}

// Summary is a one-line account of the identity for `status`.
func (i Identity) Summary() string {
	var b strings.Builder
	b.WriteString("identity: " + orDash(i.Mode))
	if i.RoleARN != "" {
		b.WriteString(" role=" + i.RoleARN)
	}
	if i.Subject != "" {
		b.WriteString(" sub=" + i.Subject)
	}
	if i.Issuer != "" {
		b.WriteString(" iss=" + i.Issuer)
	}
	if i.Audience != "" {
		b.WriteString(" aud=" + i.Audience)
	}
	if !i.CredentialsExpireAt.IsZero() {
		b.WriteString(" credentials expire " + i.CredentialsExpireAt.UTC().Format(time.RFC3339))
	}
	if i.LastError != "" {
		b.WriteString(" error: " + i.LastError)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
