#!/bin/sh
# Builds pii-redact.wasm (or the path given as $1).
# Needs: clang, lld, wasi-libc, libclang-rt-dev-wasm32 (Debian 12 packages).
# WASI_SYSROOT overrides the sysroot (default: clang's, /usr/share/wasi-sysroot on Debian).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/pii-redact.wasm}
sysroot=${WASI_SYSROOT:+--sysroot=$WASI_SYSROOT}
exec ${CC:-clang} --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror $sysroot \
	-Wl,--strip-all -I "$here/../../sdk/c" -o "$out" "$here/pii_redact.c"
