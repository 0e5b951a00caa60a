package daemon

import (
	"fmt"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
)

// Note shown (status and STATUS=) when no registry is configured.
const noteIdle = "no registries configured: idle"

// view is a consistent copy of what the reports are built from.
type view struct {
	// idle: no registries and no mirrors, so no private ECR host to serve.
	idle    bool
	public  bool // publicECR
	entries []tokens.Entry
	id      identity.Status
	pipe    *pipeline
}

func (d *daemon) view() view {
	d.mu.Lock()
	// Not len(ECRHosts()): this runs on every heartbeat, and only emptiness counts.
	p, idle, public := d.pipe, len(d.cfg.Registries) == 0 && len(d.cfg.Mirrors) == 0, d.cfg.PublicECR
	d.mu.Unlock()
	v := view{idle: idle, public: public, pipe: p}
	if p != nil {
		v.entries = p.agent.Snapshot()
		v.id = p.source.Status()
	}
	return v
}

// configured is the entries of configured registries (on-demand ones do not
// decide readiness or health: a failing on-demand host is reported in
// status and answered with 503 on the socket; nor does ECR Public, which
// pulls anonymously without a token).
func (v view) configured() []tokens.Entry {
	out := make([]tokens.Entry, 0, len(v.entries))
	for _, e := range v.entries {
		if !e.OnDemand && !e.BestEffort {
			out = append(out, e)
		}
	}
	return out
}

// publicNote says why ECR Public pulls are anonymous ("" when publicECR is
// off or its token is valid).
func (v view) publicNote(now time.Time) string {
	if !v.public {
		return ""
	}
	for _, e := range v.entries {
		if e.Host.Name != publicHost.Name {
			continue
		}
		if e.Credential.Valid(now) {
			return ""
		}
		if e.LastError == "" {
			return "publicECR: fetching the ECR Public token"
		}
		if e.Credential.Usable(now) {
			return "publicECR: the ECR Public token cannot be renewed; the current one expires at " +
				e.Credential.ExpiresAt.UTC().Format(time.RFC3339) + ", then pulls from public.ecr.aws are anonymous: " + oneLine(e.LastError)
		}
		return "publicECR: no ECR Public token, so pulls from public.ecr.aws are anonymous (lower rate limit): " + oneLine(e.LastError)
	}
	return ""
}

// stateLine is the systemd STATUS= line and the status API's state.
func (d *daemon) stateLine() string { return d.view().stateLine() }

func (v view) stateLine() string {
	line := v.privateState()
	if n := v.publicNote(time.Now()); n != "" {
		line += "; " + n
	} else if v.public && v.idle {
		line = "serving ECR Public only (no registries configured)"
	}
	return line
}

// privateState is the state of the configured (private) registries.
func (v view) privateState() string {
	if v.idle {
		return "idle: no registries configured"
	}
	now := time.Now()
	valid, firstErr := 0, ""
	entries := v.configured()
	for _, e := range entries {
		if e.Credential.Valid(now) {
			valid++
		} else if firstErr == "" && e.LastError != "" {
			firstErr = e.Host.Name + ": " + e.LastError
		}
	}
	switch {
	case valid == len(entries) && valid > 0:
		return "serving " + registries(valid)
	case v.id.LastError != "" && v.id.Mode == identity.ModeWebIdentity:
		return "waiting for STS: " + oneLine(v.id.LastError)
	case v.id.LastError != "":
		return "waiting for AWS credentials: " + oneLine(v.id.LastError)
	case firstErr != "":
		return fmt.Sprintf("waiting for ECR: %d of %s without a token: %s", len(entries)-valid, registries(len(entries)), oneLine(firstErr))
	}
	return "fetching tokens for " + registries(len(entries))
}

// registries is "1 registry" or "<n> registries".
func registries(n int) string {
	if n == 1 {
		return "1 registry"
	}
	return fmt.Sprintf("%d registries", n)
}

