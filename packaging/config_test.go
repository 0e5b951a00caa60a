// Package packaging holds what the deb/rpm packages and the container image ship (see
// nfpm.yaml, `make package`, `make image`); its test checks the packaged default config.
package packaging

import (
	"os"
	"strings"
	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

// TestDefaultConfig: the packaged /etc/ecr-node-auth/config.yaml is valid for the
// daemon's strict parser, lists no registries (the daemon starts ready and idle), and
// its commented-out settings are themselves a valid config with the built-in defaults.
func TestDefaultConfig(t *testing.T) {
	data, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_REGION", "")
	c, err := config.Parse("packaging/config.yaml", data)
	if err != nil {
		t.Fatalf("the daemon refuses the packaged config: %v", err)
	}
	if len(c.Registries) != 0 || c.AWSECR.RoleARN != "" {
		t.Errorf("packaged config has registries %v / role %q; want none (idle and ready)", c.Registries, c.AWSECR.RoleARN)
	}

	// Uncomment the settings (lines "# key: value" and their indented children, not
	// prose) and parse again: every documented key and value must be accepted.
	var b strings.Builder
	for _, l := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(l, "# ")
		if !ok || rest == "" {
			continue
		}
		trimmed := strings.TrimSpace(rest)
		if strings.HasPrefix(trimmed, "- ") || (strings.Contains(trimmed, ":") && !strings.Contains(strings.SplitN(trimmed, ":", 2)[0], " ")) {
			b.WriteString(rest + "\n")
		}
	}
	if _, err := config.Parse("packaging/config.yaml (uncommented)", []byte(b.String())); err != nil {
		t.Errorf("the commented settings are not a valid config: %v\n%s", err, b.String())
	}
}
