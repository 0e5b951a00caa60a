// Package notifytest is a fake systemd notify socket for tests.
package notifytest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Socket collects the datagrams sent to NOTIFY_SOCKET.
type Socket struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	cond *sync.Cond
}

// Listen creates a unixgram socket, sets NOTIFY_SOCKET to it for the test
// and collects every message until the test ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	// A short directory: socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{conn: conn}
	s.cond = sync.NewCond(&s.mu)
	t.Setenv("NOTIFY_SOCKET", path)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.cond.Broadcast()
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

// Messages returns every datagram received so far.
func (s *Socket) Messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// Wait returns the first message containing substr, waiting up to timeout.
func (s *Socket) Wait(substr string, timeout time.Duration) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range s.Messages() {
			if strings.Contains(m, substr) {
				return m, true
			}
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Count is how many messages contain substr.
func (s *Socket) Count(substr string) int {
	n := 0
	for _, m := range s.Messages() {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}
