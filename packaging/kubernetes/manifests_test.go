// Package kubernetes holds the DaemonSet install of ecr-node-auth (a kustomize base of
// plain YAML in base/, an optional setup-containerd component); its test decodes every
// manifest strictly into k8s.io/api types and checks the properties issue 5 asks for.
package kubernetes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
)

const (
	baseDir   = "base"
	namespace = "kube-system"
	name      = "ecr-node-auth"
	// defaultMetricsAddress is design.md's default metricsAddress (/healthz, /readyz).
	defaultMetricsAddress = "127.0.0.1:9469"
	configMountPath       = "/etc/ecr-node-auth"
)

// toJSON converts one YAML document to JSON; yaml.v3 refuses duplicate keys.
func toJSON(doc []byte) ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// strict decodes one YAML document into v, failing on unknown or duplicate fields.
func strict(t *testing.T, where string, doc []byte, v any) {
	t.Helper()
	js, err := toJSON(doc)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	strictJSON(t, where, js, v)
}

// documents splits a multi-document YAML stream, dropping empty documents.
func documents(t *testing.T, where string, data []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == io.EOF {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind == 0 {
			continue
		}
		d, err := yaml.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
}

// kustomization is the part of kustomize's Kustomization/Component this install uses.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Target struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"target"`
		Patch string `json:"patch"`
	} `json:"patches,omitempty"`
}

// objects is every object of the base, decoded strictly by kind.
type objects struct {
	sa  *corev1.ServiceAccount
	cm  *corev1.ConfigMap
	ds  *appsv1.DaemonSet
	all []metav1.Object
}

func (o *objects) add(t *testing.T, where string, doc []byte) {
	t.Helper()
	var tm metav1.TypeMeta
	if js, err := toJSON(doc); err != nil {
		t.Fatalf("%s: %v", where, err)
	} else if err := json.Unmarshal(js, &tm); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/ServiceAccount":
		o.sa = &corev1.ServiceAccount{}
		strict(t, where, doc, o.sa)
		o.all = append(o.all, o.sa)
	case "v1/ConfigMap":
		o.cm = &corev1.ConfigMap{}
		strict(t, where, doc, o.cm)
		o.all = append(o.all, o.cm)
	case "apps/v1/DaemonSet":
		o.ds = &appsv1.DaemonSet{}
		strict(t, where, doc, o.ds)
		o.all = append(o.all, o.ds)
	default:
		t.Fatalf("%s: unexpected %s %s", where, tm.APIVersion, tm.Kind)
	}
}

func (o *objects) complete(t *testing.T) {
	t.Helper()
	if o.sa == nil || o.cm == nil || o.ds == nil {
		t.Fatalf("want a ServiceAccount, a ConfigMap and a DaemonSet; got sa=%v cm=%v ds=%v", o.sa != nil, o.cm != nil, o.ds != nil)
	}
}

