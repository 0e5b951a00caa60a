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

.PHONY: all build test test-unit e2e lint demo bench tools clean

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

demo: build
	go run ./tests/fakeaws/cmd/demo

bench: build
	go test -run '^$$' -bench . -benchmem -count=1 ./...

clean:
	rm -rf bin dist
