package cache

import (
	"sync"
	"time"

	"github.com/portcullis/portcullis/engine/pipeline"
)

// flight is one upstream request that identical concurrent misses wait
// for. The leader finishes it exactly once: with the encoded entry it
// stored, or with nil when its answer failed or was not cacheable.
type flight struct {
	done  chan struct{}
	entry []byte // set before done is closed; read-only after
}

// flights is the single-flight table, keyed by cache key. A small mutex
// map: it is touched only on misses, which wait for an upstream anyway.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// join returns the flight in progress for key (leader false), or, when
// there is none and canLead, a new flight the caller leads (leader true).
// It returns nil when there is none and the caller may not lead.
func (f *flights) join(key string, canLead bool) (fl *flight, leader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.m[key]; fl != nil {
		return fl, false
	}
	if !canLead {
		return nil, false
	}
	if f.m == nil {
		f.m = make(map[string]*flight)
	}
	fl = &flight{done: make(chan struct{})}
	f.m[key] = fl
	return fl, true
}

// finish ends fl with entry (nil: failed) and wakes its followers. Safe to
// call more than once; only the first call counts.
func (f *flights) finish(key string, fl *flight, entry []byte) {
	if fl == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[key] != fl {
		return // already finished
	}
	delete(f.m, key)
	fl.entry = entry
	close(fl.done)
}

// pending is the number of flights in progress (tests).
func (f *flights) pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}

// wait blocks until fl finishes, the request's deadline, or maxWait,
// whichever is first. It returns the leader's entry, nil when the leader
// failed or the wait ended first.
func wait(x *pipeline.Exchange, fl *flight, maxWait time.Duration) []byte {
	d := maxWait
	if !x.Deadline.IsZero() {
		d = min(d, time.Until(x.Deadline))
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var ctxDone <-chan struct{}
	if x.Ctx != nil {
		ctxDone = x.Ctx.Done()
	}
	select {
	case <-fl.done:
		return fl.entry
	case <-t.C:
	case <-ctxDone:
	}
	return nil
}