func loadBase(t *testing.T) (*kustomization, *objects) {
	t.Helper()
	var k kustomization
	where := filepath.Join(baseDir, "kustomization.yaml")
	strict(t, where, readFile(t, where), &k)
	if k.Kind != "Kustomization" || k.Namespace != namespace {
		t.Errorf("%s: kind %q namespace %q, want Kustomization in %s", where, k.Kind, k.Namespace, namespace)
	}
	o := &objects{}
	for _, r := range k.Resources {
		p := filepath.Join(baseDir, r)
		for i, d := range documents(t, p, readFile(t, p)) {
			o.add(t, fmt.Sprintf("%s#%d", p, i), d)
		}
	}
	o.complete(t)
	return &k, o
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBaseObjects(t *testing.T) {
	_, o := loadBase(t)
	for _, m := range o.all {
		if m.GetNamespace() != namespace || m.GetName() != name {
			t.Errorf("%T: %s/%s, want %s/%s", m, m.GetNamespace(), m.GetName(), namespace, name)
		}
	}
	if o.ds.Spec.Template.Spec.ServiceAccountName != o.sa.Name {
		t.Errorf("DaemonSet service account %q, want %q", o.ds.Spec.Template.Spec.ServiceAccountName, o.sa.Name)
	}
}

func TestDaemonSet(t *testing.T) {
	_, o := loadBase(t)
	ds := o.ds
	spec := ds.Spec.Template.Spec

	sel := ds.Spec.Selector.MatchLabels
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
	if len(sel) == 0 {
		t.Error("empty selector")
	}

	// Rolling update with a bounded maxUnavailable.
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable == nil {
		t.Fatalf("updateStrategy %+v: want RollingUpdate with maxUnavailable", us)
	}
	if mu := us.RollingUpdate.MaxUnavailable.String(); mu == "0" || mu == "0%" || mu == "100%" {
		t.Errorf("maxUnavailable %s", mu)
	}

	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists ||
		spec.Tolerations[0].Key != "" || spec.Tolerations[0].Effect != "" {
		t.Errorf("tolerations %+v: want exactly [{operator: Exists}]", spec.Tolerations)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the API token must not be mounted: the daemon needs only the projected STS token")
	}
	if !spec.HostNetwork {
		t.Error("hostNetwork: the probes use the node's loopback (metricsAddress default)")
	}
	if spec.HostPID || spec.HostIPC {
		t.Error("hostPID/hostIPC must stay off")
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	if len(spec.InitContainers) != 0 {
		t.Error("the base has no init container (setup-containerd is an optional component)")
	}
	c := spec.Containers[0]
	checkContainerSecurity(t, c, spec.SecurityContext)

	// Small requests and limits.
	for _, rl := range []struct {
		what string
		list corev1.ResourceList
		cpu  string
		mem  string
	}{{"requests", c.Resources.Requests, "100m", "64Mi"}, {"limits", c.Resources.Limits, "500m", "256Mi"}} {
		cpu, okc := rl.list[corev1.ResourceCPU]
		mem, okm := rl.list[corev1.ResourceMemory]
		if !okc || !okm {
			t.Errorf("%s: want cpu and memory, got %v", rl.what, rl.list)
			continue
		}
		if cpu.Cmp(resource.MustParse(rl.cpu)) > 0 || mem.Cmp(resource.MustParse(rl.mem)) > 0 {
			t.Errorf("%s cpu %s memory %s: want at most %s / %s", rl.what, cpu.String(), mem.String(), rl.cpu, rl.mem)
		}
	}
	if c.Resources.Requests.Memory().Cmp(*c.Resources.Limits.Memory()) > 0 {
		t.Error("memory request above the limit")
	}

	// Probes on the health endpoint.
	host, port, err := net.SplitHostPort(defaultMetricsAddress)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: want httpGet on the health endpoint", p.what)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || g.Port.String() != port || g.Host != host {
			t.Errorf("%s probe: %s:%s%s, want %s:%s%s (metricsAddress default, node loopback)", p.what, g.Host, g.Port.String(), g.Path, host, port, p.path)
		}
	}

	// Volumes: the projected token, the config, and hostPath for the certs dir and the
	// socket dir only.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	var hostPaths []string
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths = append(hostPaths, v.HostPath.Path)
		}
	}
	slices.Sort(hostPaths)
	if want := []string{"/etc/containerd/certs.d", "/run/ecr-node-auth"}; !slices.Equal(hostPaths, want) {
		t.Errorf("hostPath volumes %v, want exactly %v", hostPaths, want)
	}
	tok := projectedToken(t, spec.Volumes)
	if tok.Audience != "sts.amazonaws.com" {
		t.Errorf("projected token audience %q", tok.Audience)
	}
	if tok.ExpirationSeconds == nil || *tok.ExpirationSeconds < 600 || *tok.ExpirationSeconds > 86400 {
		t.Errorf("projected token expirationSeconds %v: want 600..86400", tok.ExpirationSeconds)
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("mount %s: no volume", m.Name)
			continue
		}
		if v.HostPath != nil && v.HostPath.Path != m.MountPath {
			t.Errorf("hostPath %s is mounted at %s: keep the node's path so status and hosts.toml name real paths", v.HostPath.Path, m.MountPath)
		}
		if (v.HostPath == nil) != m.ReadOnly {
			t.Errorf("mount %s readOnly=%v: only the hostPath dirs are writable", m.Name, m.ReadOnly)
		}
	}
}

func projectedToken(t *testing.T, vols []corev1.Volume) *corev1.ServiceAccountTokenProjection {
	t.Helper()
	var found *corev1.ServiceAccountTokenProjection
	for _, v := range vols {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				if found != nil {
					t.Fatal("two projected service-account tokens")
				}
				found = s.ServiceAccountToken
			}
		}
	}
	if found == nil {
		t.Fatal("no projected service-account token volume")
	}
	return found
}

// checkContainerSecurity: uid 0 (root-owned files), no capability, no escalation, not
// privileged, read-only root filesystem.
func checkContainerSecurity(t *testing.T, c corev1.Container, pod *corev1.PodSecurityContext) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("container %s: no securityContext", c.Name)
	}
	uid := sc.RunAsUser
	if uid == nil && pod != nil {
		uid = pod.RunAsUser
	}
	if uid == nil || *uid != 0 {
		t.Errorf("container %s: runAsUser %v, want 0 (it writes root-owned files)", c.Name, uid)
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Errorf("container %s: privileged must be false", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container %s: capabilities %+v, want drop [ALL] and no add", c.Name, sc.Capabilities)
	}
}

