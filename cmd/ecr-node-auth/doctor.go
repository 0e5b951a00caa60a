package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/doctor"
)

func doctorCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", config.DefaultPath, "config file")
	sock := socketFlag(fs)
	criSock := fs.String("cri-socket", "", "containerd's CRI socket (default the containerd config's [grpc] address, else /run/containerd/containerd.sock)")
	pull := fs.String("pull", "", "also pull IMAGE through CRI with no credentials in the request")
	out := outputFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth doctor [--config PATH] [--socket PATH] [--cri-socket PATH] [--pull IMAGE] [-o table|json]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if !validOutput(fs, *out, stderr) {
		return 2
	}
	results := doctor.Run(context.Background(), doctor.Options{ConfigPath: *cfg, Socket: *sock, CRISocket: *criSock, PullImage: *pull})
	if *out == "json" {
		if !writeJSON(stdout, stderr, results) {
			return 1
		}
	} else {
		printDoctor(stdout, results)
	}
	if doctor.Failed(results) {
		return 1
	}
	return 0
}

// printDoctor writes one line per check; a failing or warning line ends
// with its fix.
func printDoctor(w io.Writer, results []doctor.Result) {
	width, failed := 0, 0
	for _, r := range results {
		width = max(width, min(len(r.Name), 18)) // long hosts.toml names do not widen every line
		if r.Status == doctor.Fail {
			failed++
		}
	}
	for _, r := range results {
		line := fmt.Sprintf("%-4s  %-*s  %s", strings.ToUpper(string(r.Status)), width, r.Name, r.Detail)
		if r.Fix != "" {
			line += "  => fix: " + r.Fix
		}
		fmt.Fprintln(w, line)
	}
	if failed > 0 {
		fmt.Fprintf(w, "%d of %d checks failed\n", failed, len(results))
	} else {
		fmt.Fprintf(w, "all %d checks passed\n", len(results))
	}
}
