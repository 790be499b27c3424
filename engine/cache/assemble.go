package cache

import (
	"bytes"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/translate"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/portcullis/portcullis/engine/llm"
)

// assembler turns a stream of client-dialect SSE events into the complete
// (non-streamed) response body of that dialect: the one form an entry
// stores, whichever way the answer was first delivered.
//
// It is conservative: a stream that carries something the complete body
// cannot (logprobs, audio, unknown delta kinds, an error event) is marked
// lossy and not stored, as is one that never reached its terminal event.
type assembler struct {
	d     llm.Dialect
	done  bool // the terminal event ([DONE], message_stop) was seen
	lossy bool

	// OpenAI chat and legacy completions. Literals are JSON as received.
	id, created, model, fingerprint string
	choices                         []asmChoice
	usage                           []byte // the stream's usage object, if it carried one

	// Anthropic.
	msg        []byte // message_start.message
	blocks     []asmBlock
	stopReason string // JSON literals
	stopSeq    string
	usages     [][]byte // message_delta usage objects, in order
}

type asmChoice struct {
	index                             int
	text, reasoning, refusal          []byte
	hasText, hasReasoning, hasRefusal bool
	finish                            string // JSON literal
	tools                             []asmTool
}

type asmTool struct {
	index          int
	id, typ, name  string
	args           []byte
	hasID, hasName bool
}

type asmBlock struct {
	index     int
	typ       string
	start     []byte // content_block as started
	text      []byte
	thinking  []byte
	json      []byte
	signature string
	hasSig    bool
	citations [][]byte
}

func newAssembler(d llm.Dialect) *assembler { return &assembler{d: d} }

// event records one event. name and data are valid only during the call.
func (a *assembler) event(name, data []byte) {
	if a.lossy {
		return
	}
	switch a.d {
	case llm.AnthropicMessages:
		a.anthropic(name, data)
	case llm.OpenAIChat, llm.OpenAICompletion:
		if bytes.Equal(data, []byte("[DONE]")) {
			a.done = true
			return
		}
		a.openai(data)
	default:
		a.lossy = true
	}
}

func (a *assembler) openai(data []byte) {
	root := gjson.Parse(bstr(data))
	if !root.IsObject() {
		a.lossy = true
		return
	}
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			if a.id == "" && v.Type == gjson.String {
				a.id = strings.Clone(v.Raw)
			}
		case "created":
			if a.created == "" && v.Type == gjson.Number {
				a.created = strings.Clone(v.Raw)
			}
		case "model":
			if a.model == "" && v.Type == gjson.String {
				a.model = strings.Clone(v.Raw)
			}
		case "system_fingerprint":
			if a.fingerprint == "" && v.Type == gjson.String {
				a.fingerprint = strings.Clone(v.Raw)
			}
		case "usage":
			if v.IsObject() {
				a.usage = append(a.usage[:0], v.Raw...)
			}
		case "choices":
			v.ForEach(func(_, c gjson.Result) bool {
				a.choice(c)
				return !a.lossy
			})
		case "error":
			a.lossy = true
		}
		return !a.lossy
	})
}

// choiceAt returns the choice with index i, adding it.
func (a *assembler) choiceAt(i int) *asmChoice {
	for j := range a.choices {
		if a.choices[j].index == i {
			return &a.choices[j]
		}
	}
	a.choices = append(a.choices, asmChoice{index: i})
	return &a.choices[len(a.choices)-1]
}

func (a *assembler) choice(c gjson.Result) {
	ch := a.choiceAt(int(c.Get("index").Int()))
	c.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "index":
		case "delta": // chat
			v.ForEach(func(dk, dv gjson.Result) bool {
				a.delta(ch, dk.Str, dv)
				return !a.lossy
			})
		case "text": // legacy completions
			if v.Type == gjson.String {
				ch.text = append(ch.text, v.Str...)
				ch.hasText = true
			}
		case "finish_reason":
			if v.Type == gjson.String {
				ch.finish = strings.Clone(v.Raw)
			}
		case "logprobs":
			if v.Type != gjson.Null {
				a.lossy = true
			}
		default:
			if v.Type != gjson.Null && a.d == llm.OpenAICompletion {
				a.lossy = true
			}
		}
		return !a.lossy
	})
}

