package kubeletplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
)

// FuzzHandle feeds arbitrary stdin to the plugin: it never panics; it
// answers exactly the requests DecodeRequest accepts, in their apiVersion,
// strictly decodable by the kubelet's own types, with the auth key being the
// registry of the image; on error stdout stays empty, and neither the ECR
// password nor the request's service-account token is in the error.
func FuzzHandle(f *testing.F) {
	for _, tt := range handleCases {
		f.Add([]byte(request(tt.apiVersion, tt.image)))
	}
	for _, s := range []string{
		"", "image: x", `{}`,
		request("credentialprovider.kubelet.k8s.io/v2", use1+"/app:1"),
		request(APIVersionV1, "docker.io/library/nginx:1.27"),
		request(APIVersionV1, use1+":5000/app"),
		request(APIVersionV1, use1+"/a") + `{}`,
		`{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","image":"` + use1 + `/b"}`,
		`{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/app:1","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{"eks.amazonaws.com/role-arn":"arn:aws:iam::111122223333:role/team-a-pull"}}`,
		`{"apiVersion":"` + APIVersionV1beta1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","serviceAccountToken":"` + saToken + `"}`,
		`{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","serviceAccountToken":` + saToken + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		var looked ecrhost.Host
		lookup := func(_ context.Context, h ecrhost.Host) (Credential, error) {
			looked = h
			return Credential{Username: "AWS", Password: password, ExpiresAt: now.Add(11 * time.Hour), FetchedAt: now.Add(-time.Hour)}, nil
		}
		var out bytes.Buffer
		err := Handle(context.Background(), bytes.NewReader(stdin), &out, lookup, now)
		req, derr := DecodeRequest(bytes.NewReader(stdin))
		if (err == nil) != (derr == nil) {
			t.Fatalf("Handle: %v, DecodeRequest: %v", err, derr)
		}
		if err != nil {
			if out.Len() != 0 {
				t.Fatalf("stdout on error %v: %q", err, out.String())
			}
			var loose struct {
				ServiceAccountToken string `json:"serviceAccountToken"`
			}
			_ = json.Unmarshal(stdin, &loose)
			for _, s := range []string{password, loose.ServiceAccountToken} {
				if len(s) >= 16 && (strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v", err), s)) {
					t.Fatalf("the error quotes a secret: %v", err)
				}
			}
			return
		}
		if h, err := ecrhost.Parse(req.Image); err != nil || h != req.Host || looked != req.Host {
			t.Fatalf("request %v: host %+v, looked up %+v, image parses to %+v, %v", req, req.Host, looked, h, err)
		}
		if h, err := ecrhost.Parse(req.Registry); err != nil || h != req.Host || !strings.Contains(strings.ToLower(req.Image), strings.ToLower(req.Registry)) {
			t.Fatalf("auth key %q of image %q: %+v, %v; want %+v", req.Registry, req.Image, h, err, req.Host)
		}
		if tok := req.ServiceAccountToken; tok != "" && strings.Contains(fmt.Sprintf("%v %+v %#v %s", req, req, req, req), tok) {
			t.Fatal("a printed Request holds the service-account token")
		}
		got := decodeResponse(t, req.APIVersion, out.Bytes())
		if got.APIVersion != req.APIVersion || got.Kind != ResponseKind || len(got.Auth) != 1 || got.Auth[req.Registry] != [2]string{"AWS", password} {
			t.Fatalf("response %+v for request %v", got, req)
		}
	})
}
