#!/bin/sh
# Tests the Rust SDK: native unit tests, then (when node is installed) the README example built
# for wasm and run against its golden cases. Uses Debian's rustc 1.63 (RUSTC).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
RUSTC=${RUSTC:-/usr/bin/rustc}
export RUSTC
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$RUSTC" --edition 2021 --test --crate-name gw_sdk -o "$tmp/gw_sdk_test" "$here/src/lib.rs"
"$tmp/gw_sdk_test" -q
"$here/build.sh" "$tmp"
"$RUSTC" --edition 2021 --crate-type cdylib --crate-name example --target wasm32-unknown-unknown \
	-C opt-level=3 -C lto -C target-feature=+bulk-memory -C link-arg=-zstack-size=65536 -C link-arg=--strip-all \
	--extern gw_sdk="$tmp/libgw_sdk.rlib" -L "$tmp" -o "$tmp/example.wasm" "$here/example/lib.rs"
if command -v node >/dev/null 2>&1; then
	node "$here/../assemblyscript/tools/golden.mjs" "$tmp/example.wasm" "$here"/example/testdata/*.json
else
	echo "node not found: example built, golden cases skipped"
fi
