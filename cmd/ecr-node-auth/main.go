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
	"path/filepath"
	"runtime"
	"runtime/debug"

	"github.com/ecr-node-auth/ecr-node-auth/daemon"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// Set at build time through -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(runProgram(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ecr-node-auth COMMAND [flags]

commands:
  run                   run the daemon
  status                show registries, token expiry and errors (never a secret)
  kubelet-plugin        the kubelet's exec credential provider (request on stdin, response on stdout)
  credential-helper     the docker credential helper: credential-helper get|list|store|erase
                        (also when this binary is run as `+helperName+`)
  print-kubelet-config  print the kubelet's CredentialProviderConfig for this plugin
  setup-containerd      make containerd's config read the certs dir (checked edit, backup; --restart)
  trust-policy          print the IAM role trust policy for the node's service account
  doctor                check config, token, STS, ECR, certs dir, containerd and CRI; each failure names its fix
  version               print version, commit and Go version
  help                  show this text

Run "ecr-node-auth COMMAND -h" for a command's flags.
`)
}

// runProgram runs the binary with its whole argv: under the docker helper's
// name (a symlink) it is the helper, else argv[1] names the command.
func runProgram(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(argv) > 0 && filepath.Base(argv[0]) == helperName {
		return credentialHelperCmd(helperName, argv[1:], stdin, stdout, stderr)
	}
	if len(argv) == 0 {
		argv = []string{"ecr-node-auth"}
	}
	return runIO(argv[1:], stdin, stdout, stderr)
}

// run runs a command with the process's stdin.
func run(args []string, stdout, stderr io.Writer) int {
	return runIO(args, os.Stdin, stdout, stderr)
}

func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, versionLine(version, commit, runtime.Version()))
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "run":
		return runCmd(args[1:], stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "kubelet-plugin":
		return kubeletPluginCmd(args[1:], stdin, stdout, stderr)
	case "credential-helper":
		return credentialHelperCmd("ecr-node-auth credential-helper", args[1:], stdin, stdout, stderr)
	case "print-kubelet-config":
		return printKubeletConfigCmd(args[1:], stdout, stderr)
	case "setup-containerd":
		return setupContainerdCmd(args[1:], stdout, stderr)
	case "trust-policy":
		return trustPolicyCmd(args[1:], stdout, stderr)
	case "doctor":
		return doctorCmd(args[1:], stdout, stderr)
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
	setDaemonGC()
	// SIGTERM, SIGINT and SIGHUP are handled inside daemon.Run.
	if err := daemon.Run(context.Background(), *cfg, daemon.WithVersion(version)); err != nil {
		fmt.Fprintf(stderr, "ecr-node-auth: %v\n", err)
		return 1
	}
	return 0
}

// daemonGCPercent is the daemon's GOGC unless the environment sets one.
//
// The daemon's live heap is small (about 1.5 MiB, most of it the AWS SDK's
// tables) and it allocates little: a refresh per region every few hours and a
// few socket lookups per pod start. Go's default GOGC=100 lets such a heap grow
// to a 4 MiB minimum goal that is mostly garbage; 50 halves that goal, which
// keeps the steady RSS about 1.3 MiB lower (`make bench`, DaemonSteadyRSS:
// 19.1-19.3 against 20.3-20.9 MiB). The price, at the soak's 700 lookups and
// 7 refreshes a second (far above a node's rate), was the daemon's CPU going
// from 13.2 to 14.2% of one CPU. A GOGC in the unit's environment wins.
const daemonGCPercent = 50

func setDaemonGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(daemonGCPercent)
	}
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

// versionLine is `version`'s output. Without a tag, git describe --always
// makes the version the commit itself (maybe with -dirty): name it once.
func versionLine(version, commit, goVersion string) string {
	if commit != "" && commit != "unknown" && (version == commit || version == commit+"-dirty") {
		return fmt.Sprintf("ecr-node-auth %s (%s)", version, goVersion)
	}
	return fmt.Sprintf("ecr-node-auth %s (commit %s, %s)", version, commit, goVersion)
}
