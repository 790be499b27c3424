package route

import (
	"math"
	"sync/atomic"
	"time"
)

// health is a deployment's live state. Every field is an atomic: the
// request path reads and updates it without a lock. Updates that race may
// lose a sample (a latency average, a counter near a window edge); they
// never block.
type health struct {
	inflight atomic.Int64

	// cooldownUntil is a unix-nano time; the deployment is out of the
	// rotation until then.
	cooldownUntil atomic.Int64
	// fails counts failures in the window that started at failWindow.
	fails      atomic.Int64
	failWindow atomic.Int64

	// rpm/tpm usage in the current minute (minute index in usageMinute).
	usageMinute atomic.Int64
	reqs        atomic.Int64
	tokens      atomic.Int64

	// Moving averages in nanoseconds, as float64 bits; 0 means no sample.
	latency atomic.Uint64
	ttft    atomic.Uint64
}

// failWindowLen is the window allowed_fails counts over (LiteLLM: a minute).
const failWindowLen = int64(time.Minute)

// coolingDown reports whether now is inside the cooldown.
func (h *health) coolingDown(now int64) bool { return h.cooldownUntil.Load() > now }

// fail records a failure and reports whether it started a cooldown: more
// than allowed failures within a minute cool the deployment down (LiteLLM's
// allowed_fails; successes in between do not reset the count).
// allowed < 0 means this error class never cools down; allowed == 0 cools
// down on the first failure.
func (h *health) fail(now int64, allowed int, cooldown time.Duration) bool {
	if allowed < 0 || cooldown <= 0 {
		return false
	}
	w := h.failWindow.Load()
	if now-w > failWindowLen {
		if h.failWindow.CompareAndSwap(w, now) {
			h.fails.Store(0)
		}
	}
	if h.fails.Add(1) <= int64(allowed) {
		return false
	}
	until := now + int64(cooldown)
	for {
		cur := h.cooldownUntil.Load()
		if cur >= until {
			return false
		}
		if h.cooldownUntil.CompareAndSwap(cur, until) {
			h.fails.Store(0)
			return cur <= now // a new cooldown, not an extension
		}
	}
}

// minute rolls the usage counters to the current minute.
func (h *health) minute(now int64) {
	m := now / int64(time.Minute)
	if cur := h.usageMinute.Load(); cur != m {
		if h.usageMinute.CompareAndSwap(cur, m) {
			h.reqs.Store(0)
			h.tokens.Store(0)
		}
	}
}

// usage returns the requests and tokens counted this minute.
func (h *health) usage(now int64) (int64, int64) {
	h.minute(now)
	return h.reqs.Load(), h.tokens.Load()
}

func (h *health) countRequest(now int64) {
	h.minute(now)
	h.reqs.Add(1)
}

func (h *health) countTokens(now int64, n int) {
	if n <= 0 {
		return
	}
	h.minute(now)
	h.tokens.Add(int64(n))
}

// ewmaAlpha weights a new sample in the moving averages.
const ewmaAlpha = 0.2

func observe(v *atomic.Uint64, d time.Duration) {
	x := float64(d)
	for {
		old := v.Load()
		var nv float64
		if old == 0 {
			nv = x
		} else {
			nv = (1-ewmaAlpha)*math.Float64frombits(old) + ewmaAlpha*x
		}
		if nv == 0 {
			nv = 1
		}
		if v.CompareAndSwap(old, math.Float64bits(nv)) {
			return
		}
	}
}

func load(v *atomic.Uint64) float64 { return math.Float64frombits(v.Load()) }
