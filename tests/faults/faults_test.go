// Package faults is the fault matrix (`make faults`): the real daemon process against the
// fake AWS of tests/fakeaws, one fault at a time, each in its own world. For every fault
// it checks that no valid credential is lost while it is valid, that the daemon recovers
// without a restart once the fault clears, that its log gives the cause in one line and
// that `status` shows it. TestMain prints one row per fault: injected, expected,
// observed, pass.
package faults

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	sts = fakeaws.ActionAssumeRoleWithWebIdentity
	ecr = fakeaws.ActionGetAuthorizationToken
)

// Lifetimes per kind of fault. Transient faults are retried within seconds, so 20 s
// ECR tokens outlive them; permanent ones are retried after one to two minutes
// (design.md), so their tokens must outlive the first refresh (half the lifetime, plus
// a tenth of jitter) plus those two minutes.
// Certs-dir faults are repaired by the 30 s reconcile; a 30 s call timeout needs room.
const (
	fastECR, fastSTS   = 20 * time.Second, 8 * time.Second
	slowECR, slowSTS   = 300 * time.Second, 20 * time.Second
	filesECR, filesSTS = 100 * time.Second, 30 * time.Second
	hangECR, hangSTS   = 150 * time.Second, 40 * time.Second
)

// fault is one row of the matrix. The standard flow: setup, start the daemon and wait for
// its first token, inject, wait until hit and the cause shows in the log and status,
// clear, wait for a new token (recovery). custom replaces the flow after start.
type fault struct {
	name     string
	injected string
	expected string

	ecrLifetime, stsLifetime time.Duration
	setup                    func(w *world)
	inject                   func(w *world)
	hit                      func(w *world) bool
	cause                    string // shown by a log line and by status (case-insensitive)
	// logLevel is the lowest level the cause's log line may have: warn unless set (an
	// operator at the default level must see a fault).
	logLevel      string
	clear         func(w *world)
	recoverWithin time.Duration
	// fileLoss: the fault itself removes hosts.toml; the loss watch pauses until the
	// daemon writes it again.
	fileLoss bool
	// after runs once the daemon recovered: extra checks; a non-empty answer fails.
	after  func(w *world) string
	custom func(w *world) (observed string, ok bool)
}

func stsError(code, msg string, status int) func(w *world) {
	return func(w *world) {
		w.fake.InjectErrorAlways(sts, fakeaws.APIError{Code: code, Message: msg, HTTPStatus: status})
	}
}

func ecrError(e fakeaws.APIError) func(w *world) {
	return func(w *world) { w.fake.InjectErrorAlways(ecr, e) }
}

func failed(a fakeaws.Action) func(w *world) bool {
	return func(w *world) bool { return w.failedCalls(a) > 0 }
}

func clearAction(a fakeaws.Action) func(w *world) {
	return func(w *world) { w.fake.ClearFaults(a) }
}

// never checks that STS was never handed a token in bad.
func never(bad *string) func(w *world) string {
	return func(w *world) string {
		for _, t := range w.fake.STSTokensSeen() {
			if t == *bad {
				return "the unusable token was sent to STS"
			}
		}
		return ""
	}
}

