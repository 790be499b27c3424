package loadgen

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveAuth answers every request with 200 and records its Authorization
// header; the answer carries x-cache: HIT when that header ends with an odd
// digit.
func serveAuth(t *testing.T) (addr string, got func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var mu sync.Mutex
	var auths []string
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
					n, auth := 0, ""
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if v, ok := strings.CutPrefix(l, "Content-Length: "); ok {
							_, _ = fmt.Sscan(v, &n)
						}
						if v, ok := strings.CutPrefix(l, "Authorization: "); ok {
							auth = strings.TrimSpace(v)
						}
						if l == "\r\n" {
							break
						}
					}
					if _, err := br.Discard(n); err != nil {
						return
					}
					mu.Lock()
					auths = append(auths, auth)
					mu.Unlock()
					hit := ""
					if auth != "" && strings.ContainsAny(auth[len(auth)-1:], "13579") {
						hit = "x-cache: HIT\r\n"
					}
					if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\n" + hit + "Content-Length: 2\r\n\r\n{}")); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), auths...)
	}
}

// With a Request function every request is built at send time and its
// latency is also recorded under its class (a few requests, no load).
func TestRunOpenRequestClasses(t *testing.T) {
	addr, got := serveAuth(t)
	tg := Target{Name: "t", Addr: addr, Path: "/p", Body: []byte("{}"), Header: []string{"Authorization: k-0"}}
	tmpl := tg.RequestBytes()
	at := strings.Index(string(tmpl), "k-0") + 2
	res, err := RunOpen(OpenConfig{
		Target: tg, Rate: 500, Duration: 40 * time.Millisecond, Conns: 2,
		Request: func(i int64, buf []byte) ([]byte, int) {
			buf = append(buf, tmpl...)
			buf[at] = byte('0' + i%10)
			return buf, int(i % 2)
		},
		Match: Header{Name: "x-cache", Value: "HIT"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 20 || res.Errors != 0 || res.ByClass[0].Count() != 10 || res.ByClass[1].Count() != 10 || res.Matched != 10 {
		t.Fatalf("ok %d errors %d (%s) classes %v matched %d", res.OK, res.Errors, res.FirstErr, res.ByClass, res.Matched)
	}
	seen := map[string]int{}
	for _, a := range got() {
		seen[a]++
	}
	for d := range 10 {
		if seen[fmt.Sprintf("k-%d", d)] != 2 {
			t.Fatalf("server saw %v", seen)
		}
	}
	m := &Result{Latency: res.Latency, Service: res.Service, SendLag: res.SendLag, TTFB: res.TTFB, Gap: res.Gap}
	m.Merge(res)
	if m.ByClass[0].Count() != 10 || m.ByClass[1].Count() != 10 {
		t.Fatalf("merged classes %v", m.ByClass)
	}
}

// The closed loop builds each request at send time too, numbered over all
// its connections.
func TestRunClosedRequest(t *testing.T) {
	addr, got := serveAuth(t)
	tg := Target{Name: "t", Addr: addr, Path: "/p", Body: []byte("{}"), Header: []string{"Authorization: k-0"}}
	tmpl := tg.RequestBytes()
	at := strings.Index(string(tmpl), "k-0") + 2
	res, err := RunClosed(ClosedConfig{
		Target: tg, Conns: 2, Duration: 30 * time.Millisecond,
		Request: func(i int64, buf []byte) ([]byte, int) {
			buf = append(buf, tmpl...)
			buf[at] = byte('0' + i%10)
			return buf, -1
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, a := range got() {
		seen[a]++
	}
	if res.OK < 10 || res.Errors != 0 || len(seen) != 10 || res.Matched != 0 {
		t.Fatalf("ok %d errors %d (%s), server saw %v", res.OK, res.Errors, res.FirstErr, seen)
	}
}
