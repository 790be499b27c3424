//go:build unix

package sqlite

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user + system, all threads) the process has
// used; benchmarks report it per record because the wall clock of a shared
// machine also counts other processes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