func faults() []fault {
	var badToken string
	rotateTo := func(tok func(w *world) string) func(w *world) {
		return func(w *world) {
			badToken = tok(w)
			if err := w.td.Rotate(badToken); err != nil {
				w.t.Fatal(err)
			}
		}
	}
	freshToken := func(w *world) {
		if err := w.td.Rotate(w.fake.MintToken(fakeaws.TokenSpec{})); err != nil {
			w.t.Fatal(err)
		}
	}
	transient := func(f fault) fault {
		f.ecrLifetime, f.stsLifetime, f.recoverWithin = fastECR, fastSTS, 15*time.Second
		return f
	}
	permanent := func(f fault) fault {
		f.ecrLifetime, f.stsLifetime, f.recoverWithin = slowECR, slowSTS, 150*time.Second
		return f
	}
	list := []fault{
		// STS, each documented InvalidIdentityToken message and the other codes (case 5).
		transient(fault{name: "sts-verification-key", injected: "STS InvalidIdentityToken \"Couldn't retrieve verification key…\"",
			expected: "transient: retried in seconds", cause: "signing keys",
			inject: stsError("InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider, please reference AssumeRoleWithWebIdentity documentation for requirements", 400),
			hit:    failed(sts), clear: clearAction(sts)}),
		permanent(fault{name: "sts-token-not-validated", injected: "STS InvalidIdentityToken \"could not be validated\"",
			expected: "permanent: OIDC provider missing or untrusted, retried in minutes", cause: "OIDC provider missing or untrusted",
			inject: stsError("InvalidIdentityToken", "The web identity token provided could not be validated", 400),
			hit:    failed(sts), clear: clearAction(sts)}),
		permanent(fault{name: "sts-thumbprint", injected: "STS InvalidIdentityToken thumbprint mismatch",
			expected: "permanent: thumbprint mismatch", cause: "thumbprint mismatch",
			inject: stsError("InvalidIdentityToken", "OpenIDConnect provider's HTTPS certificate doesn't match configured thumbprint", 400),
			hit:    failed(sts), clear: clearAction(sts)}),
		permanent(fault{name: "sts-audience", injected: "STS InvalidIdentityToken \"Incorrect token audience\"",
			expected: "permanent: audience named with the token's aud/iss/sub", cause: "token audience not accepted",
			inject: stsError("InvalidIdentityToken", "Incorrect token audience", 400),
			hit:    failed(sts), clear: clearAction(sts)}),
		permanent(fault{name: "sts-access-denied", injected: "STS AccessDenied \"Not authorized to perform sts:AssumeRoleWithWebIdentity\"",
			expected: "permanent: trust policy named with sub", cause: "trust policy rejected sub=",
			inject: stsError("AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity", 403),
			hit:    failed(sts), clear: clearAction(sts)}),
		transient(fault{name: "sts-idp-communication", injected: "STS IDPCommunicationError",
			expected: "transient", cause: "identity provider",
			inject: stsError("IDPCommunicationError", "Couldn't reach the identity provider", 400),
			hit:    failed(sts), clear: clearAction(sts)}),
		transient(fault{name: "sts-throttling", injected: "STS Throttling \"Rate exceeded\"",
			expected: "throttled: retried in seconds", cause: "throttl",
			inject: func(w *world) { w.fake.InjectErrorAlways(sts, fakeaws.ErrSTSThrottling) },
			hit:    failed(sts), clear: clearAction(sts)}),
		transient(fault{name: "sts-500", injected: "STS 500 InternalFailure",
			expected: "transient", cause: "InternalFailure",
			inject: func(w *world) { w.fake.InjectErrorAlways(sts, fakeaws.ErrInternalFailure) },
			hit:    failed(sts), clear: clearAction(sts)}),
		transient(fault{name: "sts-503", injected: "STS 503 ServiceUnavailable",
			expected: "transient", cause: "ServiceUnavailable",
			inject: func(w *world) { w.fake.InjectErrorAlways(sts, fakeaws.ErrServiceUnavailable) },
			hit:    failed(sts), clear: clearAction(sts)}),
		{name: "sts-timeout", injected: "STS never answers", expected: "transient: the call times out, retried",
			ecrLifetime: hangECR, stsLifetime: hangSTS, recoverWithin: 40 * time.Second, cause: "timed out",
			inject: func(w *world) { w.fake.HangConnections(sts, -1) },
			hit:    func(w *world) bool { return w.fake.Calls(sts) > 1 }, clear: clearAction(sts)},
		transient(fault{name: "sts-connection-refused", injected: "STS port closed (ECONNREFUSED)",
			expected: "transient", cause: "connection refused",
			inject: func(w *world) { w.stsFwd.refuse() },
			hit:    func(w *world) bool { return true }, clear: func(w *world) { w.stsFwd.accept() }}),

		// ECR (cases 9, 10).
		transient(fault{name: "ecr-throttling", injected: "ECR ThrottlingException", expected: "throttled: retried in seconds",
			cause: "throttl", inject: ecrError(fakeaws.ErrECRThrottling), hit: failed(ecr), clear: clearAction(ecr)}),
		transient(fault{name: "ecr-500", injected: "ECR 500 ServerException", expected: "transient",
			cause: "ServerException", inject: ecrError(fakeaws.ErrECRServerException), hit: failed(ecr), clear: clearAction(ecr)}),
		transient(fault{name: "ecr-503", injected: "ECR 503 ServiceUnavailableException", expected: "transient",
			cause: "ServiceUnavailable", inject: ecrError(fakeaws.APIError{Code: "ServiceUnavailableException", Message: "Service unavailable", HTTPStatus: 503}),
			hit: failed(ecr), clear: clearAction(ecr)}),
		permanent(fault{name: "ecr-access-denied", injected: "ECR AccessDeniedException", expected: "permanent: names the missing ecr:GetAuthorizationToken permission",
			cause: "access denied", inject: ecrError(fakeaws.APIError{Code: "AccessDeniedException", Message: "User is not authorized to perform: ecr:GetAuthorizationToken", HTTPStatus: 400}),
			hit: failed(ecr), clear: clearAction(ecr)}),
		{name: "ecr-timeout", injected: "ECR never answers", expected: "transient: the call times out, retried",
			ecrLifetime: hangECR, stsLifetime: hangSTS, recoverWithin: 40 * time.Second, cause: "timed out",
			inject: func(w *world) { w.fake.HangConnections(ecr, -1) },
			hit:    func(w *world) bool { return w.fake.Calls(ecr) > 1 }, clear: clearAction(ecr)},
		transient(fault{name: "ecr-connection-refused", injected: "ECR port closed (ECONNREFUSED)", expected: "transient",
			cause: "connection refused", inject: func(w *world) { w.ecrFwd.refuse() },
			hit: func(w *world) bool { return true }, clear: func(w *world) { w.ecrFwd.accept() }}),
		transient(fault{name: "clock-skew", injected: "AWS clock (and response Date) 30 min ahead of the node",
			expected: "the SDK corrects the skew from the response Date; tokens keep coming",
			inject:   func(w *world) { w.skew.set(30 * time.Minute) },
			custom:   skewFlow}),

		// The token file (cases 2, 3).
		transient(fault{name: "token-missing", injected: "token file removed (..data symlink gone)",
			expected: "no STS call; cached credentials served; picked up when back", cause: "does not exist",
			inject: func(w *world) { _ = os.Remove(filepath.Join(w.td.Dir, "..data")) },
			hit:    func(w *world) bool { return true }, clear: freshToken}),
		transient(fault{name: "token-empty", injected: "token file empty (0 bytes)",
			expected: "treated as a write in progress; never sent to STS", cause: "empty",
			inject: rotateTo(func(*world) string { return "" }), hit: func(w *world) bool { return true },
			clear: freshToken, after: never(&badToken)}),
		transient(fault{name: "token-garbled", injected: "token file holds text, not a JWT",
			expected: "never sent to STS; the log names the file, never its content", cause: "jwt",
			inject: rotateTo(func(*world) string { return "log line appended by a broken writer\n" }), hit: func(w *world) bool { return true },
			clear: freshToken, after: never(&badToken)}),
		transient(fault{name: "token-expired", injected: "token file holds a JWT expired 60 s ago",
			expected: "\"expired … waiting for kubelet rotation\"; never sent to STS", cause: "expired",
			inject: rotateTo(func(w *world) string {
				return w.fake.MintToken(fakeaws.TokenSpec{IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Minute)})
			}), hit: func(w *world) bool { return true }, clear: freshToken, after: never(&badToken)}),
		transient(fault{name: "token-rotated-mid-read", injected: "token swapped 100 times in 3 s while STS is called",
			expected: "every STS call carries a whole token; the last one wins", custom: rotationFlow}),

		// The certs dir.
		{name: "certs-dir-missing", injected: "rm -rf certs dir", expected: "dir and hosts.toml re-created by the reconcile",
			ecrLifetime: filesECR, stsLifetime: filesSTS, recoverWithin: 40 * time.Second, fileLoss: true, cause: "re-created", logLevel: "info",
			inject: func(w *world) { _ = os.RemoveAll(w.certsDir) }, hit: func(*world) bool { return true }},
		{name: "certs-dir-wiped", injected: "the registry's dir in certs.d deleted", expected: "hosts.toml re-created by the reconcile",
			ecrLifetime: filesECR, stsLifetime: filesSTS, recoverWithin: 40 * time.Second, fileLoss: true, cause: "re-created", logLevel: "info",
			inject: func(w *world) { _ = os.RemoveAll(filepath.Dir(harness.HostsPath(w.certsDir, ecrHost))) }, hit: func(*world) bool { return true }},
		{name: "certs-dir-read-only", injected: "certs dir remounted read-only", expected: "old file kept; write retried; status shows the error",
			ecrLifetime: filesECR, stsLifetime: filesSTS, recoverWithin: 40 * time.Second, cause: "read-only file system",
			inject: func(w *world) {
				mustRun(w, "mount", "--bind", w.certsDir, w.certsDir)
				mustRun(w, "mount", "-o", "remount,bind,ro", w.certsDir)
			},
			hit: func(*world) bool { return true }, clear: func(w *world) { mustRun(w, "umount", w.certsDir) }},
		{name: "certs-dir-full", injected: "certs dir on a full 1 MiB tmpfs", expected: "old file kept; write retried; status shows the error",
			ecrLifetime: filesECR, stsLifetime: filesSTS, recoverWithin: 40 * time.Second, cause: "no space left",
			setup: func(w *world) {
				if err := os.MkdirAll(w.certsDir, 0o755); err != nil {
					w.t.Fatal(err)
				}
				mustRun(w, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", w.certsDir)
			},
			inject: fillCertsDir, hit: func(*world) bool { return true },
			clear: func(w *world) { _ = os.Remove(filepath.Join(w.certsDir, "filler")) }},

		// The process.
		{name: "sigkill-mid-write", injected: "SIGKILL 6 times within 3 s of start, around its writes (4 s tokens)",
			expected:    "hosts.toml always whole (containerd's loader) with a token AWS issued; restart recovers",
			ecrLifetime: 4 * time.Second, stsLifetime: 6 * time.Second, custom: killFlow},
		{name: "sighup-invalid-config", injected: "config replaced by an invalid one, then SIGHUP",
			expected:    "reload rejected in one line naming the key and line; old config kept serving",
			ecrLifetime: 10 * time.Second, stsLifetime: fastSTS, custom: sighupFlow},
		{name: "stale-socket", injected: "socket path holds a stale socket, then a regular file",
			expected:    "stale socket replaced; a regular file refused with an error naming it",
			ecrLifetime: fastECR, stsLifetime: fastSTS, custom: socketFlow},
	}
	return list
}

