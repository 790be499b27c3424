package server

import (
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/telemetry"
)

// Streams are relayed on the raw connection, once many are open.
//
// Through fasthttp's body writer, an open stream holds everything its
// connection's loop holds: the 8 KiB read buffer, the 4 KiB write buffer,
// the RequestCtx with its request and response, and a goroutine whose stack
// grew with the whole pipeline. For a connection that will do nothing but
// wait for the next upstream event that is two thirds of what an idle
// stream costs (the 10,000 idle streams of bench (e)).
//
// So a stream on one of the server's connections goes like this: the
// handler writes the response head and the first event itself, in one
// write (the first byte does not wait for a goroutine switch), copies the
// request's headers off the RequestCtx and takes its body, and hijacks the
// connection without a response. fasthttp then returns its buffers and the
// RequestCtx to its pools and its worker goroutine to its pool; a new
// goroutine, whose stack is only as deep as the relay, writes each further
// event (or events read together) as one chunk in one write. When the
// stream has ended, the same goroutine serves the connection's next
// requests (Server.ServeConn), or closes it when the client asked for that
// or the server is shutting down.
//
// To an HTTP/1.0 client (no chunked encoding) the events go out as they
// are and the connection closes after the last. Requests the server's loop
// did not read (Handle, in tests) and servers with server.max_conns set
// keep fasthttp's body writer.
//
// The handoff has a cost, measured by BenchmarkStreamFirstByteAdded/lean
// against /default on one keep-alive connection: about 40 µs more from the
// upstream's first event to the client's first byte and about 100 µs more
// from the client's send (p50, this 2-core VM), none on new connections;
// the request after a stream is read by ServeConn on a fresh goroutine,
// and each stream leaves 8 KiB of garbage (fasthttp's read buffer, which
// it leaves to a kept hijacked connection). So streams take this path only
// past server.lean_streams_after open streams, when memory is what counts.

// relayable reports whether ctx's stream may be relayed raw: past
// server.lean_streams_after open streams (below, the connection's loop, with
// its warm goroutine, gives the first byte sooner and memory is not short).
// Not with server.max_conns set: fasthttp's limit counts the connections
// its loop serves, and a hijacked one leaves that count, so such a server
// keeps its streams in the loop for the limit to hold.
func (s *Server) relayable(ctx *fasthttp.RequestCtx) bool {
	return s.settings.MaxConns <= 0 && s.open.Load() > int64(s.settings.LeanStreamsAfter) &&
		ctx.Conn() != nil && !s.stopping.Load()
}

// chunkRoom is the room kept before a chunk's payload in streamBody.out for
// its size line: up to 8 hex digits and CRLF.
const chunkRoom = 10

var lastChunk = []byte("0\r\n\r\n")

var headerPool = sync.Pool{New: func() any { return new(fasthttp.RequestHeader) }}

// relayRaw prepares the response head and b's first event, writes them in
// one write on the first request of a connection (from the handler's
// goroutine: the first byte does not wait for a goroutine switch),
// detaches the exchange from ctx and hijacks the connection. On a later
// request fasthttp may still hold the previous answer in its buffer (it
// batches answers to pipelined requests), so hijacked writes them once
// fasthttp has flushed. The rest of the stream runs in relay.
func (s *Server) relayRaw(ctx *fasthttp.RequestCtx, b *streamBody) {
	s.streams.Add(1) // relay takes it back, whatever happens
	h := &ctx.Response.Header
	b.chunked = ctx.Request.Header.IsHTTP11()
	b.keep = b.chunked && !ctx.Request.Header.ConnectionClose()
	if b.chunked {
		h.SetContentLength(-1)
	} else {
		// HTTP/1.0: no chunked encoding; the body ends with the
		// connection.
		h.SetContentLength(-2)
	}
	if !b.keep {
		h.SetConnectionClose()
	}
	b.conn = ctx.Conn()

	b.out = append(b.out[:0], make([]byte, chunkRoom)...)
	b.step()
	b.more()
	first := h.AppendBytes(make([]byte, 0, 512+len(b.out)))
	first = append(first, b.chunk()...)
	if b.ended && b.chunked {
		first = append(first, lastChunk...)
	}
	b.head = first
	if ctx.ConnRequestNum() == 1 {
		b.writeHead()
	}

	// What the rest of the exchange may still read of the request must
	// outlive ctx, which goes back to fasthttp's pool after the hijack: the
	// headers are copied; the body buffer (and whatever points into it:
	// the parsed request, the policy input) is taken from ctx.
	b.hdr = headerPool.Get().(*fasthttp.RequestHeader)
	ctx.Request.Header.CopyTo(b.hdr)
	b.x.Header = b.hdr
	_ = ctx.Request.SwapBody(nil)
	b.ctx = nil

	ctx.HijackSetNoResponse(true)
	ctx.Hijack(b.hijacked)
}

