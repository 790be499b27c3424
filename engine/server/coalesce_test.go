package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/store"
)

// chatEvent is an OpenAI chunk event carrying text.
func chatEvent(text string) string {
	return `data: {"choices":[{"index":0,"delta":{"content":"` + text + `"},"finish_reason":null}]}` + "\n\n"
}

// sseChunk frames s as one chunk of a chunked body.
func sseChunk(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }

// burstUpstream answers one streamed request with the head and a first
// event, then, pause apart, each of writes. It reports when it starts the
// last of them.
func burstUpstream(t *testing.T, pause time.Duration, writes ...string) (string, chan time.Time) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	last := make(chan time.Time, 1)
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
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+sseChunk(chatEvent("one")))
		for i, w := range writes {
			time.Sleep(pause)
			if i == len(writes)-1 {
				last <- time.Now()
			}
			fmt.Fprint(c, w)
		}
	}()
	return "http://" + ln.Addr().String(), last
}

// TestStreamCoalescesEventsReadTogether: events read from the upstream
// together (one chunk of its body) reach the client in one chunk (one
// write, one wake-up of the client), and no event waits for a later one.
func TestStreamCoalescesEventsReadTogether(t *testing.T) {
	for _, lean := range []bool{false, true} {
		t.Run(fmt.Sprintf("lean=%v", lean), func(t *testing.T) {
			const pause = 250 * time.Millisecond
			up, third := burstUpstream(t, pause, sseChunk(chatEvent("two")+chatEvent("three")), sseChunk("data: [DONE]\n\n")+"0\r\n\r\n")
			_, addr := benchServer(t, up, func(st *config.ServerSettings) {
				if lean {
					st.LeanStreamsAfter = 0 // relayed on the hijacked connection
				}
			})
			br := sendStream(t, addr)
			readChunk := func() (string, time.Time) { return nextChunk(t, br) }
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

// sendStream sends a streamed chat request to addr and returns the reader
// of its answer, past the head.
func sendStream(t *testing.T, addr string) *bufio.Reader {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
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
			return br
		}
	}
}

// nextChunk returns the payload of br's next chunk and when its size line
// arrived.
func nextChunk(t *testing.T, br *bufio.Reader) (string, time.Time) {
	t.Helper()
	p, at, err := readChunk(br)
	if err != nil {
		t.Fatal(err)
	}
	return p, at
}

func readChunk(br *bufio.Reader) (string, time.Time, error) {
	l, err := br.ReadString('\n')
	if err != nil {
		return "", time.Time{}, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(l), 16, 32)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("chunk size line %q", l)
	}
	at := time.Now()
	p := make([]byte, n+2)
	if _, err := io.ReadFull(br, p); err != nil {
		return "", time.Time{}, err
	}
	return string(p[:n]), at, nil
}

// blockingSpend is a strict spend sink whose commits wait for release.
type blockingSpend struct {
	called  chan struct{}
	release chan struct{}
}

func (s *blockingSpend) Add(store.SpendRecord) {}

func (s *blockingSpend) AddSync(ctx context.Context, _ store.SpendRecord) error {
	close(s.called)
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestStrictSpendKeepsEventsBeforeTheTerminalOne: with strict spend
// accounting the terminal event waits for its record's commit; an event
// read together with it does not (no coalescing there).
func TestStrictSpendKeepsEventsBeforeTheTerminalOne(t *testing.T) {
	sink := &blockingSpend{called: make(chan struct{}), release: make(chan struct{})}
	up, _ := burstUpstream(t, 50*time.Millisecond, sseChunk(chatEvent("two")+"data: [DONE]\n\n")+"0\r\n\r\n")
	_, addr := optsServer(t, up, func(o *Options) { o.Spend, o.StrictSpend = sink, true })
	br := sendStream(t, addr)
	if first, _ := nextChunk(t, br); !strings.Contains(first, `"one"`) {
		t.Fatalf("first chunk %q", first)
	}
	got := make(chan string, 1)
	// next reads the following chunk in the background: the test watches
	// when it arrives.
	next := func() {
		go func() {
			s, _, err := readChunk(br)
			if err != nil {
				s = err.Error()
			}
			got <- s
		}()
	}
	next()
	select {
	case s := <-got:
		if strings.Contains(s, "[DONE]") || !strings.Contains(s, `"two"`) {
			t.Fatalf("second chunk %q, want the event before [DONE] alone", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event before [DONE] waited for the spend commit")
	}
	// [DONE], the response's end, waits for the commit.
	<-sink.called
	next()
	select {
	case s := <-got:
		t.Fatalf("%q sent before the spend record committed", s)
	case <-time.After(200 * time.Millisecond):
	}
	close(sink.release)
	if last := <-got; last != "data: [DONE]\n\n" {
		t.Fatalf("last chunk %q", last)
	}
}
