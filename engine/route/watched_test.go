package route

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
)

// chanStream delivers the events sent on ch; Close ends a blocked Next.
type chanStream struct {
	ch     chan string
	done   chan struct{}
	closed atomic.Bool
}

func newChanStream() *chanStream {
	return &chanStream{ch: make(chan string, 8), done: make(chan struct{})}
}

func (c *chanStream) Next() (sse.Event, error) {
	select {
	case d, ok := <-c.ch:
		if !ok {
			return sse.Event{}, io.EOF
		}
		return sse.Event{Data: []byte(d)}, nil
	case <-c.done:
		return sse.Event{}, errors.New("closed")
	}
}

func (c *chanStream) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		close(c.done)
	}
	return nil
}

// An upstream silent for the idle timeout is closed and the stream ends
// with 408 upstream_timeout.
func TestWatchedIdleDeadline(t *testing.T) {
	in := newChanStream()
	s := &watched{inner: in, idle: 50 * time.Millisecond}
	defer s.Close()
	in.ch <- "a"
	if ev, err := s.Next(); err != nil || string(ev.Data) != "a" {
		t.Fatalf("first: %q %v", ev.Data, err)
	}
	start := time.Now()
	_, err := s.Next()
	var e *errs.Error
	if !errors.As(err, &e) || e.Status != 408 || e.Code != errs.CodeUpstreamTimeout {
		t.Fatalf("err = %v, want 408 upstream_timeout", err)
	}
	if el := time.Since(start); el < 45*time.Millisecond || el > 2*time.Second {
		t.Fatalf("cut after %v, want about 50ms", el)
	}
	if !in.closed.Load() {
		t.Fatal("the upstream was not closed")
	}
}

// Time spent away from the upstream (the gateway blocked writing to a slow
// client) does not count: only waits do, each from its own start.
func TestWatchedIdleCountsOnlyWaits(t *testing.T) {
	in := newChanStream()
	s := &watched{inner: in, idle: 60 * time.Millisecond}
	defer s.Close()
	for i := 0; i < 4; i++ {
		in.ch <- "x"
		if _, err := s.Next(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond) // longer than idle, not waiting
	}
	// Events that arrive 40 ms into each wait are never cut, however long
	// the stream.
	for i := 0; i < 5; i++ {
		go func() {
			time.Sleep(40 * time.Millisecond)
			in.ch <- "y"
		}()
		if _, err := s.Next(); err != nil {
			t.Fatalf("slow event %d: %v", i, err)
		}
	}
	if in.closed.Load() {
		t.Fatal("the upstream was closed")
	}
}

// After Close the watchdog stops: it does not re-arm forever.
func TestWatchedCloseStopsWatchdog(t *testing.T) {
	in := newChanStream()
	s := &watched{inner: in, idle: 10 * time.Millisecond}
	in.ch <- "a"
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	time.Sleep(30 * time.Millisecond)
	if s.idleTimer.Stop() {
		t.Fatal("the watchdog timer is still armed after Close")
	}
}

func TestIsPreamble(t *testing.T) {
	for _, c := range []struct {
		data string
		want bool
	}{
		{`{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`, true},
		{`{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`, true},
		{`{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`, false},
		// Spaced JSON takes the lookup path.
		{`{"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]}`, false},
		{`{"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": null}]}`, true},
		{`{"choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0,"function":{"name":"f"}}]},"finish_reason":null}]}`, false},
		{`{"choices":[{"index":0,"delta":{"content":"","reasoning_content":"hmm"},"finish_reason":null}]}`, false},
		{`{"choices":[{"index":0,"delta":{"content":"","refusal":"no"},"finish_reason":null}]}`, false},
		{`{"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}]}`, false},
		// An escaped "content" inside a string is not a member.
		{`{"choices":[{"index":0,"delta":{"role":"assistant","content":"","x":"\"content\":\"y"},"finish_reason":null}]}`, true},
		{`{"choices":[],"usage":{"prompt_tokens":1}}`, false},
	} {
		if got := isPreamble(llm.OpenAIChat, sse.Event{Data: []byte(c.data)}); got != c.want {
			t.Errorf("isPreamble(%s) = %v, want %v", c.data, got, c.want)
		}
	}
}

// bufStream returns its events from one reused buffer, as the upstream's
// SSE reader does: an event is valid only until the next one.
type bufStream struct {
	evs [][2]string
	buf []byte
}

func (b *bufStream) Next() (sse.Event, error) {
	if len(b.evs) == 0 {
		return sse.Event{}, io.EOF
	}
	e := b.evs[0]
	b.evs = b.evs[1:]
	b.buf = append(append(b.buf[:0], e[0]...), e[1]...)
	ev := sse.Event{Data: b.buf[len(e[0]):]}
	if e[0] != "" {
		ev.Name = b.buf[:len(e[0])]
	}
	return ev, nil
}

func (b *bufStream) Close() error { return nil }

// awaitFirst holds the preamble events (copies: the reader reuses its
// buffer) and replays them in order before the first token, names and
// data intact; OpenAI's role chunk costs one allocation.
func TestAwaitFirstHoldsPreamble(t *testing.T) {
	anthropic := [][2]string{
		{"message_start", `{"type":"message_start","message":{"id":"msg_1","role":"assistant","content":[]}}`},
		{"ping", `{"type":"ping"}`},
		{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`},
	}
	openai := [][2]string{
		{"", `{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`},
		{"", `{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`},
	}
	r := &Router{}
	for _, c := range []struct {
		d   llm.Dialect
		evs [][2]string
	}{{llm.AnthropicMessages, anthropic}, {llm.OpenAIChat, openai}} {
		resp := &provider.Response{Dialect: c.d, Stream: &bufStream{evs: c.evs}}
		if err := r.awaitFirst(&pipeline.Exchange{}, &Deployment{ProviderName: "p"}, resp, time.Now()); err != nil {
			t.Fatal(err)
		}
		for i, want := range c.evs {
			ev, err := resp.Stream.Next()
			if err != nil || string(ev.Name) != want[0] || string(ev.Data) != want[1] || (want[0] == "") != (ev.Name == nil) {
				t.Fatalf("%v event %d: %q %q %v, want %q %q", c.d, i, ev.Name, ev.Data, err, want[0], want[1])
			}
		}
		if _, err := resp.Stream.Next(); err != io.EOF {
			t.Fatalf("%v: after the events: %v, want EOF", c.d, err)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		resp := &provider.Response{Dialect: llm.OpenAIChat, Stream: &bufStream{evs: openai, buf: make([]byte, 0, 256)}}
		_ = r.awaitFirst(&pipeline.Exchange{}, &Deployment{ProviderName: "p"}, resp, time.Now())
	})
	// The Response, the stream and its buffer, the Exchange and the
	// Deployment (4, the test's own), the watched wrapper and the held role
	// chunk's copy: 5 (the held list lives in the wrapper).
	t.Logf("allocations: %.0f", allocs)
	if allocs > 5 {
		t.Fatalf("%.0f allocations, want at most 5", allocs)
	}
}
