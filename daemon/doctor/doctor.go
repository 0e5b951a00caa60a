// Package doctor runs the node checks of `ecr-node-auth doctor`: config,
// token file, STS, ECR, certs dir and hosts.toml, the daemon, containerd's
// config, the CRI socket and, optionally, a CRI pull with no credentials in
// the request. Each check gives one Result that names the fix when it fails.
//
// The checks reuse the daemon's own code (config.Load, identity.ReadToken,
// daemon.NewAWSIdentity, tokens.NewECRFactory, containerdconfig.Check) so
// doctor sees exactly what the daemon sees. No Result ever holds a secret:
// tokens are described by their decoded claims, hosts.toml headers by
// whether they are there.
package doctor

import (
	"context"
	"strings"
	"time"
)

// Status of a Result.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, but worth a look; does not fail doctor
	Fail Status = "fail"
	Skip Status = "skip" // not applicable, or not run because an earlier check failed
)

// Result is one check's outcome.
type Result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"` // false only for Fail
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Options say what to check.
type Options struct {
	// ConfigPath is the daemon's config file.
	ConfigPath string
	// Socket is the daemon's socket ("" = $ECR_NODE_AUTH_SOCKET, the
	// config's socket, the default).
	Socket string
	// CRISocket is containerd's gRPC socket ("" = the containerd config's
	// [grpc] address, else /run/containerd/containerd.sock).
	CRISocket string
	// PullImage, if set, is pulled through CRI with no credentials.
	PullImage string
	// Timeout bounds each network check (default 15 s; a pull gets 4x).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Failed reports whether any result failed.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

// Run runs every check in order and returns their results.
func Run(ctx context.Context, o Options) []Result {
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &run{o: o}
	r.checkConfig()
	if r.cfg == nil {
		for _, n := range []string{"token file", "aws identity", "ecr", "certs dir", "containerd config", "cri"} {
			r.skip(n, "config invalid (see above)")
		}
		return r.results
	}
	r.checkToken()
	r.checkIdentity(ctx)
	r.checkECR(ctx)
	r.checkCertsDir()
	r.checkHostsFiles()
	r.checkDaemon(ctx)
	r.checkContainerdConfig()
	r.checkCRI(ctx)
	return r.results
}

func (r *run) add(name string, st Status, detail, fix string) {
	r.results = append(r.results, Result{Name: name, OK: st != Fail, Status: st, Detail: oneLine(detail), Fix: oneLine(fix)})
}

func (r *run) ok(name, detail string)        { r.add(name, OK, detail, "") }
func (r *run) fail(name, detail, fix string) { r.add(name, Fail, detail, fix) }
func (r *run) warn(name, detail, fix string) { r.add(name, Warn, detail, fix) }
func (r *run) skip(name, detail string)      { r.add(name, Skip, detail, "") }

// bounded is ctx limited to the network check budget.
func (r *run) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.o.Timeout)
}

// oneLine joins a multi-line message (errors.Join) into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
