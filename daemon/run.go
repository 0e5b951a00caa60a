// Package daemon wires the parts of `ecr-node-auth run` together: config,
// logging, the AWS identity, the token agent, the containerd files, the
// socket API and systemd notifications, plus reload on SIGHUP and a graceful
// stop on SIGTERM/SIGINT.
package daemon

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/logging"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/metrics"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/notify"
)

// DefaultReconcileInterval is how often every hosts.toml is checked and
// re-created or pruned.
const DefaultReconcileInterval = 30 * time.Second

// tickInterval is the main loop's heartbeat when systemd runs no watchdog
// (status line updates, loop liveness for /v1/health).
const tickInterval = 2 * time.Second

// Option changes how Run works (mostly for tests).
type Option func(*options)

type options struct {
	version           string
	reload            <-chan struct{}
	reconcileInterval time.Duration
	logOptions        logging.Options
}

// WithVersion sets the version reported by the status API.
func WithVersion(v string) Option { return func(o *options) { o.version = v } }

// WithReload adds a reload trigger besides SIGHUP.
func WithReload(ch <-chan struct{}) Option { return func(o *options) { o.reload = ch } }

// WithReconcileInterval overrides DefaultReconcileInterval.
func WithReconcileInterval(d time.Duration) Option {
	return func(o *options) { o.reconcileInterval = d }
}

// WithLogOutput overrides the logger's outputs (level and format still come
// from the config).
func WithLogOutput(lo logging.Options) Option { return func(o *options) { o.logOptions = lo } }

// daemon is the running process. Fields under mu are read by the API and
// the agent's callbacks; the rest belong to the main loop.
type daemon struct {
	o       options
	cfgPath string
	log     *zap.Logger
	notify  *notify.Notifier
	server  *api.Server
	started time.Time
	metrics *metrics.Metrics
	mserver *metrics.Server // nil when metricsAddress is "" or busy
	// metricsNote says why the metrics server is not running (status).
	metricsNote string

	// cur is the pipeline in use, for the socket's lock-free hot path
	// (also under mu as pipe).
	cur atomic.Pointer[pipeline]
	// rearmsBefore counts the token file re-arms of pipelines replaced by
	// reloads, so the counter never goes down.
	rearmsBefore atomic.Int64
	// pubMu orders writing and withdrawing public.ecr.aws's hosts.toml.
	pubMu sync.Mutex

	mu         sync.Mutex
	cfg        *config.Config
	loadedAt   time.Time
	reloadNote string
	writer     *cri.Writer
	files      map[string]string // host -> hosts.toml state
	pipe       *pipeline
	lastTick   time.Time
	tickEvery  time.Duration
}

