package translate

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

// anthToChatStream turns Anthropic Messages events into OpenAI
// chat.completion.chunk events. Every chunk shares one prefix (id, object,
// created, model) built at message_start; chunks are appended by hand into
// one reused buffer, so a delta costs no allocation beyond gjson's.
type anthToChatStream struct {
	model        string
	includeUsage bool

	prefix []byte // {"id":..,"object":"chat.completion.chunk","created":..,"model":..,"choices":[
	buf    []byte
	tools  []blockTool // content block index -> OpenAI tool index
	usage  anthUsage

	finishSent bool
	done       bool
}

// blockTool maps an Anthropic content block to the OpenAI tool-call index
// (which counts tool calls only).
type blockTool struct{ block, tool int }

// NewAnthropicToChatStream returns a translator from Anthropic events to
// OpenAI chunks. model, when not empty, replaces the upstream model name.
// With includeUsage a final chunk with empty choices carries the usage
// before data: [DONE], as OpenAI does for stream_options.include_usage.
func NewAnthropicToChatStream(model string, includeUsage bool) StreamTranslator {
	return &anthToChatStream{model: model, includeUsage: includeUsage, buf: make([]byte, 0, 512)}
}

func (t *anthToChatStream) Done() bool        { return t.done }
func (t *anthToChatStream) Usage() llm.Tokens { return t.usage.tokens() }

func (t *anthToChatStream) Event(ev sse.Event, emit Emit) error {
	if t.done {
		return nil
	}
	s := bstr(ev.Data)
	switch eventType(&ev, s) {
	case "message_start":
		msg := gjson.Get(s, "message")
		readAnthropicUsage(&t.usage, msg.Get("usage"))
		t.setPrefix(msg.Get("id"), msg.Get("model").Str)
		b := append(t.buf[:0], t.prefix...)
		b = append(b, `{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`...)
		return t.emit(emit, b)

	case "content_block_start":
		cb := gjson.Get(s, "content_block")
		switch cb.Get("type").Str {
		case "text":
			return t.contentDelta(emit, `{"content":`, rawStr(cb, "text"))
		case "thinking":
			return t.contentDelta(emit, `{"reasoning_content":`, rawStr(cb, "thinking"))
		case "tool_use":
			ti := len(t.tools)
			t.tools = append(t.tools, blockTool{block: int(gjson.Get(s, "index").Int()), tool: ti})
			b := t.chunk()
			b = append(b, `{"index":0,"delta":{"tool_calls":[{"index":`...)
			b = strconv.AppendInt(b, int64(ti), 10)
			b = append(b, `,"id":`...)
			b = appendJSONValue(b, cb.Get("id"))
			b = append(b, `,"type":"function","function":{"name":`...)
			b = appendJSONValue(b, cb.Get("name"))
			b = append(b, `,"arguments":""}}]},"finish_reason":null}]}`...)
			return t.emit(emit, b)
		}

	case "content_block_delta":
		d := gjson.Get(s, "delta")
		switch d.Get("type").Str {
		case "text_delta":
			return t.contentDelta(emit, `{"content":`, rawStr(d, "text"))
		case "thinking_delta":
			return t.contentDelta(emit, `{"reasoning_content":`, rawStr(d, "thinking"))
		case "input_json_delta":
			pj := rawStr(d, "partial_json")
			if emptyRaw(pj) {
				return nil
			}
			ti, ok := t.toolFor(int(gjson.Get(s, "index").Int()))
			if !ok {
				return nil
			}
			b := t.chunk()
			b = append(b, `{"index":0,"delta":{"tool_calls":[{"index":`...)
			b = strconv.AppendInt(b, int64(ti), 10)
			b = append(b, `,"function":{"arguments":`...)
			b = appendRawString(b, pj)
			b = append(b, `}}]},"finish_reason":null}]}`...)
			return t.emit(emit, b)
		}

	case "message_delta":
		readAnthropicUsage(&t.usage, gjson.Get(s, "usage"))
		if sr := gjson.Get(s, "delta.stop_reason"); sr.Type == gjson.String {
			return t.finish(emit, finishFromAnthropic(sr.Str))
		}

	case "message_stop":
		if !t.finishSent {
			if err := t.finish(emit, llm.FinishStop); err != nil {
				return err
			}
		}
		t.done = true
		if t.includeUsage {
			b := t.chunk()
			b = append(b, `],"usage":`...)
			b = appendOpenAIUsage(b, t.usage.tokens())
			b = append(b, '}')
			if err := t.emit(emit, b); err != nil {
				return err
			}
		}
		return emit(nil, sse.Done)

	case "error":
		return anthropicErrorFrom(s)
	}
	return nil // ping, content_block_stop, signature and citation deltas, unknown events
}

// setPrefix builds the shared chunk prefix once.
func (t *anthToChatStream) setPrefix(id gjson.Result, upstreamModel string) {
	if t.model == "" {
		t.model = strings.Clone(upstreamModel)
	}
	p := make([]byte, 0, 96+len(id.Raw)+len(t.model))
	p = append(p, `{"id":`...)
	p = appendJSONValue(p, id)
	p = append(p, `,"object":"chat.completion.chunk","created":`...)
	p = strconv.AppendInt(p, nowUnix(), 10)
	p = append(p, `,"model":`...)
	p = errs.AppendJSONString(p, t.model)
	t.prefix = append(p, `,"choices":[`...)
}

// chunk starts a chunk in the reused buffer (upstreams that skip
// message_start still get a prefix).
func (t *anthToChatStream) chunk() []byte {
	if t.prefix == nil {
		t.setPrefix(gjson.Result{}, "")
	}
	return append(t.buf[:0], t.prefix...)
}

func (t *anthToChatStream) emit(emit Emit, b []byte) error {
	t.buf = b
	return emit(nil, b)
}

// contentDelta emits one delta field (open is `{"content":` or
// `{"reasoning_content":`); empty text emits nothing.
func (t *anthToChatStream) contentDelta(emit Emit, open string, raw string) error {
	if emptyRaw(raw) {
		return nil
	}
	b := t.chunk()
	b = append(b, `{"index":0,"delta":`...)
	b = append(b, open...)
	b = appendRawString(b, raw)
	b = append(b, `},"finish_reason":null}]}`...)
	return t.emit(emit, b)
}

func (t *anthToChatStream) finish(emit Emit, reason string) error {
	t.finishSent = true
	b := t.chunk()
	b = append(b, `{"index":0,"delta":{},"finish_reason":"`...)
	b = append(b, reason...)
	b = append(b, `"}]}`...)
	return t.emit(emit, b)
}

func (t *anthToChatStream) toolFor(block int) (int, bool) {
	for i := len(t.tools) - 1; i >= 0; i-- {
		if t.tools[i].block == block {
			return t.tools[i].tool, true
		}
	}
	return 0, false
}
