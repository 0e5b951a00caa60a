// Package bench holds benchmarks of the daemon's core loop run against the real binary
// (built by TestMain) and the in-process fake AWS of tests/fakeaws:
//
//   - BenchmarkStartToFirstHostsToml: process start to a hosts.toml carrying a valid
//     Authorization header (ms/start; target ≤ 500 ms).
//   - BenchmarkRotationPickup: a Kubernetes ..data symlink swap of the token file to the
//     daemon noticing the new token (ms/rotation; target ≤ 100 ms).
//
// `make bench` runs them with the package benchmarks and prints one table through
// cmd/benchtable, which also holds the targets.
package bench
