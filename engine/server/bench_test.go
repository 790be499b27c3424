package server

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// staticUpstream is a zero-allocation fasthttp upstream: a fixed chat
// completion, or a stream whose first event time is reported on firstAt.
type staticUpstream struct {
	ln      net.Listener
	srv     *fasthttp.Server
	firstAt chan time.Time
}

var staticChat = []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}`)

const streamEvent = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n"

func startStatic(tb testing.TB) *staticUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	u := &staticUpstream{ln: ln, firstAt: make(chan time.Time, 1)}
	u.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if !bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) {
			ctx.SetContentType("application/json")
			ctx.SetBody(staticChat)
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(streamEvent)
			select {
			case u.firstAt <- time.Now():
			default:
			}
			_ = w.Flush()
			for i := 0; i < 3; i++ {
				_, _ = w.WriteString(streamEvent)
			}
			_, _ = w.WriteString("data: [DONE]\n\n")
		})
	}}
	go func() { _ = u.srv.Serve(ln) }()
	tb.Cleanup(func() { _ = u.srv.Shutdown() })
	return u
}

func benchServer(tb testing.TB, upURL string, edit ...func(*config.ServerSettings)) (*Server, string) {
	return optsServer(tb, upURL, func(o *Options) {
		for _, e := range edit {
			e(&o.Settings)
		}
	})
}

// optsServer is benchServer with a hook that edits the server's options.
func optsServer(tb testing.TB, upURL string, edit func(*Options)) (*Server, string) {
	cfg, err := config.Parse([]byte(`
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: sk-bench
      api_base: `+upURL+`/v1
`), "bench", nil)
	if err != nil {
		tb.Fatal(err)
	}
	m := telemetry.NewMetrics()
	rt, err := gateway.Build(cfg, gateway.Options{Metrics: m})
	if err != nil {
		tb.Fatal(err)
	}
	// A production logger writing to nowhere: the request line is part of
	// the measured cost.
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zap.InfoLevel))
	// The gateway's default settings (config.Default's lean_streams_after).
	o := Options{Holder: gateway.NewHolder(rt), Metrics: m, Log: log, Settings: config.Default().Server}
	edit(&o)
	s := New(o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	tb.Cleanup(func() { _ = s.Shutdown() })
	return s, ln.Addr().String()
}

var benchBody = []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello! Can you tell me a short joke about gateways?"}],"temperature":0.7,"max_tokens":256}`)

// benchStreamBody is benchBody asking for a stream.
var benchStreamBody = []byte(strings.Replace(string(benchBody), `"max_tokens":256`, `"max_tokens":256,"stream":true`, 1))

// passThrough runs one OpenAI-to-OpenAI request through Handle directly
// (no client socket), so allocations counted are the gateway's and the
// upstream client's.
func passThrough(tb testing.TB, s *Server, ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	ctx.Request.Reset()
	req.CopyTo(&ctx.Request)
	ctx.Response.Reset()
	s.Handle(ctx)
	if ctx.Response.StatusCode() != 200 {
		tb.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}

func newBenchCtx() (*fasthttp.RequestCtx, *fasthttp.Request) {
	req := &fasthttp.Request{}
	req.Header.SetMethod("POST")
	req.SetRequestURI("/v1/chat/completions")
	req.Header.SetContentType("application/json")
	req.SetBody(benchBody)
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
	return ctx, req
}

// BenchmarkChatPassThrough is the OpenAI-to-OpenAI path: parse, route, edit
// "model" in place, call the upstream over loopback, relay the body, log.
func BenchmarkChatPassThrough(b *testing.B) {
	up := startStatic(b)
	s, _ := benchServer(b, "http://"+up.ln.Addr().String())
	ctx, req := newBenchCtx()
	passThrough(b, s, ctx, req)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		passThrough(b, s, ctx, req)
	}
}

