package daemon

import "testing"

func TestRegistriesCount(t *testing.T) {
	for n, want := range map[int]string{0: "0 registries", 1: "1 registry", 2: "2 registries", 16: "16 registries"} {
		if got := registries(n); got != want {
			t.Errorf("registries(%d) = %q, want %q", n, got, want)
		}
	}
}
