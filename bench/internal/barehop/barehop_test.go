package barehop

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/portcullis/portcullis/bench/internal/upstream"
)

// TestThroughHop sends a JSON and a streamed request to the fake upstream
// through the bare hop, all in memory.
func TestThroughHop(t *testing.T) {
	upLn := fasthttputil.NewInmemoryListener()
	go func() { _ = upstream.Server(upstream.Config{Chunks: 5, Gap: time.Millisecond}).Serve(upLn) }()
	defer upLn.Close()
	hopLn := fasthttputil.NewInmemoryListener()
	hop := &fasthttp.HostClient{Addr: "upstream", Dial: func(string) (net.Conn, error) { return upLn.Dial() }}
	go func() { _ = (&fasthttp.Server{Handler: Handler(hop)}).Serve(hopLn) }()
	defer hopLn.Close()
	cl := &fasthttp.HostClient{Addr: "hop", Dial: func(string) (net.Conn, error) { return hopLn.Dial() }}

	for _, stream := range []bool{false, true} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://hop/v1/chat/completions")
		req.Header.SetMethod("POST")
		body := `{"model":"bench","messages":[]}`
		if stream {
			body = `{"model":"bench","messages":[],"stream":true}`
		}
		req.SetBodyString(body)
		if err := cl.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
		}
		b := resp.Body()
		if !stream {
			if !bytes.Equal(b, upstream.CompletionBody) {
				t.Fatalf("body %s", b)
			}
			continue
		}
		if n := bytes.Count(b, []byte("data: {")); n != 5 || !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) {
			t.Fatalf("%d chunks: %s", n, b)
		}
		if !bytes.Contains(b, upstream.Chunk(5, 5)) {
			t.Fatal("last chunk missing its finish_reason")
		}
	}
}
