// Package provider defines how Portcullis talks to an LLM provider.
//
// A provider is built once per deployment when a configuration snapshot is
// compiled (Factory), holds everything it needs precomputed (URL, auth
// header, shared HTTP client), and answers one call at a time with Chat.
// Optional capabilities (embeddings, legacy completions) are separate small
// interfaces discovered by type assertion, so a provider implements only what
// its API has.
//
// Adding a provider is a new package with a Factory and one Register call in
// engine/provider/all. Its wire format is private to it: a provider returns
// its response either in one of the dialects the gateway already translates
// (OpenAI chat, Anthropic messages) or in the canonical OpenAI chat shape.
package provider

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

// Provider serves chat calls.
type Provider interface {
	// Chat performs one chat call. A non-nil error is an *errs.Error whose
	// Retryable/Fallback fields tell the router what may follow.
	Chat(ctx context.Context, r *Request) (*Response, error)
}

// Embedder is implemented by providers with an embeddings API.
type Embedder interface {
	Embed(ctx context.Context, r *Request) (*Response, error)
}

// Completer is implemented by providers with the legacy completions API.
type Completer interface {
	Complete(ctx context.Context, r *Request) (*Response, error)
}

// Closer is implemented by providers that own resources.
type Closer interface{ Close() error }

// Headers reads request headers; *fasthttp.RequestHeader implements it.
type Headers interface {
	Peek(key string) []byte
}

// Request is one call as the provider sees it. Body is the inbound body in
// Dialect, read-only: providers that pass it through copy-and-edit it.
type Request struct {
	Dialect llm.Dialect
	Body    []byte
	// Model is the upstream model name to send (the deployment's model).
	Model string
	// Stream asks for an SSE response.
	Stream bool
	// Header reads inbound request headers, for the few a provider
	// forwards (anthropic-beta, anthropic-version). May be nil.
	Header Headers
	// Deadline bounds the whole call, stream included. Zero means none.
	Deadline time.Time
	// HeaderDeadline, for a stream, bounds the wait for the response
	// headers (the router's time-to-first-token deadline). Zero: Deadline.
	HeaderDeadline time.Time
	// SetHeaders and RemoveHeaders change the upstream request's headers
	// (set by policies and plugins); credentials and framing headers are
	// never changed this way.
	SetHeaders    [][2]string
	RemoveHeaders []string
	// Buf, when set, is room a provider may build the upstream body in
	// (appending to (*Buf)[:0] and storing the result back) instead of
	// allocating: it is reused once the call has returned.
	Buf *[]byte

	chat    *llm.ChatRequest
	chatErr error
}

// Chat returns the request decoded into the canonical chat shape, decoding
// it at most once. Pass-through providers never call it.
func (r *Request) Chat() (*llm.ChatRequest, error) {
	if r.chat != nil || r.chatErr != nil {
		return r.chat, r.chatErr
	}
	dec, ok := decoders[r.Dialect]
	if !ok {
		r.chatErr = errs.BadRequest(errs.CodeUnsupported, "", "this endpoint cannot be served by this provider")
		return nil, r.chatErr
	}
	r.chat, r.chatErr = dec(r.Body)
	return r.chat, r.chatErr
}

// SetChat installs an already-decoded canonical request (used when the
// gateway converted the request itself, e.g. completions served by chat).
func (r *Request) SetChat(c *llm.ChatRequest) { r.chat, r.chatErr = c, nil }

var decoders = map[llm.Dialect]func([]byte) (*llm.ChatRequest, error){}

// RegisterDecoder installs the function that turns a request body of dialect
// d into the canonical chat request. Called from init of translator
// packages; the set is fixed before any request runs.
func RegisterDecoder(d llm.Dialect, f func([]byte) (*llm.ChatRequest, error)) {
	decoders[d] = f
}

// Response is a provider's answer: a whole body or a stream, in Dialect.
type Response struct {
	Dialect llm.Dialect
	Status  int
	// Body is the non-streamed response body. It may alias memory owned by
	// the response; it is valid until Release.
	Body []byte
	// Stream is set for streamed responses; the consumer must Close it.
	Stream Stream
	// Usage is filled for non-streamed responses by the provider when it
	// already knows it; otherwise the gateway reads it from Body.
	Usage    llm.Tokens
	HasUsage bool
	buf      *[]byte // Body's pooled buffer (client.go)
}

// Release frees what the response holds. Safe to call more than once.
func (r *Response) Release() {
	if r == nil {
		return
	}
	if r.Stream != nil {
		_ = r.Stream.Close()
	}
	if r.buf != nil {
		if cap(*r.buf) <= 1<<20 {
			*r.buf = (*r.buf)[:0]
			bodyPool.Put(r.buf)
		}
		r.buf, r.Body = nil, nil
	}
}

