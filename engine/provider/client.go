package provider

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// The upstream client: a plain HTTP/1.1 exchange on a pooled connection.
// The request head is built from bytes the endpoint serialised once
// (request line, host, fixed headers) and goes out with the body in one
// write; the response head is read line by line for what the gateway
// needs (status, framing, Connection, Retry-After); the body is de-chunked
// as it is read (bodyReader), straight into the SSE reader of a stream or
// into a pooled buffer for a whole response.
//
// fasthttp's HostClient, which this replaced, does much more per call (a
// Request copied from a template, a general header parser, a body stream
// with a lock and a few allocations per read). With cold caches, as in
// bench (c), a stream's first byte came about 35 µs sooner from the
// client's send this way (BenchmarkStreamFirstByteAdded/cold, against the
// bare hop, which keeps fasthttp's client). Owning the connection is also
// what lets a stream keep its header deadline until the first token and
// then move to its own, without a table of connections.
//
// What it does as fasthttp did: one pool per host, most recently used
// connection first, idle connections closed after 90 s; at most 65,536
// connections per host; an https upstream's handshake in the dial
// goroutine; a request that met a pooled connection the upstream had
// closed before any response byte is sent once more on a new connection;
// whole response bodies up to 256 MiB. FuzzStreamResponse holds its
// reading of heads and bodies to net/http's.

const (
	// idleMax is how long an idle connection is kept.
	idleMax = 90 * time.Second
	// maxHostConns bounds one host's connections (each open stream
	// holds one).
	maxHostConns = 1 << 16
	// connReadBuf is a connection's read buffer. An idle stream holds
	// it for its whole life; a longer line than this in a response head is
	// an error (fasthttp's limit was its 4 KiB buffer for the whole head).
	connReadBuf = 4 << 10
	// maxHead bounds a response head (status line and headers).
	maxHead = 64 << 10
	// inlineBody is the largest body written in the same buffer as the
	// request head; a larger one is written from where it is.
	inlineBody = 32 << 10
)

// hostPool is one upstream host's connections.
type hostPool struct {
	c    *Client
	addr string      // host:port dialled
	tls  *tls.Config // nil: plain http

	mu       sync.Mutex
	idle     []*hostConn // least recently used first
	sweeping bool        // a sweep of expired idle connections is due
	open     atomic.Int64
}

// hostConn is one connection and its read buffer.
type hostConn struct {
	net.Conn
	br        *bufio.Reader
	idleSince time.Time
}

// pool returns addr's pool of connections, made on first use.
func (c *Client) pool(addr, host string, isTLS bool) *hostPool {
	key := "http://" + addr
	if isTLS {
		key = "https://" + addr
	}
	if v, ok := c.pools.Load(key); ok {
		return v.(*hostPool)
	}
	h := &hostPool{c: c, addr: addr}
	if isTLS {
		h.tls = c.tlsFor(addr, host)
	}
	v, _ := c.pools.LoadOrStore(key, h)
	return v.(*hostPool)
}

// tlsFor is the TLS configuration of an https host: Prepare's, or a new
// one.
func (c *Client) tlsFor(addr, host string) *tls.Config {
	if v, ok := c.tls.Load(addr); ok {
		return v.(*tls.Config)
	}
	return c.newTLSConfig(host)
}

// newTLSConfig is a host's TLS configuration: Client.TLSConfig's (or the
// defaults, TLS 1.2 at least) with the host as server name, the client's
// session cache, and HTTP/1.1 only: the exchange is HTTP/1.1.
func (c *Client) newTLSConfig(host string) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLSConfig != nil {
		cfg = c.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = c.sessions
	}
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// get returns the most recently used idle connection, or nil.
func (h *hostPool) get() *hostConn {
	h.mu.Lock()
	n := len(h.idle)
	if n == 0 {
		h.mu.Unlock()
		return nil
	}
	sc := h.idle[n-1]
	if time.Since(sc.idleSince) >= idleMax {
		// The most recent has expired, so have all the others.
		old := h.idle
		h.idle = nil
		h.mu.Unlock()
		for _, sc := range old {
			h.discard(sc)
		}
		return nil
	}
	h.idle[n-1] = nil
	h.idle = h.idle[:n-1]
	h.mu.Unlock()
	return sc
}

