package provider

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
)

// rawUpstream serves each request it reads with answer(n, req), n
// counting requests from 0 across connections, written as it is (with a
// 300 ms wait at each pause); answer returns false to close the connection
// after it. It returns the address
// and the counts of connections and requests.
func rawUpstream(t *testing.T, answer func(n int, req *http.Request) (string, bool)) (string, *atomic.Int32, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns, requests atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					n := int(requests.Add(1)) - 1
					resp, keep := answer(n, req)
					for i, part := range strings.Split(resp, pause) {
						if i > 0 {
							time.Sleep(300 * time.Millisecond)
						}
						if _, err := io.WriteString(c, part); err != nil {
							return
						}
					}
					if !keep {
						return
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String(), &conns, &requests
}

// pause in an answer of rawUpstream: 300 ms without a byte.
const pause = "\x00pause\x00"

func streamEndpoint(addr string) *Endpoint {
	return &Endpoint{Provider: "openai", Client: NewClient(), URL: "http://" + addr + "/v1/chat/completions",
		Headers: [][2]string{{"Authorization", "Bearer sk-test-secret"}}, Secret: "sk-test-secret"}
}

func streamCall(ep *Endpoint, r *Request) (*Response, error) {
	r.Stream = true
	if r.Deadline.IsZero() {
		r.Deadline = time.Now().Add(5 * time.Second)
	}
	return ep.Do(context.Background(), r, []byte(`{"model":"m","stream":true}`), llm.OpenAIChat)
}

// events reads a stream to its end: the events' data, and the error that
// ended it (nil for io.EOF).
func events(s Stream) ([]string, error) {
	var got []string
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, string(ev.Data))
	}
}

// chunk frames s as one chunk of a chunked body.
func chunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }

const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"

// Every framing of a response body is read to its end, as a stream and as
// a whole response; a connection whose body ended cleanly serves the next
// call, one whose body ends with the connection does not.
func TestStreamBodyFramings(t *testing.T) {
	body := "data: {\"n\":0}\n\ndata: [DONE]\n\n"
	for _, tc := range []struct {
		name, resp string
		reused     bool
	}{
		{"chunked", sseHead + "Transfer-Encoding: chunked\r\n\r\n" +
			chunk("data: {\"n\":0}\n\n") + strings.Replace(chunk("data: [DONE]\n\n"), "\r\n", ";ext=1\r\n", 1) + "0\r\nX-Trailer: t\r\n\r\n", true},
		{"length", sseHead + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, true},
		{"connection end", sseHead + "Connection: close\r\n\r\n" + body, false},
		// Both framings: chunked is read, the connection not reused.
		{"chunked and a length", sseHead + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
			chunk(body) + "0\r\n\r\n", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + body, false},
		{"interim response first", "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + sseHead + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns, requests := rawUpstream(t, func(int, *http.Request) (string, bool) {
				return tc.resp, tc.reused
			})
			ep := streamEndpoint(addr)
			for i := 0; i < 3; i++ {
				if i == 1 {
					// A whole response: the same bytes, read as one body.
					resp, err := ep.Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
					if err != nil || string(resp.Body) != body {
						t.Fatalf("whole response: %v, %q", err, body)
					}
					resp.Release()
					continue
				}
				resp, err := streamCall(ep, &Request{})
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				got, err := events(resp.Stream)
				if err != nil || strings.Join(got, " ") != `{"n":0} [DONE]` {
					t.Fatalf("call %d: events %q, %v", i, got, err)
				}
				resp.Release()
			}
			want := int32(3)
			if tc.reused {
				want = 1
			}
			if n := conns.Load(); n != want {
				t.Fatalf("%d connections for %d requests, want %d", n, requests.Load(), want)
			}
			sh := ep.template().pool
			if n := sh.open.Load(); n != int64(want%3) {
				t.Fatalf("%d connections open, want %d", n, want%3)
			}
		})
	}
}

