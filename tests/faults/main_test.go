package faults

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/tests/e2e/harness"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

var (
	daemonBin string
	daemonErr error
	rows      rowSet
	allFakes  fakeSet
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Geteuid() == 0 {
		root, err := harness.ModuleRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		dir, err := os.MkdirTemp("/tmp", "ena-faults-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		daemonBin, daemonErr = harness.BuildDaemon(root, dir)
	}
	start := time.Now()
	code := m.Run()
	if rows.len() > 0 {
		rows.print(os.Stdout, time.Since(start))
		fmt.Println()
		starts, logs := harness.DaemonLogCoverage()
		if !harness.HygieneReport(os.Stdout, "faults", harness.Artifacts(), allFakes.secrets(), starts, logs, allFakes.len()) {
			code = 1
		}
	}
	return code
}

type row struct {
	fault, injected, expected, observed string
	pass                                bool
}

type rowSet struct {
	mu   sync.Mutex
	rows []row
}

func (s *rowSet) add(r row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, r)
}

func (s *rowSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows)
}

// print writes the matrix in the order of faults().
func (s *rowSet) print(out io.Writer, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	order := map[string]int{}
	for i, f := range faults() {
		order[f.name] = i
	}
	sort.Slice(s.rows, func(i, j int) bool { return order[s.rows[i].fault] < order[s.rows[j].fault] })
	fmt.Fprintf(out, "\necr-node-auth fault matrix (%d faults, %v)\n\n", len(s.rows), took.Round(time.Second))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tINJECTED\tEXPECTED\tPASS")
	failed := 0
	for _, r := range s.rows {
		verdict := "pass"
		if !r.pass {
			verdict = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.fault, r.injected, r.expected, verdict)
	}
	tw.Flush()
	fmt.Fprintln(out, "\nOBSERVED")
	for _, r := range s.rows {
		fmt.Fprintf(out, "  %-24s %s\n", r.fault, r.observed)
	}
	fmt.Fprintf(out, "\n%d of %d faults passed\n", len(s.rows)-failed, len(s.rows))
}

type fakeSet struct {
	mu    sync.Mutex
	fakes []*fakeaws.Fake
}

func (s *fakeSet) add(f *fakeaws.Fake) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fakes = append(s.fakes, f)
}

func (s *fakeSet) secrets() []fakeaws.Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fakeaws.Secret
	for _, f := range s.fakes {
		out = append(out, harness.WithSignatures(f.SecretsWithKind())...)
	}
	return out
}

func (s *fakeSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fakes)
}
