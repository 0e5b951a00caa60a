package api

import (
	"bytes"
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
	"syscall"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// EnvSocket names the socket for clients that get no --socket flag (the
// docker credential helper is called without flags).
const EnvSocket = "ECR_NODE_AUTH_SOCKET"

// ResolveSocket picks the daemon's socket: flag, else $ECR_NODE_AUTH_SOCKET,
// else the config file's socket (when the file exists and is valid), else
// config.DefaultSocket. from says which one was used, for messages.
func ResolveSocket(flag, configPath string) (path, from string) {
	if flag != "" {
		return flag, "--socket"
	}
	if env := os.Getenv(EnvSocket); env != "" {
		return env, EnvSocket
	}
	if configPath != "" {
		if c, err := config.Load(configPath); err == nil {
			return c.Socket, configPath
		}
	}
	return config.DefaultSocket, "default"
}

// DialTimeout bounds connecting to the socket: a daemon that is down is
// noticed at once, so the kubelet plugin can fall back to a direct fetch.
const DialTimeout = time.Second

// Client reads the daemon's API.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path. Each call opens its own
// connection (the clients are short-lived processes).
func NewClient(path string) *Client { return newClient(path, false) }

func newClient(path string, keepAlive bool) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: DialTimeout}
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives:   !keepAlive,
		MaxIdleConnsPerHost: 64,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr, Timeout: CredentialsTimeout + 2*time.Second}}
}

// Status fetches GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	_, err := c.get(ctx, PathStatus, &s)
	return s, err
}

// Health fetches GET /v1/health. A 503 is not an error: h.Status says it.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	_, err := c.get(ctx, PathHealth, &h)
	return h, err
}

// Credentials fetches GET /v1/credentials for an image reference or registry
// host (any form ecrhost.Parse accepts), with the node's identity. Errors:
// ErrDaemonUnreachable (wrapped) when no daemon answers; *APIError for an
// answer other than 200 (errors.Is(err, ErrNotECR) for a host that is not
// ECR).
func (c *Client) Credentials(ctx context.Context, image string) (Credentials, error) {
	var w credentialsWire
	if err := c.do(ctx, http.MethodGet, PathCredentials+"?image="+url.QueryEscape(image), nil, &w); err != nil {
		return Credentials{}, err
	}
	return w.credentials(), nil
}

// WorkloadCredentials fetches POST /v1/credentials (KEP-4412): the pod's
// role from its service-account annotations, assumed with its token; with no
// role annotation, the node's identity. Errors as for Credentials.
func (c *Client) WorkloadCredentials(ctx context.Context, req WorkloadRequest) (Credentials, error) {
	body, err := json.Marshal(workloadWire(req))
	if err != nil {
		return Credentials{}, err
	}
	var w credentialsWire
	if err := c.do(ctx, http.MethodPost, PathCredentials, body, &w); err != nil {
		return Credentials{}, err
	}
	return w.credentials(), nil
}

// Registries fetches GET /v1/registries: the hosts holding a usable
// credential now.
func (c *Client) Registries(ctx context.Context) ([]string, error) {
	var r Registries
	if err := c.do(ctx, http.MethodGet, PathRegistries, nil, &r); err != nil {
		return nil, err
	}
	return r.Registries, nil
}

// do sends a request and decodes a 200 answer into v, or returns *APIError.
func (c *Client) do(ctx context.Context, method, path string, body []byte, v any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://ecr-node-auth"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read answer from ecr-node-auth at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorWire
		if json.Unmarshal(raw, &e) != nil || e.Code == "" {
			return &APIError{Status: resp.StatusCode, Code: "unknown",
				Message: fmt.Sprintf("ecr-node-auth at %s answered %s", c.socket, resp.Status)}
		}
		return &APIError{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("ecr-node-auth at %s sent an unreadable answer (%s)", c.socket, jsonErrorText(err))
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ecr-node-auth"+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, c.unreachable(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read answer from ecr-node-auth at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		var e errorWire
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return resp.StatusCode, &APIError{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
		}
		return resp.StatusCode, fmt.Errorf("ecr-node-auth at %s answered %s for %s", c.socket, resp.Status, path)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return resp.StatusCode, fmt.Errorf("ecr-node-auth at %s sent an unreadable answer for %s: %w", c.socket, path, err)
	}
	return resp.StatusCode, nil
}

// unreachable wraps ErrDaemonUnreachable with the socket path and a hint.
func (c *Client) unreachable(err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot reach ecr-node-auth at %s: permission denied (the socket is for root and the socketGroup; run with sudo): %w", c.socket, ErrDaemonUnreachable)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach ecr-node-auth at %s: is the daemon running? (systemctl status ecr-node-auth): %w", c.socket, ErrDaemonUnreachable)
	}
	return fmt.Errorf("cannot reach ecr-node-auth at %s: is the daemon running? (systemctl status ecr-node-auth): %w: %v", c.socket, ErrDaemonUnreachable, err)
}