// A stream closed before its end leaves its connection closed: what is
// left of the body must not be read as the next call's response. (A body
// read to its end while reading the events before it is no reason not to
// reuse: TestStreamBodyFramings.)
func TestStreamClosedEarlyIsNotReused(t *testing.T) {
	long := "data: " + strings.Repeat("x", 100<<10) + "\n\n"
	addr, conns, _ := rawUpstream(t, func(int, *http.Request) (string, bool) {
		return sseHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("data: {\"n\":0}\n\n") + chunk(long) +
			chunk("data: [DONE]\n\n") + "0\r\n\r\n", true
	})
	ep := streamEndpoint(addr)
	for i := 0; i < 2; i++ {
		resp, err := streamCall(ep, &Request{})
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := resp.Stream.Next(); err != nil || string(ev.Data) != `{"n":0}` {
			t.Fatalf("first event %q, %v", ev.Data, err)
		}
		resp.Release()
		if _, err := resp.Stream.Next(); !errors.Is(err, ErrStreamClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
	if n := ep.template().pool.open.Load(); n != 0 {
		t.Fatalf("%d connections open, want 0", n)
	}
}

// A pooled connection the upstream closed while idle costs no failed
// stream: the request goes out once more on a new connection.
func TestStreamStaleConnectionIsRetriedOnce(t *testing.T) {
	addr, conns, requests := rawUpstream(t, func(int, *http.Request) (string, bool) {
		// Keep-alive, then closed at once (as an upstream whose idle
		// timeout passed).
		return sseHead + "Content-Length: 14\r\n\r\ndata: [DONE]\n\n", false
	})
	ep := streamEndpoint(addr)
	for i := 0; i < 3; i++ {
		resp, err := streamCall(ep, &Request{})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if _, err := events(resp.Stream); err != nil {
			t.Fatal(err)
		}
		resp.Release()
		time.Sleep(20 * time.Millisecond)
	}
	if n, c := requests.Load(), conns.Load(); n != 3 || c != 3 {
		t.Fatalf("upstream read %d requests on %d connections, want 3 on 3", n, c)
	}
}

// A response cut in its head is not sent again: the upstream may have
// started the work.
func TestStreamHeadCutIsNotRetried(t *testing.T) {
	addr, _, requests := rawUpstream(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Ty", false
	})
	_, err := streamCall(streamEndpoint(addr), &Request{})
	var e *errs.Error
	if !errors.As(err, &e) || e.Status != 502 || !e.Retryable || !strings.Contains(e.Message, "unexpected EOF") {
		t.Fatalf("err = %#v, want a retryable 502 naming the cut", err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := requests.Load(); n != 1 {
		t.Fatalf("upstream read %d requests, want 1", n)
	}
}

// An error status on a stream call is the upstream's error (status,
// message, Retry-After), with the key scrubbed, and the connection, its
// body read, serves the next call.
func TestStreamErrorResponse(t *testing.T) {
	addr, conns, _ := rawUpstream(t, func(n int, _ *http.Request) (string, bool) {
		if n == 0 {
			b := `{"error":{"message":"slow down, sk-test-secret","type":"requests","code":"rate_limit_exceeded"}}`
			return "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n" +
				chunk(b) + "0\r\n\r\n", true
		}
		return sseHead + "Content-Length: 14\r\n\r\ndata: [DONE]\n\n", true
	})
	ep := streamEndpoint(addr)
	_, err := streamCall(ep, &Request{})
	var e *errs.Error
	if !errors.As(err, &e) || e.Status != 429 || e.Code != errs.CodeRateLimited || e.RetryAfter != 7 ||
		!strings.Contains(e.Message, "slow down") || strings.Contains(e.Message, "sk-test-secret") {
		t.Fatalf("err = %#v", err)
	}
	resp, err := streamCall(ep, &Request{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Release()
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// Malformed heads are upstream errors naming what was wrong.
func TestStreamMalformedHead(t *testing.T) {
	for _, tc := range []struct{ resp, want string }{
		{"HTTP/2 200 OK\r\n\r\n", "malformed response status line"},
		{"HTTP/1.1 2x0 OK\r\n\r\n", "malformed response status line"},
		{"SSH-2.0-OpenSSH\r\n\r\n", "malformed response status line"},
		{sseHead + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", "malformed response Content-Length"},
		{sseHead + "Content-Length: -1\r\n\r\n", "malformed response Content-Length"},
		{sseHead + "X-Long: " + strings.Repeat("a", 5000) + "\r\n\r\n", "line over 4 KiB"},
		{"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected response status 101"},
	} {
		addr, _, _ := rawUpstream(t, func(int, *http.Request) (string, bool) { return tc.resp, false })
		_, err := streamCall(streamEndpoint(addr), &Request{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.resp[:min(len(tc.resp), 30)], err, tc.want)
		}
	}
}

// The header deadline bounds the wait for the response head (and the
// first token: TestStreamFirstTokenBound); then the stream's own deadline
// bounds the rest.
func TestStreamDeadlines(t *testing.T) {
	addr, _, _ := rawUpstream(t, func(n int, _ *http.Request) (string, bool) {
		if n == 0 {
			time.Sleep(time.Second)
			return "", false
		}
		// A head and one event, then nothing.
		return sseHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("data: {\"n\":0}\n\n"), true
	})
	ep := streamEndpoint(addr)
	start := time.Now()
	_, err := streamCall(ep, &Request{HeaderDeadline: time.Now().Add(100 * time.Millisecond)})
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.CodeUpstreamTimeout || time.Since(start) > 800*time.Millisecond {
		t.Fatalf("header deadline: err = %v after %v", err, time.Since(start))
	}
	start = time.Now()
	resp, err := streamCall(ep, &Request{HeaderDeadline: time.Now().Add(100 * time.Millisecond), Deadline: time.Now().Add(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Release()
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	resp.Stream.(FirstTokenBounded).FirstTokenArrived()
	got, err := events(resp.Stream)
	if len(got) != 0 || !errors.As(err, &e) || e.Code != errs.CodeUpstreamTimeout {
		t.Fatalf("stream deadline: events %q, err %v", got, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > time.Second {
		t.Fatalf("stream ended after %v, want the 300 ms deadline", d)
	}
	// A deadline already passed fails at once, without dialling.
	if _, err := streamCall(ep, &Request{Deadline: time.Now().Add(-time.Second)}); !errors.As(err, &e) || e.Code != errs.CodeUpstreamTimeout {
		t.Fatalf("past deadline: %v", err)
	}
}

// The header deadline bounds the first token as well (the stream is
// FirstTokenBounded) until FirstTokenArrived, after which the call's own
// deadline applies.
func TestStreamFirstTokenBound(t *testing.T) {
	addr, _, _ := rawUpstream(t, func(int, *http.Request) (string, bool) {
		return sseHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("data: {\"role\":\"assistant\"}\n\n") + pause +
			chunk("data: {\"n\":1}\n\n") + "0\r\n\r\n", true
	})
	ep := streamEndpoint(addr)
	for _, arrived := range []bool{false, true} {
		resp, err := streamCall(ep, &Request{HeaderDeadline: time.Now().Add(100 * time.Millisecond), Deadline: time.Now().Add(2 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Stream.Next(); err != nil {
			t.Fatal(err)
		}
		if arrived {
			resp.Stream.(FirstTokenBounded).FirstTokenArrived()
		}
		ev, err := resp.Stream.Next()
		var e *errs.Error
		switch {
		case !arrived && (!errors.As(err, &e) || e.Code != errs.CodeUpstreamTimeout):
			t.Fatalf("without FirstTokenArrived: %q, %v; want the header deadline's timeout", ev.Data, err)
		case arrived && (err != nil || string(ev.Data) != `{"n":1}`):
			t.Fatalf("after FirstTokenArrived: %q, %v", ev.Data, err)
		}
		resp.Release()
	}
}

// Close from another goroutine (a deadline timer) ends a Next blocked on
// the upstream, and the connection is not kept.
func TestStreamCloseUnblocksNext(t *testing.T) {
	addr, _, _ := rawUpstream(t, func(int, *http.Request) (string, bool) {
		return sseHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("data: {\"n\":0}\n\n"), true
	})
	ep := streamEndpoint(addr)
	resp, err := streamCall(ep, &Request{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, func() { _ = resp.Stream.Close() })
	done := make(chan error, 1)
	go func() { _, err := resp.Stream.Next(); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Next returned an event after Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
	// Close counts the connection out after closing it, which is what
	// woke Next.
	for i := 0; ep.template().pool.open.Load() != 0; i++ {
		if i == 100 {
			t.Fatalf("%d connections open, want 0", ep.template().pool.open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A header value that would split the request head is refused before
// anything is sent; so is a deployment header that could.
func TestStreamHeaderInjectionRefused(t *testing.T) {
	addr, _, requests := rawUpstream(t, func(int, *http.Request) (string, bool) {
		return sseHead + "Content-Length: 14\r\n\r\ndata: [DONE]\n\n", true
	})
	ep := streamEndpoint(addr)
	_, err := streamCall(ep, &Request{SetHeaders: [][2]string{{"X-Tag", "a\r\nX-Evil: 1"}}})
	if err == nil || !strings.Contains(err.Error(), `invalid header "X-Tag"`) {
		t.Fatalf("err = %v", err)
	}
	bad := streamEndpoint(addr)
	bad.Headers = append(bad.Headers, [2]string{"X-Org", "a\nb"})
	if _, err := streamCall(bad, &Request{}); err == nil || !strings.Contains(err.Error(), `invalid header "X-Org"`) {
		t.Fatalf("deployment header: err = %v", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("upstream read %d requests, want 0", n)
	}
}

// Idle connections expire: the pool hands out none older than
// idleMax, and the sweep closes them.
func TestStreamIdleConnectionsExpire(t *testing.T) {
	h := &hostPool{}
	pipe := func() *hostConn {
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		h.open.Add(1)
		return &hostConn{Conn: a}
	}
	old, recent := pipe(), pipe()
	h.put(old)
	h.put(recent)
	old.idleSince = time.Now().Add(-idleMax - time.Second)
	h.sweep()
	if len(h.idle) != 1 || h.idle[0] != recent || h.open.Load() != 1 {
		t.Fatalf("after sweep: %d idle, %d open", len(h.idle), h.open.Load())
	}
	recent.idleSince = time.Now().Add(-idleMax)
	if sc := h.get(); sc != nil {
		t.Fatal("get returned an expired connection")
	}
	if len(h.idle) != 0 || h.open.Load() != 0 {
		t.Fatalf("after get: %d idle, %d open", len(h.idle), h.open.Load())
	}
	h.put(pipe())
	h.closeIdle()
	if len(h.idle) != 0 || h.open.Load() != 0 {
		t.Fatalf("after closeIdle: %d idle, %d open", len(h.idle), h.open.Load())
	}
}

// A whole response over 256 MiB is refused as the upstream's protocol
// error, before it is read.
func TestWholeResponseTooLarge(t *testing.T) {
	addr, _, _ := rawUpstream(t, func(int, *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300000000\r\n\r\n{", false
	})
	_, err := streamEndpoint(addr).Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
	var e *errs.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Code != errs.CodeUpstreamProtocol || !strings.Contains(e.Message, "over 256 MiB") {
		t.Fatalf("err = %#v", err)
	}
}

// At the per-host cap a stream call fails at once as the gateway's own
// shortage (503), not as the upstream's fault.
func TestStreamConnectionCap(t *testing.T) {
	addr, _, requests := rawUpstream(t, func(int, *http.Request) (string, bool) { return "", false })
	ep := streamEndpoint(addr)
	ep.template().pool.open.Store(maxHostConns)
	_, err := streamCall(ep, &Request{})
	var e *errs.Error
	if !errors.As(err, &e) || e.Status != 503 || e.Code != errs.CodeUnavailable || e.Fallback {
		t.Fatalf("err = %#v", err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("upstream read %d requests", n)
	}
}

// FuzzStreamResponse holds the response head reader and the body framing
// to net/http's reading of the same bytes: where both accept a response,
// the status and the body agree, and a connection net/http would close is
// never kept.
func FuzzStreamResponse(f *testing.F) {
	for _, s := range []string{
		sseHead + "Transfer-Encoding: chunked\r\n\r\n" + chunk("data: {}\n\n") + "0\r\n\r\n",
		sseHead + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunk("data: {}\n\n") + "0\r\nA: b\r\n\r\n",
		sseHead + "Content-Length: 12\r\n\r\ndata: {}\n\nxyz",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\ndata: x\n\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\n{}",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nabcde",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunk("a") + "0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close, x\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA \r\n0123456789\r\n1\r\nz\r\n0\r\nT: 1\r\n\r\nHTTP/1.1",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		src := bytes.NewReader(raw)
		br := bufio.NewReaderSize(src, connReadBuf)
		var rh respHead
		if err := rh.read(br); err != nil {
			return
		}
		hsrc := bytes.NewReader(raw)
		hr := bufio.NewReader(hsrc)
		var resp *http.Response
		for {
			var err error
			if resp, err = http.ReadResponse(hr, &http.Request{Method: "POST"}); err != nil {
				return // ours accepts more (or reads less of the head)
			}
			if resp.StatusCode >= 200 || resp.StatusCode == 101 {
				break
			}
		}
		if rh.status != resp.StatusCode {
			t.Fatalf("status %d, net/http %d", rh.status, resp.StatusCode)
		}
		var body bodyReader
		keep := body.frame(&hostConn{br: br}, &rh)
		ours, oerr := io.ReadAll(&body)
		theirs, terr := io.ReadAll(resp.Body)
		if oerr != nil || terr != nil {
			return
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatalf("body %q, net/http %q", ours, theirs)
		}
		if keep && resp.Close {
			t.Fatalf("connection kept where net/http closes it (head %q)", raw[:min(len(raw), 200)])
		}
		// A connection kept for the next call must be exactly at the end
		// of this response: where net/http's reading of it ends.
		if keep && body.ended.Load() {
			if ours, theirs := len(raw)-src.Len()-br.Buffered(), len(raw)-hsrc.Len()-hr.Buffered(); ours != theirs {
				t.Fatalf("the response ends at byte %d, net/http's at %d", ours, theirs)
			}
		}
	})
}

// A body larger than what goes out in the head's buffer is written from
// where it is, whole, on a pooled connection as on a new one.
func TestLargeRequestBody(t *testing.T) {
	var got []int
	var mu sync.Mutex
	addr, conns, _ := rawUpstream(t, func(_ int, req *http.Request) (string, bool) {
		mu.Lock()
		got = append(got, int(req.ContentLength))
		mu.Unlock()
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", true
	})
	ep := streamEndpoint(addr)
	body := bytes.Repeat([]byte("x"), 3*inlineBody+7)
	for i := 0; i < 2; i++ {
		resp, err := ep.Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, body, llm.OpenAIChat)
		if err != nil || string(resp.Body) != "{}" {
			t.Fatalf("call %d: %v", i, err)
		}
		resp.Release()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0] != len(body) || got[1] != len(body) || conns.Load() != 1 {
		t.Fatalf("upstream read bodies of %v bytes on %d connections, want 2 of %d on 1", got, conns.Load(), len(body))
	}
}
