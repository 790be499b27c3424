#!/bin/sh
# Builds an AssemblyScript plugin against this SDK:   sdk/assemblyscript/build.sh ENTRY.ts OUT.wasm
# Flags: --runtime minimal (TLSF + a collection the SDK runs after each hook), --exportStart
# _initialize (globals are initialized by the host's _initialize call, no start section),
# --lib lib --use abort=gwAbort (abort logs through gw.log and traps: the host provides no
# env.abort). Prints nothing on success.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 2 ]; then
	echo "usage: $0 ENTRY.ts OUT.wasm" >&2
	exit 2
fi
asc=$here/node_modules/.bin/asc
if [ ! -x "$asc" ]; then
	echo "gw-sdk: $asc not found; run 'npm ci' in sdk/assemblyscript (or 'make toolchains')" >&2
	exit 1
fi
entry=$(realpath --relative-to="$here" "$1")
out=$(realpath "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# asc resolves --lib relative to the working directory: run it from the SDK.
cd "$here"
"$asc" "$entry" -o "$tmp/out.wasm" --runtime minimal --exportStart _initialize \
	--lib lib --use abort=gwAbort -O3 --noColors
chmod 644 "$tmp/out.wasm"
mv "$tmp/out.wasm" "$out"
