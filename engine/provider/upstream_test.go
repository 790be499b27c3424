package provider

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/llm"
)

// tlsUpstream answers chat completions over https, as JSON or as a
// three-event stream.
func tlsUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") == "text/event-stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
				w.(http.Flusher).Flush()
			}
			fmt.Fprint(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted test's refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func trust(srv *httptest.Server) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}

// An https upstream that Prepare announced is dialled with the TLS
// handshake in the dial goroutine (the connection dialled is our
// *tls.Conn); a whole response and a stream work, on one connection.
func TestHTTPSUpstreamHandshakeInDialGoroutine(t *testing.T) {
	srv := tlsUpstream(t)
	c := NewClient()
	var dialled []net.Conn
	c.onDial = func(conn net.Conn) { dialled = append(dialled, conn) }
	c.Prepare(srv.URL + "/v1")
	addr := strings.TrimPrefix(srv.URL, "https://")
	v, ok := c.tls.Load(addr)
	if !ok {
		t.Fatalf("Prepare did not register %s", addr)
	}
	cfg := v.(*tls.Config)
	cfg.RootCAs = trust(srv)
	if host, _, _ := net.SplitHostPort(addr); cfg.ServerName != host {
		t.Fatalf("ServerName %q, want %q", cfg.ServerName, host)
	}
	ep := &Endpoint{Provider: "openai", Client: c, URL: srv.URL + "/v1/chat/completions"}
	resp, err := ep.Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Body) != `{"ok":true}` {
		t.Fatalf("body %q", resp.Body)
	}
	resp.Release()

	resp, err = ep.Do(context.Background(), &Request{Stream: true, Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Stream.Close()
	w, ok := resp.Stream.(Waiter)
	if !ok {
		t.Fatalf("%T is not a Waiter", resp.Stream)
	}
	var got []string
	for {
		w.Wait()
		ev, err := resp.Stream.Next()
		if err != nil {
			break
		}
		got = append(got, string(ev.Data))
	}
	if strings.Join(got, " ") != `{"n":0} {"n":1} {"n":2} [DONE]` {
		t.Fatalf("events %q", got)
	}
	if len(dialled) != 1 {
		t.Fatalf("%d connections dialled, want 1 (the stream reuses the first call's)", len(dialled))
	}
	for _, conn := range dialled {
		if _, ok := conn.(*tls.Conn); !ok {
			t.Errorf("dialled connection is %T, want *tls.Conn", conn)
		}
	}
}

// An https upstream Prepare was not told of is still served, with
// Client.TLSConfig.
func TestHTTPSUpstreamWithoutPrepare(t *testing.T) {
	srv := tlsUpstream(t)
	c := NewClient()
	c.TLSConfig = &tls.Config{RootCAs: trust(srv), MinVersion: tls.VersionTLS12}
	ep := &Endpoint{Provider: "openai", Client: c, URL: srv.URL + "/v1/chat/completions"}
	resp, err := ep.Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Release()
	if string(resp.Body) != `{"ok":true}` {
		t.Fatalf("body %q", resp.Body)
	}
	resp, err = ep.Do(context.Background(), &Request{Stream: true, Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Release()
	if ev, err := resp.Stream.Next(); err != nil || string(ev.Data) != `{"n":0}` {
		t.Fatalf("first event %q, %v", ev.Data, err)
	}
}

// A handshake that fails (an untrusted certificate) is an upstream error
// that names the cause, for a whole response and for a stream, and no
// connection is kept.
func TestHTTPSUpstreamUntrusted(t *testing.T) {
	srv := tlsUpstream(t)
	c := NewClient()
	c.Prepare(srv.URL)
	c.onDial = func(conn net.Conn) { t.Errorf("connection %v dialled", conn.LocalAddr()) }
	ep := &Endpoint{Provider: "openai", Client: c, URL: srv.URL + "/v1/chat/completions"}
	for _, stream := range []bool{false, true} {
		_, err := ep.Do(context.Background(), &Request{Stream: stream, Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("stream %v: err = %v, want a certificate error", stream, err)
		}
	}
	if n := ep.template().pool.open.Load(); n != 0 {
		t.Fatalf("%d stream connections open, want 0", n)
	}
}

func TestPrepareIgnoresPlainHTTPAndDefaultsPort(t *testing.T) {
	c := NewClient()
	c.Prepare("http://127.0.0.1:9000/v1")
	c.Prepare("https://api.example.com/v1")
	c.Prepare("::bad")
	n := 0
	c.tls.Range(func(k, _ any) bool {
		if k != "api.example.com:443" {
			t.Errorf("registered %v", k)
		}
		n++
		return true
	})
	if n != 1 {
		t.Fatalf("%d registered, want 1", n)
	}
}

// closingUpstream answers each request on a connection with a keep-alive
// JSON response, then closes the connection after idle (as upstreams
// close idle keep-alive connections). It counts the requests it read.
func closingUpstream(t *testing.T, idle time.Duration) (addr string, requests *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					_ = c.SetReadDeadline(time.Now().Add(idle))
					req, err := http.ReadRequest(br)
					if err != nil {
						return // idle too long: close, as a real upstream does
					}
					_, _ = io.Copy(io.Discard, req.Body)
					requests.Add(1)
					body := `{"ok":true}`
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			}(c)
		}
	}()
	return ln.Addr().String(), requests
}

// A pooled connection the upstream closed while idle costs no failed
// request: the request goes out once more on a new connection, and the
// upstream sees each request once.
func TestStaleIdleConnectionIsRetriedOnce(t *testing.T) {
	addr, requests := closingUpstream(t, 50*time.Millisecond)
	c := NewClient()
	ep := &Endpoint{Provider: "openai", Client: c, URL: "http://" + addr + "/v1/chat/completions"}
	for i := 0; i < 3; i++ {
		resp, err := ep.Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Release()
		time.Sleep(150 * time.Millisecond) // the upstream closes the idle connection
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("upstream read %d requests, want 3", n)
	}
}

// A connection cut in the middle of a response is not retried: the
// upstream may have done the work.
func TestResponseCutMidwayIsNotRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var requests atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				requests.Add(1)
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"cho")
			}(c)
		}
	}()
	ep := &Endpoint{Provider: "openai", Client: NewClient(), URL: "http://" + ln.Addr().String() + "/v1/chat/completions"}
	_, err = ep.Do(context.Background(), &Request{Deadline: time.Now().Add(5 * time.Second)}, []byte(`{}`), llm.OpenAIChat)
	if err == nil {
		t.Fatal("a cut response succeeded")
	}
	time.Sleep(50 * time.Millisecond)
	if n := requests.Load(); n != 1 {
		t.Fatalf("upstream read %d requests, want 1 (no retry)", n)
	}
}

