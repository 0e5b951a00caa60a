package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	kubeletconfigv1 "k8s.io/kubelet/config/v1"
	kjson "sigs.k8s.io/json"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/kubeletplugin"
)

// parseKubeletConfig reads the YAML as the kubelet does: YAML to JSON, then
// a strict decode into the real kubelet.config.k8s.io/v1 type.
func parseKubeletConfig(t *testing.T, doc []byte) kubeletconfigv1.CredentialProvider {
	t.Helper()
	var generic any
	if err := yaml.Unmarshal(doc, &generic); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, doc)
	}
	asJSON, err := json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	var cfg kubeletconfigv1.CredentialProviderConfig
	if strict, err := kjson.UnmarshalStrict(asJSON, &cfg); err != nil || len(strict) > 0 {
		t.Fatalf("not a strict CredentialProviderConfig: %v %v\n%s", err, strict, doc)
	}
	if cfg.APIVersion != kubeletplugin.ConfigAPIVersion || cfg.Kind != kubeletplugin.ConfigKind || len(cfg.Providers) != 1 {
		t.Fatalf("config %+v", cfg)
	}
	return cfg.Providers[0]
}

func TestPrintKubeletConfig(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
		check  func(t *testing.T, p kubeletconfigv1.CredentialProvider)
	}{
		{name: "unknown flag", args: []string{"--nope"}, code: 2, stderr: "flag provided but not defined"},
		{name: "defaults", check: func(t *testing.T, p kubeletconfigv1.CredentialProvider) {
			if p.Name != "ecr-node-auth" || !slices.Equal(p.Args, []string{"kubelet-plugin"}) || len(p.Env) != 0 || p.TokenAttributes != nil ||
				p.DefaultCacheDuration.Duration != 10*time.Minute || p.APIVersion != kubeletplugin.APIVersionV1 {
				t.Errorf("provider %+v", p)
			}
			if !slices.Equal(p.MatchImages, kubeletplugin.MatchImages()) {
				t.Errorf("matchImages %v", p.MatchImages)
			}
		}},
		{name: "every flag", args: []string{"--token-attributes", "--socket", "/run/x/auth.sock", "--cache-duration", "1h", "--config", "/etc/e/c.yaml"},
			check: func(t *testing.T, p kubeletconfigv1.CredentialProvider) {
				if !slices.Equal(p.Args, []string{"kubelet-plugin", "--config", "/etc/e/c.yaml"}) || p.DefaultCacheDuration.Duration != time.Hour {
					t.Errorf("provider %+v", p)
				}
				if len(p.Env) != 1 || p.Env[0].Name != "ECR_NODE_AUTH_SOCKET" || p.Env[0].Value != "/run/x/auth.sock" {
					t.Errorf("env %+v", p.Env)
				}
				ta := p.TokenAttributes
				if ta == nil || ta.ServiceAccountTokenAudience != "sts.amazonaws.com" || ta.RequireServiceAccount == nil || *ta.RequireServiceAccount ||
					!slices.Equal(ta.OptionalServiceAccountAnnotationKeys, kubeletplugin.DefaultAnnotationKeys()) {
					t.Errorf("tokenAttributes %+v", ta)
				}
			}},
		{name: "relative socket", args: []string{"--socket", "auth.sock"}, code: 2, stderr: "absolute path"},
		{name: "zero cache duration", args: []string{"--cache-duration", "0s"}, code: 2, stderr: "must be positive"},
		{name: "stray argument", args: []string{"extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{name: "help", args: []string{"-h"}, code: 0, stderr: "usage: ecr-node-auth print-kubelet-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"print-kubelet-config"}, tt.args...), &out, &errb)
			if code != tt.code || !strings.Contains(errb.String(), tt.stderr) {
				t.Fatalf("exit %d stderr %q; want %d with %q", code, errb.String(), tt.code, tt.stderr)
			}
			if tt.check != nil {
				tt.check(t, parseKubeletConfig(t, out.Bytes()))
			} else if code != 0 && out.Len() != 0 {
				t.Errorf("stdout on a usage error: %q", out.String())
			}
		})
	}
}

// TestHelpListsEveryCommand: `help` names every command the dispatch knows.
func TestHelpListsEveryCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"help"}, &out, &errb); code != 0 {
		t.Fatalf("help: %d", code)
	}
	for _, c := range []string{"run", "status", "kubelet-plugin", "credential-helper", "print-kubelet-config", "version", "help"} {
		if !strings.Contains(out.String(), "\n  "+c+" ") {
			t.Errorf("help lacks the command %q:\n%s", c, out.String())
		}
	}
	if !strings.Contains(out.String(), helperName) {
		t.Errorf("help does not say the binary is the docker helper as %s", helperName)
	}
}

// TestRoleAnnotationsAgree: the annotations print-kubelet-config asks the
// kubelet to pass, the plugin's direct-fetch fallback reads and the daemon
// honours (api.RoleAnnotations, checked in package daemon) are one list, so
// a pod annotated with any of them gets its role on every path.
func TestRoleAnnotationsAgree(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"print-kubelet-config", "--token-attributes"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	p := parseKubeletConfig(t, out.Bytes())
	want := api.RoleAnnotations()
	if len(want) != 3 {
		t.Fatalf("api.RoleAnnotations() = %v, want the three README lists", want)
	}
	if p.TokenAttributes == nil || !slices.Equal(p.TokenAttributes.OptionalServiceAccountAnnotationKeys, want) {
		t.Fatalf("print-kubelet-config passes %+v, want %v", p.TokenAttributes, want)
	}
	for i, k := range want {
		t.Run(k, func(t *testing.T) {
			role := "arn:aws:iam::111122223333:role/r" + k
			if got := workloadRole(map[string]string{k: role}); got != role {
				t.Errorf("fallback ignores %s: got %q", k, got)
			}
			// Every key of lower precedence loses to this one.
			ann := map[string]string{k: role}
			for _, lower := range want[i+1:] {
				ann[lower] = "arn:aws:iam::111122223333:role/lower"
			}
			if got := workloadRole(ann); got != role {
				t.Errorf("precedence: got %q, want %q", got, role)
			}
		})
	}
}
