package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/telemetry"
	"github.com/portcullis/portcullis/engine/translate"
)

// serveLLM serves chat, completions, embeddings and messages.
func (s *Server) serveLLM(ctx *fasthttp.RequestCtx, d llm.Dialect, served bool) {
	telemetry.Mark(telemetry.MarkRequest)
	x := pipeline.Acquire()
	x.Start = time.Now()
	// Not the RequestCtx: its Done closes when shutdown starts, and
	// in-flight requests and streams are meant to finish during shutdown.
	x.Ctx = context.Background()
	x.Dialect = d
	x.ID = s.requestID()
	x.ClientID = clientRequestID(ctx)
	x.Header = &ctx.Request.Header
	x.Body = ctx.PostBody()
	// The client's id comes back as it was sent; ours otherwise.
	if x.ClientID != "" {
		setHeader(&ctx.Response.Header, hdrRequestID, x.ClientID)
		setHeader(&ctx.Response.Header, hdrPortcullisRequestID, x.ID)
	} else {
		setHeader(&ctx.Response.Header, hdrRequestID, x.ID)
	}

	rt := s.holder.Acquire()
	if e := parse(x, rt.ModelMetrics); e != nil {
		s.fail(ctx, rt, x, e)
		return
	}
	telemetry.Mark(telemetry.MarkParsed)
	err := rt.Handler(x)
	telemetry.Mark(telemetry.MarkRouted)
	routingHeaders(ctx, x)
	for _, h := range x.ResponseSet {
		ctx.Response.Header.Set(h[0], h[1])
	}
	if err != nil {
		s.fail(ctx, rt, x, errs.From(err))
		return
	}
	resp := x.Response
	if resp.Stream != nil {
		s.startStream(ctx, rt, x, served)
		return
	}
	body, tokens, err := s.convertBody(resp, x)
	if err != nil {
		s.fail(ctx, rt, x, errs.From(err))
		return
	}
	if fs := x.Filters(); len(fs) > 0 {
		for _, f := range fs {
			if body, err = f.Body(x, body); err != nil {
				s.fail(ctx, rt, x, errs.From(err))
				return
			}
		}
		// Filters may add response headers.
		for _, h := range x.ResponseSet {
			ctx.Response.Header.Set(h[0], h[1])
		}
	}
	x.Tokens = tokens
	x.Status = 200
	if resp.Status >= 200 && resp.Status < 300 {
		// A plugin's "respond" may answer with another 2xx.
		x.Status = resp.Status
	}
	ctx.SetStatusCode(x.Status)
	ctx.SetContentType("application/json")
	// The body may alias the upstream response buffer, released with the
	// exchange, so it is copied into the client response here.
	ctx.SetBody(body)
	if s.prompts && s.spend != nil {
		x.Output = ctx.Response.Body()
	}
	s.finish(rt, x)
}

// Fixed response header names in fasthttp's canonical form (the server
// normalizes names): setHeader sets them with SetCanonical, which skips
// normalizing the name again on every request (half the cost of Set for
// the six a stream's head carries).
var (
	hdrRequestID           = []byte("X-Request-Id")
	hdrPortcullisRequestID = []byte("X-Portcullis-Request-Id")
	hdrModelID             = []byte("X-Litellm-Model-Id")
	hdrAttemptedFallbacks  = []byte("X-Litellm-Attempted-Fallbacks")
	hdrAttemptedRetries    = []byte("X-Litellm-Attempted-Retries")
	hdrCacheControl        = []byte("Cache-Control")
	hdrAccelBuffering      = []byte("X-Accel-Buffering")
)

// setHeader sets the canonical header name to v (fasthttp copies v).
func setHeader(h *fasthttp.ResponseHeader, name []byte, v string) {
	h.SetCanonical(name, unsafe.Slice(unsafe.StringData(v), len(v)))
}

// routingHeaders names the deployment that served (or was tried last) and
// what was tried before it, in LiteLLM's headers and ours.
func routingHeaders(ctx *fasthttp.RequestCtx, x *pipeline.Exchange) {
	if x.Attempts == 0 {
		return
	}
	h := &ctx.Response.Header
	setHeader(h, hdrModelID, x.DeploymentID)
	setHeader(h, hdrAttemptedFallbacks, strconv.Itoa(x.FallbacksUsed))
	setHeader(h, hdrAttemptedRetries, strconv.Itoa(x.Attempts-1-x.FallbacksUsed))
	if len(x.Attempted) > 0 {
		h.Set("x-portcullis-attempted-deployments", strings.Join(x.Attempted, ","))
	}
}