func mustRun(w *world, name string, args ...string) {
	w.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		w.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// fillCertsDir fills the tmpfs certs dir so that the next hosts.toml cannot be written.
func fillCertsDir(w *world) {
	f, err := os.Create(filepath.Join(w.certsDir, "filler"))
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}

// envRun turns the matrix on: it starts ~30 daemons for about 5 minutes, so `go test
// ./...` leaves it to `make faults` (which .ci/run calls).
const envRun = "ECR_NODE_AUTH_FAULTS"

func TestFaults(t *testing.T) {
	if os.Getenv(envRun) != "1" {
		t.Skipf("the fault matrix runs with %s=1: make faults", envRun)
	}
	harness.RequireRoot(t)
	if daemonErr != nil {
		t.Fatalf("daemon build: %v", daemonErr)
	}
	only := os.Getenv("FAULTS")
	for _, f := range faults() {
		if only != "" && !strings.Contains(","+only+",", ","+f.name+",") {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			r := row{fault: f.name, injected: f.injected, expected: f.expected}
			defer func() { r.pass = r.pass && !t.Failed(); rows.add(r) }()
			w := newWorld(t, &f)
			if f.setup != nil {
				f.setup(w)
			}
			if f.custom != nil && f.inject == nil {
				r.observed, r.pass = f.custom(w)
			} else if f.custom != nil {
				w.start()
				f.inject(w)
				r.observed, r.pass = f.custom(w)
			} else {
				r.observed, r.pass = standardFlow(w, &f)
			}
			if !r.pass {
				t.Errorf("%s: %s", f.name, r.observed)
			}
		})
	}
}

