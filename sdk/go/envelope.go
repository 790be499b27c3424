package portcullis

import (
	"bytes"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Envelope is an input envelope (sdk/ABI.md §3), read in place: its
// bytes, and the strings and results read from it, are valid during the
// handler call only (copy what you keep, e.g. strings.Clone).
type Envelope struct {
	raw  []byte
	root gjson.Result
	// f holds the top-level members the accessors read, found in one
	// pass on first use (each gjson Get would scan from the start).
	f       [numFields]gjson.Result
	indexed bool
}

// The top-level members the accessors read.
const (
	fID = iota
	fEndpoint
	fModel
	fPath
	fHeaders
	fPrincipal
	fTags
	fModels
	fPromptChars
	fCost
	fBody
	fStatus
	fIndex
	fEvent
	fData
	fState
	fEvents
	fComplete
	numFields
)

var fieldNames = [numFields]string{"id", "endpoint", "model", "path", "headers", "principal", "tags", "models",
	"prompt_chars", "estimated_cost_usd", "body", "status", "index", "event", "data", "state", "events", "complete"}

func newEnvelope(b []byte) Envelope {
	return Envelope{raw: b, root: gjson.Parse(unsafe.String(unsafe.SliceData(b), len(b)))}
}

// field returns a top-level member.
func (e *Envelope) field(i int) gjson.Result {
	if !e.indexed {
		e.indexed = true
		e.index()
	}
	return e.f[i]
}

// index finds the top-level members in one pass. It stops at "body" or
// "data": the host writes them last (sdk/ABI.md §3), so the request body
// is never scanned unless the handler reads it.
func (e *Envelope) index() {
	b := e.raw
	end := bytes.LastIndexByte(b, '}')
	i := skipWS(b, 0)
	if end < 0 || i >= end || b[i] != '{' {
		return
	}
	i++
	for {
		i = skipWS(b, i)
		if i >= end || b[i] != '"' {
			return
		}
		k := strEnd(b, i+1)
		if k < 0 {
			return
		}
		key := b[i+1 : k]
		i = skipWS(b, k+1)
		if i >= end || b[i] != ':' {
			return
		}
		i = skipWS(b, i+1)
		j := -1
		for n, name := range fieldNames {
			if string(key) == name {
				j = n
				break
			}
		}
		if j == fBody || j == fData {
			v := bytes.TrimRight(b[i:end], " \t\r\n")
			e.f[j] = gjson.Parse(unsafe.String(unsafe.SliceData(v), len(v)))
			return
		}
		ve := skipValue(b, i, end)
		if ve < 0 {
			return
		}
		if j >= 0 {
			e.f[j] = gjson.Parse(unsafe.String(&b[i], ve-i))
		}
		i = skipWS(b, ve)
		if i >= end || b[i] != ',' {
			return
		}
		i++
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// strEnd returns the index of the quote closing a string whose text
// starts at i, or -1.
func strEnd(b []byte, i int) int {
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return -1
		}
		q += i
		// an escaped quote has an odd number of backslashes before it
		n := 0
		for p := q - 1; p >= i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		i = q + 1
	}
}

// skipValue returns the end of the value starting at i, or -1.
func skipValue(b []byte, i, end int) int {
	depth := 0
	for i < end {
		switch c := b[i]; c {
		case '"':
			q := strEnd(b, i+1)
			if q < 0 {
				return -1
			}
			i = q + 1
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return i
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	if depth == 0 {
		return i
	}
	return -1
}

// Field returns a top-level member by its exact name (no gjson path
// syntax), e.g. a field newer than this SDK.
func (e *Envelope) Field(name string) gjson.Result {
	for i, n := range fieldNames {
		if n == name {
			return e.field(i)
		}
	}
	var out gjson.Result
	e.root.ForEach(func(k, v gjson.Result) bool {
		if k.Str == name {
			out = v
			return false
		}
		return true
	})
	return out
}

// Raw returns the envelope's JSON (decode it with encoding/json into the
// *Envelope types of this package if you prefer structs).
func (e *Envelope) Raw() []byte { return e.raw }

// Get reads any field by gjson path ("body.messages.0.content").
func (e *Envelope) Get(path string) gjson.Result { return e.root.Get(path) }

// ID is the gateway's request id.
func (e *Envelope) ID() string { return e.field(fID).Str }

// Endpoint is chat, completions, embeddings or messages.
func (e *Envelope) Endpoint() string { return e.field(fEndpoint).Str }

// Model is the model the client asked for.
func (e *Envelope) Model() string { return e.field(fModel).Str }

func (e *Envelope) stringList(key int) []string {
	var out []string
	e.field(key).ForEach(func(_, v gjson.Result) bool {
		out = append(out, v.Str)
		return true
	})
	return out
}

func (e *Envelope) listHas(key int, s string) bool {
	found := false
	e.field(key).ForEach(func(_, v gjson.Result) bool {
		found = v.Type == gjson.String && v.Str == s
		return !found
	})
	return found
}

// Request is the on_request envelope.
type Request struct{ Envelope }

// Path is the endpoint path ("/v1/chat/completions").
func (r *Request) Path() string { return r.field(fPath).Str }

// Header returns a request header's value; name must be lower-case.
// Credentials (authorization, x-api-key, ...) are never present.
func (r *Request) Header(name string) (string, bool) {
	var v string
	var ok bool
	r.field(fHeaders).ForEach(func(k, val gjson.Result) bool {
		if k.Str == name {
			v, ok = val.Str, true
			return false
		}
		return true
	})
	return v, ok
}

// Headers returns all request headers (lower-cased names).
func (r *Request) Headers() map[string]string {
	m := map[string]string{}
	r.field(fHeaders).ForEach(func(k, v gjson.Result) bool {
		m[k.Str] = v.Str
		return true
	})
	return m
}

// KeyAlias, TeamID and UserID identify the caller.
func (r *Request) KeyAlias() string { return r.field(fPrincipal).Get("key_alias").Str }
func (r *Request) TeamID() string   { return r.field(fPrincipal).Get("team_id").Str }
func (r *Request) UserID() string   { return r.field(fPrincipal).Get("user_id").Str }

// Tags are the request's routing tags.
func (r *Request) Tags() []string { return r.stringList(fTags) }

// HasTag reports whether the request carries tag t.
func (r *Request) HasTag(t string) bool { return r.listHas(fTags, t) }

// Models are the model groups the gateway serves (route targets).
func (r *Request) Models() []string { return r.stringList(fModels) }

// HasModel reports whether the gateway serves model group m.
func (r *Request) HasModel(m string) bool { return r.listHas(fModels, m) }

// PromptChars counts the characters of message text (0 when absent).
func (r *Request) PromptChars() int { return int(r.field(fPromptChars).Int()) }

// EstimatedCostUSD is the most the request can cost on its model group,
// when the gateway knows the price.
func (r *Request) EstimatedCostUSD() (float64, bool) {
	v := r.field(fCost)
	return v.Num, v.Type == gjson.Number
}

// Body is the request body as the client sent it (OpenAI or Anthropic
// JSON); Body().Raw is its text.
func (r *Request) Body() gjson.Result { return r.field(fBody) }

// Response is the on_response envelope.
type Response struct{ Envelope }

// Status is the response's HTTP status.
func (r *Response) Status() int { return int(r.field(fStatus).Int()) }

// Body is the response body in the client's wire format.
func (r *Response) Body() gjson.Result { return r.field(fBody) }

// StreamEvent is the on_stream_event envelope.
type StreamEvent struct{ Envelope }

// Index is the event's 0-based number.
func (e *StreamEvent) Index() int { return int(e.field(fIndex).Int()) }

// Event is the SSE event name ("" for data-only events, as OpenAI's).
func (e *StreamEvent) Event() string { return e.field(fEvent).Str }

// Data is the event's data: JSON, or a string ("[DONE]").
func (e *StreamEvent) Data() gjson.Result { return e.field(fData) }

// Done reports OpenAI's terminal "[DONE]" event.
func (e *StreamEvent) Done() bool {
	d := e.field(fData)
	return d.Type == gjson.String && d.Str == "[DONE]"
}

// State is what the plugin returned as state for the previous event.
func (e *StreamEvent) State() string { return e.field(fState).Str }

// StreamEnd is the on_stream_end envelope.
type StreamEnd struct{ Envelope }

// Events is the number of events the stream had.
func (e *StreamEnd) Events() int { return int(e.field(fEvents).Int()) }

// Complete is false when the stream was cut.
func (e *StreamEnd) Complete() bool { return e.field(fComplete).Bool() }

// State is the state returned with the last event.
func (e *StreamEnd) State() string { return e.field(fState).Str }

// The envelope types, for plugins that decode envelopes with
// encoding/json (json.Unmarshal(r.Raw(), &env)).

// Principal identifies the caller.
type Principal struct {
	KeyAlias string `json:"key_alias"`
	TeamID   string `json:"team_id"`
	UserID   string `json:"user_id"`
}

// RequestEnvelope is on_request's input.
type RequestEnvelope struct {
	V                int               `json:"v"`
	Hook             string            `json:"hook"`
	ID               string            `json:"id"`
	Endpoint         string            `json:"endpoint"`
	Path             string            `json:"path"`
	Model            string            `json:"model"`
	Headers          map[string]string `json:"headers"`
	Principal        Principal         `json:"principal"`
	Tags             []string          `json:"tags"`
	Models           []string          `json:"models"`
	PromptChars      int               `json:"prompt_chars"`
	EstimatedCostUSD *float64          `json:"estimated_cost_usd,omitempty"`
	Body             RawJSON           `json:"body"`
}

// ResponseEnvelope is on_response's input.
type ResponseEnvelope struct {
	V        int     `json:"v"`
	Hook     string  `json:"hook"`
	ID       string  `json:"id"`
	Endpoint string  `json:"endpoint"`
	Model    string  `json:"model"`
	Status   int     `json:"status"`
	Body     RawJSON `json:"body"`
}

// StreamEventEnvelope is on_stream_event's input.
type StreamEventEnvelope struct {
	V        int     `json:"v"`
	Hook     string  `json:"hook"`
	ID       string  `json:"id"`
	Endpoint string  `json:"endpoint"`
	Model    string  `json:"model"`
	Index    int     `json:"index"`
	Event    string  `json:"event,omitempty"`
	Data     RawJSON `json:"data"`
	State    string  `json:"state,omitempty"`
}

// StreamEndEnvelope is on_stream_end's input.
type StreamEndEnvelope struct {
	V        int    `json:"v"`
	Hook     string `json:"hook"`
	ID       string `json:"id"`
	Endpoint string `json:"endpoint"`
	Model    string `json:"model"`
	Events   int    `json:"events"`
	Complete bool   `json:"complete"`
	State    string `json:"state,omitempty"`
}

// RawJSON is a JSON value kept as text (like encoding/json.RawMessage,
// without importing encoding/json into every plugin).
type RawJSON []byte

// MarshalJSON returns the value itself.
func (m RawJSON) MarshalJSON() ([]byte, error) {
	if len(m) == 0 {
		return []byte("null"), nil
	}
	return m, nil
}

// UnmarshalJSON keeps a copy of the value.
func (m *RawJSON) UnmarshalJSON(b []byte) error {
	*m = append((*m)[:0], b...)
	return nil
}

// Parse reads JSON the handler has (its config, a body it builds) with
// gjson, the library the accessors use.
func Parse(json []byte) gjson.Result { return gjson.ParseBytes(json) }
