# ecr-node-auth: every target works on a fresh Debian machine with Go 1.26.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN     := bin/ecr-node-auth
TOOLS   := $(CURDIR)/.cache/tools
STATICCHECK_VERSION := v0.8.2
CONTAINERD_V2_VERSION := v2.4.2

.PHONY: all build test test-unit e2e lint demo bench tools clean fleet fuzz

all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ecr-node-auth

# Every test: unit tests with the race detector, then the end-to-end tests
# against a real containerd and registry (they need root and containerd; see
# .ci/run for what they install).
test: build
	go test -race -count=1 ./...

test-unit:
	go test -race -count=1 $$(go list ./... | grep -v /tests/e2e)

e2e: build
	go test -count=1 -v ./tests/e2e/...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt: $$unformatted"; exit 1; fi
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# containerd v2 built from the module proxy, for the e2e (Debian ships 1.6).
tools: $(TOOLS)/containerd
$(TOOLS)/containerd:
	GOBIN=$(TOOLS) go install github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_V2_VERSION)

# 1,000 real node agents on a simulated clock against the fake ECR with its
# GetAuthorizationToken quota; prints the table and fails on a missed target.
# go test ./... runs the same test with 400 nodes.
FLEET_NODES ?= 1000
fleet:
	ECR_NODE_AUTH_FLEET_NODES=$(FLEET_NODES) go test -count=1 -v -run '^TestFleet$$' ./tests/fleet/

# Every fuzz target for FUZZTIME each, one after the other. The corpora are
# kept in <package>/testdata/fuzz/<FuzzName>/ (plain go test replays them);
# minimising a new input is capped so a short run is not spent on it.
FUZZTIME ?= 5s
FUZZ_TARGETS := ./tokens/ecrhost:FuzzParse ./tokens/ecrhost:FuzzImageReference ./daemon/config:FuzzParseConfig \
	./daemon/kubeletplugin:FuzzHandle ./daemon/dockerhelper:FuzzHelper ./daemon/api:FuzzHandler ./cri:FuzzWriterHost
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "== $$fn ($$pkg, $(FUZZTIME))"; \
	  go test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x $$pkg; \
	done

demo: build
	go run ./tests/demo -bin $(CURDIR)/$(BIN) $(DEMO_FLAGS)

bench: build
	tests/bench/run.sh

clean:
	rm -rf bin dist

# ---- packages and image (issue 5) -------------------------------------------
# deb + rpm for amd64 and arm64 with nfpm, an OCI image index with
# go-containerregistry (no Docker engine); everything lands in dist/.
NFPM_VERSION := v2.48.0
ARCHES       := amd64 arm64
DIST         := dist
BUILD_DIR    := $(DIST)/build
# Package version: a release tag vX.Y.Z gives X.Y.Z; else 0.0.0~git<commit>[+dirty].
PKG_VERSION ?= $(shell t=$$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null) && echo "$${t\#v}" || \
	{ printf '0.0.0~git%s' "$(COMMIT)"; git diff --quiet HEAD 2>/dev/null || printf '+dirty'; echo; })
HOST_ARCH   := $(shell go env GOARCH 2>/dev/null || echo amd64)

.PHONY: package image package-check binaries

# Static binaries for every architecture in $(BUILD_DIR)/<arch>/ecr-node-auth.
binaries:
	set -e; for a in $(ARCHES); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$a go build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD_DIR)/$$a/ecr-node-auth ./cmd/ecr-node-auth; \
	done

# The example kubelet CredentialProviderConfig is the binary's own output; a binary
# without print-kubelet-config yet ships PrintConfig's golden file (the same text).
package: binaries
	set -e; out=$(BUILD_DIR)/kubelet-credential-provider-config.yaml; \
	if ! $(BUILD_DIR)/$(HOST_ARCH)/ecr-node-auth print-kubelet-config > $$out.tmp 2>/dev/null; then \
	  cp daemon/kubeletplugin/testdata/kubelet-config.golden $$out.tmp; fi; mv $$out.tmp $$out
	set -e; { echo 'ecr-node-auth ($(PKG_VERSION)-1) unstable; urgency=medium'; echo; \
	  echo '  * Built from commit $(COMMIT); see the project history for changes.'; echo; \
	  echo ' -- ecr-node-auth maintainers <ecr-node-auth@users.noreply.github.com>  '"$$(LC_ALL=C date -R -d @$$(git log -1 --format=%ct 2>/dev/null || date +%s))"; \
	} | gzip -9n > $(BUILD_DIR)/changelog.Debian.gz
	rm -f $(DIST)/*.deb $(DIST)/*.rpm
	set -e; for a in $(ARCHES); do for p in deb rpm; do \
	  ARCH=$$a PKG_VERSION='$(PKG_VERSION)' BUILD_DIR=$(BUILD_DIR) \
	    go run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) package -f nfpm.yaml -p $$p -t $(DIST)/; \
	done; done
	ls -l $(DIST)/*.deb $(DIST)/*.rpm

# Checks the packages (lintian, rpm -qlp --scripts, unit verify in an unpacked root,
# maintainer scripts without systemd). Installs its tools with apt-get when missing.
package-check:
	bash packaging/ci-check.sh

# OCI image index (linux/amd64 + linux/arm64) in $(DIST)/image (an OCI layout):
# scratch + the static binary + Debian's CA bundle.
image: binaries
	go run ./packaging/image -build-dir $(BUILD_DIR) -arches '$(ARCHES)' \
	  -ca /etc/ssl/certs/ca-certificates.crt -version '$(VERSION)' -commit '$(COMMIT)' -out $(DIST)/image

# ---- faults and resilience (issue 6) ----------------------------------------
# The fault matrix: the real daemon against the fake AWS, one fault per row (about 5 min,
# the faults in parallel). FAULTS=name,name runs some only.
FAULTS_LOG ?= $(CURDIR)/.cache/faults.log
.PHONY: faults
faults: build
	@mkdir -p $(dir $(FAULTS_LOG))
	@ECR_NODE_AUTH_FAULTS=1 ECR_NODE_AUTH_E2E_REQUIRED=$${ECR_NODE_AUTH_E2E_REQUIRED:-0} go test -count=1 -v -parallel 64 -timeout 20m ./tests/faults/ > $(FAULTS_LOG) 2>&1; rc=$$?; \
	sed -n '/^ecr-node-auth fault matrix/,/^faults secret hygiene/p' $(FAULTS_LOG); \
	if [ $$rc != 0 ]; then grep -E -- '--- (FAIL|SKIP)|_test.go:[0-9]+:' $(FAULTS_LOG) | head -60; echo "faults: FAILED (full log: $(FAULTS_LOG))"; fi; exit $$rc
