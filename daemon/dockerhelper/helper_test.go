package dockerhelper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

const (
	acct     = "111122223333"
	use1     = acct + ".dkr.ecr.us-east-1.amazonaws.com"
	password = "eyJwYXlsb2FkIjoiU0VDUkVULVRPS0VOLTQyIn0=" // stands in for an ECR token
)

// daemon answers like the daemon's socket: use1 and eu-west-1 are served,
// every other ECR host is ErrNotFound.
type daemon struct {
	calls []string
	err   error // returned for every call when set
	cred  *Credential
}

func (d *daemon) lookup(_ context.Context, h ecrhost.Host) (Credential, error) {
	d.calls = append(d.calls, h.Name)
	if d.err != nil {
		return Credential{}, d.err
	}
	if d.cred != nil {
		return *d.cred, nil
	}
	switch h.Name {
	case use1, acct + ".dkr.ecr.eu-west-1.amazonaws.com", "public.ecr.aws":
		return Credential{Username: "AWS", Password: password, ExpiresAt: time.Now().Add(11 * time.Hour)}, nil
	}
	return Credential{}, fmt.Errorf("registry %s: %w", h.Name, ErrNotFound)
}

func (d *daemon) list(context.Context) ([]string, error) {
	if d.err != nil {
		return nil, d.err
	}
	return []string{acct + ".dkr.ecr.eu-west-1.amazonaws.com", use1, use1 + ":443", "not-ecr.example.com"}, nil
}

type result struct {
	code           int
	stdout, stderr string
}

func run(d *daemon, verb, stdin string) result {
	var out, errOut bytes.Buffer
	code := RunContext(context.Background(), verb, strings.NewReader(stdin), &out, &errOut, d.lookup, d.list)
	return result{code, out.String(), errOut.String()}
}

func TestGet(t *testing.T) {
	tests := []struct {
		name      string
		stdin     string
		wantURL   string // ServerURL echoed
		wantCalls string // host names the lookup saw
	}{
		{"bare host", use1, use1, use1},
		{"bare host with newline (as docker writes it)", use1 + "\n", use1, use1},
		{"https", "https://" + use1, "https://" + use1, use1},
		{"https v2", "https://" + use1 + "/v2/", "https://" + use1 + "/v2/", use1},
		{"host/v2/", use1 + "/v2/", use1 + "/v2/", use1},
		{"port 443", use1 + ":443", use1 + ":443", use1},
		{"https port 443", "https://" + use1 + ":443", "https://" + use1 + ":443", use1},
		{"upper case", "HTTPS://" + strings.ToUpper(use1), "HTTPS://" + strings.ToUpper(use1), use1},
		{"other region", acct + ".dkr.ecr.eu-west-1.amazonaws.com", acct + ".dkr.ecr.eu-west-1.amazonaws.com", acct + ".dkr.ecr.eu-west-1.amazonaws.com"},
		{"public", "public.ecr.aws", "public.ecr.aws", "public.ecr.aws"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &daemon{}
			r := run(d, "get", tt.stdin)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("stdout is not JSON: %q", r.stdout)
			}
			want := map[string]string{"ServerURL": tt.wantURL, "Username": "AWS", "Secret": password}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %v, want %v", got, want)
			}
			if strings.Join(d.calls, ",") != tt.wantCalls {
				t.Errorf("lookups %v, want %s", d.calls, tt.wantCalls)
			}
		})
	}
}

