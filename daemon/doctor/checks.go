package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ecr-node-auth/ecr-node-auth/cri"
	"github.com/ecr-node-auth/ecr-node-auth/cri/containerdconfig"
	"github.com/ecr-node-auth/ecr-node-auth/daemon"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/api"
	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/tokens"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/ecrhost"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/refresh"
)

// maxECRTokenLifetime is how long an ECR token lives: a hosts.toml not
// rewritten for longer holds an expired one.
const maxECRTokenLifetime = 12 * time.Hour

type run struct {
	o       Options
	cfg     *config.Config
	results []Result
	tokenOK bool // the token file is usable (or not used)
	id      *daemon.AWSIdentity
	credsOK bool // AWS credentials were had
}

// 1. config
func (r *run) checkConfig() {
	cfg, err := config.Load(r.o.ConfigPath)
	if err != nil {
		fix := "fix each key named above in " + r.o.ConfigPath + " (schema: README, Configuration), then run doctor again"
		if errors.Is(err, config.ErrNotFound) {
			fix = "create " + r.o.ConfigPath + " (the packages install one) or pass --config PATH"
		}
		r.fail("config", err.Error(), fix)
		return
	}
	r.cfg = cfg
	who := "the default AWS credential chain"
	if cfg.AWSECR.RoleARN != "" {
		who = "web identity for " + cfg.AWSECR.RoleARN
	}
	region := "STS region unset"
	if cfg.STSRegion != "" {
		region = "STS region " + cfg.STSRegion + " (from " + cfg.STSRegionFrom + ")"
	}
	r.ok("config", fmt.Sprintf("%s: %s, %s, %s", cfg.Path, plural(len(cfg.Registries), "registry", "registries"), who, region))
}

// 2. token file
func (r *run) checkToken() {
	const name = "token file"
	cfg := r.cfg
	if cfg.AWSECR.RoleARN == "" {
		r.tokenOK = true
		r.skip(name, "no awsECR.roleArn: the default AWS credential chain is used, no token file")
		return
	}
	path, want := cfg.Identity.TokenFile, cfg.Identity.Audience
	now := r.o.Now()
	tok, err := identity.ReadToken(path, now)
	var te *identity.TokenError
	if errors.As(err, &te) {
		switch te.Kind {
		case identity.ErrTokenMissing:
			what := "cannot be read"
			switch {
			case errors.Is(te.Err, fs.ErrNotExist):
				what = "does not exist"
			case errors.Is(te.Err, fs.ErrPermission):
				what = "is not readable (permission denied)"
			}
			r.fail(name, path+" "+what,
				"mount the projected service-account token volume at "+path+" (identity.tokenFile), or set identity.tokenFile to where it is; it must be readable by the daemon")
		case identity.ErrTokenEmpty:
			r.fail(name, path+" is empty", "wait a few seconds for the kubelet to write it; if it stays empty, check the projected service-account token volume")
		case identity.ErrTokenMalformed:
			r.fail(name, te.Detail, "only the kubelet's projected volume may write "+path+": it must hold exactly one JWT")
		case identity.ErrTokenExpired:
			r.fail(name, fmt.Sprintf("%s: token expired at %s (%s ago; %s)", path, te.Claims.ExpiresAt.UTC().Format(time.RFC3339), short(now.Sub(te.Claims.ExpiresAt)), te.Claims),
				"the kubelet has not rotated the token: check that the kubelet runs and reaches the API server (it refreshes projected tokens at 80% of their lifetime) and that the node's clock is right")
		default:
			r.fail(name, te.Detail, "see above")
		}
		return
	}
	if err != nil {
		r.fail(name, err.Error(), "make "+path+" readable by the daemon")
		return
	}
	c := tok.Claims
	if !c.HasAudience(want) {
		found := strings.Join(c.Audience, ",")
		fix := fmt.Sprintf("make them match: set the projected token's audience to %q (serviceAccountToken.audience in the pod's volume)", want)
		if len(c.Audience) > 0 {
			fix += fmt.Sprintf(", or set identity.audience: %q if the IAM OIDC provider lists that client ID", c.Audience[0])
		}
		if found == "" {
			found = "<none>"
		}
		r.fail(name, fmt.Sprintf("%s: wrong audience: the token's aud is %s, the configured identity.audience is %q (iss=%s sub=%s); STS will reject it",
			path, found, want, orNone(c.Issuer), orNone(c.Subject)), fix)
		return
	}
	r.tokenOK = true
	exp := "no expiry"
	if !c.ExpiresAt.IsZero() {
		exp = "expires in " + short(c.ExpiresAt.Sub(now))
	}
	r.ok(name, fmt.Sprintf("%s: a JWT, %s, %s", path, c, exp))
}

