package kubeletplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cpv1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1"
	cpv1alpha1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1alpha1"
	cpv1beta1 "k8s.io/kubelet/pkg/apis/credentialprovider/v1beta1"
	kjson "sigs.k8s.io/json"

	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

const (
	acct     = "111122223333"
	use1     = acct + ".dkr.ecr.us-east-1.amazonaws.com"
	password = "eyJwYXlsb2FkIjoiU0VDUkVULVRPS0VOLTk5In0=" // stands in for an ECR token
	saToken  = "eyJhbGciOiJSUzI1NiJ9.SA-TOKEN-SECRET.sig"
)

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// fixed answers every host with the case-25 credential: 11h14m left.
func fixed(t *testing.T, want string) Lookup {
	return func(_ context.Context, h ecrhost.Host) (Credential, error) {
		if want != "" && h.Name != want {
			t.Errorf("lookup for %q, want %q", h.Name, want)
		}
		return Credential{Username: "AWS", Password: password, ExpiresAt: now.Add(11*time.Hour + 14*time.Minute)}, nil
	}
}

func typeMetaOf(apiVersion string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: RequestKind}
}

func request(apiVersion, image string) string {
	return fmt.Sprintf(`{"apiVersion":%q,"kind":"CredentialProviderRequest","image":%q}`, apiVersion, image)
}

// decodedResponse is what the kubelet reads back, from any version.
type decodedResponse struct {
	APIVersion, Kind, CacheKeyType, CacheDuration string
	Auth                                          map[string][2]string
}

// decodeResponse decodes stdout strictly into the real versioned type, as the
// kubelet's strict decoder does, and flattens it.
func decodeResponse(t *testing.T, apiVersion string, out []byte) decodedResponse {
	t.Helper()
	var d decodedResponse
	strict := func(v any) {
		strictErrs, err := kjson.UnmarshalStrict(out, v)
		if err != nil || len(strictErrs) > 0 {
			t.Fatalf("response does not decode strictly as %s: %v %v\n%s", apiVersion, err, strictErrs, out)
		}
	}
	d.Auth = map[string][2]string{}
	switch apiVersion {
	case APIVersionV1:
		var r cpv1.CredentialProviderResponse
		strict(&r)
		d.APIVersion, d.Kind, d.CacheKeyType = r.APIVersion, r.Kind, string(r.CacheKeyType)
		if r.CacheDuration != nil {
			d.CacheDuration = r.CacheDuration.Duration.String()
		}
		for k, v := range r.Auth {
			d.Auth[k] = [2]string{v.Username, v.Password}
		}
	case APIVersionV1beta1:
		var r cpv1beta1.CredentialProviderResponse
		strict(&r)
		d.APIVersion, d.Kind, d.CacheKeyType = r.APIVersion, r.Kind, string(r.CacheKeyType)
		if r.CacheDuration != nil {
			d.CacheDuration = r.CacheDuration.Duration.String()
		}
		for k, v := range r.Auth {
			d.Auth[k] = [2]string{v.Username, v.Password}
		}
	case APIVersionV1alpha1:
		var r cpv1alpha1.CredentialProviderResponse
		strict(&r)
		d.APIVersion, d.Kind, d.CacheKeyType = r.APIVersion, r.Kind, string(r.CacheKeyType)
		if r.CacheDuration != nil {
			d.CacheDuration = r.CacheDuration.Duration.String()
		}
		for k, v := range r.Auth {
			d.Auth[k] = [2]string{v.Username, v.Password}
		}
	default:
		t.Fatalf("no decoder for %s", apiVersion)
	}
	return d
}

