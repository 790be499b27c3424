// Package procstat reads a process's CPU time and memory from /proc.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPU is a process's CPU time at one moment, read two ways: the sum of its
// threads' schedstat run time (nanoseconds, but a thread that exits takes
// its time with it) and utime+stime from /proc/<pid>/stat (complete, in
// 10 ms ticks).
type CPU struct {
	Sched time.Duration
	Ticks time.Duration
}

// Since is the CPU time used between c0 and c: the schedstat difference,
// unless the tick count shows more (threads exited) by over two ticks.
func (c CPU) Since(c0 CPU) time.Duration {
	d, t := c.Sched-c0.Sched, c.Ticks-c0.Ticks
	if c.Sched == 0 || t > d+2*clockTick {
		return t
	}
	return d
}

// ReadCPU samples pid's CPU time.
func ReadCPU(pid int) (CPU, error) {
	var c CPU
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, err
	}
	if c.Ticks, err = ParseStatCPU(b); err != nil {
		return c, err
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		if f := bytes.Fields(b); len(f) > 0 {
			if ns, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil {
				c.Sched += time.Duration(ns)
			}
		}
	}
	return c, nil
}

// ParseStatCPU returns utime+stime from a /proc/<pid>/stat line.
func ParseStatCPU(b []byte) (time.Duration, error) {
	// comm (field 2) may hold spaces and parentheses: fields are counted
	// after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("procstat: malformed stat")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("procstat: short stat")
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("procstat: bad utime/stime")
	}
	return time.Duration(u+s) * clockTick, nil
}

// Mem is a process's memory and thread count.
type Mem struct {
	RSS     int64 // bytes, VmRSS
	HWM     int64 // bytes, VmHWM (peak RSS)
	Threads int
}

// ReadMem samples pid's memory.
func ReadMem(pid int) (Mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	return ParseStatus(b), nil
}

// ParseStatus reads VmRSS, VmHWM and Threads from /proc/<pid>/status.
func ParseStatus(b []byte) Mem {
	var m Mem
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		case "Threads":
			m.Threads = int(n)
		}
	}
	return m
}

// System is the machine's CPU time from the first line of /proc/stat.
type System struct {
	Busy  time.Duration // user, nice, system, irq, softirq
	Steal time.Duration // taken by the hypervisor
	Total time.Duration // all of it, idle and iowait included
}

// ReadSystem samples /proc/stat.
func ReadSystem() (System, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return System{}, err
	}
	return ParseSystem(b)
}

// ParseSystem reads the "cpu" line of /proc/stat.
func ParseSystem(b []byte) (System, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return System{}, errors.New("procstat: malformed /proc/stat")
	}
	var v [8]int64
	for i := range v {
		n, err := strconv.ParseInt(string(f[i+1]), 10, 64)
		if err != nil {
			return System{}, errors.New("procstat: malformed /proc/stat")
		}
		v[i] = n
	}
	// user nice system idle iowait irq softirq steal
	var s System
	s.Busy = time.Duration(v[0]+v[1]+v[2]+v[5]+v[6]) * clockTick
	s.Steal = time.Duration(v[7]) * clockTick
	s.Total = time.Duration(v[0]+v[1]+v[2]+v[3]+v[4]+v[5]+v[6]+v[7]) * clockTick
	return s, nil
}

// IO is what a process has written so far, from /proc/<pid>/io.
type IO struct {
	// WriteBytes is what it caused to be sent to storage, counted when it
	// dirtied the pages (its files: logs, the SQLite database and WAL).
	WriteBytes int64
	// WriteCalls counts its write system calls, sockets included.
	WriteCalls int64
}

// ReadIO samples pid's I/O counters (readable for the process's owner).
func ReadIO(pid int) (IO, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return IO{}, err
	}
	return ParseIO(b), nil
}

// ParseIO reads write_bytes and syscw from /proc/<pid>/io.
func ParseIO(b []byte) IO {
	var o IO
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "write_bytes":
			o.WriteBytes = n
		case "syscw":
			o.WriteCalls = n
		}
	}
	return o
}
