package cache

import (
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
)

// pieceBytes is the most text one replayed delta carries: a cached answer
// streams in a few chunks, not token by token, and with no delay.
const pieceBytes = 1024

// replay is a provider.Stream over a stored body: it emits the events the
// client's dialect streams for that answer, ids and usage as stored.
// OpenAI chat: a role chunk, reasoning/content/refusal chunks, one chunk
// per tool call, a finish chunk, the usage chunk ({"choices":[],"usage"}:
// the server drops it when the client did not ask for usage), [DONE].
// Legacy completions: text chunks, a finish chunk, the usage chunk when
// the client asked for it, [DONE]. Anthropic: message_start, each content
// block (start, deltas, stop), message_delta, message_stop.
//
// The events are built on the first Next (after the hit was decided, off
// the hit path's clock) into one buffer; the body is read, never changed.
type replay struct {
	d            llm.Dialect
	body         []byte
	tokens       llm.Tokens
	includeUsage bool

	built bool
	head  []byte // OpenAI: each chunk's fields before "choices"
	buf   []byte
	marks []mark
	i     int
}

// mark locates one event in buf.
type mark struct{ name, start, end int }

var _ provider.Stream = (*replay)(nil)

func newReplay(d llm.Dialect, body []byte, t llm.Tokens, includeUsage bool) *replay {
	return &replay{d: d, body: body, tokens: t, includeUsage: includeUsage}
}

// Next returns the next event; io.EOF after the last.
func (r *replay) Next() (sse.Event, error) {
	if !r.built {
		r.build()
	}
	if r.i >= len(r.marks) {
		return sse.Event{}, io.EOF
	}
	m := r.marks[r.i]
	r.i++
	var name []byte
	if m.name < m.start {
		name = r.buf[m.name:m.start]
	}
	return sse.Event{Name: name, Data: r.buf[m.start:m.end]}, nil
}

// Close ends the replay.
func (r *replay) Close() error {
	r.i = len(r.marks)
	return nil
}

func (r *replay) build() {
	r.built = true
	r.buf = make([]byte, 0, 2*len(r.body)+512)
	body := gjson.Parse(bstr(r.body))
	switch r.d {
	case llm.OpenAIChat:
		r.setHead(body, "chat.completion.chunk")
		r.chat(body)
	case llm.OpenAICompletion:
		r.setHead(body, "text_completion")
		r.completion(body)
	case llm.AnthropicMessages:
		r.anthropic(body)
	}
}

// begin starts an event named name (empty: data only); end closes it.
func (r *replay) begin(name string) {
	n := len(r.buf)
	r.buf = append(r.buf, name...)
	r.marks = append(r.marks, mark{name: n, start: len(r.buf)})
}

func (r *replay) end() { r.marks[len(r.marks)-1].end = len(r.buf) }

// setHead computes the fields every OpenAI chunk repeats, up to its
// choices array, once per replay.
func (r *replay) setHead(body gjson.Result, object string) {
	var id, created, model, fp gjson.Result
	body.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			id = v
		case "created":
			created = v
		case "model":
			model = v
		case "system_fingerprint":
			fp = v
		}
		return true
	})
	h := make([]byte, 0, 160)
	h = append(h, `{"id":`...)
	h = appendLit(h, id.Raw, `""`)
	h = append(h, `,"object":"`...)
	h = append(h, object...)
	h = append(h, `","created":`...)
	h = appendLit(h, created.Raw, "0")
	h = append(h, `,"model":`...)
	h = appendLit(h, model.Raw, `""`)
	if fp.Type == gjson.String {
		h = append(h, `,"system_fingerprint":`...)
		h = append(h, fp.Raw...)
	}
	r.head = append(h, `,"choices":[`...)
}

// chunkHead starts an OpenAI chunk, up to its choices array.
func (r *replay) chunkHead() {
	r.begin("")
	r.buf = append(r.buf, r.head...)
}

// chatChoice writes one chunk whose single choice has the given delta.
func (r *replay) chatChunk(index, delta, finish string) {
	r.chunkHead()
	r.buf = append(r.buf, `{"index":`...)
	r.buf = append(r.buf, index...)
	r.buf = append(r.buf, `,"delta":`...)
	r.buf = append(r.buf, delta...)
	r.buf = append(r.buf, `,"logprobs":null,"finish_reason":`...)
	r.buf = append(r.buf, finish...)
	r.buf = append(r.buf, "}]}"...)
	r.end()
}

func (r *replay) usageChunk(body gjson.Result, details bool) {
	r.chunkHead()
	r.buf = append(r.buf, `],"usage":`...)
	if u := body.Get("usage"); u.IsObject() {
		r.buf = append(r.buf, u.Raw...)
	} else {
		r.buf = appendOpenAIUsage(r.buf, r.tokens, details)
	}
	r.buf = append(r.buf, '}')
	r.end()
}