// TestHandle is case 25 (each apiVersion echoed, cacheDuration ~10h44m) and
// case 17's reference shapes: the auth key is the registry as the image
// spells it, and the kubelet's own matching finds it for the image.
// handleCases are requests Handle answers; they seed FuzzHandle too.
var handleCases = []struct {
	name       string
	apiVersion string
	image      string
	wantHost   string // ecrhost Name the lookup sees
	wantKey    string // auth key
}{
	{"case 25 v1", APIVersionV1, use1 + "/app:1", use1, use1},
	{"case 25 v1beta1", APIVersionV1beta1, use1 + "/app:1", use1, use1},
	{"case 25 v1alpha1", APIVersionV1alpha1, use1 + "/app:1", use1, use1},
	{"no tag (as the kubelet sends it)", APIVersionV1, use1 + "/team/app", use1, use1},
	{"port 443 kept in the key", APIVersionV1, use1 + ":443/app:1", use1, use1 + ":443"},
	{"tag and digest", APIVersionV1, acct + ".dkr.ecr.ap-southeast-2.amazonaws.com/k8s-example/pause:3.9@sha256:7031c1b283388d2c2e09b57badb803c05ebed362dc88d84b480cc47f72a21097",
		acct + ".dkr.ecr.ap-southeast-2.amazonaws.com", acct + ".dkr.ecr.ap-southeast-2.amazonaws.com"},
	{"bare host", APIVersionV1, use1, use1, use1},
	{"upper-case host spelled as sent", APIVersionV1, acct + ".DKR.ecr.us-east-1.amazonaws.com/app", use1, acct + ".DKR.ecr.us-east-1.amazonaws.com"},
	{"case 27 us-west-2", APIVersionV1, acct + ".dkr.ecr.us-west-2.amazonaws.com/cilium/cilium:v1.16", acct + ".dkr.ecr.us-west-2.amazonaws.com", acct + ".dkr.ecr.us-west-2.amazonaws.com"},
	{"FIPS", APIVersionV1, acct + ".dkr.ecr-fips.us-gov-west-1.amazonaws.com/a", acct + ".dkr.ecr-fips.us-gov-west-1.amazonaws.com", acct + ".dkr.ecr-fips.us-gov-west-1.amazonaws.com"},
	{"China", APIVersionV1, acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn/a", acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn", acct + ".dkr.ecr.cn-north-1.amazonaws.com.cn"},
	{"dual-stack", APIVersionV1, acct + ".dkr-ecr.us-east-2.on.aws/a", acct + ".dkr-ecr.us-east-2.on.aws", acct + ".dkr-ecr.us-east-2.on.aws"},
	{"public", APIVersionV1beta1, "public.ecr.aws/a/b:latest", "public.ecr.aws", "public.ecr.aws"},
	{"public dual-stack", APIVersionV1alpha1, "ecr-public.aws.com/a/b", "ecr-public.aws.com", "ecr-public.aws.com"},
}

func TestHandle(t *testing.T) {
	for _, tt := range handleCases {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Handle(context.Background(), strings.NewReader(request(tt.apiVersion, tt.image)), &out, fixed(t, tt.wantHost), now); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			got := decodeResponse(t, tt.apiVersion, out.Bytes())
			want := decodedResponse{
				APIVersion: tt.apiVersion, Kind: "CredentialProviderResponse", CacheKeyType: "Registry",
				CacheDuration: "10h44m0s",
				Auth:          map[string][2]string{tt.wantKey: {"AWS", password}},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("response\n got %+v\nwant %+v", got, want)
			}
			// The kubelet puts the auth keys in a keyring and looks the image
			// up with URLsMatchStr(key, image); the key must find the image.
			if ok, err := kubeletURLsMatchStr(tt.wantKey, tt.image); !ok || err != nil {
				t.Errorf("the kubelet would not use auth key %q for image %q (err %v)", tt.wantKey, tt.image, err)
			}
			// The wire form: a Go duration string, and the field names the
			// kubelet reads.
			for _, s := range []string{`"cacheDuration":"10h44m0s"`, `"cacheKeyType":"Registry"`, `"kind":"CredentialProviderResponse"`, `"apiVersion":"` + tt.apiVersion + `"`} {
				if !strings.Contains(out.String(), s) {
					t.Errorf("response lacks %s:\n%s", s, out.String())
				}
			}
		})
	}
}

