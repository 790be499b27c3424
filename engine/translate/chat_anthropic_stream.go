package translate

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

// Kinds of Anthropic content block the OpenAI stream opens.
const (
	kindNone uint8 = iota
	kindText
	kindThinking
	kindTool
)

// chatToAnthStream turns OpenAI chat.completion.chunk events into the
// Anthropic event sequence: message_start on the first chunk, one content
// block at a time (text and thinking opened lazily, one tool_use block per
// tool call), and on [DONE] the closing content_block_stop, message_delta
// (stop_reason and usage, which OpenAI only sends at the end) and
// message_stop. Only choice 0 is translated.
type chatToAnthStream struct {
	model string
	buf   []byte

	next     int   // index of the next content block
	open     int   // index of the open block, -1 when none
	openKind uint8 // kind of the open block
	tools    []toolBlock

	stop     string
	usage    llm.Tokens
	hasUsage bool
	started  bool
	done     bool
}

// toolBlock maps an OpenAI tool-call index to its Anthropic block.
type toolBlock struct {
	index, block int
	id           string
}

// NewChatToAnthropicStream returns a translator from OpenAI chunks to
// Anthropic events. model, when not empty, replaces the upstream model.
func NewChatToAnthropicStream(model string) StreamTranslator {
	return &chatToAnthStream{model: model, open: -1, buf: make([]byte, 0, 512)}
}

func (t *chatToAnthStream) Done() bool        { return t.done }
func (t *chatToAnthStream) Usage() llm.Tokens { return t.usage }

func (t *chatToAnthStream) Event(ev sse.Event, emit Emit) error {
	if t.done {
		return nil
	}
	if ev.IsDone() {
		return t.finish(emit)
	}
	if len(bytes.TrimSpace(ev.Data)) == 0 {
		return nil
	}
	s := bstr(ev.Data)
	if e := gjson.Get(s, "error"); e.Exists() && e.Type != gjson.Null {
		return openAIErrorFrom(e)
	}
	if u, ok := readOpenAIUsage(gjson.Get(s, "usage")); ok {
		t.usage, t.hasUsage = u, true
	}
	if !t.started {
		if err := t.start(emit, gjson.Get(s, "id"), gjson.Get(s, "model").Str); err != nil {
			return err
		}
	}
	var err error
	gjson.Get(s, "choices").ForEach(func(_, c gjson.Result) bool {
		if c.Get("index").Int() == 0 {
			err = t.choice(emit, c)
			return false
		}
		return true
	})
	return err
}

func (t *chatToAnthStream) choice(emit Emit, c gjson.Result) error {
	d := c.Get("delta")
	r := rawStr(d, "reasoning_content")
	if emptyRaw(r) {
		r = rawStr(d, "reasoning") // vLLM, OpenRouter
	}
	if !emptyRaw(r) {
		if err := t.delta(emit, kindThinking, r); err != nil {
			return err
		}
	}
	if ct := rawStr(d, "content"); !emptyRaw(ct) {
		if err := t.delta(emit, kindText, ct); err != nil {
			return err
		}
	}
	if rf := rawStr(d, "refusal"); !emptyRaw(rf) {
		if err := t.delta(emit, kindText, rf); err != nil {
			return err
		}
	}
	var err error
	d.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
		err = t.toolDelta(emit, tc)
		return err == nil
	})
	if err != nil {
		return err
	}
	if fr := c.Get("finish_reason"); fr.Type == gjson.String && fr.Str != "" {
		t.stop = stopFromOpenAI(fr.Str)
	}
	return nil
}

