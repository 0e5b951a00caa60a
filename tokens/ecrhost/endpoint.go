package ecrhost

// Endpoint returns the HTTPS URL of the ECR (or ECR Public) API that issues
// tokens for s, as the AWS SDK resolves it with no endpoint override, or ""
// for a Service with an unknown partition or no region.
func (s Service) Endpoint() string {
	p := partitionByName(s.Partition)
	if p == nil || s.Region == "" {
		return ""
	}
	svc := "ecr"
	if s.Public {
		svc = "ecr-public"
	}
	if s.FIPS {
		svc += "-fips"
	}
	if s.DualStack {
		// The SDK's ecr-public rules keep the "api." prefix for FIPS
		// dual-stack only; no registry host selects that today.
		if s.Public && s.FIPS {
			return "https://api." + svc + "." + s.Region + "." + p.dualStackAPISuffix
		}
		return "https://" + svc + "." + s.Region + "." + p.dualStackAPISuffix
	}
	return "https://api." + svc + "." + s.Region + "." + p.apiSuffix
}

// String names the service for logs and status: "aws/us-east-1",
// "aws-us-gov/us-gov-west-1/fips", "aws/us-east-1/dualstack", "public".
func (s Service) String() string {
	out := s.Partition + "/" + s.Region
	if s.Public {
		out = "public"
	}
	if s.FIPS {
		out += "/fips"
	}
	if s.DualStack {
		out += "/dualstack"
	}
	return out
}