// Status answers GET /v1/status. It holds no secret: only api types are
// filled, and they have no field for one.
func (d *daemon) Status() api.Status {
	v := d.view()
	now := time.Now()
	d.mu.Lock()
	cfg := d.cfg
	st := api.Status{
		Version: d.o.version, ConfigPath: d.cfgPath, CertsDir: cfg.Containerd.CertsDir, Socket: cfg.Socket,
		StartedAt: d.started, ConfigLoadedAt: d.loadedAt, Registries: []api.Registry{},
	}
	endpoints := map[string]string{}
	for _, r := range cfg.Registries {
		endpoints[r.Host.Name] = r.Endpoint
	}
	mirrorOnly := map[string]bool{}
	for _, m := range cfg.Mirrors {
		if _, reg := endpoints[m.ECR.Name]; !reg {
			mirrorOnly[m.ECR.Name] = true
		}
	}
	for _, e := range v.entries {
		r := api.RegistryFrom(e, now)
		r.Endpoint = endpoints[r.Host]
		switch {
		case mirrorOnly[r.Host] && !e.OnDemand:
			r.FileState = fileMirrorOnly
		case e.OnDemand && !cfg.LearnRegistries:
			r.FileState = fileNotLearned
		default:
			r.File = d.writer.Path(r.Host)
			r.FileState = d.files[r.Host]
			if r.FileState == "" {
				r.FileState = filePending
			}
		}
		st.Registries = append(st.Registries, r)
	}
	for _, m := range cfg.Mirrors {
		mr := api.Mirror{Upstream: m.Upstream, ECR: m.ECR.Name + "/" + m.Prefix, Endpoint: m.Endpoint,
			URL: mirrorConfig(m, "").HostURL(), File: d.writer.Path(m.Upstream), FileState: d.files[m.Upstream]}
		if mr.FileState == "" {
			mr.FileState = filePending
		}
		st.Mirrors = append(st.Mirrors, mr)
	}
	if d.reloadNote != "" {
		st.Notes = append(st.Notes, d.reloadNote)
	}
	if d.metricsNote != "" {
		st.Notes = append(st.Notes, d.metricsNote)
	}
	if d.mserver != nil {
		st.MetricsAddress = d.mserver.Addr()
	}
	for _, r := range st.Registries {
		if r.FileState == fileUnmanaged {
			st.Notes = append(st.Notes, fmt.Sprintf("%s is not managed by ecr-node-auth (no marker line, or a symlink): left alone, so containerd gets no token for %s from this daemon", r.File, r.Host))
		}
	}
	for _, m := range st.Mirrors {
		if m.FileState == fileUnmanaged {
			st.Notes = append(st.Notes, fmt.Sprintf("%s is not managed by ecr-node-auth (no marker line, or a symlink): left alone, so containerd does not use the mirror %s for %s", m.File, m.ECR, m.Upstream))
		}
	}
	d.mu.Unlock()

	st.Identity = api.IdentityFrom(v.id)
	st.Identity.STSRegion = cfg.STSRegion
	if v.pipe != nil {
		st.Identity.STSEndpoint = v.pipe.stsEndpoint
	}
	st.Workloads = d.workloadStatus()
	st.State = v.stateLine() // from the same snapshot as the rest
	st.Ready = v.idle || (v.pipe != nil && v.pipe.agent.Ready())
	if n := v.publicNote(now); n != "" {
		st.Notes = append(st.Notes, n)
	}
	if v.idle && !v.public {
		st.Notes = append([]string{noteIdle}, st.Notes...)
	}
	return st
}

// Health answers GET /v1/health: unhealthy when the main loop is stuck or a
// configured registry has no valid token.
func (d *daemon) Health() api.Health {
	reasons := append(d.liveReasons(), d.readyReasons()...)
	if len(reasons) > 0 {
		return api.Health{Status: "unhealthy", Reasons: reasons}
	}
	return api.Health{Status: "ok"}
}

// liveReasons is empty while the main loop ticks (/healthz).
func (d *daemon) liveReasons() []string {
	d.mu.Lock()
	last, every := d.lastTick, d.tickEvery
	d.mu.Unlock()
	if every > 0 && time.Since(last) > 3*every+5*time.Second {
		return []string{fmt.Sprintf("main loop stalled: last iteration %s ago", time.Since(last).Round(time.Second))}
	}
	return nil
}

// readyReasons is empty once every configured registry holds a valid token,
// and when none is configured (/readyz).
func (d *daemon) readyReasons() []string {
	var reasons []string
	now := time.Now()
	for _, e := range d.view().configured() {
		if e.Credential.Valid(now) {
			continue
		}
		why := "no token yet"
		if e.LastError != "" {
			why = oneLine(e.LastError)
		}
		reasons = append(reasons, fmt.Sprintf("registry %s has no valid token: %s", e.Host.Name, why))
	}
	return reasons
}

// metricsSource feeds the token metrics from the pipeline in use.
type metricsSource struct{ d *daemon }

func (m metricsSource) Entries() []tokens.Entry {
	if p := m.d.currentPipe(); p != nil {
		return p.agent.Snapshot()
	}
	return nil
}

func (m metricsSource) Rearms() int {
	n := int(m.d.rearmsBefore.Load())
	if p := m.d.currentPipe(); p != nil && p.watcher != nil {
		n += p.watcher.Rearms()
	}
	return n
}

func oneLine(s string) string {
	out := []rune{}
	for _, r := range s {
		if r == '\n' || r == '\r' {
			r = ' '
		}
		out = append(out, r)
	}
	if len(out) > 200 {
		out = append(out[:197], '.', '.', '.')
	}
	return string(out)
}
