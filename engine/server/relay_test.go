package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
)

// rawRequest is an HTTP/1.1 (or 1.0) chat request with extra header lines.
func rawRequest(proto, body string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST /v1/chat/completions %s\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", proto, len(body))
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

// dial opens a connection to h's server, closed with the test, with a
// deadline that ends a hung test.
func (h *harness) dial() net.Conn {
	h.t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// openStream sends a streamed request for model on a new connection and
// returns its reader once the answer's first bytes have arrived.
func (h *harness) openStream(model string) *bufio.Reader {
	h.t.Helper()
	c := h.dial()
	fmt.Fprint(c, rawRequest("HTTP/1.1", chat(model, `,"stream":true`)))
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		h.t.Fatalf("stream of %s: %v", model, err)
	}
	return br
}

// readResponse reads one whole response from br.
func readResponse(t *testing.T, br *bufio.Reader, what string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: status %d, %v: %s", what, resp.StatusCode, err, b)
	}
	return resp, b
}

// readStream reads one response from br and checks it is a whole stream.
func readStream(t *testing.T, br *bufio.Reader, what string) *http.Response {
	t.Helper()
	resp, b := readResponse(t, br, what)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: status %d: %s", what, resp.StatusCode, b)
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("x-request-id") == "" {
		t.Fatalf("%s: headers %v", what, resp.Header)
	}
	if ev := events(b); len(ev) < 2 || ev[len(ev)-1][1] != "[DONE]" {
		t.Fatalf("%s: stream without its end: %q", what, b)
	}
	return resp
}

