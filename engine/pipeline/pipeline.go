// Package pipeline is the request path's skeleton: the per-request Exchange
// and the middleware chain every stage plugs into.
//
// A chain is compiled once per configuration snapshot, back to front, from
// an ordered list (order is data, not import order). Each Middleware gets the
// Exchange and the next Handler and decides whether to call it, like
// CoreDNS's plugin.Handler. Nothing here runs per request except the calls.
package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
)

// Handler serves an Exchange. A returned error is an *errs.Error (or is
// converted to one) and becomes the client's error response.
type Handler func(x *Exchange) error

// Middleware is one stage of the chain.
type Middleware interface {
	Name() string
	Serve(x *Exchange, next Handler) error
}

// Chain compiles middlewares, first to last, in front of final.
func Chain(mws []Middleware, final Handler) Handler {
	h := final
	for i := len(mws) - 1; i >= 0; i-- {
		m, next := mws[i], h
		h = func(x *Exchange) error { return m.Serve(x, next) }
	}
	return h
}

// Readmitter is implemented by a Settler whose admission depends on the
// model group and max_tokens (the key stage's reservation). A stage that
// changes either after admission (a policy's model override or token cap,
// a plugin's route) calls Readmit (see Exchange.Readmit) before the
// request goes on; an error denies the request.
type Readmitter interface {
	Readmit(x *Exchange) error
}

// Readmit asks the stage that admitted the request to admit it again for
// the current route and max_tokens; nil when nothing admitted it.
func (x *Exchange) Readmit() error {
	if r, ok := x.Settler.(Readmitter); ok {
		return r.Readmit(x)
	}
	return nil
}

