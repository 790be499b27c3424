package loadgen

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/bench/internal/hist"
)

// StreamSpec describes the streamed response the upstream produces.
type StreamSpec struct {
	Chunks int           // data events before [DONE]
	Gap    time.Duration // the upstream's pause between two of them
}

// Result is what one run measured inside its window.
type Result struct {
	// Latency is from the intended send time to the end of the response
	// (coordinated-omission corrected); in a closed loop the intended time
	// is the actual one.
	Latency *hist.Histogram
	// Service is from the actual send time to the end of the response.
	Service *hist.Histogram
	// SendLag is how late the generator sent (actual minus intended).
	SendLag *hist.Histogram
	// TTFB is from the intended send time to the first SSE data event.
	TTFB *hist.Histogram
	// Gap is the time between consecutive SSE data events of a stream.
	Gap *hist.Histogram
	// HeldBack counts gaps shorter than half the upstream's gap: chunks the
	// path delivered together although they were produced apart.
	HeldBack, Gaps int64
	// ByClass is Latency split by the class OpenConfig.Request gave each
	// request (nil without a Request function).
	ByClass map[int]*hist.Histogram
	// Matched counts the requests of OK whose response carried the header
	// OpenConfig.Match asked for (e.g. x-cache: HIT).
	Matched int64
	// OK counts requests completed with status 200 in the window.
	OK       int64
	Errors   int64
	FirstErr string
	Window   time.Duration
}

// Throughput is completed requests per second of window.
func (r *Result) Throughput() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.OK) / r.Window.Seconds()
}

func newResult() *Result {
	return &Result{Latency: hist.New(), Service: hist.New(), SendLag: hist.New(), TTFB: hist.New(), Gap: hist.New()}
}

// recorder guards a Result shared by the connections of a run.
type recorder struct {
	mu     sync.Mutex
	r      *Result
	stream *StreamSpec
}

func (rec *recorder) fail(err error) {
	rec.mu.Lock()
	rec.r.Errors++
	if rec.r.FirstErr == "" {
		rec.r.FirstErr = err.Error()
	}
	rec.mu.Unlock()
}

func (rec *recorder) done(intended, sent, end time.Duration, class int, matched bool) {
	rec.mu.Lock()
	rec.r.OK++
	if matched {
		rec.r.Matched++
	}
	rec.r.Latency.Record(int64(end - intended))
	if class >= 0 {
		if rec.r.ByClass == nil {
			rec.r.ByClass = map[int]*hist.Histogram{}
		}
		h := rec.r.ByClass[class]
		if h == nil {
			h = hist.New()
			rec.r.ByClass[class] = h
		}
		h.Record(int64(end - intended))
	}
	rec.r.Service.Record(int64(end - sent))
	rec.r.SendLag.Record(int64(sent - intended))
	rec.mu.Unlock()
}

// streamState follows the events of the stream in flight on one connection.
type streamState struct {
	rec      *recorder
	c        *Conn
	inWindow bool
	n        int
	last     time.Duration
	ttfb     time.Duration
	gaps     []time.Duration
	done     bool
}

func (s *streamState) reset(inWindow bool) {
	s.inWindow, s.n, s.last, s.ttfb, s.gaps, s.done = inWindow, 0, 0, 0, s.gaps[:0], false
}

func (s *streamState) on(kind EventKind, at time.Duration) bool {
	switch kind {
	case EventData:
		if s.n == 0 {
			intended, _ := s.c.Times()
			s.ttfb = at - intended
		} else {
			s.gaps = append(s.gaps, at-s.last)
		}
		s.last = at
		s.n++
	case EventDone:
		s.done = true
	}
	return true
}

// commit records a finished stream; it is an error if the event count is
// not the one the upstream sends.
func (s *streamState) commit() error {
	spec := s.rec.stream
	if s.n != spec.Chunks || !s.done {
		return fmt.Errorf("stream delivered %d data events (done=%v), want %d then [DONE]", s.n, s.done, spec.Chunks)
	}
	if !s.inWindow {
		return nil
	}
	s.rec.mu.Lock()
	s.rec.r.TTFB.Record(int64(s.ttfb))
	for _, g := range s.gaps {
		s.rec.r.Gap.Record(int64(g))
		s.rec.r.Gaps++
		if g < spec.Gap/2 {
			s.rec.r.HeldBack++
		}
	}
	s.rec.mu.Unlock()
	return nil
}