// TestGetNotFound is case 31: unknown hosts get exactly the not-found message
// on stdout, exit 1 and a silent stderr, and the daemon is not bothered for
// hosts that are not ECR.
func TestGetNotFound(t *testing.T) {
	tests := []struct {
		name    string
		stdin   string
		lookups int
	}{
		{"case 31 ghcr.io", "ghcr.io", 0},
		{"case 31 docker.io", "docker.io", 0},
		{"docker hub URL", "https://index.docker.io/v1/", 0},
		{"ECR substring in the path (case 17)", "https://ghcr.io/" + use1, 0},
		{"lookalike", use1 + ".attacker.io", 0},
		{"other port", use1 + ":5000", 0},
		{"userinfo", "https://AWS:" + password + "@" + use1, 0},
		{"ECR host the daemon does not serve", acct + ".dkr.ecr.ap-south-1.amazonaws.com", 1},
		{"too long", strings.Repeat("a", maxServerURL+10), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &daemon{}
			r := run(d, "get", tt.stdin)
			if r.code != 1 || strings.TrimSpace(r.stdout) != NotFoundMessage || r.stdout != NotFoundMessage+"\n" || r.stderr != "" {
				t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if len(d.calls) != tt.lookups {
				t.Errorf("lookups %v, want %d", d.calls, tt.lookups)
			}
		})
	}
	// No lookup at all: everything is not found.
	var out, errOut bytes.Buffer
	if code := RunContext(context.Background(), "get", strings.NewReader(use1), &out, &errOut, nil, nil); code != 1 || out.String() != NotFoundMessage+"\n" {
		t.Errorf("nil lookup: exit %d, stdout %q", code, out.String())
	}
}

func TestGetErrors(t *testing.T) {
	expired := Credential{Username: "AWS", Password: password, ExpiresAt: time.Now().Add(-time.Minute)}
	empty := Credential{Username: "AWS", ExpiresAt: time.Now().Add(time.Hour)}
	tests := []struct {
		name  string
		d     *daemon
		stdin string
		want  string
	}{
		{"missing server URL", &daemon{}, "", MissingServerURLMessage},
		{"blank server URL", &daemon{}, " \n", MissingServerURLMessage},
		{"daemon down", &daemon{err: errors.New("daemon socket /run/ecr-node-auth/auth.sock: connection refused")}, use1,
			"ecr-node-auth: credentials for " + use1 + ": daemon socket /run/ecr-node-auth/auth.sock: connection refused"},
		{"expired", &daemon{cred: &expired}, use1, "expired at"},
		{"empty password", &daemon{cred: &empty}, use1, "empty password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(tt.d, "get", tt.stdin)
			if r.code != 1 || !strings.Contains(r.stdout, tt.want) || r.stderr != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want %q on stdout", r.code, r.stdout, r.stderr, tt.want)
			}
			if strings.Contains(r.stdout, password) {
				t.Errorf("stdout carries the secret on error: %q", r.stdout)
			}
		})
	}
}

