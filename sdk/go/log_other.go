//go:build !wasip1

package portcullis

import (
	"fmt"
	"os"
)

// Log writes a line to stderr when the plugin runs natively (tests); in
// the gateway it goes to the gateway log.
func Log(level int, msg string) {
	fmt.Fprintf(os.Stderr, "plugin log [%d]: %s\n", level, msg)
}