func TestHandleErrors(t *testing.T) {
	notFound := func(context.Context, ecrhost.Host) (Credential, error) {
		return Credential{}, fmt.Errorf("daemon: %w", ErrNotFound)
	}
	unreachable := func(context.Context, ecrhost.Host) (Credential, error) {
		return Credential{}, errors.New("daemon socket /run/ecr-node-auth/auth.sock: connection refused")
	}
	expired := func(context.Context, ecrhost.Host) (Credential, error) {
		return Credential{Username: "AWS", Password: password, ExpiresAt: now.Add(-time.Minute)}, nil
	}
	empty := func(context.Context, ecrhost.Host) (Credential, error) {
		return Credential{Username: "AWS", ExpiresAt: now.Add(time.Hour)}, nil
	}
	never := func(context.Context, ecrhost.Host) (Credential, error) {
		panic("lookup must not be called")
	}
	tests := []struct {
		name   string
		stdin  string
		lookup Lookup
		want   []string // substrings of the error
		is     error
	}{
		{"case 25 unknown v2", request("credentialprovider.kubelet.k8s.io/v2", use1+"/app:1"), never,
			[]string{`"credentialprovider.kubelet.k8s.io/v2" is not supported`, APIVersionV1 + ", " + APIVersionV1beta1 + ", " + APIVersionV1alpha1}, nil},
		{"no apiVersion", `{"kind":"CredentialProviderRequest","image":"` + use1 + `/a"}`, never, []string{`apiVersion "" is not supported`}, nil},
		{"wrong kind", `{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderResponse","image":"` + use1 + `/a"}`, never, []string{`kind "CredentialProviderResponse" is not CredentialProviderRequest`}, nil},
		{"non-ECR image", request(APIVersionV1, "docker.io/library/nginx:1.27"), never, []string{`image "docker.io/library/nginx:1.27" is not in an Amazon ECR registry`, "matchImages"}, nil},
		{"substring is not ECR (case 17)", request(APIVersionV1, "ghcr.io/x/"+use1+"/app"), never, []string{"not in an Amazon ECR registry"}, nil},
		{"other port", request(APIVersionV1, use1+":5000/app"), never, []string{"port 5000"}, nil},
		{"no image", request(APIVersionV1, ""), never, []string{"has no image"}, nil},
		{"empty stdin", "", never, []string{"no CredentialProviderRequest on stdin"}, nil},
		{"not JSON", "image: x", never, []string{"decoding the CredentialProviderRequest"}, nil},
		{"strict: unknown field", `{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","extra":1}`, never, []string{`unknown field "extra"`}, nil},
		{"strict: duplicate field", `{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","image":"` + use1 + `/b"}`, never, []string{`duplicate field "image"`}, nil},
		{"strict: field case", `{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","Image":"` + use1 + `/a"}`, never, []string{`unknown field "Image"`}, nil},
		{"strict: token only in v1", `{"apiVersion":"` + APIVersionV1beta1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","serviceAccountToken":"` + saToken + `"}`, never, []string{`unknown field "serviceAccountToken"`}, nil},
		{"trailing data", request(APIVersionV1, use1+"/a") + `{}`, never, []string{"decoding the CredentialProviderRequest"}, nil},
		{"not found", request(APIVersionV1, use1+"/app:1"), notFound, []string{"no credentials for registry " + use1}, ErrNotFound},
		{"daemon unreachable", request(APIVersionV1, use1+"/app:1"), unreachable, []string{"getting credentials for registry " + use1, "connection refused"}, nil},
		{"expired", request(APIVersionV1, use1+"/app:1"), expired, []string{"expired at 2026-12-03T11:59:00Z", "ecr-node-auth status"}, nil},
		{"empty password", request(APIVersionV1, use1+"/app:1"), empty, []string{"empty password"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Handle(context.Background(), strings.NewReader(tt.stdin), &out, tt.lookup, now)
			if err == nil {
				t.Fatalf("Handle succeeded:\n%s", out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			if out.Len() != 0 {
				t.Errorf("stdout on error: %q", out.String())
			}
		})
	}
}

// TestServiceAccountFields: the KEP-4412 fields of a v1 request (case 28)
// reach the Lookup through the context, and the answer stays v1.
func TestServiceAccountFields(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		token string
		ann   map[string]string
	}{
		{"node identity", request(APIVersionV1, use1+"/app:1"), "", nil},
		{"token, no annotations", `{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/app:1","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{}}`, saToken, map[string]string{}},
		{"token and role", `{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/app:1","serviceAccountToken":"` + saToken + `","serviceAccountAnnotations":{"eks.amazonaws.com/role-arn":"arn:aws:iam::111122223333:role/team-a-pull"}}`,
			saToken, map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/team-a-pull"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen Request
			var ok bool
			lookup := func(ctx context.Context, h ecrhost.Host) (Credential, error) {
				seen, ok = RequestFromContext(ctx)
				return fixed(t, use1)(ctx, h)
			}
			var out bytes.Buffer
			if err := Handle(context.Background(), strings.NewReader(tt.stdin), &out, lookup, now); err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Fatal("no Request in the lookup's context")
			}
			if seen.ServiceAccountToken != tt.token || fmt.Sprint(seen.ServiceAccountAnnotations) != fmt.Sprint(tt.ann) ||
				seen.Registry != use1 || seen.Host.Name != use1 || seen.APIVersion != APIVersionV1 {
				t.Errorf("lookup saw %+v (token %v)", seen, seen.ServiceAccountToken == tt.token)
			}
			if got := decodeResponse(t, APIVersionV1, out.Bytes()).APIVersion; got != APIVersionV1 {
				t.Errorf("response apiVersion %s", got)
			}
		})
	}
}

