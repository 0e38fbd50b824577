# meshgate build. Strict: undefined variables are errors, recipes run under
# bash -euo pipefail.
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO         ?= go
BIN        ?= bin/meshgate
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS    := -s -w -X main.version=$(VERSION)
# Debian versions start with a digit: a git describe like 28768f9-dirty
# becomes 0.0.0~28768f9+dirty (sorts before any release).
PKG_VERSION ?= $(shell echo '$(VERSION)' | sed -E 's/^v([0-9])/\1/; s/^([^0-9])/0.0.0~\1/; s/-/+/g')
PKG_ARCH   ?= $(shell $(GO) env GOARCH)
PKG_STAGE  := bin/pkg# deploy/nfpm.yaml reads it from here (nfpm does not expand paths)
PKG_OUT    ?= bin/meshgate_$(PKG_VERSION)_$(PKG_ARCH).deb
FUZZTIME   ?= 20s
BENCHTIME  ?= 1s

.PHONY: build run test unit e2e fuzz bench lint tidy clean package unit-check

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/meshgate

## run: a whole one-node mesh with embedded defaults (Ctrl-C stops it).
run: build
	./$(BIN) dev

## test: vet, then every package (e2e included) under the race detector.
## e2e holds the unit checks (TestUnitVerifyAndSecurity) and the package
## test (TestPackageDpkgLifecycle), each skipped, saying why, where
## systemd-analyze, dpkg or root is missing.
test: build
	$(GO) vet ./...
	MESHGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 30m ./...

## unit-check: systemd-analyze verify is clean and the offline security
## exposure of deploy/meshgate.service is at most 2.0.
unit-check: build
	MESHGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -run 'TestUnitVerifyAndSecurity' ./e2e/

## package: the .deb (nfpm, pinned in go.mod as a tool) in PKG_OUT.
package: build
	rm -rf $(PKG_STAGE) && mkdir -p $(PKG_STAGE)
	cp $(BIN) $(PKG_STAGE)/meshgate
	$(PKG_STAGE)/meshgate docs $(PKG_STAGE)
	gzip -9n $(PKG_STAGE)/man1/*.1
	PKG_VERSION='$(PKG_VERSION)' PKG_ARCH='$(PKG_ARCH)' PKG_STAGE='$(PKG_STAGE)' \
	  $(GO) tool nfpm package --config deploy/nfpm.yaml --packager deb --target $(PKG_OUT)

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: build
	MESHGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -v ./e2e/...

## fuzz: every fuzz target for FUZZTIME each.
fuzz:
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "== $$pkg $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: Go micro-benchmarks, the proxy comparison (direct/meshgate/HAProxy/nginx), then the bridge (direct/local/bridged; root, network namespaces).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./sni/... ./config/... ./pki/... ./cluster/...
	MESHGATE_BIN=$(CURDIR)/$(BIN) $(GO) run ./e2e/cmd/proxybench
	MESHGATE_BRIDGE_BENCH=1 MESHGATE_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -run '^TestBridgeBenchmark$$' -v -timeout 20m ./e2e/ | grep -v '^    {'

lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

tidy:
	cp go.mod go.mod.orig; cp go.sum go.sum.orig
	$(GO) mod tidy
	if ! diff -q go.mod go.mod.orig >/dev/null || ! diff -q go.sum go.sum.orig >/dev/null; then \
	  mv go.mod.orig go.mod; mv go.sum.orig go.sum; echo "go.mod/go.sum not tidy"; exit 1; fi
	rm -f go.mod.orig go.sum.orig

clean:
	rm -rf bin .meshgate
