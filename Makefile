# Portcullis: `make run` serves on :4000 with the embedded mock config;
# `make test` runs the whole suite (unit, fuzz smoke, end-to-end with the
# official SDKs). Both install what they need.

GO       ?= go
BIN      := bin/portcullis
PORT     ?= 4000
# The default config is for development (its master key is public): loopback only.
HOST     ?= 127.0.0.1
CONFIG   ?=
# An execution count, not a duration: a duration races the fuzz coordinator's
# deadline on a loaded machine ("context deadline exceeded", golang/go#75804).
FUZZTIME ?= 30000x
E2E_DIR  := engine/e2e/node

# Fuzz targets run briefly by `make test`: package path and target name.
FUZZ_TARGETS := \
	./engine/sse:FuzzReader \
	./engine/provider:FuzzStreamResponse \
	./engine/server:FuzzParse \
	./engine/server:FuzzMembers \
	./engine/server:FuzzHandle \
	./engine/translate:FuzzDecodeChat \
	./engine/translate:FuzzAnthropicToChat \
	./engine/translate:FuzzAnthropicStream \
	./engine/config:FuzzParse

# Guest toolchains for the Wasm plugin SDKs (clang + wasi-libc, Debian's
# rustc for wasm, the AssemblyScript compiler): `make toolchains`.
include sdk/toolchains.mk

# The first-party plugins, built into plugins/<name>/<name>.wasm.
PLUGINS := pii-redact router-go router-rust prompt-guard

.PHONY: all build run test unit race fuzz e2e e2e-deps bench bench-full vet clean plugins sdk-test

all: build

build:
	$(GO) build -o $(BIN) ./cmd/portcullis

run: build
	./$(BIN) --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

test: toolchains vet unit sdk-test race fuzz e2e

# Every plugin, with its SDK's toolchain.
plugins: toolchains
	@set -e; for p in $(PLUGINS); do echo "plugin $$p"; sh plugins/$$p/build.sh; done

# The guest SDKs' own tests (separate Go module, Rust, AssemblyScript).
sdk-test: toolchains
	cd sdk/go && $(GO) vet ./... && $(GO) test -count=1 ./...
	cd plugins/router-go && $(GO) vet ./...
	$(MAKE) --no-print-directory sdk-rust-test sdk-assemblyscript-test

vet:
	$(GO) vet ./...

# plugins/ builds every plugin and runs it in the real host; with the
# toolchains installed above, a missing one is a failure, not a skip.
unit:
	PORTCULLIS_REQUIRE_TOOLCHAINS=1 $(GO) test -count=1 ./...

# The packages with concurrency on the request path, under the race detector.
race:
	$(GO) test -count=1 -race ./engine/server/... ./engine/gateway/... ./engine/provider/... ./engine/route/...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

e2e-deps:
	cd $(E2E_DIR) && npm ci --no-audit --no-fund --loglevel=error

e2e: build e2e-deps plugins
	$(GO) test -count=1 -tags e2e ./engine/e2e/...

# Load benchmark (bench/README.md): direct, bare hop and Portcullis in one
# run; prints the table, rewrites bench/RESULTS.md and flags regressions
# against it (BENCHFLAGS=-strict makes a regression fail the target).
bench:
	$(GO) build -o bench/out/portcullis ./cmd/portcullis
	$(GO) build -o bench/out/portcullis-bench ./bench/cmd/portcullis-bench
	bench/out/portcullis-bench run -mode short $(BENCHFLAGS)

# The long run, then the engine's Go micro-benchmarks.
bench-full:
	$(GO) build -o bench/out/portcullis ./cmd/portcullis
	$(GO) build -o bench/out/portcullis-bench ./bench/cmd/portcullis-bench
	bench/out/portcullis-bench run -mode full $(BENCHFLAGS)
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=2000x ./engine/...

clean:
	rm -rf bin
