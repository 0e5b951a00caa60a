package e2e

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// The scenarios run in this order. Every artifact they record is checked for the
// fakes' secrets after the whole run (TestMain, hygiene_test.go).

// TestHarnessSanity proves the harness without the daemon: containerd pulls with a
// hand-written hosts.toml carrying a token minted by the fake, is denied without the
// header and with an expired token, and the hosts.toml checker rejects what containerd
// would silently ignore.
func TestHarnessSanity(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{})
		pid := w.ctr.PID()
		base := harness.HostsFile{Endpoint: w.reg.URL(), CA: w.reg.CAFile()}

		if err := harness.WriteHostsFile(w.certsDir, ecrHost, base); err != nil {
			t.Fatal(err)
		}
		w.mustBeDenied("hosts.toml without Authorization")

		withAuth := base
		withAuth.Password = w.fake.IssueECRToken(region)
		if err := harness.WriteHostsFile(w.certsDir, ecrHost, withAuth); err != nil {
			t.Fatal(err)
		}
		p, err := harness.ParseHostsDir(w.certsDir, ecrHost)
		if err != nil {
			t.Fatalf("hand-written hosts.toml: %v", err)
		}
		if p.Endpoint != w.reg.URL() || p.User != "AWS" || p.Password != withAuth.Password {
			t.Fatalf("containerd's loader read endpoint %q user %q, want %q AWS", p.Endpoint, p.User, w.reg.URL())
		}
		before := w.ctr.LoadedHostDirCount()
		w.mustPull("hosts.toml with a valid token")
		if w.ctr.LoadedHostDirCount() <= before {
			t.Errorf("containerd's log shows no 'loading host directory' for the pull")
		}

		// An expired token is refused by the gate, through containerd.
		w.fake.SetECRTokenLifetime(time.Second)
		expiring := base
		expiring.Password = w.fake.IssueECRToken(region)
		if err := harness.WriteHostsFile(w.certsDir, ecrHost, expiring); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond)
		w.mustBeDenied("hosts.toml with an expired token")

		// The checker fails where containerd's loader silently falls back.
		path := harness.HostsPath(w.certsDir, ecrHost)
		good := withAuth.Render()
		for name, content := range map[string]string{
			"truncated mid-table": good[:len(good)-20],
			"server only":         good[:strings.Index(good, "[host.")],
			"empty":               "",
		} {
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := harness.ParseHostsDir(w.certsDir, ecrHost)
			if err == nil && p.Authorization != "" {
				t.Errorf("checker accepted a %s hosts.toml", name)
			}
		}

		// The watcher TestKillDuringRefresh relies on catches a writer that is not atomic.
		managed := withAuth
		managed.Managed = true
		watch := watchHosts(w)
		content := []byte(managed.Render())
		for range 50 {
			f, err := os.Create(path) // truncates in place, as a careless writer does
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.Write(content[:len(content)/2])
			time.Sleep(2 * time.Millisecond)
			_, _ = f.Write(content[len(content)/2:])
			f.Close()
			time.Sleep(2 * time.Millisecond)
		}
		reads, bad, first := watch.stop()
		if bad == 0 {
			t.Errorf("the hosts.toml watcher saw no torn file in %d reads of a non-atomic writer", reads)
		} else {
			t.Logf("the watcher caught %d torn reads of %d from a non-atomic writer, e.g. %s", bad, reads, strings.TrimPrefix(first, path+": "))
		}
		w.containerdSame(pid)
	})
}

