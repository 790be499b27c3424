// Package mock is a built-in provider that answers without any network or
// API key: deterministically, with configurable latency, chunk count and
// failure injection. `make run`, the tests and the benchmarks use it.
//
// Options (in litellm_params, next to model: mock/<name>):
//
//	mock_response        the reply text (default: a reply derived from the last user message)
//	mock_latency         delay before the first byte (seconds or "250ms")
//	mock_chunks          number of content chunks in a stream (default: one per word)
//	mock_chunk_delay     delay between stream chunks
//	mock_fail_rate       fraction of calls that fail, spread evenly (0.25: every 4th call)
//	mock_fail_status     HTTP status of an injected failure (default 500)
//	mock_fail_after      a stream breaks after this many chunks (0: never)
//	mock_tool_calls      when the request has tools, call the first one (default true)
//	mock_embedding_dims  embedding size (default 16; the request's dimensions wins)
package mock

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/fnv"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
)

// Info registers the provider.
var Info = provider.Info{Name: "mock", DefaultBase: "mock://", NoKey: true, Factory: New}

// Provider is one mock deployment.
type Provider struct {
	response   string
	latency    time.Duration
	chunks     int
	chunkDelay time.Duration
	failRate   float64
	failStatus int
	failAfter  int
	toolCalls  bool
	dims       int
	calls      atomic.Uint64
	created    int64
}

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Embedder  = (*Provider)(nil)
	_ provider.Completer = (*Provider)(nil)
)

