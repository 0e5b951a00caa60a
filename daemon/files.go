package daemon

import (
	"errors"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
)

// hosts.toml states reported per registry.
const (
	fileWritten   = "written"
	fileUnchanged = "unchanged"
	filePending   = "pending" // no usable token yet
	fileUnmanaged = "unmanaged"
	// fileNotLearned: an on-demand registry with learnRegistries off.
	fileNotLearned = "not written (on-demand; learnRegistries is off)"
	// fileMirrorOnly: an ECR host only listed as a mirror's cache; its
	// token goes into the mirror's file.
	fileMirrorOnly = "not written (serves mirrors only)"
)

// onChange is the agent's callback after each refresh attempt: the host's
// hosts.toml and those of the mirrors it serves get the current token. It
// runs on the agent's goroutines.
func (d *daemon) onChange(e tokens.Entry) {
	d.metrics.Refreshed(e)
	host := e.Host.Name
	if e.OnDemand && !d.learning() {
		return
	}
	if isPublic(host) && !e.OnDemand {
		if !e.Credential.Usable(time.Now()) {
			d.withdrawPublic()
			return
		}
		d.pubMu.Lock() // see withdrawPublic
		defer d.pubMu.Unlock()
	}
	hcs, w := d.hostConfigs(host, e.OnDemand)
	if !e.Credential.Usable(time.Now()) {
		for _, hc := range hcs {
			d.setFileIfUnset(hc.Host, filePending)
		}
		return
	}
	auth := e.Credential.AuthorizationHeader()
	for _, hc := range hcs {
		hc.Authorization = auth
		changed, err := w.Write(hc)
		if err != nil && !errors.Is(err, cri.ErrUnmanaged) {
			d.metrics.FileError()
		}
		if d.recordWrite(hc.Host, changed, err) && err != nil {
			d.logFileError(hc.Host, err)
		}
		if err != nil || !changed {
			continue
		}
		fields := []zap.Field{zap.String(logging.KeyRegistry, hc.Host), zap.String(logging.KeyRegion, e.Host.Region),
			zap.Time(logging.KeyExpiresAt, e.Credential.ExpiresAt), zap.String("file", w.Path(hc.Host))}
		if hc.Mirror != nil {
			fields = append(fields, zap.String("mirror", hc.Mirror.ECRHost+"/"+hc.Mirror.Prefix))
		}
		d.log.Info("hosts.toml written", fields...)
	}
}

// onRemove deletes the hosts.toml of a registry dropped from the config.
func (d *daemon) onRemove(host string) {
	d.mu.Lock()
	w := d.writer
	delete(d.files, host)
	d.mu.Unlock()
	if _, err := os.Lstat(w.Path(host)); errors.Is(err, fs.ErrNotExist) {
		return // an on-demand registry never learned, or already gone
	}
	if err := w.Remove(host); err != nil {
		d.logFileError(host, err)
		return
	}
	d.log.Info("registry no longer served (removed from the config, or an idle on-demand registry): hosts.toml deleted", zap.String(logging.KeyRegistry, host))
}

// learning reports whether on-demand registries get hosts.toml.
func (d *daemon) learning() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.LearnRegistries
}

// hostConfigs lists the files (without the header) that host's token goes
// into, from the config in use: the host's own (configured, or on-demand with
// learnRegistries, in the plain form) and every mirror it holds. None when
// the host left the config meanwhile.
func (d *daemon) hostConfigs(host string, onDemand bool) ([]cri.HostConfig, *cri.Writer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []cri.HostConfig
	own := false
	for _, r := range d.cfg.Registries {
		if r.Host.Name == host {
			out = append(out, cri.HostConfig{Host: host, Endpoint: r.Endpoint, CA: r.CA})
			own = true
			break
		}
	}
	switch {
	case own:
	case isPublic(host) && d.cfg.PublicECR && !onDemand:
		out = append(out, publicConfig(nil))
	case onDemand && d.cfg.LearnRegistries:
		out = append(out, cri.HostConfig{Host: host})
	}
	for _, m := range d.cfg.Mirrors {
		if m.ECR.Name == host {
			out = append(out, mirrorConfig(m, ""))
		}
	}
	return out, d.writer
}

// mirrorConfig is certs.d/<upstream>/hosts.toml of a pull-through cache.
func mirrorConfig(m config.Mirror, auth string) cri.HostConfig {
	return cri.HostConfig{Host: m.Upstream, Endpoint: m.Endpoint, CA: m.CA, Authorization: auth,
		Mirror: &cri.Mirror{ECRHost: m.ECR.Name, Prefix: m.Prefix}}
}

