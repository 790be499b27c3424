package route

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
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
