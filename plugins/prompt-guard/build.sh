#!/bin/sh
# Builds prompt-guard.wasm (or the path given as $1) with the AssemblyScript SDK's compiler
# (sdk/assemblyscript/node_modules: `npm ci` there, or `make toolchains`).
# Prints nothing on success.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/prompt-guard.wasm}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
exec "$here/../../sdk/assemblyscript/build.sh" "$here/assembly/index.ts" "$out"
