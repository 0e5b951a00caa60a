// Command benchtable reads `go test -bench` output on stdin and prints one table: a header
// naming the machine (CPU model, CPUs, memory, Go version, date), then one row per
// benchmark with its headline value, unit, target and pass/fail where a target exists.
// It exits 1 when a benchmark with a target misses it or is absent, or when the input holds
// a test failure (the failing lines are copied to stderr).
//
//	go test -run '^$' -bench . ./... 2>&1 | go run ./tests/bench/cmd/benchtable
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// target is an upper bound on a benchmark's headline metric.
type target struct {
	unit string
	max  float64
}

// targets are the budgets of the daemon's core loop (the headline is the mean over the
// run's iterations; p50 and max are shown beside it).
var targets = map[string]target{
	"BenchmarkStartToFirstHostsToml": {unit: "ms/start", max: 500},
	"BenchmarkRotationPickup":        {unit: "ms/rotation", max: 100},
}

const modulePrefix = "github.com/ecr-node-auth/ecr-node-auth/"

type metric struct {
	value float64
	unit  string
}

type result struct {
	pkg     string
	name    string // BenchmarkX without the -GOMAXPROCS suffix
	iters   int64
	metrics []metric
	notes   []string
}

type input struct {
	results  []*result
	cpu      string
	goos     string
	goarch   string
	failures []string
	other    []string // lines not understood (test output, goroutine dumps), shown on failure
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout, os.Stderr))
}

func run(r io.Reader, stdout, stderr io.Writer) int {
	in, err := parse(r)
	if err != nil {
		fmt.Fprintln(stderr, "benchtable:", err)
		return 1
	}
	bad := render(stdout, in, machine(in), time.Now())
	if len(in.failures) > 0 {
		fmt.Fprintln(stderr, "\nbenchtable: the benchmark run failed:")
		for _, l := range in.failures {
			fmt.Fprintln(stderr, "  "+l)
		}
		if len(in.other) > 0 {
			fmt.Fprintln(stderr, "other output of the run:")
			for _, l := range in.other {
				fmt.Fprintln(stderr, "  "+l)
			}
		}
		bad = true
	}
	if len(in.results) == 0 {
		fmt.Fprintln(stderr, "benchtable: no benchmark results on stdin")
		bad = true
	}
	if bad {
		return 1
	}
	return 0
}

func parse(r io.Reader) (*input, error) {
	in := &input{}
	var pkg string
	byName := map[string]*result{}
	var noteTo *result // the result whose "--- BENCH:" block is being read
	inFail := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indented := strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")
		if indented && (noteTo != nil || inFail) {
			if inFail {
				in.failures = append(in.failures, line)
			} else {
				noteTo.notes = append(noteTo.notes, strings.TrimSpace(trimLogPrefix(trimmed)))
			}
			continue
		}
		noteTo, inFail = nil, false
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(strings.TrimPrefix(line, "pkg: "), modulePrefix)
		case strings.HasPrefix(line, "cpu: "):
			in.cpu = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(line, "goos: "):
			in.goos = strings.TrimPrefix(line, "goos: ")
		case strings.HasPrefix(line, "goarch: "):
			in.goarch = strings.TrimPrefix(line, "goarch: ")
		case strings.HasPrefix(line, "--- BENCH: "):
			name := baseName(strings.TrimPrefix(line, "--- BENCH: "))
			noteTo = byName[pkg+"."+name]
			if noteTo == nil { // log printed before the result line
				noteTo = &result{pkg: pkg, name: name}
				byName[pkg+"."+name] = noteTo
			}
		case strings.HasPrefix(line, "--- FAIL"), strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "panic:"),
			strings.HasPrefix(line, "# "), strings.Contains(line, "[build failed]"), strings.Contains(line, "[setup failed]"):
			in.failures = append(in.failures, line)
			inFail = strings.HasPrefix(line, "--- FAIL")
		case line == "PASS" || strings.HasPrefix(line, "ok "):
		case strings.HasPrefix(line, "Benchmark"):
			res, ok := parseResult(line)
			if !ok {
				in.other = append(in.other, line) // a name printed alone (-v), or noise
				continue
			}
			res.pkg = pkg
			key := pkg + "." + res.name
			if prev := byName[key]; prev != nil && prev.iters == 0 {
				res.notes = prev.notes
				*prev = *res
				in.results = append(in.results, prev)
			} else {
				byName[key] = res
				in.results = append(in.results, res)
			}
		default:
			in.other = append(in.other, line)
		}
	}
	return in, sc.Err()
}