// standardFlow runs inject → hit → clear → recover and judges the four promises.
func standardFlow(w *world, f *fault) (string, bool) {
	tok1 := w.start()
	pid := w.d.PID()
	if f.fileLoss {
		w.lossPause.Store(true)
	}
	injected := time.Now()
	f.inject(w)
	var st *status
	var logLine string
	ok := harness.WaitFor(f.ecrLifetime+45*time.Second, 200*time.Millisecond, func() bool {
		if !f.hit(w) {
			return false
		}
		level := f.logLevel
		if level == "" {
			level = "warn"
		}
		if lines := w.logLines(f.cause, level); len(lines) > 0 {
			logLine = lines[0]
		}
		if s, err := w.status(); err == nil && containsFold(s.problems(), f.cause) || f.fileLoss {
			st = s
		}
		return logLine != "" && st != nil
	})
	hitAfter := time.Since(injected).Round(100 * time.Millisecond)
	var obs []string
	if !ok {
		s, _ := w.status()
		shown := ""
		if s != nil {
			shown = s.problems()
		}
		return fmt.Sprintf("after %v: hit=%v, log line with %q: %v, status: %q", hitAfter, f.hit(w), f.cause, logLine != "", clip(shown, 160)), false
	}
	obs = append(obs, fmt.Sprintf("seen after %v; log: %s", hitAfter, logSummary(logLine)))
	if st != nil && !f.fileLoss {
		obs = append(obs, "status: "+clip(st.problems(), 120))
	}
	if f.clear != nil {
		f.clear(w)
	}
	cleared := time.Now()
	var tok2 fakeaws.ECRToken
	var recovered bool
	if f.fileLoss {
		tok2 = w.waitToken(f.recoverWithin, func(fakeaws.ECRToken) bool { return true })
		recovered = true
		w.lossPause.Store(false)
	} else {
		tok2, recovered = w.newer(tok1, f.recoverWithin)
	}
	pass := true
	if !recovered {
		pass = false
		obs = append(obs, fmt.Sprintf("NOT recovered within %v of clearing", f.recoverWithin))
	} else {
		obs = append(obs, fmt.Sprintf("recovered %v after clearing", time.Since(cleared).Round(100*time.Millisecond)))
		_ = tok2
		// The error stays in status until the next success; after it, none.
		if !harness.WaitFor(10*time.Second, 200*time.Millisecond, func() bool {
			s, err := w.status()
			return err == nil && s.Ready && !containsFold(s.problems(), f.cause)
		}) {
			pass = false
			s, _ := w.status()
			if s != nil {
				obs = append(obs, "status after recovery still shows: "+clip(s.problems(), 120))
			}
		}
	}
	if w.d.PID() != pid || !w.d.Alive() {
		pass = false
		obs = append(obs, "the daemon restarted or died")
	}
	if lost := w.lost(); lost != "" {
		pass = false
		obs = append(obs, "valid credential lost: "+lost)
	}
	if f.after != nil {
		if msg := f.after(w); msg != "" {
			pass = false
			obs = append(obs, msg)
		}
	}
	return strings.Join(obs, "; "), pass
}