// put keeps sc for the next call (whose deadlines replace the last
// call's, which an idle connection leaves in place: a passed deadline
// closes nothing).
func (h *hostPool) put(sc *hostConn) {
	sc.idleSince = time.Now()
	h.mu.Lock()
	h.idle = append(h.idle, sc)
	sweep := !h.sweeping
	h.sweeping = true
	h.mu.Unlock()
	if sweep {
		time.AfterFunc(idleMax/4, h.sweep)
	}
}

// sweep closes the idle connections that have expired, and runs again
// while any are left.
func (h *hostPool) sweep() {
	h.mu.Lock()
	n := 0
	for n < len(h.idle) && time.Since(h.idle[n].idleSince) >= idleMax {
		n++
	}
	expired := append([]*hostConn(nil), h.idle[:n]...)
	h.idle = append(h.idle[:0], h.idle[n:]...)
	again := len(h.idle) > 0
	h.sweeping = again
	h.mu.Unlock()
	for _, sc := range expired {
		h.discard(sc)
	}
	if again {
		time.AfterFunc(idleMax/4, h.sweep)
	}
}

// closeIdle closes every idle connection.
func (h *hostPool) closeIdle() {
	h.mu.Lock()
	old := h.idle
	h.idle = nil
	h.mu.Unlock()
	for _, sc := range old {
		h.discard(sc)
	}
}

func (h *hostPool) discard(sc *hostConn) {
	_ = sc.Close()
	h.open.Add(-1)
}

// dial opens a new connection, within the host's cap.
func (h *hostPool) dial(deadline time.Time) (*hostConn, error) {
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return nil, fasthttp.ErrTimeout
	}
	if h.open.Add(1) > maxHostConns {
		h.open.Add(-1)
		return nil, fasthttp.ErrNoFreeConns
	}
	conn, err := h.c.dialWith(h.addr, timeout, h.tls)
	if err != nil {
		h.open.Add(-1)
		return nil, err
	}
	return &hostConn{Conn: conn, br: bufio.NewReaderSize(conn, connReadBuf)}, nil
}

// requestHead is an endpoint's request as bytes: the request line, Host
// and the fixed headers (fields), serialised once (head, without the
// Content-Length and the blank line that end it).
type requestHead struct {
	line   string      // "POST /path HTTP/1.1\r\n"
	fields [][2]string // Host first
	head   []byte
}

// newRequestHead serialises an endpoint's request: Host, User-Agent,
// Content-Type, the endpoint's headers (Set semantics: a later one of the
// same name replaces an earlier one), then Accept.
func newRequestHead(u *fasthttp.URI, headers [][2]string, accept string) (*requestHead, error) {
	sr := &requestHead{line: "POST " + string(u.RequestURI()) + " HTTP/1.1\r\n"}
	sr.fields = setField(sr.fields, "Host", string(u.Host()))
	sr.fields = setField(sr.fields, "User-Agent", "portcullis")
	sr.fields = setField(sr.fields, "Content-Type", "application/json")
	for _, h := range headers {
		if !validField(h[0], h[1]) {
			return nil, fmt.Errorf("invalid header %q in the deployment's headers", h[0])
		}
		switch strings.ToLower(h[0]) {
		case "content-length", "transfer-encoding", "connection":
			// The request's framing is the client's.
			continue
		}
		sr.fields = setField(sr.fields, h[0], h[1])
	}
	sr.fields = setField(sr.fields, "Accept", accept)
	sr.head = appendFields([]byte(sr.line), sr.fields)
	return sr, nil
}

// setField sets name to v (replacing any field of that name, in place).
func setField(fields [][2]string, name, v string) [][2]string {
	for i := range fields {
		if strings.EqualFold(fields[i][0], name) {
			fields[i][1] = v
			return fields
		}
	}
	return append(fields, [2]string{name, v})
}

func delField(fields [][2]string, name string) [][2]string {
	return slices.DeleteFunc(fields, func(f [2]string) bool { return strings.EqualFold(f[0], name) })
}

func appendFields(b []byte, fields [][2]string) []byte {
	for _, f := range fields {
		b = append(b, f[0]...)
		b = append(b, ": "...)
		b = append(b, f[1]...)
		b = append(b, "\r\n"...)
	}
	return b
}

// validField reports a header a request may carry: a token name, a value
// without CR, LF or NUL (which would split or end the head).
func validField(name, v string) bool {
	return ValidHeaderName(name) && !strings.ContainsAny(v, "\r\n\x00")
}

