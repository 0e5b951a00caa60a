package notify

import (
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/notify/notifytest"
)

func TestNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := New()
	if n.WatchdogInterval() != 0 {
		t.Errorf("watchdog interval %v without WATCHDOG_USEC", n.WatchdogInterval())
	}
	for _, err := range []error{n.Ready("idle"), n.Status("x"), n.Ping(), n.Reloading(), n.Reloaded(), n.Stopping()} {
		if err != nil {
			t.Errorf("no-op returned %v", err)
		}
	}
}

func TestMessages(t *testing.T) {
	sock := notifytest.Listen(t)
	t.Setenv("WATCHDOG_USEC", "60000000") // WatchdogSec=60
	t.Setenv("WATCHDOG_PID", "")
	n := New()
	if got := n.WatchdogInterval(); got != 30*time.Second {
		t.Fatalf("watchdog interval %v, want 30s", got)
	}
	now := time.Unix(1000, 0)
	n.now = func() time.Time { return now }

	steps := []struct {
		do   func() error
		want string // "" = nothing sent
	}{
		{func() error { return n.Ready("waiting for STS: connection refused") }, "READY=1\nSTATUS=waiting for STS: connection refused"},
		{func() error { return n.Status("waiting for STS: connection refused") }, ""},
		{func() error { return n.Status("serving 2 registries") }, "STATUS=serving 2 registries"},
		{func() error { return n.Ping() }, "WATCHDOG=1"},
		{func() error { now = now.Add(10 * time.Second); return n.Ping() }, ""},
		{func() error { now = now.Add(20 * time.Second); return n.Ping() }, "WATCHDOG=1"},
		{func() error { return n.Ready("serving 2 registries") }, ""},
		{func() error { return n.Reloading() }, "RELOADING=1\nMONOTONIC_USEC="},
		{func() error { return n.Reloaded() }, "READY=1"},
		{func() error { return n.Stopping() }, "STOPPING=1"},
	}
	want := 0
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if s.want == "" {
			continue
		}
		want++
		deadline := time.Now().Add(2 * time.Second)
		for len(sock.Messages()) < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		msgs := sock.Messages()
		if len(msgs) != want || !strings.HasPrefix(msgs[want-1], s.want) {
			t.Fatalf("step %d: messages %q, want #%d to start with %q", i, msgs, want, s.want)
		}
	}
	if n.CurrentStatus() != "serving 2 registries" {
		t.Errorf("status %q", n.CurrentStatus())
	}
}