// fail writes e, logs and releases.
func (s *Server) fail(ctx *fasthttp.RequestCtx, rt *gateway.Runtime, x *pipeline.Exchange, e *errs.Error) {
	x.Err = e
	x.Status = e.Status
	writeError(ctx, x.Dialect, e)
	s.finish(rt, x)
}

// account prices the request, settles what the key stage reserved and
// writes the spend record, once.
func (s *Server) account(x *pipeline.Exchange) {
	if x.Accounted {
		return
	}
	x.Accounted = true
	if x.Served != nil {
		// Tokens are zero for a failed request; a stream cut after it
		// started is billed for what the upstream reported.
		x.Cost = x.Served.Cost(x.Tokens)
	}
	if x.Settler != nil {
		x.Settler.Settle(x)
	}
	if s.spend == nil {
		return
	}
	rec := store.SpendRecord{
		RequestID: x.ID, KeyHash: x.KeyHash, KeyAlias: x.KeyAlias, TeamID: x.TeamID, UserID: x.UserID,
		Model: x.Model, ModelGroup: x.ModelGroup, Deployment: x.DeploymentID, Provider: x.Provider,
		PromptTokens: int64(x.Tokens.Prompt), CompletionTokens: int64(x.Tokens.Completion),
		CachedTokens: int64(x.Tokens.CachedRead), CacheWriteTokens: int64(x.Tokens.CacheWrite),
		ReasoningTokens: int64(x.Tokens.Reasoning), Cost: x.Cost, Status: x.Status,
		StartTime: x.Start, EndTime: time.Now(), Tags: x.Tags,
		CacheHit: x.CacheHit, SavedCost: x.SavedCost, PolicyVersion: x.PolicyVersion,
	}
	if len(x.Labels) > 0 {
		rec.Tags = append(append(make([]string, 0, len(x.Tags)+len(x.Labels)), x.Tags...), x.Labels...)
	}
	if x.Err != nil {
		rec.ErrorCode = string(x.Err.Code)
	}
	if s.prompts {
		// Copies: the request and response buffers are reused after the
		// request, and the record waits in the writer's queue.
		if gjson.ValidBytes(x.Body) {
			rec.Prompt = append([]byte(nil), x.Body...)
		}
		if len(x.Output) > 0 && gjson.ValidBytes(x.Output) {
			rec.Response = append([]byte(nil), x.Output...)
		}
	}
	if s.strict {
		if err := s.spend.AddSync(context.Background(), rec); err != nil {
			s.log.Error("spend record not committed", zap.String("id", x.ID), zap.Error(err))
		}
		return
	}
	s.spend.Add(rec)
}

// finish accounts for the request, records metrics and the request log
// line, then releases the exchange and the snapshot.
func (s *Server) finish(rt *gateway.Runtime, x *pipeline.Exchange) {
	s.account(x)
	lat := time.Since(x.Start)
	m := rt.ModelMetrics[x.Model]
	if m == nil {
		m = rt.Unknown
	}
	m.Request(endpointIndex(x.Dialect), x.Status)
	m.Latency.Observe(lat.Seconds())
	if x.Tokens.Prompt > 0 {
		m.Prompt.Add(float64(x.Tokens.Prompt))
	}
	if x.Tokens.Completion > 0 {
		m.Completion.Add(float64(x.Tokens.Completion))
	}
	if x.Stream && x.FirstByte > 0 {
		m.TTFB.Observe(x.FirstByte.Seconds())
	}
	if x.Served != nil {
		x.Served.Tokens(x.Tokens.Total())
	}
	if ce := s.log.Check(zap.InfoLevel, "request"); ce != nil {
		fp := fieldPool.Get().(*[]zap.Field)
		fields := append((*fp)[:0],
			zap.String("id", x.ID),
			zap.String("client_request_id", x.ClientID),
			zap.String("endpoint", x.Dialect.String()),
			zap.String("model", x.Model),
			zap.String("deployment", x.DeploymentID),
			zap.String("provider", x.Provider),
			zap.Int("status", x.Status),
			zap.Bool("stream", x.Stream),
			zap.Duration("latency", lat),
			zap.Int("prompt_tokens", x.Tokens.Prompt),
			zap.Int("completion_tokens", x.Tokens.Completion),
			zap.Int("attempts", x.Attempts),
		)
		if x.Stream && x.FirstByte > 0 {
			fields = append(fields, zap.Duration("ttfb", x.FirstByte))
		}
		if x.PolicyVersion != "" {
			fields = append(fields, zap.String("policy_version", x.PolicyVersion))
		}
		if len(x.Labels) > 0 {
			fields = append(fields, zap.Strings("labels", x.Labels))
		}
		if x.CacheHit {
			fields = append(fields, zap.Bool("cache_hit", true))
		}
		if x.Err != nil {
			fields = append(fields, zap.String("error_code", string(x.Err.Code)), zap.String("error", x.Err.Message))
		}
		ce.Write(fields...)
		clear(fields) // no strings kept alive by the pool
		*fp = fields[:0]
		fieldPool.Put(fp)
	}
	pipeline.Release(x)
	rt.Release()
}

