package upstream

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// /large/ answers the 4 KiB completion, /stats counts the chat requests.
func TestLargeAndStats(t *testing.T) {
	ln := fasthttputil.NewInmemoryListener()
	go func() { _ = Server(Config{}).Serve(ln) }()
	defer ln.Close()
	cl := &fasthttp.HostClient{Addr: "up", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	do := func(method, path, body string) []byte {
		t.Helper()
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://up" + path)
		req.Header.SetMethod(method)
		req.SetBodyString(body)
		if err := cl.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("%s %s: %v %d", method, path, err, resp.StatusCode())
		}
		return append([]byte(nil), resp.Body()...)
	}
	if b := do("POST", "/v1/chat/completions", `{"model":"bench"}`); string(b) != string(CompletionBody) {
		t.Fatalf("%s", b)
	}
	b := do("POST", "/large/v1/chat/completions", `{"model":"bench","temperature":0}`)
	var c struct {
		Choices []struct {
			Message struct{ Content string }
		}
	}
	if len(b) != 4096 || string(b) != string(LargeCompletionBody) || json.Unmarshal(b, &c) != nil || len(c.Choices) != 1 || len(c.Choices[0].Message.Content) < 3500 {
		t.Fatalf("%d bytes: %.200s", len(b), b)
	}
	if s := do("GET", "/stats", ""); string(s) != `{"requests":2}` {
		t.Fatalf("%s", s)
	}
}
