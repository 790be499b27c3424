package main

import (
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPinPid pins every thread of a child process to one CPU and reads the
// mask back.
func TestPinPid(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Skip(err)
	}
	cpu := -1
	for i := 0; i < len(all)*64 && cpu < 0; i++ {
		if all.IsSet(i) {
			cpu = i
		}
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var one unix.CPUSet
	one.Set(cpu)
	if err := pinPid(cmd.Process.Pid, &one); err != nil {
		t.Fatal(err)
	}
	var got unix.CPUSet
	if err := unix.SchedGetaffinity(cmd.Process.Pid, &got); err != nil {
		t.Fatal(err)
	}
	if got.Count() != 1 || !got.IsSet(cpu) {
		t.Fatalf("affinity %v, want CPU %d only", got, cpu)
	}
}
