package direct

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// A direct fetch on the default chain sends the SDK's IMDS warning to
// Request.Log (nil: dropped), never raw to the process's stderr.
func TestFetchSDKLogsGoToLog(t *testing.T) {
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, withLog := range []bool{true, false} {
		t.Run(map[bool]string{true: "log", false: "nil log"}[withLog], func(t *testing.T) {
			fakeaws.ClearAWSEnv(t)
			// An instance without a role whose IMDS has no IMDSv2 (the token
			// request is 404): the SDK warns that it falls back to IMDSv1.
			m := fakeaws.StartIMDS(t, f, fakeaws.IMDSOptions{TokenStatus: http.StatusNotFound})
			for k, v := range m.Env() {
				t.Setenv(k, v)
			}
			core, logs := observer.New(zapcore.DebugLevel)
			req := Request{Host: mustHost(t, "111122223333.dkr.ecr.eu-west-1.amazonaws.com")}
			if withLog {
				req.Log = zap.New(core)
			}
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			saved := os.Stderr
			os.Stderr = w
			_, ferr := Fetch(context.Background(), req)
			os.Stderr = saved
			w.Close()
			raw, _ := io.ReadAll(r)
			if ferr == nil {
				t.Fatal("fetched with no credentials configured")
			}
			if len(raw) != 0 {
				t.Errorf("raw lines on stderr: %q", raw)
			}
			warned := 0
			for _, e := range logs.All() {
				if e.LoggerName == "sdk" && e.Level == zapcore.WarnLevel && strings.Contains(e.Message, "falling back to IMDSv1") {
					warned++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[withLog]; warned < want || !withLog && warned != 0 {
				t.Errorf("sdk warnings = %d, want %d; logs %v", warned, want, logs.All())
			}
			// The fallback happened: the token PUT refused, then the role asked for without a token.
			if reqs := m.Requests(); len(reqs) < 2 || reqs[0].Method != http.MethodPut || reqs[0].Status != http.StatusNotFound ||
				reqs[1].Path != "/latest/meta-data/iam/security-credentials/" || reqs[1].Token {
				t.Errorf("IMDS requests %+v", reqs)
			}
		})
	}
}
