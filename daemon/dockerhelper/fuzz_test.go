package dockerhelper

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

var fuzzVerbs = []string{"get", "store", "erase", "list"}

// FuzzHelper runs every verb on arbitrary stdin: exit 0 or 1 and nothing on
// stderr; get answers exactly the ECR hosts the daemon serves, echoing the
// server URL, and asks the daemon only about hosts ecrhost accepts; the
// password leaves only on get's successful stdout; store and erase never
// ask the daemon and never echo their input.
func FuzzHelper(f *testing.F) {
	seeds := []struct {
		verb  int
		stdin string
	}{
		{0, use1}, {0, use1 + "\n"}, {0, "https://" + use1 + "/v2/"}, {0, use1 + ":443"},
		{0, "HTTPS://" + strings.ToUpper(use1)}, {0, "public.ecr.aws"}, {0, "ghcr.io"}, {0, ""},
		{0, acct + ".dkr.ecr.ap-south-1.amazonaws.com"}, {0, "https://AWS:" + password + "@" + use1},
		{1, `{"ServerURL":"` + use1 + `","Username":"AWS","Secret":"x"}`},
		{1, `{"ServerURL":"ghcr.io","Username":"me","Secret":"` + password + `"}`},
		{1, "junk " + password}, {1, ""},
		{2, use1}, {2, "ghcr.io"}, {3, ""},
	}
	for _, s := range seeds {
		f.Add(uint8(s.verb), s.stdin)
	}
	f.Fuzz(func(t *testing.T, v uint8, stdin string) {
		verb := fuzzVerbs[int(v)%len(fuzzVerbs)]
		d := &daemon{}
		r := run(d, verb, stdin)
		if (r.code != 0 && r.code != 1) || r.stderr != "" {
			t.Fatalf("%s %q: exit %d, stderr %q", verb, stdin, r.code, r.stderr)
		}
		if verb != "get" || r.code != 0 {
			if strings.Contains(r.stdout, password) {
				t.Fatalf("%s %q: the password on stdout %q", verb, stdin, r.stdout)
			}
		}
		switch verb {
		case "get":
			url := strings.TrimSpace(stdin)
			h, perr := ecrhost.Parse(url)
			if perr != nil || url == "" || len(stdin) > maxServerURL {
				if len(d.calls) != 0 {
					t.Fatalf("get %q asked the daemon about %v", stdin, d.calls)
				}
				if r.code != 1 || (r.stdout != NotFoundMessage+"\n" && r.stdout != MissingServerURLMessage+"\n") {
					t.Fatalf("get %q: exit %d, stdout %q", stdin, r.code, r.stdout)
				}
				return
			}
			if len(d.calls) != 1 || d.calls[0] != h.Name {
				t.Fatalf("get %q: lookups %v, want %s", stdin, d.calls, h.Name)
			}
			if r.code != 0 {
				return // a host the daemon does not serve
			}
			var got map[string]string
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("get %q: stdout is not JSON: %q", stdin, r.stdout)
			}
			if got["ServerURL"] != url || got["Username"] != Username || got["Secret"] != password || len(got) != 3 {
				t.Fatalf("get %q: answer %v", stdin, got)
			}
		case "store", "erase":
			if len(d.calls) != 0 {
				t.Fatalf("%s asked the daemon: %v", verb, d.calls)
			}
			if r.stdout != "" && (verb == "erase" || r.code != 1 || !strings.Contains(r.stdout, "credHelpers")) {
				t.Fatalf("%s %q: exit %d, stdout %q", verb, stdin, r.code, r.stdout)
			}
		case "list":
			var got map[string]string
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
				t.Fatalf("list: exit %d, stdout %q", r.code, r.stdout)
			}
		}
	})
}