// fieldPool holds the access line's field slices: zap's cores encode the
// fields during Write and keep none of them.
var fieldPool = sync.Pool{New: func() any { f := make([]zap.Field, 0, 20); return &f }}

// convertBody returns the response body in the client's dialect, and its
// usage.
func (s *Server) convertBody(resp *provider.Response, x *pipeline.Exchange) ([]byte, llm.Tokens, error) {
	from, to := resp.Dialect, x.Dialect
	if from == to || (to == llm.OpenAICompletion && from == llm.OpenAICompletion) {
		if resp.HasUsage {
			return resp.Body, resp.Usage, nil
		}
		t, _ := translate.UsageFromBody(from, resp.Body)
		return resp.Body, t, nil
	}
	body, t, err := translate.ConvertBody(from, to, resp.Body, x.Model)
	if errors.Is(err, translate.ErrNoTranslation) {
		return nil, t, errs.Internal("no translation from "+from.String()+" to "+to.String(), nil)
	}
	return body, t, err
}

// newStreamTranslator returns the translator from the provider's stream
// dialect to the client's, or nil when events pass through.
func newStreamTranslator(from, to llm.Dialect, model string, includeUsage bool) (translate.StreamTranslator, error) {
	switch {
	case from == to:
		return nil, nil
	case from == llm.AnthropicMessages && to == llm.OpenAIChat:
		return translate.NewAnthropicToChatStream(model, includeUsage), nil
	case from == llm.OpenAIChat && to == llm.AnthropicMessages:
		return translate.NewChatToAnthropicStream(model), nil
	case from == llm.OpenAIChat && to == llm.OpenAICompletion:
		return translate.NewChatToCompletionStream(model), nil
	case from == llm.AnthropicMessages && to == llm.OpenAICompletion:
		return &chained{a: translate.NewAnthropicToChatStream(model, includeUsage), b: translate.NewChatToCompletionStream(model)}, nil
	}
	return nil, errs.Internal("no stream translation from "+from.String()+" to "+to.String(), nil)
}

// chained feeds a's output into b.
type chained struct {
	a, b translate.StreamTranslator
	out  translate.Emit
	err  error
}

func (c *chained) Event(ev sse.Event, emit translate.Emit) error {
	c.out = emit
	return c.a.Event(ev, c.feed)
}

func (c *chained) feed(name, data []byte) error {
	return c.b.Event(sse.Event{Name: name, Data: data}, c.out)
}

func (c *chained) Done() bool        { return c.a.Done() }
func (c *chained) Usage() llm.Tokens { return c.a.Usage() }

