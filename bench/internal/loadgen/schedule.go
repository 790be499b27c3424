// Package loadgen is the load generator of portcullis-bench: an open loop
// that sends at a constant rate and measures latency from each request's
// intended send time (so a stall of the system under test is charged to
// every request it delayed, not hidden: no coordinated omission), a closed
// loop for maximum throughput, and a holder of many idle streams.
//
// The client speaks HTTP/1.1 itself over net.Conn (response headers are
// parsed with fasthttp) so that a request is written by the pacer at its
// due time with no goroutine hand-off, and each SSE event is timestamped
// when the read that completed it returned.
package loadgen

import (
	"time"
)

var base = time.Now()

// Now is the monotonic time since the package started, the clock of every
// timestamp here.
func Now() time.Duration { return time.Since(base) }

// Schedule is an open-loop constant-rate schedule: request i (from 0) is
// due at Start + i/Rate. Offsets are computed from i, never accumulated, so
// the schedule does not drift.
type Schedule struct {
	Start time.Duration
	Rate  float64 // requests per second, > 0
}

// At is the intended send time of request i.
func (s Schedule) At(i int64) time.Duration {
	return s.Start + time.Duration(float64(i)*1e9/s.Rate)
}

// CountBefore is the number of requests due before t (those with
// At(i) < t).
func (s Schedule) CountBefore(t time.Duration) int64 {
	if t <= s.Start {
		return 0
	}
	n := int64(float64(t-s.Start) * s.Rate / 1e9)
	// Correct float rounding at the boundary in either direction.
	for n > 0 && s.At(n-1) >= t {
		n--
	}
	for s.At(n) < t {
		n++
	}
	return n
}

// Pacer walks a Schedule up to (not including) End. It never skips a
// request: when the caller is late, every overdue request is returned at
// once, each with its own intended time, so latency measured from that time
// includes the lateness.
type Pacer struct {
	S    Schedule
	End  time.Duration
	next int64
}

// Next returns the next request's index and intended time. If it is not yet
// due at now, wait is how long until it is and the request is not consumed;
// call Next again after waiting. done is true when the schedule has ended.
func (p *Pacer) Next(now time.Duration) (i int64, at, wait time.Duration, done bool) {
	at = p.S.At(p.next)
	if at >= p.End {
		return p.next, at, 0, true
	}
	if at > now {
		return p.next, at, at - now, false
	}
	i = p.next
	p.next++
	return i, at, 0, false
}

// Issued is the number of requests Next has handed out.
func (p *Pacer) Issued() int64 { return p.next }
