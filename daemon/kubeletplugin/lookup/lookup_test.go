package lookup

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestCredentialRedacts(t *testing.T) {
	const secret = "SECRET-TOKEN-0123456789"
	c := Credential{Username: "AWS", Password: secret, ExpiresAt: time.Date(2026, 12, 3, 23, 0, 0, 0, time.UTC)}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("m", "cred", c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("m", "cred", c)
	tests := []struct {
		name, got, want string
	}{
		{"%v", fmt.Sprintf("%v", c), "Password:REDACTED"},
		{"%+v", fmt.Sprintf("%+v", c), "Username:AWS"},
		{"%#v", fmt.Sprintf("%#v", c), "lookup.Credential{"},
		{"%s", fmt.Sprintf("%s", c), "ExpiresAt:2026-12-03T23:00:00Z"},
		{"%q", fmt.Sprintf("%q", c), "REDACTED"},
		{"%d", fmt.Sprintf("%d", c), "REDACTED"},
		{"pointer", fmt.Sprintf("%v", &c), "REDACTED"},
		{"nested", fmt.Sprintf("%+v", struct{ C []Credential }{[]Credential{c}}), "REDACTED"},
		{"error", fmt.Errorf("x: %v", c).Error(), "REDACTED"},
		{"slog", logs.String(), `"hasPassword":true`},
		{"empty password", fmt.Sprint(Credential{Username: "AWS"}), "Password: "},
	}
	for _, tt := range tests {
		if strings.Contains(tt.got, secret) || !strings.Contains(tt.got, tt.want) {
			t.Errorf("%s: %q (want it to contain %q and not the secret)", tt.name, tt.got, tt.want)
		}
	}
}