// startStream peeks the first upstream event before committing, so a
// stream that fails before its first byte is still an HTTP error the
// router may retry, then hands the rest to a streamBody.
func (s *Server) startStream(ctx *fasthttp.RequestCtx, rt *gateway.Runtime, x *pipeline.Exchange, served bool) {
	resp := x.Response
	tr, err := newStreamTranslator(resp.Dialect, x.Dialect, x.Model, x.IncludeUsage)
	if err != nil {
		s.fail(ctx, rt, x, errs.From(err))
		return
	}
	first, err := resp.Stream.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = errs.New(502, errs.CodeUpstreamProtocol, x.Provider+": upstream returned an empty stream")
		}
		s.fail(ctx, rt, x, errs.From(err))
		return
	}
	// The exchange keeps its stream body across the pool's reuses: the
	// body is done with when Close releases the exchange.
	b, _ := x.Kept.(*streamBody)
	if b == nil {
		b = new(streamBody)
		x.Kept = b
	}
	*b = streamBody{s: s, rt: rt, x: x, ctx: ctx, tr: tr, first: first, hasFirst: true, wt: s.settings.WriteTimeout,
		stream: resp.Stream, dialect: resp.Dialect, strict: s.strict}
	b.out = b.outBuf[:0]
	b.wait, _ = resp.Stream.(provider.Waiter)
	if fs := x.Filters(); len(fs) > 0 {
		b.filters = fs
		b.emitFn = b.filterChain(fs)
	} else if tr != nil {
		// A method value is an allocation: made only for a translator (a
		// pass-through stream without filters appends events directly).
		b.emitFn = b.emit
	}
	b.hideUsage = x.Dialect == llm.OpenAIChat && resp.Dialect == llm.OpenAIChat && !x.IncludeUsage
	x.Status = 200
	ctx.SetStatusCode(200)
	ctx.SetContentType("text/event-stream")
	setHeader(&ctx.Response.Header, hdrCacheControl, "no-cache")
	setHeader(&ctx.Response.Header, hdrAccelBuffering, "no")
	s.open.Add(1) // Close takes it back
	if served && s.relayable(ctx) {
		s.relayRaw(ctx, b)
		return
	}
	// fasthttp sets the write deadline (WriteTimeout ahead) when the
	// handler returns, just before the first event is written: counting it
	// from the request's start spares the first event a second setting.
	b.wtSet = x.Start
	ctx.SetBodyStream(b, -1)
	telemetry.Mark(telemetry.MarkHandled)
}

// streamBody is the client response body of a stream. fasthttp pulls it:
// each Read turns the next upstream event(s) into client bytes, which
// fasthttp writes as one chunk and flushes. When the client goes away the
// write fails and fasthttp closes the body, which closes the upstream.
type streamBody struct {
	// What each event reads, first and together (two cache lines): at the
	// rate of a relay's events nothing else of the exchange is touched,
	// so a stream's state stays in few lines however cold the caches are.
	out       []byte
	off       int
	stream    provider.Stream // x.Response.Stream
	wait      provider.Waiter // the stream's, when it has one
	tr        translate.StreamTranslator
	filters   []pipeline.Filter
	wt        time.Duration
	wtSet     time.Time // when the write deadline was last moved
	dialect   llm.Dialect
	hasFirst  bool
	hideUsage bool
	terminal  bool // the upstream's terminal event was seen (pass-through)
	ended     bool // nothing more will be produced
	closed    bool
	strict    bool // the server's strict spend accounting
	sentFirst bool // x.FirstByte is set

	s      *Server
	rt     *gateway.Runtime
	x      *pipeline.Exchange
	ctx    *fasthttp.RequestCtx
	meter  translate.UsageMeter
	emitFn translate.Emit
	first  sse.Event

	// filters see every event in the client's dialect; emits[i] feeds
	// filter i (emitFn is emits[0], or emit without filters).
	emits    []translate.Emit
	filtered bool // End was called on the filters

	// Set when the stream is relayed on the hijacked connection (relay.go).
	conn    net.Conn
	keep    bool                    // serve the connection's next request afterwards
	chunked bool                    // HTTP/1.1 chunks (HTTP/1.0: the bare events)
	hdr     *fasthttp.RequestHeader // the request's headers, copied off the RequestCtx
	werr    error                   // the first write's error
	head    []byte                  // the response head and first event, until written

	// outBuf is out's first buffer (a typical chunk fits), in the same
	// allocation; last, so the collector's scan of a streamBody stops
	// before it.
	outBuf [256]byte
}

func (b *streamBody) emit(name, data []byte) error {
	b.out = sse.AppendEvent(b.out, name, data)
	return nil
}

// filterChain links the filters: filter i emits into filter i+1, the last
// into the client's buffer. Built once per stream, only when filters exist.
func (b *streamBody) filterChain(fs []pipeline.Filter) translate.Emit {
	b.emits = make([]translate.Emit, len(fs)+1)
	b.emits[len(fs)] = b.emit
	for i := len(fs) - 1; i >= 0; i-- {
		f, next := fs[i], pipeline.Emit(b.emits[i+1])
		b.emits[i] = func(name, data []byte) error { return f.Event(b.x, name, data, next) }
	}
	return b.emits[0]
}

