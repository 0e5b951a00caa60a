package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/ecr-node-auth/ecr-node-auth/daemon/config"
	"github.com/ecr-node-auth/ecr-node-auth/tokens/identity"
)

// trustPolicy is an IAM role trust policy document; the field order is the
// order IAM's console shows.
type trustPolicy struct {
	Version   string           `json:"Version"`
	Statement []trustStatement `json:"Statement"`
}

type trustStatement struct {
	Effect    string                       `json:"Effect"`
	Principal map[string]string            `json:"Principal"`
	Action    string                       `json:"Action"`
	Condition map[string]map[string]string `json:"Condition"`
}

// The regexps are compiled on first use: package init runs in every exec of
// the binary, the kubelet plugin's included.
var (
	accountRE   = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9]{12}$`) })
	dns1123     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`) })
	partitions  = []string{"aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc"}
	saSubPrefix = "system:serviceaccount:"
)

func trustPolicyCmd(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("trust-policy", flag.ContinueOnError)
	flags.SetOutput(stderr)
	cfgPath := flags.String("config", config.DefaultPath, "ecr-node-auth config (token file, audience, roleArn); used when present")
	account := flags.String("account-id", "", "AWS account that owns the role and the OIDC provider (default: the account of awsECR.roleArn)")
	issuer := flags.String("issuer", "", "OIDC issuer URL, https://… (default: the token file's iss claim)")
	namespace := flags.String("namespace", "", "service account namespace (default: from the token file's sub claim)")
	name := flags.String("service-account", "", "service account name (default: from the token file's sub claim)")
	audience := flags.String("audience", "", "token audience (default: identity.audience, "+config.DefaultAudience+")")
	partition := flags.String("partition", "", "AWS partition (default: that of awsECR.roleArn, else aws)")
	explain := flags.Bool("explain", false, "after the policy, print the permissions the role needs and how to create the OIDC provider")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: ecr-node-auth trust-policy [--account-id ID] [--issuer URL] [--namespace NS] [--service-account NAME] [--audience AUD] [--partition P] [--explain] [--config PATH]")
		fmt.Fprintln(stderr, "Every flag is optional when the config gives it: --account-id and --partition default to awsECR.roleArn's,")
		fmt.Fprintln(stderr, "--issuer, --namespace and --service-account to the iss and sub claims of identity.tokenFile, --audience to identity.audience.")
		flags.PrintDefaults()
	}
	if code, ok := parseFlags(flags, args); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ecr-node-auth trust-policy: "+format+"\n", a...)
		return 1
	}
	cfg, err := loadOptionalConfig(flags, *cfgPath)
	if err != nil {
		return fail("%s", singleLine(err.Error()))
	}
	if *audience == "" {
		*audience = cfg.Identity.Audience
	}
	roleAccount, rolePartition := "", cfg.AWSECR.RolePartition()
	if parts := strings.Split(cfg.AWSECR.RoleARN, ":"); len(parts) > 4 {
		roleAccount = parts[4]
	}
	if *account == "" {
		*account = roleAccount
	}
	if *partition == "" {
		*partition = rolePartition
	}
	if *partition == "" {
		*partition = "aws"
	}

	// The token file fills in what the flags leave out (never printed).
	if *issuer == "" || *namespace == "" || *name == "" {
		claims, err := tokenClaims(cfg.Identity.TokenFile)
		if err != nil {
			return fail("--issuer, --namespace and --service-account default to the token file's claims, but %v; pass them as flags", err)
		}
		if *issuer == "" {
			*issuer = claims.Issuer
		}
		ns, sa, ok := splitSubject(claims.Subject)
		if (*namespace == "" || *name == "") && !ok {
			return fail("the token file %s has sub %q, not %s<namespace>:<name>; pass --namespace and --service-account", cfg.Identity.TokenFile, claims.Subject, saSubPrefix)
		}
		if *namespace == "" {
			*namespace = ns
		}
		if *name == "" {
			*name = sa
		}
		if len(claims.Audience) > 0 && !claims.HasAudience(*audience) {
			fmt.Fprintf(stderr, "warning: the token file's aud is %s, not %s: STS will refuse it (InvalidIdentityToken: Incorrect token audience); set the projected token's audience or --audience\n",
				strings.Join(claims.Audience, ","), *audience)
		}
	}

	host, err := validateTrustInputs(*account, *issuer, *namespace, *name, *audience, *partition)
	if err != nil {
		return fail("%v", err)
	}
	pol := trustPolicy{
		Version: "2012-10-17",
		Statement: []trustStatement{{
			Effect:    "Allow",
			Principal: map[string]string{"Federated": fmt.Sprintf("arn:%s:iam::%s:oidc-provider/%s", *partition, *account, host)},
			Action:    "sts:AssumeRoleWithWebIdentity",
			Condition: map[string]map[string]string{"StringEquals": {
				host + ":aud": *audience,
				host + ":sub": saSubPrefix + *namespace + ":" + *name,
			}},
		}},
	}
	out, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	if *explain {
		printTrustExplain(stdout, *partition, *account, host, *audience, *namespace, *name)
		printConfigPermissions(stdout, cfg, *partition)
	}
	return 0
}