// 3. STS assume (web identity) or the default chain
func (r *run) checkIdentity(ctx context.Context) {
	const name = "aws identity"
	cfg := r.cfg
	id, err := daemon.NewAWSIdentity(ctx, cfg, nil)
	if err != nil {
		r.fail(name, "loading the AWS SDK configuration: "+err.Error(), "fix the AWS setting named above (AWS_REGION, AWS_PROFILE, AWS_CONFIG_FILE, ...)")
		return
	}
	r.id = id
	cctx, cancel := r.bounded(ctx)
	defer cancel()
	if id.Web == nil {
		creds, err := id.Source.Retrieve(cctx)
		if err != nil {
			r.fail(name, "the default AWS credential chain found no credentials: "+err.Error(),
				"give the daemon AWS credentials (an EC2 instance profile, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment, or a shared credentials file), or set awsECR.roleArn to use the projected service-account token")
			return
		}
		r.credsOK = true
		r.ok(name, "default AWS credential chain: credentials from "+orNone(creds.Source)+expiry(creds.CanExpire, creds.Expires, r.o.Now()))
		return
	}
	role := cfg.AWSECR.RoleARN
	if id.STSEndpointErr != nil {
		r.fail(name, id.STSEndpointErr.Error(), "set awsECR.region (or AWS_REGION) to the node's region")
		return
	}
	if !r.tokenOK {
		r.skip(name, "STS not called: the token file is unusable (see above)")
		return
	}
	creds, err := id.Web.Retrieve(cctx)
	if err != nil {
		r.fail(name, fmt.Sprintf("AssumeRoleWithWebIdentity for %s at %s failed: %v", role, id.STSEndpoint, err), stsFix(err, cfg, id.STSEndpoint))
		return
	}
	r.credsOK = true
	r.ok(name, fmt.Sprintf("assumed %s with web identity at %s%s", role, id.STSEndpoint, expiry(creds.CanExpire, creds.Expires, r.o.Now())))
}

func stsFix(err error, cfg *config.Config, endpoint string) string {
	code, class := errorCode(err)
	switch {
	case code == "AccessDenied":
		return "let the role trust this token: `ecr-node-auth trust-policy --account-id ID` prints the trust policy to set on " + cfg.AWSECR.RoleARN
	case code == "InvalidIdentityToken" && strings.Contains(err.Error(), "audience"):
		return fmt.Sprintf("make the token's audience (identity.audience = %q) one of the IAM OIDC provider's client IDs", cfg.Identity.Audience)
	case code == "InvalidIdentityToken", code == "IDPRejectedClaim":
		return "register the token's issuer as an IAM OIDC identity provider in the role's account (check its URL, thumbprint and client IDs)"
	case code == "ExpiredToken", code == "ExpiredTokenException":
		return "the kubelet has not rotated the token: check the kubelet and the node's clock"
	case class == refresh.Throttled:
		return "STS throttles this account: retry later"
	case code == "":
		return "check that the node reaches " + endpoint + " (network, proxy, VPC endpoint; AWS_ENDPOINT_URL_STS overrides it)"
	}
	return "see the AWS error above"
}

