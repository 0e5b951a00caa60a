package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/tests/fakeaws"
)

// Case 28: KEP-4412 requests get the pod role's credentials, cached per role
// and service account; without a role annotation, the node's.
func TestWorkloadCredentials(t *testing.T) {
	h := newHarness(t, "["+host1+"]")
	f, err := fakeaws.New(fakeaws.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	for k, v := range f.Env() {
		t.Setenv(k, v)
	}
	f.AddStaticCredentials("AKIDTEST", "secretkeytest", "", f.Now().Add(24*3600e9))
	h.start()
	h.waitStatus("ready", func(st api.Status) bool { return st.Ready })

	const (
		roleA = "arn:aws:iam::111122223333:role/team-a-pull"
		roleB = "arn:aws:iam::111122223333:role/team-b-pull"
	)
	tokA := f.MintToken(fakeaws.TokenSpec{Subject: "system:serviceaccount:team-a:puller"})
	tokB := f.MintToken(fakeaws.TokenSpec{Subject: "system:serviceaccount:team-b:puller"})
	c := api.NewClient(h.sock)
	ctx := context.Background()
	tests := []struct {
		name       string
		ann        map[string]string
		token      string
		wantSource string
		wantErr    string
	}{
		{"no annotation: node identity", map[string]string{}, tokA, api.SourceConfigured, ""},
		{"role-arn", map[string]string{"eks.amazonaws.com/role-arn": roleA}, tokA, api.SourceWorkload, ""},
		{"ecr-role-arn wins", map[string]string{"eks.amazonaws.com/ecr-role-arn": roleB, "eks.amazonaws.com/role-arn": roleA}, tokB, api.SourceWorkload, ""},
		{"project key", map[string]string{"ecr-node-auth.io/role-arn": roleA}, tokA, api.SourceWorkload, ""},
		{"not a role", map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:user/bob"}, tokA, "", "not an IAM role ARN"},
		{"malformed token", map[string]string{"eks.amazonaws.com/role-arn": roleA}, "not-a-jwt", "", "cannot use role"},
	}
	got := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr, err := c.WorkloadCredentials(ctx, api.WorkloadRequest{Image: host1 + "/app:1", ServiceAccountToken: tt.token, ServiceAccountAnnotations: tt.ann})
			if tt.wantErr != "" {
				var ae *api.APIError
				if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest || !strings.Contains(ae.Message, tt.wantErr) {
					t.Errorf("error %v, want bad_request %q", err, tt.wantErr)
				}
				if err != nil && strings.Contains(err.Error(), tt.token) {
					t.Errorf("token echoed in %v", err)
				}
				return
			}
			if err != nil || cr.Source != tt.wantSource || cr.Password == "" || cr.Registry != host1 {
				t.Fatalf("got %v %v", cr, err)
			}
			got[tt.name] = cr.Password
		})
	}
	node, a, b := got["no annotation: node identity"], got["role-arn"], got["ecr-role-arn wins"]
	if node == a || a == b || node == b {
		t.Errorf("credentials shared between identities")
	}
	if got["project key"] != a {
		t.Errorf("role A's entry not reused for the same role and service account")
	}

	st := h.status()
	if len(st.Workloads) != 2 {
		t.Fatalf("workloads %+v", st.Workloads)
	}
	w := st.Workloads[0]
	if w.RoleARN != roleA || w.Subject != "system:serviceaccount:team-a:puller" || len(w.Registries) != 1 || w.Registries[0] != host1 || w.CredentialsExpireAt.IsZero() {
		t.Errorf("workload %+v", w)
	}
	_, metricsBody := httpGet(t, "http://"+st.MetricsAddress+"/metrics")
	if !strings.Contains(metricsBody, `ecr_node_auth_aws_calls_total{api="STS:AssumeRoleWithWebIdentity",result="success"} 2`) {
		t.Errorf("STS calls not counted:\n%s", metricsBody)
	}
	raw, _ := json.Marshal(st)
	h.stop()
	for _, s := range append(f.Secrets(), tokA, tokB) {
		if strings.Contains(string(raw), s) || strings.Contains(h.logs.String(), s) || strings.Contains(metricsBody, s) {
			t.Fatalf("a secret leaked into status or logs")
		}
	}
}
