package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", config.DefaultPath, "config file (used to find the socket)")
	sock := socketFlag(fs)
	out := outputFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth status [--config PATH] [--socket PATH] [-o table|json]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if !validOutput(fs, *out, stderr) {
		return 2
	}
	if code, ok := checkStatusConfig(fs, *sock, *cfg, stderr); !ok {
		return code
	}
	path, _ := api.ResolveSocket(*sock, *cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := api.NewClient(path).Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "ecr-node-auth: %v\n", err)
		return 1
	}
	if *out == "json" {
		if !writeJSON(stdout, stderr, st) {
			return 1
		}
		return 0
	}
	printTable(stdout, st, time.Now())
	return 0
}

// checkStatusConfig refuses an explicit --config that cannot be read when it
// is what names the socket (no --socket, no $ECR_NODE_AUTH_SOCKET): falling
// back to the default socket would show another daemon's status, or none,
// without saying why. A default file that is absent keeps the default socket;
// one that is present but broken is named on stderr.
func checkStatusConfig(fs *flag.FlagSet, sock, cfg string, stderr io.Writer) (int, bool) {
	if sock != "" || os.Getenv(api.EnvSocket) != "" {
		return 0, true
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	_, err := config.Load(cfg)
	switch {
	case err == nil:
	case explicit:
		fmt.Fprintf(stderr, "ecr-node-auth: --config %s: %v\n(status reads the socket path from it; fix it, or pass --socket PATH)\n", cfg, err)
		return 2, false
	case !errors.Is(err, config.ErrNotFound):
		fmt.Fprintf(stderr, "ecr-node-auth: warning: %v; using the default socket %s\n", err, config.DefaultSocket)
	}
	return 0, true
}

// printTable writes the human view of a status answer.
func printTable(w io.Writer, st api.Status, now time.Time) {
	fmt.Fprintf(w, "ecr-node-auth %s: %s\n", st.Version, orDash(st.State))
	if len(st.Registries) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REGISTRY\tEXPIRES IN\tLAST REFRESH\tNEXT REFRESH\tERROR")
		for _, r := range st.Registries {
			errText := r.LastError
			if r.ErrorClass != "" {
				errText = r.ErrorClass + ": " + errText
			}
			if strings.HasPrefix(r.FileState, "error") || r.FileState == "unmanaged" {
				errText = strings.TrimPrefix(strings.TrimSpace(errText+"; hosts.toml "+r.FileState), "; ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Host, until(r.ExpiresAt, now), ago(r.LastRefresh, now), until(r.NextRefresh, now), orDash(oneLine(errText)))
		}
		tw.Flush()
	}
	if len(st.Mirrors) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "MIRROR FOR\tSERVED BY\tHOSTS.TOML")
		for _, m := range st.Mirrors {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Upstream, m.URL, oneLine(m.FileState))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, st.Identity.Summary())
	for _, n := range st.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
}

func until(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d < 0 {
		return "expired " + short(-d) + " ago"
	}
	return short(d)
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return short(now.Sub(t)) + " ago"
}

// short renders a duration to the second, dropping zero units ("5h2m").
func short(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