func TestList(t *testing.T) {
	r := run(&daemon{}, "list", "")
	want := `{"` + acct + `.dkr.ecr.eu-west-1.amazonaws.com":"AWS","` + use1 + `":"AWS"}` + "\n"
	if r.code != 0 || r.stdout != want || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, want)
	}
	var out, errOut bytes.Buffer
	if code := RunContext(context.Background(), "list", strings.NewReader(""), &out, &errOut, nil, nil); code != 0 || out.String() != "{}\n" {
		t.Errorf("no list func: exit %d, stdout %q", code, out.String())
	}
	r = run(&daemon{err: errors.New("daemon socket: connection refused")}, "list", "")
	if r.code != 1 || !strings.Contains(r.stdout, "listing registries: daemon socket: connection refused") || r.stderr != "" {
		t.Errorf("daemon down: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestStoreErase is case 31's store and erase: accepted, ignored, exit 0,
// silent, and the daemon is never asked.
func TestStoreErase(t *testing.T) {
	tests := []struct {
		name, verb, stdin string
		code              int
		stdout            string
	}{
		{"case 31 store", "store", `{"ServerURL":"` + use1 + `","Username":"AWS","Secret":"x"}`, 0, ""},
		{"store https", "store", `{"ServerURL":"https://` + use1 + `","Username":"AWS","Secret":"` + password + `"}`, 0, ""},
		{"store not JSON", "store", "junk " + password, 0, ""},
		{"store empty", "store", "", 0, ""},
		{"store no ServerURL", "store", `{"Username":"AWS","Secret":"` + password + `"}`, 0, ""},
		{"store large", "store", `{"ServerURL":"` + use1 + `","Secret":"` + strings.Repeat("x", 3<<20) + `"}`, 0, ""},
		{"store for a non-ECR registry", "store", `{"ServerURL":"ghcr.io","Username":"me","Secret":"` + password + `"}`, 1, "credHelpers"},
		{"case 31 erase", "erase", use1, 0, ""},
		{"erase https", "erase", "https://" + use1, 0, ""},
		{"erase non-ECR", "erase", "ghcr.io", 0, ""},
		{"erase empty", "erase", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &daemon{}
			stdin := &countingReader{r: strings.NewReader(tt.stdin)}
			var out, errOut bytes.Buffer
			code := RunContext(context.Background(), tt.verb, stdin, &out, &errOut, d.lookup, d.list)
			if code != tt.code || errOut.Len() != 0 || (tt.stdout == "" && out.Len() != 0) || !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
			}
			if strings.Contains(out.String(), password) {
				t.Error("stdout echoes the stored secret")
			}
			if stdin.n != len(tt.stdin) {
				t.Errorf("read %d of %d stdin bytes: the client's write could fail", stdin.n, len(tt.stdin))
			}
			if len(d.calls) != 0 {
				t.Errorf("%s asked the daemon: %v", tt.verb, d.calls)
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestUnknownVerb(t *testing.T) {
	for _, verb := range []string{"", "version", "GET", "delete", "--help"} {
		r := run(&daemon{}, verb, use1)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "usage: docker-credential-ecr-node-auth get|list|store|erase") {
			t.Errorf("verb %q: exit %d, stdout %q, stderr %q", verb, r.code, r.stdout, r.stderr)
		}
	}
}

// TestNoSecretOutsideGetStdout: across every verb and failure, the password
// appears only on get's successful stdout, never on stderr or in an error.
func TestNoSecretOutsideGetStdout(t *testing.T) {
	leaky := Credential{Username: "AWS", Password: password, ExpiresAt: time.Now().Add(-time.Second)}
	cases := []struct {
		d     *daemon
		verb  string
		stdin string
	}{
		{&daemon{cred: &leaky}, "get", use1},
		{&daemon{err: ErrNotFound}, "get", use1},
		{&daemon{err: errors.New("boom")}, "get", use1},
		{&daemon{}, "get", "https://AWS:" + password + "@" + use1},
		{&daemon{}, "get", "ghcr.io"},
		{&daemon{}, "store", `{"ServerURL":"ghcr.io","Secret":"` + password + `"}`},
		{&daemon{}, "store", `{"ServerURL":"` + use1 + `","Secret":"` + password + `"}`},
		{&daemon{}, "erase", password},
		{&daemon{}, "list", password},
		{&daemon{}, password, password},
	}
	for i, c := range cases {
		r := run(c.d, c.verb, c.stdin)
		if strings.Contains(r.stdout, password) || strings.Contains(r.stderr, password) {
			t.Errorf("case %d (%s): secret on stdout %q or stderr %q", i, c.verb, r.stdout, r.stderr)
		}
	}
	// The one place it belongs.
	if r := run(&daemon{}, "get", use1); r.code != 0 || !strings.Contains(r.stdout, password) || r.stderr != "" {
		t.Errorf("get: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestRunTimeout: Run bounds the lookup with DefaultTimeout.
func TestRunTimeout(t *testing.T) {
	var deadline time.Time
	lookup := func(ctx context.Context, _ ecrhost.Host) (Credential, error) {
		deadline, _ = ctx.Deadline()
		return Credential{}, ErrNotFound
	}
	var out bytes.Buffer
	if code := Run("get", strings.NewReader(use1), &out, lookup, nil); code != 1 || out.String() != NotFoundMessage+"\n" {
		t.Errorf("exit %d, stdout %q", code, out.String())
	}
	if left := time.Until(deadline); left <= 0 || left > DefaultTimeout {
		t.Errorf("lookup deadline %v away, want within %v", left, DefaultTimeout)
	}
}