func (a *assembler) delta(ch *asmChoice, k string, v gjson.Result) {
	if v.Type == gjson.Null {
		return
	}
	switch k {
	case "role":
	case "content":
		if v.Type != gjson.String {
			a.lossy = true // content parts (audio, images) are not assembled
			return
		}
		ch.text = append(ch.text, v.Str...)
		ch.hasText = true
	case "reasoning_content", "reasoning":
		if v.Type == gjson.String {
			ch.reasoning = append(ch.reasoning, v.Str...)
			ch.hasReasoning = true
		}
	case "refusal":
		if v.Type == gjson.String {
			ch.refusal = append(ch.refusal, v.Str...)
			ch.hasRefusal = true
		}
	case "tool_calls":
		pos := 0
		v.ForEach(func(_, tc gjson.Result) bool {
			a.toolDelta(ch, tc, pos)
			pos++
			return !a.lossy
		})
	default:
		// function_call, audio, annotations...: kept only by a stream.
		a.lossy = true
	}
}

func (a *assembler) toolDelta(ch *asmChoice, tc gjson.Result, pos int) {
	idx := pos
	if i := tc.Get("index"); i.Type == gjson.Number {
		idx = int(i.Int())
	}
	var t *asmTool
	for j := range ch.tools {
		if ch.tools[j].index == idx {
			t = &ch.tools[j]
			break
		}
	}
	if t == nil {
		ch.tools = append(ch.tools, asmTool{index: idx})
		t = &ch.tools[len(ch.tools)-1]
	}
	if id := tc.Get("id"); id.Type == gjson.String && id.Str != "" && !t.hasID {
		t.id, t.hasID = strings.Clone(id.Raw), true
	}
	if typ := tc.Get("type"); typ.Type == gjson.String && typ.Str != "" {
		t.typ = strings.Clone(typ.Raw)
	}
	fn := tc.Get("function")
	if n := fn.Get("name"); n.Type == gjson.String && n.Str != "" && !t.hasName {
		t.name, t.hasName = strings.Clone(n.Raw), true
	}
	if args := fn.Get("arguments"); args.Type == gjson.String {
		t.args = append(t.args, args.Str...)
	}
}

func (a *assembler) anthropic(name, data []byte) {
	s := bstr(data)
	typ := bstr(name)
	if typ == "" {
		typ = gjson.Get(s, "type").Str
	}
	switch typ {
	case "message_start":
		m := gjson.Get(s, "message")
		if !m.IsObject() {
			a.lossy = true
			return
		}
		a.msg = append(a.msg[:0], m.Raw...)
	case "content_block_start":
		cb := gjson.Get(s, "content_block")
		if !cb.IsObject() {
			a.lossy = true
			return
		}
		a.blocks = append(a.blocks, asmBlock{
			index: int(gjson.Get(s, "index").Int()),
			typ:   strings.Clone(cb.Get("type").Str),
			start: []byte(cb.Raw),
		})
	case "content_block_delta":
		blk := a.block(int(gjson.Get(s, "index").Int()))
		if blk == nil {
			a.lossy = true
			return
		}
		d := gjson.Get(s, "delta")
		switch d.Get("type").Str {
		case "text_delta":
			blk.text = append(blk.text, d.Get("text").Str...)
		case "thinking_delta":
			blk.thinking = append(blk.thinking, d.Get("thinking").Str...)
		case "signature_delta":
			blk.signature, blk.hasSig = strings.Clone(d.Get("signature").Str), true
		case "input_json_delta":
			blk.json = append(blk.json, d.Get("partial_json").Str...)
		case "citations_delta":
			c := d.Get("citation")
			if !c.IsObject() {
				a.lossy = true
				return
			}
			blk.citations = append(blk.citations, []byte(c.Raw))
		default:
			a.lossy = true
		}
	case "content_block_stop", "ping":
	case "message_delta":
		d := gjson.Get(s, "delta")
		if r := d.Get("stop_reason"); r.Exists() {
			a.stopReason = strings.Clone(r.Raw)
		}
		if r := d.Get("stop_sequence"); r.Exists() {
			a.stopSeq = strings.Clone(r.Raw)
		}
		if u := gjson.Get(s, "usage"); u.IsObject() {
			a.usages = append(a.usages, []byte(u.Raw))
		}
	case "message_stop":
		a.done = true
	default: // "error" and anything unknown
		a.lossy = true
	}
}

func (a *assembler) block(i int) *asmBlock {
	for j := range a.blocks {
		if a.blocks[j].index == i {
			return &a.blocks[j]
		}
	}
	return nil
}

