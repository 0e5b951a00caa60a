// Package ecrhost recognises Amazon ECR registry hosts in every form the
// established ECR credential tools accept and says which ECR API serves them.
package ecrhost

// Host is a parsed ECR registry host.
type Host struct {
	// Name is the registry host as image references spell it: lower case, no
	// scheme, no path, and no ":443" (the default port is dropped).
	Name      string
	Account   string // 12 digits; empty for ECR Public
	Region    string // e.g. us-east-1; us-east-1 for ECR Public
	Partition string // aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-eusc
	FIPS      bool   // a dkr.ecr-fips host: the FIPS API endpoint must be called
	DualStack bool   // a dkr-ecr.<region>.on.aws or ecr-public.aws.com (IPv6) host
	Public    bool   // public.ecr.aws or ecr-public.aws.com: the ecr-public API
}

// Service identifies one ECR API endpoint: a single GetAuthorizationToken call
// to it serves every Host with the same Service.
type Service struct {
	Partition string
	Region    string
	FIPS      bool
	// DualStack selects the IPv6-capable API endpoint (<svc>.<region>.api.aws):
	// a node that pulls from a dual-stack registry host may have no IPv4 route.
	DualStack bool
	Public    bool
}

// Service returns the ECR API that issues tokens for h.
func (h Host) Service() Service {
	return Service{Partition: h.Partition, Region: h.Region, FIPS: h.FIPS, DualStack: h.DualStack, Public: h.Public}
}
