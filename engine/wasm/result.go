package wasm

import (
	"encoding/json"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/provider"
)

// Limits of sdk/ABI.md.
const (
	maxResult = 1 << 20 // a result document
	maxState  = 4 << 10 // a stream state
	maxLogLen = 4 << 10 // one log line
)

// Result is a hook's result document (sdk/ABI.md §4), decoded and
// validated. Fields the host does not know are ignored.
type Result struct {
	Action        string            `json:"action"`
	Route         *RouteResult      `json:"route"`
	Reject        *RejectResult     `json:"reject"`
	Respond       *RespondResult    `json:"respond"`
	Error         string            `json:"error"`
	SetHeaders    map[string]string `json:"set_headers"`
	RemoveHeaders []string          `json:"remove_headers"`
	Patch         json.RawMessage   `json:"patch"`
	Drop          bool              `json:"drop"`
	Insert        []InsertEvent     `json:"insert"`
	Redactions    []Redaction       `json:"redactions"`
	Labels        []string          `json:"labels"`
	State         json.RawMessage   `json:"state"`
	Log           string            `json:"log"`
	// Hooks, from on_config only, narrows the hooks the plugin is called
	// for (SDKs that export every hook name the ones they handle).
	Hooks []string `json:"hooks"`

	ops    []patchOp
	patchV gjson.Result
}

// patchOp is one RFC 6902 operation, decoded for the fast path.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  string          `json:"from"`
	Value json.RawMessage `json:"value"`
}

// RouteResult is the route of action "route".
type RouteResult struct {
	Model      string    `json:"model"`
	Deployment string    `json:"deployment"`
	Fallbacks  *[]string `json:"fallbacks"`
}

// RejectResult is the error of action "reject".
type RejectResult struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// RespondResult is the answer of action "respond".
type RespondResult struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

// InsertEvent is an SSE event emitted before the current one.
type InsertEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// Redaction records what a plugin redacted, for the audit log.
type Redaction struct {
	Path  string `json:"path"`
	Kind  string `json:"kind"`
	Count int    `json:"count"`
}

// resultError is a validation failure: a reason and a message.
type resultError struct {
	reason, msg string
}

func (e *resultError) Error() string { return e.reason + ": " + e.msg }

func bad(reason, msg string) *resultError { return &resultError{reason, msg} }

// DecodeResult decodes and validates a result document returned by hook.
// It checks everything that does not depend on the gateway's state (the
// configured models are checked by the stage). The error is a
// *Failure-compatible reason and message.
func DecodeResult(h Hook, raw []byte) (*Result, error) {
	r, e := decodeResult(h, raw)
	if e != nil {
		return nil, e
	}
	return r, nil
}

func decodeResult(h Hook, raw []byte) (*Result, *resultError) {
	if !gjson.ValidBytes(raw) {
		return nil, bad(ReasonBadResult, "the result is not valid JSON")
	}
	root := gjson.ParseBytes(raw)
	if !root.IsObject() {
		return nil, bad(ReasonBadResult, "the result is not a JSON object")
	}
	r := &Result{}
	if e := r.read(root); e != nil {
		return nil, e
	}
	switch r.Action {
	case "", "continue":
		r.Action = "continue"
	case "route":
		if h != HookRequest {
			return nil, bad(ReasonBadAction, `action "route" is for on_request only`)
		}
		if r.Route == nil || r.Route.Model == "" {
			return nil, bad(ReasonBadResult, `action "route" without route.model`)
		}
	case "reject":
		if h == HookConfig {
			return nil, bad(ReasonBadAction, `action "reject" in on_config`)
		}
		if r.Reject == nil {
			r.Reject = &RejectResult{}
		}
		if r.Reject.Status == 0 {
			r.Reject.Status = 403
		}
		if r.Reject.Status < 400 || r.Reject.Status > 599 {
			return nil, bad(ReasonBadResult, "reject.status must be 400-599")
		}
		if r.Reject.Code == "" {
			r.Reject.Code = "blocked_by_plugin"
		}
	case "respond":
		if h != HookRequest {
			return nil, bad(ReasonBadAction, `action "respond" is for on_request only`)
		}
		if r.Respond == nil || len(r.Respond.Body) == 0 || string(r.Respond.Body) == "null" {
			return nil, bad(ReasonBadResult, `action "respond" without respond.body`)
		}
		if r.Respond.Status == 0 {
			r.Respond.Status = 200
		}
		if r.Respond.Status < 200 || r.Respond.Status > 599 {
			return nil, bad(ReasonBadResult, "respond.status must be 200-599")
		}
	case "error":
		msg := r.Error
		if msg == "" {
			msg = "the plugin reported an error"
		}
		return nil, bad(ReasonPluginError, msg)
	default:
		return nil, bad(ReasonBadAction, "unknown action "+strconvQuote(r.Action))
	}
	// Fields that do not apply to the hook (a patch at on_stream_end,
	// insert at on_request) are ignored, like unknown fields.
	if len(r.Patch) > 0 && string(r.Patch) != "null" && (h == HookRequest || h == HookResponse || h == HookStreamEvent) {
		if e := r.readPatch(); e != nil {
			return nil, e
		}
		for _, op := range r.ops {
			switch op.Op {
			case "add", "replace", "test":
				if op.Value == nil {
					return nil, bad(ReasonBadPatch, op.Op+" without a value")
				}
			case "remove", "move", "copy":
			default:
				return nil, bad(ReasonBadPatch, "unknown operation "+strconvQuote(op.Op))
			}
		}
	}
	for k, v := range r.SetHeaders {
		if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			return nil, bad(ReasonBadResult, "invalid header "+strconvQuote(k))
		}
	}
	for _, k := range r.RemoveHeaders {
		if !validHeaderName(k) {
			return nil, bad(ReasonBadResult, "invalid header name "+strconvQuote(k))
		}
	}
	if h != HookStreamEvent && h != HookStreamEnd {
		r.Insert = nil
	}
	if len(r.Insert) > 0 {
		for i := range r.Insert {
			ev := &r.Insert[i]
			if strings.ContainsAny(ev.Event, "\r\n") {
				return nil, bad(ReasonBadResult, "insert: an event name with a line break")
			}
			if len(ev.Data) == 0 {
				return nil, bad(ReasonBadResult, "insert: an event without data")
			}
		}
	}
	if len(r.State) > maxState {
		return nil, bad(ReasonState, "state over 4 KiB")
	}
	if string(r.State) == "null" || string(r.State) == `""` {
		r.State = nil
	}
	for _, n := range r.Hooks {
		if hk, ok := ParseHook(n); !ok || hk == HookConfig {
			return nil, bad(ReasonBadResult, "hooks: unknown hook "+strconvQuote(n))
		}
	}
	if len(r.Log) > maxLogLen {
		r.Log = r.Log[:maxLogLen]
	}
	return r, nil
}