// body returns the complete response body, or ok false when the stream
// did not end normally or carried something a body cannot hold. t is the
// stream's usage as the server counted it, used when the events the cache
// saw carried none (the server drops the usage chunk a client did not ask
// for before the filters see it).
func (a *assembler) body(t llm.Tokens) ([]byte, bool) {
	if a.lossy || !a.done {
		return nil, false
	}
	switch a.d {
	case llm.OpenAIChat:
		return a.chatBody(t), true
	case llm.OpenAICompletion:
		return a.completionBody(t), true
	case llm.AnthropicMessages:
		return a.anthropicBody(t)
	}
	return nil, false
}

func (a *assembler) head(b []byte, object string) []byte {
	b = append(b, `{"id":`...)
	b = appendLit(b, a.id, `""`)
	b = append(b, `,"object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = appendLit(b, a.created, "0")
	b = append(b, `,"model":`...)
	return appendLit(b, a.model, `""`)
}

func (a *assembler) sortedChoices() []asmChoice {
	slices.SortStableFunc(a.choices, func(x, y asmChoice) int { return x.index - y.index })
	return a.choices
}

func (a *assembler) chatBody(t llm.Tokens) []byte {
	b := make([]byte, 0, 256+a.size())
	b = a.head(b, "chat.completion")
	b = append(b, `,"choices":[`...)
	for i, ch := range a.sortedChoices() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(ch.index), 10)
		b = append(b, `,"message":{"role":"assistant","content":`...)
		if ch.hasText && (len(ch.text) > 0 || len(ch.tools) == 0) {
			b = appendMinimalString(b, bstr(ch.text))
		} else {
			b = append(b, "null"...)
		}
		if ch.hasReasoning {
			b = append(b, `,"reasoning_content":`...)
			b = appendMinimalString(b, bstr(ch.reasoning))
		}
		if ch.hasRefusal {
			b = append(b, `,"refusal":`...)
			b = appendMinimalString(b, bstr(ch.refusal))
		}
		if len(ch.tools) > 0 {
			slices.SortStableFunc(ch.tools, func(x, y asmTool) int { return x.index - y.index })
			b = append(b, `,"tool_calls":[`...)
			for j, tc := range ch.tools {
				if j > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"id":`...)
				b = appendLit(b, tc.id, `""`)
				b = append(b, `,"type":`...)
				b = appendLit(b, tc.typ, `"function"`)
				b = append(b, `,"function":{"name":`...)
				b = appendLit(b, tc.name, `""`)
				b = append(b, `,"arguments":`...)
				b = appendMinimalString(b, bstr(tc.args))
				b = append(b, "}}"...)
			}
			b = append(b, ']')
		}
		b = append(b, `},"logprobs":null,"finish_reason":`...)
		b = appendLit(b, ch.finish, "null")
		b = append(b, '}')
	}
	return a.tail(b, t, true)
}

// tail closes the choices array and appends the usage (the upstream's
// own, else built from t), the system fingerprint and the closing brace.
func (a *assembler) tail(b []byte, t llm.Tokens, chat bool) []byte {
	b = append(b, `],"usage":`...)
	if len(a.usage) > 0 {
		b = append(b, a.usage...)
	} else {
		b = appendOpenAIUsage(b, t, chat)
	}
	if a.fingerprint != "" {
		b = append(b, `,"system_fingerprint":`...)
		b = append(b, a.fingerprint...)
	}
	return append(b, '}')
}

