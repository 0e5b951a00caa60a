package identity

import (
	"context"
	"strings"
	"testing"
)

func TestSTSEndpoint(t *testing.T) {
	tests := []struct {
		region   string
		fips     bool
		override string
		want     string
		wantErr  string
	}{
		{region: "eu-west-1", want: "https://sts.eu-west-1.amazonaws.com"},
		{region: "us-east-1", want: "https://sts.us-east-1.amazonaws.com"},
		{region: "cn-north-1", want: "https://sts.cn-north-1.amazonaws.com.cn"},
		{region: "us-gov-west-1", want: "https://sts.us-gov-west-1.amazonaws.com"},
		{region: "us-east-1", fips: true, want: "https://sts-fips.us-east-1.amazonaws.com"},
		{region: "eu-west-1", override: "https://vpce-123.sts.eu-west-1.vpce.amazonaws.com", want: "https://vpce-123.sts.eu-west-1.vpce.amazonaws.com"},
		{region: "eu-west-1", override: "http://127.0.0.1:4566", want: "http://127.0.0.1:4566"},
		{region: "", wantErr: "no STS region"},
		{region: "aws-global", wantErr: "global endpoint"},
		{region: "eu-west-1", fips: true, override: "https://x.example", wantErr: "FIPS"},
	}
	for _, tt := range tests {
		got, err := STSEndpoint(context.Background(), tt.region, tt.fips, tt.override)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("STSEndpoint(%q, %v, %q) = %q, %v; want error %q", tt.region, tt.fips, tt.override, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("STSEndpoint(%q, %v, %q) = %q, %v; want %q", tt.region, tt.fips, tt.override, got, err, tt.want)
		}
		if tt.override == "" && strings.Contains(got, "//sts.amazonaws.com") {
			t.Errorf("global endpoint chosen for %q", tt.region)
		}
	}
}
