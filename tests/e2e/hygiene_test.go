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

// minSecretLen and kindJWTSignature: see harness.MinSecretLen, harness.KindJWTSignature.
const (
	minSecretLen     = harness.MinSecretLen
	kindJWTSignature = harness.KindJWTSignature
)

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

func withSignatures(in []fakeaws.Secret) []fakeaws.Secret { return harness.WithSignatures(in) }

func findLeaks(arts []harness.Artifact, secrets []fakeaws.Secret) []harness.Leak {
	return harness.FindLeaks(arts, secrets)
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
// and prints the result to w (see harness.HygieneReport).
func postRunHygiene(w io.Writer) bool {
	starts, logs := harness.DaemonLogCoverage()
	return hygieneReport(w, harness.Artifacts(), issuedSecrets(), starts, logs, fakeCount())
}

func hygieneReport(w io.Writer, arts []harness.Artifact, secrets []fakeaws.Secret, starts, logs int64, nfakes int) bool {
	return harness.HygieneReport(w, "e2e", arts, secrets, starts, logs, nfakes)
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
		if l.Artifact != name || l.Kind != s.Kind || !strings.Contains(msg, name) || !strings.Contains(msg, s.Kind) {
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