// ValidHeaderName reports an HTTP field name: one or more token
// characters (RFC 9110 5.6.2).
func ValidHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// appendHead appends the request head for one call: the endpoint's
// serialised head when nothing changes its fields, else its fields with
// extra set, then r's removals and settings (neither on protected
// headers), then Content-Length and the blank line.
func (sr *requestHead) appendHead(b []byte, r *Request, extra [][2]string, n int) ([]byte, error) {
	simple := len(r.RemoveHeaders) == 0 && len(r.SetHeaders) == 0
	for _, h := range extra {
		if !simple {
			break
		}
		for _, f := range sr.fields {
			if strings.EqualFold(f[0], h[0]) {
				simple = false
				break
			}
		}
	}
	if simple {
		b = append(b, sr.head...)
		for _, h := range extra {
			if !validField(h[0], h[1]) {
				return b, fmt.Errorf("invalid header %q", h[0])
			}
		}
		b = appendFields(b, extra)
	} else {
		fields := append(make([][2]string, 0, len(sr.fields)+len(extra)+len(r.SetHeaders)), sr.fields...)
		for _, h := range extra {
			if !strings.EqualFold(h[0], "accept") {
				// The dialect decides what is accepted.
				fields = setField(fields, h[0], h[1])
			}
		}
		for _, name := range r.RemoveHeaders {
			if !Protected(name) {
				fields = delField(fields, name)
			}
		}
		for _, h := range r.SetHeaders {
			if !Protected(h[0]) {
				fields = setField(fields, h[0], h[1])
			}
		}
		for _, f := range fields {
			if !validField(f[0], f[1]) {
				return b, fmt.Errorf("invalid header %q", f[0])
			}
		}
		b = append(b, sr.line...)
		b = appendFields(b, fields)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, "\r\n\r\n"...), nil
}

var headPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// call makes one call on t's host: the request is written and the
// response head read under headerDeadline; a 2xx answer to a stream
// becomes a stream under deadline, to anything else a body read whole; any
// other status, an upstream error.
func (ep *Endpoint) call(t *endpointTemplate, r *Request, body []byte, d llm.Dialect, extra [][2]string,
	headerDeadline, deadline time.Time) (*Response, error) {
	rq := t.json
	if r.Stream {
		rq = t.sse
	}
	var rh respHead
	sc, err := ep.roundTrip(t.pool, rq, r, body, extra, headerDeadline, &rh)
	telemetry.Mark(telemetry.MarkUpstreamHead)
	if err != nil {
		return nil, err
	}
	if headerDeadline != deadline && (!r.Stream || rh.status < 200 || rh.status > 299) {
		_ = sc.SetReadDeadline(deadline)
	}
	if rh.status < 200 || rh.status > 299 {
		var b bodyReader
		keep := b.frame(sc, &rh)
		eb, _ := io.ReadAll(io.LimitReader(&b, maxErrorBody))
		t.pool.release(sc, &b, keep)
		return nil, ep.UpstreamError(rh.status, eb, rh.retryAfter)
	}
	if !r.Stream {
		var b bodyReader
		keep := b.frame(sc, &rh)
		bp, err := b.readAll()
		t.pool.release(sc, &b, keep)
		if err != nil {
			if errors.Is(err, errBodyTooLarge) {
				return nil, errs.New(502, errs.CodeUpstreamProtocol, ep.Provider+": "+err.Error())
			}
			return nil, ep.transportError(err)
		}
		return &Response{Dialect: d, Status: rh.status, Body: *bp, buf: bp}, nil
	}
	st := &httpStream{h: t.pool, sc: sc, ep: ep}
	st.keep = st.body.frame(sc, &rh)
	if headerDeadline != deadline {
		// The header deadline bounds the first token too, until
		// FirstTokenArrived moves the connection to the call's own.
		st.deadline = deadline
	}
	st.rd.Init(&st.body, 0, st.buf[:], st.data[:])
	st.out = Response{Dialect: d, Status: rh.status, Stream: st}
	return &st.out, nil
}

