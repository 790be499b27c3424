#!/bin/sh
# Builds router-go.wasm (or the path given as $1) with the Go toolchain
# (Go 1.24 or newer; no other packages needed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/router-go.wasm}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
cd "$here"
GOOS=wasip1 GOARCH=wasm exec go build -buildmode=c-shared -trimpath -ldflags='-s -w' -o "$out" .
