package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

type fileToken string

func (p fileToken) GetIdentityToken() ([]byte, error) { return os.ReadFile(string(p)) }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "info.json")
	tokenDir := filepath.Join(dir, "token")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Info, 1)
	done := make(chan error, 1)
	var logs syncBuffer
	go func() {
		done <- run(ctx, []string{"-out", out, "-token-dir", tokenDir, "-token-refresh", "200ms", "-ecr-lifetime", "1m", "-region", "eu-west-1", "-ca-file", filepath.Join(dir, "ca.pem")}, &logs, ready)
	}()
	var info Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk Info
	if err := json.Unmarshal(b, &onDisk); err != nil || onDisk.STSURL != info.STSURL || onDisk.ImageDigest == "" || onDisk.CAFile != filepath.Join(dir, "ca.pem") {
		t.Fatalf("info file %s", b)
	}
	if info.Env["AWS_ENDPOINT_URL_ECR"] != info.ECRURL || info.Env["AWS_REGION"] != "eu-west-1" {
		t.Errorf("env %v", info.Env)
	}

	// Layout: token -> ..data/token, ..data -> ..<ts>.
	if dest, err := os.Readlink(info.TokenFile); err != nil || dest != "..data/token" {
		t.Fatalf("token link %q %v", dest, err)
	}
	first, err := os.ReadFile(info.TokenFile)
	if err != nil || len(first) == 0 {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, _ := os.ReadFile(info.TokenFile)
		if len(cur) > 0 && !bytes.Equal(cur, first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("token not rotated")
		}
		time.Sleep(50 * time.Millisecond)
	}
	entries, _ := os.ReadDir(tokenDir)
	var tsDirs int
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") && e.IsDir() {
			tsDirs++
		}
	}
	if tsDirs > 2 {
		t.Errorf("old timestamp dirs kept: %d", tsDirs)
	}

	// The whole chain with the real SDK: token file -> STS -> ECR -> registry.
	stsC := sts.New(sts.Options{Region: "eu-west-1", BaseEndpoint: aws.String(info.STSURL)})
	prov := stscreds.NewWebIdentityRoleProvider(stsC, info.RoleARN, fileToken(info.TokenFile))
	ecrC := ecr.New(ecr.Options{Region: "eu-west-1", BaseEndpoint: aws.String(info.ECRURL), Credentials: aws.NewCredentialsCache(prov)})
	res, err := ecrC.GetAuthorizationToken(context.Background(), &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodHead, info.RegistryURL+"/v2/"+info.ImageRepo+"/manifests/"+info.ImageTag, nil)
	req.Header.Set("Authorization", "Basic "+aws.ToString(res.AuthorizationData[0].AuthorizationToken))
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	pem, err := os.ReadFile(info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := clientWithCA(pem).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != info.ImageDigest {
		t.Errorf("HEAD manifest: %d %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
}

func TestRunFlags(t *testing.T) {
	var logs syncBuffer
	if err := run(context.Background(), []string{"-out", ""}, &logs, nil); err == nil {
		t.Error("want an error without -out")
	}
	if err := run(context.Background(), []string{"-out", "x", "-token-dir", t.TempDir(), "-image", "noTag"}, &logs, nil); err == nil {
		t.Error("want an error for -image without a tag")
	}
}