// Exchange is the state of one request from parse to the last log line.
//
// Ownership: the server acquires an Exchange from a pool for each request
// and releases it after the response, including a streamed one, has been
// written and logged. Nothing may keep a pointer to it after that. Body
// aliases the server's request buffer and is read-only.
type Exchange struct {
	// Ctx carries the request deadline; cancelled when the server stops.
	Ctx context.Context
	// ID is the gateway's request id, unique: the spend record's key.
	ID string
	// ClientID is the client's x-request-id, echoed back (may repeat).
	ClientID string
	Start    time.Time
	// Dialect is the inbound endpoint's wire format.
	Dialect llm.Dialect
	// Body is the inbound request body, read-only.
	Body []byte
	// Model is the model name the client asked for.
	Model  string
	Stream bool
	// IncludeUsage is the client's stream_options.include_usage.
	IncludeUsage bool
	// Header reads inbound headers.
	Header provider.Headers
	// Deadline bounds the whole request; zero means the deployment's.
	Deadline time.Time

	// MaxTokens is the request's max_tokens / max_completion_tokens (0:
	// not set); budgets reserve against it.
	MaxTokens int

	// The caller, filled by the key stage (never the key itself).
	KeyHash  string
	KeyAlias string
	TeamID   string
	UserID   string
	// Settler settles what the key stage reserved, once the cost is known
	// (called by the server when the response is complete, or failed).
	Settler interface{ Settle(x *Exchange) }
	// Principal is the authenticated virtual key's metadata, budgets and
	// limits (policies read them); nil for the master key and anonymous
	// requests. It is the key stage's snapshot, shared between requests:
	// never modified.
	Principal *Principal

	// Routing inputs read from the request: LiteLLM's "tags" (or
	// metadata.tags), per-request "fallbacks" and "num_retries".
	Tags             []string
	RequestFallbacks []string
	// CacheParams is LiteLLM's per-request "cache" object (raw JSON,
	// removed from the body sent upstream); nil when absent.
	CacheParams   []byte
	NumRetries    int
	NumRetriesSet bool

	// Route overrides set by a policy mutation or a plugin's route
	// decision (validated against the configured models by the stage that
	// sets them): RouteModel replaces Model as the model group to serve,
	// RouteDeployment pins one deployment of that group.
	RouteModel      string
	RouteDeployment string
	// UpstreamSet and UpstreamRemove change the upstream request's headers
	// (credentials and framing headers are refused by the provider).
	UpstreamSet    [][2]string
	UpstreamRemove []string
	// ResponseSet are headers added to the client's response (x-cache,
	// policy headers), success or error.
	ResponseSet [][2]string

	// Labels are tags from policies and plugins ("flag:pii-email"): they
	// land in the spend record and the log line, never in routing.
	Labels []string
	// PolicyVersion is the policy revision that decided the request.
	PolicyVersion string

	// CacheHit: the response came from the response cache; SavedCost is
	// what it would have cost upstream (nano-dollars).
	CacheHit  bool
	SavedCost int64

	// Filled by the router.
	DeploymentID string
	Provider     string
	// UpstreamModel is the provider's model id that served.
	UpstreamModel string
	Attempts      int
	// FallbacksUsed counts fallback groups moved to; Attempted lists the
	// deployments that failed before the one that served.
	FallbacksUsed int
	Attempted     []string
	Response      *provider.Response
	// Upstream is the router's request to the provider, rebuilt for each
	// attempt; UpstreamBuf is room for the upstream body a provider edits
	// (Upstream.Buf points to it), kept across the pool's reuses (up to
	// maxUpstreamBuf). Neither costs an allocation per request.
	Upstream    provider.Request
	UpstreamBuf []byte
	// Kept is the server's to keep across the pool's reuses (its stream
	// body: one allocation less per stream); Release leaves it.
	Kept any
	// Served is the deployment that answered: it counts the tokens for its
	// tpm and prices them.
	Served interface {
		Tokens(n int)
		Cost(t llm.Tokens) int64
	}
	// ModelGroup is the model group that served (after fallbacks).
	ModelGroup string
	// Cost is what the request cost, in nano-dollars (set by the server
	// before settling).
	Cost int64
	// Accounted is set once cost, settlement and the spend record are done.
	Accounted bool
	// Output is the response body sent, kept only when spend records
	// store prompts and responses.
	Output []byte
	groups [4]string
	ngroup int

	// Filled by the response path.
	Status    int
	Tokens    llm.Tokens
	Err       *errs.Error
	FirstByte time.Duration

	// Key is the caller's credential as presented (never logged).
	Key []byte

	// busy is the serving deployment's in-flight counter, decremented
	// when the exchange is released (after a stream has ended).
	busy *atomic.Int64

	filters [maxFilters]Filter
	nfilter int
}

// Principal is what the key stage knows about a virtual key beyond its
// ids, for the stages after it (policies). The key stage builds one per key
// snapshot and team snapshot and hands every request of the key the same
// pointer, so nothing is copied or decoded per request: it is immutable,
// except that the Budgets read live counters.
type Principal struct {
	// Metadata and TeamMetadata are the key's and its team's metadata
	// (raw JSON, an object as stored by /key/generate, /team/new); nil or
	// not an object: none.
	Metadata, TeamMetadata []byte
	// Budget is the key's; TeamBudget its team's (nil: no team).
	Budget     Budget
	TeamBudget *Budget
	// RPMLimit, TPMLimit and MaxParallel are the key's limits; -1: none.
	RPMLimit, TPMLimit, MaxParallel int64
	// Models is the key's model allow-list as configured (empty: any).
	Models []string
	// Memo holds what a consumer derives from the snapshot once, such as
	// the policy stage's input terms; the first CompareAndSwap(nil, v)
	// wins.
	Memo atomic.Value
}

// Budget is one budget of a Principal.
type Budget struct {
	// Max is the budget in nano-dollars per period; -1: none.
	Max int64
	// Duration is the period as configured ("30d", "monthly"); "": the
	// budget never resets.
	Duration string
	// Account is the live state the budget check uses.
	Account BudgetAccount
}

// BudgetAccount reads a budget's live counters (keys.Account).
type BudgetAccount interface {
	// Spent is the nano-dollars settled in the current period.
	Spent() int64
	// ResetAt is the unix time in nanoseconds of the next reset; 0: never.
	ResetAt() int64
}

