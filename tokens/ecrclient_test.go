package tokens

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// isolateAWSEnv keeps the developer's AWS settings out of a test.
func isolateAWSEnv(t *testing.T) {
	for _, k := range []string{
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL_ECR_PUBLIC", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
	} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/credentials")
}

func loadConfig(t *testing.T, env map[string]string) aws.Config {
	t.Helper()
	isolateAWSEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("ap-northeast-1"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestECRFactoryEndpoints(t *testing.T) {
	use1 := ecrhost.Service{Partition: "aws", Region: "us-east-1"}
	use1FIPS := ecrhost.Service{Partition: "aws", Region: "us-east-1", FIPS: true}
	gov := ecrhost.Service{Partition: "aws-us-gov", Region: "us-gov-west-1"}
	govFIPS := ecrhost.Service{Partition: "aws-us-gov", Region: "us-gov-west-1", FIPS: true}
	euw1 := ecrhost.Service{Partition: "aws", Region: "eu-west-1"}
	cn := ecrhost.Service{Partition: "aws-cn", Region: "cn-north-1"}
	dual := ecrhost.Service{Partition: "aws", Region: "us-east-2", DualStack: true}
	dualFIPS := ecrhost.Service{Partition: "aws", Region: "us-east-2", DualStack: true, FIPS: true}
	for _, tc := range []struct {
		name string
		env  map[string]string
		base func(*aws.Config)
		svc  ecrhost.Service
		want string
	}{
		{"standard", nil, nil, euw1, "https://api.ecr.eu-west-1.amazonaws.com"},
		// The SDK's rules name the FIPS API endpoint api.ecr-fips.<region>
		// (AWS lists ecr-fips.<region> as well; both are FIPS endpoints).
		{"FIPS", nil, nil, use1FIPS, "https://api.ecr-fips.us-east-1.amazonaws.com"},
		{"GovCloud FIPS", nil, nil, govFIPS, "https://api.ecr-fips.us-gov-west-1.amazonaws.com"},
		{"GovCloud standard", nil, nil, gov, "https://api.ecr.us-gov-west-1.amazonaws.com"},
		{"China", nil, nil, cn, "https://api.ecr.cn-north-1.amazonaws.com.cn"},
		// A dkr-ecr (IPv6) host calls the dual-stack API.
		{"dual-stack", nil, nil, dual, "https://ecr.us-east-2.api.aws"},
		{"dual-stack FIPS", nil, nil, dualFIPS, "https://ecr-fips.us-east-2.api.aws"},
		{"dual-stack with custom endpoint", map[string]string{"AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:4566"}, nil, dual, "http://127.0.0.1:4566"},
		// A global FIPS switch does not turn FIPS on for a non-FIPS host (case 15).
		{"global FIPS env ignored for standard host", map[string]string{"AWS_USE_FIPS_ENDPOINT": "true"}, nil, euw1, "https://api.ecr.eu-west-1.amazonaws.com"},
		// A custom endpoint wins and turns FIPS off instead of failing.
		{"AWS_ENDPOINT_URL_ECR with FIPS", map[string]string{"AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:4566"}, nil, govFIPS, "http://127.0.0.1:4566"},
		{"AWS_ENDPOINT_URL with FIPS", map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:4567"}, nil, use1FIPS, "http://127.0.0.1:4567"},
		{"AWS_ENDPOINT_URL_ECR with dual-stack env", map[string]string{"AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:4566", "AWS_USE_DUALSTACK_ENDPOINT": "true"}, nil, use1, "http://127.0.0.1:4566"},
		{"base.BaseEndpoint with FIPS", nil, func(c *aws.Config) { c.BaseEndpoint = aws.String("https://ecr.test:8443") }, govFIPS, "https://ecr.test:8443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadConfig(t, tc.env)
			if tc.base != nil {
				tc.base(&cfg)
			}
			newECR := NewECRFactory(cfg)
			api, err := newECR(tc.svc)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Endpoint(t.Context(), api)
			if err != nil {
				t.Fatalf("resolving the endpoint: %v", err)
			}
			if got != tc.want {
				t.Errorf("endpoint %s, want %s", got, tc.want)
			}
			o := api.(*ecr.Client).Options()
			if o.Region != tc.svc.Region {
				t.Errorf("client region %s, want the service's %s", o.Region, tc.svc.Region)
			}
			if o.RetryMaxAttempts != sdkRetryMaxAttempts || o.Retryer.MaxAttempts() != sdkRetryMaxAttempts {
				t.Errorf("SDK retries %d/%d, want %d", o.RetryMaxAttempts, o.Retryer.MaxAttempts(), sdkRetryMaxAttempts)
			}
			again, _ := newECR(tc.svc)
			if again != api {
				t.Error("client not cached per service")
			}
		})
	}
}

func TestECRFactoryInvalid(t *testing.T) {
	newECR := NewECRFactory(loadConfig(t, nil))
	if _, err := newECR(ecrhost.Service{Partition: "aws"}); err == nil {
		t.Error("service without region accepted")
	}
	if _, err := Endpoint(t.Context(), &fakeClient{}); err == nil {
		t.Error("Endpoint of a non-SDK client did not fail")
	}
}