// tokenClaims reads the token's claims; an expired token's claims still name
// the issuer and subject.
func tokenClaims(path string) (identity.Claims, error) {
	tok, err := identity.ReadToken(path, time.Now())
	if err == nil {
		return tok.Claims, nil
	}
	var te *identity.TokenError
	if errors.As(err, &te) && errors.Is(err, identity.ErrTokenExpired) {
		return te.Claims, nil
	}
	return identity.Claims{}, err
}

func splitSubject(sub string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(sub, saSubPrefix)
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != ""
}

// validateTrustInputs checks every input and returns the issuer without its
// scheme (the OIDC provider's name in IAM and the condition key prefix).
func validateTrustInputs(account, issuer, namespace, name, audience, partition string) (string, error) {
	if account == "" {
		return "", errors.New("--account-id is required (the 12-digit account that owns the role and the OIDC provider), or set awsECR.roleArn in the config")
	}
	if !accountRE().MatchString(account) {
		return "", fmt.Errorf("--account-id %q: an AWS account ID is exactly 12 digits", account)
	}
	found := false
	for _, p := range partitions {
		found = found || p == partition
	}
	if !found {
		return "", fmt.Errorf("--partition %q: use one of %s", partition, strings.Join(partitions, ", "))
	}
	u, err := url.Parse(issuer)
	switch {
	case issuer == "":
		return "", errors.New("--issuer is required (the cluster's OIDC issuer URL, https://…)")
	case err != nil:
		return "", fmt.Errorf("--issuer %q is not a URL: %v", issuer, errors.Unwrap(err))
	case u.Scheme != "https":
		return "", fmt.Errorf("--issuer %q: IAM OIDC providers need an https:// issuer URL", issuer)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("--issuer %q: want https://host[/path] with no user, query or fragment", issuer)
	}
	if len(namespace) > 63 || !dns1123().MatchString(namespace) {
		return "", fmt.Errorf("--namespace %q is not a valid Kubernetes namespace (lower-case letters, digits and '-', at most 63)", namespace)
	}
	if len(name) > 253 || !subdomainOK(name) {
		return "", fmt.Errorf("--service-account %q is not a valid Kubernetes service account name (lower-case DNS subdomain)", name)
	}
	if audience == "" || strings.ContainsAny(audience, " \t\n\"") {
		return "", fmt.Errorf("--audience %q: want a non-empty audience such as %s", audience, config.DefaultAudience)
	}
	host := strings.TrimSuffix(u.Host+u.EscapedPath(), "/")
	return host, nil
}

func subdomainOK(s string) bool {
	for _, l := range strings.Split(s, ".") {
		if !dns1123().MatchString(l) {
			return false
		}
	}
	return true
}

func printTrustExplain(w io.Writer, partition, account, host, audience, namespace, name string) {
	fmt.Fprintf(w, `
# What the role needs (ecr-node-auth only pulls):
#   the AWS managed policy AmazonEC2ContainerRegistryReadOnly:
#     aws iam attach-role-policy --role-name ROLE --policy-arn arn:%[1]s:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly
#   or, at least, this inline policy (narrow "Resource" of the last statement to your repositories):
#     {"Version": "2012-10-17", "Statement": [
#       {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
#       {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], "Resource": "arn:%[1]s:ecr:*:*:repository/*"}]}
#
# Steps:
#   1. Once per cluster issuer, create the IAM OIDC identity provider (skip if
#      `+"`aws iam list-open-id-connect-providers`"+` already lists arn:%[1]s:iam::%[2]s:oidc-provider/%[3]s):
#        aws iam create-open-id-connect-provider --url https://%[3]s --client-id-list %[4]s
#      The issuer must serve /.well-known/openid-configuration and its JWKS over public https.
#   2. Save the policy above as trust-policy.json and create the role:
#        aws iam create-role --role-name ROLE --assume-role-policy-document file://trust-policy.json
#   3. Attach the permissions above, then set awsECR.roleArn: arn:%[1]s:iam::%[2]s:role/ROLE
#      in /etc/ecr-node-auth/config.yaml.
#   4. Project the service account token of %[5]s/%[6]s with audience %[4]s to identity.tokenFile.
`, partition, account, host, audience, namespace, name)
}

// printConfigPermissions adds what the config's features need beyond
// AmazonEC2ContainerRegistryReadOnly: ECR Public tokens (publicECR) and the
// import a pull-through cache does on an image's first pull (mirrors).
func printConfigPermissions(w io.Writer, cfg *config.Config, partition string) {
	if cfg.PublicECR {
		fmt.Fprint(w, `#
# publicECR: true also needs (AmazonEC2ContainerRegistryReadOnly does not grant it):
#     {"Effect": "Allow", "Action": ["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"], "Resource": "*"}
`)
	}
	if len(cfg.Mirrors) == 0 {
		return
	}
	fmt.Fprint(w, `#
# mirrors: the first pull of an image through a pull-through cache rule imports it
# into the cache, which needs ecr:BatchImportUpstreamImage (and ecr:CreateRepository
# when the repository does not exist yet) on the cache's repositories:
`)
	for _, m := range cfg.Mirrors {
		p := m.ECR.Partition
		if p == "" {
			p = partition
		}
		fmt.Fprintf(w, "#     {\"Effect\": \"Allow\", \"Action\": [\"ecr:BatchImportUpstreamImage\", \"ecr:CreateRepository\"], \"Resource\": \"arn:%s:ecr:%s:%s:repository/%s/*\"}  # %s\n",
			p, m.ECR.Region, m.ECR.Account, m.Prefix, m.Upstream)
	}
}
