package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Limits of the socket server: the clients are local tools that send one
// small request, so anything slow or large is refused. The write timeout
// leaves room for an on-demand fetch (CredentialsTimeout).
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = CredentialsTimeout + 5*time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// MaxBodyBytes bounds a POST /v1/credentials body.
	MaxBodyBytes = 64 << 10
	probeTimeout = time.Second
)

// CredentialsTimeout bounds the work of one credentials request (an
// on-demand or workload fetch from AWS).
const CredentialsTimeout = 10 * time.Second

// Observer records each request (metrics). path is one of the Path
// constants, or "other"; it must be cheap and must not block.
type Observer interface {
	ObserveRequest(path string, code int, d time.Duration)
}

// ServerOptions configures ListenWith.
type ServerOptions struct {
	Log *zap.Logger
	// Policy decides which peers may connect (SO_PEERCRED).
	Policy PeerPolicy
	// Observer, if set, records every request.
	Observer Observer
}

// Server serves Provider on a Unix socket.
type Server struct {
	path string
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	err  error
}

// Listen is ListenWith with the default peer policy (root and the daemon's
// own user) and no observer.
func Listen(path string, p Provider, log *zap.Logger) (*Server, error) {
	return ListenWith(path, p, ServerOptions{Log: log, Policy: DefaultPeerPolicy(-1, "")})
}

// ListenWith creates the socket at path and starts serving p. The socket's
// mode is 0600, or 0660 with its group set to o.Policy.GID when that is set.
//
// A leftover socket file from a dead daemon is replaced; ListenWith refuses
// when a daemon answers on it, or when path is not a socket (a regular file
// or a directory is never removed). The socket is bound under a temporary
// name, restricted and given its group, then renamed into place, so it is
// never reachable with wider permissions.
func ListenWith(path string, p Provider, o ServerOptions) (*Server, error) {
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := checkStale(path, log); err != nil {
		return nil, err
	}
	tmp := path + ".tmp-" + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // the file is renamed: Close removes path itself
	fail := func(err error) (*Server, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	mode := os.FileMode(0o600)
	if o.Policy.GID >= 0 {
		mode = 0o660
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if o.Policy.GID >= 0 {
		if err := os.Chown(tmp, -1, o.Policy.GID); err != nil {
			return fail(fmt.Errorf("set the group to socketGroup %q (gid %d): %w", o.Policy.GroupName, o.Policy.GID, err))
		}
		if err := os.Chmod(tmp, mode); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	s := &Server{path: path, ln: ln, done: make(chan struct{})}
	policy := o.Policy
	s.srv = &http.Server{
		Handler:           newHandler(p, o.Observer, log.Named("api")),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(log.Named("api")),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cred, err := peerCred(c)
			st := &peerState{ucred: cred, err: err}
			if err == nil {
				st.err = policy.Allow(cred)
				if st.err != nil {
					log.Warn("socket peer refused", zap.Int("uid", int(cred.Uid)), zap.Int("gid", int(cred.Gid)), zap.Int32("pid", cred.Pid))
				}
			}
			return context.WithValue(ctx, peerKey{}, st)
		},
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving (waiting up to ctx for requests in flight) and removes
// the socket file.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.done
	if rmErr := os.Remove(s.path); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
		err = rmErr
	}
	if err == nil {
		err = s.err
	}
	return err
}

// checkStale makes path free to bind, or explains why it is not.
func checkStale(path string, log *zap.Logger) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if st.Mode()&fs.ModeSocket == 0 {
		kind := "a regular file"
		if st.IsDir() {
			kind = "a directory"
		} else if st.Mode()&fs.ModeSymlink != 0 {
			kind = "a symbolic link"
		}
		return fmt.Errorf("socket path %s is %s, not a socket; remove it or set another \"socket\" in the config", path, kind)
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another ecr-node-auth is already serving on %s; stop it first (systemctl stop ecr-node-auth) or set another \"socket\" in the config", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s exists and cannot be probed (%v); remove it if no daemon uses it", path, err)
	}
	log.Info("removing stale socket left by a previous run", zap.String("socket", path))
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// Handler serves the API routes with no peer check (for tests and for
// embedding behind another listener that checks its peers).
func Handler(p Provider) http.Handler { return newHandler(p, nil, zap.NewNop()) }

type handler struct {
	p   Provider
	obs Observer
	log *zap.Logger
}

func newHandler(p Provider, obs Observer, log *zap.Logger) http.Handler {
	return &handler{p: p, obs: obs, log: log}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	path, code := h.route(w, r)
	if h.obs != nil {
		h.obs.ObserveRequest(path, code, time.Since(start))
	}
}

// route serves r and returns the path label and the status code sent.
func (h *handler) route(w http.ResponseWriter, r *http.Request) (string, int) {
	if st, _ := r.Context().Value(peerKey{}).(*peerState); st != nil && st.err != nil {
		path := r.URL.Path
		switch path {
		case PathStatus, PathHealth, PathCredentials, PathRegistries:
		default:
			path = "other"
		}
		return path, writeError(w, Errorf(CodeForbidden, "%v", st.err))
	}
	switch r.URL.Path {
	case PathCredentials:
		switch r.Method {
		case http.MethodGet:
			return PathCredentials, h.getCredentials(w, r)
		case http.MethodPost:
			return PathCredentials, h.postCredentials(w, r)
		}
		return PathCredentials, methodNotAllowed(w, "GET, POST")
	case PathStatus:
		if r.Method != http.MethodGet {
			return PathStatus, methodNotAllowed(w, "GET")
		}
		return PathStatus, writeJSON(w, http.StatusOK, h.p.Status())
	case PathHealth:
		if r.Method != http.MethodGet {
			return PathHealth, methodNotAllowed(w, "GET")
		}
		hl := h.p.Health()
		code := http.StatusOK
		if hl.Status != "ok" {
			code = http.StatusServiceUnavailable
		}
		return PathHealth, writeJSON(w, code, hl)
	case PathRegistries:
		if r.Method != http.MethodGet {
			return PathRegistries, methodNotAllowed(w, "GET")
		}
		regs := h.p.Registries()
		if regs == nil {
			regs = []string{}
		}
		return PathRegistries, writeJSON(w, http.StatusOK, Registries{Registries: regs})
	}
	return "other", writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeNotFound,
		Message: fmt.Sprintf("no such API path %q (this daemon serves %s, %s, %s and %s)", r.URL.Path, PathCredentials, PathRegistries, PathStatus, PathHealth)})
}