func (r *replay) done() {
	r.begin("")
	r.buf = append(r.buf, "[DONE]"...)
	r.end()
}

// fields reads the named members of an object in one pass (gjson's Get
// rescans the object, long strings included, on every call).
func fields(obj gjson.Result, names []string, out []gjson.Result) {
	clear(out)
	if !obj.IsObject() {
		return
	}
	obj.ForEach(func(k, v gjson.Result) bool {
		for i, n := range names {
			if k.Str == n {
				out[i] = v
			}
		}
		return true
	})
}

var (
	choiceFields  = []string{"index", "message", "finish_reason", "text"}
	messageFields = []string{"reasoning_content", "content", "refusal", "tool_calls"}
)

func (r *replay) chat(body gjson.Result) {
	var tmp []byte
	var cf [4]gjson.Result
	var mf [4]gjson.Result
	each(body.Get("choices"), func(c gjson.Result) {
		fields(c, choiceFields, cf[:])
		index := cf[0].Raw
		if cf[0].Type != gjson.Number {
			index = "0"
		}
		fields(cf[1], messageFields, mf[:])
		if mf[1].Type == gjson.String {
			r.chatChunk(index, `{"role":"assistant","content":""}`, "null")
		} else {
			r.chatChunk(index, `{"role":"assistant","content":null}`, "null")
		}
		for i, f := range messageFields[:3] {
			v := mf[i]
			if v.Type != gjson.String || v.Str == "" {
				continue
			}
			for _, p := range pieces(v.Str) {
				tmp = append(tmp[:0], `{"`...)
				tmp = append(tmp, f...)
				tmp = append(tmp, `":`...)
				tmp = appendMinimalString(tmp, p)
				tmp = append(tmp, '}')
				r.chatChunk(index, bstr(tmp), "null")
			}
		}
		n := 0
		each(mf[3], func(tc gjson.Result) {
			fn := tc.Get("function")
			tmp = append(tmp[:0], `{"tool_calls":[{"index":`...)
			tmp = strconv.AppendInt(tmp, int64(n), 10)
			tmp = append(tmp, `,"id":`...)
			tmp = appendLit(tmp, tc.Get("id").Raw, `""`)
			tmp = append(tmp, `,"type":`...)
			tmp = appendLit(tmp, tc.Get("type").Raw, `"function"`)
			tmp = append(tmp, `,"function":{"name":`...)
			tmp = appendLit(tmp, fn.Get("name").Raw, `""`)
			tmp = append(tmp, `,"arguments":`...)
			tmp = appendLit(tmp, fn.Get("arguments").Raw, `""`)
			tmp = append(tmp, "}}]}"...)
			r.chatChunk(index, bstr(tmp), "null")
			n++
		})
		r.chatChunk(index, "{}", finishLit(cf[2]))
	})
	r.usageChunk(body, true)
	r.done()
}

func (r *replay) completion(body gjson.Result) {
	var tmp []byte
	chunk := func(text, index, finish string) {
		r.chunkHead()
		r.buf = append(r.buf, `{"text":`...)
		r.buf = append(r.buf, text...)
		r.buf = append(r.buf, `,"index":`...)
		r.buf = append(r.buf, index...)
		r.buf = append(r.buf, `,"logprobs":null,"finish_reason":`...)
		r.buf = append(r.buf, finish...)
		r.buf = append(r.buf, "}]}"...)
		r.end()
	}
	var cf [4]gjson.Result
	each(body.Get("choices"), func(c gjson.Result) {
		fields(c, choiceFields, cf[:])
		index := cf[0].Raw
		if cf[0].Type != gjson.Number {
			index = "0"
		}
		if t := cf[3]; t.Type == gjson.String && t.Str != "" {
			for _, p := range pieces(t.Str) {
				tmp = appendMinimalString(tmp[:0], p)
				chunk(bstr(tmp), index, "null")
			}
		}
		chunk(`""`, index, finishLit(cf[2]))
	})
	if r.includeUsage {
		r.usageChunk(body, false)
	}
	r.done()
}

func (r *replay) anthEvent(name string) {
	r.begin(name)
}

