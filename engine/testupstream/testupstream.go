// Package testupstream is a fake LLM provider that speaks the OpenAI
// (and OpenAI-compatible) and Anthropic wire formats, for tests, the
// end-to-end suite and demos (`portcullis mock-upstream`). It checks each
// provider's auth header, answers in that provider's JSON and SSE shapes,
// and records every request so tests can assert what the gateway sent.
//
// Behaviour is chosen by words in the requested model name:
//
//	fail-<status>   answer with that HTTP status and the provider's error body
//	chunks-<n>      stream n content chunks (default 5)
//	delay-<ms>      wait before the first byte
//	gap-<ms>        wait between stream chunks
//	first-<ms>      (OpenAI streams) wait between the role chunk and the
//	                first content chunk: the head comes at once, the first
//	                token late
//	cut-<n>         drop the connection after n chunks, without a terminal event
//	split-<n>       stream the reply itself in pieces of n bytes (so a word
//	                or an address spans chunks), then the usual chunks
//	usagedetail     report cached and reasoning tokens (OpenAI: prompt 1000 with
//	                400 cached, completion 500 with 200 reasoning; Anthropic:
//	                input 100, cache read 1000, cache write 500, output 50)
//
// e.g. "gpt-4o-chunks-2000" or "claude-fail-529".
package testupstream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// Request is one recorded request.
type Request struct {
	Method  string
	Path    string
	Headers map[string]string
	Body    []byte
}

// Fault makes requests for one upstream model fail, set with SetFault.
type Fault struct {
	// Statuses are answered in turn to failing requests (e.g. 429, 500, 503).
	Statuses []int
	// Rate: fail this fraction of requests, at random (1: all).
	Rate float64
	// Cut: streams end after this many content chunks without a terminal
	// event (0: not cut; -1: before the first event).
	Cut int
	// Message and Code replace the error body's message and code (e.g.
	// "context_length_exceeded").
	Message, Code string
}

// Server is a running fake upstream.
type Server struct {
	ln     net.Listener
	srv    *fasthttp.Server
	mu     sync.Mutex
	reqs   []Request
	faults map[string]*faultState
	rnd    *rand.Rand
	// MaxRecorded bounds memory in long runs (0: 10,000).
	MaxRecorded int
}

// Start listens on addr ("127.0.0.1:0" for any port).
func Start(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, rnd: rand.New(rand.NewPCG(1, 2))}
	s.srv = &fasthttp.Server{Handler: s.handle, Name: "testupstream", StreamRequestBody: false, CloseOnShutdown: true}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the base URL, e.g. http://127.0.0.1:9000.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Close stops the server.
func (s *Server) Close() error { return s.srv.Shutdown() }

// Requests returns the recorded requests.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Last returns the last recorded request.
func (s *Server) Last() (Request, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		return Request{}, false
	}
	return s.reqs[len(s.reqs)-1], true
}

type faultState struct {
	f Fault
	n int
}

// SetFault makes requests naming model fail as f says; a zero Fault clears
// it.
func (s *Server) SetFault(model string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == nil {
		s.faults = map[string]*faultState{}
	}
	if f.Rate == 0 && f.Cut == 0 {
		delete(s.faults, model)
		return
	}
	s.faults[model] = &faultState{f: f}
}

// fault returns the status to fail this request with (0: do not fail),
// the cut setting and the fault's error text.
func (s *Server) fault(model string) (int, int, Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.faults[model]
	if st == nil {
		return 0, 0, Fault{}
	}
	st.n++
	if st.f.Rate > 0 && len(st.f.Statuses) > 0 && (st.f.Rate >= 1 || s.rnd.Float64() < st.f.Rate) {
		return st.f.Statuses[st.n%len(st.f.Statuses)], st.f.Cut, st.f
	}
	return 0, st.f.Cut, st.f
}

// CountModel returns how many recorded requests named model.
func (s *Server) CountModel(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqs {
		if gjson.GetBytes(r.Body, "model").String() == model {
			n++
		}
	}
	return n
}

// Reset forgets recorded requests.
func (s *Server) Reset() {
	s.mu.Lock()
	s.reqs = nil
	s.mu.Unlock()
}

func (s *Server) record(ctx *fasthttp.RequestCtx) {
	r := Request{Method: string(ctx.Method()), Path: string(ctx.Path()), Headers: map[string]string{},
		Body: append([]byte(nil), ctx.PostBody()...)}
	ctx.Request.Header.VisitAll(func(k, v []byte) { r.Headers[strings.ToLower(string(k))] = string(v) })
	max := s.MaxRecorded
	if max <= 0 {
		max = 10000
	}
	s.mu.Lock()
	if len(s.reqs) >= max {
		s.reqs = s.reqs[1:]
	}
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
}

