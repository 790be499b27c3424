// Package server is the fasthttp front of the gateway: the endpoint table,
// request parsing and limits, error bodies in each dialect, the response
// writer (JSON and SSE), and graceful shutdown.
//
// A request passes through here in this order: endpoint lookup, request id,
// body checks (size, JSON, model, stream), snapshot acquire, the compiled
// middleware chain ending in the router, then the response: a JSON body
// (translated to the client's dialect when the provider spoke another) or
// an SSE stream relayed event by event through a pull-based body reader, so
// no goroutine or pipe sits between the upstream and the client.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/auth"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/store"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// Defaults for config.ServerSettings fields left at zero.
const (
	DefaultMaxBody         = 10 << 20
	DefaultReadTimeout     = 60 * time.Second
	DefaultWriteTimeout    = 60 * time.Second
	DefaultIdleTimeout     = 120 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// Version is reported by readiness; set by main.
var Version = "dev"

// KeyChecker validates a virtual key presented on a non-LLM endpoint.
type KeyChecker interface {
	Valid(ctx context.Context, cred []byte) bool
}

// Options configure a Server.
type Options struct {
	Holder   *gateway.Holder
	Log      *zap.Logger
	Metrics  *telemetry.Metrics
	Settings config.ServerSettings
	// Spend receives one record per LLM request; nil: none kept.
	Spend SpendSink
	// StrictSpend commits a request's record before the last byte of its
	// response is sent.
	StrictSpend bool
	// StorePrompts keeps request bodies and non-streamed responses in the
	// spend records.
	StorePrompts bool
	// Admin serves the admin API (/key, /team, /user, /spend...); nil: 404.
	Admin fasthttp.RequestHandler
	// Ops are operator endpoints by exact path (/policy/reload ...), served
	// only to callers with the master key (to anyone when none is set).
	Ops map[string]fasthttp.RequestHandler
	// Keys validates virtual keys on /v1/models; nil: master key only.
	Keys KeyChecker
}

// SpendSink is where spend records go (engine/spend.Writer).
type SpendSink interface {
	Add(r store.SpendRecord)
	AddSync(ctx context.Context, r store.SpendRecord) error
}

// Server serves the gateway's HTTP API.
type Server struct {
	holder   *gateway.Holder
	log      *zap.Logger
	metrics  *telemetry.Metrics
	settings config.ServerSettings
	srv      *fasthttp.Server
	promh    fasthttp.RequestHandler
	spend    SpendSink
	strict   bool
	prompts  bool
	admin    fasthttp.RequestHandler
	ops      map[string]fasthttp.RequestHandler
	keys     KeyChecker
	idPrefix string
	idSeq    atomic.Uint64
	ids      atomic.Pointer[idBatch]
	ready    atomic.Bool
	// stopping is set when Shutdown starts; streams counts the streams
	// relayed on hijacked connections (relay.go), which Shutdown waits for
	// besides the connections fasthttp still serves; open counts all open
	// streams.
	stopping atomic.Bool
	streams  atomic.Int64
	open     atomic.Int64
}

// New builds a server; call Serve or ListenAndServe to start it.
func New(o Options) *Server {
	st := o.Settings
	if st.MaxBodyBytes <= 0 {
		st.MaxBodyBytes = DefaultMaxBody
	}
	if st.ReadTimeout <= 0 {
		st.ReadTimeout = DefaultReadTimeout
	}
	if st.WriteTimeout <= 0 {
		st.WriteTimeout = DefaultWriteTimeout
	}
	if st.IdleTimeout <= 0 {
		st.IdleTimeout = DefaultIdleTimeout
	}
	if st.ShutdownTimeout <= 0 {
		st.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	s := &Server{
		holder: o.Holder, log: o.Log, metrics: o.Metrics, settings: st,
		spend: o.Spend, strict: o.StrictSpend, prompts: o.StorePrompts, admin: o.Admin, keys: o.Keys, ops: o.Ops,
		idPrefix: "req-" + hex.EncodeToString(rnd[:]) + "-",
		promh:    fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{})),
	}
	s.srv = &fasthttp.Server{
		Handler:            s.handleServed,
		ErrorHandler:       s.handleParseError,
		Name:               "portcullis",
		MaxRequestBodySize: st.MaxBodyBytes,
		ReadTimeout:        st.ReadTimeout,
		WriteTimeout:       st.WriteTimeout,
		IdleTimeout:        st.IdleTimeout,
		Concurrency:        st.MaxConns,
		// Request headers up to 8 KiB (larger: 431). The buffer is held
		// for the life of a connection, streams included, unless
		// server.reduce_memory is set (see config.ServerSettings).
		ReadBufferSize:               8 << 10,
		ReduceMemoryUsage:            st.ReduceMemory,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// Streams are relayed on hijacked connections, which then go on
		// serving requests (relay.go): fasthttp must not close them.
		KeepHijackedConns: true,
		// TCP keep-alive: Go's net.Listen already enables it on every
		// accepted connection (15 s); fasthttp's TCPKeepalive would set it
		// again, one more setsockopt per connection.
		SecureErrorLogMessage:         true,
		DisableHeaderNamesNormalizing: false,
		Logger:                        zapPrintf{o.Log},
	}
	s.ready.Store(true)
	return s
}

