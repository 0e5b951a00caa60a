package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

const (
	// Short lifetimes make the daemon refresh about every second per region (the
	// agent's minimum gap between two attempts is 1 s) and its STS credentials about
	// every 1.5 s.
	soakECRLifetime = 2 * time.Second
	soakSTSLifetime = 3 * time.Second
	// soakFirst is N: RSS is read after N refreshes and again after 4N, so growth
	// per refresh shows.
	soakFirst = 60
	// soakLimit bounds the soak; at about 7.5 refreshes per second, 4N takes ~32 s.
	soakLimit = 55 * time.Second
	// otherAccount owns the second registry of each region: one ECR token per
	// region serves both.
	otherAccount = "444455556666"
)

// soakRegions: eight regions, two registries each, so each refresh cycle rewrites
// sixteen hosts.toml files.
var soakRegions = []string{"us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1", "ap-southeast-2"}

// BenchmarkDaemonSteadyRSS runs the real daemon against the fake AWS with 2 s ECR
// tokens and 3 s STS credentials for 16 registries in 8 regions, while one client
// looks credentials up on the socket about every millisecond (round robin over the
// hosts, each answer checked against the tokens the fake issued). After soakFirst
// refreshes (ECR GetAuthorizationToken and STS AssumeRoleWithWebIdentity calls
// counted by the fake since the daemon was ready) it reads VmRSS from
// /proc/<pid>/status, and again after 4×soakFirst, with VmHWM.
//
// Metrics: rss_mib (VmRSS at the end; target ≤ 20), rss_growth_mib (VmRSS at 4N less
// at N: a leak per refresh shows here), rss_anon_mib and rss_file_mib (RssAnon: the
// Go heap, stacks and runtime; RssFile: the binary's own pages, shared with the page
// cache), rss_hwm_mib, rss_ready_mib (when first ready), heap_inuse_mib,
// stack_inuse_mib, go_sys_mib and goroutines (the daemon's /metrics at the end),
// refreshes (target ≥ 200: the soak was long enough), ecr_refreshes, sts_refreshes,
// lookups, lookup_errors (answers that were not 200 with a token the fake issued; a
// 503 while a refresh runs late on a loaded machine would count here), soak_s, cpu_%
// (the daemon's CPU time over the soak's wall time: the price of the refreshes, the
// lookups and the GC).
//
// One iteration is the whole soak: run it with -benchtime=1x (`make bench` does).
func BenchmarkDaemonSteadyRSS(b *testing.B) {
	w := newWorldWith(b, fakeaws.Options{ECRTokenLifetime: soakECRLifetime, STSCredentialLifetime: soakSTSLifetime})
	// The token outlives the soak; the STS credentials it buys do not.
	td := w.tokenDir(b)
	var hosts []string
	for _, r := range soakRegions {
		for _, acct := range []string{w.fake.AccountID(), otherAccount} {
			hosts = append(hosts, acct+".dkr.ecr."+r+".amazonaws.com")
		}
	}
	var res soakResult
	for b.Loop() {
		cfg, _, sock, err := w.config(filepath.Join(w.dir, "soak"), td.Path(), hosts...)
		if err != nil {
			b.Fatal(err)
		}
		res, err = w.soak(cfg, sock, hosts)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(0, "ns/op") // the figures are the metrics below
	b.ReportMetric(res.end.rss, "rss_mib")
	b.ReportMetric(res.end.rss-res.atNMem.rss, "rss_growth_mib")
	b.ReportMetric(res.end.hwm, "rss_hwm_mib")
	b.ReportMetric(res.end.anon, "rss_anon_mib")
	b.ReportMetric(res.end.file, "rss_file_mib")
	b.ReportMetric(res.ready.rss, "rss_ready_mib")
	b.ReportMetric(res.gomem["go_memstats_heap_inuse_bytes"], "heap_inuse_mib")
	b.ReportMetric(res.gomem["go_memstats_stack_inuse_bytes"], "stack_inuse_mib")
	b.ReportMetric(res.gomem["go_memstats_sys_bytes"], "go_sys_mib")
	b.ReportMetric(res.gomem["go_goroutines"], "goroutines")
	b.ReportMetric(float64(res.ecr+res.sts), "refreshes")
	b.ReportMetric(float64(res.ecr), "ecr_refreshes")
	b.ReportMetric(float64(res.sts), "sts_refreshes")
	b.ReportMetric(float64(res.lookups), "lookups")
	b.ReportMetric(float64(res.lookupErrs), "lookup_errors")
	b.ReportMetric(res.took.Seconds(), "soak_s")
	b.ReportMetric(float64(res.cpu)/float64(res.took)*100, "cpu_%")
	b.Logf("daemon VmRSS %.1f MiB when ready, %.1f MiB after %d refreshes, %.1f MiB after %d (anon %.1f, file %.1f; VmHWM %.1f MiB); %d socket lookups, %d not answered with a valid token%s",
		res.ready.rss, res.atNMem.rss, res.atN, res.end.rss, res.ecr+res.sts, res.end.anon, res.end.file, res.end.hwm, res.lookups, res.lookupErrs, res.firstErr)
}

type soakResult struct {
	ready, atNMem, end  memStatus
	atN, ecr, sts       int
	lookups, lookupErrs int64
	firstErr            string
	gomem               map[string]float64 // goMemory
	took                time.Duration
	cpu                 time.Duration // the daemon's user+system CPU during the soak
}

// soak runs one daemon through the soak; the daemon must then stop with exit 0.
func (w *world) soak(cfg, sock string, hosts []string) (res soakResult, err error) {
	p, err := start(w, cfg)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := p.stop(); err == nil {
			err = serr
		}
	}()
	client := api.NewClient(sock)
	if err := waitReady(p, client, len(hosts)); err != nil {
		return res, err
	}
	pid := p.cmd.Process.Pid
	if res.ready, err = procMem(pid); err != nil {
		return res, err
	}
	cpu0, err := procCPU(pid)
	if err != nil {
		return res, err
	}
	ecr0, sts0 := w.fake.Calls(fakeaws.ActionGetAuthorizationToken), w.fake.Calls(fakeaws.ActionAssumeRoleWithWebIdentity)
	refreshes := func() (int, int) {
		return w.fake.Calls(fakeaws.ActionGetAuthorizationToken) - ecr0, w.fake.Calls(fakeaws.ActionAssumeRoleWithWebIdentity) - sts0
	}

	// The socket client: one lookup about every millisecond while the soak runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups, lookupErrs atomic.Int64
	var firstErr atomic.Value
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := client.Credentials(ctx, hosts[i%len(hosts)]+"/app:v1")
			cancel()
			lookups.Add(1)
			if err == nil {
				if _, ok := w.fake.LookupECRToken(c.Password); !ok {
					err = fmt.Errorf("%s: a password the fake did not issue", hosts[i%len(hosts)])
				}
			}
			if err != nil {
				lookupErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			time.Sleep(time.Millisecond)
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
		res.lookups, res.lookupErrs = lookups.Load(), lookupErrs.Load()
		if e, ok := firstErr.Load().(string); ok {
			res.firstErr = "; first: " + e
		}
	}()

	t0 := time.Now()
	deadline := t0.Add(soakLimit)
	waitFor := func(n int) error {
		for {
			if e, s := refreshes(); e+s >= n {
				return nil
			}
			if p.exited() {
				return fmt.Errorf("daemon exited during the soak: %v\n%s", p.waitErr, p.log.tail(20))
			}
			if time.Now().After(deadline) {
				e, s := refreshes()
				return fmt.Errorf("only %d ECR and %d STS refreshes in %s, want %d\n%s", e, s, soakLimit, n, p.log.tail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := waitFor(soakFirst); err != nil {
		return res, err
	}
	if res.atNMem, err = procMem(pid); err != nil {
		return res, err
	}
	e, s := refreshes()
	res.atN = e + s
	if err := waitFor(4 * soakFirst); err != nil {
		return res, err
	}
	if res.end, err = procMem(pid); err != nil {
		return res, err
	}
	res.took = time.Since(t0)
	res.ecr, res.sts = refreshes()
	cpu, err := procCPU(pid)
	if err != nil {
		return res, err
	}
	res.cpu = cpu - cpu0
	res.gomem, err = goMemory(client)
	return res, err
}

// goMemory reads the Go runtime's view from the daemon's /metrics: heap in use,
// stacks, all memory obtained from the OS (MiB), and goroutines.
func goMemory(client *api.Client) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.MetricsAddress == "" {
		return nil, errors.New("the daemon serves no metrics")
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+st.MetricsAddress+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	want := map[string]float64{"go_memstats_heap_inuse_bytes": 1 << 20, "go_memstats_stack_inuse_bytes": 1 << 20, "go_memstats_sys_bytes": 1 << 20, "go_goroutines": 1}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if div, found := want[name]; ok && found {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("/metrics: %s: %v", name, err)
			}
			out[name] = f / div
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) != len(want) {
		return nil, fmt.Errorf("/metrics: found %v of %d Go runtime metrics", out, len(want))
	}
	return out, nil
}

// waitReady polls the daemon's status until it is ready with n registries.
func waitReady(p *proc, client *api.Client, n int) error {
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := client.Status(ctx)
		cancel()
		if err == nil && st.Ready && len(st.Registries) >= n {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("daemon exited before it was ready: %v\n%s", p.waitErr, p.log.tail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("daemon not ready with %d registries after %s (last status error: %v)\n%s", n, waitTimeout, err, p.log.tail(20))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procCPU reads the user and system CPU time of a process from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after "(comm)", which may hold spaces: state is the first, utime
	// and stime the 12th and 13th (fields 14 and 15 of proc(5)).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// memStatus is what /proc/<pid>/status says about memory, in MiB.
type memStatus struct {
	rss, hwm, anon, file float64 // VmRSS, VmHWM, RssAnon, RssFile
}

// procMem reads VmRSS, VmHWM, RssAnon and RssFile from /proc/<pid>/status.
func procMem(pid int) (memStatus, error) {
	var m memStatus
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	fields := map[string]*float64{"VmRSS": &m.rss, "VmHWM": &m.hwm, "RssAnon": &m.anon, "RssFile": &m.file}
	seen := 0
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("/proc/%d/status: unexpected %s line %q", pid, k, l)
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status: %s: %v", pid, k, err)
		}
		*dst = kb / 1024
		seen++
	}
	if seen != len(fields) {
		return m, fmt.Errorf("/proc/%d/status lacks one of VmRSS, VmHWM, RssAnon, RssFile", pid)
	}
	return m, nil
}
