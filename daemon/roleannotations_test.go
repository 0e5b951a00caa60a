package daemon

import (
	"slices"
	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
)

// TestRoleFromAnnotations: the daemon honours every key of api.RoleAnnotations
// (the list the kubelet plugin and print-kubelet-config use), in its order.
func TestRoleFromAnnotations(t *testing.T) {
	keys := api.RoleAnnotations()
	if !slices.Equal(roleAnnotations, keys) {
		t.Fatalf("daemon honours %v, api.RoleAnnotations() is %v", roleAnnotations, keys)
	}
	tests := []struct {
		name string
		ann  map[string]string
		want string
	}{
		{"none", map[string]string{"other": "x"}, ""},
		{"ecr-role-arn", map[string]string{keys[0]: "a", keys[1]: "b", keys[2]: "c"}, "a"},
		{"role-arn", map[string]string{keys[1]: "b", keys[2]: "c"}, "b"},
		{"ecr-node-auth.io", map[string]string{keys[2]: " c "}, "c"},
		{"blank falls through", map[string]string{keys[0]: " ", keys[2]: "c"}, "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := roleFrom(tt.ann); got != tt.want {
				t.Errorf("roleFrom(%v) = %q, want %q", tt.ann, got, tt.want)
			}
		})
	}
}
