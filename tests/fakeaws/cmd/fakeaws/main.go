// Command fakeaws runs the fake AWS (STS, ECR, ECR Public) and the gated HTTPS registry for
// demos and end-to-end tests. It pushes one image, writes a JSON file describing every
// endpoint, keeps a web identity token fresh in a Kubernetes-style projected volume layout
// (dir/..<timestamp>/token, dir/..data -> ..<timestamp>, dir/token -> ..data/token), and runs
// until SIGTERM or SIGINT.
//
//	fakeaws -out /tmp/fake/info.json -token-dir /tmp/fake/token
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Info is the JSON document written to -out.
type Info struct {
	STSURL       string            `json:"stsURL"`
	ECRURL       string            `json:"ecrURL"`
	ECRPublicURL string            `json:"ecrPublicURL"`
	RegistryURL  string            `json:"registryURL"`
	RegistryHost string            `json:"registryHost"`
	ECRHost      string            `json:"ecrHost"` // the ECR name the registry stands for
	CAFile       string            `json:"caFile"`
	TokenFile    string            `json:"tokenFile"`
	TokenDir     string            `json:"tokenDir"`
	RoleARN      string            `json:"roleArn"`
	Region       string            `json:"region"`
	AccountID    string            `json:"accountId"`
	Issuer       string            `json:"issuer"`
	Audience     string            `json:"audience"`
	Image        string            `json:"image"`       // registryHost/app:v1
	ECRImage     string            `json:"ecrImage"`    // ecrHost/app:v1 (pull this through hosts.toml)
	ImageDigest  string            `json:"imageDigest"` // sha256:...
	ImageRepo    string            `json:"imageRepo"`
	ImageTag     string            `json:"imageTag"`
	Env          map[string]string `json:"env"` // AWS_ENDPOINT_URL_* and AWS_REGION
	PID          int               `json:"pid"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "fakeaws:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. ready, if set, receives the Info once everything is up.
func run(ctx context.Context, args []string, logw io.Writer, ready chan<- Info) error {
	fs := flag.NewFlagSet("fakeaws", flag.ContinueOnError)
	fs.SetOutput(logw)
	out := fs.String("out", "", "write the endpoint description (JSON) to this file (required)")
	tokenDir := fs.String("token-dir", "", "projected-volume style token directory (required); the token is DIR/token")
	ecrLifetime := fs.Duration("ecr-lifetime", fakeaws.DefaultECRTokenLifetime, "ECR token lifetime")
	stsLifetime := fs.Duration("sts-lifetime", fakeaws.DefaultSTSLifetime, "STS credential lifetime")
	tokenLifetime := fs.Duration("token-lifetime", time.Hour, "web identity token (JWT) lifetime")
	tokenRefresh := fs.Duration("token-refresh", 0, "re-mint the token this often (default 80% of -token-lifetime)")
	roleARN := fs.String("role-arn", fakeaws.DefaultRoleARN, "role ARN STS accepts (and the info file names)")
	region := fs.String("region", "us-east-1", "region the info file suggests (AWS_REGION)")
	audience := fs.String("audience", fakeaws.DefaultAudience, "audience STS accepts and tokens carry")
	subject := fs.String("subject", fakeaws.DefaultSubject, "sub of minted tokens")
	image := fs.String("image", "app:v1", "repo:tag of the image to push")
	caFile := fs.String("ca-file", "", "also copy the registry CA certificate (PEM) to this path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *tokenDir == "" {
		fs.Usage()
		return errors.New("-out and -token-dir are required")
	}
	repo, tag, ok := strings.Cut(*image, ":")
	if !ok || repo == "" || tag == "" {
		return fmt.Errorf("-image %q: want repo:tag", *image)
	}
	refresh := *tokenRefresh
	if refresh <= 0 {
		refresh = *tokenLifetime * 4 / 5
	}
	if refresh < 100*time.Millisecond {
		refresh = 100 * time.Millisecond
	}

	f, err := fakeaws.New(fakeaws.Options{
		ECRTokenLifetime:      *ecrLifetime,
		STSCredentialLifetime: *stsLifetime,
		Audience:              *audience,
		AllowedRoleARNs:       []string{*roleARN},
	})
	if err != nil {
		return err
	}
	defer f.Close()
	reg, err := fakeaws.NewRegistry(f)
	if err != nil {
		return err
	}
	defer reg.Close()
	digest, err := reg.PushRandomImageContext(ctx, repo, tag)
	if err != nil {
		return err
	}
	caPath := reg.CAFile()
	if *caFile != "" {
		if err := writeAtomic(*caFile, reg.CAPEM()); err != nil {
			return err
		}
		caPath = *caFile
	}
	mint := func() string {
		now := f.Now()
		return f.MintToken(fakeaws.TokenSpec{Subject: *subject, IssuedAt: now, ExpiresAt: now.Add(*tokenLifetime)})
	}
	if err := os.MkdirAll(*tokenDir, 0o755); err != nil {
		return err
	}
	if err := SwapToken(*tokenDir, mint()); err != nil {
		return err
	}

	env := f.Env()
	env["AWS_REGION"] = *region
	info := Info{
		STSURL: f.STSURL(), ECRURL: f.ECRURL(), ECRPublicURL: f.ECRPublicURL(),
		RegistryURL: reg.URL(), RegistryHost: reg.Host(),
		ECRHost: f.AccountID() + ".dkr.ecr." + *region + ".amazonaws.com",
		CAFile:  caPath, TokenFile: filepath.Join(*tokenDir, "token"), TokenDir: *tokenDir,
		RoleARN: *roleARN, Region: *region, AccountID: f.AccountID(), Issuer: f.Issuer(), Audience: *audience,
		Image: reg.Host() + "/" + repo + ":" + tag, ECRImage: f.AccountID() + ".dkr.ecr." + *region + ".amazonaws.com/" + repo + ":" + tag, ImageDigest: digest, ImageRepo: repo, ImageTag: tag,
		Env: env, PID: os.Getpid(),
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(*out, append(b, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(logw, "fakeaws: sts %s ecr %s registry %s image %s@%s; info in %s\n",
		info.STSURL, info.ECRURL, info.RegistryURL, info.Image, digest, *out)
	if ready != nil {
		ready <- info
	}

	tick := time.NewTicker(refresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(logw, "fakeaws: stopping")
			return nil
		case <-tick.C:
			if err := SwapToken(*tokenDir, mint()); err != nil {
				fmt.Fprintln(logw, "fakeaws: token rotation:", err)
			}
		}
	}
}

// SwapToken installs token in dir the way the kubelet updates a projected volume: a new
// ..<timestamp> directory, a ..data_tmp symlink renamed over ..data, dir/token -> ..data/token,
// then the old timestamp directory is removed.
func SwapToken(dir, token string) error {
	ts := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	tsDir := filepath.Join(dir, ts)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tsDir, "token"), []byte(token), 0o644); err != nil {
		return err
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(ts, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	link := filepath.Join(dir, "token")
	if dest, err := os.Readlink(link); err != nil || dest != filepath.Join("..data", "token") {
		_ = os.Remove(link)
		if err := os.Symlink(filepath.Join("..data", "token"), link); err != nil {
			return err
		}
	}
	if old != "" && old != ts && strings.HasPrefix(old, "..") {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fakeaws-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