// TestCore: denied before the daemon has written credentials; the daemon writes
// hosts.toml; every hosts.toml parses with containerd's loader; the pull succeeds.
func TestCore(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{})
		pid := w.ctr.PID()
		d, _ := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))

		// A managed file without credentials (as left by a previous install): containerd
		// reaches the registry and is refused.
		stub := harness.HostsFile{Endpoint: w.reg.URL(), CA: w.reg.CAFile(), Managed: true}
		if err := harness.WriteHostsFile(w.certsDir, ecrHost, stub); err != nil {
			t.Fatal(err)
		}
		w.mustBeDenied("before the daemon")

		start := time.Now()
		d.Start()
		pw := w.waitHosts(30*time.Second, nil)
		t.Logf("daemon (pid %d) wrote credentials in %v", d.PID(), time.Since(start).Round(time.Millisecond))

		all, err := harness.ParseAllHosts(w.certsDir)
		if err != nil {
			t.Fatalf("certs.d: %v", err)
		}
		if len(all) != 1 || all[ecrHost] == nil {
			t.Errorf("certs.d holds %d host dirs, want exactly %s", len(all), ecrHost)
		}
		if p := all[ecrHost]; p != nil && p.Mode != 0o600 {
			t.Errorf("hosts.toml mode %v, want 0600", p.Mode)
		}
		if ok, err := w.registryAccepts(pw); err != nil || !ok {
			t.Errorf("the registry does not accept the daemon's token (err %v)", err)
		}
		w.mustPull("with the daemon's hosts.toml")

		if st, out, err := status(d); err != nil {
			t.Errorf("status: %v", err)
		} else {
			tok, _ := w.fake.LookupECRToken(pw)
			found := false
			for _, r := range st.Registries {
				if r.Host != ecrHost {
					continue
				}
				found = true
				if !r.Valid || r.ExpiresAt.Sub(tok.Expires).Abs() > 2*time.Second || r.LastError != "" {
					t.Errorf("status for %s: valid=%v expiresAt=%v (token expires %v) lastError=%q", ecrHost, r.Valid, r.ExpiresAt, tok.Expires, r.LastError)
				}
			}
			if !found || !st.Ready {
				t.Errorf("status: ready=%v, want true and %s listed:\n%s", st.Ready, ecrHost, out)
			}
		}
		if !d.Alive() {
			t.Fatalf("daemon exited: %v", d.ExitErr())
		}
		if !d.Stop() {
			t.Errorf("daemon did not exit within 10s of SIGTERM")
		}
		w.containerdSame(pid)
	})
}

// TestECRTokenExpiry: ECR tokens live 15 s; pulls keep succeeding across at least three
// expiries with one containerd process, and the first token really expired.
func TestECRTokenExpiry(t *testing.T) {
	const lifetime = 15 * time.Second
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{ECRTokenLifetime: lifetime})
		pid := w.ctr.PID()
		d, _ := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))
		d.Start()
		first := w.waitHosts(30*time.Second, nil)
		firstTok, _ := w.fake.LookupECRToken(first)
		end := firstTok.Expires.Add(2*lifetime + 5*time.Second) // past three expiries
		seen := []string{first}
		pulls := 0
		for time.Now().Before(end) {
			if err := w.pull(); err != nil {
				t.Fatalf("pull %d at %v after the first token failed (denied=%v): %v",
					pulls+1, time.Since(firstTok.Expires.Add(-lifetime)).Round(time.Second), harness.IsDenied(err), err)
			}
			pulls++
			if pw, err := w.hosts(); err != nil {
				t.Fatalf("hosts.toml: %v", err)
			} else if !slices.Contains(seen, pw) {
				seen = append(seen, pw)
			}
			time.Sleep(1500 * time.Millisecond)
		}
		t.Logf("%d pulls over %v, %d distinct tokens in hosts.toml, %d GetAuthorizationToken calls",
			pulls, time.Since(firstTok.Expires.Add(-lifetime)).Round(time.Second), len(seen),
			w.fake.Successes(fakeaws.ActionGetAuthorizationToken))
		if len(seen) < 4 {
			t.Errorf("hosts.toml held %d distinct tokens across three expiries, want >= 4", len(seen))
		}
		if ok, err := w.registryAccepts(first); err != nil || ok {
			t.Errorf("first token still accepted (%v, err %v): the expiry was not exercised", ok, err)
		}
		if !d.Alive() {
			t.Fatalf("daemon exited: %v", d.ExitErr())
		}
		w.containerdSame(pid)
		if _, err := d.Status(); err != nil {
			t.Errorf("status: %v", err)
		}
	})
}