func TestCacheDuration(t *testing.T) {
	h, m, s := time.Hour, time.Minute, time.Second
	const unknown = -1
	tests := []struct {
		name    string
		left    time.Duration // ExpiresAt - now; 0 with noExpiry
		age     time.Duration // now - FetchedAt; unknown: FetchedAt is zero
		want    time.Duration
		comment string
	}{
		{"case 25: 11h14m left, lifetime unknown", 11*h + 14*m, unknown, 10*h + 44*m, "margin min(30m, 2h48m)"},
		{"case 25: 11h14m left of 12h", 11*h + 14*m, 46 * m, 10*h + 44*m, "margin min(30m, 3h)"},
		{"fresh 12h ECR token", 12 * h, 0, 11*h + 30*m, ""},
		{"2h left of 12h", 2 * h, 10 * h, 90 * m, ""},
		{"31m left of 12h", 31 * m, 12*h - 31*m, m, "just outside the margin"},
		{"inside the margin (daemon failing to refresh)", 20 * m, 12*h - 20*m, m, "short answer"},
		{"inside the margin, 90s left", 90 * s, 12*h - 90*s, 45 * s, "half the time left"},
		{"inside the margin, 1s left", s, 12*h - s, s, "floor"},
		{"1h token, fresh", h, 0, 45 * m, "margin 15m"},
		{"15s test token, fresh", 15 * s, 0, 11 * s, "margin 3.75s, truncated"},
		{"15s test token, 10s in", 5 * s, 10 * s, s, "5s less its 3.75s margin, truncated"},
		{"15s test token, 12s in", 3 * s, 12 * s, s, "inside its margin: half of 3s, truncated"},
		{"unknown lifetime, 8s left", 8 * s, unknown, 6 * s, "margin 2s"},
		{"sub-second left", 300 * time.Millisecond, unknown, s, "never below 1s"},
		{"fetched in the future (clock skew)", h, -2 * h, 45 * m, "FetchedAt after now: lifetime is at least the time left"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Credential{Username: "AWS", Password: password, ExpiresAt: now.Add(tt.left)}
			if tt.age != unknown {
				c.FetchedAt = now.Add(-tt.age)
			}
			got := CacheDuration(c, now)
			if got != tt.want {
				t.Errorf("CacheDuration = %v, want %v (%s)", got, tt.want, tt.comment)
			}
			if got < time.Second {
				t.Errorf("CacheDuration %v below 1s", got)
			}
			if got > tt.left && tt.left >= time.Second {
				t.Errorf("CacheDuration %v outlives the token (%v left)", got, tt.left)
			}
		})
	}
	if got := CacheDuration(Credential{Password: password}, now); got != ShortCacheDuration {
		t.Errorf("no expiry: %v, want %v", got, ShortCacheDuration)
	}
	if got := CacheDuration(Credential{Password: password, ExpiresAt: now.Add(-time.Hour)}, now); got != MinCacheDuration {
		t.Errorf("expired: %v, want %v", got, MinCacheDuration)
	}
}

