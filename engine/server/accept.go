package server

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// patientListener keeps accepting through a shortage of file descriptors.
//
// fasthttp stops serving on any accept error that is not a timeout, and a
// process out of descriptors (EMFILE, ENFILE: as many open connections as
// its limit allows) gets one on every accept: the gateway would stop for
// good at its busiest moment. Here such an error frees what it can (the
// idle upstream connections of the current configuration, kept for reuse)
// and waits, 5 ms at first, doubling up to 1 s while it lasts, as
// net/http's server does; the connections waiting meanwhile stay in the
// kernel's backlog. A connection aborted before it was accepted is
// skipped.
type patientListener struct {
	net.Listener
	shed func()      // frees descriptors
	warn func(error) // logs the shortage (at most once per 10 s)
}

func (l *patientListener) Accept() (net.Conn, error) {
	var wait time.Duration
	var logged time.Time
	for {
		c, err := l.Listener.Accept()
		switch {
		case err == nil:
			return c, nil
		case errors.Is(err, syscall.ECONNABORTED):
			continue
		case !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE):
			return nil, err
		}
		l.shed()
		if time.Since(logged) > 10*time.Second {
			logged = time.Now()
			l.warn(err)
		}
		wait = min(max(2*wait, 5*time.Millisecond), time.Second)
		time.Sleep(wait)
	}
}
