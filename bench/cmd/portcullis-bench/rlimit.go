package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// wantNoFile is the descriptor limit the run asks for: the gateway holds
// two sockets per idle stream (client and upstream side).
const wantNoFile = 1 << 18

// raiseNoFile raises RLIMIT_NOFILE in-process, the hard limit too when
// allowed (root, up to fs.nr_open), and returns the soft limit in force.
// Children inherit it: calling syscall.Setrlimit also stops Go from
// restoring the original soft limit in processes it starts.
func raiseNoFile() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	want := uint64(wantNoFile)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n < want {
			want = n
		}
	}
	if lim.Cur >= want {
		return lim.Cur
	}
	if lim.Max < want {
		nl := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl) == nil {
			return want
		}
		want = lim.Max // not allowed to raise the hard limit
	}
	nl := syscall.Rlimit{Cur: want, Max: lim.Max}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl) == nil {
		return want
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}