// 4. ECR GetAuthorizationToken per service (partition, region, FIPS, ...)
func (r *run) checkECR(ctx context.Context) {
	var order []ecrhost.Service
	hosts := map[ecrhost.Service][]string{}
	for _, reg := range r.cfg.Registries {
		s := reg.Host.Service()
		if _, ok := hosts[s]; !ok {
			order = append(order, s)
		}
		hosts[s] = append(hosts[s], reg.Host.Name)
	}
	if len(order) == 0 {
		r.skip("ecr", "no registries configured: the daemon is idle")
		return
	}
	var newECR func(ecrhost.Service) (tokens.ECRAPI, error)
	if r.id != nil {
		newECR = tokens.NewECRFactory(r.id.ECRConfig())
	}
	for _, s := range order {
		name := "ecr " + s.Region
		if s.FIPS {
			name += " (fips)"
		}
		for_ := strings.Join(hosts[s], ", ")
		// No ECR Public service here: the config refuses it under registries.
		if !r.credsOK {
			r.skip(name, "no AWS credentials (see above)")
			continue
		}
		c, err := newECR(s)
		if err != nil {
			r.fail(name, "cannot create the ECR client: "+err.Error(), "fix the registry host "+for_)
			continue
		}
		ep, err := tokens.Endpoint(ctx, c)
		if err != nil {
			r.fail(name, "cannot resolve the ECR API endpoint: "+err.Error(), "check AWS_ENDPOINT_URL_ECR and the registry host "+for_)
			continue
		}
		cctx, cancel := r.bounded(ctx)
		cred, err := tokens.FetchCredential(cctx, c, r.o.Now)
		cancel()
		if err != nil {
			r.fail(name, fmt.Sprintf("GetAuthorizationToken at %s (for %s) failed: %v", ep, for_, err), ecrFix(err, r.cfg, ep, s.Region))
			continue
		}
		r.ok(name, fmt.Sprintf("GetAuthorizationToken at %s: a token for %s, valid %s", ep, for_, short(cred.ExpiresAt.Sub(r.o.Now()))))
	}
}

func ecrFix(err error, cfg *config.Config, endpoint, region string) string {
	code, class := errorCode(err)
	who := "the node's AWS identity"
	if cfg.AWSECR.RoleARN != "" {
		who = cfg.AWSECR.RoleARN
	}
	switch {
	case strings.HasPrefix(code, "AccessDenied"):
		return "allow ecr:GetAuthorizationToken to " + who + " (attach the AmazonEC2ContainerRegistryReadOnly policy)"
	case code == "UnrecognizedClientException", code == "InvalidSignatureException", code == "ExpiredTokenException", code == "ExpiredToken":
		return "ECR rejected the credentials: check the identity line above and the node's clock"
	case class == refresh.Throttled:
		return "ECR throttles this account: retry later"
	case code == "":
		return "check that the node reaches " + endpoint + " (network, proxy, VPC endpoint com.amazonaws." + region + ".ecr.api; AWS_ENDPOINT_URL_ECR overrides it)"
	}
	return "see the AWS error above"
}

func errorCode(err error) (string, refresh.Class) {
	c := refresh.Classify(err)
	return c.Code, c.Class
}

// 5a. certs dir writable
func (r *run) checkCertsDir() {
	const name = "certs dir"
	dir := r.cfg.Containerd.CertsDir
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.fail(name, dir+" does not exist", "create it: `mkdir -p "+dir+"` (the deb and rpm packages create /etc/containerd/certs.d); containerd's config_path must name it")
		return
	case errors.Is(err, syscall.ENOTDIR) || (err == nil && !st.IsDir()):
		r.fail(name, dir+" is not a directory", "remove what is at "+dir+" and create a directory there (`mkdir -p "+dir+"`), or set containerd.certsDir to a directory")
		return
	case err != nil:
		r.fail(name, "cannot stat "+dir+": "+err.Error(), "make "+dir+" reachable by the daemon")
		return
	}
	f, err := os.CreateTemp(dir, ".ecr-node-auth-doctor-*")
	if err != nil {
		var fix string
		switch {
		case errors.Is(err, syscall.EROFS):
			fix = "mount " + dir + " read-write for the daemon (it is on a read-only filesystem; under systemd add ReadWritePaths=" + dir + " in a drop-in)"
		default:
			fix = "make " + dir + " writable by the daemon: check its mode and owner, and `lsattr -d " + dir + "` for the immutable flag (`chattr -i " + dir + "`)"
		}
		r.fail(name, dir+" is not writable: "+unwrapPath(err), fix)
		return
	}
	f.Close()
	os.Remove(f.Name())
	r.ok(name, dir+" is writable")
}

