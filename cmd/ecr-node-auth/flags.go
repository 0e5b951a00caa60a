package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// socketFlag registers --socket for a command that talks to the daemon; the
// help states the order api.ResolveSocket applies.
func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", "", "daemon socket (default $"+api.EnvSocket+", else the config's socket, else "+config.DefaultSocket+")")
}

// outputFlag registers -o for a command that prints a table or JSON.
func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("o", "table", "output format: table or json")
}

// validOutput reports whether out is table or json; otherwise it prints the
// error and fs's usage, and the command exits 2.
func validOutput(fs *flag.FlagSet, out string, stderr io.Writer) bool {
	if out == "table" || out == "json" {
		return true
	}
	fmt.Fprintf(stderr, "ecr-node-auth %s: -o %q: use table or json\n", fs.Name(), out)
	fs.Usage()
	return false
}

// writeJSON prints v indented, the -o json form; false (error on stderr)
// when it cannot be encoded or written.
func writeJSON(stdout, stderr io.Writer, v any) bool {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "ecr-node-auth: %v\n", err)
		return false
	}
	return true
}
