// Package bench holds benchmarks of the daemon's core loop run against the real binary
// (built by TestMain) and the in-process fake AWS of tests/fakeaws:
//
//   - BenchmarkStartToFirstHostsToml: process start to a hosts.toml carrying a valid
//     Authorization header (ms/start; target ≤ 500 ms).
//   - BenchmarkRotationPickup: a Kubernetes ..data symlink swap of the token file to the
//     daemon noticing the new token (ms/rotation; target ≤ 100 ms).
//   - BenchmarkPluginExec: one exec of `ecr-node-auth kubelet-plugin` against a warm
//     daemon, as a ratio to /bin/true (exec_ratio; target ≤ 1.5), beside a hello-world
//     Go binary's ratio (gohello_ratio, the floor of any Go process), and AWS calls per
//     1,000 plugin execs (target 0).
//     Its log splits the binary's package init by group (AWS SDK, Prometheus, this
//     module, the rest); TestInitCost keeps this module's share near zero.
//   - BenchmarkDaemonSteadyRSS: VmRSS of a daemon after ≥ 200 refreshes of 2 s ECR
//     tokens and 3 s STS credentials for 16 registries in 8 regions while serving socket
//     lookups (rss_mib; target ≤ 20 MiB), its growth from N to 4N refreshes, and the
//     Go runtime's own figures. One iteration is a ~30 s soak: run it with -benchtime=1x.
//   - BenchmarkPulls: AWS calls per 1,000 credential lookups through the socket, in the
//     request forms of the docker helper and the kubelet plugin (node and
//     service-account modes): warm (target 0) and cold, the first pulls of a region the
//     daemon does not serve yet (ecr_calls_per_new_region; target exactly 1, shared by 32
//     concurrent clients).
//
// `make bench` runs them with the package benchmarks and prints one table through
// cmd/benchtable, which also holds the targets.
package bench