type zapPrintf struct{ l *zap.Logger }

func (z zapPrintf) Printf(format string, args ...any) { z.l.Sugar().Debugf(format, args...) }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	ln = &patientListener{Listener: ln,
		shed: func() { s.holder.Current().CloseIdleConnections() },
		warn: func(err error) {
			s.log.Warn("out of file descriptors: new connections wait; idle upstream connections closed", zap.Error(err))
		},
	}
	if s.settings.TLSCertFile != "" {
		return s.srv.ServeTLS(ln, s.settings.TLSCertFile, s.settings.TLSKeyFile)
	}
	return s.srv.Serve(ln)
}

// Shutdown stops accepting, lets in-flight requests and streams finish
// within the configured bound, then closes what is left.
func (s *Server) Shutdown() error {
	s.ready.Store(false)
	s.stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), s.settings.ShutdownTimeout)
	defer cancel()
	err := s.srv.ShutdownWithContext(ctx)
	// fasthttp no longer counts a hijacked connection: the streams relayed
	// on them are waited for here, within the same bound. None starts once
	// fasthttp's shutdown has returned (no handler runs any more).
	for s.streams.Load() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return err
}

// adminPrefixes are the admin API's paths, as LiteLLM serves them.
var adminPrefixes = [][]byte{[]byte("/key/"), []byte("/team/"), []byte("/user/"), []byte("/spend/"), []byte("/global/spend")}

// endpoint kinds
const (
	epNone = iota
	epChat
	epCompletion
	epEmbedding
	epMessages
	epModels
	epModel
	epLive
	epReady
	epMetrics
	epAdmin
)

// route maps a path to an endpoint, with and without the /v1 prefix.
func route(path []byte) int {
	p := path
	if bytes.HasPrefix(p, []byte("/v1/")) {
		p = p[3:]
	}
	switch string(p) {
	case "/chat/completions", "/openai/chat/completions", "/engines/chat/completions":
		return epChat
	case "/completions":
		return epCompletion
	case "/embeddings":
		return epEmbedding
	case "/messages":
		return epMessages
	case "/models":
		return epModels
	}
	switch string(path) {
	case "/health/liveliness", "/health/liveness":
		return epLive
	case "/health/readiness", "/health":
		return epReady
	case "/metrics", "/metrics/":
		return epMetrics
	}
	if bytes.HasPrefix(p, []byte("/models/")) {
		return epModel
	}
	for _, pre := range adminPrefixes {
		if bytes.HasPrefix(path, pre) {
			return epAdmin
		}
	}
	return epNone
}

func dialectOf(ep int) llm.Dialect {
	switch ep {
	case epChat:
		return llm.OpenAIChat
	case epCompletion:
		return llm.OpenAICompletion
	case epEmbedding:
		return llm.OpenAIEmbedding
	case epMessages:
		return llm.AnthropicMessages
	}
	return llm.OpenAIChat
}

// Handle is the handler for a RequestCtx the server's own connection loop
// did not produce (in-memory tests): streams are written through fasthttp's
// body writer, never relayed on a hijacked connection.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) { s.handle(ctx, false) }

// handleServed is the handler of requests read from the server's
// connections, on which a stream may be relayed raw (relay.go).
func (s *Server) handleServed(ctx *fasthttp.RequestCtx) { s.handle(ctx, true) }