// roundTrip writes the request (rq's head for r with extra, and body) on
// one of p's connections, idle or new, and reads the response head into
// rh, under headerDeadline. A pooled connection the upstream had closed
// while idle (the request never reached it) costs one more try, on a new
// connection.
func (ep *Endpoint) roundTrip(p *hostPool, rq *requestHead, r *Request, body []byte, extra [][2]string,
	headerDeadline time.Time, rh *respHead) (*hostConn, error) {
	bp := headPool.Get().(*[]byte)
	head, err := rq.appendHead((*bp)[:0], r, extra, len(body))
	if err != nil {
		headPool.Put(bp)
		return nil, errs.New(500, errs.CodeInternal, ep.Provider+": "+err.Error())
	}
	inline := len(body) <= inlineBody
	if inline {
		head = append(head, body...)
	}
	var sc *hostConn
	for attempt := 0; ; attempt++ {
		sc = nil
		if attempt == 0 {
			sc = p.get()
		}
		if sc == nil {
			if sc, err = p.dial(headerDeadline); err != nil {
				break
			}
		}
		_ = sc.SetDeadline(headerDeadline)
		err = sc.send(head, body, inline)
		if err == nil {
			err = rh.read(sc.br)
		}
		if err == nil {
			break
		}
		p.discard(sc)
		sc = nil
		if attempt > 0 || !staleConn(err) {
			break
		}
	}
	if cap(head) <= 64<<10 {
		*bp = head[:0]
		headPool.Put(bp)
	}
	if err != nil {
		return nil, ep.transportError(err)
	}
	return sc, nil
}

// release gives sc back to the pool once its response was read to the
// end and the connection may be kept (keep); it closes it otherwise.
func (p *hostPool) release(sc *hostConn, b *bodyReader, keep bool) {
	if keep && b.ended.Load() {
		p.put(sc)
	} else {
		p.discard(sc)
	}
}

// send writes the request: head (with the body in it when inline), else
// head and body in one vectored write.
func (sc *hostConn) send(head, body []byte, inline bool) error {
	if inline {
		_, err := sc.Write(head)
		return err
	}
	bufs := net.Buffers{head, body}
	_, err := bufs.WriteTo(sc.Conn)
	return err
}

// errNoResponse: the connection ended before any byte of a response.
var errNoResponse = errors.New("upstream closed the connection before responding")

