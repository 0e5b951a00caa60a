package tokens

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

func TestCredentialAuthorizationHeader(t *testing.T) {
	c := Credential{Username: "AWS", Password: "pa:ss"}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("AWS:pa:ss"))
	if got := c.AuthorizationHeader(); got != want {
		t.Errorf("AuthorizationHeader = %q, want %q", got, want)
	}
}

func TestCredentialValid(t *testing.T) {
	fetched := t0
	c12 := &Credential{Username: "AWS", Password: "p", FetchedAt: fetched, ExpiresAt: fetched.Add(12 * time.Hour)}
	c15 := &Credential{Username: "AWS", Password: "p", FetchedAt: fetched, ExpiresAt: fetched.Add(15 * time.Second)}
	for _, tc := range []struct {
		name          string
		c             *Credential
		at            time.Duration
		valid, usable bool
	}{
		{"nil", nil, 0, false, false},
		{"no password", &Credential{Username: "AWS", FetchedAt: fetched, ExpiresAt: fetched.Add(time.Hour)}, 0, false, false},
		{"12h fresh", c12, 0, true, true},
		{"12h before margin", c12, 11*time.Hour - time.Second, true, true},
		{"12h at margin (1h)", c12, 11 * time.Hour, false, true},
		{"12h expired", c12, 12 * time.Hour, false, false},
		{"15s before margin", c15, 11 * time.Second, true, true},
		{"15s in margin (3.75s)", c15, 11250 * time.Millisecond, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := fetched.Add(tc.at)
			if got := tc.c.Valid(now); got != tc.valid {
				t.Errorf("Valid = %v, want %v", got, tc.valid)
			}
			if got := tc.c.Usable(now); got != tc.usable {
				t.Errorf("Usable = %v, want %v", got, tc.usable)
			}
		})
	}
}

func TestCredentialFrom(t *testing.T) {
	const secret = "pw-very-secret"
	good := base64.StdEncoding.EncodeToString([]byte("AWS:" + secret))
	b64 := func(s string) *string { return aws.String(base64.StdEncoding.EncodeToString([]byte(s))) }
	future, past := aws.Time(t0.Add(12*time.Hour)), aws.Time(t0.Add(-time.Second))
	data := func(tok *string, exp *time.Time) *ecr.GetAuthorizationTokenOutput {
		return &ecr.GetAuthorizationTokenOutput{AuthorizationData: []ecrtypes.AuthorizationData{{AuthorizationToken: tok, ExpiresAt: exp}}}
	}
	for _, tc := range []struct {
		name    string
		out     *ecr.GetAuthorizationTokenOutput
		wantErr string
	}{
		{"ok", data(aws.String(good), future), ""},
		{"nil output", nil, "no authorization data"},
		{"no data", &ecr.GetAuthorizationTokenOutput{}, "no authorization data"},
		{"nil token", data(nil, future), "malformed authorization token"},
		{"not base64", data(aws.String("AWS:"+secret+"!!"), future), "malformed authorization token"},
		{"no colon", data(b64("AWS"+secret), future), "malformed authorization token"},
		{"empty user", data(b64(":"+secret), future), "malformed authorization token"},
		{"empty password", data(b64("AWS:"), future), "malformed authorization token"},
		{"no expiry", data(aws.String(good), nil), "without an expiry"},
		{"expired", data(aws.String(good), past), "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := credentialFrom(tc.out, t0)
			if tc.wantErr == "" {
				if err != nil || c.Username != "AWS" || c.Password != secret || !c.ExpiresAt.Equal(*future) || !c.FetchedAt.Equal(t0) {
					t.Fatalf("credentialFrom = %v, %v", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			for _, s := range []string{secret, "very", good, "AWS" + secret} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q echoes the token", err)
				}
			}
		})
	}
}

// secretsOf lists every spelling of c's secret that must never be printed.
func secretsOf(c *Credential) []string {
	return []string{
		c.Password,
		c.AuthorizationHeader(),
		strings.TrimPrefix(c.AuthorizationHeader(), "Basic "),
		base64.StdEncoding.EncodeToString([]byte(c.Password)),
	}
}

func assertNoSecret(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret: %s", what, text)
		}
	}
}

