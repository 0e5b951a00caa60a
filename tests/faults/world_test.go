package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	region  = "us-east-1"
	ecrHost = fakeaws.DefaultAccountID + ".dkr.ecr." + region + ".amazonaws.com"
)

// world is one fault's real parts: the fake AWS (behind TCP forwarders, so a service can
// refuse connections), its registry, a ..data token dir and the daemon process.
type world struct {
	t        *testing.T
	fake     *fakeaws.Fake
	reg      *fakeaws.Registry
	dir      string
	certsDir string
	td       *harness.TokenDir
	d        *harness.Daemon
	cfg      harness.DaemonConfig
	stsFwd   *forwarder
	ecrFwd   *forwarder
	skew     *skewClock

	// lossMu guards the loss watch: the newest token seen in hosts.toml and the
	// first moment the file did not hold a usable one while that token was valid.
	lossMu    sync.Mutex
	best      fakeaws.ECRToken
	loss      string
	lossPause atomic.Bool // the fault itself removes the file: not the daemon's loss
	stopWatch chan struct{}
	watchDone chan struct{}
}

func newWorld(t *testing.T, f *fault) *world {
	t.Helper()
	w := &world{t: t, skew: &skewClock{}}
	opts := fakeaws.Options{ECRTokenLifetime: f.ecrLifetime, STSCredentialLifetime: f.stsLifetime, SigV4Clock: w.skew}
	fake, err := fakeaws.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	w.fake = fake
	allFakes.add(fake)
	reg, err := fakeaws.NewRegistry(fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	w.reg = reg
	w.dir = harness.TempDir(t)
	w.certsDir = filepath.Join(w.dir, "certs.d")
	ddir := filepath.Join(w.dir, "daemon")
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		t.Fatal(err)
	}
	w.td, err = harness.NewTokenDir(filepath.Join(ddir, "sa-token"), fake.MintToken(fakeaws.TokenSpec{}))
	if err != nil {
		t.Fatal(err)
	}
	ctrCfg := filepath.Join(w.dir, "containerd-config.toml")
	ctr := fmt.Sprintf("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", w.certsDir)
	if err := os.WriteFile(ctrCfg, []byte(ctr), 0o644); err != nil {
		t.Fatal(err)
	}
	w.stsFwd = newForwarder(t, strings.TrimPrefix(fake.STSURL(), "http://"))
	w.ecrFwd = newForwarder(t, strings.TrimPrefix(fake.ECRURL(), "http://"))
	off := ""
	w.cfg = harness.DaemonConfig{
		RoleArn:          fakeaws.DefaultRoleARN,
		Region:           region,
		Registries:       []harness.Registry{{Host: ecrHost, Endpoint: reg.URL(), CA: reg.CAFile()}},
		TokenFile:        w.td.Path(),
		Audience:         fakeaws.DefaultAudience,
		CertsDir:         w.certsDir,
		ContainerdConfig: ctrCfg,
		Socket:           filepath.Join(ddir, "auth.sock"),
		MetricsAddress:   &off,
	}
	env := map[string]string{
		"AWS_REGION":                  region,
		"AWS_ENDPOINT_URL_STS":        "http://" + w.stsFwd.addr,
		"AWS_ENDPOINT_URL_ECR":        "http://" + w.ecrFwd.addr,
		"AWS_ENDPOINT_URL_ECR_PUBLIC": fake.ECRPublicURL(),
	}
	w.d = harness.NewDaemon(t, daemonBin, ddir, w.cfg, env)
	return w
}

// start starts the daemon, waits for its first usable hosts.toml and arms the loss watch.
func (w *world) start() fakeaws.ECRToken {
	w.t.Helper()
	w.d.Start()
	tok := w.waitToken(30*time.Second, func(fakeaws.ECRToken) bool { return true })
	w.watchLoss()
	return tok
}

// current parses certs.d/<ecrHost> with containerd's loader and returns the token it
// carries, if the fake issued it.
func (w *world) current() (fakeaws.ECRToken, error) {
	p, err := harness.ParseHostsDir(w.certsDir, ecrHost)
	if err != nil {
		return fakeaws.ECRToken{}, err
	}
	if !strings.HasPrefix(string(p.Raw), harness.ManagedMarker) {
		return fakeaws.ECRToken{}, fmt.Errorf("%s lacks the marker", p.Path)
	}
	if p.Endpoint != w.reg.URL() || p.User != "AWS" {
		return fakeaws.ECRToken{}, fmt.Errorf("%s: endpoint %q user %q", p.Path, p.Endpoint, p.User)
	}
	tok, ok := w.fake.LookupECRToken(p.Password)
	if !ok {
		return fakeaws.ECRToken{}, fmt.Errorf("%s holds a password the fake never issued", p.Path)
	}
	return tok, nil
}

// waitToken waits for hosts.toml to hold an unexpired token accepted by pred.
func (w *world) waitToken(timeout time.Duration, pred func(fakeaws.ECRToken) bool) fakeaws.ECRToken {
	w.t.Helper()
	var tok fakeaws.ECRToken
	var lastErr error
	ok := harness.WaitFor(timeout, 100*time.Millisecond, func() bool {
		tok, lastErr = w.current()
		if lastErr == nil && time.Now().Before(tok.Expires) && pred(tok) {
			return true
		}
		return !w.d.Alive()
	})
	if !w.d.Alive() {
		w.t.Fatalf("the daemon exited (%v); log:\n%s", w.d.ExitErr(), harness.TailFile(w.d.LogFile, 30))
	}
	if !ok {
		w.t.Fatalf("no usable hosts.toml within %v: %v", timeout, lastErr)
	}
	return tok
}

