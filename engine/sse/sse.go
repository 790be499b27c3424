// Package sse reads and writes Server-Sent Events as LLM providers use them.
//
// Reader parses an upstream byte stream into events one at a time, without
// buffering more than one event, and without allocating per event once its
// buffers have grown. The slices an Event holds are valid until the next call
// to Next. Lines may end in \n, \r\n or \r; comment lines (":...") and fields
// other than event/data are skipped; an event larger than the limit is an
// error rather than unbounded memory.
package sse

import (
	"bytes"
	"errors"
	"io"
)

// ErrEventTooLarge is returned when one event exceeds the reader's limit.
var ErrEventTooLarge = errors.New("sse: event exceeds size limit")

// DefaultMaxEvent bounds one event (8 MiB: large tool-call arguments and
// base64 images fit; a runaway upstream does not).
const DefaultMaxEvent = 8 << 20

// Event is one server-sent event. Name is empty for unnamed events.
type Event struct {
	Name []byte
	Data []byte
}

// IsDone reports whether the event is OpenAI's terminal "[DONE]" sentinel.
func (e *Event) IsDone() bool { return string(e.Data) == "[DONE]" }

// Reader reads events from an io.Reader.
type Reader struct {
	src    io.Reader
	max    int
	buf    []byte
	start  int
	end    int
	skipLF bool // the last line ended in \r; a leading \n belongs to it
	eof    error
	cut    bool // the last line returned had no terminator (input ended)
	name   []byte
	data   []byte
}

// NewReader returns a Reader over r. maxEvent <= 0 selects DefaultMaxEvent.
func NewReader(r io.Reader, maxEvent int) *Reader {
	// 512 bytes hold a typical chat chunk (150-400 bytes); the buffer
	// doubles for larger events. It lives as long as the stream, so
	// thousands of idle streams pay for its size.
	rd := &Reader{}
	rd.Init(r, maxEvent, make([]byte, 512), nil)
	return rd
}

// Init readies a Reader (a field of a larger struct: one allocation for
// all) over r with buf as its first read buffer and data (may be nil) as
// the first buffer of an event's data, each grown, not reused, when an
// event does not fit. maxEvent <= 0 selects DefaultMaxEvent.
func (r *Reader) Init(src io.Reader, maxEvent int, buf, data []byte) {
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEvent
	}
	*r = Reader{src: src, max: maxEvent, buf: buf, data: data[:0]}
}

// Reset points the reader at a new stream, keeping its buffers.
func (r *Reader) Reset(src io.Reader) {
	r.src, r.start, r.end, r.skipLF, r.eof, r.cut = src, 0, 0, false, nil, false
	r.name, r.data = r.name[:0], r.data[:0]
}

