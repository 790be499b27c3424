package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pin restricts the load generator (this process) and the fake upstream
// to the first half of the CPUs the run may use and the hops (the bare hop
// and every gateway) to the second half (-pin).
//
// Unpinned, the scheduler places each process's threads where it can, and
// a placement that favours one process lasts a whole run: two gateways of
// the same build streamed to side by side in (c) differ by up to ±70 µs of
// TTFB p50 from run to run, more than the effects an A/B comparison looks
// for. Pinned, both sit on the same CPUs and the generator never shares one
// with them (bench/README.md, -pin).
func (b *bench) pin() error {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return err
	}
	var cpus []int
	for i := 0; i < len(all)*64; i++ {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return errors.New("-pin needs at least 2 CPUs")
	}
	var gen, hops unix.CPUSet
	for i, c := range cpus {
		if i < len(cpus)/2 {
			gen.Set(c)
		} else {
			hops.Set(c)
		}
	}
	childrenMu.Lock()
	cs := append([]*child(nil), children...)
	childrenMu.Unlock()
	// Twice: a thread created while its process was being pinned may have
	// taken the old mask; every thread created after the first pass
	// inherits the new one.
	for range 2 {
		if err := pinPid(os.Getpid(), &gen); err != nil {
			return fmt.Errorf("pin the load generator: %w", err)
		}
		for _, c := range cs {
			if c.exited() {
				continue
			}
			set := &hops
			if c == b.up {
				set = &gen
			}
			if err := pinPid(c.pid(), set); err != nil {
				return fmt.Errorf("pin %s: %w", c.name, err)
			}
		}
	}
	b.log("-pin: load generator and fake upstream on CPUs %v, bare hop and gateways on %v", cpus[:len(cpus)/2], cpus[len(cpus)/2:])
	return nil
}

// pinPid sets the CPU affinity of every thread of pid.
func pinPid(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