// endFilters tells each filter, in order, that the stream ended; a filter
// that completed normally may still emit into the ones after it.
func (b *streamBody) endFilters(complete bool) error {
	if b.filtered {
		return nil
	}
	b.filtered = true
	var first error
	for i, f := range b.filters {
		next := pipeline.Emit(b.emits[i+1])
		if !complete || first != nil {
			next = discard
		}
		if err := f.End(b.x, complete && first == nil, next); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func discard(_, _ []byte) error { return nil }

// Read implements io.Reader for fasthttp's chunked writer.
func (b *streamBody) Read(p []byte) (int, error) {
	for b.off >= len(b.out) {
		if b.ended {
			return 0, io.EOF
		}
		b.out, b.off = b.out[:0], 0
		b.step()
		b.more()
	}
	if !b.sentFirst {
		b.sentFirst = true
		b.x.FirstByte = time.Since(b.x.Start)
	}
	b.writeDeadline()
	n := copy(p, b.out[b.off:])
	b.off += n
	return n, nil
}

// WriteTo writes the stream to fasthttp's chunked writer, one chunk (and
// one flush) per upstream event, or per run of events read together (see
// more), without the intermediate copy buffer the io.Reader path needs
// (4 KiB less held per open stream).
func (b *streamBody) WriteTo(w io.Writer) (int64, error) {
	telemetry.Mark(telemetry.MarkBody)
	var n int64
	for {
		if b.off >= len(b.out) {
			if b.ended {
				return n, nil
			}
			b.out, b.off = b.out[:0], 0
			if b.wait != nil && !b.hasFirst {
				// Block here, a few frames deep, rather than inside
				// step's parsing: see provider.Waiter.
				b.wait.Wait()
			}
			b.step()
			b.more()
			continue
		}
		if !b.sentFirst {
			b.sentFirst = true
			b.x.FirstByte = time.Since(b.x.Start)
		}
		b.writeDeadline()
		k, err := w.Write(b.out[b.off:])
		n += int64(k)
		b.off += k
		if err != nil {
			return n, err
		}
	}
}

// coalesceMax bounds the output of events gathered into one write.
const coalesceMax = 32 << 10

// more produces the output of the events the upstream stream has already
// read (they came with the one step just produced), so that they go out in
// the same write: one write, and one wake-up of the client, for bytes that
// arrived together, as a byte-copying proxy would do. It never waits for
// the network. Not with strict spend accounting: there the terminal event
// waits for its spend record's commit, and the events before it must not.
func (b *streamBody) more() {
	for !b.ended && !b.strict && b.wait != nil && len(b.out) < coalesceMax && b.wait.Buffered() {
		b.step()
	}
}

// writeDeadline keeps a write deadline WriteTimeout ahead: a client that
// stops reading is cut off without limiting the stream's total length.
// The deadline moves at most once per eighth of WriteTimeout (a client is
// cut off after between 7/8 and all of it): setting it on every event
// cost 5% of a stream's relay CPU.
func (b *streamBody) writeDeadline() {
	if b.wt <= 0 {
		return
	}
	now := time.Now()
	if now.Before(b.wtSet.Add(b.wt / 8)) {
		return
	}
	b.wtSet = now
	if b.conn != nil {
		_ = b.conn.SetWriteDeadline(now.Add(b.wt))
		return
	}
	_ = b.ctx.SetWriteDeadline(now.Add(b.wt))
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo.
func (b *streamBody) SupportsBodyWriteTo() bool { return true }

// step produces the output of the next upstream event into b.out.
func (b *streamBody) step() {
	var ev sse.Event
	if b.hasFirst {
		ev, b.hasFirst = b.first, false
	} else {
		var err error
		ev, err = b.stream.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if !b.done() {
					b.abort(errs.New(502, errs.CodeUpstreamProtocol, b.x.Provider+": upstream stream ended before completion"))
					return
				}
				// Filters read the usage at End (a cache stores it).
				if b.tr != nil {
					b.x.Tokens = b.tr.Usage()
				} else if t, ok := b.meter.Tokens(); ok {
					b.x.Tokens = t
				}
				if err := b.endFilters(true); err != nil {
					b.abort(errs.From(err))
					return
				}
				b.ended = true
				return
			}
			b.abort(errs.From(err))
			return
		}
	}
	if b.tr != nil {
		if err := b.tr.Event(ev, b.emitFn); err != nil {
			b.abort(errs.From(err))
			return
		}
		if b.strict && b.tr.Done() {
			b.x.Tokens = b.tr.Usage()
			b.s.account(b.x)
		}
		return
	}
	// Pass-through.
	d := b.dialect
	if d == llm.AnthropicMessages {
		if string(ev.Name) == "message_stop" {
			b.terminal = true
		} else if string(ev.Name) == "error" {
			b.abort(upstreamStreamError(b.x.Provider, d, ev.Data))
			return
		}
	} else if ev.IsDone() {
		b.terminal = true
	} else if bytes.HasPrefix(ev.Data, []byte(`{"error"`)) {
		b.abort(upstreamStreamError(b.x.Provider, d, ev.Data))
		return
	}
	// One scan for "usage" per event: most chunks carry none, and the
	// meter and the usage hiding below only act on those that do.
	hasUsage := bytes.Contains(ev.Data, []byte(`"usage"`))
	if hasUsage {
		b.meter.Observe(d, ev)
	}
	if b.terminal && b.strict {
		// Strict spend: the record commits before the terminal event,
		// the response's last bytes, is sent.
		if t, ok := b.meter.Tokens(); ok {
			b.x.Tokens = t
		}
		b.s.account(b.x)
	}
	if hasUsage && b.hideUsage && gjson.GetBytes(ev.Data, "usage").IsObject() {
		if gjson.GetBytes(ev.Data, "choices.#").Int() == 0 {
			// The usage chunk Portcullis asked for to count tokens; the
			// client did not ask for it.
			return
		}
		// Usage on a content chunk (Mistral sends it unasked): the client
		// did not ask for usage, so the chunk goes out without it.
		if d, err := sjson.DeleteBytes(ev.Data, "usage"); err == nil {
			ev.Data = d
		}
	}
	if b.filters != nil {
		if err := b.emitFn(ev.Name, ev.Data); err != nil {
			b.abort(errs.From(err))
		}
		return
	}
	b.out = sse.AppendEvent(b.out, ev.Name, ev.Data)
}

func (b *streamBody) done() bool {
	if b.tr != nil {
		return b.tr.Done()
	}
	return b.terminal
}

// upstreamStreamError maps an in-stream error event.
func upstreamStreamError(providerName string, d llm.Dialect, data []byte) *errs.Error {
	msg := gjson.GetBytes(data, "error.message").String()
	if msg == "" {
		msg = "upstream reported an error mid-stream"
	}
	typ := gjson.GetBytes(data, "error.type").String()
	status := 500
	switch typ {
	case "overloaded_error":
		status = 529
	case "rate_limit_error":
		status = 429
	case "invalid_request_error":
		status = 400
	}
	return errs.New(status, errs.CodeUpstream, providerName+": "+msg)
}

// abort ends the stream with an explicit error event in the client's
// dialect: a stream cut by the upstream never looks like a clean end.
func (b *streamBody) abort(e *errs.Error) {
	b.x.Err = e
	b.ended = true
	_ = b.endFilters(false)
	m := b.rt.ModelMetrics[b.x.Model]
	if m != nil {
		m.StreamError(string(e.Code))
	}
	var tmp [512]byte
	if b.x.Dialect == llm.AnthropicMessages {
		b.out = sse.AppendEvent(b.out, []byte("error"), e.AppendAnthropic(tmp[:0]))
	} else {
		b.out = sse.AppendEvent(b.out, nil, e.AppendOpenAI(tmp[:0]))
	}
}

// Close is called by fasthttp when the body has been written or the
// client went away. It closes the upstream and finishes the request. b
// belongs to the exchange (Exchange.Kept), which finish releases: nothing
// touches b after Close.
func (b *streamBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	defer b.s.open.Add(-1) // after finish: no open stream means every record is handed over
	if !b.ended && b.x.Err == nil {
		// The client left before the end: the upstream call is cancelled.
		b.x.Err = errs.New(499, errs.CodeInvalidRequest, "client closed the stream")
		b.x.Status = 499
	}
	_ = b.endFilters(b.ended && b.x.Err == nil)
	if !b.x.Accounted {
		if b.tr != nil {
			b.x.Tokens = b.tr.Usage()
		} else if t, ok := b.meter.Tokens(); ok {
			b.x.Tokens = t
		}
	}
	b.s.finish(b.rt, b.x) // releases the exchange, which closes the stream
	return nil
}
