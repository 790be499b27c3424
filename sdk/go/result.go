package portcullis

import (
	"strconv"
)

// Result is a hook's result document (sdk/ABI.md §4), built with the
// constructors and chained setters:
//
//	return portcullis.Continue().ReplaceString("/messages/0/content", clean).Label("pii:email")
//
// A nil *Result means continue with no changes.
type Result struct {
	action     string
	model      string
	deployment string
	fallbacks  []string
	hasFalls   bool
	status     int
	code       string
	message    string
	body       []byte
	setHeaders [][2]string
	rmHeaders  []string
	patch      []byte // comma-separated operations
	drop       bool
	insert     []byte // comma-separated events
	redactions []byte
	labels     []string
	state      *string
	log        string
}

// Continue goes on, applying whatever changes are set on the result.
func Continue() *Result { return &Result{action: "continue"} }

// Route routes the request to a configured model group (on_request).
func Route(model string) *Result { return &Result{action: "route", model: model} }

// Reject answers the client with an error in its wire format: status
// 400-599 (0: 403), code (empty: blocked_by_plugin) and message.
func Reject(status int, code, message string) *Result {
	return &Result{action: "reject", status: status, code: code, message: message}
}

// Respond answers the client with body (JSON in the client's wire
// format) without calling the upstream (on_request, non-streaming only).
func Respond(status int, body []byte) *Result {
	return &Result{action: "respond", status: status, body: body}
}

// Error fails deliberately: the plugin's failure policy applies.
func Error(message string) *Result { return &Result{action: "error", message: message} }

// Fallbacks replaces the request's fallback model groups (with Route).
func (r *Result) Fallbacks(models ...string) *Result {
	r.fallbacks, r.hasFalls = models, true
	return r
}

// Deployment pins one deployment id of the routed group (with Route).
func (r *Result) Deployment(id string) *Result { r.deployment = id; return r }

// SetHeader sets an upstream request header (on_request) or a client
// response header (on_response). Credential and framing headers are
// ignored by the host.
func (r *Result) SetHeader(name, value string) *Result {
	r.setHeaders = append(r.setHeaders, [2]string{name, value})
	return r
}

// RemoveHeader removes a header.
func (r *Result) RemoveHeader(name string) *Result { r.rmHeaders = append(r.rmHeaders, name); return r }

// Patch adds an RFC 6902 operation whose value is raw JSON (nil for
// remove). Paths are relative to the body (on_request, on_response) or
// the event data (on_stream_event).
func (r *Result) Patch(op, path string, value []byte) *Result {
	if len(r.patch) > 0 {
		r.patch = append(r.patch, ',')
	}
	r.patch = append(r.patch, `{"op":`...)
	r.patch = appendString(r.patch, op)
	r.patch = append(r.patch, `,"path":`...)
	r.patch = appendString(r.patch, path)
	if value != nil {
		r.patch = append(r.patch, `,"value":`...)
		r.patch = append(r.patch, value...)
	}
	r.patch = append(r.patch, '}')
	return r
}

// ReplaceString replaces the value at path with the string s.
func (r *Result) ReplaceString(path, s string) *Result {
	return r.Patch("replace", path, appendString(nil, s))
}

// AddString adds (or replaces) the string s at path.
func (r *Result) AddString(path, s string) *Result { return r.Patch("add", path, appendString(nil, s)) }

// Remove removes the value at path.
func (r *Result) Remove(path string) *Result { return r.Patch("remove", path, nil) }

// Drop does not pass the current stream event on.
func (r *Result) Drop() *Result { r.drop = true; return r }

// Insert emits an SSE event before the current one (event "" for a
// data-only event); data is raw JSON, or a JSON string whose content is
// sent as is.
func (r *Result) Insert(event string, data []byte) *Result {
	if len(r.insert) > 0 {
		r.insert = append(r.insert, ',')
	}
	r.insert = append(r.insert, '{')
	if event != "" {
		r.insert = append(r.insert, `"event":`...)
		r.insert = appendString(r.insert, event)
		r.insert = append(r.insert, ',')
	}
	r.insert = append(r.insert, `"data":`...)
	r.insert = append(r.insert, data...)
	r.insert = append(r.insert, '}')
	return r
}

