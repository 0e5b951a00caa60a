#!/usr/bin/env bash
# `make bench`: the package benchmarks and the daemon benchmarks of tests/bench, printed as
# one table by tests/bench/cmd/benchtable, which exits non-zero when the run fails (and,
# with BENCH_STRICT=1, when a target is missed). Run from the module root.
set -euo pipefail

pkgs=$(go list ./... | grep -v /tests/)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Compile everything first, so no compiler competes with a running benchmark for the CPUs.
go build -o "$tmp/benchtable" ./tests/bench/cmd/benchtable
# shellcheck disable=SC2086
go test -run '^$' -count=1 -vet=off -exec /bin/true $pkgs ./tests/bench/ >/dev/null 2>&1 || true

echo "bench: running the benchmarks (about 75 s)..." >&2
{
	# shellcheck disable=SC2086
	go test -run '^$' -bench . -benchmem -count=1 -vet=off -timeout 3m $pkgs || true
	# Whole daemon processes: a fixed count, not a time budget.
	go test -run '^$' -bench . -skip DaemonSteadyRSS -benchtime=20x -count=1 -vet=off -timeout 3m ./tests/bench/ || true
	# One iteration of this one is a ~30 s soak (many refresh cycles).
	go test -run '^$' -bench DaemonSteadyRSS -benchtime=1x -count=1 -vet=off -timeout 3m ./tests/bench/ || true
} 2>&1 | "$tmp/benchtable"