// TestTokenRotation: the projected token is rotated by the kubelet's ..data swap; the
// next STS call carries the new token, and once the old token has expired the daemon
// still gets credentials (so it really uses the new one).
func TestTokenRotation(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{STSCredentialLifetime: 12 * time.Second, ECRTokenLifetime: 20 * time.Second})
		pid := w.ctr.PID()
		oldExp := time.Now().Add(25 * time.Second)
		oldTok := w.fake.MintToken(fakeaws.TokenSpec{ExpiresAt: oldExp})
		d, td := w.newDaemon(oldTok)
		d.Start()
		w.waitHosts(30*time.Second, nil)
		seen := w.fake.STSTokensSeen()
		if len(seen) == 0 || !slices.Contains(seen, oldTok) {
			t.Fatalf("STS never saw the first token (%d calls)", len(seen))
		}

		newTok := w.fake.MintToken(fakeaws.TokenSpec{})
		rotated := time.Now()
		if err := td.Rotate(newTok); err != nil {
			t.Fatal(err)
		}
		n0 := len(w.fake.STSTokensSeen())
		if !harness.WaitFor(40*time.Second, 200*time.Millisecond, func() bool {
			return slices.Contains(w.fake.STSTokensSeen(), newTok)
		}) {
			t.Fatalf("STS did not see the rotated token within 40s")
		}
		t.Logf("STS saw the rotated token %v after the ..data swap", time.Since(rotated).Round(time.Millisecond))
		// The next STS call carries it. (One call may have read the file just before the
		// swap and still been in flight: tolerate one old token right at the swap.)
		next := w.fake.STSTokensSeen()[n0:]
		if len(next) > 0 && next[0] == oldTok {
			t.Logf("one STS call in flight at the swap carried the old token")
			next = next[1:]
		}
		if len(next) == 0 || next[0] != newTok {
			t.Errorf("the first STS call after the swap did not carry the new token")
		}

		// After the old token's expiry, a successful STS call can only carry the new one.
		time.Sleep(time.Until(oldExp.Add(time.Second)))
		stsOK := w.fake.Successes(fakeaws.ActionAssumeRoleWithWebIdentity)
		if !harness.WaitFor(40*time.Second, 200*time.Millisecond, func() bool {
			return w.fake.Successes(fakeaws.ActionAssumeRoleWithWebIdentity) > stsOK
		}) {
			t.Fatalf("no successful STS call within 40s after the old token expired")
		}
		ecrOK := w.fake.Successes(fakeaws.ActionGetAuthorizationToken)
		w.waitHosts(40*time.Second, func(string) bool {
			return w.fake.Successes(fakeaws.ActionGetAuthorizationToken) > ecrOK
		})
		w.mustPull("after rotation and the old token's expiry")

		all := w.fake.STSTokensSeen()
		firstNew := slices.Index(all, newTok)
		if i := slices.Index(all[firstNew:], oldTok); i >= 0 {
			t.Errorf("STS call %d carried the old token after the new one was used", firstNew+i)
		}
		if !d.Alive() {
			t.Fatalf("daemon exited: %v", d.ExitErr())
		}
		w.containerdSame(pid)
	})
}

// TestOutages: two outages, one daemon, one containerd. First STS and ECR both fail
// (ServiceUnavailable / ServerException, then throttling): with short STS credentials
// the daemon hits STS. Then only ECR throttles: the daemon holds credentials and hits
// ECR. In each, pulls keep working on the last token while it is valid, hosts.toml keeps
// it, status reports the error, and once cleared the daemon fetches a new token without
// a restart.
func TestOutages(t *testing.T) {
	const lifetime = 24 * time.Second
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{ECRTokenLifetime: lifetime, STSCredentialLifetime: 10 * time.Second})
		pid := w.ctr.PID()
		d, _ := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))
		d.Start()
		last := w.waitHosts(30*time.Second, nil)
		dpid := d.PID()
		sts, ecr := fakeaws.ActionAssumeRoleWithWebIdentity, fakeaws.ActionGetAuthorizationToken

		for _, phase := range []struct {
			name   string
			inject func()
			hit    fakeaws.Action
		}{
			{"STS and ECR down", func() {
				w.fake.InjectErrors(sts, fakeaws.ErrServiceUnavailable)
				w.fake.InjectErrorAlways(sts, fakeaws.ErrSTSThrottling)
				w.fake.InjectErrors(ecr, fakeaws.ErrECRServerException)
				w.fake.InjectErrorAlways(ecr, fakeaws.ErrECRThrottling)
			}, sts},
			{"ECR throttling", func() {
				w.fake.InjectErrors(ecr, fakeaws.ErrECRServerException)
				w.fake.InjectErrorAlways(ecr, fakeaws.ErrECRThrottling)
			}, ecr},
		} {
			lastTok, _ := w.fake.LookupECRToken(last)
			calls := w.fake.Calls(phase.hit)
			phase.inject()
			// A call that arrived just before the injection may still succeed.
			time.Sleep(200 * time.Millisecond)
			oks := w.fake.Successes(phase.hit)
			outageEnd := lastTok.Expires.Add(-4 * time.Second)
			t.Logf("%s: outage for %v, the last token stays valid 4s longer", phase.name, time.Until(outageEnd).Round(time.Second))
			pulls := 0
			var lastStatus *daemonStatus
			var lastStatusRaw []byte
			for time.Now().Before(outageEnd) {
				if err := w.pull(); err != nil {
					t.Fatalf("%s: pull with the last token valid for %v more (denied=%v): %v",
						phase.name, time.Until(lastTok.Expires).Round(time.Second), harness.IsDenied(err), err)
				}
				pulls++
				pw, err := w.hosts()
				if err != nil {
					t.Fatalf("%s: hosts.toml: %v", phase.name, err)
				}
				if ok, _ := w.registryAccepts(pw); !ok {
					t.Fatalf("%s: hosts.toml holds a token the registry refuses", phase.name)
				}
				if st, out, err := status(d); err == nil {
					lastStatus, lastStatusRaw = st, out
				} else {
					t.Errorf("%s: status: %v", phase.name, err)
				}
				time.Sleep(time.Second)
			}
			tried := w.fake.Calls(phase.hit) - calls
			t.Logf("%s: %d pulls ok; the daemon called %s %d times", phase.name, pulls, phase.hit, tried)
			if tried == 0 {
				t.Errorf("%s: the daemon never called %s during the outage: it was not exercised", phase.name, phase.hit)
			}
			if w.fake.Successes(phase.hit) != oks {
				t.Errorf("%s: %s succeeded during the outage: the injection did not hold", phase.name, phase.hit)
			}
			if lastStatus == nil || lastStatus.lastErrors() == "" {
				t.Errorf("%s: status at the end of the outage reports no error:\n%s", phase.name, lastStatusRaw)
			} else {
				t.Logf("%s: status reported: %s", phase.name, lastStatus.lastErrors())
			}

			w.fake.ClearFaults(sts)
			w.fake.ClearFaults(ecr)
			cleared := time.Now()
			prev := last
			last = w.waitHosts(120*time.Second, func(pw string) bool { return pw != prev })
			t.Logf("%s: recovered %v after the outage", phase.name, time.Since(cleared).Round(time.Millisecond))
			w.mustPull(phase.name + ": after the outage")
			if !d.Alive() || d.PID() != dpid {
				t.Fatalf("%s: the daemon did not run throughout (exit: %v)", phase.name, d.ExitErr())
			}
		}
		if st, out, err := status(d); err != nil {
			t.Errorf("status: %v", err)
		} else if !st.Ready {
			t.Errorf("status after recovery: not ready:\n%s", out)
		}
		w.containerdSame(pid)
	})
}

