package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
)

// tree lists every path below root, relative to it.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestLearnRefusesEscapingHosts: with learnRegistries on, every on-demand request on
// the socket names a registry that becomes certs.d/<host>. Names that could escape the
// certs dir (traversal, separators, absolute paths, NUL, percent-encoding, unicode
// lookalikes and controls) are refused with a 400 or 404 naming the problem, before
// any AWS call and before any file is created, through GET (client-escaped and raw
// query) and POST (node and workload role).
func TestLearnRefusesEscapingHosts(t *testing.T) {
	h, f := startLearning(t)
	h.waitStatus("ready with the configured file", func(st api.Status) bool {
		return st.Ready && len(st.Registries) == 1 && st.Registries[0].FileState == fileWritten
	})
	before := tree(t, h.dir)
	callsBefore := ecrCalls(f)
	c := api.NewClient(h.sock)
	ctx := context.Background()

	const suffix = ".dkr.ecr.us-east-1.amazonaws.com"
	images := []struct{ name, image, want string }{
		{"dotdot", "..", `".." is not an Amazon ECR registry`},
		{"traversal before host", "../../etc/" + host1, `".." is not an Amazon ECR registry`},
		{"traversal after an unknown host", host2 + "/../../../etc/passwd", `contains ".."`},
		{"absolute path", "/etc/containerd/certs.d", `"" is not an Amazon ECR registry`},
		{"backslash", `..\..\` + host1, "backslash"},
		{"backslash in host", "111122223333.dkr.ecr.us-east-1\\amazonaws.com/app", "backslash"},
		{"nul", host1 + "\x00/app", "control character"},
		{"percent-encoded dots", "%2e%2e/" + host1, `"%2e%2e" is not an Amazon ECR registry`},
		{"percent-encoded dot in host", "111122223333%2edkr.ecr.us-east-1.amazonaws.com/app", "is not allowed"},
		{"one-dot leader", "111122223333.dkr.ecr.us-east-1\u2024amazonaws.com/app", "U+2024"},
		{"fullwidth solidus", host1 + "\uff0f..\uff0fetc", "U+FF0F"},
		{"rtl override", "\u202e111122223333" + suffix + "/app", "U+202E"},
		{"zero-width joiner", "222233334444.dkr.ecr.us-east-1\u200d.amazonaws.com/app", "U+200D"},
		{"fullwidth dot", "222233334444.dkr.ecr\uff0eus-east-1.amazonaws.com", "U+FF0E"},
	}
	refused := func(t *testing.T, what string, err error, want string) {
		t.Helper()
		var ae *api.APIError
		switch {
		case err == nil:
			t.Errorf("%s: answered with credentials", what)
		case !errors.As(err, &ae):
			t.Errorf("%s: %v, want an API error", what, err)
		case ae.Status != http.StatusBadRequest && ae.Status != http.StatusNotFound:
			t.Errorf("%s: %d %s %q, want 400 or 404", what, ae.Status, ae.Code, ae.Message)
		case !strings.Contains(ae.Message, want):
			t.Errorf("%s: %q, want it to say %q", what, ae.Message, want)
		}
	}
	for _, tt := range images {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Credentials(ctx, tt.image)
			refused(t, "GET", err, tt.want)
			_, err = c.WorkloadCredentials(ctx, api.WorkloadRequest{Image: tt.image, ServiceAccountToken: "sa-TOKEN-escape", ServiceAccountAnnotations: map[string]string{}})
			refused(t, "POST node", err, tt.want)
			_, err = c.WorkloadCredentials(ctx, api.WorkloadRequest{Image: tt.image, ServiceAccountToken: "sa-TOKEN-escape",
				ServiceAccountAnnotations: map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/a"}})
			refused(t, "POST workload", err, tt.want)
		})
	}

	// Raw queries: the server's own percent-decoding must not turn an encoded name
	// into a path either.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.sock)
	}}}
	for _, q := range []string{
		"%2e%2e%2f%2e%2e%2fetc",
		"%2E%2E",
		"..%2f" + host1,
		host2 + "%2f..%2f..%2fetc",
		"111122223333.dkr.ecr.us-east-1.amazonaws.com%00",
		"%2fetc%2fpasswd",
		"%5c..%5c" + host1,
		"%E2%80%A4%E2%80%A4",
		"111122223333.dkr.ecr.us-east-1%E2%80%A4amazonaws.com",
		"%252e%252e",
	} {
		resp, err := hc.Get("http://x" + api.PathCredentials + "?image=" + q)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET ?image=%s: %d %s, want 400 or 404", q, resp.StatusCode, body)
		}
	}

	// A configured host is answered from its map entry with no parsing (the hot
	// path): whatever follows it in the reference, the answer is that host's, and no
	// file is involved.
	if got, err := c.Credentials(ctx, host1+"/../../../etc/passwd"); err != nil || got.Registry != host1 {
		t.Errorf("configured host with a traversal path: %+v, %v; want %s's credentials", got, err, host1)
	}

	if n := ecrCalls(f) - callsBefore; n != 0 {
		t.Errorf("%d ECR calls for refused names, want none", n)
	}
	if st := h.status(); len(st.Registries) != 1 || st.Registries[0].Host != host1 {
		t.Errorf("registries after refused names: %+v, want only %s", st.Registries, host1)
	}
	// The reconcile loop runs every 200ms: give it two rounds, then nothing may differ.
	time.Sleep(500 * time.Millisecond)
	if after := tree(t, h.dir); !slices.Equal(after, before) {
		t.Errorf("files changed under %s:\nbefore %v\nafter  %v", h.dir, before, after)
	}
	if got := tree(t, h.certs); !slices.Equal(got, []string{".", host1, filepath.Join(host1, "hosts.toml")}) {
		t.Errorf("certs dir holds %v, want only %s/hosts.toml", got, host1)
	}

	// The learn path was live all along: a valid on-demand host gets its file.
	if _, err := c.Credentials(ctx, host2+"/app:1"); err != nil {
		t.Fatalf("on-demand %s: %v", host2, err)
	}
	h.waitStatus("the learned file", func(st api.Status) bool {
		_, err := os.Stat(filepath.Join(h.certs, host2, "hosts.toml"))
		return err == nil
	})
}
