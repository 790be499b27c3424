package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Target is one endpoint under test and the request sent to it.
type Target struct {
	Name string
	Addr string // host:port
	Path string
	Body []byte
	// Header lines added to the request, "Name: value" without CRLF.
	Header []string
}

// RequestBytes serializes the HTTP/1.1 request once; every send reuses it.
func (t Target) RequestBytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", t.Path, t.Addr, len(t.Body))
	for _, h := range t.Header {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(t.Body)
	return b.Bytes()
}

// tsConn records when a Read last returned data.
type tsConn struct {
	net.Conn
	last time.Duration
}

func (c *tsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last = Now()
	}
	return n, err
}

// EventKind classifies an SSE event the client received.
type EventKind int

// Event kinds.
const (
	EventData    EventKind = iota // data: {...}
	EventDone                     // data: [DONE]
	EventComment                  // ": ..." keep-alive
	EventOther
)

// OnEvent is called for each SSE event of a streamed body with the time
// the read that completed it returned. Returning false stops reading the
// body (the connection is then left mid-body).
type OnEvent func(kind EventKind, at time.Duration) bool

// ErrStopped is returned by ReadResponse when OnEvent stopped it.
var ErrStopped = errors.New("stopped by the caller")

// Conn is one client connection with at most one request in flight.
type Conn struct {
	ts   tsConn
	br   *bufio.Reader
	hdr  fasthttp.ResponseHeader
	req  []byte
	sse  []byte
	addr string
	dial func() (net.Conn, error)

	// Set by the sender, read by the receiver (atomics: different
	// goroutines, ordered only through the network).
	intended atomic.Int64
	sent     atomic.Int64
	// A request built per send (OpenConfig.Request): its buffer, the lock
	// of its senders, its class.
	mu    sync.Mutex
	buf   []byte
	class atomic.Int32
	// streamed state of the request in flight
	firstEvent time.Duration
	lastEvent  time.Duration
	events     int
}

// Dial opens a connection to addr, from local if it is not nil.
func Dial(addr string, local net.Addr, req []byte, readBuf int) (*Conn, error) {
	d := &net.Dialer{Timeout: 15 * time.Second, LocalAddr: local}
	c := &Conn{req: req, addr: addr, dial: func() (net.Conn, error) { return d.Dial("tcp", addr) }}
	nc, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.ts.Conn = nc
	if readBuf <= 0 {
		readBuf = 8 << 10
	}
	c.br = bufio.NewReaderSize(&c.ts, readBuf)
	return c, nil
}

// Redial replaces a broken connection.
func (c *Conn) Redial() error {
	_ = c.ts.Conn.Close()
	nc, err := c.dial()
	if err != nil {
		return err
	}
	c.ts.Conn = nc
	c.ts.last = 0
	c.br.Reset(&c.ts)
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.ts.Conn.Close() }

// Send writes the request, recording its intended and actual send times.
func (c *Conn) Send(intended time.Duration) error {
	c.intended.Store(int64(intended))
	c.sent.Store(int64(Now()))
	_, err := c.ts.Conn.Write(c.req)
	return err
}

// Times returns the intended and actual send time of the request in flight.
func (c *Conn) Times() (intended, sent time.Duration) {
	return time.Duration(c.intended.Load()), time.Duration(c.sent.Load())
}

// ReadResponse reads one response. A Content-Length body is discarded; a
// chunked body is split into SSE events reported to on (nil: discarded).
// It returns the status and whether the server will close the connection.
func (c *Conn) ReadResponse(on OnEvent) (status int, closing bool, err error) {
	c.hdr.Reset()
	if err := c.hdr.Read(c.br); err != nil {
		return 0, true, err
	}
	status, closing = c.hdr.StatusCode(), c.hdr.ConnectionClose()
	switch cl := c.hdr.ContentLength(); {
	case cl >= 0:
		if _, err := c.br.Discard(cl); err != nil {
			return status, true, err
		}
	case cl == -1:
		if err := c.readChunked(on); err != nil {
			return status, true, err
		}
	default:
		return status, true, errors.New("response body without length")
	}
	return status, closing, nil
}

// readChunked reads a chunked body, feeding its bytes to the SSE splitter.
func (c *Conn) readChunked(on OnEvent) error {
	c.sse = c.sse[:0]
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err
		}
		if size == 0 {
			// trailer: lines until an empty one
			for {
				l, err := c.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(l, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if on == nil {
			if _, err := c.br.Discard(size); err != nil {
				return err
			}
		} else {
			n := len(c.sse)
			c.sse = append(c.sse, make([]byte, size)...)
			if _, err := io.ReadFull(c.br, c.sse[n:]); err != nil {
				return err
			}
			var stop bool
			c.sse, stop = splitEvents(c.sse, c.ts.last, on)
			if stop {
				return ErrStopped
			}
		}
		if _, err := c.br.Discard(2); err != nil { // CRLF after the data
			return err
		}
	}
}

func parseChunkSize(line []byte) (int, error) {
	line = bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad chunk size %q", line)
	}
	return int(n), nil
}

// splitEvents reports every complete event ("\n\n"-terminated) in buf and
// returns the incomplete rest, moved to the front.
func splitEvents(buf []byte, at time.Duration, on OnEvent) ([]byte, bool) {
	start := 0
	for {
		i := bytes.Index(buf[start:], []byte("\n\n"))
		if i < 0 {
			break
		}
		ev := buf[start : start+i]
		start += i + 2
		if !on(classify(ev), at) {
			return buf[:copy(buf, buf[start:])], true
		}
	}
	return buf[:copy(buf, buf[start:])], false
}

func classify(ev []byte) EventKind {
	ev = bytes.TrimLeft(ev, "\r\n")
	switch {
	case bytes.HasPrefix(ev, []byte("data: [DONE]")) || bytes.HasPrefix(ev, []byte("data:[DONE]")):
		return EventDone
	case bytes.HasPrefix(ev, []byte("data:")):
		return EventData
	case bytes.HasPrefix(ev, []byte(":")):
		return EventComment
	}
	return EventOther
}