func (s *Server) handle(ctx *fasthttp.RequestCtx, served bool) {
	ep := route(ctx.Path())
	switch ep {
	case epChat, epCompletion, epEmbedding, epMessages:
		if !ctx.IsPost() {
			s.methodNotAllowed(ctx, dialectOf(ep), "POST")
			return
		}
		s.serveLLM(ctx, dialectOf(ep), served)
	case epModels, epModel:
		if !ctx.IsGet() {
			s.methodNotAllowed(ctx, llm.OpenAIChat, "GET")
			return
		}
		s.serveModels(ctx, ep)
	case epLive:
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`"I'm alive!"`)
	case epReady:
		s.serveReady(ctx)
	case epMetrics:
		s.promh(ctx)
	case epAdmin:
		if s.admin == nil {
			writeError(ctx, llm.OpenAIChat, errs.New(404, errs.CodeNotFound, "The admin API needs a database (general_settings.database_url or the default SQLite file)"))
			return
		}
		s.admin(ctx)
	default:
		if h := s.ops[string(ctx.Path())]; h != nil {
			s.serveOps(ctx, h)
			return
		}
		e := errs.New(404, errs.CodeNotFound, "Unknown route "+string(ctx.Method())+" "+string(ctx.Path()))
		writeError(ctx, llm.OpenAIChat, e)
	}
}

// serveOps runs an operator endpoint for a caller holding the master key.
func (s *Server) serveOps(ctx *fasthttp.RequestCtx, h fasthttp.RequestHandler) {
	rt := s.holder.Acquire()
	m := rt.Master
	rt.Release()
	if m != nil {
		if e := m.Check(&ctx.Request.Header); e != nil {
			writeError(ctx, llm.OpenAIChat, e)
			return
		}
	}
	h(ctx)
}

func (s *Server) methodNotAllowed(ctx *fasthttp.RequestCtx, d llm.Dialect, allow string) {
	ctx.Response.Header.Set("Allow", allow)
	writeError(ctx, d, errs.New(405, errs.CodeMethodNotAllowed, "Method "+string(ctx.Method())+" not allowed; use "+allow))
}

// handleParseError answers requests fasthttp could not read: a body over
// the limit, a malformed request line, a client too slow to send.
func (s *Server) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	d := dialectOf(route(ctx.Path()))
	var e *errs.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = errs.New(413, errs.CodeBodyTooLarge, "Request body is larger than the limit of "+strconv.Itoa(s.settings.MaxBodyBytes)+" bytes")
	case isTimeout(err):
		e = errs.New(408, errs.CodeTimeout, "Timed out reading the request")
	default:
		e = errs.New(400, errs.CodeInvalidRequest, "Malformed HTTP request")
	}
	ctx.SetConnectionClose()
	writeError(ctx, d, e)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeError writes e in the client's dialect.
func writeError(ctx *fasthttp.RequestCtx, d llm.Dialect, e *errs.Error) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	if e.Status == 429 || e.Status == 503 {
		ra := e.RetryAfter
		if ra <= 0 && e.Status == 429 {
			ra = 1
		}
		if ra > 0 {
			ctx.Response.Header.Set("Retry-After", strconv.FormatFloat(ra, 'f', -1, 64))
		}
	}
	for _, h := range e.Headers {
		ctx.Response.Header.Set(h[0], h[1])
	}
	b := ctx.Response.BodyWriter().(interface{ Write([]byte) (int, error) })
	var buf [512]byte
	if d == llm.AnthropicMessages {
		_, _ = b.Write(e.AppendAnthropic(buf[:0]))
	} else {
		_, _ = b.Write(e.AppendOpenAI(buf[:0]))
	}
}

// clientRequestID returns the client's x-request-id when it is sane.
func clientRequestID(ctx *fasthttp.RequestCtx) string {
	if v := ctx.Request.Header.PeekCanonical(hdrRequestID); len(v) > 0 && len(v) <= 128 && printable(v) {
		return string(v)
	}
	return ""
}

// requestID returns a new id, unique in this process and, through its
// random prefix, across restarts: the key of the request's spend record
// (a client's own x-request-id may repeat, so it is kept beside it).
//
// Ids are cut from batches of idBatchN written into one string: one
// allocation per batch instead of one per request (on a stream's first
// byte, with cold caches, an allocation costs about 2 µs). Batches take
// disjoint ranges of the sequence; a batch made by a goroutine that lost
// the race to install it leaves a gap, never a duplicate.
func (s *Server) requestID() string {
	for {
		b := s.ids.Load()
		if b != nil {
			if i := b.next.Add(1) - 1; i < idBatchN {
				start := uint16(0)
				if i > 0 {
					start = b.ends[i-1]
				}
				return b.s[start:b.ends[i]]
			}
		}
		s.ids.CompareAndSwap(b, s.newIDBatch())
	}
}

const idBatchN = 256

// idBatch is idBatchN request ids, back to back in s; ends[i] is where id
// i ends.
type idBatch struct {
	s    string
	ends [idBatchN]uint16
	next atomic.Int32
}

