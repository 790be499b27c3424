//go:build !linux

package loadgen

import (
	"runtime"
	"time"
)

func lockPacerThread() { runtime.LockOSThread() }

func preciseSleep(d time.Duration) { time.Sleep(d) }
