package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/dockerhelper"
)

// helperName is the docker credential helper's name: invoked through a
// symlink of this name, the binary is the helper ("credHelpers" value
// "ecr-node-auth" in ~/.docker/config.json).
const helperName = "docker-credential-ecr-node-auth"

// credentialHelperCmd runs one verb of the docker credential helper
// protocol. The mode comes from the name or the argument only, never from
// stdin. Docker passes no flags, so the socket comes from
// $ECR_NODE_AUTH_SOCKET, else the config, else the default.
func credentialHelperCmd(name string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", config.DefaultPath, "config file (socket and, for a direct fetch, the identity)")
	sock := socketFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, dockerhelper.Usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	verb := fs.Arg(0)
	switch {
	case fs.NArg() > 1:
		fmt.Fprintf(stderr, "%s: unexpected argument after the verb\n%s", name, dockerhelper.Usage)
		return 2
	case verb != "get" && verb != "list" && verb != "store" && verb != "erase":
		// dockerhelper prints the usage (never echoing an odd verb).
		dockerhelper.RunContext(context.Background(), verb, stdin, stdout, stderr, nil, nil)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientBudget)
	defer cancel()
	src := newCredSource(*sock, *cfg, stderr)
	return dockerhelper.RunContext(ctx, verb, stdin, stdout, stderr, src.nodeLookup, src.registries)
}
