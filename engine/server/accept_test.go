package server

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

// scriptedListener returns its errors, in order, then a connection.
type scriptedListener struct {
	net.Listener
	errs []error
	conn net.Conn
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.conn, nil
}

// Out of file descriptors, the server frees idle upstream connections and
// keeps accepting (fasthttp alone would stop serving); an aborted
// connection is skipped; any other error still ends Serve.
func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	shed, warned := 0, 0
	l := &patientListener{
		Listener: &scriptedListener{errs: []error{emfile, os.NewSyscallError("accept4", syscall.ENFILE), syscall.ECONNABORTED, emfile}, conn: a},
		shed:     func() { shed++ },
		warn:     func(error) { warned++ },
	}
	c, err := l.Accept()
	if err != nil || c != a {
		t.Fatalf("Accept = %v, %v; want the connection after the shortage", c, err)
	}
	if shed != 3 || warned != 1 {
		t.Fatalf("idle connections shed %d times, warned %d; want 3 (once per descriptor error), 1", shed, warned)
	}
	closed := errors.New("use of closed network connection")
	l.Listener = &scriptedListener{errs: []error{closed}}
	if _, err := l.Accept(); err != closed {
		t.Fatalf("Accept = %v, want the listener's own error", err)
	}
}
