package fakeaws

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DefaultSubject is the sub claim MintToken uses when TokenSpec.Subject is empty.
const DefaultSubject = "system:serviceaccount:kube-system:ecr-node-auth"

// TokenSpec describes a web identity token to mint. Zero fields take defaults.
type TokenSpec struct {
	Subject   string    // default DefaultSubject
	Audience  []string  // default []string{the fake's accepted audience}
	Issuer    string    // default the fake's issuer
	ExpiresAt time.Time // default IssuedAt + 1h
	IssuedAt  time.Time // default the fake's clock now
	// Extra claims merged into the token (e.g. "kubernetes.io").
	Extra map[string]any
	// SignWithForeignKey signs with a key the fake does not trust (bad signature case).
	SignWithForeignKey bool
}

type oidcKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newOIDCKey() (*oidcKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &oidcKey{kid: "fakeaws-" + randString(8), priv: priv}, nil
}

// MintToken returns an RS256-signed JWT (header kid set) for spec. The token is recorded in
// Secrets().
func (f *Fake) MintToken(spec TokenSpec) string {
	now := f.now()
	if spec.IssuedAt.IsZero() {
		spec.IssuedAt = now
	}
	if spec.ExpiresAt.IsZero() {
		spec.ExpiresAt = spec.IssuedAt.Add(time.Hour)
	}
	if spec.Subject == "" {
		spec.Subject = DefaultSubject
	}
	if spec.Issuer == "" {
		spec.Issuer = f.opts.Issuer
	}
	if spec.Audience == nil {
		spec.Audience = []string{f.opts.Audience}
	}
	claims := jwt.MapClaims{
		"iss": spec.Issuer,
		"sub": spec.Subject,
		"aud": spec.Audience,
		"iat": spec.IssuedAt.Unix(),
		"nbf": spec.IssuedAt.Unix(),
		"exp": spec.ExpiresAt.Unix(),
		"jti": randString(16),
	}
	for k, v := range spec.Extra {
		claims[k] = v
	}
	key := f.key
	if spec.SignWithForeignKey {
		key = f.foreignKey
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = key.kid
	s, err := tok.SignedString(key.priv)
	if err != nil {
		panic(fmt.Sprintf("fakeaws: signing token: %v", err)) // cannot happen with a valid RSA key
	}
	f.addSecret(SecretJWT, s)
	return s
}

// JWKS returns the JSON Web Key Set of the fake's OIDC signing key (as served by an OIDC
// provider's jwks_uri), for tests that verify tokens themselves.
func (f *Fake) JWKS() map[string]any {
	pub := f.key.priv.PublicKey
	return map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": f.key.kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
}

// webIdentity is what STS learned from a verified token.
type webIdentity struct {
	Subject  string
	Audience string
	Issuer   string
}

// verifyWebIdentityToken checks the token the way STS does and returns AWS's error for each
// failure.
func (f *Fake) verifyWebIdentityToken(raw, audience string) (*webIdentity, *APIError) {
	malformed := &APIError{Code: "InvalidIdentityToken", Message: "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)"}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != f.key.kid {
			return nil, errors.New("unknown kid")
		}
		return &f.key.priv.PublicKey, nil
	})
	if err != nil {
		if errors.Is(err, jwt.ErrTokenMalformed) {
			return nil, malformed
		}
		return nil, &APIError{Code: "InvalidIdentityToken", Message: "The web identity token provided could not be validated"}
	}
	iss, _ := claims.GetIssuer()
	if iss != f.opts.Issuer {
		return nil, &APIError{Code: "InvalidIdentityToken", Message: fmt.Sprintf("No OpenIDConnect provider found in your account for %s", iss)}
	}
	aud, _ := claims.GetAudience()
	if !slices.Contains([]string(aud), audience) {
		return nil, &APIError{Code: "InvalidIdentityToken", Message: "Incorrect token audience"}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, malformed
	}
	now := f.now()
	if !now.Before(exp.Time) {
		// AWS's own wording (epoch seconds; AWS omits the space before the second number).
		return nil, &APIError{Code: "ExpiredTokenException", Message: fmt.Sprintf(
			"Token expired: current date/time %d must be before the expiration date/time%d", now.Unix(), exp.Unix())}
	}
	if nbf, _ := claims.GetNotBefore(); nbf != nil && now.Add(5*time.Minute).Before(nbf.Time) {
		return nil, &APIError{Code: "InvalidIdentityToken", Message: "Token used before issued"}
	}
	sub, _ := claims.GetSubject()
	return &webIdentity{Subject: sub, Audience: audience, Issuer: iss}, nil
}