type behaviour struct {
	detail bool
	fail   int
	chunks int
	delay  time.Duration
	gap    time.Duration
	first  time.Duration
	cut    int
	split  int
}

func parseBehaviour(model string) behaviour {
	b := behaviour{chunks: 5, cut: -1, detail: strings.Contains(model, "usagedetail")}
	parts := strings.Split(model, "-")
	for i := 0; i+1 < len(parts); i++ {
		n, err := strconv.Atoi(strings.TrimSuffix(parts[i+1], "ms"))
		if err != nil {
			continue
		}
		switch parts[i] {
		case "fail":
			b.fail = n
		case "chunks":
			b.chunks = n
		case "delay":
			b.delay = time.Duration(n) * time.Millisecond
		case "gap":
			b.gap = time.Duration(n) * time.Millisecond
		case "first":
			b.first = time.Duration(n) * time.Millisecond
		case "cut":
			b.cut = n
		case "split":
			b.split = n
		}
	}
	return b
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	s.record(ctx)
	path := string(ctx.Path())
	switch {
	case strings.HasSuffix(path, "/messages"):
		s.anthropic(ctx)
	case strings.HasSuffix(path, "/chat/completions"):
		s.openaiChat(ctx)
	case strings.HasSuffix(path, "/completions"):
		s.openaiCompletion(ctx)
	case strings.HasSuffix(path, "/embeddings"):
		s.openaiEmbeddings(ctx)
	default:
		ctx.SetStatusCode(404)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"error":{"message":"Unknown path ` + path + `","type":"invalid_request_error","param":null,"code":null}}`)
	}
}

func openaiError(ctx *fasthttp.RequestCtx, status int, msg, typ, code string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	if status == 429 {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}})
	ctx.SetBody(b)
}

func anthropicError(ctx *fasthttp.RequestCtx, status int, typ, msg string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]any{"type": typ, "message": msg}})
	ctx.SetBody(b)
}

func lastUser(body []byte) string {
	msgs := gjson.GetBytes(body, "messages").Array()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Get("role").String() != "user" {
			continue
		}
		c := msgs[i].Get("content")
		if c.Type == gjson.String {
			return c.String()
		}
		var sb strings.Builder
		for _, p := range c.Array() {
			if p.Get("type").String() == "text" {
				sb.WriteString(p.Get("text").String())
			}
		}
		return sb.String()
	}
	return ""
}

// pieces is the streamed reply: the text in split-byte pieces when asked
// (rune boundaries kept), then filler words up to the chunk count.
func (b behaviour) pieces(text string) []string {
	if b.split <= 0 {
		return pieces(text, b.chunks)
	}
	var out []string
	for len(text) > 0 {
		n := min(b.split, len(text))
		for n < len(text) && !utf8.RuneStart(text[n]) {
			n++
		}
		out = append(out, text[:n])
		text = text[n:]
	}
	for i := len(out); i < b.chunks; i++ {
		out = append(out, " w"+strconv.Itoa(i))
	}
	return out
}

// words splits the reply into n chunks.
func pieces(text string, n int) []string {
	if n <= 1 {
		return []string{text}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = "w" + strconv.Itoa(i) + " "
	}
	out[0] = text + " "
	return out
}

func (s *Server) openaiChat(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	if !strings.HasPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ") {
		openaiError(ctx, 401, "You didn't provide an API key.", "invalid_request_error", "missing_api_key")
		return
	}
	if !gjson.ValidBytes(body) {
		openaiError(ctx, 400, "We could not parse the JSON body of your request.", "invalid_request_error", "")
		return
	}
	model := gjson.GetBytes(body, "model").String()
	b := parseBehaviour(model)
	st, cut, fault := s.fault(model)
	if st != 0 {
		b.fail = st
	} else if cut != 0 {
		b.cut = max(cut, 0)
	}
	if b.fail != 0 {
		code := ""
		switch b.fail {
		case 429:
			code = "rate_limit_exceeded"
		case 401:
			code = "invalid_api_key"
		}
		msg := fmt.Sprintf("injected failure %d", b.fail)
		if fault.Message != "" {
			msg, code = fault.Message, fault.Code
		}
		openaiError(ctx, b.fail, msg, "api_error", code)
		return
	}
	time.Sleep(b.delay)
	reply := "upstream " + string(ctx.Path()) + " reply to: " + lastUser(body)
	tool := gjson.GetBytes(body, "tools.0.function.name").String()
	if gjson.GetBytes(body, "tool_choice").String() == "none" {
		tool = ""
	}
	usage := map[string]any{"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
	if b.detail {
		usage = map[string]any{"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
			"prompt_tokens_details":     map[string]any{"cached_tokens": 400},
			"completion_tokens_details": map[string]any{"reasoning_tokens": 200}}
	}
	if !gjson.GetBytes(body, "stream").Bool() {
		msg := map[string]any{"role": "assistant", "content": reply, "refusal": nil}
		finish := "stop"
		if tool != "" {
			msg["content"] = nil
			msg["tool_calls"] = []any{map[string]any{"id": "call_up_1", "type": "function",
				"function": map[string]any{"name": tool, "arguments": `{"location":"Paris"}`}}}
			finish = "tool_calls"
		}
		out, _ := json.Marshal(map[string]any{"id": "chatcmpl-up1", "object": "chat.completion", "created": 1700000000,
			"model": model, "choices": []any{map[string]any{"index": 0, "message": msg, "logprobs": nil, "finish_reason": finish}},
			"usage": usage, "system_fingerprint": "fp_up"})
		ctx.SetContentType("application/json")
		ctx.SetBody(out)
		return
	}
	includeUsage := gjson.GetBytes(body, "stream_options.include_usage").Bool()
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		chunk := func(delta map[string]any, finish any) {
			c, _ := json.Marshal(map[string]any{"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1700000000,
				"model": model, "system_fingerprint": "fp_up",
				"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}})
			fmt.Fprintf(w, "data: %s\n\n", c)
			_ = w.Flush()
		}
		chunk(map[string]any{"role": "assistant", "content": ""}, nil)
		time.Sleep(b.first)
		finish := "stop"
		if tool != "" {
			chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": "call_up_1", "type": "function",
				"function": map[string]any{"name": tool, "arguments": ""}}}}, nil)
			chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]any{"arguments": `{"location":`}}}}, nil)
			chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]any{"arguments": `"Paris"}`}}}}, nil)
			finish = "tool_calls"
		} else {
			for i, p := range b.pieces(reply) {
				if i == b.cut {
					return // connection ends without [DONE]
				}
				if i > 0 {
					time.Sleep(b.gap)
				}
				chunk(map[string]any{"content": p}, nil)
			}
		}
		if strings.HasPrefix(model, "mistral") && !includeUsage {
			// Mistral sends usage on its last chunk whether or not it was
			// asked for (it rejects stream_options).
			c, _ := json.Marshal(map[string]any{"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1700000000,
				"model": model, "choices": []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": finish}},
				"usage": usage})
			fmt.Fprintf(w, "data: %s\n\n", c)
		} else {
			chunk(map[string]any{}, finish)
		}
		if includeUsage {
			c, _ := json.Marshal(map[string]any{"id": "chatcmpl-up1", "object": "chat.completion.chunk", "created": 1700000000,
				"model": model, "choices": []any{}, "usage": usage})
			fmt.Fprintf(w, "data: %s\n\n", c)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		_ = w.Flush()
	})
}

func (s *Server) openaiCompletion(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	if !strings.HasPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ") {
		openaiError(ctx, 401, "You didn't provide an API key.", "invalid_request_error", "missing_api_key")
		return
	}
	model := gjson.GetBytes(body, "model").String()
	out, _ := json.Marshal(map[string]any{"id": "cmpl-up1", "object": "text_completion", "created": 1700000000, "model": model,
		"choices": []any{map[string]any{"text": "upstream completion of: " + gjson.GetBytes(body, "prompt").String(), "index": 0,
			"logprobs": nil, "finish_reason": "stop"}},
		"usage": map[string]any{"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
	ctx.SetContentType("application/json")
	ctx.SetBody(out)
}

func (s *Server) openaiEmbeddings(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	if !strings.HasPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ") {
		openaiError(ctx, 401, "You didn't provide an API key.", "invalid_request_error", "missing_api_key")
		return
	}
	model := gjson.GetBytes(body, "model").String()
	n := 1
	if in := gjson.GetBytes(body, "input"); in.IsArray() {
		n = len(in.Array())
	}
	data := make([]any, n)
	for i := range data {
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": []float64{0.1, -0.2, 0.3}}
	}
	out, _ := json.Marshal(map[string]any{"object": "list", "data": data, "model": model,
		"usage": map[string]any{"prompt_tokens": 3, "total_tokens": 3}})
	ctx.SetContentType("application/json")
	ctx.SetBody(out)
}

func (s *Server) anthropic(ctx *fasthttp.RequestCtx) {
	body := ctx.PostBody()
	if len(ctx.Request.Header.Peek("x-api-key")) == 0 {
		anthropicError(ctx, 401, "authentication_error", "x-api-key header is required")
		return
	}
	if len(ctx.Request.Header.Peek("anthropic-version")) == 0 {
		anthropicError(ctx, 400, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	if !gjson.ValidBytes(body) {
		anthropicError(ctx, 400, "invalid_request_error", "invalid JSON body")
		return
	}
	if !gjson.GetBytes(body, "max_tokens").Exists() {
		anthropicError(ctx, 400, "invalid_request_error", "max_tokens: Field required")
		return
	}
	model := gjson.GetBytes(body, "model").String()
	b := parseBehaviour(model)
	st, cut, fault := s.fault(model)
	if st != 0 {
		b.fail = st
	} else if cut != 0 {
		b.cut = max(cut, 0)
	}
	if b.fail != 0 {
		if fault.Message != "" {
			anthropicError(ctx, b.fail, "invalid_request_error", fault.Message)
			return
		}
		typ := map[int]string{400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
			404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[b.fail]
		if typ == "" {
			typ = "api_error"
		}
		anthropicError(ctx, b.fail, typ, fmt.Sprintf("injected failure %d", b.fail))
		return
	}
	time.Sleep(b.delay)
	reply := "upstream anthropic reply to: " + lastUser(body)
	tool := gjson.GetBytes(body, "tools.0.name").String()
	if gjson.GetBytes(body, "tool_choice.type").String() == "none" {
		tool = ""
	}
	if !gjson.GetBytes(body, "stream").Bool() {
		content := []any{map[string]any{"type": "text", "text": reply}}
		stop := "end_turn"
		if tool != "" {
			content = []any{map[string]any{"type": "tool_use", "id": "toolu_up_1", "name": tool, "input": map[string]any{"location": "Paris"}}}
			stop = "tool_use"
		}
		out, _ := json.Marshal(map[string]any{"id": "msg_up1", "type": "message", "role": "assistant", "model": model,
			"content": content, "stop_reason": stop, "stop_sequence": nil,
			"usage": anthropicUsage(b.detail, false)})
		ctx.SetContentType("application/json")
		ctx.SetBody(out)
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		ev := func(name string, v any) {
			c, _ := json.Marshal(v)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, c)
			_ = w.Flush()
		}
		ev("message_start", map[string]any{"type": "message_start", "message": map[string]any{"id": "msg_up1", "type": "message",
			"role": "assistant", "model": model, "content": []any{}, "stop_reason": nil, "stop_sequence": nil,
			"usage": anthropicUsage(b.detail, true)}})
		stop := "end_turn"
		if tool != "" {
			ev("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
				"content_block": map[string]any{"type": "tool_use", "id": "toolu_up_1", "name": tool, "input": map[string]any{}}})
			ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
				"delta": map[string]any{"type": "input_json_delta", "partial_json": `{"location":`}})
			ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
				"delta": map[string]any{"type": "input_json_delta", "partial_json": `"Paris"}`}})
			stop = "tool_use"
		} else {
			ev("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
				"content_block": map[string]any{"type": "text", "text": ""}})
			ev("ping", map[string]any{"type": "ping"})
			for i, p := range b.pieces(reply) {
				if i == b.cut {
					return
				}
				if i > 0 {
					time.Sleep(b.gap)
				}
				ev("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
					"delta": map[string]any{"type": "text_delta", "text": p}})
			}
		}
		ev("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
		out := 9
		if b.detail {
			out = 50
		}
		ev("message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
			"usage": map[string]any{"output_tokens": out}})
		ev("message_stop", map[string]any{"type": "message_stop"})
	})
}

// anthropicUsage is the usage object of a message (start: the
// message_start form, output 1).
func anthropicUsage(detail, start bool) map[string]any {
	u := map[string]any{"input_tokens": 13, "output_tokens": 9, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
	if detail {
		u = map[string]any{"input_tokens": 100, "output_tokens": 50, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 500}
	}
	if start {
		u["output_tokens"] = 1
	}
	return u
}
