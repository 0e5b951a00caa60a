package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// sigMarker is in every test token's signature, so a leak is easy to spot.
const sigMarker = "SECRETSIGNATUREdoNotLeak"

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// makeJWT builds an unsigned-looking but well-formed compact JWT.
func makeJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return b64(`{"alg":"RS256","kid":"k1"}`) + "." + b64(string(p)) + "." + sigMarker
}

const (
	testIss = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
	testSub = "system:serviceaccount:kube-system:ecr-agent"
)

func stdClaims(aud any, exp time.Time) map[string]any {
	return map[string]any{"iss": testIss, "sub": testSub, "aud": aud, "exp": exp.Unix(), "iat": t0.Add(-time.Hour).Unix()}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// assertNoSecret fails if s holds the token or any of its parts.
func assertNoSecret(t testing.TB, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range append(secrets, sigMarker) {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s leaks a secret: %q", what, s)
		}
	}
}

func TestReadToken(t *testing.T) {
	valid := makeJWT(t, stdClaims([]string{"sts.amazonaws.com"}, t0.Add(time.Hour)))
	single := makeJWT(t, stdClaims("sts.amazonaws.com", t0.Add(time.Hour)))
	expired := makeJWT(t, stdClaims([]string{"sts.amazonaws.com"}, t0.Add(-time.Minute)))
	badJSON := b64(`{"alg":"RS256"}`) + "." + b64(`{"iss": nope`) + "." + sigMarker
	badAud := b64(`{"alg":"RS256"}`) + "." + b64(`{"aud": 5}`) + "." + sigMarker

	tests := []struct {
		name    string
		content *string // nil: no file
		dir     bool    // the path is a directory
		kind    error
		want    []string // substrings of the error, or of Claims.String() on success
	}{
		{name: "valid array aud", content: &valid, want: []string{"iss=" + testIss, "aud=sts.amazonaws.com", "sub=" + testSub}},
		{name: "valid string aud", content: &single, want: []string{"aud=sts.amazonaws.com"}},
		{name: "surrounding whitespace", content: ptr("\n  " + valid + "\r\n\n"), want: []string{"sub=" + testSub}},
		{name: "empty file", content: ptr(""), kind: ErrTokenEmpty, want: []string{"is empty", "write may be in progress"}},
		{name: "whitespace only", content: ptr(" \n"), kind: ErrTokenEmpty, want: []string{"only whitespace"}},
		{name: "log text appended", content: ptr(valid + "\nE0601 12:00:00 kubelet.go:1] failed to rotate\n"), kind: ErrTokenMalformed, want: []string{"trailing data after the JWT"}},
		{name: "garbage glued to signature", content: ptr(valid + "[INFO]done"), kind: ErrTokenMalformed, want: []string{"signature is not base64url"}},
		{name: "two parts", content: ptr(b64(`{"alg":"RS256"}`) + "." + b64(`{}`)), kind: ErrTokenMalformed, want: []string{"2 dot-separated parts"}},
		{name: "four parts", content: ptr(valid + ".x"), kind: ErrTokenMalformed, want: []string{"4 dot-separated parts"}},
		{name: "not base64", content: ptr("a*b.c.d"), kind: ErrTokenMalformed, want: []string{"header is not base64url"}},
		{name: "empty signature", content: ptr(b64(`{"alg":"RS256"}`) + "." + b64(`{}`) + "."), kind: ErrTokenMalformed, want: []string{"empty JWT signature"}},
		{name: "payload not JSON", content: &badJSON, kind: ErrTokenMalformed, want: []string{"payload is not a JSON object"}},
		{name: "aud not a string", content: &badAud, kind: ErrTokenMalformed, want: []string{"payload"}},
		{name: "expired", content: &expired, kind: ErrTokenExpired, want: []string{
			"web identity token expired at 2026-06-01T11:59:00Z; waiting for kubelet rotation",
			"iss=" + testIss, "aud=sts.amazonaws.com", "sub=" + testSub}},
		{name: "missing file", kind: ErrTokenMissing, want: []string{"does not exist", "mount the projected service-account token volume"}},
		{name: "directory", dir: true, kind: ErrTokenMissing, want: []string{"cannot be read", "mount the projected"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token")
			if tt.content != nil {
				writeFile(t, path, *tt.content)
			}
			if tt.dir {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			tok, err := ReadToken(path, t0)
			if tt.kind == nil {
				if err != nil {
					t.Fatalf("ReadToken: %v", err)
				}
				if tok.Raw() != strings.TrimSpace(*tt.content) {
					t.Errorf("Raw() is not the trimmed content")
				}
				for _, w := range tt.want {
					if !strings.Contains(tok.Claims.String(), w) {
						t.Errorf("claims %q lack %q", tok.Claims, w)
					}
				}
				if !tok.Claims.ExpiresAt.Equal(t0.Add(time.Hour)) || !tok.Claims.IssuedAt.Equal(t0.Add(-time.Hour)) {
					t.Errorf("exp/iat = %v/%v", tok.Claims.ExpiresAt, tok.Claims.IssuedAt)
				}
				for _, s := range []string{tok.String(), tok.GoString()} {
					assertNoSecret(t, "Token.String", s, tok.Raw())
				}
				return
			}
			if !errors.Is(err, tt.kind) {
				t.Fatalf("error %v is not %v", err, tt.kind)
			}
			var te *TokenError
			if !errors.As(err, &te) || te.Path != path {
				t.Fatalf("error %T does not name the path", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if tt.content != nil {
				secrets := []string{}
				for _, p := range strings.Split(strings.TrimSpace(*tt.content), ".") {
					if len(p) > 8 {
						secrets = append(secrets, p)
					}
				}
				assertNoSecret(t, "error", msg, secrets...)
			}
		})
	}
}

func TestReadTokenMissingFileIsNotExist(t *testing.T) {
	_, err := ReadToken(filepath.Join(t.TempDir(), "nope"), t0)
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrTokenMissing) {
		t.Fatalf("err = %v", err)
	}
}

func TestClaims(t *testing.T) {
	tests := []struct {
		c      Claims
		str    string
		aud    string
		hasAud bool
	}{
		{Claims{Issuer: "i", Audience: []string{"a", "b"}, Subject: "s"}, "iss=i aud=a,b sub=s", "b", true},
		{Claims{Issuer: "i", Audience: []string{"sts.amazon.com"}, Subject: "s"}, "iss=i aud=sts.amazon.com sub=s", "sts.amazonaws.com", false},
		{Claims{}, "iss=<none> aud=<none> sub=<none>", "", false},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.str {
			t.Errorf("String() = %q, want %q", got, tt.str)
		}
		if got := tt.c.HasAudience(tt.aud); got != tt.hasAud {
			t.Errorf("%v.HasAudience(%q) = %v", tt.c, tt.aud, got)
		}
	}
}

func ptr[T any](v T) *T { return &v }