// RouteGroup is the model group to serve: the route override, or the
// model the client asked for.
func (x *Exchange) RouteGroup() string {
	if x.RouteModel != "" {
		return x.RouteModel
	}
	return x.Model
}

// Emit passes one SSE event on (name may be nil for data-only events).
type Emit func(name, data []byte) error

// Filter sees a response on its way back to the client, in the client's
// dialect (after translation). A middleware that needs the response adds
// a Filter to the exchange; filters run in reverse order of registration,
// so the stage nearest the router sees the response first (a cache stores
// what the upstream said; plugins and policies after it see a cached
// answer exactly as they would a fresh one).
//
// A filter that keeps per-stream state is allocated per request by the
// middleware that adds it. Returned errors are *errs.Error: before the
// first byte they become the client's error; mid-stream they end the
// stream with an error event.
type Filter interface {
	// Body filters a complete (non-streamed) body and returns the body to
	// pass on, which may be body itself. It must not keep body.
	Body(x *Exchange, body []byte) ([]byte, error)
	// Event filters one SSE event, passing zero, one or more events on
	// through emit. The event's slices are valid only during the call.
	Event(x *Exchange, name, data []byte, emit Emit) error
	// End is called once when the stream ends; complete is false when it
	// was cut (upstream error, client gone). Every event, the terminal one
	// ([DONE], message_stop) included, has gone through Event before; a
	// filter that holds text back flushes it when it sees the terminal
	// event. When complete, x.Tokens holds the stream's usage and End may
	// still emit (after the terminal event).
	End(x *Exchange, complete bool, emit Emit) error
}

const maxFilters = 4

// AddFilter registers f for this request's response. It reports false
// when the exchange already holds the maximum number of filters.
func (x *Exchange) AddFilter(f Filter) bool {
	if x.nfilter == maxFilters {
		return false
	}
	// Kept in run order: the newest first.
	copy(x.filters[1:x.nfilter+1], x.filters[:x.nfilter])
	x.filters[0] = f
	x.nfilter++
	return true
}

// Filters returns the registered filters in the order they run (the last
// registered first).
func (x *Exchange) Filters() []Filter { return x.filters[:x.nfilter] }

// MarkGroup records that model group name was tried.
func (x *Exchange) MarkGroup(name string) {
	if x.ngroup < len(x.groups) {
		x.groups[x.ngroup] = name
	}
	x.ngroup++
}

// TriedGroup reports whether model group name was tried (fallback chains
// longer than four groups may try one twice; the router's max_fallbacks
// bounds the loop).
func (x *Exchange) TriedGroup(name string) bool {
	for i := 0; i < min(x.ngroup, len(x.groups)); i++ {
		if x.groups[i] == name {
			return true
		}
	}
	return false
}

// Hold records that the exchange occupies a slot of counter until Release.
func (x *Exchange) Hold(counter *atomic.Int64) {
	if x.busy != nil {
		x.busy.Add(-1)
	}
	counter.Add(1)
	x.busy = counter
}

// Unhold gives the slot back early (a failed attempt).
func (x *Exchange) Unhold() {
	if x.busy != nil {
		x.busy.Add(-1)
		x.busy = nil
	}
}

var pool = sync.Pool{New: func() any { return new(Exchange) }}

// maxUpstreamBuf bounds the upstream body buffer a pooled Exchange keeps.
const maxUpstreamBuf = 64 << 10

// Acquire returns a cleared Exchange (its UpstreamBuf's room and Kept
// aside).
func Acquire() *Exchange { return pool.Get().(*Exchange) }

// Release clears x (every field, Principal included; UpstreamBuf keeps its
// room, Kept stays) and returns it to the pool; x must not be used after.
func Release(x *Exchange) {
	if x.Response != nil {
		x.Response.Release()
	}
	x.Unhold()
	buf, kept := x.UpstreamBuf, x.Kept
	*x = Exchange{Kept: kept}
	if cap(buf) <= maxUpstreamBuf {
		x.UpstreamBuf = buf[:0]
	}
	pool.Put(x)
}