// New builds a mock deployment from its params.
func New(spec provider.Spec) (provider.Provider, error) {
	p := &Provider{failStatus: 500, toolCalls: true, dims: 16, created: 1700000000}
	var err error
	num := func(k string) float64 {
		v, ok := spec.Params[k]
		if !ok || err != nil {
			return 0
		}
		f, e := strconv.ParseFloat(provider.ParamString(spec.Params, k), 64)
		if e != nil || f < 0 {
			err = errors.New("litellm_params." + k + ": want a number >= 0, got " + provider.ParamString(spec.Params, k))
		}
		_ = v
		return f
	}
	dur := func(k string) time.Duration {
		s := provider.ParamString(spec.Params, k)
		if s == "" {
			return 0
		}
		if d, e := time.ParseDuration(s); e == nil {
			return d
		}
		return time.Duration(num(k) * float64(time.Second))
	}
	p.response = provider.ParamString(spec.Params, "mock_response")
	p.latency = dur("mock_latency")
	p.chunks = int(num("mock_chunks"))
	p.chunkDelay = dur("mock_chunk_delay")
	p.failRate = num("mock_fail_rate")
	if s := int(num("mock_fail_status")); s != 0 {
		p.failStatus = s
	}
	p.failAfter = int(num("mock_fail_after"))
	if d := int(num("mock_embedding_dims")); d > 0 {
		p.dims = d
	}
	if v, ok := spec.Params["mock_tool_calls"].(bool); ok {
		p.toolCalls = v
	}
	if p.failRate > 1 {
		err = errors.New("litellm_params.mock_fail_rate: want a fraction between 0 and 1")
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// fail decides deterministically whether this call fails: with rate r, call
// n fails when floor(n*r) moves, so failures are spread evenly.
func (p *Provider) fail() error {
	n := p.calls.Add(1)
	if p.failRate <= 0 {
		return nil
	}
	if math.Floor(float64(n)*p.failRate) == math.Floor(float64(n-1)*p.failRate) {
		return nil
	}
	body := `{"error":{"message":"mock: injected failure","type":"api_error","code":"mock_failure"}}`
	return provider.ClassifyUpstream("mock", p.failStatus, []byte(body), nil, "")
}

func (p *Provider) wait(ctx context.Context, r *provider.Request, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var deadline <-chan time.Time
	if !r.Deadline.IsZero() {
		dt := time.NewTimer(time.Until(r.Deadline))
		defer dt.Stop()
		deadline = dt.C
	}
	select {
	case <-t.C:
		return nil
	case <-deadline:
		e := errs.New(408, errs.CodeUpstreamTimeout, "mock: upstream request timed out")
		e.Retryable, e.Fallback = true, true
		return e
	case <-ctx.Done():
		return errs.New(503, errs.CodeUnavailable, "mock: cancelled")
	}
}

// reply is the deterministic answer to a request.
func (p *Provider) reply(c *llm.ChatRequest) string {
	if p.response != "" {
		return p.response
	}
	last := ""
	for i := len(c.Messages) - 1; i >= 0; i-- {
		if c.Messages[i].Role == "user" {
			last = c.Messages[i].Content.String()
			break
		}
	}
	if len(last) > 200 {
		last = last[:200]
	}
	return "This is a mock response from " + c.Model + " to: " + strings.ToValidUTF8(last, "")
}

// approxTokens counts about four bytes a token, at least one.
func approxTokens(n int) int { return n/4 + 1 }

func promptBytes(c *llm.ChatRequest) int {
	n := 0
	for i := range c.Messages {
		n += len(c.Messages[i].Content.String()) + 4
	}
	return n
}

// Chat answers a chat request in the OpenAI chat dialect.
func (p *Provider) Chat(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	c, err := r.Chat()
	if err != nil {
		return nil, err
	}
	if err := p.fail(); err != nil {
		return nil, err
	}
	if err := p.wait(ctx, r, p.latency); err != nil {
		return nil, err
	}
	model := r.Model
	cc := *c
	cc.Model = model
	text := p.reply(&cc)
	finish := llm.FinishStop
	// Like a real model, the reply stops at max_tokens (a word a token).
	if limit := maxTokens(c); limit > 0 {
		if words := strings.SplitAfter(text, " "); len(words) > limit {
			text = strings.TrimRight(strings.Join(words[:limit], ""), " ")
			finish = llm.FinishLength
		}
	}
	var call *llm.ToolCall
	if p.toolCalls && len(c.Tools) > 0 && !isNone(c.ToolChoice) {
		name := c.Tools[0].Function.Name
		if n := gjson.GetBytes(c.ToolChoice, "function.name"); n.Exists() {
			name = n.String()
		}
		call = &llm.ToolCall{ID: "call_mock_" + strconv.FormatUint(hash(name), 36), Type: "function",
			Function: llm.FunctionCall{Name: name, Arguments: mockArgs(c.Tools, name)}}
	}
	n := 1
	if c.N != nil && *c.N > 1 {
		n = *c.N
	}
	usage := llm.Usage{PromptTokens: approxTokens(promptBytes(c))}
	if call != nil {
		usage.CompletionTokens = approxTokens(len(call.Function.Arguments)) * n
	} else {
		usage.CompletionTokens = len(strings.Fields(text)) * n
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	id := "chatcmpl-mock" + strconv.FormatUint(p.calls.Load(), 10)
	if r.Stream {
		s := &stream{p: p, ctx: ctx, r: r, id: id, model: model, n: n, text: text, call: call, usage: usage, finish: finish}
		s.plan()
		return &provider.Response{Dialect: llm.OpenAIChat, Status: 200, Stream: s}, nil
	}
	resp := llm.ChatResponse{ID: id, Object: "chat.completion", Created: p.created, Model: model, Usage: &usage,
		SystemFingerprint: "fp_mock"}
	for i := 0; i < n; i++ {
		ch := llm.Choice{Index: i, FinishReason: finish, Message: llm.Message{Role: "assistant", Content: llm.TextContent(text)}}
		if call != nil {
			ch.FinishReason = llm.FinishToolCalls
			ch.Message.Content = llm.Content{Null: true}
			ch.Message.ToolCalls = []llm.ToolCall{*call}
		}
		if c.Logprobs != nil && *c.Logprobs {
			ch.Logprobs = json.RawMessage(`{"content":[]}`)
		}
		resp.Choices = append(resp.Choices, ch)
	}
	b, _ := json.Marshal(&resp)
	return &provider.Response{Dialect: llm.OpenAIChat, Status: 200, Body: b, Usage: usage.Tokens(), HasUsage: true}, nil
}

func isNone(tc json.RawMessage) bool { return string(tc) == `"none"` }

func maxTokens(c *llm.ChatRequest) int {
	switch {
	case c.MaxCompletionTokens != nil && *c.MaxCompletionTokens > 0:
		return *c.MaxCompletionTokens
	case c.MaxTokens != nil && *c.MaxTokens > 0:
		return *c.MaxTokens
	}
	return 0
}

// mockArgs builds arguments that satisfy the tool's required string and
// number properties, so SDK-side schema parsing succeeds.
func mockArgs(tools []llm.Tool, name string) string {
	for _, t := range tools {
		if t.Function.Name != name {
			continue
		}
		props := gjson.GetBytes(t.Function.Parameters, "properties")
		out := []byte{'{'}
		first := true
		props.ForEach(func(k, v gjson.Result) bool {
			if !first {
				out = append(out, ',')
			}
			first = false
			out = errs.AppendJSONString(out, k.String())
			out = append(out, ':')
			switch v.Get("type").String() {
			case "number", "integer":
				out = append(out, '1')
			case "boolean":
				out = append(out, "true"...)
			case "array":
				out = append(out, "[]"...)
			case "object":
				out = append(out, "{}"...)
			default:
				if e := v.Get("enum.0"); e.Exists() {
					out = append(out, e.Raw...)
				} else {
					out = errs.AppendJSONString(out, "mock")
				}
			}
			return true
		})
		return string(append(out, '}'))
	}
	return "{}"
}

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// stream yields a planned sequence of OpenAI chunks.
type stream struct {
	p         *Provider
	ctx       context.Context
	r         *provider.Request
	id, model string
	n         int
	text      string
	call      *llm.ToolCall
	usage     llm.Usage
	finish    string

	events [][]byte
	i      int
	buf    []byte
	closed atomic.Bool
}

func (s *stream) chunk(choice int, d llm.Delta, finish *string, usage *llm.Usage) []byte {
	c := llm.ChatChunk{ID: s.id, Object: "chat.completion.chunk", Created: s.p.created, Model: s.model,
		SystemFingerprint: "fp_mock", Choices: []llm.ChunkChoice{{Index: choice, Delta: d, FinishReason: finish}}}
	if usage != nil {
		c.Choices = []llm.ChunkChoice{}
		c.Usage = usage
	}
	b, _ := json.Marshal(&c)
	return b
}

// plan precomputes every event of the stream.
func (s *stream) plan() {
	pieces := split(s.text, s.p.chunks)
	for ci := 0; ci < s.n; ci++ {
		empty := ""
		s.events = append(s.events, s.chunk(ci, llm.Delta{Role: "assistant", Content: &empty}, nil, nil))
		if s.call != nil {
			zero := 0
			tc := *s.call
			tc.Index = &zero
			args := tc.Function.Arguments
			tc.Function.Arguments = ""
			s.events = append(s.events, s.chunk(ci, llm.Delta{ToolCalls: []llm.ToolCall{tc}}, nil, nil))
			for _, a := range split(args, 2) {
				s.events = append(s.events, s.chunk(ci, llm.Delta{ToolCalls: []llm.ToolCall{{Index: &zero, Function: llm.FunctionCall{Arguments: a}}}}, nil, nil))
			}
			fin := llm.FinishToolCalls
			s.events = append(s.events, s.chunk(ci, llm.Delta{}, &fin, nil))
			continue
		}
		for _, piece := range pieces {
			piece := piece
			s.events = append(s.events, s.chunk(ci, llm.Delta{Content: &piece}, nil, nil))
		}
		fin := s.finish
		s.events = append(s.events, s.chunk(ci, llm.Delta{}, &fin, nil))
	}
	// Like OpenAI with include_usage; always sent, because the gateway
	// counts tokens and strips the chunk for clients that did not ask.
	u := s.usage
	s.events = append(s.events, s.chunk(0, llm.Delta{}, nil, &u))
	s.events = append(s.events, sse.Done)
}

// split cuts text into n pieces on word boundaries when it can (n <= 0: one
// piece per word); joined they give text back.
func split(text string, n int) []string {
	if text == "" {
		return nil
	}
	words := strings.SplitAfter(text, " ")
	if n <= 0 || n == len(words) {
		return words
	}
	if n < len(words) {
		out := make([]string, 0, n)
		per := len(words) / n
		extra := len(words) % n
		i := 0
		for k := 0; k < n; k++ {
			m := per
			if k < extra {
				m++
			}
			out = append(out, strings.Join(words[i:i+m], ""))
			i += m
		}
		return out
	}
	// More chunks than words: split by bytes, keeping UTF-8 intact.
	out := make([]string, 0, n)
	rest := text
	for k := n; k > 0 && len(rest) > 0; k-- {
		size := (len(rest) + k - 1) / k
		for size < len(rest) && !utf8Start(rest[size]) {
			size++
		}
		out = append(out, rest[:size])
		rest = rest[size:]
	}
	for len(out) < n {
		out = append(out, "")
	}
	return out
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

func (s *stream) Next() (sse.Event, error) {
	if s.closed.Load() {
		return sse.Event{}, provider.ErrStreamClosed
	}
	if s.i >= len(s.events) {
		return sse.Event{}, io.EOF
	}
	if s.p.failAfter > 0 && s.i > s.p.failAfter {
		return sse.Event{}, errs.New(502, errs.CodeUpstreamProtocol, "mock: stream broken after "+strconv.Itoa(s.p.failAfter)+" chunks (injected)")
	}
	if s.i > 0 && s.p.chunkDelay > 0 {
		if err := s.p.wait(s.ctx, s.r, s.p.chunkDelay); err != nil {
			return sse.Event{}, err
		}
		if s.closed.Load() {
			return sse.Event{}, provider.ErrStreamClosed
		}
	}
	ev := sse.Event{Data: s.events[s.i]}
	s.i++
	return ev, nil
}

func (s *stream) Close() error { s.closed.Store(true); return nil }

// Complete answers a legacy completion request.
func (p *Provider) Complete(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	if r.Stream {
		// Streams are served through chat and converted by the gateway.
		return p.Chat(ctx, r)
	}
	if err := p.fail(); err != nil {
		return nil, err
	}
	if err := p.wait(ctx, r, p.latency); err != nil {
		return nil, err
	}
	prompt := gjson.GetBytes(r.Body, "prompt")
	if !prompt.Exists() {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "prompt", "prompt is required")
	}
	text := p.response
	if text == "" {
		s := prompt.String()
		if prompt.IsArray() {
			s = prompt.Get("0").String()
		}
		if len(s) > 200 {
			s = s[:200]
		}
		text = "This is a mock completion from " + r.Model + " of: " + strings.ToValidUTF8(s, "")
	}
	pt := approxTokens(len(prompt.Raw))
	ct := len(strings.Fields(text))
	b := []byte(`{"id":"cmpl-mock` + strconv.FormatUint(p.calls.Load(), 10) + `","object":"text_completion","created":` +
		strconv.FormatInt(p.created, 10) + `,"model":`)
	b = errs.AppendJSONString(b, r.Model)
	b = append(b, `,"choices":[{"text":`...)
	b = errs.AppendJSONString(b, text)
	b = append(b, `,"index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(pt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(ct), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(pt+ct), 10)
	b = append(b, "}}"...)
	return &provider.Response{Dialect: llm.OpenAICompletion, Status: 200, Body: b,
		Usage: llm.Tokens{Prompt: pt, Completion: ct}, HasUsage: true}, nil
}

// Embed returns deterministic unit vectors derived from each input.
func (p *Provider) Embed(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	if err := p.fail(); err != nil {
		return nil, err
	}
	if err := p.wait(ctx, r, p.latency); err != nil {
		return nil, err
	}
	in := gjson.GetBytes(r.Body, "input")
	var inputs []string
	switch {
	case !in.Exists():
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "input", "input is required")
	case in.IsArray():
		for _, v := range in.Array() {
			inputs = append(inputs, v.Raw)
		}
	default:
		inputs = []string{in.Raw}
	}
	if len(inputs) == 0 {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "input", "input must not be empty")
	}
	dims := p.dims
	if d := gjson.GetBytes(r.Body, "dimensions").Int(); d > 0 && d <= 4096 {
		dims = int(d)
	}
	b64 := gjson.GetBytes(r.Body, "encoding_format").String() == "base64"
	b := []byte(`{"object":"list","data":[`)
	tokens := 0
	for i, s := range inputs {
		tokens += approxTokens(len(s))
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		vec := vector(s, dims)
		if b64 {
			raw := make([]byte, 4*len(vec))
			for j, f := range vec {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(f))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, f := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(f), 'g', 7, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = errs.AppendJSONString(b, r.Model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(tokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(tokens), 10)
	b = append(b, "}}"...)
	return &provider.Response{Dialect: llm.OpenAIEmbedding, Status: 200, Body: b,
		Usage: llm.Tokens{Prompt: tokens}, HasUsage: true}, nil
}

// vector derives a unit vector from s.
func vector(s string, dims int) []float32 {
	v := make([]float32, dims)
	h := hash(s)
	var norm float64
	for i := range v {
		h ^= h << 13
		h ^= h >> 7
		h ^= h << 17
		f := float64(int64(h%2001)-1000) / 1000
		v[i] = float32(f)
		norm += f * f
	}
	if norm == 0 {
		v[0], norm = 1, 1
	}
	n := float32(math.Sqrt(norm))
	for i := range v {
		v[i] /= n
	}
	return v
}
