// Command ecr-node-auth is the node credential daemon for private Amazon ECR
// and its client modes. See README.md.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
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
	}
	fmt.Fprintf(stderr, "ecr-node-auth: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}
