package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
)

// kubeletPluginCmd is the kubelet's exec credential provider: a
// CredentialProviderRequest on stdin, the response on stdout (and nothing
// else ever there), exit 0; on failure nothing on stdout, one line on
// stderr, exit 1. The kubelet passes the args and env of its
// CredentialProviderConfig (see print-kubelet-config).
func kubeletPluginCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kubelet-plugin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", config.DefaultPath, "config file (socket and, for a direct fetch, the identity)")
	sock := socketFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth kubelet-plugin [--config PATH] [--socket PATH]  (run by the kubelet: request on stdin, response on stdout)")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientBudget)
	defer cancel()
	src := newCredSource(*sock, *cfg, stderr)
	if err := kubeletplugin.Handle(ctx, stdin, stdout, src.kubeletLookup, time.Now()); err != nil {
		fmt.Fprintf(stderr, "ecr-node-auth kubelet-plugin: %s\n", oneLineFull(err.Error()))
		return 1
	}
	return 0
}

// printKubeletConfigCmd prints a kubelet CredentialProviderConfig that runs
// this binary for every ECR host form. It reads no config file.
func printKubeletConfigCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("print-kubelet-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "", "config file the plugin reads (passed as its --config; default: the plugin's default "+config.DefaultPath+")")
	sock := fs.String("socket", "", "daemon socket the plugin uses (passed as $"+kubeletplugin.SocketEnv+"; default: the config's socket)")
	cache := fs.Duration("cache-duration", kubeletplugin.DefaultCacheDurationValue, "the kubelet's defaultCacheDuration (every response carries its own)")
	tokenAttrs := fs.Bool("token-attributes", false, "KEP-4412: have the kubelet send each pod's service-account token, so pods pull with their own role")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth print-kubelet-config [--token-attributes] [--socket PATH] [--cache-duration D] [--config PATH]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	opts := kubeletplugin.ConfigOptions{Socket: *sock, DefaultCacheDuration: *cache, TokenAttributes: *tokenAttrs}
	for _, p := range []struct{ flag, path string }{{"--config", *cfg}, {"--socket", *sock}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			fmt.Fprintf(stderr, "ecr-node-auth print-kubelet-config: %s %q: the kubelet needs an absolute path\n", p.flag, p.path)
			return 2
		}
	}
	if *cache <= 0 {
		fmt.Fprintf(stderr, "ecr-node-auth print-kubelet-config: --cache-duration %s: must be positive\n", *cache)
		return 2
	}
	if *cfg != "" {
		opts.ExtraArgs = []string{"--config", *cfg}
	}
	if err := kubeletplugin.PrintConfig(stdout, opts); err != nil {
		fmt.Fprintf(stderr, "ecr-node-auth print-kubelet-config: %v\n", err)
		return 1
	}
	return 0
}
