package loadgen

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerslack is prctl's PR_SET_TIMERSLACK.
const prSetTimerslack = 29

// lockPacerThread dedicates the calling goroutine's OS thread to pacing and
// lowers its timer slack to 1 ns (the default is 50 µs).
func lockPacerThread() {
	runtime.LockOSThread()
	_, _, _ = syscall.Syscall(syscall.SYS_PRCTL, prSetTimerslack, 1, 0)
}

// preciseSleep sleeps d with nanosleep on the locked thread. Go's
// time.Sleep is woken by the netpoller with millisecond granularity when the
// process is idle (it is typically 0.5 ms late), which would add noise
// larger than the hop overhead being measured.
func preciseSleep(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var rem syscall.Timespec
		err := syscall.Nanosleep(&ts, &rem)
		if err != syscall.EINTR {
			return
		}
		ts = rem
	}
}
