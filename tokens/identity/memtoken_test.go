package identity

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

func TestParseToken(t *testing.T) {
	valid := makeJWT(t, stdClaims("sts.amazonaws.com", t0.Add(time.Hour)))
	expired := makeJWT(t, stdClaims("sts.amazonaws.com", t0.Add(-time.Minute)))
	tests := []struct {
		name string
		raw  string
		kind error
		want []string
	}{
		{"valid", valid, nil, nil},
		{"valid with newline", valid + "\n", nil, nil},
		{"empty", "", ErrTokenEmpty, []string{"service account token is empty"}},
		{"whitespace", " \n", ErrTokenEmpty, []string{"service account token holds only whitespace"}},
		{"two parts", "abc.def", ErrTokenMalformed, []string{"service account token is malformed", "2 dot-separated parts"}},
		{"trailing data", valid + " extra", ErrTokenMalformed, []string{"trailing data"}},
		{"expired", expired, ErrTokenExpired, []string{"service account token expired at 2026-", "sub=" + testSub, "fresh token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseToken(tt.raw, t0)
			if tt.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if tok.Raw() != strings.TrimSpace(tt.raw) || tok.Claims.Subject != testSub || tok.Path != "" {
					t.Errorf("token %v", tok)
				}
				assertNoSecret(t, "String", tok.String()+tok.GoString(), tok.Raw())
				return
			}
			var te *TokenError
			if !errors.Is(err, tt.kind) || !errors.As(err, &te) || te.Path != "" {
				t.Fatalf("err = %#v, want a %v without path", err, tt.kind)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "file") {
				t.Errorf("error %q speaks of a file", err)
			}
			assertNoSecret(t, "error", err.Error(), tt.raw)
		})
	}
}

func TestWebIdentityTokenSource(t *testing.T) {
	h := newHarness(t, Options{})
	var cur atomic.Pointer[Token]
	set := func(raw string) {
		tok, err := ParseToken(raw, h.clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		cur.Store(&tok)
	}
	o := h.p.o
	o.TokenFile = ""
	o.TokenSource = func() (Token, error) { return *cur.Load(), nil }
	p, err := NewWebIdentity(o)
	if err != nil {
		t.Fatal(err)
	}
	first := makeJWT(t, stdClaims("sts.amazonaws.com", t0.Add(time.Hour)))
	set(first)
	if _, err := p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := makeJWT(t, map[string]any{"iss": testIss, "sub": testSub, "aud": "sts.amazonaws.com", "exp": t0.Add(2 * time.Hour).Unix()})
	set(second)
	h.clk.Step(40 * time.Minute) // past the refresh time
	if _, err := p.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.sts.mu.Lock()
	inputs := h.sts.inputs
	h.sts.mu.Unlock()
	if len(inputs) != 2 || aws.ToString(inputs[0].WebIdentityToken) != first || aws.ToString(inputs[1].WebIdentityToken) != second {
		t.Fatalf("STS calls did not carry the source's current token (%d calls)", len(inputs))
	}
	if s := p.Status(); s.TokenFile != "" || s.Claims.Subject != testSub {
		t.Errorf("status %+v", s)
	}
	// A source error is classified and never reaches STS.
	o.TokenSource = func() (Token, error) { return ParseToken("", h.clk.Now()) }
	p2, _ := NewWebIdentity(o)
	if _, err := p2.Retrieve(context.Background()); err == nil || !strings.Contains(err.Error(), "service account token is empty") {
		t.Errorf("Retrieve with an empty token: %v", err)
	}
	if h.sts.calls() != 2 {
		t.Errorf("%d STS calls, want 2", h.sts.calls())
	}
}