func TestCredentialRedacted(t *testing.T) {
	c := &Credential{Username: "AWS", Password: "hunter2-secret", FetchedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	e := Entry{Host: host("111122223333", "us-east-1"), Credential: c, LastRefresh: t0}
	secrets := secretsOf(c)

	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%T"} {
		for name, v := range map[string]any{"value": *c, "pointer": c, "entry": e, "entry pointer": &e, "slice": []Entry{e}} {
			assertNoSecret(t, fmt.Sprintf("Sprintf(%s, %s)", verb, name), fmt.Sprintf(verb, v), secrets)
		}
	}
	if s := fmt.Sprint(*c); !strings.Contains(s, "REDACTED") || !strings.Contains(s, "AWS") {
		t.Errorf("String = %q, want the username and REDACTED", s)
	}
	assertNoSecret(t, "String", c.String(), secrets)
	assertNoSecret(t, "GoString", c.GoString(), secrets)
	for name, v := range map[string]any{"credential": c, "entry": e, "entries": []Entry{e}} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		assertNoSecret(t, "JSON of "+name, string(j), secrets)
	}
	txt, _ := c.MarshalText()
	assertNoSecret(t, "MarshalText", string(txt), secrets)

	var sbuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&sbuf, nil)).Info("x", "cred", c, "entry", e)
	assertNoSecret(t, "slog", sbuf.String(), secrets)
	if !strings.Contains(sbuf.String(), "expires_at") {
		t.Errorf("slog output lacks the credential's fields: %s", sbuf.String())
	}

	var zbuf bytes.Buffer
	zl := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&zbuf), zapcore.DebugLevel))
	zl.Info("x", zap.Any("cred", c), zap.Object("obj", c), zap.Any("entry", e), zap.Reflect("reflect", e), zap.Stringer("str", c))
	_ = zl.Sync()
	assertNoSecret(t, "zap", zbuf.String(), secrets)
}

// Every line and field the agent logs, and every entry it hands out, is free
// of the secret, through successes, failures and malformed answers.
func TestNoSecretInLogs(t *testing.T) {
	h := newHarness(t, 15*time.Second, 0.5)
	hh := host("111122223333", "us-east-1")
	svc := hh.Service()
	const badToken = "AWS-and-a-malformed-s3cr3t-token"
	h.ecr.raw = func(s ecrhost.Service, n int) *ecr.GetAuthorizationTokenOutput {
		tok := base64.StdEncoding.EncodeToString([]byte("AWS:" + password(s, n)))
		if n == 2 {
			tok = base64.StdEncoding.EncodeToString([]byte(badToken))
		}
		return &ecr.GetAuthorizationTokenOutput{AuthorizationData: []ecrtypes.AuthorizationData{{
			AuthorizationToken: aws.String(tok), ExpiresAt: aws.Time(h.clock.Now().Add(15 * time.Second)),
		}}}
	}
	h.ecr.fail = func(_ ecrhost.Service, n int) error {
		if n == 3 {
			return apiErr("AccessDeniedException", "not authorized")
		}
		return nil
	}
	var changes []Entry
	h.start(hh)
	for i := 0; i < 6; i++ {
		h.fireNext()
	}
	for len(h.changes) > 0 {
		changes = append(changes, <-h.changes)
	}
	var secrets []string
	for n := 0; n < h.ecr.count(svc); n++ {
		c := &Credential{Username: "AWS", Password: password(svc, n)}
		secrets = append(secrets, secretsOf(c)...)
	}
	secrets = append(secrets, badToken, base64.StdEncoding.EncodeToString([]byte(badToken)))

	logs := h.logs.All()
	if len(logs) < 6 {
		t.Fatalf("only %d log lines", len(logs))
	}
	sawMalformed := false
	for _, l := range logs {
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range l.Context {
			f.AddTo(enc)
		}
		text := l.Message + fmt.Sprintf(" %v", enc.Fields)
		assertNoSecret(t, "log line", text, secrets)
		if strings.Contains(text, "malformed authorization token") {
			sawMalformed = true
		}
	}
	if !sawMalformed {
		t.Error("the malformed token was not reported")
	}
	for _, e := range append(changes, h.agent.Snapshot()...) {
		text := fmt.Sprintf("%v %+v %#v %s", e, e, e, e.LastError)
		j, _ := json.Marshal(e)
		assertNoSecret(t, "entry", text+string(j), secrets)
	}
}