func (r *replay) anthropic(body gjson.Result) {
	usage := body.Get("usage").Raw
	var ub []byte
	if usage == "" {
		ub = appendAnthropicUsage(nil, r.tokens)
		usage = bstr(ub)
	}
	r.anthEvent("message_start")
	r.buf = append(r.buf, `{"type":"message_start","message":{"id":`...)
	r.buf = appendLit(r.buf, body.Get("id").Raw, `""`)
	r.buf = append(r.buf, `,"type":"message","role":"assistant","model":`...)
	r.buf = appendLit(r.buf, body.Get("model").Raw, `""`)
	r.buf = append(r.buf, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
	r.buf = append(r.buf, usage...)
	r.buf = append(r.buf, "}}"...)
	r.end()

	i := 0
	each(body.Get("content"), func(blk gjson.Result) {
		idx := strconv.Itoa(i)
		i++
		start := func(block string) {
			r.anthEvent("content_block_start")
			r.buf = append(r.buf, `{"type":"content_block_start","index":`...)
			r.buf = append(r.buf, idx...)
			r.buf = append(r.buf, `,"content_block":`...)
			r.buf = append(r.buf, block...)
			r.buf = append(r.buf, '}')
			r.end()
		}
		delta := func(kind, field, value string) {
			r.anthEvent("content_block_delta")
			r.buf = append(r.buf, `{"type":"content_block_delta","index":`...)
			r.buf = append(r.buf, idx...)
			r.buf = append(r.buf, `,"delta":{"type":"`...)
			r.buf = append(r.buf, kind...)
			r.buf = append(r.buf, `","`...)
			r.buf = append(r.buf, field...)
			r.buf = append(r.buf, `":`...)
			r.buf = append(r.buf, value...)
			r.buf = append(r.buf, "}}"...)
			r.end()
		}
		var tmp []byte
		switch blk.Get("type").Str {
		case "text":
			start(`{"type":"text","text":""}`)
			for _, p := range pieces(blk.Get("text").Str) {
				tmp = appendMinimalString(tmp[:0], p)
				delta("text_delta", "text", bstr(tmp))
			}
			each(blk.Get("citations"), func(c gjson.Result) {
				delta("citations_delta", "citation", c.Raw)
			})
		case "thinking":
			start(`{"type":"thinking","thinking":""}`)
			for _, p := range pieces(blk.Get("thinking").Str) {
				tmp = appendMinimalString(tmp[:0], p)
				delta("thinking_delta", "thinking", bstr(tmp))
			}
			if s := blk.Get("signature"); s.Type == gjson.String {
				delta("signature_delta", "signature", s.Raw)
			}
		case "tool_use", "server_tool_use", "mcp_tool_use":
			in := blk.Get("input")
			sb, err := sjson.SetRawBytes([]byte(blk.Raw), "input", []byte("{}"))
			if err != nil {
				sb = []byte(blk.Raw)
			}
			start(bstr(sb))
			if in.Exists() && in.Raw != "{}" {
				tmp = appendMinimalString(tmp[:0], in.Raw)
				delta("input_json_delta", "partial_json", bstr(tmp))
			}
		default: // redacted_thinking, tool results...: whole at the start
			start(blk.Raw)
		}
		r.anthEvent("content_block_stop")
		r.buf = append(r.buf, `{"type":"content_block_stop","index":`...)
		r.buf = append(r.buf, idx...)
		r.buf = append(r.buf, '}')
		r.end()
	})

	r.anthEvent("message_delta")
	r.buf = append(r.buf, `{"type":"message_delta","delta":{"stop_reason":`...)
	r.buf = appendLit(r.buf, body.Get("stop_reason").Raw, "null")
	r.buf = append(r.buf, `,"stop_sequence":`...)
	r.buf = appendLit(r.buf, body.Get("stop_sequence").Raw, "null")
	r.buf = append(r.buf, `},"usage":`...)
	r.buf = append(r.buf, usage...)
	r.buf = append(r.buf, '}')
	r.end()
	r.anthEvent("message_stop")
	r.buf = append(r.buf, `{"type":"message_stop"}`...)
	r.end()
}

// pieces splits s into parts of at most pieceBytes, on rune boundaries.
func pieces(s string) []string {
	if len(s) <= pieceBytes {
		if s == "" {
			return nil
		}
		return []string{s}
	}
	out := make([]string, 0, len(s)/pieceBytes+1)
	for len(s) > pieceBytes {
		n := pieceBytes
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		if n == 0 {
			n = pieceBytes
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// each calls f for each object element of arr (nothing when arr is not
// an array): a malformed stored body replays as a well-formed stream.
func each(arr gjson.Result, f func(gjson.Result)) {
	if !arr.IsArray() {
		return
	}
	arr.ForEach(func(_, v gjson.Result) bool {
		if v.IsObject() {
			f(v)
		}
		return true
	})
}

// finishLit is a finish reason literal: the stored one when it is a
// string, else "stop".
func finishLit(v gjson.Result) string {
	if v.Type == gjson.String {
		return v.Raw
	}
	return `"stop"`
}