// Stream yields SSE events from an upstream.
type Stream interface {
	// Next returns the next event; io.EOF at the natural end. The event's
	// slices are valid until the next call.
	Next() (sse.Event, error)
	// Close stops the stream and releases its connection; a stream closed
	// before its end cancels the upstream call. Safe to call twice.
	Close() error
}

// Waiter is implemented by streams that can wait for their next event
// without parsing it. The server calls Wait before Next from a shallow
// point of its call stack, so that an idle stream's goroutine blocks with
// little of its stack in use and the garbage collector halves the stack
// (16 KiB to 8 KiB per open stream). Wait never reports an error: Next
// does. After Wait, Next may still block (an event split across reads).
//
// Buffered reports, without blocking, whether Next will return an event
// without waiting for the network (it was read along with the previous
// one): the server then writes both in one write.
type Waiter interface {
	Wait()
	Buffered() bool
}

// FirstTokenBounded is implemented by streams whose connection's read
// deadline is still the call's header deadline (Request.HeaderDeadline,
// the time-to-first-token bound) when the call returns: the wait for the
// first token is bounded without a timer, and Next fails with an
// upstream_timeout error when it passes. The router calls
// FirstTokenArrived once it has the first token; the stream's own deadline
// (Request.Deadline) then applies.
type FirstTokenBounded interface {
	FirstTokenArrived()
}

// Spec is what a factory receives to build one deployment's provider.
type Spec struct {
	// Provider is the registered provider name (the model prefix).
	Provider string
	// Model is the upstream model id (the part after the prefix).
	Model        string
	APIKey       string
	APIBase      string
	APIVersion   string
	Organization string
	// Headers are extra headers sent upstream (litellm_params.extra_headers).
	Headers map[string]string
	// Params holds the remaining litellm_params, read only at build time.
	Params map[string]any
	// Client is the snapshot's shared upstream HTTP client.
	Client *Client
}

// Factory builds a provider for one deployment. It validates the spec and
// returns an error that names what is wrong.
type Factory func(Spec) (Provider, error)

// Info describes a registered provider.
type Info struct {
	Name    string
	Factory Factory
	// DefaultBase is the API base URL used when neither config nor the
	// environment sets one. Empty means api_base is required.
	DefaultBase string
	// EnvPrefixes are the environment prefixes read for <P>_API_KEY,
	// <P>_API_BASE and <P>_BASE_URL; the first is the canonical one.
	EnvPrefixes []string
	// NoKey means the provider needs no API key (local servers, mock).
	NoKey bool
}

var (
	regMu    sync.RWMutex
	registry = map[string]*Info{}
)

// Register adds a provider. It panics on a duplicate name: registration is
// static, done once from engine/provider/all.
func Register(info Info) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[info.Name]; dup {
		panic("provider: duplicate registration of " + info.Name)
	}
	if len(info.EnvPrefixes) == 0 {
		info.EnvPrefixes = []string{EnvPrefix(info.Name)}
	}
	registry[info.Name] = &info
}

// Lookup returns a registered provider.
func Lookup(name string) (*Info, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	i, ok := registry[name]
	return i, ok
}

// Names lists the registered providers, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// EnvPrefix is the environment prefix for a provider name: upper case, with
// every character other than a letter or digit turned into '_'
// ("together_ai" -> "TOGETHER_AI", "hosted_vllm" -> "HOSTED_VLLM").
func EnvPrefix(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// ResolveBase applies the one base-URL rule for every provider: api_base
// from the config wins; then the environment, <P>_API_BASE then
// <P>_BASE_URL for each of the provider's prefixes; then the default.
func ResolveBase(info *Info, configured string, getenv func(string) string) (string, string) {
	if configured != "" {
		return strings.TrimRight(configured, "/"), "api_base"
	}
	for _, p := range info.EnvPrefixes {
		for _, suffix := range []string{"_API_BASE", "_BASE_URL"} {
			if v := getenv(p + suffix); v != "" {
				return strings.TrimRight(v, "/"), p + suffix
			}
		}
	}
	return info.DefaultBase, "default"
}

// ResolveKey returns the configured key, else <P>_API_KEY from the
// environment.
func ResolveKey(info *Info, configured string, getenv func(string) string) string {
	if configured != "" {
		return configured
	}
	for _, p := range info.EnvPrefixes {
		if v := getenv(p + "_API_KEY"); v != "" {
			return v
		}
	}
	return ""
}

// ErrStreamClosed is returned by Next after Close.
var ErrStreamClosed = io.ErrClosedPipe

// ParamString reads a string param; numbers are formatted.
func ParamString(p map[string]any, k string) string {
	switch v := p[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}
