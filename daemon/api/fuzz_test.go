package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// fuzzProvider answers like the daemon: any ECR registry has a credential,
// anything else is not ECR; a workload request needs its token.
type fuzzProvider struct{ now time.Time }

func (p fuzzProvider) Status() Status       { return Status{} }
func (p fuzzProvider) Health() Health       { return Health{Status: "ok"} }
func (p fuzzProvider) Registries() []string { return []string{cfgHost} }

func (p fuzzProvider) Credentials(_ context.Context, image string) (Credentials, error) {
	h, err := ecrhost.Parse(image)
	if err != nil {
		return Credentials{}, Errorf(CodeNotECR, "%v", err)
	}
	return Credentials{Registry: h.Name, Username: "AWS", Password: secret, ExpiresAt: p.now.Add(12 * time.Hour), FetchedAt: p.now, Source: SourceConfigured}, nil
}

func (p fuzzProvider) WorkloadCredentials(ctx context.Context, r WorkloadRequest) (Credentials, error) {
	if r.ServiceAccountToken == "" {
		return Credentials{}, Errorf(CodeBadRequest, "no service-account token for %s", r.Image)
	}
	c, err := p.Credentials(ctx, r.Image)
	c.Source = SourceWorkload
	return c, err
}

var fuzzMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, "PATCH", "BREW"}

// FuzzHandler sends arbitrary methods, paths, queries and bodies to the
// socket API's handler, in memory: it never panics; every answer is JSON with
// a known status; errors carry a code and a message; the password is only in
// a 200 credentials answer, for the registry the image names; the request's
// service-account token is never echoed.
func FuzzHandler(f *testing.F) {
	seeds := []struct {
		method      int
		target      string
		body        string
		contentType string
	}{
		{0, PathCredentials + "?image=" + cfgHost + "/app:1", "", ""},
		{0, PathCredentials + "?image=" + cfgHost + ":443/app:1", "", ""},
		{0, PathCredentials + "?x=1&image=" + strings.ReplaceAll(cfgHost+"/app:1", ":", "%3A"), "", ""},
		{0, PathCredentials + "?image=ghcr.io/a/b", "", ""},
		{0, PathCredentials + "?image=%zz", "", ""},
		{0, PathCredentials, "", ""},
		{1, PathCredentials, `{"image":"` + cfgHost + `/app:1","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{"eks.amazonaws.com/role-arn":"` + roleARN + `"}}`, "application/json"},
		{1, PathCredentials, `{"image": ` + saToken, ""},
		{1, PathCredentials, `{"image": 5}`, ""},
		{1, PathCredentials, `{"serviceAccountToken":"` + saToken + `"}`, ""},
		{1, PathCredentials, `{"image":"` + cfgHost + `","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{"` + saToken + `":1}}`, ""},
		{2, PathCredentials, "", ""},
		{0, PathStatus, "", ""}, {0, PathHealth, "", ""}, {0, PathRegistries, "", ""}, {3, PathRegistries, "", ""},
		{0, "/v1/../v1/status", "", ""}, {0, "/nope", "", ""},
	}
	for _, s := range seeds {
		f.Add(uint8(s.method), s.target, []byte(s.body))
	}
	h := Handler(fuzzProvider{now: time.Date(2026, 12, 4, 5, 0, 0, 0, time.UTC)})
	f.Fuzz(func(t *testing.T, m uint8, target string, body []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(target, "/") {
			return // not a request line an HTTP server would pass on
		}
		req := (&http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/json"}}, Host: "unix",
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		}).WithContext(context.Background())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		res := w.Result()
		out := w.Body.Bytes()

		switch res.StatusCode {
		case 200, 400, 404, 405, 413, 500, 503:
		default:
			t.Fatalf("%s %q: status %d", method, target, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: Content-Type %q", method, target, ct)
		}
		var loose struct {
			ServiceAccountToken string `json:"serviceAccountToken"`
		}
		_ = json.Unmarshal(body, &loose)
		if tok := loose.ServiceAccountToken; len(tok) >= 16 && bytes.Contains(out, []byte(tok)) {
			t.Fatalf("%s %q: the service-account token is echoed: %s", method, target, out)
		}
		var m2 map[string]any
		if err := json.Unmarshal(out, &m2); err != nil {
			t.Fatalf("%s %q: answer is not JSON: %v: %q", method, target, err, out)
		}
		isCreds := u.Path == PathCredentials && (method == http.MethodGet || method == http.MethodPost)
		if res.StatusCode != 200 {
			if m2["code"] == nil || m2["code"] == "" || m2["error"] == nil || m2["error"] == "" {
				t.Fatalf("%s %q: error without code or message: %s", method, target, out)
			}
			if bytes.Contains(out, []byte(secret)) {
				t.Fatalf("%s %q: error answer holds the password: %s", method, target, out)
			}
			return
		}
		switch u.Path {
		case PathStatus, PathHealth, PathRegistries:
			if method != http.MethodGet {
				t.Fatalf("%s %s answered 200", method, u.Path)
			}
		case PathCredentials:
		default:
			t.Fatalf("%s %q: 200 for an unknown path", method, target)
		}
		if !isCreds {
			if bytes.Contains(out, []byte(secret)) {
				t.Fatalf("%s %q: the password outside a credentials answer: %s", method, target, out)
			}
			return
		}
		var image string
		if method == http.MethodGet {
			image, _ = queryParam(u.RawQuery, "image")
		} else {
			var in workloadWire
			_ = json.NewDecoder(bytes.NewReader(body)).Decode(&in)
			image = in.Image
		}
		want, err := ecrhost.Parse(image)
		if err != nil || m2["password"] != secret || m2["registry"] != want.Name || m2["username"] != "AWS" {
			t.Fatalf("%s %q: answer %s for image %q (%+v, %v)", method, target, out, image, want, err)
		}
	})
}