// 5b. the daemon's hosts.toml files are present, marked, parse and are current
func (r *run) checkHostsFiles() {
	w := cri.NewWriter(r.cfg.Containerd.CertsDir, nil)
	now := r.o.Now()
	for _, reg := range r.cfg.Registries {
		host := reg.Host.Name
		name := "hosts.toml " + host
		path := w.Path(host)
		st, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			r.fail(name, path+" is missing: containerd sends no credentials to "+host,
				"start the daemon (`systemctl start ecr-node-auth`); if it runs, `ecr-node-auth status` says why it has no token")
			continue
		}
		if err != nil {
			r.fail(name, "cannot stat "+path+": "+unwrapPath(err), "make "+path+" readable by root")
			continue
		}
		if !st.Mode().IsRegular() {
			r.fail(name, path+" is not a regular file (a symlink?): the daemon leaves it alone",
				"remove it (`rm "+path+"`) so the daemon writes its own")
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			r.fail(name, "cannot read "+path+": "+unwrapPath(err), "make "+path+" readable by root")
			continue
		}
		first, _, _ := strings.Cut(string(data), "\n")
		if strings.TrimSuffix(first, "\r") != cri.Marker {
			r.fail(name, path+" has no ecr-node-auth marker line: the daemon never overwrites it, so containerd does not get the daemon's token for "+host,
				"move it away (`mv "+path+" "+path+".bak`) so the daemon writes its own; keep any settings you need in the registry's endpoint/ca")
			continue
		}
		want := cri.HostConfig{Host: host, Endpoint: reg.Endpoint}.URL()
		if problem := hostsProblem(data, want); problem != "" {
			r.fail(name, path+": "+problem, "the daemon rewrites it with its next token: reload it (`systemctl reload ecr-node-auth`) and see `ecr-node-auth status`")
			continue
		}
		age := now.Sub(st.ModTime())
		if age > maxECRTokenLifetime {
			r.fail(name, fmt.Sprintf("%s was last written %s ago, longer than an ECR token lives (12h): its token has expired", path, short(age)),
				"the daemon is not refreshing: check `ecr-node-auth status` and `journalctl -u ecr-node-auth`")
			continue
		}
		if st.Mode().Perm() != 0o600 {
			r.warn(name, fmt.Sprintf("%s has mode %#o, not 0600: it holds a credential", path, st.Mode().Perm()), "chmod 0600 "+path)
			continue
		}
		r.ok(name, fmt.Sprintf("%s: managed, server %s, Authorization header present (not shown), written %s ago", path, want, short(age)))
	}
}

// hostsProblem parses a hosts.toml and says what containerd would miss ("" = fine).
func hostsProblem(data []byte, wantURL string) string {
	var f struct {
		Server string `toml:"server"`
		Host   map[string]struct {
			Header map[string][]string `toml:"header"`
		} `toml:"host"`
	}
	if err := toml.Unmarshal(data, &f); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, _ := de.Position()
			return fmt.Sprintf("not valid TOML at line %d: containerd ignores it", row)
		}
		return "not valid TOML: containerd ignores it"
	}
	if f.Server != wantURL {
		return fmt.Sprintf("server = %q, the config wants %q", f.Server, wantURL)
	}
	h, ok := f.Host[wantURL]
	if !ok {
		return fmt.Sprintf("no [host.%q] table (containerd 1.6 ignores a file without one)", wantURL)
	}
	auth := h.Header["Authorization"]
	if len(auth) == 0 || !strings.HasPrefix(auth[0], "Basic ") {
		return "no Authorization: Basic header: containerd sends no credentials"
	}
	return ""
}