func methodNotAllowed(w http.ResponseWriter, allow string) int {
	w.Header().Set("Allow", allow)
	return writeError(w, &APIError{Status: http.StatusMethodNotAllowed, Code: CodeBadRequest, Message: "method not allowed; use " + allow})
}

// getCredentials is the hot path: a configured host is a map lookup.
func (h *handler) getCredentials(w http.ResponseWriter, r *http.Request) int {
	image, ok := queryParam(r.URL.RawQuery, "image")
	if !ok || image == "" {
		return writeError(w, Errorf(CodeBadRequest, "missing query parameter \"image\": %s?image=<image reference or registry host>", PathCredentials))
	}
	// The provider bounds its own slow path (CredentialsTimeout): no timer
	// on the hot path.
	c, err := h.p.Credentials(r.Context(), image)
	if err != nil {
		return h.fail(w, err)
	}
	return writeCredentials(w, c)
}

func (h *handler) postCredentials(w http.ResponseWriter, r *http.Request) int {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	var in workloadWire
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&in); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return writeError(w, &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeBadRequest,
				Message: fmt.Sprintf("request body larger than %d KiB", MaxBodyBytes>>10)})
		}
		// The decoder's message names a type or an offset, never the
		// body's content.
		return writeError(w, Errorf(CodeBadRequest, "request body is not a JSON object {\"image\", \"serviceAccountToken\", \"serviceAccountAnnotations\"}: %s", jsonErrorText(err)))
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return writeError(w, &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeBadRequest,
				Message: fmt.Sprintf("request body larger than %d KiB", MaxBodyBytes>>10)})
		}
	}
	if in.Image == "" {
		return writeError(w, Errorf(CodeBadRequest, "missing \"image\" in the request body"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), CredentialsTimeout)
	defer cancel()
	c, err := h.p.WorkloadCredentials(ctx, WorkloadRequest(in))
	if err != nil {
		return h.fail(w, err)
	}
	return writeCredentials(w, c)
}

// jsonErrorText describes a decoding error without quoting the input.
func jsonErrorText(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or truncated body"
	}
	return "invalid JSON"
}

func (h *handler) fail(w http.ResponseWriter, err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return writeError(w, ae)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return writeError(w, Errorf(CodeNotReady, "no credential within %s: %v", CredentialsTimeout, err))
	}
	h.log.Warn("credentials request failed", zap.Error(err))
	return writeError(w, &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()})
}

// queryParam finds key in a raw query without building a map.
func queryParam(raw, key string) (string, bool) {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		if !strings.ContainsAny(v, "%+") {
			return v, true
		}
		u, err := url.QueryUnescape(v)
		if err != nil {
			return "", false
		}
		return u, true
	}
	return "", false
}

// writeCredentials encodes the answer by hand into a pooled buffer: this is
// the socket's hot path, and encoding/json's reflection is its largest cost.
func writeCredentials(w http.ResponseWriter, c Credentials) int {
	bp := bufPool.Get().(*[]byte)
	b := appendCredentials((*bp)[:0], c)
	hd := w.Header()
	hd["Content-Type"] = contentJSON
	hd["Cache-Control"] = noStore
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	clear(b) // the buffer held a password
	*bp = b
	bufPool.Put(bp)
	return http.StatusOK
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// appendCredentials writes the JSON of credentialsWire (same field names and
// order; times in RFC 3339, UTC).
func appendCredentials(b []byte, c Credentials) []byte {
	b = append(b, `{"registry":`...)
	b = appendJSONString(b, c.Registry)
	b = append(b, `,"username":`...)
	b = appendJSONString(b, c.Username)
	b = append(b, `,"password":`...)
	b = appendJSONString(b, c.Password)
	b = append(b, `,"expiresAt":"`...)
	b = c.ExpiresAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","fetchedAt":"`...)
	b = c.FetchedAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","source":`...)
	b = appendJSONString(b, c.Source)
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping what JSON requires
// (and <, >, & as encoding/json does).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' && c < utf8.RuneSelf {
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError && r != '\u2028' && r != '\u2029' {
				i += size - 1
				continue
			}
			b = append(b, s[start:i]...)
			if r == utf8.RuneError {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, `\u202`...)
				b = append(b, hexDigits[r&0xf])
			}
			start = i + size
			i += size - 1
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

var (
	contentJSON = []string{"application/json"}
	noStore     = []string{"no-store"}
)

func writeError(w http.ResponseWriter, e *APIError) int {
	status := e.Status
	if status == 0 {
		status = statusOf(e.Code)
	}
	return writeJSON(w, status, errorWire{Error: e.Message, Code: e.Code})
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func writeJSON(w http.ResponseWriter, code int, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "encoding error", http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	hd := w.Header()
	hd["Content-Type"] = contentJSON
	hd["Cache-Control"] = noStore
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
	return code
}
