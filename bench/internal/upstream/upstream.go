// Package upstream is portcullis-bench's fake OpenAI upstream: a fasthttp
// server answering POST .../chat/completions with a fixed JSON completion,
// or, for "stream": true, with Chunks SSE chunks Gap apart then [DONE].
// Paths under /idle/ stream one chunk and then hold the stream open,
// sending only a comment every IdleGap; paths under /large/ answer JSON
// with LargeCompletionBody (4 KiB) instead. Delay is a fixed latency added
// before the response (or its first chunk). GET /stats returns how many
// chat requests it has served ({"requests": n}), so that a caller can tell
// whether a cache in front answered without it.
package upstream

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// Config shapes the responses.
type Config struct {
	Delay   time.Duration
	Chunks  int
	Gap     time.Duration
	IdleGap time.Duration
}

// CompletionBody is the non-streamed response.
var CompletionBody = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is the fake upstream of portcullis-bench, answering at once."},` +
	`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":17,"total_tokens":31}}`)

// LargeCompletionBody is the non-streamed response under /large/: a chat
// completion of 4,096 bytes (a few paragraphs of answer, about 800
// completion tokens), the size of a typical cached answer.
var LargeCompletionBody = largeCompletion(4096)

func largeCompletion(size int) []byte {
	head := `{"id":"chatcmpl-bench-large","object":"chat.completion","created":1700000000,"model":"bench",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"`
	tail := `"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":800,"total_tokens":814}}`
	para := "This is the fake upstream of portcullis-bench answering at length, so that a cached answer " +
		"has the size of a real one: a few paragraphs of plain text, with no characters that JSON must escape. "
	n := size - len(head) - len(tail)
	content := strings.Repeat(para, n/len(para)+1)[:n]
	return []byte(head + content + tail)
}

// Chunk returns the SSE event of content chunk k (1-based) of n.
func Chunk(k, n int) []byte {
	finish := "null"
	if k == n {
		finish = `"stop"`
	}
	return []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",` +
		`"choices":[{"index":0,"delta":{"content":"token` + strconv.Itoa(k) + ` "},"logprobs":null,"finish_reason":` + finish + `}]}` + "\n\n")
}

var (
	usageChunk = []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",` +
		`"choices":[],"usage":{"prompt_tokens":14,"completion_tokens":50,"total_tokens":64}}` + "\n\n")
	doneEvent = []byte("data: [DONE]\n\n")
	keepAlive = []byte(": keep-alive\n\n")
	suffix    = []byte("/chat/completions")
	statsPath = "/stats"
)

// release ends every idle stream held so far: a POST to /idle/release
// closes the current channel and installs a new one, so the hops in front
// free their upstream connections at once instead of at the next
// keep-alive (which would leave them holding thousands of loopback ports
// into the next measurement).
type release struct {
	mu sync.Mutex
	ch chan struct{}
}

func (r *release) current() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ch
}

func (r *release) fire() {
	r.mu.Lock()
	close(r.ch)
	r.ch = make(chan struct{})
	r.mu.Unlock()
}

// Handler serves the fake API.
func Handler(cfg Config) fasthttp.RequestHandler {
	rel := &release{ch: make(chan struct{})}
	if cfg.Chunks <= 0 {
		cfg.Chunks = 50
	}
	if cfg.IdleGap <= 0 {
		cfg.IdleGap = time.Minute
	}
	chunks := make([][]byte, cfg.Chunks+1)
	for k := 1; k <= cfg.Chunks; k++ {
		chunks[k] = Chunk(k, cfg.Chunks)
	}
	var served atomic.Int64
	return func(ctx *fasthttp.RequestCtx) {
		path := ctx.Path()
		switch string(path) {
		case "/idle/release":
			rel.fire()
			return
		case statsPath:
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"requests":` + strconv.FormatInt(served.Load(), 10) + `}`)
			return
		}
		if !ctx.IsPost() || !bytes.HasSuffix(path, suffix) {
			ctx.SetStatusCode(404)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"not found","type":"invalid_request_error"}}`)
			return
		}
		served.Add(1)
		body := ctx.PostBody()
		stream := gjson.GetBytes(body, "stream").Bool()
		idle := bytes.HasPrefix(path, []byte("/idle/"))
		if cfg.Delay > 0 {
			time.Sleep(cfg.Delay)
		}
		if !stream {
			ctx.SetContentType("application/json")
			if bytes.HasPrefix(path, []byte("/large/")) {
				ctx.SetBody(LargeCompletionBody)
			} else {
				ctx.SetBody(CompletionBody)
			}
			return
		}
		usage := gjson.GetBytes(body, "stream_options.include_usage").Bool()
		ctx.SetContentType("text/event-stream")
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		if idle {
			// The connection closes with the stream: a hop must not keep
			// 10,000 released streams' connections in its pool (the next
			// hop's streams need the descriptors).
			ctx.SetConnectionClose()
			done := rel.current()
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				_, _ = w.Write(chunks[1])
				if w.Flush() != nil {
					return
				}
				t := time.NewTimer(cfg.IdleGap)
				defer t.Stop()
				for {
					select {
					case <-t.C:
						t.Reset(cfg.IdleGap)
						_, _ = w.Write(keepAlive)
						if w.Flush() != nil {
							return
						}
					case <-done:
						_, _ = w.Write(doneEvent)
						_ = w.Flush()
						return
					}
				}
			})
			return
		}
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for k := 1; k <= cfg.Chunks; k++ {
				if k > 1 && cfg.Gap > 0 {
					time.Sleep(cfg.Gap)
				}
				_, _ = w.Write(chunks[k])
				if k < cfg.Chunks {
					if w.Flush() != nil {
						return
					}
				}
			}
			if usage {
				_, _ = w.Write(usageChunk)
			}
			_, _ = w.Write(doneEvent)
			_ = w.Flush()
		})
	}
}

// Server returns the fasthttp server of the fake upstream.
func Server(cfg Config) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               Handler(cfg),
		Name:                  "bench-upstream",
		Concurrency:           1 << 20,
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
	}
}