// TestPassThroughAllocationBudget guards the hot path: an OpenAI-to-OpenAI
// request must stay within its allocation budget.
func TestPassThroughAllocationBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("loopback upstream")
	}
	up := startStatic(t)
	s, _ := benchServer(t, "http://"+up.ln.Addr().String())
	ctx, req := newBenchCtx()
	passThrough(t, s, ctx, req)
	allocs := testing.AllocsPerRun(200, func() { passThrough(t, s, ctx, req) })
	budget := 3.0 // 1 measured (access line on)
	if raceEnabled {
		budget = 24.0 // the race detector drops pooled objects at random: 14 measured
	}
	t.Logf("allocations per pass-through request: %.1f (budget %.0f)", allocs, budget)
	if allocs > budget {
		t.Fatalf("pass-through request allocates %.1f times, budget %.0f", allocs, budget)
	}
}

// rawStreamUpstream answers every request on a raw TCP socket with an SSE
// stream, writing headers and the first event in one write and reporting
// the time just before that write, so nothing of the upstream's own
// machinery is counted as the gateway's.
func rawStreamUpstream(tb testing.TB) (string, chan time.Time) {
	u, firstAt, _ := heldStreamUpstream(tb, false)
	return u, firstAt
}

// heldStreamUpstream is rawStreamUpstream whose streams, with hold, send
// the rest of their events only once release has a token (the client has
// its first byte): as in bench (c), whose chunks are 5 ms apart, nothing
// but the first event is relayed before the first byte arrives.
func heldStreamUpstream(tb testing.TB, hold bool) (string, chan time.Time, chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	firstAt := make(chan time.Time, 1)
	release := make(chan struct{}, 1)
	chunk := func(b []byte, s string) []byte {
		b = strconv.AppendInt(b, int64(len(s)), 16)
		b = append(b, "\r\n"...)
		b = append(b, s...)
		return append(b, "\r\n"...)
	}
	head := chunk([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"), streamEvent)
	var tail []byte
	for i := 0; i < 3; i++ {
		tail = chunk(tail, streamEvent)
	}
	tail = chunk(tail, "data: [DONE]\n\n")
	tail = append(tail, "0\r\n\r\n"...)
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
					n := 0
					for {
						l, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(l) <= 2 {
							break
						}
						if k, v, ok := bytes.Cut(l, []byte(":")); ok && bytes.EqualFold(k, []byte("content-length")) {
							n = 0 // parsed by hand: this upstream allocates nothing per request
							for _, c := range bytes.TrimSpace(v) {
								n = n*10 + int(c-'0')
							}
						}
					}
					if _, err := br.Discard(n); err != nil {
						return
					}
					t := time.Now()
					if _, err := c.Write(head); err != nil {
						return
					}
					select {
					case firstAt <- t:
					default: // nobody measures (TestStreamAllocationBudget)
					}
					if hold {
						<-release
					}
					if _, err := c.Write(tail); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	return "http://" + ln.Addr().String(), firstAt, release
}

// BenchmarkStreamFirstByteAdded measures the time between the upstream
// writing its first SSE event and the client reading the first byte of the
// response body through the gateway, and reports p50/p99 in µs. The same
// measurement against the upstream directly is reported as direct-*: the
// difference is what the gateway adds beyond one loopback hop; bare-* is an
// in-process fasthttp hop. sent-p50 and bare-sent-p50 count from the
// client's send instead (the request side included), on one keep-alive
// connection per path.
//
// lean relays every stream on its hijacked connection
// (server.lean_streams_after: 0); default keeps them in fasthttp's loop
// below 256 open streams.
func BenchmarkStreamFirstByteAdded(b *testing.B) {
	b.Run("default", func(b *testing.B) { streamFirstByte(b, false) })
	b.Run("lean", func(b *testing.B) {
		streamFirstByte(b, false, func(st *config.ServerSettings) { st.LeanStreamsAfter = 0 })
	})
	b.Run("cold", func(b *testing.B) { streamFirstByte(b, true) })
}

// evictBuf is larger than the caches a core has to itself (L1, L2) and
// than this machine's share of the L3: walking it before a request leaves
// the request's code and data in none of them, as in bench (c), where the
// generator, the upstream and the other streams run between one stream's
// steps.
var evictBuf []byte

func evictCaches() {
	if evictBuf == nil {
		evictBuf = make([]byte, 64<<20)
	}
	for i := 0; i < len(evictBuf); i += 64 {
		evictBuf[i]++
	}
}

// cold: the caches are evicted before each request (evictCaches), which
// makes the first byte cost what it costs in bench (c).
//
// The three paths take turns request by request (the order rotating), each
// on its own keep-alive connection, so that a slower moment of the machine
// falls on all of them alike.
func streamFirstByte(b *testing.B, cold bool, edit ...func(*config.ServerSettings)) {
	upURL, firstAt, release := heldStreamUpstream(b, true)
	_, addr := benchServer(b, upURL, edit...)
	paths := []*fbPath{
		dialPath(b, addr),
		dialPath(b, strings.TrimPrefix(upURL, "http://")),
		dialPath(b, bareHop(b, strings.TrimPrefix(upURL, "http://"))),
	}
	via, direct, hop := paths[0], paths[1], paths[2]
	for i := 0; i < 50; i++ {
		for _, p := range paths {
			p.one(b, firstAt, release, false)
		}
	}
	for _, p := range paths {
		p.first, p.sent = p.first[:0], p.sent[:0]
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range paths {
			paths[(i+j)%len(paths)].one(b, firstAt, release, cold)
		}
	}
	b.StopTimer()
	b.ReportMetric(via.p(via.first, 0.5), "p50-µs")
	b.ReportMetric(via.p(via.first, 0.99), "p99-µs")
	b.ReportMetric(direct.p(direct.first, 0.5), "direct-p50-µs")
	b.ReportMetric(direct.p(direct.first, 0.99), "direct-p99-µs")
	b.ReportMetric(hop.p(hop.first, 0.5), "bare-p50-µs")
	b.ReportMetric(hop.p(hop.first, 0.99), "bare-p99-µs")
	// From the client's send: the request side (parse, pipeline, upstream
	// request) included.
	b.ReportMetric(via.p(via.sent, 0.5), "sent-p50-µs")
	b.ReportMetric(hop.p(hop.sent, 0.5), "bare-sent-p50-µs")
}

// fbPath is one path of streamFirstByte: a keep-alive connection and the
// first-byte times measured on it, from the upstream's first event (first)
// and from the client's send (sent).
type fbPath struct {
	conn        net.Conn
	br          *bufio.Reader
	req         []byte
	first, sent []time.Duration
}

func dialPath(tb testing.TB, addr string) *fbPath {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	body := string(benchStreamBody)
	return &fbPath{conn: conn, br: bufio.NewReaderSize(conn, 64<<10),
		req: []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body)}
}

// one sends a stream request and reads its response to the end.
// The upstream sends the rest of the stream once release has a token.
func (p *fbPath) one(tb testing.TB, firstAt chan time.Time, release chan struct{}, cold bool) {
	if cold {
		evictCaches()
	}
	start := time.Now()
	if _, err := p.conn.Write(p.req); err != nil {
		tb.Fatal(err)
	}
	// Headers, then the first chunk-size line, then a byte of data.
	for {
		l, err := p.br.ReadSlice('\n')
		if err != nil {
			tb.Fatal(err)
		}
		if len(l) <= 2 {
			break
		}
	}
	if _, err := p.br.ReadSlice('\n'); err != nil {
		tb.Fatal(err)
	}
	if _, err := p.br.ReadByte(); err != nil {
		tb.Fatal(err)
	}
	got := time.Now()
	release <- struct{}{}
	p.first = append(p.first, got.Sub(<-firstAt))
	p.sent = append(p.sent, got.Sub(start))
	for {
		l, err := p.br.ReadSlice('\n')
		if err != nil {
			tb.Fatal(err)
		}
		if string(l) == "0\r\n" {
			_, _ = p.br.ReadSlice('\n')
			return
		}
	}
}

// p returns the q-quantile of d in µs.
func (p *fbPath) p(d []time.Duration, q float64) float64 {
	d = slices.Clone(d)
	slices.Sort(d)
	return float64(d[int(q*float64(len(d)-1))].Nanoseconds()) / 1e3
}

// bareHop is a minimal fasthttp reverse proxy in this process (as
// bench/internal/barehop, which engine/ cannot import): the floor for any
// hop's first byte, measured beside the gateway's.
func bareHop(tb testing.TB, upstream string) string {
	tb.Helper()
	cl := &fasthttp.Client{StreamResponseBody: true}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		req := fasthttp.AcquireRequest()
		ctx.Request.CopyTo(req)
		req.SetHost(upstream)
		resp := fasthttp.AcquireResponse()
		if err := cl.Do(req, resp); err != nil {
			ctx.Error(err.Error(), 502)
			return
		}
		fasthttp.ReleaseRequest(req)
		ctx.SetStatusCode(resp.StatusCode())
		ctx.SetContentType(string(resp.Header.ContentType()))
		body := resp.BodyStream()
		ctx.SetBodyStream(body, -1)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// streamThrough runs one streamed OpenAI-to-OpenAI request through Handle
// and writes its body out, as fasthttp would (the previous response's
// reset closes its stream, which finishes the exchange).
func streamThrough(tb testing.TB, s *Server, ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	ctx.Request.Reset()
	req.CopyTo(&ctx.Request)
	ctx.Response.Reset()
	s.Handle(ctx)
	if ctx.Response.StatusCode() != 200 || !ctx.Response.IsBodyStream() {
		tb.Fatalf("status %d, stream %v: %s", ctx.Response.StatusCode(), ctx.Response.IsBodyStream(), ctx.Response.Body())
	}
	if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
		tb.Fatal(err)
	}
}

// TestStreamAllocationBudget guards a stream's path: an OpenAI-to-OpenAI
// stream of four events, client response included, must stay within its
// allocation budget (3: the upstream stream with its Response, the
// router's watched wrapper, and the client body's buffer grown for the
// four events, read together here; the client body is the pooled
// exchange's). On a stream's first byte,
// where caches are cold, an allocation costs about 2 µs
// (BenchmarkStreamFirstByteAdded/cold).
func TestStreamAllocationBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("loopback upstream")
	}
	upURL, _ := rawStreamUpstream(t) // allocates nothing per request
	s, _ := benchServer(t, upURL)
	ctx, req := newBenchCtx()
	req.SetBody(benchStreamBody)
	streamThrough(t, s, ctx, req)
	allocs := testing.AllocsPerRun(200, func() { streamThrough(t, s, ctx, req) })
	ctx.Response.Reset()
	budget := 5.0 // 3 measured
	if raceEnabled {
		budget = 30.0 // the race detector drops pooled objects: 17 measured
	}
	t.Logf("allocations per stream: %.1f (budget %.0f)", allocs, budget)
	if allocs > budget {
		t.Fatalf("a stream allocates %.1f times, budget %.0f", allocs, budget)
	}
}

// BenchmarkParse is the server's reading of a chat request body (validate,
// then pick out model, stream, messages and the LiteLLM controls), on its
// own: the first stage of every LLM request.
func BenchmarkParse(b *testing.B) {
	body := benchStreamBody
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		x := pipeline.Acquire()
		x.Dialect = llm.OpenAIChat
		x.Body = body
		if e := parse(x, nil); e != nil || x.Model != "gpt-4o" || !x.Stream || x.MaxTokens != 256 {
			b.Fatalf("parse: %v (model %q, stream %v, max_tokens %d)", e, x.Model, x.Stream, x.MaxTokens)
		}
		pipeline.Release(x)
	}
}