// fill reads more bytes, compacting or growing the buffer. It returns an
// error only when nothing more can be read.
func (r *Reader) fill() error {
	if r.eof != nil {
		return r.eof
	}
	if r.start > 0 {
		n := copy(r.buf, r.buf[r.start:r.end])
		r.start, r.end = 0, n
	}
	if r.end == len(r.buf) {
		if len(r.buf) >= r.max+2 {
			return ErrEventTooLarge
		}
		nb := make([]byte, min(2*len(r.buf), r.max+2))
		copy(nb, r.buf[:r.end])
		r.buf = nb
	}
	for i := 0; i < 100; i++ {
		n, err := r.src.Read(r.buf[r.end:])
		r.end += n
		if err != nil {
			r.eof = err
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	r.eof = io.ErrNoProgress
	return r.eof
}

// Wait reads until the buffer holds a complete event with data, or the
// input ends or fails (Next then reports it). It does not parse: it lets
// a caller block with a shallow call stack (see provider.Waiter), after
// which Next returns without reading.
func (r *Reader) Wait() {
	for !r.pending() {
		if r.fill() != nil {
			return
		}
	}
}

// Buffered reports whether the unread bytes already hold a complete event
// with data: Next returns it without reading.
func (r *Reader) Buffered() bool { return r.pending() }

// pending reports whether the unread bytes hold a complete event with a
// data line: a data line, then an empty line. Comment-only and field-only
// blocks before it are skipped, as Next skips them.
func (r *Reader) pending() bool {
	b := r.buf[r.start:r.end]
	if r.skipLF && len(b) > 0 && b[0] == '\n' {
		b = b[1:]
	}
	data := false
	for {
		l, term, _, ok := cutLine(b)
		if !ok {
			return false
		}
		b = b[len(l)+term:]
		switch {
		case len(l) == 0:
			if data {
				return true
			}
		case bytes.HasPrefix(l, []byte("data")) && (len(l) == 4 || l[4] == ':'):
			data = true
		}
	}
}

// cutLine splits b at its first line terminator (\n, \r\n or \r): the
// line, the bytes the terminator takes (1 or 2), and ok. A \r that ends b
// counts as a terminator; its \n may come with the next read (crEnd).
func cutLine(b []byte) (line []byte, term int, crEnd, ok bool) {
	// Two IndexByte scans (vectorised) instead of IndexAny's byte loop: the
	// first \n, then a \r before it (rare: most servers end lines in \n).
	i := bytes.IndexByte(b, '\n')
	lim := b
	if i >= 0 {
		lim = b[:i]
	}
	if j := bytes.IndexByte(lim, '\r'); j >= 0 {
		i = j
	} else if i < 0 {
		return nil, 0, false, false
	}
	if b[i] == '\r' {
		if i+1 == len(b) {
			return b[:i], 1, true, true
		}
		if b[i+1] == '\n' {
			return b[:i], 2, false, true
		}
	}
	return b[:i], 1, false, true
}

// line returns the next line without its terminator. At the end of input a
// final unterminated line is returned before the error.
func (r *Reader) line() ([]byte, error) {
	for {
		if r.skipLF && r.start < r.end {
			if r.buf[r.start] == '\n' {
				r.start++
			}
			r.skipLF = false
		}
		if l, term, crEnd, ok := cutLine(r.buf[r.start:r.end]); ok {
			r.start += len(l) + term
			r.skipLF = crEnd
			return l, nil
		}
		if err := r.fill(); err != nil {
			if r.start < r.end && !errors.Is(err, ErrEventTooLarge) {
				l := r.buf[r.start:r.end]
				r.start = r.end
				r.cut = true
				return l, nil
			}
			return nil, err
		}
	}
}

// Next returns the next event. At a clean end of stream it returns io.EOF;
// an event whose lines are complete but that lacks the final blank line is
// still dispatched; a stream that ends in the middle of a line returns
// io.ErrUnexpectedEOF (the partial line is dropped: the upstream never
// finished it).
func (r *Reader) Next() (Event, error) {
	r.name, r.data = r.name[:0], r.data[:0]
	hasData := false
	for {
		l, err := r.line()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if hasData {
					return Event{Name: r.name, Data: r.data}, nil
				}
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if r.cut {
			return Event{}, io.ErrUnexpectedEOF
		}
		if len(l) == 0 {
			if hasData {
				return Event{Name: r.name, Data: r.data}, nil
			}
			// An event with no data is not dispatched (per the SSE spec).
			r.name = r.name[:0]
			continue
		}
		if l[0] == ':' {
			continue
		}
		field, value := l, l[:0]
		if i := bytes.IndexByte(l, ':'); i >= 0 {
			field, value = l[:i], l[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if hasData {
				r.data = append(r.data, '\n')
			}
			if len(r.data)+len(value) > r.max {
				return Event{}, ErrEventTooLarge
			}
			r.data = append(r.data, value...)
			hasData = true
		case "event":
			r.name = append(r.name[:0], value...)
		}
	}
}

// AppendEvent appends one event in SSE framing. A nil or empty name writes a
// data-only event. Data containing newlines is split into several data lines.
func AppendEvent(b, name, data []byte) []byte {
	if len(name) > 0 {
		b = append(b, "event: "...)
		b = append(b, name...)
		b = append(b, '\n')
	}
	for {
		i := bytes.IndexByte(data, '\n')
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		data = data[i+1:]
	}
	return append(b, '\n', '\n')
}

// Done is OpenAI's terminal event.
var Done = []byte("[DONE]")