// TestNoSecretInErrors drives every failure path with a lookup that knows the
// password (and requests that carry a service-account token) and checks that
// neither secret appears in an error, nor in any printed or logged form of
// the values that hold them.
func TestNoSecretInErrors(t *testing.T) {
	secrets := []string{password, saToken}
	withToken := func(apiVersion, image, extra string) string {
		return `{"apiVersion":"` + apiVersion + `","kind":"CredentialProviderRequest","image":"` + image + `","serviceAccountToken":"` + saToken + `"` + extra + `}`
	}
	leaky := func(err error) Lookup {
		return func(context.Context, ecrhost.Host) (Credential, error) {
			return Credential{Username: "AWS", Password: password, ExpiresAt: now.Add(-time.Second)}, err
		}
	}
	inputs := []struct {
		stdin  string
		lookup Lookup
	}{
		{withToken(APIVersionV1, use1+"/a", ""), leaky(nil)}, // expired
		{withToken(APIVersionV1, use1+"/a", ""), leaky(ErrNotFound)},
		{withToken(APIVersionV1, use1+"/a", ""), leaky(errors.New("socket down"))},
		{withToken(APIVersionV1, "docker.io/x", ""), leaky(nil)},
		{withToken(APIVersionV1, use1+":8443/a", ""), leaky(nil)},
		{withToken(APIVersionV1, use1+"/a", `,"unknown":"`+saToken+`"`), leaky(nil)},
		{withToken(APIVersionV1, use1+"/a", `,"serviceAccountToken":"`+saToken+`"`), leaky(nil)},
		{withToken(APIVersionV1, use1+"/a", `,"serviceAccountAnnotations":"`+saToken+`"`), leaky(nil)},
		{withToken(APIVersionV1beta1, use1+"/a", ""), leaky(nil)},
		{withToken("credentialprovider.kubelet.k8s.io/v9", use1+"/a", ""), leaky(nil)},
		{`{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","serviceAccountToken":` + saToken + `}`, leaky(nil)},
		{`{"apiVersion":"` + APIVersionV1 + `","kind":"CredentialProviderRequest","image":"` + use1 + `/a","serviceAccountToken":12}`, leaky(nil)},
	}
	for i, in := range inputs {
		var out bytes.Buffer
		err := Handle(context.Background(), strings.NewReader(in.stdin), &out, in.lookup, now)
		if err == nil {
			t.Errorf("input %d: no error", i)
			continue
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) || strings.Contains(fmt.Sprintf("%+v", err), s) {
				t.Errorf("input %d: error contains a secret: %v", i, err)
			}
		}
		if out.Len() != 0 {
			t.Errorf("input %d: stdout on error", i)
		}
	}

	// Every printed and logged form of the values that carry a secret.
	c := Credential{Username: "AWS", Password: password, ExpiresAt: now}
	r := Request{APIVersion: APIVersionV1, Image: use1 + "/a", Registry: use1, ServiceAccountToken: saToken}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "cred", c, "req", r)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "cred", c, "req", r)
	forms := []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q", c, c, c, c, c), fmt.Sprintf("%v", []Credential{c}), fmt.Sprintf("%+v", struct{ C Credential }{c}),
		fmt.Sprint(r), fmt.Sprintf("%v %+v %#v %s %q", r, r, r, r, r), fmt.Sprintf("%+v", &r),
		fmt.Errorf("wrapped: %v / %v", c, r).Error(),
		logBuf.String(),
	}
	for _, f := range forms {
		for _, s := range secrets {
			if strings.Contains(f, s) {
				t.Errorf("a printed form contains a secret: %s", f)
			}
		}
	}
	if !strings.Contains(fmt.Sprint(c), "REDACTED") || !strings.Contains(fmt.Sprint(r), "REDACTED") {
		t.Errorf("redaction marker missing: %v / %v", c, r)
	}
}

// TestResponseIsCompact guards the wire shape the kubelet's strict decoder
// accepts: exactly these top-level fields.
func TestResponseIsCompact(t *testing.T) {
	req, err := DecodeRequest(strings.NewReader(request(APIVersionV1, use1+"/a")))
	if err != nil {
		t.Fatal(err)
	}
	body, err := EncodeResponse(req, Credential{Username: "AWS", Password: password, ExpiresAt: now.Add(12 * time.Hour), FetchedAt: now}, now)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range top {
		keys = append(keys, k)
	}
	if fmt.Sprint(len(keys)) != "5" || top["cacheDuration"] == nil || string(top["cacheDuration"]) != `"11h30m0s"` {
		t.Errorf("response fields %v: %s", keys, body)
	}
	if _, err := EncodeResponse(Request{APIVersion: "x/v9"}, Credential{}, now); err == nil {
		t.Error("EncodeResponse accepted an unknown apiVersion")
	}
}

// jsonFields lists a struct type's JSON fields as "name,opts", flattening
// embedded structs (TypeMeta) the way encoding/json does.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if f.Anonymous && (tag == "" || strings.HasPrefix(tag, ",")) {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if !f.IsExported() || tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		// The Go type's JSON kind matters too (string vs map vs struct).
		kind := f.Type.Kind().String()
		if f.Type.Kind() == reflect.Pointer {
			kind = f.Type.Elem().Kind().String()
		}
		if f.Type.String() == "*v1.Duration" {
			kind = "string" // metav1.Duration marshals as a duration string
		}
		out = append(out, tag+":"+kind)
	}
	sort.Strings(out)
	return out
}