// Run runs the daemon with the config at cfgPath until ctx is done or
// SIGTERM/SIGINT arrives. SIGHUP reloads the config. Errors before the
// daemon is up (bad config, socket in use) are returned.
func Run(ctx context.Context, cfgPath string, opts ...Option) error {
	o := options{version: "dev", reconcileInterval: DefaultReconcileInterval}
	for _, f := range opts {
		f(&o)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	lo := o.logOptions
	lo.Level, lo.Format = cfg.Log.Level, cfg.Log.Format
	log, format, err := logging.New(lo)
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck

	d := &daemon{o: o, cfgPath: cfgPath, log: log, notify: notify.New(), started: time.Now(),
		cfg: cfg, loadedAt: time.Now(), files: map[string]string{}}
	d.metrics = metrics.New(metricsSource{d})
	log.Info("starting ecr-node-auth", zap.String("version", o.version), zap.String("config", cfgPath),
		zap.String("log_format", format), zap.Int("registries", len(cfg.Registries)), zap.Int("mirrors", len(cfg.Mirrors)),
		zap.String("certs_dir", cfg.Containerd.CertsDir), zap.String("socket", cfg.Socket))

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if err := d.start(ctx); err != nil {
		log.Error("start failed", zap.Error(err))
		return err
	}
	d.loop(ctx, sigs)
	d.stop()
	return nil
}

// start brings everything up and sends READY=1. It never waits for AWS.
func (d *daemon) start(ctx context.Context) error {
	d.writer = cri.NewWriter(d.cfg.Containerd.CertsDir, d.log.Named("cri"))
	pipe, err := d.newPipeline(ctx, d.cfg)
	if err != nil {
		return err
	}
	// Installed before the servers answer (the agent starts below).
	d.mu.Lock()
	d.pipe = pipe
	d.mu.Unlock()
	d.cur.Store(pipe)
	if d.cfg.MetricsAddress != "" {
		// Metrics are not worth refusing credentials for: a busy port is
		// reported (log, status) and the daemon runs without them.
		ms, err := metrics.Listen(d.cfg.MetricsAddress, d.metrics, metrics.Probes{Live: d.liveReasons, Ready: d.readyReasons}, d.log)
		if err != nil {
			d.log.Error("metrics server not started; running without /metrics, /healthz and /readyz", zap.Error(err))
			d.metricsNote = "metrics server not running: " + err.Error()
		} else {
			d.mserver = ms
			d.log.Info("metrics server listening", zap.String("address", ms.Addr()))
		}
	}
	srv, err := api.ListenWith(d.cfg.Socket, d, api.ServerOptions{
		Log:      d.log,
		Policy:   api.DefaultPeerPolicy(d.cfg.SocketGID, d.cfg.SocketGroup),
		Observer: d.metrics,
	})
	if err != nil {
		d.mserver.Close(context.Background()) //nolint:errcheck
		pipe.stop()
		return err
	}
	d.server = srv
	pipe.start(ctx)
	d.checkContainerdConfig(d.cfg)
	d.notify.Ready(d.stateLine())
	d.log.Info("ready", zap.String("status", d.notify.CurrentStatus()), zap.String("socket", d.cfg.Socket))
	return nil
}

// loop is the main loop: it alone feeds the systemd watchdog, so a stuck
// loop gets the daemon restarted.
func (d *daemon) loop(ctx context.Context, sigs <-chan os.Signal) {
	every := tickInterval
	if w := d.notify.WatchdogInterval(); w > 0 && w < every {
		every = w
	}
	d.mu.Lock()
	d.tickEvery, d.lastTick = every, time.Now()
	d.mu.Unlock()
	tick := time.NewTicker(every)
	defer tick.Stop()
	reconcile := time.NewTicker(d.o.reconcileInterval)
	defer reconcile.Stop()
	d.notify.Ping()

	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping: context done")
			return
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload(ctx)
				continue
			}
			d.log.Info("stopping", zap.String("signal", sig.String()))
			return
		case <-d.o.reload:
			d.reload(ctx)
		case <-d.tokenChanges():
			d.tokenChanged()
		case <-reconcile.C:
			d.reconcile()
		case <-tick.C:
		}
		d.heartbeat()
	}
}

// heartbeat runs after every loop iteration: watchdog and status line.
func (d *daemon) heartbeat() {
	d.mu.Lock()
	d.lastTick = time.Now()
	d.mu.Unlock()
	if err := d.notify.Ping(); err != nil {
		d.log.Warn("systemd watchdog ping failed", zap.Error(err))
	}
	if err := d.notify.Status(d.stateLine()); err != nil {
		d.log.Debug("systemd status update failed", zap.Error(err))
	}
}

// stop shuts down: STOPPING=1, the socket closed and removed, the token
// agent and watcher stopped. hosts.toml files stay: their tokens remain
// valid while the daemon restarts.
func (d *daemon) stop() {
	d.notify.Stopping()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.server.Close(ctx); err != nil {
		d.log.Warn("closing the socket", zap.Error(err))
	}
	if err := d.mserver.Close(ctx); err != nil {
		d.log.Warn("closing the metrics server", zap.Error(err))
	}
	d.mu.Lock()
	pipe := d.pipe
	d.mu.Unlock()
	pipe.stop()
	d.log.Info("stopped")
}

// checkContainerdConfig reports (never changes) containerd's config file.
func (d *daemon) checkContainerdConfig(cfg *config.Config) {
	if _, err := os.Stat(cfg.Containerd.ConfigFile); err != nil {
		d.log.Warn("cannot read containerd's config file; check that it reads the certs dir (ecr-node-auth setup-containerd)",
			zap.String("file", cfg.Containerd.ConfigFile), zap.Error(err))
	}
}
