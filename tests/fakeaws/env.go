package fakeaws

import (
	"path/filepath"
	"testing"
)

// ClearAWSEnv hides every other source of AWS settings from the SDK's default
// loader for the rest of t: credentials, region, profile and its files, role
// and web identity, endpoint overrides, IMDS and container credentials.
func ClearAWSEnv(t testing.TB) {
	t.Helper()
	none := filepath.Join(t.TempDir(), "none")
	t.Setenv("AWS_CONFIG_FILE", none)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL",
		"AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_ECR", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
	}
}

// UseOnly points the SDK's default loader at f, and at nothing else
// (ClearAWSEnv), for the rest of t.
func (f *Fake) UseOnly(t testing.TB) {
	t.Helper()
	ClearAWSEnv(t)
	for k, v := range f.Env() {
		t.Setenv(k, v)
	}
}
