// Package translate converts requests, responses and SSE streams between the
// dialects Portcullis speaks: OpenAI Chat Completions (the canonical shape,
// package llm), Anthropic Messages and OpenAI legacy Completions.
//
// A request that arrives in one dialect and is served by a provider of
// another passes through here twice: the request body is decoded into the
// canonical llm.ChatRequest (DecodeChat, AnthropicToChat, CompletionToChat,
// registered as provider decoders) and re-encoded for the upstream
// (ChatToAnthropic); the upstream answer is converted back, either whole
// (AnthropicResponseToChat, ChatResponseToAnthropic, ChatResponseToCompletion)
// or event by event by a StreamTranslator. Same-dialect traffic never comes
// here except for usage accounting (UsageFromBody, UsageMeter), which reads
// bytes with gjson and never decodes a whole body.
//
// Translators are named <from>_<to>.go. All errors are *errs.Error: 400s for
// malformed client input, CodeUnsupported for features the target dialect
// cannot express, CodeUpstream for upstream error bodies and in-stream error
// events, and CodeUpstreamProtocol (502) for upstream bodies that cannot be
// read.
package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
)

// Emit receives one output SSE event (name may be nil for data-only events).
// The slices are only valid during the call: an Emit that keeps them must
// copy them (sse.AppendEvent does).
type Emit func(name, data []byte) error

// StreamTranslator converts a provider's SSE events into another dialect's
// events, statefully, one event at a time. A translator serves one stream
// and is not safe for concurrent use.
type StreamTranslator interface {
	// Event handles one upstream event, emitting zero or more output events.
	// An upstream in-stream error event (Anthropic `event: error`, or an
	// OpenAI chunk carrying {"error":{...}}) is returned as an *errs.Error
	// (status from its type, Code errs.CodeUpstream), emitting nothing. An
	// error returned by emit is returned as is.
	Event(ev sse.Event, emit Emit) error
	// Done reports whether the upstream's terminal event has been seen
	// (OpenAI "[DONE]", Anthropic message_stop).
	Done() bool
	// Usage returns the usage seen so far.
	Usage() llm.Tokens
}

func init() {
	provider.RegisterDecoder(llm.OpenAIChat, DecodeChat)
	provider.RegisterDecoder(llm.AnthropicMessages, AnthropicToChat)
	provider.RegisterDecoder(llm.OpenAICompletion, CompletionToChat)
}

// nowUnix stamps "created" on bodies whose upstream has no such field. Tests
// replace it to make golden files stable.
var nowUnix = func() int64 { return time.Now().Unix() }

// defaultAnthropicMaxTokens is sent when the canonical request has no limit:
// Anthropic requires max_tokens.
const defaultAnthropicMaxTokens = 4096

// Anthropic SSE event names.
var (
	evMessageStart      = []byte("message_start")
	evMessageDelta      = []byte("message_delta")
	evMessageStop       = []byte("message_stop")
	evContentBlockStart = []byte("content_block_start")
	evContentBlockDelta = []byte("content_block_delta")
	evContentBlockStop  = []byte("content_block_stop")
)

// ---- errors ----------------------------------------------------------------

// decodeError turns an encoding/json error on a client body into a 400.
func decodeError(err error) *errs.Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "body"
		}
		want := jsonKind(te.Type)
		if te.Type == contentPartsType || field == "stop" {
			want = "a string or an array" // llm.Content and llm.Stop accept both
		}
		return errs.BadRequest(errs.CodeInvalidRequest, te.Field,
			"invalid type for '"+field+"': expected "+want+", got "+te.Value).Wrap(err)
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return e
	}
	return errs.BadRequest(errs.CodeInvalidJSON, "", "request body is not valid JSON").Wrap(err)
}

var contentPartsType = reflect.TypeOf([]llm.ContentPart(nil))

// jsonKind names a Go type by the JSON value it decodes.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a valid value"
	}
	if t == stringOrArrayType {
		return "a string or an array"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a valid value"
}

// unmarshalClient decodes a client body, mapping failures to 400s.
func unmarshalClient(body []byte, v any) *errs.Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errs.BadRequest(errs.CodeInvalidJSON, "", "request body is empty")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return decodeError(err)
	}
	return nil
}

// protocolError is a 502 for an upstream body that cannot be read.
func protocolError(msg string, cause error) *errs.Error {
	e := errs.New(502, errs.CodeUpstreamProtocol, msg)
	e.Fallback = true
	if cause != nil {
		e.Wrap(cause)
	}
	return e
}

