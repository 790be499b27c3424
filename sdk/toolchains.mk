# Guest toolchains for the plugin SDKs (sdk/) and the first-party plugins (plugins/).
# Included from the top Makefile:   include sdk/toolchains.mk
#
#   make toolchains            install what all four SDKs need (Debian packages, the npm
#                              AssemblyScript compiler); fast and silent when already installed
#   make sdk-rust              build sdk/rust's rlib (sdk/rust/target/, for plugins outside this repo)
#   make sdk-assemblyscript    install the AssemblyScript compiler and compile-check the SDK
#   make plugin-router-rust    plugins/router-rust/router-rust.wasm
#   make plugin-prompt-guard   plugins/prompt-guard/prompt-guard.wasm
#   make sdk-rust-test sdk-assemblyscript-test plugin-router-rust-test plugin-prompt-guard-test
#                              SDK unit tests, and each plugin's golden cases on node (the
#                              gateway's Go test runs the same cases in the real host)
#
# Installing needs root (CI runs as root); a non-root run fails with the list of missing packages.

# Where this fragment lives (sdk/), whatever directory make runs from.
GW_SDK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
GW_PLUGINS_DIR := $(GW_SDK_DIR)/../plugins

# Debian's rustc 1.63 (rustup's toolchain, first in PATH, has no wasm target).
RUSTC ?= /usr/bin/rustc
NPM ?= npm

# Debian 12 packages per SDK:
#   C:     clang lld wasi-libc libclang-rt-dev-wasm32
#   Rust:  rustc libstd-rust-dev-wasm32 lld (rustc links wasm with rust-lld, a link to lld-14)
#   tools: wabt (wasm-objdump, wasm2wat: inspecting modules)
# Go needs nothing beyond the Go toolchain; AssemblyScript needs node >= 20 and npm.
GW_DEB_PACKAGES ?= clang lld wasi-libc libclang-rt-dev-wasm32 rustc libstd-rust-dev-wasm32 wabt

GW_AS_DIR := $(GW_SDK_DIR)/assemblyscript
GW_AS_STAMP := $(GW_AS_DIR)/node_modules/.package-lock.json

.PHONY: toolchains toolchains-deb sdk-rust sdk-assemblyscript plugin-router-rust plugin-prompt-guard \
	sdk-rust-test sdk-assemblyscript-test plugin-router-rust-test plugin-prompt-guard-test

toolchains: toolchains-deb $(GW_AS_STAMP)

toolchains-deb:
	@set -e; \
	missing=""; \
	for p in $(GW_DEB_PACKAGES); do \
		dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if ! command -v node >/dev/null 2>&1; then missing="$$missing nodejs"; fi; \
	if ! command -v $(NPM) >/dev/null 2>&1; then missing="$$missing npm"; fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "toolchains: missing packages:$$missing; run 'make toolchains' as root (apt-get install)" >&2; \
		exit 1; \
	fi; \
	echo "toolchains: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y --no-install-recommends $$missing >/dev/null \
		|| { apt-get update >/dev/null && apt-get install -y --no-install-recommends $$missing >/dev/null; }

# npm ci only when the lockfile changed since the last install.
$(GW_AS_STAMP): $(GW_AS_DIR)/package-lock.json $(GW_AS_DIR)/package.json
	@command -v $(NPM) >/dev/null 2>&1 || { echo "toolchains: npm not found; run 'make toolchains'" >&2; exit 1; }
	cd $(GW_AS_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

sdk-rust:
	RUSTC=$(RUSTC) $(GW_SDK_DIR)/rust/build.sh

sdk-assemblyscript: $(GW_AS_STAMP)
	@mkdir -p $(GW_AS_DIR)/build
	$(GW_AS_DIR)/build.sh $(GW_AS_DIR)/example/index.ts $(GW_AS_DIR)/build/example.wasm

plugin-router-rust:
	RUSTC=$(RUSTC) $(GW_PLUGINS_DIR)/router-rust/build.sh

plugin-prompt-guard: $(GW_AS_STAMP)
	$(GW_PLUGINS_DIR)/prompt-guard/build.sh

sdk-rust-test:
	RUSTC=$(RUSTC) $(GW_SDK_DIR)/rust/test.sh

sdk-assemblyscript-test: $(GW_AS_STAMP)
	$(GW_AS_DIR)/test.sh

plugin-router-rust-test: plugin-router-rust
	node $(GW_AS_DIR)/tools/golden.mjs $(GW_PLUGINS_DIR)/router-rust/router-rust.wasm $(GW_PLUGINS_DIR)/router-testdata/*.json

plugin-prompt-guard-test: plugin-prompt-guard
	node $(GW_AS_DIR)/tools/golden.mjs $(GW_PLUGINS_DIR)/prompt-guard/prompt-guard.wasm $(GW_PLUGINS_DIR)/prompt-guard/testdata/*.json