// TestKillDuringRefresh: SIGKILL the daemon at random moments while it writes and
// refreshes short (4 s) tokens, ten times, restarting it. A reader polling hosts.toml all along never sees
// a file containerd cannot parse or one without credentials.
func TestKillDuringRefresh(t *testing.T) {
	const kills = 10
	forEachContainerd(t, func(t *testing.T, bin harness.ContainerdBinary) {
		w := newWorld(t, bin, fakeaws.Options{ECRTokenLifetime: 4 * time.Second, STSCredentialLifetime: 6 * time.Second})
		pid := w.ctr.PID()
		d, _ := w.newDaemon(w.fake.MintToken(fakeaws.TokenSpec{}))

		watch := watchHosts(w)
		defer watch.stop()

		for i := range kills {
			d.Start()
			// Even kills land around the first write after start (about 0.1 s in), odd ones
			// anywhere up to past the first refresh (2-2.4 s in).
			window := 3 * time.Second
			if i%2 == 0 {
				window = 400 * time.Millisecond
			}
			delay := time.Duration(rand.Int64N(int64(window)))
			time.Sleep(delay)
			alive := d.Alive()
			d.Kill()
			if !alive {
				t.Fatalf("start %d: the daemon exited by itself: %v", i+1, d.ExitErr())
			}
			if _, err := harness.ParseAllHosts(w.certsDir); err != nil {
				t.Errorf("after SIGKILL %d (%v after start): %v", i+1, delay.Round(time.Millisecond), err)
			}
		}
		d.Start()
		issued := len(w.fake.ECRTokens())
		w.waitHosts(30*time.Second, func(pw string) bool { return len(w.fake.ECRTokens()) > issued })
		w.mustPull("after the last restart")

		reads, bad, firstBad := watch.stop()
		leftovers := []string{}
		ents, _ := os.ReadDir(filepath.Join(w.certsDir, ecrHost))
		for _, e := range ents {
			if e.Name() != "hosts.toml" {
				leftovers = append(leftovers, e.Name())
			}
		}
		t.Logf("%d kills; hosts.toml read %d times while the daemon ran; %d ECR tokens issued; other files in the host dir: %v",
			kills, reads, w.fake.Successes(fakeaws.ActionGetAuthorizationToken), leftovers)
		if bad > 0 {
			t.Errorf("%d of %d reads saw a bad hosts.toml; first: %v", bad, reads, firstBad)
		}
		if reads < 100 {
			t.Errorf("only %d reads of hosts.toml: the check was not exercised", reads)
		}
		w.containerdSame(pid)
	})
}