// upstreamError builds the CodeUpstream error for an upstream error body or
// in-stream error event.
func upstreamError(status int, msg string) *errs.Error {
	if msg == "" {
		msg = "upstream error"
	}
	e := errs.New(status, errs.CodeUpstream, msg)
	switch {
	case status == 429:
		e.Fallback = true
	case status == 408 || status >= 500:
		e.Retryable, e.Fallback = true, true
	}
	return e
}

// anthropicStatus maps an Anthropic error type to its HTTP status.
func anthropicStatus(typ string) int {
	switch typ {
	case "invalid_request_error":
		return 400
	case "authentication_error":
		return 401
	case "billing_error":
		return 402
	case "permission_error":
		return 403
	case "not_found_error":
		return 404
	case "request_too_large":
		return 413
	case "rate_limit_error":
		return 429
	case "api_error":
		return 500
	case "timeout_error":
		return 504
	case "overloaded_error":
		return 529
	}
	return 502
}

// openAIStatus maps an OpenAI error type (or numeric code) to its status.
func openAIStatus(e gjson.Result) int {
	if c := e.Get("code"); c.Type == gjson.Number {
		if n := int(c.Int()); n >= 400 && n <= 599 {
			return n
		}
	}
	switch e.Get("type").Str {
	case "invalid_request_error":
		return 400
	case "authentication_error":
		return 401
	case "permission_error":
		return 403
	case "not_found_error":
		return 404
	case "rate_limit_error", "insufficient_quota", "tokens", "requests":
		return 429
	case "server_error", "api_error":
		return 500
	case "timeout_error":
		return 504
	case "overloaded_error", "service_unavailable":
		return 503
	}
	return 502
}

// anthropicErrorFrom reads {"type":"error","error":{"type","message"}}.
func anthropicErrorFrom(s string) *errs.Error {
	e := gjson.Get(s, "error")
	return upstreamError(anthropicStatus(e.Get("type").Str), e.Get("message").String())
}

// openAIErrorFrom reads {"error":{"message","type","code"}}.
func openAIErrorFrom(e gjson.Result) *errs.Error {
	if e.Type == gjson.String {
		return upstreamError(502, e.Str)
	}
	return upstreamError(openAIStatus(e), e.Get("message").String())
}

func unsupported(param, msg string) *errs.Error {
	return errs.BadRequest(errs.CodeUnsupported, param, msg)
}

func invalid(param, msg string) *errs.Error {
	return errs.BadRequest(errs.CodeInvalidRequest, param, msg)
}

// ---- small helpers ---------------------------------------------------------

// bstr views b as a string without copying. The string must not outlive b.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// eventType is the Anthropic event type: the SSE event name, else the
// data's "type".
func eventType(ev *sse.Event, s string) string {
	if len(ev.Name) > 0 {
		return bstr(ev.Name)
	}
	return gjson.Get(s, "type").Str
}

func param(prefix string, i int, suffix string) string {
	return prefix + "[" + strconv.Itoa(i) + "]" + suffix
}

// appendJSONValue appends a gjson string result as a JSON string literal:
// the upstream literal itself when it is well formed (no unescape/escape
// round trip), else the re-encoded value. Non-strings append "".
func appendJSONValue(b []byte, r gjson.Result) []byte {
	if r.Type != gjson.String {
		return append(b, `""`...)
	}
	if validStringLiteral(r.Raw) {
		return append(b, r.Raw...)
	}
	return errs.AppendJSONString(b, r.Str)
}