// skewFlow: with the fake's clock 30 min ahead, the daemon still gets a new token before
// the old one expires (the SDK's clock-skew correction from the response Date).
func skewFlow(w *world) (string, bool) {
	tok1, _ := w.current()
	before := w.failedCalls(ecr)
	tok2, ok := w.newer(tok1, fastECR)
	skewed := w.failedCalls(ecr) - before
	w.skew.set(0)
	if !ok {
		s, _ := w.status()
		shown := ""
		if s != nil {
			shown = s.problems()
		}
		return fmt.Sprintf("no new token while skewed (%d ECR calls refused); status: %s", skewed, clip(shown, 160)), false
	}
	_ = tok2
	obs := fmt.Sprintf("new token while skewed; %d signature-expired answers absorbed by the SDK's skew correction", skewed)
	if lost := w.lost(); lost != "" {
		return obs + "; valid credential lost: " + lost, false
	}
	return obs, true
}

// rotationFlow swaps the token 100 times in 3 s around the daemon's STS calls.
func rotationFlow(w *world) (string, bool) {
	w.start()
	stsBefore := w.fake.Calls(sts)
	var last string
	deadline := time.Now().Add(fastSTS)
	rotations := 0
	// Rotate until STS was called at least twice during the swaps.
	for time.Now().Before(deadline.Add(10*time.Second)) && (w.fake.Calls(sts)-stsBefore < 2 || rotations < 100) {
		last = w.fake.MintToken(fakeaws.TokenSpec{})
		if err := w.td.Rotate(last); err != nil {
			return err.Error(), false
		}
		rotations++
		time.Sleep(30 * time.Millisecond)
	}
	calls := w.fake.Calls(sts) - stsBefore
	if calls == 0 {
		return fmt.Sprintf("%d rotations, but STS was never called meanwhile", rotations), false
	}
	if n := w.failedCalls(sts); n > 0 {
		return fmt.Sprintf("STS refused %d calls: a torn or stale token was sent", n), false
	}
	ok := harness.WaitFor(2*fastSTS, 100*time.Millisecond, func() bool {
		seen := w.fake.STSTokensSeen()
		return len(seen) > 0 && seen[len(seen)-1] == last
	})
	if !ok {
		return fmt.Sprintf("%d rotations, %d STS calls; the last token never reached STS", rotations, calls), false
	}
	if lost := w.lost(); lost != "" {
		return "valid credential lost: " + lost, false
	}
	return fmt.Sprintf("%d rotations, %d STS calls during them, all accepted; the last token reached STS", rotations, calls), true
}