// trimLogPrefix drops "file_test.go:123: " from a benchmark log line.
func trimLogPrefix(s string) string {
	if i := strings.Index(s, ".go:"); i > 0 && !strings.Contains(s[:i], " ") {
		rest := s[i+4:]
		if j := strings.Index(rest, ": "); j >= 0 {
			if _, err := strconv.Atoi(rest[:j]); err == nil {
				return rest[j+2:]
			}
		}
	}
	return s
}

// baseName drops the -GOMAXPROCS suffix.
func baseName(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "-"); i > 0 {
		if _, err := strconv.Atoi(s[i+1:]); err == nil {
			return s[:i]
		}
	}
	return s
}

// parseResult reads "BenchmarkX-2  20  8.9 ms/start  13.6 ms/start-max ...".
func parseResult(line string) (*result, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return nil, false
	}
	iters, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return nil, false
	}
	res := &result{name: baseName(f[0]), iters: iters}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil, false
		}
		res.metrics = append(res.metrics, metric{value: v, unit: f[i+1]})
	}
	return res, true
}

// headline is the metric a row shows: the target's unit, else ns/op, else the first.
func (r *result) headline() (metric, bool) {
	if t, ok := targets[r.name]; ok {
		for _, m := range r.metrics {
			if m.unit == t.unit {
				return m, true
			}
		}
		return metric{}, false
	}
	for _, m := range r.metrics {
		if m.unit == "ns/op" {
			return m, true
		}
	}
	if len(r.metrics) > 0 {
		return r.metrics[0], true
	}
	return metric{}, false
}

func (r *result) details(head metric) string {
	var stats, others []string // "p50 8.31", "max 13.7" of the headline; "0 B/op"
	for _, m := range r.metrics {
		if m.unit == head.unit {
			continue
		}
		if stat, ok := strings.CutPrefix(m.unit, head.unit+"-"); ok {
			stats = append(stats, stat+" "+formatValue(m.value))
			continue
		}
		others = append(others, formatValue(m.value)+" "+m.unit)
	}
	// p50 before max (go test sorts custom units by name).
	sort.SliceStable(stats, func(i, j int) bool { return strings.HasPrefix(stats[i], "p") && !strings.HasPrefix(stats[j], "p") })
	parts := append(stats, others...)
	parts = append(parts, fmt.Sprintf("%d iterations", r.iters))
	return strings.Join(parts, ", ")
}

// render prints the table and reports whether a target was missed.
func render(w io.Writer, in *input, header string, now time.Time) bool {
	fmt.Fprintln(w, "ecr-node-auth benchmarks")
	fmt.Fprintln(w, header)
	fmt.Fprintln(w, "date: "+now.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tVALUE\tUNIT\tTARGET\tRESULT\tDETAILS")
	bad := false
	seen := map[string]bool{}
	var notes []string
	for _, r := range in.results {
		seen[r.name] = true
		name := strings.TrimPrefix(r.name, "Benchmark")
		if r.pkg != "" {
			name = r.pkg + "." + name
		}
		for _, n := range r.notes {
			notes = append(notes, name+": "+n)
		}
		head, ok := r.headline()
		t, hasTarget := targets[r.name]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t%s\t%s\tFAIL\tno %s metric reported\n", name, t.unit, "≤ "+formatValue(t.max), t.unit)
			bad = true
			continue
		}
		tgt, verdict := "-", "-"
		if hasTarget {
			tgt = "≤ " + formatValue(t.max)
			verdict = "pass"
			if head.value > t.max {
				verdict, bad = "FAIL", true
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, formatValue(head.value), head.unit, tgt, verdict, r.details(head))
	}
	var missing []string
	for n := range targets {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t := targets[n]
		fmt.Fprintf(tw, "%s\t-\t%s\t≤ %s\tFAIL\tnot in the input (did it fail or not run?)\n", strings.TrimPrefix(n, "Benchmark"), t.unit, formatValue(t.max))
		bad = true
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "note: "+n)
		}
	}
	return bad
}

func formatValue(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a == math.Trunc(a) && a < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// machine describes the host: CPU model, CPU count, memory, Go version, OS/arch.
func machine(in *input) string {
	cpu := cpuModel()
	if cpu == "" {
		cpu = in.cpu
	}
	if cpu == "" {
		cpu = "unknown CPU"
	}
	mem := "unknown memory"
	if kb := memTotalKB(); kb > 0 {
		mem = fmt.Sprintf("%.1f GiB memory", float64(kb)/(1<<20))
	}
	goos, goarch := in.goos, in.goarch
	if goos == "" {
		goos, goarch = runtime.GOOS, runtime.GOARCH
	}
	return fmt.Sprintf("machine: %s, nproc %d, %s; %s %s/%s", cpu, runtime.NumCPU(), mem, runtime.Version(), goos, goarch)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotalKB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