// applyPatch applies r's patch to doc and returns the new document (doc
// itself when there is no patch). doc is never modified.
func (r *Result) applyPatch(doc []byte) ([]byte, *resultError) {
	if len(r.ops) == 0 {
		return doc, nil
	}
	if out, ok := fastPatch(doc, r.ops); ok {
		return out, nil
	}
	p, err := jsonpatch.DecodePatch(r.Patch)
	if err == nil {
		var out []byte
		if out, err = p.ApplyWithOptions(doc, patchOptions); err == nil {
			return out, nil
		}
	}
	return nil, bad(ReasonBadPatch, err.Error())
}

var patchOptions = func() *jsonpatch.ApplyOptions {
	o := jsonpatch.NewApplyOptions()
	o.EscapeHTML = false
	// A "copy" may not grow the document by more than a result's size.
	o.AccumulatedCopySizeLimit = maxResult
	return o
}()

func validHeaderName(k string) bool { return len(k) <= 256 && provider.ValidHeaderName(k) }

// deniedHeaders are never changed by a plugin (credentials and framing).
var deniedHeaders = []string{
	"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie", "x-goog-api-key",
	"host", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
	"upgrade", "te", "trailer", "proxy-connection",
}

func deniedHeader(k string) bool {
	for _, d := range deniedHeaders {
		if strings.EqualFold(k, d) {
			return true
		}
	}
	return false
}