// killFlow SIGKILLs the daemon around its writes and checks the file each time.
func killFlow(w *world) (string, bool) {
	const kills = 6
	for i := range kills {
		w.d.Start()
		time.Sleep(time.Duration(i) * 500 * time.Millisecond)
		w.d.Kill()
		p, err := harness.ParseHostsDir(w.certsDir, ecrHost)
		if err == nil {
			_, issued := w.fake.LookupECRToken(p.Password)
			if !strings.HasPrefix(string(p.Raw), harness.ManagedMarker) || !issued {
				return fmt.Sprintf("kill %d: hosts.toml without the marker or with a token AWS never issued", i+1), false
			}
		} else if i > 0 {
			// Before the first write (kill 1 at once) there may be no file yet.
			if _, serr := os.Stat(harness.HostsPath(w.certsDir, ecrHost)); serr == nil {
				return fmt.Sprintf("kill %d: hosts.toml unreadable by containerd's loader: %v", i+1, err), false
			}
		}
		if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(harness.HostsPath(w.certsDir, ecrHost)), ".*")); len(tmps) > 1 {
			w.t.Logf("kill %d: leftover temp files %v (cleaned at the next start)", i+1, tmps)
		}
	}
	w.d.Start()
	w.waitToken(30*time.Second, func(fakeaws.ECRToken) bool { return true })
	return fmt.Sprintf("%d kills: the file was whole each time; restarted daemon wrote a valid token", kills), true
}

