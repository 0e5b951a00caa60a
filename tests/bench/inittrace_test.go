package bench

import (
	"bytes"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// initCost is what GODEBUG=inittrace=1 reports for one group of packages.
type initCost struct {
	ms            float64
	bytes, allocs int64
	pkgs          int
}

// initGroup names the group of a package in the init trace: this module's, the AWS
// SDK's (aws-sdk-go-v2 and smithy-go), Prometheus' (client_golang and its protobuf),
// or everything else (the standard library, zap, yaml, ...).
func initGroup(pkg string) string {
	switch {
	case pkg == "main" || strings.HasPrefix(pkg, modulePath+"/"):
		return "ecr-node-auth"
	case strings.HasPrefix(pkg, "github.com/aws/"):
		return "aws-sdk"
	case strings.HasPrefix(pkg, "github.com/prometheus/"), strings.HasPrefix(pkg, "google.golang.org/protobuf/"):
		return "prometheus"
	}
	return "other"
}

const modulePath = "github.com/ecr-node-auth/ecr-node-auth"

// initTrace runs `bin args...` with GODEBUG=inittrace=1 and sums the package inits
// by package ("init <pkg> @<t> ms, <ms> ms clock, <bytes> bytes, <allocs> allocs").
func initTrace(bin string, args ...string) (map[string]initCost, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"GODEBUG=inittrace=1", "PATH=/usr/bin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %v: %v\n%s", bin, args, err, stderr.Bytes())
	}
	out := map[string]initCost{}
	for _, l := range strings.Split(stderr.String(), "\n") {
		f := strings.Fields(l)
		if len(f) != 11 || f[0] != "init" || f[6] != "clock," || f[8] != "bytes," || f[10] != "allocs" {
			continue
		}
		ms, err1 := strconv.ParseFloat(f[4], 64)
		b, err2 := strconv.ParseInt(f[7], 10, 64)
		a, err3 := strconv.ParseInt(f[9], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("unexpected inittrace line %q", l)
		}
		c := out[f[1]]
		c.ms, c.bytes, c.allocs, c.pkgs = c.ms+ms, c.bytes+b, c.allocs+a, c.pkgs+1
		out[f[1]] = c
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s %v: no inittrace lines on stderr", bin, args)
	}
	return out, nil
}

// byGroup sums a trace by initGroup.
func byGroup(trace map[string]initCost) map[string]initCost {
	g := map[string]initCost{}
	for pkg, c := range trace {
		s := g[initGroup(pkg)]
		s.ms, s.bytes, s.allocs, s.pkgs = s.ms+c.ms, s.bytes+c.bytes, s.allocs+c.allocs, s.pkgs+c.pkgs
		g[initGroup(pkg)] = s
	}
	return g
}

func formatGroups(g map[string]initCost) string {
	names := make([]string, 0, len(g))
	for n := range g {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return g[names[i]].ms > g[names[j]].ms })
	var parts []string
	for _, n := range names {
		c := g[n]
		parts = append(parts, fmt.Sprintf("%s %.2f ms %d KiB (%d pkgs)", n, c.ms, c.bytes>>10, c.pkgs))
	}
	return strings.Join(parts, ", ")
}

// maxOwnInitBytes bounds what this module's packages may allocate at init. Package
// init runs in every exec of the binary, the kubelet plugin's and the docker helper's
// included: regexps, tables and clients belong in sync.OnceValue or in the code that
// needs them (a regexp costs 5 to 40 KiB and tens of µs to compile).
const maxOwnInitBytes = 4 << 10

// TestInitCost keeps this module's package inits cheap: each may allocate at most
// maxOwnInitBytes. The rest of the binary's init (AWS SDK, Prometheus, the standard
// library) is logged: it is the floor of the kubelet plugin's exec time.
func TestInitCost(t *testing.T) {
	trace, err := initTrace(daemonBin, "version")
	if err != nil {
		t.Fatal(err)
	}
	for pkg, c := range trace {
		if initGroup(pkg) == "ecr-node-auth" && c.bytes > maxOwnInitBytes {
			t.Errorf("package %s allocates %d bytes (%d allocs) at init, more than %d: make its package-level values lazy (sync.OnceValue)", pkg, c.bytes, c.allocs, maxOwnInitBytes)
		}
	}
	t.Logf("init of `ecr-node-auth version` by group: %s", formatGroups(byGroup(trace)))
}