func strconvQuote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// read fills r from a result object. gjson is used rather than
// encoding/json: a result is decoded on every call, stream events
// included, and reflection-based decoding cost several microseconds.
// Types are checked as strictly as encoding/json would.
func (r *Result) read(root gjson.Result) *resultError {
	var e *resultError
	wrong := func(field, want string) bool {
		e = bad(ReasonBadResult, field+": want "+want)
		return false
	}
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "action":
			if v.Type != gjson.String {
				return wrong("action", "a string")
			}
			r.Action = v.Str
		case "route":
			if isNull(v) {
				return true
			}
			if !v.IsObject() {
				return wrong("route", "an object")
			}
			rt := &RouteResult{}
			ok := str(v.Get("model"), &rt.Model) && str(v.Get("deployment"), &rt.Deployment)
			if f := v.Get("fallbacks"); ok && f.Exists() && !isNull(f) {
				fs := []string{}
				ok = strs(f, &fs)
				rt.Fallbacks = &fs
			}
			if !ok {
				return wrong("route", "model, deployment (strings) and fallbacks (strings)")
			}
			r.Route = rt
		case "reject":
			if isNull(v) {
				return true
			}
			rj := &RejectResult{}
			if !v.IsObject() || !num(v.Get("status"), &rj.Status) || !str(v.Get("code"), &rj.Code) || !str(v.Get("message"), &rj.Message) {
				return wrong("reject", "an object of status, code and message")
			}
			r.Reject = rj
		case "respond":
			if isNull(v) {
				return true
			}
			rs := &RespondResult{}
			if !v.IsObject() || !num(v.Get("status"), &rs.Status) {
				return wrong("respond", "an object of status and body")
			}
			if b := v.Get("body"); b.Exists() {
				rs.Body = json.RawMessage(b.Raw)
			}
			r.Respond = rs
		case "error":
			if !str(v, &r.Error) {
				return wrong("error", "a string")
			}
		case "set_headers":
			if isNull(v) {
				return true
			}
			if !v.IsObject() {
				return wrong("set_headers", "an object of strings")
			}
			r.SetHeaders = map[string]string{}
			ok := true
			v.ForEach(func(hk, hv gjson.Result) bool {
				if hv.Type != gjson.String {
					ok = false
					return false
				}
				r.SetHeaders[hk.Str] = hv.Str
				return true
			})
			if !ok {
				return wrong("set_headers", "an object of strings")
			}
		case "remove_headers":
			if !strs(v, &r.RemoveHeaders) {
				return wrong("remove_headers", "an array of strings")
			}
		case "labels":
			if !strs(v, &r.Labels) {
				return wrong("labels", "an array of strings")
			}
		case "hooks":
			if !strs(v, &r.Hooks) {
				return wrong("hooks", "an array of strings")
			}
		case "patch":
			r.Patch = json.RawMessage(v.Raw)
			r.patchV = v
		case "drop":
			switch v.Type {
			case gjson.True:
				r.Drop = true
			case gjson.False, gjson.Null:
			default:
				return wrong("drop", "a boolean")
			}
		case "insert":
			if isNull(v) {
				return true
			}
			if !v.IsArray() {
				return wrong("insert", "an array of events")
			}
			ok := true
			v.ForEach(func(_, ev gjson.Result) bool {
				var ie InsertEvent
				if !ev.IsObject() || !str(ev.Get("event"), &ie.Event) {
					ok = false
					return false
				}
				if d := ev.Get("data"); d.Exists() {
					ie.Data = json.RawMessage(d.Raw)
				}
				r.Insert = append(r.Insert, ie)
				return true
			})
			if !ok {
				return wrong("insert", "an array of {event, data}")
			}
		case "redactions":
			if isNull(v) {
				return true
			}
			if !v.IsArray() {
				return wrong("redactions", "an array")
			}
			ok := true
			v.ForEach(func(_, rv gjson.Result) bool {
				var rd Redaction
				if !rv.IsObject() || !str(rv.Get("path"), &rd.Path) || !str(rv.Get("kind"), &rd.Kind) || !num(rv.Get("count"), &rd.Count) {
					ok = false
					return false
				}
				r.Redactions = append(r.Redactions, rd)
				return true
			})
			if !ok {
				return wrong("redactions", "an array of {path, kind, count}")
			}
		case "state":
			if !isNull(v) {
				r.State = json.RawMessage(v.Raw)
			}
		case "log":
			if !str(v, &r.Log) {
				return wrong("log", "a string")
			}
		}
		return true
	})
	return e
}

// readPatch decodes the patch operations.
func (r *Result) readPatch() *resultError {
	v := r.patchV
	if !v.IsArray() {
		return bad(ReasonBadPatch, "patch: want an array of operations")
	}
	ok := true
	v.ForEach(func(_, o gjson.Result) bool {
		var op patchOp
		if !o.IsObject() || !str(o.Get("op"), &op.Op) || !str(o.Get("path"), &op.Path) || !str(o.Get("from"), &op.From) {
			ok = false
			return false
		}
		if val := o.Get("value"); val.Exists() {
			op.Value = json.RawMessage(val.Raw)
		}
		r.ops = append(r.ops, op)
		return true
	})
	if !ok {
		return bad(ReasonBadPatch, "patch: want an array of {op, path, from, value}")
	}
	return nil
}

func isNull(v gjson.Result) bool { return v.Type == gjson.Null }

// str reads an optional string (absent and null leave dst as is).
func str(v gjson.Result, dst *string) bool {
	switch v.Type {
	case gjson.String:
		*dst = v.Str
	case gjson.Null:
	default:
		return false
	}
	return true
}

// num reads an optional integer.
func num(v gjson.Result, dst *int) bool {
	switch v.Type {
	case gjson.Number:
		if v.Num != float64(int(v.Num)) {
			return false
		}
		*dst = int(v.Num)
	case gjson.Null:
	default:
		return false
	}
	return true
}

// strs reads an optional array of strings.
func strs(v gjson.Result, dst *[]string) bool {
	switch {
	case v.Type == gjson.Null:
		return true
	case !v.IsArray():
		return false
	}
	ok := true
	v.ForEach(func(_, s gjson.Result) bool {
		if s.Type != gjson.String {
			ok = false
			return false
		}
		*dst = append(*dst, s.Str)
		return true
	})
	return ok
}
