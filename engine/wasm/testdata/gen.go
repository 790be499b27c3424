//go:build ignore

// gen rebuilds the test guests: go run gen.go (needs wat2wasm, Debian
// package wabt). The .wasm files are checked in so the tests need no
// toolchain; TestGuestsUpToDate checks them when wat2wasm is present.
package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	ws, _ := filepath.Glob("*.wat")
	for _, w := range ws {
		out := strings.TrimSuffix(w, ".wat") + ".wasm"
		cmd := exec.Command("wat2wasm", "-o", out, w)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			os.Exit(1)
		}
	}
}