// sighupFlow reloads an invalid config, then a fixed one.
func sighupFlow(w *world) (string, bool) {
	tok1 := w.start()
	good, err := os.ReadFile(w.d.ConfigFile)
	if err != nil {
		return err.Error(), false
	}
	bad := strings.Replace(string(good), "identity:\n", "identity:\n  tokenFiel: /typo\n", 1)
	if err := os.WriteFile(w.d.ConfigFile, []byte(bad), 0o600); err != nil {
		return err.Error(), false
	}
	_ = syscall.Kill(w.d.PID(), syscall.SIGHUP)
	var line string
	var st *status
	if !harness.WaitFor(10*time.Second, 100*time.Millisecond, func() bool {
		if l := w.logLines("reload rejected", "warn"); len(l) > 0 {
			line = l[0]
		}
		s, err := w.status()
		if err == nil && containsFold(s.problems(), "rejected") {
			st = s
		}
		return line != "" && st != nil
	}) {
		return fmt.Sprintf("no rejection in log (%v) or status (%v)", line != "", st != nil), false
	}
	obs := []string{"log: " + logSummary(line), "status: " + clip(st.problems(), 100)}
	if !containsFold(line, "tokenFiel") {
		return strings.Join(append(obs, "the log line does not name the bad key"), "; "), false
	}
	// The old config keeps working: the next token still arrives.
	if _, ok := w.newer(tok1, 20*time.Second); !ok {
		return strings.Join(append(obs, "no refresh under the old config"), "; "), false
	}
	obs = append(obs, "old config kept refreshing")
	if err := os.WriteFile(w.d.ConfigFile, good, 0o600); err != nil {
		return err.Error(), false
	}
	_ = syscall.Kill(w.d.PID(), syscall.SIGHUP)
	if !harness.WaitFor(10*time.Second, 100*time.Millisecond, func() bool {
		s, err := w.status()
		return err == nil && !containsFold(s.problems(), "rejected") && len(w.logLines("config reloaded", "info")) > 0
	}) {
		return strings.Join(append(obs, "the fixed config was not taken"), "; "), false
	}
	if lost := w.lost(); lost != "" {
		return strings.Join(append(obs, "valid credential lost: "+lost), "; "), false
	}
	return strings.Join(append(obs, "fixed config reloaded"), "; "), true
}

// socketFlow: a stale socket at the path, then a regular file.
func socketFlow(w *world) (string, bool) {
	sock := w.d.Socket
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err.Error(), false
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a socket file nobody listens on: what a SIGKILLed daemon leaves
	w.start()
	if len(w.logLines("stale socket", "info")) == 0 {
		return "the stale socket was not reported", false
	}
	if _, err := w.status(); err != nil {
		return "status after replacing the stale socket: " + err.Error(), false
	}
	obs := []string{"stale socket replaced, status answers"}
	w.stopLossWatch()
	w.d.Stop()
	_ = os.Remove(sock)
	if err := os.WriteFile(sock, []byte("not a socket\n"), 0o600); err != nil {
		return err.Error(), false
	}
	w.d.Start()
	if !harness.WaitFor(10*time.Second, 100*time.Millisecond, func() bool { return !w.d.Alive() }) {
		return strings.Join(append(obs, "the daemon started over a regular file at the socket path"), "; "), false
	}
	lines := w.logLines("not a socket", "error")
	if len(lines) == 0 || !strings.Contains(lines[0], sock) {
		return strings.Join(append(obs, "exit without a line naming the path"), "; "), false
	}
	if b, _ := os.ReadFile(sock); string(b) != "not a socket\n" {
		return strings.Join(append(obs, "the regular file was changed"), "; "), false
	}
	obs = append(obs, "regular file refused: "+logSummary(lines[0]))
	_ = os.Remove(sock)
	w.d.Start()
	if !harness.WaitFor(10*time.Second, 100*time.Millisecond, func() bool { _, err := w.status(); return err == nil }) {
		return strings.Join(append(obs, "no start after removing the file"), "; "), false
	}
	return strings.Join(append(obs, "started once it was removed"), "; "), true
}

func containsFold(s, sub string) bool {
	return sub != "" && strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// logSummary shows a JSON log line's level, message and error.
func logSummary(line string) string {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return clip(line, 120)
	}
	s := fmt.Sprintf("%v %q", m["level"], m["msg"])
	if e, ok := m["error"]; ok {
		s += fmt.Sprintf(" error=%q", clip(fmt.Sprint(e), 140))
	}
	return s
}
