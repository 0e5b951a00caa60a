package metrics

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

const password = "metrics-PASSWORD-never-a-label"

type fakeSource struct{ entries []tokens.Entry }

func (f fakeSource) Entries() []tokens.Entry { return f.entries }
func (f fakeSource) Rearms() int             { return 3 }

func scrape(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// Two daemons in one process each have their own registry, and nothing
// secret ever becomes a label or a value.
func TestTwoRegistriesAndNoSecret(t *testing.T) {
	host, _ := ecrhost.Parse("111122223333.dkr.ecr.us-east-1.amazonaws.com")
	now := time.Now()
	cred := &tokens.Credential{Username: "AWS", Password: password, FetchedAt: now, ExpiresAt: now.Add(12 * time.Hour)}
	m1 := New(fakeSource{[]tokens.Entry{{Host: host, Credential: cred, LastAttempt: now}}})
	m2 := New(fakeSource{})
	m1.ObserveRequest("/v1/credentials", 200, 30*time.Microsecond)
	m1.ObserveRequest("/v1/credentials?image="+password, 200, time.Millisecond) // unknown path: "other"
	m1.ObserveRequest("/v1/credentials", 418, time.Millisecond)
	m1.Refreshed(tokens.Entry{Host: host, LastAttempt: now})
	m1.Refreshed(tokens.Entry{Host: host, LastAttempt: now}) // same attempt, another host: counted once
	m1.ObserveAWSCall("STS", "AssumeRoleWithWebIdentity", time.Second, &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized: " + password})
	m1.FileError()

	tests := []struct {
		name string
		m    *Metrics
		want []string
		not  []string
	}{
		{"daemon 1", m1, []string{
			`ecr_node_auth_token_valid{registry="111122223333.dkr.ecr.us-east-1.amazonaws.com"} 1`,
			`ecr_node_auth_token_expiry_seconds{registry="111122223333.dkr.ecr.us-east-1.amazonaws.com"} 43`,
			`ecr_node_auth_socket_requests_total{code="200",path="/v1/credentials"} 1`,
			`ecr_node_auth_socket_requests_total{code="200",path="other"} 1`,
			`ecr_node_auth_socket_requests_total{code="418",path="/v1/credentials"} 1`,
			`ecr_node_auth_refresh_total{result="success",service="aws/us-east-1"} 1`,
			`ecr_node_auth_aws_calls_total{api="STS:AssumeRoleWithWebIdentity",result="permanent"} 1`,
			`ecr_node_auth_errors_total{class="permanent",kind="sts"} 1`,
			`ecr_node_auth_errors_total{class="permanent",kind="hosts_toml"} 1`,
			`ecr_node_auth_token_file_rearms_total 3`,
		}, []string{password}},
		{"daemon 2", m2, []string{`ecr_node_auth_token_file_rearms_total 3`}, []string{"ecr_node_auth_token_valid{", `path="other"} 1`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := scrape(t, Handler(tt.m, Probes{}), "/metrics")
			if code != 200 {
				t.Fatalf("code %d", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("lacks %s", w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(body, n) {
					t.Errorf("holds %s", n)
				}
			}
		})
	}
}

func TestProbes(t *testing.T) {
	m := New(fakeSource{})
	tests := []struct {
		name, path string
		p          Probes
		code       int
		body       string
	}{
		{"live", "/healthz", Probes{Live: func() []string { return nil }}, 200, "ok"},
		{"stalled", "/healthz", Probes{Live: func() []string { return []string{"main loop stalled"} }}, 503, "main loop stalled"},
		{"ready", "/readyz", Probes{Ready: func() []string { return nil }}, 200, "ok"},
		{"not ready", "/readyz", Probes{Ready: func() []string { return []string{"registry x has no valid token: AccessDenied"} }}, 503, "AccessDenied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := scrape(t, Handler(m, tt.p), tt.path)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Errorf("%d %q", code, body)
			}
		})
	}
}

// The socket hot path's observation allocates nothing.
func TestObserveRequestAllocs(t *testing.T) {
	m := New(fakeSource{})
	if n := testing.AllocsPerRun(1000, func() { m.ObserveRequest("/v1/credentials", 200, time.Microsecond) }); n != 0 {
		t.Errorf("%v allocs per request", n)
	}
}

func TestLoopback(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:9469", true},
		{"[::1]:9469", true},
		{"0.0.0.0:9469", false},
		{"[::]:9469", false},
		{"10.1.2.3:9469", false},
	} {
		a, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := Loopback(a); got != tt.want {
			t.Errorf("Loopback(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}
