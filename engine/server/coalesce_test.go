package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
)

// burstUpstream answers one streamed request with three writes, pause
// apart: the head and a first event; two events in one chunk; [DONE] and
// the end of the body. It reports when it starts the third write.
func burstUpstream(t *testing.T, pause time.Duration) (string, chan time.Time) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	chunk := func(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }
	ev := func(text string) string {
		return `data: {"choices":[{"index":0,"delta":{"content":"` + text + `"},"finish_reason":null}]}` + "\n\n"
	}
	third := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		n := 0
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if l == "\r\n" {
				break
			}
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "content-length") {
				n, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if _, err := br.Discard(n); err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk(ev("one")))
		time.Sleep(pause)
		fmt.Fprint(c, chunk(ev("two")+ev("three")))
		time.Sleep(pause)
		third <- time.Now()
		fmt.Fprint(c, chunk("data: [DONE]\n\n")+"0\r\n\r\n")
	}()
	return "http://" + ln.Addr().String(), third
}

// TestStreamCoalescesEventsReadTogether: events read from the upstream
// together (one chunk of its body) reach the client in one chunk (one
// write, one wake-up of the client), and no event waits for a later one.
func TestStreamCoalescesEventsReadTogether(t *testing.T) {
	for _, lean := range []bool{false, true} {
		t.Run(fmt.Sprintf("lean=%v", lean), func(t *testing.T) {
			const pause = 250 * time.Millisecond
			up, third := burstUpstream(t, pause)
			_, addr := benchServer(t, up, func(st *config.ServerSettings) {
				if lean {
					st.LeanStreamsAfter = 0 // relayed on the hijacked connection
				}
			})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			body := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`
			fmt.Fprint(c, rawRequest("HTTP/1.1", body))
			br := bufio.NewReader(c)
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if l == "\r\n" {
					break
				}
			}
			// readChunk returns the next chunk's payload and when it
			// arrived.
			readChunk := func() (string, time.Time) {
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				n, err := strconv.ParseInt(strings.TrimSpace(l), 16, 32)
				if err != nil {
					t.Fatalf("chunk size line %q", l)
				}
				at := time.Now()
				p := make([]byte, n+2)
				if _, err := io.ReadFull(br, p); err != nil {
					t.Fatal(err)
				}
				return string(p[:n]), at
			}
			first, _ := readChunk()
			if strings.Count(first, "data: ") != 1 || !strings.Contains(first, `"one"`) {
				t.Fatalf("first chunk %q", first)
			}
			second, at := readChunk()
			if strings.Count(second, "data: ") != 2 || !strings.Contains(second, `"two"`) || !strings.Contains(second, `"three"`) {
				t.Fatalf("the two events of one upstream chunk came as %q, want one chunk with both", second)
			}
			if sent := <-third; !at.Before(sent) {
				t.Fatalf("the second chunk arrived %v after the upstream's next write began: it waited for it", at.Sub(sent))
			}
			last, _ := readChunk()
			if last != "data: [DONE]\n\n" {
				t.Fatalf("last chunk %q", last)
			}
			if end, _ := br.ReadString('\n'); end != "0\r\n" {
				t.Fatalf("end of body %q", end)
			}
		})
	}
}
