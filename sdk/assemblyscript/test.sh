#!/bin/sh
# Tests the AssemblyScript SDK: unit tests (test/sdk.test.ts) and the README example against its
# golden cases, on node. Prints the results; exits non-zero on failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/build.sh" "$here/test/sdk.test.ts" "$tmp/sdk-test.wasm"
node "$here/test/run.mjs" "$tmp/sdk-test.wasm"
"$here/build.sh" "$here/example/index.ts" "$tmp/example.wasm"
node "$here/tools/golden.mjs" "$tmp/example.wasm" "$here"/example/testdata/*.json
