// Package notify speaks systemd's sd_notify protocol: READY=1, STATUS=,
// WATCHDOG=1 and STOPPING=1. Without NOTIFY_SOCKET (a foreground or dev run)
// every call is a no-op.
//
// The watchdog is fed only by the daemon's main loop calling Ping: a
// free-running ticker would keep a stuck daemon alive.
package notify

import (
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to systemd. It is safe for concurrent use.
type Notifier struct {
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	lastPing time.Time
	status   string
	ready    bool
}

// New reads NOTIFY_SOCKET and WATCHDOG_USEC from the environment.
func New() *Notifier {
	n := &Notifier{now: time.Now}
	if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
		n.interval = d / 2
	}
	return n
}

// WatchdogInterval is how often the main loop should call Ping:
// WatchdogSec/2, or 0 when systemd runs no watchdog for this process.
func (n *Notifier) WatchdogInterval() time.Duration { return n.interval }

// Ready sends READY=1 (once) together with the given status.
func (n *Notifier) Ready(status string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ready {
		return n.setStatus(status)
	}
	n.ready = true
	n.status = status
	return send(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

// Status sends STATUS=<s> when it differs from the last one sent.
func (n *Notifier) Status(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.setStatus(s)
}

func (n *Notifier) setStatus(s string) error {
	if s == n.status {
		return nil
	}
	n.status = s
	return send("STATUS=" + s)
}

// CurrentStatus is the last status sent.
func (n *Notifier) CurrentStatus() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

// Ping sends WATCHDOG=1 if the watchdog is on and half its timeout has
// passed since the last ping. Call it from the main loop only.
func (n *Notifier) Ping() error {
	if n.interval <= 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	if !n.lastPing.IsZero() && now.Sub(n.lastPing) < n.interval {
		return nil
	}
	n.lastPing = now
	return send(daemon.SdNotifyWatchdog)
}

// Reloading sends RELOADING=1 with the monotonic timestamp systemd expects.
func (n *Notifier) Reloading() error {
	return send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
}

// Reloaded ends a reload: READY=1 again.
func (n *Notifier) Reloaded() error { return send(daemon.SdNotifyReady) }

// Stopping sends STOPPING=1.
func (n *Notifier) Stopping() error { return send(daemon.SdNotifyStopping) }

func send(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