func readCompletion(t *testing.T, br *bufio.Reader, what string) {
	t.Helper()
	resp, b := readResponse(t, br, what)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"choices"`) {
		t.Fatalf("%s: status %d: %s", what, resp.StatusCode, b)
	}
}

// A stream is relayed on the hijacked connection, which then goes on
// serving requests: keep-alive across streams, and a request the client
// pipelined behind a stream (read by fasthttp into its buffer before the
// hijack) is answered after it, with and without server.reduce_memory.
func TestRawRelayKeepAliveAndPipelining(t *testing.T) {
	for _, reduce := range []bool{false, true} {
		t.Run(fmt.Sprintf("reduce_memory=%v", reduce), func(t *testing.T) {
			h := newHarness(t, "", config.ServerSettings{ReduceMemory: reduce})
			c := h.dial()
			br := bufio.NewReader(c)
			stream := rawRequest("HTTP/1.1", chat("gpt-4o", `,"stream":true`))
			plain := rawRequest("HTTP/1.1", chat("gpt-4o", ""))

			for i := 0; i < 3; i++ {
				fmt.Fprint(c, stream)
				resp := readStream(t, br, fmt.Sprintf("stream %d", i))
				if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Close {
					t.Fatalf("stream %d: transfer encoding %v, close %v", i, resp.TransferEncoding, resp.Close)
				}
				fmt.Fprint(c, plain)
				readCompletion(t, br, fmt.Sprintf("request after stream %d", i))
			}
			// Pipelined: a stream, a completion and another stream in one write.
			if _, err := io.WriteString(c, stream+plain+stream); err != nil {
				t.Fatal(err)
			}
			readStream(t, br, "pipelined stream")
			readCompletion(t, br, "completion pipelined behind a stream")
			readStream(t, br, "second pipelined stream")
			fmt.Fprint(c, plain)
			readCompletion(t, br, "request after the pipelined ones")
		})
	}
}

// A client that sends Connection: close gets it back, and the connection
// ends with the stream.
func TestRawRelayConnectionClose(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	c := h.dial()
	fmt.Fprint(c, rawRequest("HTTP/1.1", chat("gpt-4o", `,"stream":true`), "Connection: close"))
	br := bufio.NewReader(c)
	resp := readStream(t, br, "stream")
	if !resp.Close {
		t.Fatalf("no Connection: close in %v", resp.Header)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection still open after the stream: %d bytes, %v", n, err)
	}
}

// An HTTP/1.0 client cannot read chunked encoding: its stream is the bare
// events, delimited by the connection's end.
func TestStreamToHTTP10Client(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	c := h.dial()
	fmt.Fprint(c, rawRequest("HTTP/1.0", chat("gpt-4o", `,"stream":true`)))
	resp := readStream(t, bufio.NewReader(c), "HTTP/1.0 stream")
	if len(resp.TransferEncoding) != 0 {
		t.Fatalf("chunked answer to an HTTP/1.0 client: %v", resp.TransferEncoding)
	}
}

// Open streams leave fasthttp's connection loop: while 20 streams are
// under way the server's loop serves no connection (its buffers, request
// context and worker are back in their pools), the relay counts 20; when
// they end, every stream is whole and the count is back to 0.
func TestOpenStreamsLeaveTheConnectionLoop(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{})
	const n = 20
	var held []*bufio.Reader
	for range n {
		held = append(held, h.openStream("slow")) // 100 chunks 10 ms apart
	}
	if got := h.srv.streams.Load(); got != n {
		t.Fatalf("%d streams relayed raw, want %d", got, n)
	}
	// fasthttp lets a connection go once its handler has returned.
	for end := time.Now().Add(5 * time.Second); h.srv.srv.GetCurrentConcurrency() != 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if got := h.srv.srv.GetCurrentConcurrency(); got != 0 {
		t.Fatalf("fasthttp still serves %d connections while only streams are open", got)
	}
	for i, br := range held {
		readStream(t, br, fmt.Sprintf("stream %d", i))
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.streams.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := h.srv.streams.Load(); got != 0 {
		t.Fatalf("%d streams still counted after they ended", got)
	}
}

// With server.max_conns, streams stay in fasthttp's loop so that the limit
// counts them: a connection over the limit is refused while streams hold
// the others.
func TestMaxConnsCountsRelayedStreams(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{MaxConns: 2})
	var held []*bufio.Reader
	for range 2 {
		held = append(held, h.openStream("slow"))
	}
	c := h.dial()
	fmt.Fprint(c, rawRequest("HTTP/1.1", chat("gpt-4o", "")))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil && resp.StatusCode == 200 {
		t.Fatalf("a third connection was served with max_conns 2 and two open streams")
	}
	if got := h.srv.streams.Load(); got != 0 {
		t.Fatalf("%d streams relayed raw with max_conns set", got)
	}
	for i, br := range held {
		readStream(t, br, fmt.Sprintf("held stream %d", i))
	}
}

// server.lean_streams_after: the first streams stay in fasthttp's loop,
// those opened past the threshold are relayed raw, and all are whole.
func TestLeanStreamsAfterThreshold(t *testing.T) {
	h := newHarness(t, "", config.ServerSettings{LeanStreamsAfter: 2})
	var held []*bufio.Reader
	for range 4 {
		held = append(held, h.openStream("slow"))
	}
	if got := h.srv.streams.Load(); got != 2 {
		t.Fatalf("%d of 4 streams relayed raw with lean_streams_after 2, want 2", got)
	}
	if got := h.srv.open.Load(); got != 4 {
		t.Fatalf("%d streams counted open, want 4", got)
	}
	for i, br := range held {
		readStream(t, br, fmt.Sprintf("stream %d", i))
	}
	for end := time.Now().Add(5 * time.Second); h.srv.open.Load() != 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if got := h.srv.open.Load(); got != 0 {
		t.Fatalf("%d streams still counted open after they ended", got)
	}
}

// streamsDone waits until no stream is open on h's server: a stream's
// spend record and log line are handed over after its last byte, so a test
// that reads them after a stream's response waits for this first.
func (h *harness) streamsDone() {
	h.t.Helper()
	for end := time.Now().Add(10 * time.Second); h.srv.open.Load() != 0; {
		if time.Now().After(end) {
			h.t.Fatalf("%d streams still open", h.srv.open.Load())
		}
		time.Sleep(time.Millisecond)
	}
}
