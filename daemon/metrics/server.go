package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Probes answer /healthz and /readyz: each returns the reasons it fails
// (none: OK).
type Probes struct {
	// Live: the process is alive and its main loop ticking.
	Live func() []string
	// Ready: every configured registry holds a valid token (true when idle).
	Ready func() []string
}

// Server serves /healthz, /readyz and /metrics over TCP.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
}

// Listen starts the metrics server on addr (host:port).
func Listen(addr string, m *Metrics, p Probes, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metricsAddress %s: %w (set another metricsAddress, or \"\" to turn the metrics server off)", addr, err)
	}
	if !Loopback(ln.Addr()) {
		log.Warn("the metrics server listens beyond loopback: /healthz, /readyz and /metrics have no authentication; set metricsAddress to 127.0.0.1:PORT unless a scraper elsewhere needs it",
			zap.String("address", ln.Addr().String()))
	}
	s := &Server{ln: ln, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           Handler(m, p),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(log.Named("metrics")),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// Loopback reports whether a listener's address is a loopback one (0.0.0.0 and
// [::] are every interface).
func Loopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server.
func (s *Server) Close(ctx context.Context) error {
	if s == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.done
	return err
}

// Handler serves /healthz, /readyz and /metrics.
func Handler(m *Metrics, p Probes) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", probe(p.Live))
	mux.HandleFunc("GET /readyz", probe(p.Ready))
	return mux
}

func probe(f func() []string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		var reasons []string
		if f != nil {
			reasons = f()
		}
		if len(reasons) == 0 {
			w.WriteHeader(http.StatusOK)
			fmt.Fprintln(w, "ok")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(reasons, "\n"))
	}
}
