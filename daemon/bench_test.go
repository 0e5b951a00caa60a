package daemon

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// BenchmarkSocketLookup measures GET /v1/credentials for a configured host
// through the running daemon: parallel keep-alive clients over the Unix
// socket, with the peer check, metrics and JSON encoding. It reports p50/p99
// latency (µs), lookups per second, AWS calls per lookup (0 when warm) and
// the CPU per lookup of the whole process (server and client).
//
// Two clients: "nethttp" is Go's http.Client; "raw" writes the HTTP/1.1
// request by hand and reads the answer with a minimal parser, so the figure
// is the server's rather than http.Client's (which costs about as much CPU
// as the server, on the same 2 cores).
func BenchmarkSocketLookup(b *testing.B) {
	h := newHarness(b, "["+host1+"]")
	f := h.useFakeAWS()
	h.start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := api.NewClient(h.sock).Status(context.Background())
		if err == nil && st.Ready {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("not ready: %+v %v", st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	target := api.PathCredentials + "?image=" + host1 + "/app:1"

	b.Run("nethttp", func(b *testing.B) {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", h.sock)
			},
			MaxIdleConnsPerHost: 256,
		}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		runLookups(b, f, func() (func() error, func()) {
			req, _ := http.NewRequest(http.MethodGet, "http://ecr-node-auth"+target, nil)
			return func() error {
				resp, err := hc.Do(req)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			}, func() {}
		})
	})
	b.Run("raw", func(b *testing.B) {
		runLookups(b, f, func() (func() error, func()) {
			conn, err := net.Dial("unix", h.sock)
			if err != nil {
				return func() error { return err }, func() {}
			}
			req := []byte("GET " + target + " HTTP/1.1\r\nHost: ecr-node-auth\r\n\r\n")
			br := bufio.NewReaderSize(conn, 8192)
			body := make([]byte, 0, 4096)
			return func() error {
				if _, err := conn.Write(req); err != nil {
					return err
				}
				n, err := readAnswer(br)
				if err != nil {
					return err
				}
				body = body[:n]
				_, err = io.ReadFull(br, body)
				return err
			}, func() { conn.Close() }
		})
	})
}

// readAnswer reads a 200 status line and headers; it returns Content-Length.
func readAnswer(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return 0, fmt.Errorf("answer %q", line)
	}
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return 0, err
			}
		}
	}
	if n < 0 {
		return 0, fmt.Errorf("no Content-Length")
	}
	return n, nil
}

// runLookups runs newClient's lookups in parallel and reports the figures.
func runLookups(b *testing.B, f *fakeaws.Fake, newClient func() (lookup func() error, done func())) {
	var mu sync.Mutex
	var lat []time.Duration
	before := ecrCalls(f)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		lookup, done := newClient()
		defer done()
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			t0 := time.Now()
			if err := lookup(); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "lookups/s")
	b.ReportMetric(float64(ecrCalls(f)-before)/float64(len(lat)), "aws-calls/lookup")
	// CPU of this process (server and client together) per lookup: on a
	// shared, loaded machine it shows the capacity that wall-clock figures
	// hide (2 cores / cpu-µs = lookups/s at most).
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(len(lat)), "cpu-µs/lookup")
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