// staleConn reports a failure that means the request never reached the
// upstream: the connection was closed (or reset) before it answered.
func staleConn(err error) bool {
	return errors.Is(err, errNoResponse) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// respHead is what the gateway needs of a response head.
type respHead struct {
	status     int
	chunked    bool
	length     int64 // -1: not given
	close      bool  // the connection cannot be reused afterwards
	noBody     bool
	retryAfter []byte
}

// read reads a response head, skipping interim (1xx) responses.
func (rh *respHead) read(br *bufio.Reader) error {
	*rh = respHead{length: -1}
	total := 0
	for {
		line, err := headLine(br, &total)
		if err != nil {
			if total == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
				return fmt.Errorf("%w: %w", errNoResponse, err)
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || (line[7] != '0' && line[7] != '1') || line[8] != ' ' ||
			(len(line) > 12 && line[12] != ' ') {
			return fmt.Errorf("malformed response status line %q", truncate(line))
		}
		status, err := strconv.Atoi(string(line[9:12]))
		if err != nil || status < 100 {
			return fmt.Errorf("malformed response status line %q", truncate(line))
		}
		rh.status = status
		rh.close = line[7] == '0' // HTTP/1.0: no keep-alive
		te := false
		for {
			line, err := headLine(br, &total)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			if len(line) == 0 {
				break
			}
			name, v, ok := bytes.Cut(line, []byte(":"))
			if !ok || len(name) == 0 || name[0] == ' ' || name[0] == '\t' {
				continue // not a field (or an obsolete line folding): ignored
			}
			v = bytes.TrimSpace(v)
			switch {
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				te = true
				last := v
				if i := bytes.LastIndexByte(v, ','); i >= 0 {
					last = bytes.TrimSpace(v[i+1:])
				}
				rh.chunked = bytes.EqualFold(last, []byte("chunked"))
			case bytes.EqualFold(name, []byte("Content-Length")):
				n, err := strconv.ParseInt(string(v), 10, 64)
				if err != nil || n < 0 || (rh.length >= 0 && n != rh.length) {
					return fmt.Errorf("malformed response Content-Length %q", truncate(v))
				}
				rh.length = n
			case bytes.EqualFold(name, []byte("Connection")):
				for _, tok := range bytes.Split(v, []byte(",")) {
					if bytes.EqualFold(bytes.TrimSpace(tok), []byte("close")) {
						rh.close = true
					}
				}
			case bytes.EqualFold(name, []byte("Retry-After")):
				rh.retryAfter = append(rh.retryAfter[:0], v...)
			}
		}
		if status >= 200 || status == 101 {
			if te {
				// Transfer-Encoding overrides Content-Length (both: a
				// sign of response splitting, so the connection is not
				// reused, RFC 9112 6.3); a coding other than chunked last
				// runs to the connection's end, and so does any in an
				// HTTP/1.0 response (faulty framing, RFC 9112 6.1;
				// net/http reads it so too).
				if rh.length >= 0 {
					rh.close = true
				}
				rh.length = -1
				if line[7] == '0' {
					rh.chunked = false
				}
				if !rh.chunked {
					rh.close = true
				}
			}
			rh.noBody = status == 204 || status == 304
			if status == 101 {
				return fmt.Errorf("unexpected response status %d", status)
			}
			return nil
		}
		// An interim response (100 Continue, 103 Early Hints): the
		// final one follows.
		*rh = respHead{length: -1}
	}
}

// headLine returns the next line of a head without its line end; total
// counts the head's bytes against maxHead.
func headLine(br *bufio.Reader, total *int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	*total += len(line)
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("upstream response head line over 4 KiB")
		}
		return nil, err
	}
	if *total > maxHead {
		return nil, errors.New("upstream response head over 64 KiB")
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// bodyReader reads a response body as its head framed it: chunked, so
// many bytes, or up to the connection's end.
type bodyReader struct {
	br      *bufio.Reader
	chunked bool
	// left: Content-Length bytes left (-1: not given); chunked, the bytes
	// left of the current chunk.
	left int64
	crlf bool // chunked: the current chunk's CRLF is still to be read
	// ended: the body was read to its end, and the connection holds
	// nothing more of it (it may serve the next call). Set by the reading
	// goroutine, read by Close (maybe a timer's).
	ended atomic.Bool
	err   error
}

// frame readies b to read the body rh frames on sc and reports whether the
// connection may serve another call after it (the body has an end of its
// own, and neither side asked to close).
func (b *bodyReader) frame(sc *hostConn, rh *respHead) bool {
	b.br, b.left = sc.br, rh.length
	switch {
	case rh.noBody:
		b.left = 0
	case rh.chunked:
		b.chunked, b.left = true, 0
	case rh.length < 0:
		return false // the body ends with the connection
	}
	return !rh.close
}

// maxBody bounds a whole response body.
const maxBody = 256 << 20

var errBodyTooLarge = errors.New("upstream response body over 256 MiB")

// bodyPool holds the buffers whole response bodies are read into
// (Response.Release puts them back).
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readAll reads the whole body into a pooled buffer.
func (b *bodyReader) readAll() (*[]byte, error) {
	bp := bodyPool.Get().(*[]byte)
	buf := (*bp)[:0]
	if b.left > maxBody {
		return bp, errBodyTooLarge
	}
	if b.left > int64(cap(buf)) {
		buf = make([]byte, 0, b.left)
	}
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxBody {
				*bp = buf[:0]
				return bp, errBodyTooLarge
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := b.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			*bp = buf
			return bp, nil
		}
		if err != nil {
			*bp = buf[:0]
			return bp, err
		}
	}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	var n int
	var err error
	switch {
	case b.chunked:
		n, err = b.readChunks(p)
	case b.left >= 0:
		if b.left == 0 {
			b.ended.Store(true)
			err = io.EOF
			break
		}
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err = b.br.Read(p)
		b.left -= int64(n)
		if errors.Is(err, io.EOF) && b.left > 0 {
			err = io.ErrUnexpectedEOF
		} else if b.left == 0 {
			b.ended.Store(true)
		}
	default:
		n, err = b.br.Read(p)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// readChunks reads chunked data into p: the current chunk's, and the
// next chunks' while p has room and their size lines are already buffered
// (so that bytes that arrived together are returned together, without
// waiting for the network). At the last chunk it reads the trailer
// section: io.EOF means the body ended cleanly.
func (b *bodyReader) readChunks(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if b.left == 0 {
			if n > 0 && !b.chunkHeadBuffered() {
				return n, nil
			}
			size, err := b.chunkHead()
			if err != nil {
				return n, err
			}
			if size == 0 {
				return n, b.trailer()
			}
			b.left, b.crlf = size, true
		}
		m := min(int64(len(p)-n), b.left)
		k, err := b.br.Read(p[n : n+int(m)])
		n += k
		b.left -= int64(k)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		if b.left > 0 {
			// The rest of the chunk is not here yet.
			return n, nil
		}
	}
	return n, nil
}

// chunkHeadBuffered reports whether the CRLF ending the current chunk and
// the next size line are all in the read buffer.
func (b *bodyReader) chunkHeadBuffered() bool {
	buf, _ := b.br.Peek(b.br.Buffered())
	if b.crlf {
		if len(buf) < 2 {
			return false
		}
		buf = buf[2:]
	}
	return bytes.IndexByte(buf, '\n') >= 0
}

// errChunk: the chunked framing is broken.
var errChunk = errors.New("malformed chunked encoding")

// chunkHead reads the CRLF that ends the current chunk (if any) and the
// next chunk's size line (chunk extensions are ignored).
func (b *bodyReader) chunkHead() (int64, error) {
	total := 0
	if b.crlf {
		line, err := headLine(b.br, &total)
		if err != nil || len(line) != 0 {
			return 0, chunkErr(err)
		}
		b.crlf = false
	}
	line, err := headLine(b.br, &total)
	if err != nil {
		return 0, chunkErr(err)
	}
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1] // whitespace before an extension
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, errChunk
	}
	var size int64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, errChunk
		}
		size = size<<4 | int64(c)
	}
	return size, nil
}