// validStringLiteral reports whether s is one well-formed JSON string
// literal (quotes included).
func validStringLiteral(s string) bool {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		c := s[i]
		switch {
		case c < 0x20:
			return false
		case c == '"':
			return false
		case c == '\\':
			i++
			if i >= len(s)-1 {
				return false
			}
			switch s[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s)-1 {
					return false
				}
				for j := 1; j <= 4; j++ {
					if !isHex(s[i+j]) {
						return false
					}
				}
				i += 4
			default:
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// isJSONObject reports whether s is a valid JSON object.
func isJSONObject(s []byte) bool {
	s = bytes.TrimSpace(s)
	return len(s) > 0 && s[0] == '{' && json.Valid(s)
}

var emptyObject = json.RawMessage("{}")

// ---- finish / stop reasons -------------------------------------------------

// finishFromAnthropic maps an Anthropic stop_reason to an OpenAI
// finish_reason.
func finishFromAnthropic(r string) string {
	switch r {
	case "max_tokens", "model_context_window_exceeded":
		return llm.FinishLength
	case "tool_use":
		return llm.FinishToolCalls
	case "refusal":
		return llm.FinishContentFilter
	}
	return llm.FinishStop // end_turn, stop_sequence, pause_turn, unknown
}

// stopFromOpenAI maps an OpenAI finish_reason to an Anthropic stop_reason.
func stopFromOpenAI(r string) string {
	switch r {
	case llm.FinishLength:
		return "max_tokens"
	case llm.FinishToolCalls, "function_call":
		return "tool_use"
	case llm.FinishContentFilter:
		return "refusal"
	}
	return "end_turn"
}

// ---- usage -----------------------------------------------------------------

// anthUsage is Anthropic's usage object.
type anthUsage struct {
	InputTokens              int `json:"input_tokens"`
	CacheCreationInputTokens int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int `json:"cache_read_input_tokens"`
	OutputTokens             int `json:"output_tokens"`
}

// tokens flattens Anthropic usage: OpenAI prompt tokens include cached ones.
func (u anthUsage) tokens() llm.Tokens {
	return llm.Tokens{
		Prompt:     u.InputTokens + u.CacheReadInputTokens + u.CacheCreationInputTokens,
		Completion: u.OutputTokens,
		CachedRead: u.CacheReadInputTokens,
		CacheWrite: u.CacheCreationInputTokens,
	}
}

// openAIUsage renders tokens in the OpenAI shape.
func openAIUsage(t llm.Tokens) *llm.Usage {
	u := &llm.Usage{
		PromptTokens:        t.Prompt,
		CompletionTokens:    t.Completion,
		TotalTokens:         t.Total(),
		PromptTokensDetails: &llm.PromptTokensDetails{CachedTokens: t.CachedRead, CacheCreationTokens: t.CacheWrite},
	}
	if t.Reasoning > 0 {
		u.CompletionTokensDetails = &llm.CompletionTokensDetails{ReasoningTokens: t.Reasoning}
	}
	return u
}

// anthropicUsage splits OpenAI tokens into Anthropic's disjoint counts.
func anthropicUsage(t llm.Tokens) anthUsage {
	in := t.Prompt - t.CachedRead - t.CacheWrite
	if in < 0 {
		in = 0
	}
	return anthUsage{InputTokens: in, CacheCreationInputTokens: t.CacheWrite, CacheReadInputTokens: t.CachedRead, OutputTokens: t.Completion}
}

// appendOpenAIUsage appends the OpenAI chat usage object for t.
func appendOpenAIUsage(b []byte, t llm.Tokens) []byte { return AppendOpenAIUsage(b, t, true) }

// AppendOpenAIUsage appends an OpenAI usage object for t; details adds
// prompt_tokens_details and completion_tokens_details (chat), without
// them it is the legacy completions shape.
func AppendOpenAIUsage(b []byte, t llm.Tokens, details bool) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(t.Prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(t.Completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(t.Total()), 10)
	if !details {
		return append(b, '}')
	}
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(t.CachedRead), 10)
	if t.CacheWrite > 0 {
		b = append(b, `,"cache_creation_tokens":`...)
		b = strconv.AppendInt(b, int64(t.CacheWrite), 10)
	}
	b = append(b, '}')
	if t.Reasoning > 0 {
		b = append(b, `,"completion_tokens_details":{"reasoning_tokens":`...)
		b = strconv.AppendInt(b, int64(t.Reasoning), 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// readAnthropicUsage overlays the fields present in u onto dst (message_delta
// usage carries only what changed, cumulatively).
func readAnthropicUsage(dst *anthUsage, u gjson.Result) bool {
	if !u.IsObject() {
		return false
	}
	u.ForEach(func(k, v gjson.Result) bool {
		if v.Type != gjson.Number {
			return true
		}
		switch k.Str {
		case "input_tokens":
			dst.InputTokens = int(v.Int())
		case "output_tokens":
			dst.OutputTokens = int(v.Int())
		case "cache_read_input_tokens":
			dst.CacheReadInputTokens = int(v.Int())
		case "cache_creation_input_tokens":
			dst.CacheCreationInputTokens = int(v.Int())
		}
		return true
	})
	return true
}

// readOpenAIUsage reads an OpenAI usage object.
func readOpenAIUsage(u gjson.Result) (llm.Tokens, bool) {
	if !u.IsObject() {
		return llm.Tokens{}, false
	}
	var t llm.Tokens
	u.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "prompt_tokens":
			t.Prompt = int(v.Int())
		case "completion_tokens":
			t.Completion = int(v.Int())
		case "prompt_tokens_details":
			t.CachedRead = int(v.Get("cached_tokens").Int())
			t.CacheWrite = int(v.Get("cache_creation_tokens").Int())
		case "completion_tokens_details":
			t.Reasoning = int(v.Get("reasoning_tokens").Int())
		}
		return true
	})
	return t, true
}

// marshal encodes v as compact JSON without encoding/json's HTML escaping,
// so text, tool arguments and schemas keep the bytes the client sent.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}