func (s *Server) newIDBatch() *idBatch {
	b := &idBatch{}
	first := s.idSeq.Add(idBatchN) - idBatchN + 1
	buf := make([]byte, 0, idBatchN*(len(s.idPrefix)+8))
	for k := range uint64(idBatchN) {
		buf = append(buf, s.idPrefix...)
		buf = strconv.AppendUint(buf, first+k, 36)
		b.ends[k] = uint16(len(buf))
	}
	b.s = string(buf)
	return b
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func (s *Server) serveModels(ctx *fasthttp.RequestCtx, ep int) {
	rt := s.holder.Acquire()
	defer rt.Release()
	if rt.Master != nil && !(rt.AllowAnonymous && len(auth.Credential(&ctx.Request.Header)) == 0) {
		// Any valid credential may list models: the master key, or (with
		// virtual keys) a key the key stage accepts.
		if e := rt.Master.Check(&ctx.Request.Header); e != nil && !s.keyValid(ctx) {
			writeError(ctx, llm.OpenAIChat, e)
			return
		}
	}
	ctx.SetContentType("application/json")
	if ep == epModels {
		ctx.SetBody(rt.ModelsJSON)
		return
	}
	p := ctx.Path()
	id := p[bytes.Index(p, []byte("/models/"))+len("/models/"):]
	if b, ok := rt.ModelJSON[string(id)]; ok {
		ctx.SetBody(b)
		return
	}
	e := errs.New(404, errs.CodeModelNotFound, "The model `"+string(id)+"` does not exist")
	e.Param = "model"
	writeError(ctx, llm.OpenAIChat, e)
}

func (s *Server) keyValid(ctx *fasthttp.RequestCtx) bool {
	return s.keys != nil && s.keys.Valid(ctx, auth.Credential(&ctx.Request.Header))
}

func (s *Server) serveReady(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	if !s.ready.Load() {
		ctx.SetStatusCode(503)
		ctx.SetBodyString(`{"status":"shutting_down"}`)
		return
	}
	rt := s.holder.Acquire()
	n := len(rt.Router.Names())
	rt.Release()
	db := `"Not connected"`
	if s.spend != nil {
		db = `"connected"`
	}
	b := append([]byte(`{"status":"healthy","db":`+db+`,"models":`), strconv.Itoa(n)...)
	b = append(b, `,"version":`...)
	b = errs.AppendJSONString(b, Version)
	ctx.SetBody(append(b, '}'))
}

// endpointIndex maps a dialect to telemetry.Endpoints.
func endpointIndex(d llm.Dialect) int {
	switch d {
	case llm.OpenAIChat:
		return 0
	case llm.OpenAICompletion:
		return 1
	case llm.OpenAIEmbedding:
		return 2
	case llm.AnthropicMessages:
		return 3
	}
	return -1
}

// parse checks the envelope of an LLM request without decoding it: valid
// JSON, an object, a string model, a boolean stream.
//
// models (may be nil) are the configured models' metrics: a request naming
// one takes its handle's name string instead of a copy out of the body
// (one allocation less per request).
func parse(x *pipeline.Exchange, models map[string]*telemetry.Model) *errs.Error {
	body := x.Body
	if len(bytes.TrimSpace(body)) == 0 {
		return errs.BadRequest(errs.CodeInvalidJSON, "", "Request body is empty; send a JSON object")
	}
	// One pass validates the body and finds its members (members.go);
	// only the values the gateway reads become gjson Results, over the
	// body's memory (what outlives the request is cloned).
	it, ok := newMembers(body)
	if !ok {
		if !gjson.ValidBytes(body) {
			return errs.BadRequest(errs.CodeInvalidJSON, "", "Request body is not valid JSON")
		}
		return errs.BadRequest(errs.CodeInvalidJSON, "", "Request body must be a JSON object")
	}
	// model, stream and max_tokens, in every request, are read from their
	// raw values; the rarer members through gjson.
	var modelRaw, streamRaw []byte
	var opts, tags, meta, fallbacks, retries gjson.Result
	msgsArray := false
	strip := 0
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch string(k) {
		case "model":
			modelRaw = v
		case "stream":
			streamRaw = v
		case "messages":
			msgsArray = v[0] == '[' // valid JSON: an array
		case "stream_options":
			opts = result(v)
		case "metadata":
			meta = result(v)
		case "tags":
			tags = result(v)
			strip++
		case "fallbacks":
			fallbacks = result(v)
			strip++
		case "num_retries":
			retries = result(v)
			strip++
		case "context_window_fallbacks", "mock_testing_fallbacks":
			strip++
		case "cache":
			// LiteLLM's cache controls, for the cache stage.
			x.CacheParams = append([]byte(nil), v...)
			strip++
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			if n := tokenLimit(v); n > 0 && (x.MaxTokens == 0 || n < x.MaxTokens) {
				x.MaxTokens = n
			}
		}
	}
	if it.bad {
		return errs.BadRequest(errs.CodeInvalidJSON, "", "Request body is not valid JSON")
	}
	model := jsonString(modelRaw)
	switch {
	case modelRaw == nil || string(modelRaw) == "null":
		return errs.BadRequest(errs.CodeMissingModel, "model", "Missing required parameter: 'model'")
	case modelRaw[0] != '"' || model == "":
		return errs.BadRequest(errs.CodeInvalidRequest, "model", "'model' must be a non-empty string")
	}
	if m := models[model]; m != nil {
		x.Model = m.Name()
	} else {
		x.Model = strings.Clone(model)
	}
	switch string(streamRaw) {
	case "", "null":
	case "true":
		x.Stream = true
	case "false":
	default:
		return errs.BadRequest(errs.CodeInvalidRequest, "stream", "'stream' must be a boolean")
	}
	if x.Dialect == llm.OpenAIEmbedding && x.Stream {
		return errs.BadRequest(errs.CodeInvalidRequest, "stream", "embeddings cannot be streamed")
	}
	if x.Dialect == llm.OpenAIChat || x.Dialect == llm.AnthropicMessages {
		if !msgsArray {
			return errs.BadRequest(errs.CodeInvalidRequest, "messages", "'messages' must be an array of messages")
		}
	}
	if opts.Exists() {
		x.IncludeUsage = opts.Get("include_usage").Type == gjson.True
	}
	if !tags.Exists() && meta.Exists() {
		tags = meta.Get("tags")
	}
	var err *errs.Error
	if x.Tags, err = stringList(tags, "tags"); err != nil {
		return err
	}
	if x.RequestFallbacks, err = stringList(fallbacks, "fallbacks"); err != nil {
		return err
	}
	if retries.Exists() {
		if retries.Type != gjson.Number || retries.Int() < 0 || retries.Int() > 10 {
			return errs.BadRequest(errs.CodeInvalidRequest, "num_retries", "'num_retries' must be a whole number from 0 to 10")
		}
		x.NumRetries, x.NumRetriesSet = int(retries.Int()), true
	}
	if strip > 0 {
		// Routing fields are the gateway's, not the provider's: OpenAI
		// rejects unknown parameters. Removing them costs a copy of the
		// body, paid only by requests that carry them.
		x.Body = stripKeys(x.Body)
	}
	return nil
}

