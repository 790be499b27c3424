#!/bin/sh
# Builds the gw_sdk rlib for wasm with Debian's rustc 1.63 (no cargo, no crates).
#   sdk/rust/build.sh [OUTDIR] [TARGET]
# OUTDIR defaults to sdk/rust/target/<TARGET>; TARGET to wasm32-unknown-unknown (or wasm32-wasi).
# Prints nothing on success; writes OUTDIR/libgw_sdk.rlib.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
RUSTC=${RUSTC:-/usr/bin/rustc}
target=${2:-wasm32-unknown-unknown}
out=${1:-$here/target/$target}
if [ ! -x "$RUSTC" ]; then
	echo "gw_sdk: $RUSTC not found; run 'make toolchains' (Debian rustc + libstd-rust-dev-wasm32)" >&2
	exit 1
fi
mkdir -p "$out"
# +bulk-memory: copies and fills become memory.copy / memory.fill instead of loops (WebAssembly
# 2.0, on in wazero); plugins must be built with it too (see README.md).
"$RUSTC" --edition 2021 --crate-type rlib --crate-name gw_sdk --target "$target" \
	-C opt-level=3 -C codegen-units=1 -C target-feature=+bulk-memory \
	-o "$out/libgw_sdk.rlib" "$here/src/lib.rs"
