package loadgen

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pipeConn returns a Conn whose peer writes resp after reading a request.
func pipeConn(t *testing.T, resps ...string) *Conn {
	t.Helper()
	cli, srv := net.Pipe()
	t.Cleanup(func() { _ = cli.Close(); _ = srv.Close() })
	go func() {
		br := bufio.NewReader(srv)
		for _, r := range resps {
			// read one request: headers, then the Content-Length body
			n := 0
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if v, ok := strings.CutPrefix(l, "Content-Length: "); ok {
					for _, c := range strings.TrimSpace(v) {
						n = n*10 + int(c-'0')
					}
				}
				if l == "\r\n" {
					break
				}
			}
			if _, err := br.Discard(n); err != nil {
				return
			}
			if _, err := srv.Write([]byte(r)); err != nil {
				return
			}
		}
	}()
	req := Target{Addr: "x:1", Path: "/v1/chat/completions", Body: []byte(`{"a":1}`)}.RequestBytes()
	c := &Conn{req: req}
	c.ts.Conn = cli
	c.br = bufio.NewReaderSize(&c.ts, 4096)
	return c
}

func TestRequestBytes(t *testing.T) {
	got := string(Target{Addr: "127.0.0.1:9", Path: "/p", Body: []byte("{}"), Header: []string{"Authorization: Bearer k"}}.RequestBytes())
	want := "POST /p HTTP/1.1\r\nHost: 127.0.0.1:9\r\nContent-Type: application/json\r\nContent-Length: 2\r\nAuthorization: Bearer k\r\n\r\n{}"
	if got != want {
		t.Fatalf("%q", got)
	}
}

func TestReadResponseLengthAndChunked(t *testing.T) {
	sse := "data: {\"x\":1}\n\n" + ": keep-alive\n\n" + "data: {\"x\":2}\n\ndata: [DONE]\n\n"
	// The chunked body splits one event across two chunks.
	chunked := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"a\r\n" + sse[:10] + "\r\n" +
		"7\r\n" + sse[10:17] + "\r\n" +
		strconv.FormatInt(int64(len(sse)-17), 16) + "\r\n" + sse[17:] + "\r\n" +
		"0\r\n\r\n"
	c := pipeConn(t,
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		chunked,
		"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
	)
	if err := c.Send(Now()); err != nil {
		t.Fatal(err)
	}
	status, closing, err := c.ReadResponse(nil)
	if err != nil || status != 200 || closing {
		t.Fatalf("length body: %d %v %v", status, closing, err)
	}
	if err := c.Send(Now()); err != nil {
		t.Fatal(err)
	}
	var kinds []EventKind
	var last time.Duration
	status, _, err = c.ReadResponse(func(k EventKind, at time.Duration) bool {
		if at < last || at == 0 {
			t.Errorf("event time %v after %v", at, last)
		}
		last = at
		kinds = append(kinds, k)
		return true
	})
	if err != nil || status != 200 {
		t.Fatalf("chunked: %d %v", status, err)
	}
	want := []EventKind{EventData, EventComment, EventData, EventDone}
	if len(kinds) != len(want) {
		t.Fatalf("events %v want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("events %v want %v", kinds, want)
		}
	}
	if err := c.Send(Now()); err != nil {
		t.Fatal(err)
	}
	status, closing, err = c.ReadResponse(nil)
	if err != nil || status != 502 || !closing {
		t.Fatalf("error response: %d %v %v", status, closing, err)
	}
}

func TestReadResponseStop(t *testing.T) {
	c := pipeConn(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"1e\r\ndata: {\"a\":1}\n\ndata: {\"b\":2}\n\n\r\n")
	_ = c.Send(Now())
	n := 0
	status, _, err := c.ReadResponse(func(k EventKind, _ time.Duration) bool { n++; return false })
	if !errors.Is(err, ErrStopped) || status != 200 || n != 1 {
		t.Fatalf("%d %v %d", status, err, n)
	}
}

func TestParseChunkSize(t *testing.T) {
	for in, want := range map[string]int{"0\r\n": 0, "1a\r\n": 26, "FF;ext=1\r\n": 255} {
		if got, err := parseChunkSize([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	if _, err := parseChunkSize([]byte("zz\r\n")); err == nil {
		t.Error("want an error")
	}
}
