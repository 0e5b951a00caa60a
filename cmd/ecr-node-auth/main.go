// Command ecr-node-auth is the node credential daemon for private Amazon ECR
// and its client modes. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/ecr-node-auth/ecr-node-auth/daemon"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// Set at build time through -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ecr-node-auth COMMAND [flags]

commands:
  run       run the daemon
  status    show registries, token expiry and errors (never a secret)
  version   print version, commit and Go version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintf(stdout, "ecr-node-auth %s (commit %s, %s)\n", version, commit, runtime.Version())
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "run":
		return runCmd(args[1:], stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "ecr-node-auth: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func runCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", config.DefaultPath, "config file")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth run [--config PATH]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	// SIGTERM, SIGINT and SIGHUP are handled inside daemon.Run.
	if err := daemon.Run(context.Background(), *cfg, daemon.WithVersion(version)); err != nil {
		fmt.Fprintf(stderr, "ecr-node-auth: %v\n", err)
		return 1
	}
	return 0
}

// parseFlags parses a command's flags; on failure it returns the exit code:
// 0 for -h, 2 (usage printed) for a bad flag or a stray argument.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "ecr-node-auth %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, false
	}
	return 0, true
}