func (t *chatToAnthStream) start(emit Emit, id gjson.Result, upstreamModel string) error {
	t.started = true
	if t.model == "" {
		t.model = strings.Clone(upstreamModel)
	}
	var u anthUsage
	if t.hasUsage {
		u = anthropicUsage(t.usage)
	}
	b := append(t.buf[:0], `{"type":"message_start","message":{"id":`...)
	b = appendJSONValue(b, id)
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = errs.AppendJSONString(b, t.model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":`...)
	b = appendAnthropicUsage(b, u, true)
	b = append(b, "}}"...)
	return t.emit(emit, evMessageStart, b)
}

// delta appends text or thinking to the open block of that kind, opening
// one (and closing any other) first.
func (t *chatToAnthStream) delta(emit Emit, kind uint8, raw string) error {
	if t.open < 0 || t.openKind != kind {
		if err := t.closeBlock(emit); err != nil {
			return err
		}
		b := t.blockStart()
		if kind == kindText {
			b = append(b, `{"type":"text","text":""}}`...)
		} else {
			b = append(b, `{"type":"thinking","thinking":""}}`...)
		}
		if err := t.openBlock(emit, b, kind); err != nil {
			return err
		}
	}
	b := t.blockDelta(t.open)
	if kind == kindText {
		b = append(b, `{"type":"text_delta","text":`...)
	} else {
		b = append(b, `{"type":"thinking_delta","thinking":`...)
	}
	b = appendRawString(b, raw)
	b = append(b, "}}"...)
	return t.emit(emit, evContentBlockDelta, b)
}

// toolDelta handles one tool_calls entry: a new call (unknown index, or a
// new id) opens a tool_use block; arguments become input_json_delta on the
// call's block.
func (t *chatToAnthStream) toolDelta(emit Emit, tc gjson.Result) error {
	index := int(tc.Get("index").Int())
	id := tc.Get("id")
	fn := tc.Get("function")
	k := -1
	for i := len(t.tools) - 1; i >= 0; i-- {
		if t.tools[i].index == index {
			k = i
			break
		}
	}
	if k < 0 || (id.Str != "" && id.Str != t.tools[k].id) {
		if err := t.closeBlock(emit); err != nil {
			return err
		}
		blk := t.next
		t.tools = append(t.tools, toolBlock{index: index, block: blk, id: strings.Clone(id.Str)})
		k = len(t.tools) - 1
		b := t.blockStart()
		b = append(b, `{"type":"tool_use","id":`...)
		if id.Str != "" {
			b = appendJSONValue(b, id)
		} else {
			b = append(b, `"toolu_`...)
			b = strconv.AppendInt(b, int64(blk), 10)
			b = append(b, '"')
		}
		b = append(b, `,"name":`...)
		b = appendJSONValue(b, fn.Get("name"))
		b = append(b, `,"input":{}}}`...)
		if err := t.openBlock(emit, b, kindTool); err != nil {
			return err
		}
	}
	args := rawStr(fn, "arguments")
	if emptyRaw(args) {
		return nil
	}
	b := t.blockDelta(t.tools[k].block)
	b = append(b, `{"type":"input_json_delta","partial_json":`...)
	b = appendRawString(b, args)
	b = append(b, "}}"...)
	return t.emit(emit, evContentBlockDelta, b)
}

// blockStart begins a content_block_start for the next block index.
func (t *chatToAnthStream) blockStart() []byte {
	b := append(t.buf[:0], `{"type":"content_block_start","index":`...)
	b = strconv.AppendInt(b, int64(t.next), 10)
	return append(b, `,"content_block":`...)
}

func (t *chatToAnthStream) openBlock(emit Emit, b []byte, kind uint8) error {
	t.open, t.openKind = t.next, kind
	t.next++
	return t.emit(emit, evContentBlockStart, b)
}

func (t *chatToAnthStream) blockDelta(index int) []byte {
	b := append(t.buf[:0], `{"type":"content_block_delta","index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	return append(b, `,"delta":`...)
}

func (t *chatToAnthStream) closeBlock(emit Emit) error {
	if t.open < 0 {
		return nil
	}
	b := append(t.buf[:0], `{"type":"content_block_stop","index":`...)
	b = strconv.AppendInt(b, int64(t.open), 10)
	b = append(b, '}')
	t.open, t.openKind = -1, kindNone
	return t.emit(emit, evContentBlockStop, b)
}

// finish closes the message on [DONE].
func (t *chatToAnthStream) finish(emit Emit) error {
	if !t.started {
		if err := t.start(emit, gjson.Result{}, ""); err != nil {
			return err
		}
	}
	if err := t.closeBlock(emit); err != nil {
		return err
	}
	t.done = true
	stop := t.stop
	if stop == "" {
		stop = "end_turn"
		if len(t.tools) > 0 {
			stop = "tool_use"
		}
	}
	b := append(t.buf[:0], `{"type":"message_delta","delta":{"stop_reason":"`...)
	b = append(b, stop...)
	b = append(b, `","stop_sequence":null},"usage":`...)
	b = appendAnthropicUsage(b, anthropicUsage(t.usage), t.hasUsage)
	b = append(b, '}')
	if err := t.emit(emit, evMessageDelta, b); err != nil {
		return err
	}
	b = append(t.buf[:0], `{"type":"message_stop"}`...)
	return t.emit(emit, evMessageStop, b)
}

func (t *chatToAnthStream) emit(emit Emit, name, b []byte) error {
	t.buf = b
	return emit(name, b)
}

// appendAnthropicUsage appends an Anthropic usage object; without input
// counts (full=false) only output_tokens is written.
func appendAnthropicUsage(b []byte, u anthUsage, full bool) []byte {
	b = append(b, '{')
	if full {
		b = append(b, `"input_tokens":`...)
		b = strconv.AppendInt(b, int64(u.InputTokens), 10)
		b = append(b, `,"cache_creation_input_tokens":`...)
		b = strconv.AppendInt(b, int64(u.CacheCreationInputTokens), 10)
		b = append(b, `,"cache_read_input_tokens":`...)
		b = strconv.AppendInt(b, int64(u.CacheReadInputTokens), 10)
		b = append(b, ',')
	}
	b = append(b, `"output_tokens":`...)
	b = strconv.AppendInt(b, int64(u.OutputTokens), 10)
	return append(b, '}')
}
