package wasm

// Hook names one of the ABI's guest exports (sdk/ABI.md §1).
type Hook uint8

// The hooks of ABI v1.
const (
	HookConfig Hook = iota
	HookRequest
	HookResponse
	HookStreamEvent
	HookStreamEnd
	numHooks
)

var hookNames = [numHooks]string{"on_config", "on_request", "on_response", "on_stream_event", "on_stream_end"}

// String returns the hook's config and envelope name ("on_request").
func (h Hook) String() string {
	if h < numHooks {
		return hookNames[h]
	}
	return "unknown"
}

// Export returns the hook's export name ("gw_on_request").
func (h Hook) Export() string { return "gw_" + h.String() }

// ParseHook reads a hook name as written in config and envelopes.
func ParseHook(s string) (Hook, bool) {
	for i, n := range hookNames {
		if n == s {
			return Hook(i), true
		}
	}
	return 0, false
}

// hookSet is a set of hooks, one bit each.
type hookSet uint8

func (s hookSet) has(h Hook) bool { return s&(1<<h) != 0 }
func (s *hookSet) add(h Hook)     { *s |= 1 << h }

// names lists the hooks in s, on_config excluded.
func (s hookSet) names() []string {
	var out []string
	for h := HookRequest; h < numHooks; h++ {
		if s.has(h) {
			out = append(out, h.String())
		}
	}
	return out
}
