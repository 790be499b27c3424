package sse

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

type ev struct{ name, data string }

func readAll(t testing.TB, r io.Reader, max int) ([]ev, error) {
	sr := NewReader(r, max)
	var out []ev
	for {
		e, err := sr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, ev{string(e.Name), string(e.Data)})
	}
}

// readerCases are the parser's cases, shared by TestReader and
// TestWaitThenNextNeverReads.
var readerCases = []struct {
	name string
	in   string
	want []ev
	err  error
}{
	{"openai", "data: {\"a\":1}\n\ndata: [DONE]\n\n", []ev{{"", `{"a":1}`}, {"", "[DONE]"}}, nil},
	{"anthropic", "event: message_start\ndata: {}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n", []ev{{"message_start", "{}"}, {"ping", `{"type": "ping"}`}}, nil},
	{"crlf", "event: x\r\ndata: 1\r\n\r\n", []ev{{"x", "1"}}, nil},
	{"lone cr", "data: 1\r\rdata: 2\r\r", []ev{{"", "1"}, {"", "2"}}, nil},
	{"comments and unknown fields", ": keepalive\nid: 7\nretry: 10\ndata: x\n\n", []ev{{"", "x"}}, nil},
	{"multiline data", "data: a\ndata: b\n\n", []ev{{"", "a\nb"}}, nil},
	{"no space after colon", "data:x\n\n", []ev{{"", "x"}}, nil},
	{"event without data is dropped", "event: e\n\ndata: y\n\n", []ev{{"", "y"}}, nil},
	{"missing final blank line", "data: [DONE]\n", []ev{{"", "[DONE]"}}, nil},
	{"cut mid line", "data: {\"a\":1}\n\ndata: {\"b\"", []ev{{"", `{"a":1}`}}, io.ErrUnexpectedEOF},
	{"empty", "", nil, nil},
}

func TestReader(t *testing.T) {
	for _, c := range readerCases {
		for _, mode := range []string{"whole", "onebyte"} {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				var r io.Reader = strings.NewReader(c.in)
				if mode == "onebyte" {
					r = iotest.OneByteReader(r)
				}
				got, err := readAll(t, r, 0)
				if !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				if len(got) != len(c.want) {
					t.Fatalf("got %q, want %q", got, c.want)
				}
				for i := range got {
					if got[i] != c.want[i] {
						t.Fatalf("event %d = %q, want %q", i, got[i], c.want[i])
					}
				}
			})
		}
	}
}

func TestReaderLimit(t *testing.T) {
	big := "data: " + strings.Repeat("x", 10000) + "\n\n"
	_, err := readAll(t, strings.NewReader(big), 1000)
	if !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err = %v, want ErrEventTooLarge", err)
	}
	many := strings.Repeat("data: "+strings.Repeat("y", 600)+"\n", 4) + "\n"
	_, err = readAll(t, strings.NewReader(many), 1000)
	if !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("multi-line: err = %v, want ErrEventTooLarge", err)
	}
}