// TestWireTypesMirrorKubelet holds the plugin's wire types to the real
// k8s.io/kubelet API types: the same JSON field names, options and kinds, in
// every version. A k8s.io/kubelet bump that adds a field fails here.
func TestWireTypesMirrorKubelet(t *testing.T) {
	tests := []struct {
		name       string
		real, ours any
	}{
		{"v1 request", cpv1.CredentialProviderRequest{}, requestV1{}},
		{"v1beta1 request", cpv1beta1.CredentialProviderRequest{}, requestV1beta1{}},
		{"v1alpha1 request", cpv1alpha1.CredentialProviderRequest{}, requestV1beta1{}},
		{"v1 response", cpv1.CredentialProviderResponse{}, response{}},
		{"v1beta1 response", cpv1beta1.CredentialProviderResponse{}, response{}},
		{"v1alpha1 response", cpv1alpha1.CredentialProviderResponse{}, response{}},
		{"v1 auth", cpv1.AuthConfig{}, authConfig{}},
		{"v1beta1 auth", cpv1beta1.AuthConfig{}, authConfig{}},
		{"v1alpha1 auth", cpv1alpha1.AuthConfig{}, authConfig{}},
	}
	for _, tt := range tests {
		real, ours := jsonFields(reflect.TypeOf(tt.real)), jsonFields(reflect.TypeOf(tt.ours))
		if strings.Join(real, " ") != strings.Join(ours, " ") {
			t.Errorf("%s: kubelet type has %v, ours %v", tt.name, real, ours)
		}
	}
	if string(cpv1.RegistryPluginCacheKeyType) != cacheKeyRegistry || string(cpv1beta1.RegistryPluginCacheKeyType) != cacheKeyRegistry ||
		string(cpv1alpha1.RegistryPluginCacheKeyType) != cacheKeyRegistry {
		t.Error("Registry cache key type differs")
	}
	for _, gv := range []string{cpv1.SchemeGroupVersion.String(), cpv1beta1.SchemeGroupVersion.String(), cpv1alpha1.SchemeGroupVersion.String()} {
		if !strings.Contains(strings.Join(SupportedAPIVersions(), " "), gv) {
			t.Errorf("kubelet version %s is not supported", gv)
		}
	}
}

// TestDecodesKubeletEncodedRequests: requests built and encoded with the real
// types, as the kubelet sends them, decode to the same values.
func TestDecodesKubeletEncodedRequests(t *testing.T) {
	ann := map[string]string{"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/team-a-pull"}
	tests := []struct {
		name  string
		req   any
		token string
		ann   map[string]string
	}{
		{"v1", cpv1.CredentialProviderRequest{TypeMeta: typeMetaOf(APIVersionV1), Image: use1 + "/app:1"}, "", nil},
		{"v1 KEP-4412", cpv1.CredentialProviderRequest{TypeMeta: typeMetaOf(APIVersionV1), Image: use1 + "/app:1", ServiceAccountToken: saToken, ServiceAccountAnnotations: ann}, saToken, ann},
		{"v1beta1", cpv1beta1.CredentialProviderRequest{TypeMeta: typeMetaOf(APIVersionV1beta1), Image: use1 + "/app:1"}, "", nil},
		{"v1alpha1", cpv1alpha1.CredentialProviderRequest{TypeMeta: typeMetaOf(APIVersionV1alpha1), Image: use1 + "/app:1"}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := json.Marshal(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeRequest(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			if got.Image != use1+"/app:1" || got.Registry != use1 || got.ServiceAccountToken != tt.token ||
				!reflect.DeepEqual(got.ServiceAccountAnnotations, tt.ann) || !strings.HasSuffix(got.APIVersion, "/"+tt.name[:strings.IndexByte(tt.name+" ", ' ')]) {
				t.Errorf("decoded %+v from %s", got, data)
			}
		})
	}
}

func TestClientMarginIsRefreshMargin(t *testing.T) {
	for _, l := range []time.Duration{0, -time.Hour, time.Second, 15 * time.Second, time.Minute, 90 * time.Minute, 2 * time.Hour, 4 * time.Hour, 12 * time.Hour, 48 * time.Hour} {
		if got, want := clientMargin(l), min(MaxClientMargin, refresh.Margin(l)); got != want {
			t.Errorf("lifetime %v: clientMargin %v, min(30m, refresh.Margin) %v", l, got, want)
		}
	}
}
