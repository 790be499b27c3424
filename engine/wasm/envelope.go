package wasm

import (
	"iter"
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// Envelopes are built by appending bytes: the request or response body is
// embedded raw (it is already JSON), nothing goes through encoding/json.

// endpoint returns the envelope's endpoint name and path for a dialect.
func endpoint(d llm.Dialect) (name, path string) {
	name = "unknown"
	switch d {
	case llm.OpenAIChat:
		name = "chat"
	case llm.OpenAICompletion:
		name = "completions"
	case llm.OpenAIEmbedding:
		name = "embeddings"
	case llm.AnthropicMessages:
		name = "messages"
	}
	return name, d.Path()
}

// secretHeaders never reach a plugin (sdk/ABI.md §3).
var secretHeaders = []string{"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "x-goog-api-key"}

// allHeaders is what fasthttp's RequestHeader offers for iteration.
type allHeaders interface {
	All() iter.Seq2[[]byte, []byte]
}

// reqInfo caches what the request envelope derives from the body, shared
// by the plugins of one request until a patch changes the body.
type reqInfo struct {
	chars    int
	hasChars bool
}

// appendHead appends `{"v":1,"hook":...,"id":...,"endpoint":...` and, for
// the request hook, the path.
func appendHead(b []byte, h Hook, x *pipeline.Exchange) []byte {
	name, path := endpoint(x.Dialect)
	b = append(b, `{"v":1,"hook":"`...)
	b = append(b, h.String()...)
	b = append(b, `","id":`...)
	b = errs.AppendJSONString(b, x.ID)
	b = append(b, `,"endpoint":"`...)
	b = append(b, name...)
	b = append(b, '"')
	if h == HookRequest {
		b = append(b, `,"path":"`...)
		b = append(b, path...)
		b = append(b, '"')
	}
	b = append(b, `,"model":`...)
	return errs.AppendJSONString(b, x.Model)
}

// appendRequestEnvelope appends the on_request envelope for x.
func (s *Stage) appendRequestEnvelope(b []byte, x *pipeline.Exchange, ri *reqInfo) []byte {
	b = appendHead(b, HookRequest, x)
	b = append(b, `,"headers":{`...)
	if hs, ok := x.Header.(allHeaders); ok && hs != nil {
		n := 0
		for k, v := range hs.All() {
			if secretHeader(k) {
				continue
			}
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendLowerJSONString(b, k)
			b = append(b, ':')
			b = errs.AppendJSONString(b, unsafe.String(unsafe.SliceData(v), len(v)))
		}
	}
	b = append(b, `},"principal":{"key_alias":`...)
	b = errs.AppendJSONString(b, x.KeyAlias)
	b = append(b, `,"team_id":`...)
	b = errs.AppendJSONString(b, x.TeamID)
	b = append(b, `,"user_id":`...)
	b = errs.AppendJSONString(b, x.UserID)
	b = append(b, `},"tags":[`...)
	for i, t := range x.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = errs.AppendJSONString(b, t)
	}
	b = append(b, `],"models":`...)
	b = append(b, s.models...)
	if !ri.hasChars {
		ri.chars, ri.hasChars = promptChars(x.Dialect, x.Body), true
	}
	b = append(b, `,"prompt_chars":`...)
	b = strconv.AppendInt(b, int64(ri.chars), 10)
	if s.router != nil {
		if _, ok := s.router.Group(x.RouteGroup()); ok {
			// The most the request can cost on its model group (prompt
			// tokens estimated at 4 characters each, the output at
			// max_tokens or the model's cap); absent when unpriced.
			nano, _ := s.router.Estimate(x.RouteGroup(), nil, (ri.chars+3)/4, x.MaxTokens)
			if nano > 0 {
				b = append(b, `,"estimated_cost_usd":`...)
				b = strconv.AppendFloat(b, float64(nano)/1e9, 'g', -1, 64)
			}
		}
	}
	b = append(b, `,"body":`...)
	b = append(b, x.Body...)
	return append(b, '}')
}

// appendResponseEnvelope appends the on_response envelope.
func appendResponseEnvelope(b []byte, x *pipeline.Exchange, body []byte) []byte {
	b = appendHead(b, HookResponse, x)
	b = append(b, `,"status":200,"body":`...)
	b = appendJSONOrString(b, body)
	return append(b, '}')
}

// appendEventEnvelope appends the on_stream_event envelope.
func appendEventEnvelope(b []byte, x *pipeline.Exchange, index int, name, data, state []byte) []byte {
	b = appendHead(b, HookStreamEvent, x)
	b = append(b, `,"index":`...)
	b = strconv.AppendInt(b, int64(index), 10)
	if len(name) > 0 {
		b = append(b, `,"event":`...)
		b = errs.AppendJSONString(b, unsafe.String(unsafe.SliceData(name), len(name)))
	}
	if len(state) > 0 {
		b = append(b, `,"state":`...)
		b = append(b, state...)
	}
	// data last (sdk/ABI.md §3: guests may stop reading there)
	b = append(b, `,"data":`...)
	b = appendJSONOrString(b, data)
	return append(b, '}')
}

// appendEndEnvelope appends the on_stream_end envelope.
func appendEndEnvelope(b []byte, x *pipeline.Exchange, events int, complete bool, state []byte) []byte {
	b = appendHead(b, HookStreamEnd, x)
	b = append(b, `,"events":`...)
	b = strconv.AppendInt(b, int64(events), 10)
	b = append(b, `,"complete":`...)
	b = strconv.AppendBool(b, complete)
	if len(state) > 0 {
		b = append(b, `,"state":`...)
		b = append(b, state...)
	}
	return append(b, '}')
}

// appendJSONOrString embeds data raw when it is JSON, else as a JSON
// string ("[DONE]").
func appendJSONOrString(b, data []byte) []byte {
	if isJSON(data) {
		return append(b, data...)
	}
	return errs.AppendJSONString(b, unsafe.String(unsafe.SliceData(data), len(data)))
}

func isJSON(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	switch data[0] {
	case '{', '"', 't', 'f', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
	case '[':
		if string(data) == "[DONE]" {
			return false
		}
	default:
		return false
	}
	return gjson.ValidBytes(data)
}

func secretHeader(k []byte) bool {
	for _, s := range secretHeaders {
		if len(k) == len(s) && equalFoldASCII(k, s) {
			return true
		}
	}
	return false
}

func equalFoldASCII(a []byte, b string) bool {
	for i := range a {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// appendLowerJSONString appends a header name, lower-cased, as a JSON
// string.
func appendLowerJSONString(b, k []byte) []byte {
	b = append(b, '"')
	for _, c := range k {
		switch {
		case 'A' <= c && c <= 'Z':
			b = append(b, c+'a'-'A')
		case c < 0x20 || c == '"' || c == '\\' || c >= 0x7f:
			// Not a header token character: dropped.
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// Envelope returns the envelope the stage passes to hook h for x:
// on_request reads x; on_response embeds payload as the body,
// on_stream_event as the data of event 0, on_stream_end ignores it (for
// `portcullis plugin test`).
func (s *Stage) Envelope(h Hook, x *pipeline.Exchange, payload []byte) []byte {
	switch h {
	case HookRequest:
		return s.appendRequestEnvelope(nil, x, &reqInfo{})
	case HookResponse:
		return appendResponseEnvelope(nil, x, payload)
	case HookStreamEvent:
		return appendEventEnvelope(nil, x, 0, nil, payload, nil)
	case HookStreamEnd:
		return appendEndEnvelope(nil, x, 0, true, nil)
	}
	return payload
}