// TestConfigAgreesWithMounts parses the ConfigMap's config.yaml with the daemon's own
// strict parser and checks every path it names against the DaemonSet's mounts.
func TestConfigAgreesWithMounts(t *testing.T) {
	_, o := loadBase(t)
	raw, ok := o.cm.Data["config.yaml"]
	if !ok || len(o.cm.Data) != 1 {
		t.Fatalf("ConfigMap data keys %v: want only config.yaml", keys(o.cm.Data))
	}
	cfg, err := config.Parse("configmap.yaml:config.yaml", []byte(raw))
	if err != nil {
		t.Fatalf("the daemon refuses the ConfigMap's config: %v", err)
	}
	if cfg.AWSECR.RoleARN == "" {
		t.Error("awsECR.roleArn: the add-on shape names the role")
	}
	spec := o.ds.Spec.Template.Spec
	c := spec.Containers[0]

	// mountOf returns the volume mounted at the deepest mount path holding p.
	mountOf := func(p string) (corev1.VolumeMount, corev1.Volume, bool) {
		var best corev1.VolumeMount
		for _, m := range c.VolumeMounts {
			if (p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) && len(m.MountPath) > len(best.MountPath) {
				best = m
			}
		}
		for _, v := range spec.Volumes {
			if best.Name != "" && v.Name == best.Name {
				return best, v, true
			}
		}
		return best, corev1.Volume{}, false
	}

	// tokenFile: inside the projected token volume, at its path.
	m, v, ok := mountOf(cfg.Identity.TokenFile)
	if !ok || v.Projected == nil {
		t.Errorf("identity.tokenFile %s is not inside the projected token volume", cfg.Identity.TokenFile)
	} else {
		tok := projectedToken(t, []corev1.Volume{v})
		if want := path.Join(m.MountPath, tok.Path); want != cfg.Identity.TokenFile {
			t.Errorf("identity.tokenFile %s, but the token is at %s", cfg.Identity.TokenFile, want)
		}
		if tok.Audience != cfg.Identity.Audience {
			t.Errorf("identity.audience %q, projected token audience %q", cfg.Identity.Audience, tok.Audience)
		}
	}
	// certsDir: exactly the certs hostPath mount.
	if m, v, ok := mountOf(cfg.Containerd.CertsDir); !ok || v.HostPath == nil || m.MountPath != cfg.Containerd.CertsDir || m.ReadOnly {
		t.Errorf("containerd.certsDir %s is not a writable hostPath mount of its own (mount %+v)", cfg.Containerd.CertsDir, m)
	}
	// socket: directly in the socket dir hostPath mount.
	if m, v, ok := mountOf(cfg.Socket); !ok || v.HostPath == nil || m.MountPath != path.Dir(cfg.Socket) || m.ReadOnly {
		t.Errorf("socket %s is not in a writable hostPath mount of its dir (mount %+v)", cfg.Socket, m)
	}
	for _, e := range c.Env {
		if e.Name == "ECR_NODE_AUTH_SOCKET" && e.Value != cfg.Socket {
			t.Errorf("ECR_NODE_AUTH_SOCKET %s, config socket %s", e.Value, cfg.Socket)
		}
	}
	// The config file itself: the ConfigMap mounted where --config points.
	wantArgs := []string{"--config", configMountPath + "/config.yaml"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %v, want %v (the image's entrypoint is `ecr-node-auth run`)", c.Args, wantArgs)
	}
	if m, v, ok := mountOf(configMountPath + "/config.yaml"); !ok || v.ConfigMap == nil || v.ConfigMap.Name != o.cm.Name || m.MountPath != configMountPath {
		t.Errorf("config: ConfigMap %s is not mounted at %s", o.cm.Name, configMountPath)
	}
	// Metrics/health: the probes use metricsAddress's default; the config must not move it.
	if strings.Contains(raw, "\nmetricsAddress:") {
		t.Error("metricsAddress is set in the ConfigMap: keep the default the probes use, or change the probes with it")
	}
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestSetupContainerdComponent decodes the optional component's init container strictly
// and checks it is as locked down as the main container.
func TestSetupContainerdComponent(t *testing.T) {
	where := "components/setup-containerd/kustomization.yaml"
	var k kustomization
	strict(t, where, readFile(t, where), &k)
	if k.Kind != "Component" || len(k.Patches) != 1 || k.Patches[0].Target.Kind != "DaemonSet" || k.Patches[0].Target.Name != name {
		t.Fatalf("%s: want one DaemonSet patch in a Component, got %+v", where, k)
	}
	js, err := toJSON([]byte(k.Patches[0].Patch))
	if err != nil {
		t.Fatal(err)
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	strictJSON(t, where+" patch", js, &ops)
	var inits []corev1.Container
	vols := map[string]corev1.Volume{}
	for _, op := range ops {
		switch op.Path {
		case "/spec/template/spec/initContainers":
			strictJSON(t, where+" initContainers", op.Value, &inits)
		case "/spec/template/spec/volumes/-":
			var v corev1.Volume
			strictJSON(t, where+" volume", op.Value, &v)
			vols[v.Name] = v
		default:
			t.Errorf("unexpected patch op %s %s", op.Op, op.Path)
		}
	}
	if len(inits) != 1 {
		t.Fatalf("want one init container, got %d", len(inits))
	}
	ic := inits[0]
	wantCmd := []string{"/usr/bin/ecr-node-auth", "setup-containerd", "--config", configMountPath + "/config.yaml", "--containerd-bin", "/host/containerd"}
	if !slices.Equal(ic.Command, wantCmd) {
		t.Errorf("init container command %v, want %v", ic.Command, wantCmd)
	}
	checkContainerSecurity(t, ic, &corev1.PodSecurityContext{})
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range ic.VolumeMounts {
		mounts[m.MountPath] = m
	}
	// /etc/containerd writable (the config and its backup), the node's containerd binary
	// read-only where --containerd-bin points, the config read-only, a scratch /tmp.
	if m, ok := mounts["/etc/containerd"]; !ok || m.ReadOnly || vols[m.Name].HostPath == nil || vols[m.Name].HostPath.Path != "/etc/containerd" {
		t.Errorf("setup-containerd needs hostPath /etc/containerd writable at /etc/containerd (mounts %v)", mounts)
	}
	if m, ok := mounts["/host/containerd"]; !ok || !m.ReadOnly || vols[m.Name].HostPath == nil || vols[m.Name].HostPath.Type == nil || *vols[m.Name].HostPath.Type != corev1.HostPathFile {
		t.Errorf("setup-containerd needs the node's containerd binary read-only at /host/containerd (mounts %v)", mounts)
	}
	if m, ok := mounts[configMountPath]; !ok || !m.ReadOnly || m.Name != "config" {
		t.Errorf("setup-containerd reads the ConfigMap at %s (mounts %v)", configMountPath, mounts)
	}
	if m, ok := mounts["/tmp"]; !ok || vols[m.Name].EmptyDir == nil {
		t.Errorf("setup-containerd gets an emptyDir /tmp on a read-only root (mounts %v)", mounts)
	}
	for name, v := range vols {
		if v.HostPath != nil && v.HostPath.Path != "/etc/containerd" && !strings.HasSuffix(v.HostPath.Path, "/containerd") {
			t.Errorf("component volume %s: unexpected hostPath %s", name, v.HostPath.Path)
		}
	}
}

func strictJSON(t *testing.T, where string, js []byte, v any) {
	t.Helper()
	strictErrs, err := sigsjson.UnmarshalStrict(js, v)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	for _, e := range strictErrs {
		t.Errorf("%s: strict decoding: %v", where, e)
	}
}

// TestKustomizeBuild renders the base and the setup-containerd overlay with
// `kubectl kustomize` (skipped without kubectl) and decodes the output strictly.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not found: the kustomize rendering is not checked")
	}
	for _, dir := range []string{"base", "with-setup-containerd"} {
		out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		o := &objects{}
		for i, d := range documents(t, dir, out) {
			o.add(t, fmt.Sprintf("kustomize %s #%d", dir, i), d)
		}
		o.complete(t)
		for _, m := range o.all {
			if m.GetNamespace() != namespace {
				t.Errorf("%s: %T in namespace %q", dir, m, m.GetNamespace())
			}
		}
		img := o.ds.Spec.Template.Spec.Containers[0].Image
		if img == "ecr-node-auth" || !strings.Contains(img, "/") {
			t.Errorf("%s: image %q not rewritten to a registry", dir, img)
		}
		inits := o.ds.Spec.Template.Spec.InitContainers
		if dir == "with-setup-containerd" {
			if len(inits) != 1 || inits[0].Image != img {
				t.Errorf("%s: init containers %+v", dir, inits)
			}
		} else if len(inits) != 0 {
			t.Errorf("%s: unexpected init containers", dir)
		}
	}
}
