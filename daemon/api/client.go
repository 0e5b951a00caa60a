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

// Client reads the daemon's API.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
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
		return resp.StatusCode, fmt.Errorf("ecr-node-auth at %s answered %s for %s", c.socket, resp.Status, path)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return resp.StatusCode, fmt.Errorf("ecr-node-auth at %s sent an unreadable answer for %s: %w", c.socket, path, err)
	}
	return resp.StatusCode, nil
}

func (c *Client) unreachable(err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("cannot reach ecr-node-auth at %s: permission denied (the socket is for root; run with sudo)", c.socket)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach ecr-node-auth at %s: is the daemon running? (systemctl status ecr-node-auth)", c.socket)
	}
	return fmt.Errorf("cannot reach ecr-node-auth at %s: is the daemon running? (systemctl status ecr-node-auth): %v", c.socket, err)
}