// 5c. the daemon, when its socket answers
func (r *run) checkDaemon(ctx context.Context) {
	const name = "daemon"
	sock, from := api.ResolveSocket(r.o.Socket, r.o.ConfigPath)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := api.NewClient(sock).Status(cctx)
	if err != nil {
		why := ""
		if !errors.Is(err, api.ErrDaemonUnreachable) || strings.Contains(err.Error(), "permission denied") {
			why = ": " + oneLine(err.Error())
		}
		r.warn(name, fmt.Sprintf("no daemon answers at %s (socket from %s)%s; hosts.toml files are not refreshed", sock, from, why),
			"start it (`systemctl start ecr-node-auth`), or pass --socket PATH")
		return
	}
	var errs []string
	if st.Identity.LastError != "" {
		errs = append(errs, "identity: "+st.Identity.LastError)
	}
	for _, reg := range st.Registries {
		switch {
		case reg.LastError != "" && !reg.Valid:
			errs = append(errs, reg.Host+": "+reg.LastError)
		case strings.HasPrefix(reg.FileState, "error"), reg.FileState == "unmanaged":
			errs = append(errs, reg.Host+": hosts.toml "+reg.FileState)
		}
	}
	if !st.Ready || len(errs) > 0 {
		r.fail(name, fmt.Sprintf("daemon %s at %s: %s; not ready: %s", st.Version, sock, orNone(st.State), orNone(strings.Join(errs, "; "))),
			"the checks above name the cause; see `ecr-node-auth status` and `journalctl -u ecr-node-auth`")
		return
	}
	r.ok(name, fmt.Sprintf("daemon %s at %s: %s", st.Version, sock, orNone(st.State)))
}

// 6. containerd's config reads the certs dir
func (r *run) checkContainerdConfig() {
	const name = "containerd config"
	path := r.cfg.Containerd.ConfigFile
	rep, err := containerdconfig.Check(path, r.cfg.Containerd.CertsDir)
	if err != nil {
		r.fail(name, err.Error(), "make "+path+" readable by root, or set containerd.configFile to containerd's config")
		return
	}
	if len(rep.Problems) == 0 {
		r.ok(name, fmt.Sprintf("%s (version %d): %s.config_path = %q reads the certs dir %s",
			path, rep.Version, rep.Table, strings.Join(rep.ConfigPaths, ":"), r.cfg.Containerd.CertsDir))
		return
	}
	for _, p := range rep.Problems {
		fix := r.setupCommand(p.Fix)
		if p.Severity == containerdconfig.Error {
			r.fail(name, p.Message, fix)
		} else {
			r.warn(name, p.Message, fix)
		}
	}
}

// setupCommand makes each `ecr-node-auth setup-containerd` in fix read the
// config doctor was given: without it setup-containerd would take the certs
// dir and containerd config of the default file.
func (r *run) setupCommand(fix string) string {
	if r.o.ConfigPath == "" || filepath.Clean(r.o.ConfigPath) == config.DefaultPath {
		return fix
	}
	return strings.ReplaceAll(fix, "`ecr-node-auth setup-containerd`",
		"`ecr-node-auth setup-containerd --config "+shellQuote(r.o.ConfigPath)+"`")
}

// 7. the CRI socket, and 8. a pull with no credentials
func (r *run) checkCRI(ctx context.Context) {
	const name = "cri"
	addr := r.o.CRISocket
	from := "--cri-socket"
	if addr == "" {
		from = "[grpc] address of " + r.cfg.Containerd.ConfigFile
		a, err := containerdconfig.GRPCAddress(r.cfg.Containerd.ConfigFile)
		if err != nil {
			a = containerdconfig.DefaultGRPCAddress
			from = "default; " + oneLine(err.Error())
		}
		addr = a
	}
	where := addr + " (" + from + ")"
	startFix := "start containerd (`systemctl start containerd`), or pass --cri-socket PATH if its socket is elsewhere"
	if _, err := os.Stat(addr); err != nil {
		r.fail(name, "containerd's socket "+where+": "+unwrapPath(err), startFix)
		r.skipPull()
		return
	}
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.fail(name, "containerd's socket "+where+": "+err.Error(), startFix)
		r.skipPull()
		return
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	cctx, cancel := r.bounded(ctx)
	defer cancel()
	v, err := rt.Version(cctx, &runtimeapi.VersionRequest{})
	if err != nil {
		fix := startFix
		if grpcstatus.Code(err) == codes.Unimplemented {
			fix = "containerd runs without its CRI plugin: remove \"cri\" from disabled_plugins in " + r.cfg.Containerd.ConfigFile +
				", see `journalctl -u containerd` for why it did not load (e.g. mirrors set together with config_path), then restart containerd"
		}
		r.fail(name, "CRI Version at "+where+" failed: "+grpcstatus.Convert(err).Message(), fix)
		r.skipPull()
		return
	}
	st, err := rt.Status(cctx, &runtimeapi.StatusRequest{})
	if err != nil {
		r.fail(name, "CRI Status at "+where+" failed: "+grpcstatus.Convert(err).Message(), "see `journalctl -u containerd`")
		r.skipPull()
		return
	}
	desc := fmt.Sprintf("%s: %s %s (CRI %s)", addr, v.GetRuntimeName(), v.GetRuntimeVersion(), v.GetRuntimeApiVersion())
	var notReady, fixes []string
	for _, c := range st.GetStatus().GetConditions() {
		if c.GetStatus() {
			continue
		}
		switch c.GetType() {
		case runtimeapi.RuntimeReady:
			r.fail(name, desc+": runtime not ready: "+c.GetReason()+" "+c.GetMessage(), "see `journalctl -u containerd`")
			r.skipPull()
			return
		case runtimeapi.NetworkReady:
			fixes = append(fixes, "pods need a CNI network config (image pulls work without one)")
		default:
			fixes = append(fixes, "see containerd's log for "+c.GetType())
		}
		notReady = append(notReady, c.GetType()+": "+c.GetReason()+" "+c.GetMessage())
	}
	if len(notReady) > 0 {
		r.warn(name, desc+": runtime ready; "+strings.Join(notReady, "; "), strings.Join(fixes, "; "))
	} else {
		r.ok(name, desc+": runtime ready")
	}
	if r.o.PullImage != "" {
		r.pull(ctx, runtimeapi.NewImageServiceClient(conn))
	}
}

