package wasm

import (
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/sys"
)

// Failure reasons: the "reason" label of portcullis_plugin_errors_total.
const (
	ReasonTrap        = "trap"             // a trap: unreachable, out-of-bounds access, a Go or Rust panic
	ReasonTimeout     = "timeout"          // the hook ran past its deadline
	ReasonExit        = "exit"             // the guest called proc_exit
	ReasonMemory      = "memory"           // a trap with memory grown to the plugin's limit
	ReasonAlloc       = "alloc"            // gw_alloc returned 0 or a buffer outside memory
	ReasonTooLarge    = "result_too_large" // a result over 1 MiB
	ReasonBadResult   = "bad_result"       // not a JSON object of the result schema, or outside memory
	ReasonBadAction   = "bad_action"       // an unknown action, or one the hook may not return
	ReasonBadRoute    = "bad_route"        // a route to a model or deployment the gateway does not serve
	ReasonBadPatch    = "bad_patch"        // a patch that does not apply
	ReasonState       = "state_too_large"  // a stream state over 4 KiB
	ReasonPluginError = "plugin_error"     // the plugin returned action "error"
	ReasonBusy        = "busy"             // no instance became free before the deadline
	ReasonInstantiate = "instantiate"      // a new instance failed to start (or its on_config failed)
	ReasonClosed      = "closed"           // the stage was closed
)

// Failure is a plugin failure (sdk/ABI.md §5): the instance that produced
// it is discarded and the plugin's failure policy applies.
type Failure struct {
	Plugin string
	Hook   Hook
	Reason string
	Msg    string
	cause  error
}

func (f *Failure) Error() string {
	s := fmt.Sprintf("plugin %s: %s: %s", f.Plugin, f.Hook, f.Reason)
	if f.Msg != "" {
		s += ": " + f.Msg
	}
	if f.cause != nil {
		s += ": " + f.cause.Error()
	}
	return s
}

// Unwrap returns the underlying wazero error, if any.
func (f *Failure) Unwrap() error { return f.cause }

// ReasonOf returns the failure reason of err, or "" when err is not a
// *Failure.
func ReasonOf(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Reason
	}
	return ""
}

// exitReason classifies an error returned by a guest call.
func exitReason(err error, timedOut bool) string {
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			return ReasonTimeout
		}
		return ReasonExit
	}
	if timedOut {
		return ReasonTimeout
	}
	return ReasonTrap
}
