package procstat

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// comm with a space and a parenthesis; utime=150, stime=25 ticks.
	line := []byte("4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 7 0 12345 1000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	got, err := ParseStatCPU(line)
	if err != nil || got != 1750*time.Millisecond {
		t.Fatalf("got %v, %v; want 1.75s", got, err)
	}
	if _, err := ParseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("want an error")
	}
}

func TestParseStatus(t *testing.T) {
	s := []byte("Name:\tportcullis\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n")
	m := ParseStatus(s)
	if m.RSS != 10<<20 || m.HWM != 20<<20 || m.Threads != 9 {
		t.Fatalf("%+v", m)
	}
}

func TestSince(t *testing.T) {
	a := CPU{Sched: time.Second, Ticks: time.Second}
	b := CPU{Sched: 1500 * time.Millisecond, Ticks: 1510 * time.Millisecond}
	if d := b.Since(a); d != 500*time.Millisecond {
		t.Fatalf("within tick noise the schedstat sum wins: %v", d)
	}
	c := CPU{Sched: 1200 * time.Millisecond, Ticks: 1600 * time.Millisecond}
	if d := c.Since(a); d != 600*time.Millisecond {
		t.Fatalf("threads exited: ticks win: %v", d)
	}
}

func TestReadSelf(t *testing.T) {
	c, err := ReadCPU(os.Getpid())
	if err != nil || c.Sched <= 0 {
		t.Fatalf("%+v %v", c, err)
	}
	m, err := ReadMem(os.Getpid())
	if err != nil || m.RSS <= 0 || m.Threads <= 0 {
		t.Fatalf("%+v %v", m, err)
	}
}

func TestParseSystem(t *testing.T) {
	s, err := ParseSystem([]byte("cpu  100 5 50 1000 10 3 2 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Busy != 1600*time.Millisecond || s.Steal != 70*time.Millisecond || s.Total != 11770*time.Millisecond {
		t.Fatalf("%+v", s)
	}
	if _, err := ParseSystem([]byte("intr 1 2 3")); err == nil {
		t.Fatal("want an error")
	}
}

func TestParseIO(t *testing.T) {
	b := []byte("rchar: 100\nwchar: 200\nsyscr: 3\nsyscw: 4\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n")
	if o := ParseIO(b); o.WriteBytes != 8192 || o.WriteCalls != 4 {
		t.Fatalf("%+v", o)
	}
	if _, err := ReadIO(os.Getpid()); err != nil {
		t.Skip("no /proc/self/io here:", err)
	}
}