// Every call starts from the endpoint's template: the URL, method, content
// type and fixed headers, the Accept of its kind; extra, set and removed
// headers apply to that call only.
func TestEndpointRequestHeaders(t *testing.T) {
	type seen struct {
		method, path string
		h            http.Header
	}
	got := make(chan seen, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.Path, r.Header.Clone()}
		if r.Header.Get("Accept") == "text/event-stream" {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {}\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{}`)
	}))
	t.Cleanup(srv.Close)
	ep := &Endpoint{Provider: "openai", Client: NewClient(), URL: srv.URL + "/v1/chat/completions",
		Headers: [][2]string{{"Authorization", "Bearer sk-test"}, {"X-Team", "blue"}}}
	call := func(r *Request, extra ...[2]string) seen {
		t.Helper()
		r.Deadline = time.Now().Add(5 * time.Second)
		resp, err := ep.Do(context.Background(), r, []byte(`{}`), llm.OpenAIChat, extra...)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Stream != nil {
			_ = resp.Stream.Close()
		} else {
			resp.Release()
		}
		return <-got
	}
	s := call(&Request{Stream: true, SetHeaders: [][2]string{{"X-Trace", "1"}, {"Authorization", "Bearer stolen"}}, RemoveHeaders: []string{"X-Team"}},
		[2]string{"Anthropic-Beta", "b1"}, [2]string{"Accept", "text/html"})
	if s.method != "POST" || s.path != "/v1/chat/completions" || s.h.Get("Content-Type") != "application/json" ||
		s.h.Get("Authorization") != "Bearer sk-test" || s.h.Get("Accept") != "text/event-stream" ||
		s.h.Get("X-Trace") != "1" || s.h.Get("X-Team") != "" || s.h.Get("Anthropic-Beta") != "b1" {
		t.Fatalf("stream call: %s %s %v", s.method, s.path, s.h)
	}
	// The next calls see none of the first one's changes.
	for i := 0; i < 2; i++ {
		s = call(&Request{})
		if s.h.Get("Accept") != "application/json" || s.h.Get("X-Team") != "blue" || s.h.Get("X-Trace") != "" ||
			s.h.Get("Anthropic-Beta") != "" || len(s.h.Values("Authorization")) != 1 || s.h.Get("Authorization") != "Bearer sk-test" {
			t.Fatalf("call %d: %v", i, s.h)
		}
	}
}

// An api_base with a scheme other than http or https is an upstream error
// naming it, not a request sent in plain HTTP.
func TestUnsupportedScheme(t *testing.T) {
	ep := &Endpoint{Provider: "openai", Client: NewClient(), URL: "ftp://127.0.0.1:1/v1/chat/completions"}
	_, err := ep.Do(context.Background(), &Request{Deadline: time.Now().Add(time.Second)}, []byte(`{}`), llm.OpenAIChat)
	if err == nil || !strings.Contains(err.Error(), `unsupported protocol "ftp"`) {
		t.Fatalf("err = %v, want an unsupported protocol error", err)
	}
}
