package e2e

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Secret hygiene: after m.Run, TestMain greps every artifact of the run (daemon and
// containerd logs, status, doctor and metrics outputs, client stderr) for every secret
// any fake issued, whatever order the tests ran in.

// minSecretLen: shorter values could match by chance; every secret the fake issues is
// far longer (JWTs, 40-char keys, ~150-char ECR passwords).
const minSecretLen = 16

// kindJWTSignature is a JWT's third part, looked for alone: it is what makes the token
// usable.
const kindJWTSignature = "web identity token signature"

// issuedSecrets is every secret the fakes of this run issued, with its kind.
func issuedSecrets() []fakeaws.Secret {
	fakesMu.Lock()
	defer fakesMu.Unlock()
	var secrets []fakeaws.Secret
	for _, f := range fakes {
		secrets = append(secrets, withSignatures(f.SecretsWithKind())...)
	}
	return secrets
}

// withSignatures adds each JWT's signature as a secret of its own.
func withSignatures(in []fakeaws.Secret) []fakeaws.Secret {
	out := in
	for _, s := range in {
		if parts := strings.Split(s.Value, "."); len(parts) == 3 && len(parts[2]) >= 32 {
			out = append(out, fakeaws.Secret{Kind: kindJWTSignature, Value: parts[2]})
		}
	}
	return out
}

// leak is one secret found in one artifact. It holds no more of the secret than a
// redacted prefix, so printing it never leaks it again.
type leak struct {
	artifact string
	kind     string
	prefix   string // redact(secret)
	length   int
}

func (l leak) String() string {
	return fmt.Sprintf("%s contains a %s the fake issued (%s, %d chars)", l.artifact, l.kind, l.prefix, l.length)
}

// findLeaks reports every (artifact, secret) pair where the artifact holds the secret.
// Secrets are indexed by their first minSecretLen bytes, so the scan is one map lookup
// per byte of output rather than one pass per secret (runs issue thousands).
func findLeaks(arts []harness.Artifact, secrets []fakeaws.Secret) []leak {
	byPrefix := map[string][]fakeaws.Secret{}
	for _, s := range secrets {
		if len(s.Value) < minSecretLen {
			continue
		}
		p := s.Value[:minSecretLen]
		byPrefix[p] = append(byPrefix[p], s)
	}
	var leaks []leak
	for _, a := range arts {
		seen := map[string]bool{}
		for i := 0; i+minSecretLen <= len(a.Data); i++ {
			cands, ok := byPrefix[string(a.Data[i:i+minSecretLen])]
			if !ok {
				continue
			}
			for _, s := range cands {
				if seen[s.Value] || !strings.HasPrefix(string(a.Data[i:]), s.Value) {
					continue
				}
				seen[s.Value] = true
				leaks = append(leaks, leak{artifact: a.Name, kind: s.Kind, prefix: redact(s.Value), length: len(s.Value)})
			}
		}
	}
	return leaks
}

// checkNoSecrets fails t for every artifact holding one of secrets (a test's own,
// early check; the run-wide one is postRunHygiene).
func checkNoSecrets(t *testing.T, arts []harness.Artifact, secrets []fakeaws.Secret) {
	t.Helper()
	for _, l := range findLeaks(arts, secrets) {
		t.Error(l)
	}
}

// postRunHygiene checks every artifact of the run against every secret of every fake
// and prints the result to w (see hygieneReport).
func postRunHygiene(w io.Writer) bool {
	starts, logs := harness.DaemonLogCoverage()
	return hygieneReport(w, harness.Artifacts(), issuedSecrets(), starts, logs, fakeCount())
}

// hygieneReport prints one FAIL line per leak and a summary to w, and returns false on
// a leak or when fewer daemon logs were recorded than daemons started (the check
// would then miss one).
func hygieneReport(w io.Writer, arts []harness.Artifact, secrets []fakeaws.Secret, starts, logs int64, nfakes int) bool {
	total := 0
	for _, a := range arts {
		total += len(a.Data)
	}
	ok := true
	if logs < starts {
		fmt.Fprintf(w, "e2e secret hygiene: FAIL: %d daemon processes started but only %d logs recorded as artifacts; every daemon log must be checked\n", starts, logs)
		ok = false
	}
	leaks := findLeaks(arts, secrets)
	for _, l := range leaks {
		fmt.Fprintf(w, "e2e secret hygiene: FAIL: %s\n", l)
	}
	if len(leaks) > 0 {
		ok = false
	}
	verdict := "ok"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "e2e secret hygiene: %s: %d artifacts (%d daemon logs of %d starts, %d bytes) checked for %d secrets of %d fakes\n",
		verdict, len(arts), logs, starts, total, len(secrets), nfakes)
	return ok
}

func fakeCount() int {
	fakesMu.Lock()
	defer fakesMu.Unlock()
	return len(fakes)
}