// newer waits for a token issued after prev (the daemon recovered).
func (w *world) newer(prev fakeaws.ECRToken, timeout time.Duration) (fakeaws.ECRToken, bool) {
	var tok fakeaws.ECRToken
	ok := harness.WaitFor(timeout, 100*time.Millisecond, func() bool {
		t, err := w.current()
		if err == nil && t.Password != prev.Password && time.Now().Before(t.Expires) {
			tok = t
			return true
		}
		return !w.d.Alive()
	})
	return tok, ok && w.d.Alive()
}

// watchLoss polls hosts.toml every 50 ms: whenever the newest token the daemon wrote is
// still valid, the file must parse and hold an unexpired token.
func (w *world) watchLoss() {
	w.stopWatch, w.watchDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.watchDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stopWatch:
				return
			case <-tick.C:
			}
			tok, err := w.current()
			now := time.Now()
			w.lossMu.Lock()
			if err == nil && tok.Expires.After(w.best.Expires) {
				w.best = tok
			}
			// 1 s of slack: the token's expiry is the fake's, the check is ours.
			valid := now.Before(w.best.Expires.Add(-time.Second))
			if valid && w.loss == "" && !w.lossPause.Load() {
				switch {
				case err != nil:
					w.loss = fmt.Sprintf("at %s, with a token valid until %s: %v", now.Format("15:04:05.000"), w.best.Expires.Format("15:04:05"), err)
				case !now.Before(tok.Expires):
					w.loss = fmt.Sprintf("at %s hosts.toml held an expired token while one valid until %s existed", now.Format("15:04:05.000"), w.best.Expires.Format("15:04:05"))
				}
			}
			w.lossMu.Unlock()
		}
	}()
	w.t.Cleanup(w.stopLossWatch)
}

func (w *world) stopLossWatch() {
	if w.stopWatch != nil {
		select {
		case <-w.stopWatch:
		default:
			close(w.stopWatch)
		}
		<-w.watchDone
	}
}

// lost returns how a valid credential was lost, or "".
func (w *world) lost() string {
	w.lossMu.Lock()
	defer w.lossMu.Unlock()
	return w.loss
}

// status is the part of `status -o json` the faults check.
type status struct {
	Ready    bool     `json:"ready"`
	Notes    []string `json:"notes"`
	Identity struct {
		LastError  string `json:"lastError"`
		ErrorClass string `json:"errorClass"`
	} `json:"identity"`
	Registries []struct {
		Host       string `json:"host"`
		Valid      bool   `json:"valid"`
		LastError  string `json:"lastError"`
		ErrorClass string `json:"errorClass"`
		FileState  string `json:"fileState"`
	} `json:"registries"`
}

// problems is every error, note and file state the status reports, in one string.
func (s *status) problems() string {
	var out []string
	if s.Identity.LastError != "" {
		out = append(out, s.Identity.ErrorClass+": "+s.Identity.LastError)
	}
	for _, r := range s.Registries {
		if r.LastError != "" {
			out = append(out, r.ErrorClass+": "+r.LastError)
		}
		if strings.HasPrefix(r.FileState, "error") || r.FileState == "unmanaged" {
			out = append(out, "file: "+r.FileState)
		}
	}
	out = append(out, s.Notes...)
	return strings.Join(out, "; ")
}

func (w *world) status() (*status, error) {
	out, err := w.d.Status()
	if err != nil {
		return nil, err
	}
	var s status
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("status -o json: %v", err)
	}
	return &s, nil
}

// logLines returns the daemon's log lines (of every start) that contain sub,
// case-insensitively, at minLevel or above ("" = any).
func (w *world) logLines(sub, minLevel string) []string {
	var hits []string
	for i := 1; ; i++ {
		b, err := os.ReadFile(filepath.Join(w.d.Dir, fmt.Sprintf("daemon-%d.log", i)))
		if err != nil {
			break
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(strings.ToLower(l), strings.ToLower(sub)) && atLeast(l, minLevel) {
				hits = append(hits, l)
			}
		}
	}
	return hits
}

// levels orders the daemon's JSON log levels.
var levels = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

// atLeast reports whether a JSON log line's level is min or above.
func atLeast(line, min string) bool {
	if min == "" {
		return true
	}
	var l struct{ Level string }
	if json.Unmarshal([]byte(line), &l) != nil {
		return false
	}
	lv, ok := levels[l.Level]
	return ok && lv >= levels[min]
}

// failedCalls counts an action's calls that the fake did not answer with success.
func (w *world) failedCalls(a fakeaws.Action) int { return w.fake.Calls(a) - w.fake.Successes(a) }

// skewClock is the fake AWS's SigV4 clock: real time plus an offset the test sets.
type skewClock struct{ offset atomic.Int64 }

func (c *skewClock) Now() time.Time                  { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *skewClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *skewClock) set(d time.Duration)             { c.offset.Store(int64(d)) }

// forwarder is a TCP forwarder in front of one fake service: closing its listener makes
// the service refuse connections; reopening binds the same port again.
type forwarder struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool // open client connections: refuse closes them too
}

func newForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{t: t, addr: ln.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	f.serve(ln)
	t.Cleanup(f.refuse)
	return f
}

func (f *forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns[c] = true
			f.mu.Unlock()
			go func() {
				defer func() {
					c.Close()
					f.mu.Lock()
					delete(f.conns, c)
					f.mu.Unlock()
				}()
				u, err := net.Dial("tcp", f.target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c); _ = u.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}

// refuse closes the listener, so new connections get ECONNREFUSED, and the open ones
// (a client's keep-alive connection would bypass the refusal).
func (f *forwarder) refuse() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
	}
}

// accept listens on the same port again.
func (f *forwarder) accept() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", f.addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		f.t.Errorf("re-listening on %s: %v", f.addr, err)
		return
	}
	f.serve(ln)
}
