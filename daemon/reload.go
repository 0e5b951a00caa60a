package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// reload applies a new config file (SIGHUP). An invalid file is logged with
// its error and the running config is kept. Registries added or removed take
// effect at once; a changed identity rebuilds the identity pipeline. The
// socket and log settings need a restart.
func (d *daemon) reload(ctx context.Context) {
	d.log.Info("reloading the config", zap.String("config", d.cfgPath))
	next, err := config.Load(d.cfgPath)
	if err != nil {
		d.log.Error("config reload rejected; keeping the running config", zap.Error(err))
		d.mu.Lock()
		d.reloadNote = fmt.Sprintf("reload at %s rejected, running the previous config: %v", time.Now().UTC().Format(time.RFC3339), err)
		d.mu.Unlock()
		return
	}
	d.notify.Reloading()
	defer d.notify.Reloaded()

	d.mu.Lock()
	prev, pipe := d.cfg, d.pipe
	d.mu.Unlock()
	d.keepRestartOnly(prev, next)

	if keyOf(next) != pipe.key {
		newPipe, err := d.newPipeline(ctx, next)
		if err != nil {
			d.log.Error("config reload rejected: cannot build the new identity; keeping the running config", zap.Error(err))
			d.mu.Lock()
			d.reloadNote = fmt.Sprintf("reload at %s rejected: %v", time.Now().UTC().Format(time.RFC3339), err)
			d.mu.Unlock()
			return
		}
		d.log.Info("identity settings changed: rebuilding the AWS identity and token agent")
		pipe.stop()
		d.swap(next, newPipe)
		newPipe.start(ctx)
		// The new agent never knew the dropped registries: remove their files here.
		for _, h := range dropped(prev, next) {
			d.onRemove(h)
		}
	} else {
		d.swap(next, pipe)
		pipe.agent.SetRegistries(hostsOf(next))
	}
	// A mirror's file has no agent entry of its own: remove it here, even
	// while some token is missing (reconcile then prunes nothing).
	for _, h := range droppedMirrors(prev, next) {
		d.onRemove(h)
	}
	d.log.Info("config reloaded", zap.Int("registries", len(next.Registries)), zap.Int("mirrors", len(next.Mirrors)))
	d.reconcile()
}

// swap installs the new config and pipeline, and a new writer if the certs
// dir moved (files in the old dir are left as they are).
func (d *daemon) swap(next *config.Config, p *pipeline) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if next.Containerd.CertsDir != d.cfg.Containerd.CertsDir {
		d.log.Warn("containerd.certsDir changed: files in the old dir are left as they are",
			zap.String("old", d.cfg.Containerd.CertsDir), zap.String("new", next.Containerd.CertsDir))
		d.writer = cri.NewWriter(next.Containerd.CertsDir, d.log.Named("cri"))
		d.files = map[string]string{}
	}
	if old := d.pipe; old != p && old != nil && old.watcher != nil {
		d.rearmsBefore.Add(int64(old.watcher.Rearms()))
	}
	d.cfg, d.pipe, d.loadedAt, d.reloadNote = next, p, time.Now(), ""
	d.cur.Store(p)
}

// keepRestartOnly keeps settings that only a restart applies, with a warning.
func (d *daemon) keepRestartOnly(prev, next *config.Config) {
	if next.Socket != prev.Socket {
		d.log.Warn("socket path changed: restart ecr-node-auth to apply it", zap.String("running", prev.Socket), zap.String("new", next.Socket))
		next.Socket = prev.Socket
	}
	if next.Log != prev.Log {
		d.log.Warn("log settings changed: restart ecr-node-auth to apply them")
		next.Log = prev.Log
	}
	if next.SocketGroup != prev.SocketGroup || next.SocketGID != prev.SocketGID {
		d.log.Warn("socketGroup changed: restart ecr-node-auth to apply it", zap.String("running", prev.SocketGroup), zap.String("new", next.SocketGroup))
		next.SocketGroup, next.SocketGID = prev.SocketGroup, prev.SocketGID
	}
	if next.MetricsAddress != prev.MetricsAddress {
		d.log.Warn("metricsAddress changed: restart ecr-node-auth to apply it", zap.String("running", prev.MetricsAddress), zap.String("new", next.MetricsAddress))
		next.MetricsAddress = prev.MetricsAddress
	}
}

// dropped lists the registries of prev that next no longer has (ECR Public
// too, when publicECR was turned off).
func dropped(prev, next *config.Config) []string {
	keep := map[string]bool{}
	for _, r := range next.Registries {
		keep[r.Host.Name] = true
	}
	var out []string
	for _, r := range prev.Registries {
		if !keep[r.Host.Name] {
			out = append(out, r.Host.Name)
		}
	}
	if prev.PublicECR && !next.PublicECR {
		out = append(out, publicHost.Name)
	}
	return out
}

// droppedMirrors lists the upstreams of prev's mirrors that next no longer
// has (nor serves as a registry).
func droppedMirrors(prev, next *config.Config) []string {
	keep := map[string]bool{}
	for _, m := range next.Mirrors {
		keep[m.Upstream] = true
	}
	for _, r := range next.Registries {
		keep[r.Host.Name] = true
	}
	var out []string
	for _, m := range prev.Mirrors {
		if !keep[m.Upstream] {
			out = append(out, m.Upstream)
		}
	}
	return out
}
