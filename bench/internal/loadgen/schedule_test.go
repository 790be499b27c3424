package loadgen

import (
	"testing"
	"time"
)

func TestScheduleNoDrift(t *testing.T) {
	s := Schedule{Start: 5 * time.Second, Rate: 1000}
	if s.At(0) != 5*time.Second {
		t.Fatal("first request must be due at Start")
	}
	// One million requests at 1000/s end exactly 1000 s later.
	if got := s.At(1_000_000); got != 1005*time.Second {
		t.Fatalf("At(1e6) = %v", got)
	}
	// An awkward rate: the error stays below a nanosecond-scale rounding.
	s = Schedule{Rate: 3}
	for _, i := range []int64{1, 3, 1000, 999_999} {
		want := time.Duration(i) * time.Second / 3
		if d := s.At(i) - want; d < -1 || d > 1 {
			t.Fatalf("At(%d) = %v want %v", i, s.At(i), want)
		}
	}
}

func TestCountBefore(t *testing.T) {
	s := Schedule{Start: time.Second, Rate: 1000}
	cases := []struct {
		t    time.Duration
		want int64
	}{
		{0, 0},
		{time.Second, 0},
		{time.Second + 1, 1},
		{time.Second + time.Millisecond, 1},
		{time.Second + time.Millisecond + 1, 2},
		{2 * time.Second, 1000},
		{11 * time.Second, 10000},
	}
	for _, c := range cases {
		if got := s.CountBefore(c.t); got != c.want {
			t.Errorf("CountBefore(%v) = %d want %d", c.t, got, c.want)
		}
	}
	s = Schedule{Rate: 7}
	for n := int64(0); n < 100; n++ {
		if got := s.CountBefore(s.At(n)); got != n {
			t.Fatalf("CountBefore(At(%d)) = %d", n, got)
		}
	}
}

func TestPacerOnTime(t *testing.T) {
	p := Pacer{S: Schedule{Rate: 100}, End: 50 * time.Millisecond}
	now := time.Duration(0)
	var got []time.Duration
	for {
		i, at, wait, done := p.Next(now)
		if done {
			break
		}
		if wait > 0 {
			if at-now != wait {
				t.Fatalf("wait %v, due in %v", wait, at-now)
			}
			now += wait // a perfect sleeper
			continue
		}
		if int64(len(got)) != i || at != now {
			t.Fatalf("request %d at %v handed out at %v", i, at, now)
		}
		got = append(got, at)
	}
	if len(got) != 5 || p.Issued() != 5 {
		t.Fatalf("%d requests in 50 ms at 100/s, want 5", len(got))
	}
	for i, at := range got {
		if at != time.Duration(i)*10*time.Millisecond {
			t.Fatalf("request %d due %v", i, at)
		}
	}
}

func TestPacerLateCatchesUpWithoutSkipping(t *testing.T) {
	// The caller stalls 35 ms after the first request: the three overdue
	// requests come out back to back with their original intended times
	// (latency is measured from those), none is dropped.
	p := Pacer{S: Schedule{Rate: 100}, End: time.Second}
	if i, at, _, _ := p.Next(0); i != 0 || at != 0 {
		t.Fatal("first")
	}
	now := 35 * time.Millisecond
	for want := int64(1); want <= 3; want++ {
		i, at, wait, done := p.Next(now)
		if done || wait != 0 || i != want || at != time.Duration(want)*10*time.Millisecond {
			t.Fatalf("overdue %d: got i=%d at=%v wait=%v", want, i, at, wait)
		}
	}
	i, at, wait, _ := p.Next(now)
	if i != 4 || at != 40*time.Millisecond || wait != 5*time.Millisecond {
		t.Fatalf("next after catch-up: i=%d at=%v wait=%v", i, at, wait)
	}
	// Far past the end: the rest are handed out, then done.
	n := 0
	for {
		_, _, _, done := p.Next(10 * time.Second)
		if done {
			break
		}
		n++
	}
	if p.Issued() != 100 || n != 96 {
		t.Fatalf("issued %d (%d in the final burst), want 100", p.Issued(), n)
	}
}
