package harness

import (
	"fmt"
	"io"
	"strings"

	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Secret hygiene: the suites (tests/e2e, tests/faults) grep every artifact of a run
// (daemon and containerd logs, status, doctor and metrics outputs, client stderr) for
// every secret any fake issued.

// MinSecretLen: shorter values could match by chance; every secret the fake issues is
// far longer (JWTs, 40-char keys, ~150-char ECR passwords).
const MinSecretLen = 16

// KindJWTSignature is a JWT's third part, looked for alone: it is what makes the token
// usable.
const KindJWTSignature = "web identity token signature"

// WithSignatures adds each JWT's signature as a secret of its own.
func WithSignatures(in []fakeaws.Secret) []fakeaws.Secret {
	out := in
	for _, s := range in {
		if parts := strings.Split(s.Value, "."); len(parts) == 3 && len(parts[2]) >= 32 {
			out = append(out, fakeaws.Secret{Kind: KindJWTSignature, Value: parts[2]})
		}
	}
	return out
}

// Leak is one secret found in one artifact. It holds no more of the secret than a
// redacted prefix, so printing it never leaks it again.
type Leak struct {
	Artifact string
	Kind     string
	Prefix   string // the secret's first characters only
	Length   int
}

func (l Leak) String() string {
	return fmt.Sprintf("%s contains a %s the fake issued (%s, %d chars)", l.Artifact, l.Kind, l.Prefix, l.Length)
}

// FindLeaks reports every (artifact, secret) pair where the artifact holds the secret.
// Secrets are indexed by their first MinSecretLen bytes, so the scan is one map lookup
// per byte of output rather than one pass per secret (runs issue thousands).
func FindLeaks(arts []Artifact, secrets []fakeaws.Secret) []Leak {
	byPrefix := map[string][]fakeaws.Secret{}
	for _, s := range secrets {
		if len(s.Value) < MinSecretLen {
			continue
		}
		p := s.Value[:MinSecretLen]
		byPrefix[p] = append(byPrefix[p], s)
	}
	var leaks []Leak
	for _, a := range arts {
		seen := map[string]bool{}
		for i := 0; i+MinSecretLen <= len(a.Data); i++ {
			cands, ok := byPrefix[string(a.Data[i:i+MinSecretLen])]
			if !ok {
				continue
			}
			for _, s := range cands {
				if seen[s.Value] || !strings.HasPrefix(string(a.Data[i:]), s.Value) {
					continue
				}
				seen[s.Value] = true
				leaks = append(leaks, Leak{Artifact: a.Name, Kind: s.Kind, Prefix: redact(s.Value), Length: len(s.Value)})
			}
		}
	}
	return leaks
}

// HygieneReport prints one FAIL line per leak and a summary to w, each line starting
// with suite ("e2e", "faults"), and returns false on a leak or when fewer daemon logs
// were recorded than daemons started (the check would then miss one).
func HygieneReport(w io.Writer, suite string, arts []Artifact, secrets []fakeaws.Secret, starts, logs int64, nfakes int) bool {
	total := 0
	for _, a := range arts {
		total += len(a.Data)
	}
	ok := true
	if logs < starts {
		fmt.Fprintf(w, "%s secret hygiene: FAIL: %d daemon processes started but only %d logs recorded as artifacts; every daemon log must be checked\n", suite, starts, logs)
		ok = false
	}
	leaks := FindLeaks(arts, secrets)
	for _, l := range leaks {
		fmt.Fprintf(w, "%s secret hygiene: FAIL: %s\n", suite, l)
	}
	if len(leaks) > 0 {
		ok = false
	}
	verdict := "ok"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%s secret hygiene: %s: %d artifacts (%d daemon logs of %d starts, %d bytes) checked for %d secrets of %d fakes\n",
		suite, verdict, len(arts), logs, starts, total, len(secrets), nfakes)
	return ok
}

// redact shows a secret's first characters only.
func redact(s string) string {
	if len(s) > 8 {
		return s[:8] + "…"
	}
	return "…"
}
