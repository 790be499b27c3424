package translate

import (
	"bytes"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

// UsageFromBody reads the usage of a non-streamed response body in dialect
// d: OpenAI chat, completion and embedding usage, or Anthropic usage
// (whose prompt count is input plus cache reads and writes). It scans with
// gjson and never decodes the body. ok is false when the body has no usage.
func UsageFromBody(d llm.Dialect, body []byte) (llm.Tokens, bool) {
	u := gjson.Get(bstr(body), "usage")
	if d == llm.AnthropicMessages {
		var au anthUsage
		if !readAnthropicUsage(&au, u) {
			return llm.Tokens{}, false
		}
		return au.tokens(), true
	}
	return readOpenAIUsage(u)
}

var usageKey = []byte(`"usage"`)

// UsageMeter tracks usage across the events of a pass-through stream. The
// zero value is ready. Events that do not mention "usage" cost one
// bytes.Index and no allocation.
//
// OpenAI streams report usage in one chunk (stream_options.include_usage;
// some compatible servers repeat it on every chunk, the last one wins).
// Anthropic streams report input and cache counts in message_start and the
// cumulative output count (sometimes updated input counts) in message_delta.
type UsageMeter struct {
	anth anthUsage
	t    llm.Tokens
	ok   bool
}

// Observe records the usage an event carries, if any.
func (m *UsageMeter) Observe(d llm.Dialect, ev sse.Event) {
	if !bytes.Contains(ev.Data, usageKey) {
		return
	}
	s := bstr(ev.Data)
	if d == llm.AnthropicMessages {
		var u gjson.Result
		switch eventType(&ev, s) {
		case "message_start":
			u = gjson.Get(s, "message.usage")
		case "message_delta":
			u = gjson.Get(s, "usage")
		default:
			return
		}
		if readAnthropicUsage(&m.anth, u) {
			m.t, m.ok = m.anth.tokens(), true
		}
		return
	}
	if t, ok := readOpenAIUsage(gjson.Get(s, "usage")); ok {
		m.t, m.ok = t, true
	}
}

// Tokens returns the usage seen so far; ok is false if none was seen.
func (m *UsageMeter) Tokens() (llm.Tokens, bool) { return m.t, m.ok }
