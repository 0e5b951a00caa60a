package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateTrust = flag.Bool("update-trust", false, "rewrite testdata/trust-policy/*.golden")

const eksIssuer = "https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"

// fakeJWT is a structurally valid, unsigned-looking JWT with the claims.
func fakeJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(map[string]string{"alg": "RS256", "kid": "k"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("signature-secret"))
}

func writeTrustConfig(t *testing.T, claims map[string]any, extra string) (cfg, token string) {
	t.Helper()
	dir := t.TempDir()
	token = fakeJWT(t, claims)
	tf := filepath.Join(dir, "token")
	os.WriteFile(tf, []byte(token+"\n"), 0o600)
	cfg = filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte("identity:\n  tokenFile: "+tf+"\n"+extra), 0o600)
	return cfg, token
}

func TestTrustPolicyGolden(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	cfgTok, token := writeTrustConfig(t, map[string]any{
		"iss": eksIssuer, "aud": []string{"sts.amazonaws.com"}, "sub": "system:serviceaccount:kube-system:ecr-node-auth", "exp": exp,
	}, "awsECR:\n  roleArn: arn:aws-cn:iam::444455556666:role/ecr-pull\n")
	cfgExpired, _ := writeTrustConfig(t, map[string]any{
		"iss": "https://issuer.example.com/cluster-1/", "aud": "sts.amazonaws.com", "sub": "system:serviceaccount:nodes:puller", "exp": time.Now().Add(-time.Hour).Unix(),
	}, "")
	cfgWrongAud, _ := writeTrustConfig(t, map[string]any{
		"iss": eksIssuer, "aud": "kubernetes.default.svc", "sub": "system:serviceaccount:kube-system:ecr-node-auth", "exp": exp,
	}, "")
	empty := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(empty, nil, 0o600)
	flagsOnly := []string{"--config", empty, "--account-id", "111122223333", "--issuer", eksIssuer, "--namespace", "kube-system", "--service-account", "ecr-node-auth"}
	withConfig := func(body string) []string {
		path := filepath.Join(t.TempDir(), "config.yaml")
		os.WriteFile(path, []byte(body), 0o600)
		args := append([]string{}, flagsOnly...)
		args[1] = path
		return append(args, "--explain")
	}
	tests := []struct {
		golden     string
		args       []string
		wantStderr string
	}{
		{"flags", flagsOnly, ""},
		{"flags-explain", append(append([]string{}, flagsOnly...), "--explain"), ""},
		// the config's features add their permissions to --explain.
		{"public-explain", withConfig("publicECR: true\n"), ""},
		{"mirrors-explain", withConfig("mirrors:\n  - upstream: docker.io\n    ecr: 111122223333.dkr.ecr.eu-west-1.amazonaws.com/docker-hub\n" +
			"  - upstream: ghcr.io\n    ecr: 111122223333.dkr.ecr.us-east-1.amazonaws.com/github\n"), ""},
		{"gov-audience", append(append([]string{}, flagsOnly...), "--partition", "aws-us-gov", "--audience", "sts.us-gov-west-1.amazonaws.com"), ""},
		// issuer, namespace, name from the token; account and partition from roleArn.
		{"from-token", []string{"--config", cfgTok}, ""},
		// an expired token still names its issuer and subject; path kept, trailing slash dropped.
		{"expired-token", []string{"--config", cfgExpired, "--account-id", "111122223333"}, ""},
		{"wrong-aud", []string{"--config", cfgWrongAud, "--account-id", "111122223333"}, "the token file's aud is kubernetes.default.svc, not sts.amazonaws.com"},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append([]string{"trust-policy"}, tt.args...), &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.wantStderr) || (tt.wantStderr == "" && errb.Len() > 0) {
				t.Errorf("stderr %q, want %q", errb.String(), tt.wantStderr)
			}
			if strings.Contains(out.String()+errb.String(), token) || strings.Contains(out.String(), "signature-secret") {
				t.Fatal("the token leaked")
			}
			golden := filepath.Join("testdata", "trust-policy", tt.golden+".golden")
			if *updateTrust {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				os.WriteFile(golden, out.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("output differs from %s:\n%s", golden, out.String())
			}
			// Without --explain the output is exactly one JSON document.
			if !strings.Contains(tt.golden, "explain") {
				var pol trustPolicy
				if err := json.Unmarshal(out.Bytes(), &pol); err != nil || len(pol.Statement) != 1 {
					t.Errorf("not a policy: %v", err)
				}
			}
		})
	}
}

func TestTrustPolicyErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(empty, nil, 0o600)
	base := func(kv ...string) []string {
		m := map[string]string{"--account-id": "111122223333", "--issuer": eksIssuer, "--namespace": "kube-system", "--service-account": "ecr-node-auth"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		args := []string{"trust-policy", "--config", empty}
		for _, k := range []string{"--account-id", "--issuer", "--namespace", "--service-account", "--partition", "--audience"} {
			if v, ok := m[k]; ok {
				args = append(args, k, v)
			}
		}
		return args
	}
	badSub, _ := writeTrustConfig(t, map[string]any{"iss": eksIssuer, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}, "")
	tests := []struct {
		args []string
		code int
		want string
	}{
		{base("--account-id", "12345"), 1, `--account-id "12345": an AWS account ID is exactly 12 digits`},
		{base("--account-id", ""), 1, "--account-id is required"},
		{base("--issuer", "http://oidc.example.com"), 1, "need an https:// issuer URL"},
		{base("--issuer", "oidc.example.com"), 1, "need an https:// issuer URL"},
		{base("--issuer", "https://oidc.example.com?x=1"), 1, "no user, query or fragment"},
		{base("--namespace", "Kube_System"), 1, "not a valid Kubernetes namespace"},
		{base("--service-account", "a/b"), 1, "not a valid Kubernetes service account name"},
		{base("--partition", "aws-mars"), 1, `--partition "aws-mars": use one of aws, aws-cn`},
		{base("--issuer", ""), 1, "default to the token file's claims, but web identity token file /var/run/secrets/ecr-node-auth/token does not exist"},
		{[]string{"trust-policy", "--config", badSub, "--account-id", "111122223333"}, 1, `has sub "alice", not system:serviceaccount:`},
		{[]string{"trust-policy", "--bogus"}, 2, "usage: ecr-node-auth trust-policy [--account-id ID] [--issuer URL] [--namespace NS] [--service-account NAME]"},
		{[]string{"trust-policy", "-h"}, 0, "--issuer, --namespace and --service-account to the iss and sub claims of identity.tokenFile"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := run(tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(errb.String(), tt.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d stderr %q; want %d with %q", tt.args, code, errb.String(), tt.code, tt.want)
		}
		if code == 1 && strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
			t.Errorf("%v: more than one line: %q", tt.args, errb.String())
		}
	}
}
