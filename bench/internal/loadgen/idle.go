package loadgen

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// IdleConfig configures HoldStreams.
type IdleConfig struct {
	Target Target
	N      int
	// Ramp is how many streams are opened per second.
	Ramp float64
	// LocalIPs spread the client sockets over several source addresses
	// (127.0.0.x) so one address's ephemeral ports are not the limit.
	LocalIPs []net.IP
	// Timeout bounds the wait for all streams' first event.
	Timeout time.Duration
}

// Idle is a set of open streams, each of which has delivered its first
// event and is then left idle (nothing reads it; the upstream sends
// nothing more for a long time).
type Idle struct {
	mu          sync.Mutex
	conns       []*Conn
	Established atomic.Int64
	Failed      atomic.Int64
	firstErr    atomic.Value
	// Elapsed is how long opening all of them took.
	Elapsed time.Duration
}

// FirstErr is the first failure, if any.
func (s *Idle) FirstErr() string {
	if v, ok := s.firstErr.Load().(string); ok {
		return v
	}
	return ""
}

// HoldStreams opens cfg.N streams at cfg.Ramp per second and waits until
// each has delivered its first data event (or failed, or Timeout passed).
func HoldStreams(cfg IdleConfig) *Idle {
	s := &Idle{conns: make([]*Conn, 0, cfg.N)}
	req := cfg.Target.RequestBytes()
	if cfg.Ramp <= 0 {
		cfg.Ramp = 2000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	fail := func(err error) {
		s.Failed.Add(1)
		s.firstErr.CompareAndSwap(nil, err.Error())
	}
	t0 := Now()
	var wg sync.WaitGroup
	sched := Schedule{Start: t0, Rate: cfg.Ramp}
	for i := range cfg.N {
		if d := sched.At(int64(i)) - Now(); d > time.Millisecond {
			time.Sleep(d)
		}
		var local net.Addr
		if len(cfg.LocalIPs) > 0 {
			local = &net.TCPAddr{IP: cfg.LocalIPs[i%len(cfg.LocalIPs)]}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(cfg.Target.Addr, local, req, 2048)
			if err != nil {
				fail(err)
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			if err := c.Send(Now()); err != nil {
				fail(err)
				_ = c.Close()
				return
			}
			_ = c.ts.Conn.SetReadDeadline(time.Now().Add(cfg.Timeout))
			status, _, err := c.ReadResponse(func(k EventKind, _ time.Duration) bool { return k != EventData })
			switch {
			case errors.Is(err, ErrStopped) && status == 200:
				_ = c.ts.Conn.SetReadDeadline(time.Time{})
				s.Established.Add(1)
			case status != 200:
				fail(fmt.Errorf("HTTP %d before the first data event", status))
				_ = c.Close() // a failed stream holds nothing open
			case err == nil:
				fail(errors.New("stream ended before its first data event"))
				_ = c.Close()
			default:
				fail(err)
				_ = c.Close()
			}
		}()
	}
	wg.Wait()
	s.Elapsed = Now() - t0
	return s
}

// Close closes every stream.
func (s *Idle) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}