// jsonString is the value of a raw JSON string over its memory (unescaped
// into a new string when it has escapes); "" when raw is not a string.
func jsonString(raw []byte) string {
	if len(raw) < 2 || raw[0] != '"' {
		return ""
	}
	s := raw[1 : len(raw)-1]
	if bytes.IndexByte(s, '\\') >= 0 {
		return result(raw).Str
	}
	return unsafe.String(unsafe.SliceData(s), len(s))
}

// tokenLimit is a raw max_tokens value as gjson's Int reads it; 0 for
// anything but a number. Plain digits (every real request) are read here.
func tokenLimit(raw []byte) int {
	if len(raw) == 0 || len(raw) > 9 {
		return gjsonInt(raw)
	}
	n := 0
	for _, c := range raw {
		if c < '0' || c > '9' {
			return gjsonInt(raw)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func gjsonInt(raw []byte) int {
	if r := result(raw); r.Type == gjson.Number {
		return int(r.Int())
	}
	return 0
}

// gatewayKeys are request fields the gateway consumes and never forwards.
var gatewayKeys = []string{"tags", "fallbacks", "num_retries", "context_window_fallbacks", "mock_testing_fallbacks", "cache"}

func stripKeys(body []byte) []byte {
	out := append([]byte(nil), body...)
	for _, k := range gatewayKeys {
		for gjson.GetBytes(out, k).Exists() {
			b, err := sjson.DeleteBytes(out, k)
			if err != nil {
				break
			}
			out = b
		}
	}
	return out
}

// stringList reads an optional array of strings.
func stringList(v gjson.Result, param string) ([]string, *errs.Error) {
	if !v.Exists() || v.Type == gjson.Null {
		return nil, nil
	}
	if !v.IsArray() {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, param, "'"+param+"' must be an array of strings")
	}
	var out []string
	var bad bool
	v.ForEach(func(_, e gjson.Result) bool {
		if e.Type != gjson.String {
			bad = true
			return false
		}
		out = append(out, strings.Clone(e.Str)) // the body buffer is reused after the request
		return true
	})
	if bad {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, param, "'"+param+"' must be an array of strings")
	}
	return out, nil
}