func chunkErr(err error) error {
	switch {
	case err == nil:
		return errChunk
	case errors.Is(err, io.EOF):
		return io.ErrUnexpectedEOF
	}
	return err
}

// trailer reads the trailer section that ends a chunked body (usually only
// its blank line): io.EOF when the body ended cleanly.
func (b *bodyReader) trailer() error {
	total := 0
	for {
		line, err := headLine(b.br, &total)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) == 0 {
			b.ended.Store(true)
			return io.EOF
		}
	}
}

// httpStream is an upstream SSE body. It is not pooled: Close may run on a
// timer goroutine while Next is still returning on the reading one, so its
// memory must outlive both.
type httpStream struct {
	out  Response // the call's response, whose Stream this is
	h    *hostPool
	sc   *hostConn
	ep   *Endpoint
	keep bool // the connection may serve another call once the body ended
	// deadline is the call's own, for FirstTokenArrived to set (zero: it
	// is set already).
	deadline time.Time
	body     bodyReader
	rd       sse.Reader
	closed   atomic.Bool
	mu       sync.Mutex
	// buf and data are rd's first read and event buffers (a typical chunk
	// fits), in the same allocation.
	buf  [512]byte
	data [256]byte
}

func (s *httpStream) Next() (sse.Event, error) {
	if s.closed.Load() {
		return sse.Event{}, ErrStreamClosed
	}
	ev, err := s.rd.Next()
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, sse.ErrEventTooLarge) {
			return ev, errs.New(502, errs.CodeUpstreamProtocol, s.ep.Provider+": stream event over the size limit").Wrap(err)
		}
		if timeout(err) {
			return ev, errs.New(408, errs.CodeUpstreamTimeout, s.ep.Provider+": stream timed out").Wrap(err)
		}
		return ev, errs.New(502, errs.CodeUpstreamProtocol, s.ep.Provider+": stream broken: "+err.Error())
	}
	return ev, err
}

// FirstTokenArrived implements FirstTokenBounded.
func (s *httpStream) FirstTokenArrived() {
	if s.deadline.IsZero() {
		return
	}
	s.mu.Lock()
	if s.sc != nil {
		_ = s.sc.SetReadDeadline(s.deadline)
	}
	s.mu.Unlock()
	s.deadline = time.Time{}
}

// Wait implements Waiter.
func (s *httpStream) Wait() {
	if !s.closed.Load() {
		s.rd.Wait()
	}
}

// Buffered implements Waiter.
func (s *httpStream) Buffered() bool { return !s.closed.Load() && s.rd.Buffered() }

// Close ends the stream. It may be called from another goroutine (a
// deadline timer) while Next is blocked: the connection is closed and Next
// returns an error. A connection whose response was read to its end goes
// back to the pool.
func (s *httpStream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || s.sc == nil {
		return nil
	}
	s.closed.Store(true)
	s.h.release(s.sc, &s.body, s.keep)
	s.sc = nil
	return nil
}

// timeout reports a deadline that passed.
func timeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
