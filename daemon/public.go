package daemon

import (
	"errors"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// publicHost is the ECR Public registry the daemon serves with publicECR.
var publicHost = func() ecrhost.Host {
	h, err := ecrhost.Parse(ecrhost.PublicHost)
	if err != nil {
		panic(err)
	}
	return h
}()

// fileAnonymous is the file state of public.ecr.aws while no ECR Public
// token is usable: no hosts.toml, so containerd pulls anonymously.
const fileAnonymous = "not written (no ECR Public token: pulls are anonymous)"

// isPublic reports whether host is the ECR Public registry served because
// of publicECR (as opposed to an on-demand one).
func isPublic(host string) bool { return host == publicHost.Name }

// publicConfig is public.ecr.aws's hosts.toml: server https://public.ecr.aws
// with the token's header.
// A nil cred leaves the header out (onChange adds it).
func publicConfig(cred *tokens.Credential) cri.HostConfig {
	hc := cri.HostConfig{Host: publicHost.Name}
	if cred != nil {
		hc.Authorization = cred.AuthorizationHeader()
	}
	return hc
}

// withdrawPublic makes sure no hosts.toml of ours with an unusable header
// stays for public.ecr.aws: anonymous pulls work, a stale header would make
// them fail. A file that is not ours is left alone (reported once).
func (d *daemon) withdrawPublic() {
	host := publicHost.Name
	// Serialised with onChange's write of a new token: a reconcile that read
	// an older snapshot must not remove the file just written.
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	if p := d.currentPipe(); p != nil {
		if e, ok := p.agent.Lookup(host); ok && e.Credential.Usable(time.Now()) {
			return
		}
	}
	d.mu.Lock()
	w := d.writer
	d.mu.Unlock()
	if _, err := os.Lstat(w.Path(host)); errors.Is(err, fs.ErrNotExist) {
		d.recordState(host, fileAnonymous)
		return
	}
	err := w.Remove(host)
	state := fileAnonymous
	switch {
	case errors.Is(err, cri.ErrUnmanaged):
		state = fileUnmanaged
	case err != nil:
		state = "error: " + err.Error()
	}
	if d.recordState(host, state) && err != nil {
		d.logFileError(host, err)
	}
	if err == nil {
		d.log.Info("no usable ECR Public token: hosts.toml removed, pulls from public.ecr.aws are anonymous until a token is had",
			zap.String(logging.KeyRegistry, host))
	}
}

// recordState stores host's file state and reports whether it changed.
func (d *daemon) recordState(host, state string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, had := d.files[host]
	d.files[host] = state
	return !had || prev != state
}