// dialAll opens n connections.
func dialAll(t Target, n int) ([]*Conn, error) {
	req := t.RequestBytes()
	conns := make([]*Conn, 0, n)
	for range n {
		c, err := Dial(t.Addr, nil, req, 0)
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return nil, fmt.Errorf("%s: dial %s: %w", t.Name, t.Addr, err)
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// OpenConfig configures an open-loop run.
type OpenConfig struct {
	Target   Target
	Rate     float64
	Warmup   time.Duration
	Duration time.Duration
	Conns    int
	Stream   *StreamSpec
	// Drain bounds the wait for requests still in flight when the
	// schedule ends (default 5 s); those left are errors.
	Drain time.Duration
	// OnWindow is called as the measured window opens (true) and once its
	// last request has completed (false).
	OnWindow func(start bool)
	// Request, if not nil, writes request i into buf (reusing its
	// capacity) instead of sending Target's fixed bytes, and returns a
	// class: if ≥ 0, the request's latency is also recorded under it in
	// Result.ByClass. It runs on the sending goroutine just before the
	// write, from several goroutines at once: it must be cheap and safe
	// for concurrent use.
	Request func(i int64, buf []byte) ([]byte, int)
	// Match, if its Name is set, counts the measured responses carrying
	// that header with that value in Result.Matched.
	Match Header
}

// Header is a response header to look for.
type Header struct{ Name, Value string }

// matches reports whether the response just read by c carries h.
func (c *Conn) matches(h Header) bool {
	return h.Name != "" && string(c.hdr.Peek(h.Name)) == h.Value
}

// due is a request of the schedule.
type due struct {
	i  int64
	at time.Duration
}

// RunOpen sends requests at a constant rate. Request i is due at
// start + i/Rate whatever happened before it: it goes out on a free
// connection at that time, or, if all are busy, on the first one to free
// up. Latency is measured from the due time. Only requests due inside
// [Warmup, Warmup+Duration) are measured.
func RunOpen(cfg OpenConfig) (*Result, error) {
	if cfg.Rate <= 0 || cfg.Conns <= 0 || cfg.Duration <= 0 {
		return nil, errors.New("open loop: rate, conns and duration must be positive")
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 5 * time.Second
	}
	conns, err := dialAll(cfg.Target, cfg.Conns)
	if err != nil {
		return nil, err
	}
	rec := &recorder{r: newResult(), stream: cfg.Stream}
	start := Now() + 20*time.Millisecond
	sched := Schedule{Start: start, Rate: cfg.Rate}
	winStart := start + cfg.Warmup
	winEnd := winStart + cfg.Duration
	rec.r.Window = cfg.Duration

	var (
		mu       sync.Mutex
		free     = append([]*Conn(nil), conns...)
		pending  []due
		finished atomic.Int64 // requests completed, OK or not
		stopping atomic.Bool
		allDone  = make(chan struct{}, 1)
		issued   atomic.Int64
		pacerEnd atomic.Bool
	)
	inWindow := func(at time.Duration) bool { return at >= winStart && at < winEnd }
	signalDone := func() {
		select {
		case allDone <- struct{}{}:
		default: // already signalled
		}
	}
	complete := func() {
		n := finished.Add(1)
		if pacerEnd.Load() && n >= issued.Load() {
			signalDone()
		}
	}
	// send puts c to work on request d. A failed write closes
	// the connection: its reader then fails on it, counts the request as
	// failed and redials, so a request is completed in one place only.
	send := func(c *Conn, d due) {
		var err error
		if cfg.Request != nil {
			// c.mu orders the writes of c.req by the pacer and by c's
			// reader (the network orders them too, but the race detector
			// does not know it).
			c.mu.Lock()
			var class int
			c.buf, class = cfg.Request(d.i, c.buf[:0])
			c.req = c.buf
			c.class.Store(int32(class))
			err = c.Send(d.at)
			c.mu.Unlock()
		} else {
			err = c.Send(d.at)
		}
		if err != nil {
			_ = c.ts.Conn.Close()
		}
	}

	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c *Conn) {
			defer wg.Done()
			var st *streamState
			var on OnEvent
			if cfg.Stream != nil {
				st = &streamState{rec: rec, c: c}
				on = st.on
			}
			for {
				if st != nil {
					// The request's intended time is only known once it
					// is sent; reset with a provisional flag, fixed below.
					st.reset(false)
				}
				status, closing, err := c.ReadResponse(on)
				end := Now()
				if stopping.Load() {
					return
				}
				intended, sent := c.Times()
				class := -1
				if cfg.Request != nil {
					class = int(c.class.Load())
				}
				switch {
				case err != nil:
					if inWindow(intended) {
						rec.fail(err)
					}
					closing = true
				case status != 200:
					if inWindow(intended) {
						rec.fail(fmt.Errorf("HTTP %d", status))
					}
				case st != nil:
					st.inWindow = inWindow(intended)
					if e := st.commit(); e != nil {
						rec.fail(e)
					} else if st.inWindow {
						rec.done(intended, sent, end, class, c.matches(cfg.Match))
					}
				default:
					if inWindow(intended) {
						rec.done(intended, sent, end, class, c.matches(cfg.Match))
					}
				}
				complete()
				if closing {
					if err := c.Redial(); err != nil {
						rec.fail(err)
						return
					}
				}
				next(c, &mu, &free, &pending, send)
			}
		}(c)
	}

	if cfg.OnWindow != nil {
		go func() {
			time.Sleep(winStart - Now())
			cfg.OnWindow(true)
		}()
	}
	// The pacer runs on its own locked thread and writes each request
	// itself at its due time.
	pacerDone := make(chan struct{})
	go func() {
		lockPacerThread() // the thread is discarded when this goroutine ends
		defer close(pacerDone)
		p := Pacer{S: sched, End: winEnd}
		for {
			i, at, wait, done := p.Next(Now())
			if done {
				break
			}
			if wait > 0 {
				preciseSleep(wait)
				continue
			}
			issued.Add(1)
			mu.Lock()
			if n := len(free); n > 0 {
				c := free[n-1]
				free = free[:n-1]
				mu.Unlock()
				send(c, due{i, at})
			} else {
				pending = append(pending, due{i, at})
				mu.Unlock()
			}
		}
	}()
	<-pacerDone
	pacerEnd.Store(true)
	if finished.Load() >= issued.Load() {
		signalDone()
	}
	select {
	case <-allDone:
	case <-time.After(cfg.Drain):
		lost := max(issued.Load()-finished.Load(), 0)
		rec.mu.Lock()
		rec.r.Errors += lost
		if rec.r.FirstErr == "" {
			rec.r.FirstErr = fmt.Sprintf("%d requests still in flight %v after the schedule ended", lost, cfg.Drain)
		}
		rec.mu.Unlock()
	}
	if cfg.OnWindow != nil {
		cfg.OnWindow(false)
	}
	stopping.Store(true)
	for _, c := range conns {
		_ = c.Close()
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.r, nil
}

// next gives c the oldest pending request or returns it to the free list.
func next(c *Conn, mu *sync.Mutex, free *[]*Conn, pending *[]due, send func(*Conn, due)) {
	mu.Lock()
	if len(*pending) > 0 {
		d := (*pending)[0]
		*pending = (*pending)[1:]
		mu.Unlock()
		send(c, d)
		return
	}
	*free = append(*free, c)
	mu.Unlock()
}

// ClosedConfig configures a closed-loop run.
type ClosedConfig struct {
	Target   Target
	Conns    int
	Warmup   time.Duration
	Duration time.Duration
	// OnWindow is called as the measured window opens and closes.
	OnWindow func(start bool)
	// Request, if not nil, builds each request as OpenConfig.Request does
	// (i counts the requests of the run over all connections; the class
	// is ignored).
	Request func(i int64, buf []byte) ([]byte, int)
}

// RunClosed keeps Conns requests in flight, each connection sending its
// next request as soon as the previous response ended, and counts the
// responses that end inside the window.
func RunClosed(cfg ClosedConfig) (*Result, error) {
	conns, err := dialAll(cfg.Target, cfg.Conns)
	if err != nil {
		return nil, err
	}
	rec := &recorder{r: newResult()}
	start := Now()
	winStart := start + cfg.Warmup
	winEnd := winStart + cfg.Duration
	rec.r.Window = cfg.Duration
	var seq atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c *Conn) {
			defer wg.Done()
			defer c.Close()
			for {
				t0 := Now()
				if t0 >= winEnd {
					return
				}
				if cfg.Request != nil {
					c.buf, _ = cfg.Request(seq.Add(1)-1, c.buf[:0])
					c.req = c.buf
				}
				err := c.Send(t0)
				status, closing := 0, true
				if err == nil {
					status, closing, err = c.ReadResponse(nil)
				}
				t1 := Now()
				in := t1 >= winStart && t1 < winEnd
				switch {
				case err != nil:
					if in {
						rec.fail(err)
					}
				case status != 200:
					if in {
						rec.fail(fmt.Errorf("HTTP %d", status))
					}
				case in:
					rec.done(t0, t0, t1, -1, false)
				}
				if closing || err != nil {
					if c.Redial() != nil {
						time.Sleep(10 * time.Millisecond)
					}
				}
			}
		}(c)
	}
	if cfg.OnWindow != nil {
		time.Sleep(winStart - Now())
		cfg.OnWindow(true)
		time.Sleep(winEnd - Now())
		cfg.OnWindow(false)
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.r, nil
}

// Merge adds o's measurements to r (rounds of the same scenario).
func (r *Result) Merge(o *Result) {
	r.Latency.Merge(o.Latency)
	r.Service.Merge(o.Service)
	r.SendLag.Merge(o.SendLag)
	r.TTFB.Merge(o.TTFB)
	r.Gap.Merge(o.Gap)
	for k, h := range o.ByClass {
		if r.ByClass == nil {
			r.ByClass = map[int]*hist.Histogram{}
		}
		if r.ByClass[k] == nil {
			r.ByClass[k] = hist.New()
		}
		r.ByClass[k].Merge(h)
	}
	r.HeldBack += o.HeldBack
	r.Gaps += o.Gaps
	r.OK += o.OK
	r.Matched += o.Matched
	r.Errors += o.Errors
	if r.FirstErr == "" {
		r.FirstErr = o.FirstErr
	}
	r.Window += o.Window
}