func (r *run) skipPull() {
	if r.o.PullImage != "" {
		r.skip("pull "+r.o.PullImage, "no CRI (see above)")
	}
}

// containsAny reports whether s holds one of subs (containerd's pull errors
// differ between 1.6 and 2.x only in these phrases).
func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func (r *run) pull(ctx context.Context, images runtimeapi.ImageServiceClient) {
	ref := r.o.PullImage
	name := "pull " + ref
	cctx, cancel := context.WithTimeout(ctx, 4*r.o.Timeout)
	defer cancel()
	start := time.Now()
	// No Auth in the request: the kubelet sends none for ECR either, so a
	// success proves containerd applied hosts.toml.
	resp, err := images.PullImage(cctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err == nil {
		r.ok(name, fmt.Sprintf("pulled through CRI with no credentials in the request in %s: %s", time.Since(start).Round(time.Millisecond), resp.GetImageRef()))
		return
	}
	msg := grpcstatus.Convert(err).Message()
	certs := r.cfg.Containerd.CertsDir
	var detail, fix string
	switch {
	case containsAny(msg, "401 Unauthorized", "authorization failed", "no basic auth credentials"):
		detail = "credentials not applied: the registry refused a pull without valid credentials: " + msg
		fix = "containerd did not send the hosts.toml credentials: its config_path must include " + certs +
			" (`ecr-node-auth setup-containerd`, then restart containerd), " + filepath.Join(certs, "<host>", "hosts.toml") +
			" must be current (lines above), and the image's registry must be in ecr-node-auth's registries"
		fix = r.setupCommand(fix)
	case containsAny(msg, "403 Forbidden", "denied: "):
		detail = "access denied to the repository: " + msg
		fix = "allow ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the repository to the node's identity (AmazonEC2ContainerRegistryReadOnly, and the repository policy)"
	case containsAny(msg, "x509", "certificate"):
		detail = "TLS: " + msg
		fix = "containerd does not trust the registry's certificate: set the registry's ca in ecr-node-auth's config"
	case strings.Contains(strings.ToLower(msg), "not found"):
		detail = "image not found: " + msg
		fix = "check that the repository and tag exist"
	case errors.Is(cctx.Err(), context.DeadlineExceeded):
		detail = fmt.Sprintf("no answer within %s: %s", 4*r.o.Timeout, msg)
		fix = "check that the node reaches the registry; `journalctl -u containerd` shows where the pull stalls"
	default:
		detail = msg
		fix = "see the error; `journalctl -u containerd` has more"
	}
	r.fail(name, detail, fix)
}

func expiry(can bool, t, now time.Time) string {
	if !can || t.IsZero() {
		return ""
	}
	return "; credentials expire in " + short(t.Sub(now))
}

func unwrapPath(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// short renders a duration to the second ("5h2m", "59m59s").
func short(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// plural is "1 <one>" or "<n> <many>".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