// writeHead writes the response head and first event.
func (b *streamBody) writeHead() {
	telemetry.Mark(telemetry.MarkBody)
	b.sentFirst = true
	b.x.FirstByte = time.Since(b.x.Start)
	b.writeDeadline()
	_, b.werr = b.conn.Write(b.head)
	b.head = nil
	// fasthttp clears the connection's deadlines when it hijacks it: the
	// relay's first write sets a new one.
	b.wtSet = time.Time{}
}

// chunk frames b.out (chunkRoom bytes of room, then the payload) as one
// HTTP/1.1 chunk in place and returns it; an empty payload is no chunk.
// To an HTTP/1.0 client it returns the payload as it is.
func (b *streamBody) chunk() []byte {
	n := len(b.out) - chunkRoom
	if n <= 0 {
		return nil
	}
	if !b.chunked {
		return b.out[chunkRoom:]
	}
	var hex [8]byte
	size := strconv.AppendUint(hex[:0], uint64(n), 16)
	start := chunkRoom - len(size) - 2
	copy(b.out[start:], size)
	b.out[chunkRoom-2], b.out[chunkRoom-1] = '\r', '\n'
	b.out = append(b.out, '\r', '\n')
	return b.out[start:]
}

// hijacked runs on the goroutine fasthttp starts for the hijacked
// connection. It takes the bytes fasthttp had read past the request (a
// pipelined request; normally none) and leaves at once, so that fasthttp
// releases the RequestCtx, then relays the rest of the stream on a
// goroutine of its own.
func (b *streamBody) hijacked(hc net.Conn) {
	if b.head != nil {
		b.writeHead()
	}
	var left []byte
	if b.werr == nil && b.keep {
		left = buffered(hc, b.conn, b.out[:cap(b.out)])
	}
	go b.relay(left)
}

// buffered returns what hc (the hijacked connection, which reads through
// the server's read buffer) has already buffered, without waiting for the
// network: c's read deadline is in the past while it reads. p is scratch
// space.
func buffered(hc, c net.Conn, p []byte) []byte {
	if len(p) == 0 || c.SetReadDeadline(time.Unix(1, 0)) != nil {
		return nil
	}
	var left []byte
	for len(left) < 1<<20 {
		n, err := hc.Read(p)
		left = append(left, p[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return left
}

// relay writes the rest of the stream, finishes the exchange and goes on
// serving the connection.
func (b *streamBody) relay(left []byte) {
	s, c, keep, hdr := b.s, b.conn, b.keep, b.hdr
	ok := b.werr == nil && b.relayRest()
	b.Close() // b is the released exchange's: not touched after
	headerPool.Put(hdr)
	s.streams.Add(-1)
	if !ok || !keep || s.stopping.Load() {
		_ = c.Close()
		return
	}
	_ = c.SetWriteDeadline(time.Time{})
	if len(left) > 0 {
		c = &prefixConn{Conn: c, p: left}
	}
	_ = s.srv.ServeConn(c)
}

// relayRest writes each further event (or run of events read together) as
// one chunk in one write, and the last chunk with the stream's last event;
// false: a write failed.
func (b *streamBody) relayRest() bool {
	for !b.ended {
		b.out = b.out[:chunkRoom]
		if b.wait != nil && !b.hasFirst {
			// Block here, a few frames deep: see provider.Waiter.
			b.wait.Wait()
		}
		b.step()
		b.more()
		w := b.chunk()
		if b.ended && b.chunked {
			w = append(w, lastChunk...)
		}
		if len(w) == 0 {
			continue
		}
		b.writeDeadline()
		if _, err := b.conn.Write(w); err != nil {
			return false
		}
	}
	return true
}

// prefixConn reads p before its connection.
type prefixConn struct {
	net.Conn
	p []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.p) > 0 {
		n := copy(b, c.p)
		c.p = c.p[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
