#!/bin/sh
# Builds router-rust.wasm (or the path given as $1) with Debian's rustc 1.63 (RUSTC, default
# /usr/bin/rustc; rustup's toolchain has no wasm target) and the Rust SDK in sdk/rust.
# Prints nothing on success.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/router-rust.wasm}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
RUSTC=${RUSTC:-/usr/bin/rustc}
export RUSTC
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/../../sdk/rust/build.sh" "$tmp"
"$RUSTC" --edition 2021 --crate-type cdylib --crate-name router_rust --target wasm32-unknown-unknown \
	-C opt-level=3 -C lto -C codegen-units=1 -C target-feature=+bulk-memory \
	-C link-arg=-zstack-size=65536 -C link-arg=--strip-all \
	--extern gw_sdk="$tmp/libgw_sdk.rlib" -L "$tmp" \
	-o "$tmp/router-rust.wasm" "$here/src/lib.rs"
chmod 644 "$tmp/router-rust.wasm"
mv "$tmp/router-rust.wasm" "$out"
