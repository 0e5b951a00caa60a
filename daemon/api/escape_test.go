package api

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// recordingProvider refuses every image and remembers what it was asked, as the
// daemon's provider refuses names that are not a valid ECR host.
type recordingProvider struct {
	fakeProvider
	mu   sync.Mutex
	seen []string
}

func (p *recordingProvider) Credentials(_ context.Context, image string) (Credentials, error) {
	p.mu.Lock()
	p.seen = append(p.seen, image)
	p.mu.Unlock()
	return Credentials{}, Errorf(CodeBadRequest, "%q is not a valid Amazon ECR registry", image)
}

func (p *recordingProvider) WorkloadCredentials(ctx context.Context, r WorkloadRequest) (Credentials, error) {
	return p.Credentials(ctx, r.Image)
}

func (p *recordingProvider) last() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return ""
	}
	return p.seen[len(p.seen)-1]
}

// TestEscapingImagesReachTheProviderVerbatim: the socket API decodes the image once
// (query escapes, JSON escapes) and hands it to the provider unchanged, so the
// provider's host check (daemon.ecrHost, tested in package daemon) sees exactly what
// the learn path would use: no second decoding turns %252e into '.', and nothing is
// cleaned into a different name. The refusal comes back as a 400 with the name
// JSON-escaped.
func TestEscapingImagesReachTheProviderVerbatim(t *testing.T) {
	p := &recordingProvider{}
	path := sockPath(t)
	listen(t, path, p)
	c := NewClient(path)
	tests := []struct {
		name, method, path, body string
		want                     string // the image the provider gets
	}{
		{"encoded traversal", "GET", PathCredentials + "?image=%2e%2e%2f%2e%2e%2fetc", "", "../../etc"},
		{"double-encoded dots", "GET", PathCredentials + "?image=%252e%252e", "", "%2e%2e"},
		{"encoded nul", "GET", PathCredentials + "?image=" + cfgHost + "%00", "", cfgHost + "\x00"},
		{"encoded backslash", "GET", PathCredentials + "?image=%5c..%5cetc", "", `\..\etc`},
		{"encoded one-dot leader", "GET", PathCredentials + "?image=%E2%80%A4%E2%80%A4", "", "\u2024\u2024"},
		{"raw absolute path", "GET", PathCredentials + "?image=/etc/passwd", "", "/etc/passwd"},
		{"plus is a space", "GET", PathCredentials + "?image=a+b%2F..", "", "a b/.."},
		{"JSON rtl override", "POST", PathCredentials, `{"image":"\u202e` + cfgHost + `"}`, "\u202e" + cfgHost},
		{"JSON nul", "POST", PathCredentials, `{"image":"..\u0000/x"}`, "..\x00/x"},
		{"JSON fullwidth solidus", "POST", PathCredentials, `{"image":"..\uff0f..\uff0fetc"}`, "..\uff0f..\uff0fetc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body *strings.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			var a rawAnswer
			if body != nil {
				a = do(t, c, tt.method, tt.path, body)
			} else {
				a = do(t, c, tt.method, tt.path, nil)
			}
			if got := p.last(); got != tt.want {
				t.Errorf("the provider got %q, want %q", got, tt.want)
			}
			if a.code != 400 {
				t.Fatalf("code %d, want the provider's 400: %s", a.code, a.body)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(a.body), &m); err != nil || !strings.Contains(m["error"].(string), "is not a valid Amazon ECR registry") {
				t.Errorf("answer %s (%v), want the provider's message as JSON", a.body, err)
			}
			if strings.ContainsAny(a.body, "\x00\u202e") {
				t.Errorf("answer carries a raw control character: %q", a.body)
			}
		})
	}
}