func (a *assembler) completionBody(t llm.Tokens) []byte {
	b := make([]byte, 0, 256+a.size())
	b = a.head(b, "text_completion")
	b = append(b, `,"choices":[`...)
	for i, ch := range a.sortedChoices() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"text":`...)
		b = appendMinimalString(b, bstr(ch.text))
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(ch.index), 10)
		b = append(b, `,"logprobs":null,"finish_reason":`...)
		b = appendLit(b, ch.finish, "null")
		b = append(b, '}')
	}
	return a.tail(b, t, false)
}

func (a *assembler) size() int {
	n := 0
	for _, c := range a.choices {
		n += len(c.text) + len(c.reasoning) + len(c.refusal) + 32
		for _, t := range c.tools {
			n += len(t.args) + len(t.id) + len(t.name) + 64
		}
	}
	for _, b := range a.blocks {
		n += len(b.start) + len(b.text) + len(b.thinking) + len(b.json) + len(b.signature)
	}
	return n
}

func (a *assembler) anthropicBody(t llm.Tokens) ([]byte, bool) {
	if len(a.msg) == 0 {
		return nil, false
	}
	msg := gjson.Parse(bstr(a.msg))
	b := make([]byte, 0, 256+a.size())
	b = append(b, `{"id":`...)
	b = appendLit(b, msg.Get("id").Raw, `""`)
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = appendLit(b, msg.Get("model").Raw, `""`)
	b = append(b, `,"content":[`...)
	slices.SortStableFunc(a.blocks, func(x, y asmBlock) int { return x.index - y.index })
	for i := range a.blocks {
		blk, ok := a.blocks[i].complete()
		if !ok {
			return nil, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, blk...)
	}
	b = append(b, `],"stop_reason":`...)
	b = appendLit(b, a.stopReason, "null")
	b = append(b, `,"stop_sequence":`...)
	b = appendLit(b, a.stopSeq, "null")
	b = append(b, `,"usage":`...)
	b = append(b, a.mergedUsage(msg.Get("usage"), t)...)
	return append(b, '}'), true
}

// complete returns the block as the non-streamed message carries it.
func (blk *asmBlock) complete() ([]byte, bool) {
	out := blk.start
	var err error
	switch blk.typ {
	case "text":
		out, err = sjson.SetBytes(out, "text", bstr(blk.text))
		if err == nil && len(blk.citations) > 0 {
			var c []byte
			c = append(c, '[')
			c = append(c, bytes.Join(blk.citations, []byte{','})...)
			c = append(c, ']')
			out, err = sjson.SetRawBytes(out, "citations", c)
		}
	case "thinking":
		out, err = sjson.SetBytes(out, "thinking", bstr(blk.thinking))
		if err == nil && blk.hasSig {
			out, err = sjson.SetBytes(out, "signature", blk.signature)
		}
	case "tool_use", "server_tool_use", "mcp_tool_use":
		if len(blk.json) > 0 {
			if !gjson.ValidBytes(blk.json) {
				return nil, false
			}
			out, err = sjson.SetRawBytes(out, "input", blk.json)
		}
	default:
		if len(blk.text)+len(blk.thinking)+len(blk.json) > 0 || blk.hasSig || len(blk.citations) > 0 {
			return nil, false // deltas for a block kind not assembled
		}
	}
	return out, err == nil
}

// mergedUsage is message_start's usage with each message_delta's fields
// laid over it (Anthropic's deltas carry cumulative counts).
func (a *assembler) mergedUsage(start gjson.Result, t llm.Tokens) []byte {
	if !start.IsObject() && len(a.usages) == 0 {
		return appendAnthropicUsage(nil, t)
	}
	u := []byte(start.Raw)
	if !start.IsObject() {
		u = []byte("{}")
	}
	for _, d := range a.usages {
		gjson.ParseBytes(d).ForEach(func(k, v gjson.Result) bool {
			if v.Type == gjson.Null || strings.ContainsAny(k.Str, ".*?|#@\\") {
				return true
			}
			if nu, err := sjson.SetRawBytes(u, k.Str, []byte(v.Raw)); err == nil {
				u = nu
			}
			return true
		})
	}
	return u
}

// appendLit appends a JSON literal, or def when it is empty.
func appendLit(b []byte, lit, def string) []byte {
	if lit == "" {
		return append(b, def...)
	}
	return append(b, lit...)
}

// appendOpenAIUsage appends an OpenAI usage object for t (the details
// only for chat).
func appendOpenAIUsage(b []byte, t llm.Tokens, details bool) []byte {
	return translate.AppendOpenAIUsage(b, t, details)
}

// appendAnthropicUsage appends an Anthropic usage object for t (whose
// prompt count includes cache reads and writes; Anthropic's does not).
func appendAnthropicUsage(b []byte, t llm.Tokens) []byte {
	in := max(0, t.Prompt-t.CachedRead-t.CacheWrite)
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(in), 10)
	b = append(b, `,"cache_creation_input_tokens":`...)
	b = strconv.AppendInt(b, int64(t.CacheWrite), 10)
	b = append(b, `,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, int64(t.CachedRead), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(t.Completion), 10)
	return append(b, '}')
}

// appendMinimalString encodes s as a JSON string escaping only what JSON
// requires: text keeps its bytes.
func appendMinimalString(b []byte, s string) []byte { return errs.AppendJSONText(b, s) }