// Redacted records a redaction for the audit log.
func (r *Result) Redacted(path, kind string, count int) *Result {
	if len(r.redactions) > 0 {
		r.redactions = append(r.redactions, ',')
	}
	r.redactions = append(r.redactions, `{"path":`...)
	r.redactions = appendString(r.redactions, path)
	r.redactions = append(r.redactions, `,"kind":`...)
	r.redactions = appendString(r.redactions, kind)
	r.redactions = append(r.redactions, `,"count":`...)
	r.redactions = strconv.AppendInt(r.redactions, int64(count), 10)
	r.redactions = append(r.redactions, '}')
	return r
}

// Label adds a label for the spend record and the log line.
func (r *Result) Label(l string) *Result { r.labels = append(r.labels, l); return r }

// State sets the stream state handed back with the next event (at most
// 4 KiB).
func (r *Result) State(s string) *Result { r.state = &s; return r }

// Log adds a short note, logged at info level with the request id.
func (r *Result) Log(msg string) *Result { r.log = msg; return r }

// AppendJSON appends the result document to b.
func (r *Result) AppendJSON(b []byte) []byte {
	b = append(b, `{"action":`...)
	b = appendString(b, r.action)
	switch r.action {
	case "route":
		b = append(b, `,"route":{"model":`...)
		b = appendString(b, r.model)
		if r.deployment != "" {
			b = append(b, `,"deployment":`...)
			b = appendString(b, r.deployment)
		}
		if r.hasFalls {
			b = append(b, `,"fallbacks":`...)
			b = appendStrings(b, r.fallbacks)
		}
		b = append(b, '}')
	case "reject":
		b = append(b, `,"reject":{"status":`...)
		b = strconv.AppendInt(b, int64(r.status), 10)
		if r.code != "" {
			b = append(b, `,"code":`...)
			b = appendString(b, r.code)
		}
		b = append(b, `,"message":`...)
		b = appendString(b, r.message)
		b = append(b, '}')
	case "respond":
		b = append(b, `,"respond":{"status":`...)
		b = strconv.AppendInt(b, int64(r.status), 10)
		b = append(b, `,"body":`...)
		b = append(b, r.body...)
		b = append(b, '}')
	case "error":
		b = append(b, `,"error":`...)
		b = appendString(b, r.message)
	}
	if len(r.setHeaders) > 0 {
		b = append(b, `,"set_headers":{`...)
		for i, h := range r.setHeaders {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, h[0])
			b = append(b, ':')
			b = appendString(b, h[1])
		}
		b = append(b, '}')
	}
	if len(r.rmHeaders) > 0 {
		b = append(b, `,"remove_headers":`...)
		b = appendStrings(b, r.rmHeaders)
	}
	if len(r.patch) > 0 {
		b = append(b, `,"patch":[`...)
		b = append(b, r.patch...)
		b = append(b, ']')
	}
	if r.drop {
		b = append(b, `,"drop":true`...)
	}
	if len(r.insert) > 0 {
		b = append(b, `,"insert":[`...)
		b = append(b, r.insert...)
		b = append(b, ']')
	}
	if len(r.redactions) > 0 {
		b = append(b, `,"redactions":[`...)
		b = append(b, r.redactions...)
		b = append(b, ']')
	}
	if len(r.labels) > 0 {
		b = append(b, `,"labels":`...)
		b = appendStrings(b, r.labels)
	}
	if r.state != nil {
		b = append(b, `,"state":`...)
		b = appendString(b, *r.state)
	}
	if r.log != "" {
		b = append(b, `,"log":`...)
		b = appendString(b, r.log)
	}
	return append(b, '}')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
