// Package portcullis is the Go SDK for Portcullis plugins: WebAssembly
// modules that the gateway runs on its request path (gw ABI v1, see
// sdk/ABI.md in the Portcullis repository).
//
// A plugin is a Go main package built as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o plugin.wasm .
//
// It registers its handlers from init (main is never called in a
// reactor):
//
//	func init() {
//		portcullis.OnRequest(func(r *portcullis.Request) *portcullis.Result {
//			if r.HasTag("batch") && r.HasModel("gpt-4o-mini") {
//				return portcullis.Route("gpt-4o-mini")
//			}
//			return nil // continue, no changes
//		})
//	}
//
//	func main() {}
//
// The SDK exports every hook of the ABI (a Go module cannot choose its
// exports at build time), and tells the host at on_config which hooks
// have handlers, so the gateway calls only those. The host-side
// `hooks:` setting narrows them further.
//
// Envelopes are read lazily with gjson: nothing is decoded that the
// handler does not ask for. Results are encoded by appending bytes, so a
// plugin needs neither encoding/json nor reflection (both work, at the
// cost of a larger module and slower calls).
package portcullis

// Hook names, as in envelopes and the gateway's `hooks:` setting.
const (
	HookConfig      = "on_config"
	HookRequest     = "on_request"
	HookResponse    = "on_response"
	HookStreamEvent = "on_stream_event"
	HookStreamEnd   = "on_stream_end"
)

var (
	onConfig      func(config []byte) error
	onRequest     func(*Request) *Result
	onResponse    func(*Response) *Result
	onStreamEvent func(*StreamEvent) *Result
	onStreamEnd   func(*StreamEnd) *Result
	config        []byte
)

// OnConfig registers the config handler, called once per instance with
// the plugin's config (JSON; "null" when none). An error refuses the
// config: the gateway does not load the plugin.
func OnConfig(f func(config []byte) error) { onConfig = f }

// OnRequest registers the on_request handler.
func OnRequest(f func(*Request) *Result) { onRequest = f }

// OnResponse registers the on_response handler (non-streamed responses).
func OnResponse(f func(*Response) *Result) { onResponse = f }

// OnStreamEvent registers the on_stream_event handler (each SSE event).
func OnStreamEvent(f func(*StreamEvent) *Result) { onStreamEvent = f }

// OnStreamEnd registers the on_stream_end handler.
func OnStreamEnd(f func(*StreamEnd) *Result) { onStreamEnd = f }

// Config returns the config the instance got at on_config.
func Config() []byte { return config }

// Handled lists the hooks that have a handler.
func Handled() []string {
	var hs []string
	for _, h := range []struct {
		name string
		set  bool
	}{{HookRequest, onRequest != nil}, {HookResponse, onResponse != nil},
		{HookStreamEvent, onStreamEvent != nil}, {HookStreamEnd, onStreamEnd != nil}} {
		if h.set {
			hs = append(hs, h.name)
		}
	}
	return hs
}

// Dispatch runs the handler for hook with an input envelope and returns
// the result document (nil: continue, no changes). The wasm exports call
// it; tests call it directly, natively, with envelopes from files:
//
//	out := portcullis.Dispatch(portcullis.HookRequest, envelope)
//
// A handler's panic becomes an "error" result.
func Dispatch(hook string, envelope []byte) []byte {
	return dispatch(hook, append([]byte(nil), envelope...), nil)
}

// dispatch runs a hook, appending the result to dst; envelope must stay
// unchanged during the call (the envelope accessors read it in place).
func dispatch(hook string, envelope, dst []byte) (out []byte) {
	defer func() {
		if p := recover(); p != nil {
			out = Error("panic: " + panicText(p)).AppendJSON(dst[:0])
		}
	}()
	var r *Result
	switch hook {
	case HookConfig:
		config = append([]byte(nil), envelope...)
		if onConfig != nil {
			if err := onConfig(config); err != nil {
				return Error(err.Error()).AppendJSON(dst)
			}
		}
		// Tell the host which hooks this plugin handles.
		b := append(dst, `{"hooks":[`...)
		for i, h := range Handled() {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, h)
		}
		return append(b, "]}"...)
	case HookRequest:
		if onRequest != nil {
			r = onRequest(&Request{newEnvelope(envelope)})
		}
	case HookResponse:
		if onResponse != nil {
			r = onResponse(&Response{newEnvelope(envelope)})
		}
	case HookStreamEvent:
		if onStreamEvent != nil {
			r = onStreamEvent(&StreamEvent{newEnvelope(envelope)})
		}
	case HookStreamEnd:
		if onStreamEnd != nil {
			r = onStreamEnd(&StreamEnd{newEnvelope(envelope)})
		}
	}
	if r == nil {
		return nil
	}
	return r.AppendJSON(dst)
}

// panicText describes a recovered panic without fmt (which would double
// the module's size).
func panicText(p any) string {
	switch v := p.(type) {
	case string:
		return v
	case error:
		return v.Error()
	case interface{ String() string }:
		return v.String()
	}
	return "non-error value"
}