// reconcile makes the certs dir match the config: deleted files are
// re-created, and managed files of registries no longer configured are
// removed. Pruning waits until every configured registry (ECR Public aside)
// holds a usable token, so a restart during an AWS outage never deletes a file whose token
// still works.
func (d *daemon) reconcile() {
	d.mu.Lock()
	cfg, w, p := d.cfg, d.writer, d.pipe
	d.mu.Unlock()
	now := time.Now()
	var want []cri.HostConfig
	complete := true
	usable := func(host string) (string, bool) {
		e, ok := p.agent.Lookup(host)
		if !ok || !e.Credential.Usable(now) {
			return "", false
		}
		return e.Credential.AuthorizationHeader(), true
	}
	for _, r := range cfg.Registries {
		auth, ok := usable(r.Host.Name)
		if !ok {
			complete = false
			d.setFileIfUnset(r.Host.Name, filePending)
			continue
		}
		want = append(want, cri.HostConfig{Host: r.Host.Name, Endpoint: r.Endpoint, CA: r.CA, Authorization: auth})
	}
	for _, m := range cfg.Mirrors {
		auth, ok := usable(m.ECR.Name)
		if !ok {
			complete = false
			d.setFileIfUnset(m.Upstream, filePending)
			continue
		}
		want = append(want, mirrorConfig(m, auth))
	}
	if cfg.PublicECR {
		// Best effort: a missing ECR Public token never holds back pruning,
		// and never leaves a file with a dead header (anonymous pulls work).
		// Until the first attempt, a file left from before a restart stays.
		switch e, ok := p.agent.Lookup(publicHost.Name); {
		case ok && e.Credential.Usable(now):
			want = append(want, publicConfig(e.Credential))
		case ok && !e.LastAttempt.IsZero():
			d.withdrawPublic()
		default:
			complete = false
		}
	}
	if cfg.LearnRegistries {
		// Learned on-demand registries keep their files while served.
		for _, e := range p.agent.Snapshot() {
			if e.OnDemand && e.Credential.Usable(now) {
				want = append(want, cri.HostConfig{Host: e.Host.Name, Authorization: e.Credential.AuthorizationHeader()})
			}
		}
	}
	if !complete {
		for _, hc := range want {
			changed, err := w.Write(hc)
			if d.recordWrite(hc.Host, changed, err) && err != nil {
				d.logFileError(hc.Host, err)
			} else if err == nil && changed {
				d.log.Info("hosts.toml re-created", zap.String(logging.KeyRegistry, hc.Host), zap.String("file", w.Path(hc.Host)))
			}
		}
		return
	}
	rep, err := w.Reconcile(want)
	if err != nil {
		d.log.Warn("cannot reconcile the certs dir", zap.String("certs_dir", w.CertsDir()), zap.Error(err))
	}
	d.applyReport(rep, w)
}

func (d *daemon) applyReport(rep cri.Report, w *cri.Writer) {
	for _, h := range rep.Written {
		d.log.Info("hosts.toml re-created", zap.String(logging.KeyRegistry, h), zap.String("file", w.Path(h)))
	}
	for _, h := range rep.Removed {
		d.log.Info("hosts.toml of a registry no longer configured removed", zap.String(logging.KeyRegistry, h), zap.String("file", w.Path(h)))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range rep.Written {
		d.files[h] = fileWritten
	}
	for _, h := range rep.Unchanged {
		d.files[h] = fileUnchanged
	}
	for _, h := range rep.Unmanaged {
		d.files[h] = fileUnmanaged
	}
	for h, e := range rep.Errors {
		d.files[h] = "error: " + e
	}
}

// recordWrite stores host's file state and reports whether it changed, so
// a lasting problem is logged once, not on every refresh or reconcile.
func (d *daemon) recordWrite(host string, changed bool, err error) bool {
	state := fileUnchanged
	switch {
	case errors.Is(err, cri.ErrUnmanaged):
		state = fileUnmanaged
	case err != nil:
		state = "error: " + err.Error()
	case changed:
		state = fileWritten
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	prev, had := d.files[host]
	d.files[host] = state
	return !had || prev != state
}

func (d *daemon) setFileIfUnset(host, state string) {
	d.mu.Lock()
	if _, ok := d.files[host]; !ok {
		d.files[host] = state
	}
	d.mu.Unlock()
}

func (d *daemon) logFileError(host string, err error) {
	if errors.Is(err, cri.ErrUnmanaged) {
		d.log.Warn("hosts.toml not managed by ecr-node-auth: left alone", zap.String(logging.KeyRegistry, host), zap.Error(err))
		return
	}
	d.log.Warn("cannot write hosts.toml", zap.String(logging.KeyRegistry, host), zap.Error(err))
}