// TestSecretHygiene proves the run-wide checker: secrets of every kind a real fake
// issues, planted in artifacts shaped like the run's (a JSON log line, a status error,
// a metrics label), are each reported with the artifact's name and the kind, and the
// report never holds the secret itself; clean artifacts and short values are not
// reported. The check of the run's own artifacts happens in TestMain after m.Run.
func TestSecretHygiene(t *testing.T) {
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Not added to fakes: these secrets are planted on purpose.
	jwt := f.MintToken(fakeaws.TokenSpec{})
	f.IssueECRToken(region)
	f.AddStaticCredentials("AKIDHYGIENETEST00001", "hygiene/SecretAccessKey+0123456789abcdefghij", "hygiene-session-token-0123456789abcdefghijklmnop", time.Time{})
	secrets := withSignatures(f.SecretsWithKind())
	kinds := map[string]bool{}
	for _, s := range secrets {
		kinds[s.Kind] = true
	}
	for _, k := range []string{fakeaws.SecretJWT, kindJWTSignature, fakeaws.SecretECRPassword, fakeaws.SecretECRUserPass,
		fakeaws.SecretECRBasic, fakeaws.SecretAccessKey, fakeaws.SecretSessionToken} {
		if !kinds[k] {
			t.Fatalf("the fake issued no %s: the test would not cover it", k)
		}
	}

	clean := []harness.Artifact{
		{Name: "clean/daemon-1.log", Data: []byte(`{"level":"info","msg":"hosts.toml written","registry":"` + ecrHost + `"}` + "\n")},
		{Name: "clean/metrics", Data: []byte(`ecr_node_auth_token_valid{registry="` + ecrHost + `"} 1` + "\n")},
		{Name: "clean/short", Data: []byte("AWS:short")},
	}
	if got := findLeaks(clean, secrets); len(got) != 0 {
		t.Fatalf("clean artifacts reported: %v", got)
	}

	shapes := []func(string) string{
		func(s string) string {
			return `{"level":"warn","msg":"refresh failed","error":"token ` + s + ` rejected"}` + "\n"
		},
		func(s string) string { return `{"registries":[{"lastError":"Basic ` + s + `"}]}` },
		func(s string) string { return `ecr_node_auth_aws_calls_total{api="` + s + `"} 1` + "\n" },
		func(s string) string { return s }, // the whole artifact
	}
	for i, s := range secrets {
		name := fmt.Sprintf("planted-%02d/%s", i, strings.ReplaceAll(s.Kind, " ", "-"))
		data := shapes[i%len(shapes)](s.Value)
		arts := append([]harness.Artifact{{Name: name, Data: []byte(data)}}, clean...)
		leaks := findLeaks(arts, []fakeaws.Secret{s})
		if len(leaks) != 1 {
			t.Errorf("%s planted in %s: %d reports, want 1: %v", s.Kind, name, len(leaks), leaks)
			continue
		}
		l := leaks[0]
		msg := l.String()
		if l.artifact != name || l.kind != s.Kind || !strings.Contains(msg, name) || !strings.Contains(msg, s.Kind) {
			t.Errorf("report %q: want the artifact %s and the kind %s", msg, name, s.Kind)
		}
		if strings.Contains(msg, s.Value) || strings.Contains(msg, s.Value[:minSecretLen]) {
			t.Errorf("the report for a %s shows the secret: %q", s.Kind, msg)
		}
	}

	// All at once, as the post-run check sees them: one report per planted secret, and
	// the run-wide report names the artifact and never the secret.
	var all []harness.Artifact
	for i, s := range secrets {
		all = append(all, harness.Artifact{Name: fmt.Sprintf("all/%02d", i), Data: []byte("x " + s.Value + " y")})
	}
	if got := findLeaks(append(all, clean...), secrets); len(got) < len(secrets) {
		t.Errorf("%d reports for %d planted secrets", len(got), len(secrets))
	}

	// The report TestMain prints: the run fails, naming artifact and kind only.
	var out strings.Builder
	planted := []harness.Artifact{clean[0], {Name: "TestX/daemon-1.log", Data: []byte(`{"msg":"sts","token":"` + jwt + `"}`)}}
	if hygieneReport(&out, planted, secrets, 1, 1, 1) {
		t.Errorf("a planted JWT passed the post-run check:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "FAIL: TestX/daemon-1.log contains a "+fakeaws.SecretJWT) || strings.Contains(out.String(), jwt[:minSecretLen]) {
		t.Errorf("post-run report does not name the artifact and kind, or shows the secret:\n%s", out.String())
	}
	out.Reset()
	if hygieneReport(&out, clean, secrets, 2, 1, 1) || !strings.Contains(out.String(), "2 daemon processes started but only 1 logs recorded") {
		t.Errorf("a daemon log that was never recorded passed the post-run check:\n%s", out.String())
	}
	out.Reset()
	if !hygieneReport(&out, clean, secrets, 1, 1, 1) || !strings.Contains(out.String(), "e2e secret hygiene: ok: 3 artifacts") {
		t.Errorf("clean artifacts failed the post-run check:\n%s", out.String())
	}
}
