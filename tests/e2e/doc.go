// Package e2e holds the end-to-end tests: a real containerd (Debian's 1.6 and/or v2 from
// `make tools`) pulls private "ECR" images from the fake registry in tests/fakeaws with
// credentials that only the ecr-node-auth daemon, run as a separate process, writes into
// certs.d/<host>/hosts.toml. See README.md in this directory.
package e2e