func TestAppendEventRoundTrip(t *testing.T) {
	var b []byte
	b = AppendEvent(b, []byte("message_delta"), []byte("{\"x\":1}"))
	b = AppendEvent(b, nil, []byte("line1\nline2"))
	got, err := readAll(t, bytes.NewReader(b), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []ev{{"message_delta", `{"x":1}`}, {"", "line1\nline2"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestReaderSteadyStateAllocs(t *testing.T) {
	one := []byte("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
	stream := bytes.Repeat(one, 64)
	br := bytes.NewReader(stream)
	r := NewReader(br, 0)
	allocs := testing.AllocsPerRun(50, func() {
		br.Reset(stream)
		r.Reset(br)
		for {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	})
	if allocs > 0 {
		t.Fatalf("steady-state reading allocates %.0f times per stream, want 0", allocs)
	}
}

// FuzzReader checks that arbitrary input never panics, never yields an event
// over the limit, and that re-framing what was read reads back the same.
func FuzzReader(f *testing.F) {
	f.Add([]byte("data: {\"a\":1}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: message_start\r\ndata: {}\r\n\r\n"))
	f.Add([]byte("data: a\rdata: b\r\r:c\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, _ := readAll(t, bytes.NewReader(in), 4096)
		var b []byte
		for _, e := range got {
			if len(e.data) > 4096 {
				t.Fatalf("event of %d bytes over limit", len(e.data))
			}
			if strings.ContainsAny(e.name, "\r\n") {
				continue // names with newlines cannot be re-framed
			}
			b = AppendEvent(b, []byte(e.name), []byte(strings.ReplaceAll(e.data, "\r", "")))
		}
		again, err := readAll(t, bytes.NewReader(b), 1<<20)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		if len(again) > len(got) {
			t.Fatalf("re-framed %d events into %d", len(got), len(again))
		}
	})
}

// Wait leaves a complete event buffered: the Next after it never reads
// (so a caller can block in Wait with a shallow stack), and the events
// are those Next alone returns.
func TestWaitThenNextNeverReads(t *testing.T) {
	for _, c := range readerCases {
		t.Run(c.name, func(t *testing.T) {
			src := &countingReader{r: iotest.OneByteReader(strings.NewReader(c.in))}
			sr := NewReader(src, 0)
			var got []ev
			var err error
			for {
				sr.Wait()
				before := src.reads
				var e Event
				e, err = sr.Next()
				if err != nil {
					break
				}
				if src.reads != before {
					t.Fatalf("Next read %d more times after Wait (event %q)", src.reads-before, e.Data)
				}
				got = append(got, ev{string(e.Name), string(e.Data)})
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if !errors.Is(err, c.err) && !(c.err == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, c.err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %q, want %q", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("event %d = %q, want %q", i, got[i], c.want[i])
				}
			}
		})
	}
}

// Wait returns as soon as a complete event is buffered, without waiting
// for more input; a comment alone does not end the wait.
func TestWaitReturnsOnCompleteEvent(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	sr := NewReader(pr, 0)
	done := make(chan struct{})
	go func() {
		sr.Wait()
		close(done)
	}()
	// The writes are in goroutines: a pipe write blocks until read, and a
	// failing Wait stops reading.
	go func() {
		_, _ = pw.Write([]byte(": keep-alive\n\n"))
		_, _ = pw.Write([]byte("data: {\"a\""))
	}()
	select {
	case <-done:
		t.Fatal("Wait returned on a comment and a partial event")
	case <-time.After(50 * time.Millisecond):
	}
	go func() { _, _ = pw.Write([]byte("}\r\n\r\n")) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return on a complete event")
	}
	e, err := sr.Next()
	if err != nil || string(e.Data) != `{"a"}` {
		t.Fatalf("Next = %q, %v", e.Data, err)
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// oneEventReader returns one event per Read, as an upstream that flushes
// each chunk delivers them to a relay.
type oneEventReader struct {
	ev []byte
	n  int
}

func (r *oneEventReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	r.n--
	return copy(p, r.ev), nil
}

// BenchmarkRelayEvent is a stream relay's reading of one typical chat
// chunk (about 230 bytes, as OpenAI sends them): Wait, then Next.
func BenchmarkRelayEvent(b *testing.B) {
	one := []byte(`data: {"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_0123456789","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}` + "\n\n")
	src := &oneEventReader{ev: one}
	r := NewReader(src, 0)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if src.n == 0 {
			src.n = 1000
			r.Reset(src)
		}
		r.Wait()
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

// onceReader returns its bytes in one read, then fails the test if read
// again.
type onceReader struct {
	t    *testing.T
	p    []byte
	done bool
}

func (o *onceReader) Read(p []byte) (int, error) {
	if o.done {
		o.t.Fatal("read again: Buffered or Next went to the source")
	}
	o.done = true
	return copy(p, o.p), nil
}

// TestBuffered: an event read along with the previous one is reported
// buffered, and nothing is read to find out.
func TestBuffered(t *testing.T) {
	r := NewReader(&onceReader{t: t, p: []byte("data: a\n\n: comment\r\ndata: b\r\n\r\ndata: c")}, 0)
	if r.Buffered() {
		t.Fatal("buffered before any read")
	}
	ev, err := r.Next()
	if err != nil || string(ev.Data) != "a" {
		t.Fatalf("%q %v", ev.Data, err)
	}
	if !r.Buffered() {
		t.Fatal("the second event came in the same read: want buffered")
	}
	if ev, err = r.Next(); err != nil || string(ev.Data) != "b" {
		t.Fatalf("%q %v", ev.Data, err)
	}
	if r.Buffered() {
		t.Fatal("an incomplete event reported buffered")
	}
}
