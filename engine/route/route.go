// Package route picks the deployment that serves a request, calls it, and
// on failure retries, cools deployments down and falls back to other model
// groups, as LiteLLM's router does, streams included.
//
// A Router is built once per snapshot from the model list: deployments that
// share a model_name form a Group. Picking reads immutable data and
// per-deployment atomics only: no lock and no allocation on the request
// path (BenchmarkPick proves both).
package route

import (
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pricing"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// Deployment is one model_list entry, compiled.
type Deployment struct {
	ID            string
	ModelName     string
	ProviderName  string
	UpstreamModel string
	Provider      provider.Provider
	Weight        float64
	RPM           int
	TPM           int
	MaxParallel   int
	Tags          []string
	// Price is the deployment's per-token price (table, then config).
	Price pricing.Price
	// Timeout bounds a non-streamed call, and a stream's time to first
	// token when StreamTimeout is not set.
	Timeout time.Duration
	// StreamTimeout bounds a stream's time to first token and the gap
	// between two events.
	StreamTimeout time.Duration
	Mode          string // model_info.mode ("chat", "embedding", "completion")

	health  health
	metrics *telemetry.Deployment
}

// Cost prices tokens served by d, in nano-dollars.
func (d *Deployment) Cost(t llm.Tokens) int64 { return pricing.Cost(d.Price, t) }

// InFlight is the number of calls in progress on d.
func (d *Deployment) InFlight() int64 { return d.health.inflight.Load() }

// Tokens records tokens served, for tpm accounting.
func (d *Deployment) Tokens(n int) { d.health.countTokens(time.Now().UnixNano(), n) }

func (d *Deployment) hasTag(t string) bool {
	for _, x := range d.Tags {
		if x == t {
			return true
		}
	}
	return false
}

// Group is the deployments sharing one public model name.
type Group struct {
	// providers are the distinct providers of Deployments.
	providers   []string
	Name        string
	Deployments []*Deployment
	hasDefault  bool  // a deployment is tagged "default"
	weighKind   uint8 // 1 + what simple-shuffle weighs by (see weighBy)
	maxPrice    pricing.Price
	fallbacks   *telemetry.Group
	// configFallbacks are the group's fallback groups from the
	// configuration (Router.configFallbacks).
	configFallbacks []string
}

// Settings are the router's configuration (router_settings, compiled).
type Settings struct {
	Strategy               string
	NumRetries             int
	AllowedFails           int
	CooldownTime           time.Duration
	Fallbacks              map[string][]string
	DefaultFallbacks       []string
	ContextWindowFallbacks map[string][]string
	ContentPolicyFallbacks map[string][]string
	MaxFallbacks           int
	Policy                 [numClasses]Action
	// Backoff between retries: BackoffBase * 2^attempt with full jitter,
	// at most BackoffMax; an upstream Retry-After raises the wait up to
	// RetryAfterMax, beyond which the router falls back instead.
	BackoffBase   time.Duration
	BackoffMax    time.Duration
	RetryAfterMax time.Duration
	// LatencyBuffer: latency-based routing picks at random among
	// deployments within (1+buffer) of the fastest.
	LatencyBuffer float64
	// StreamIdleTimeout bounds the gap between two stream events when a
	// deployment sets no stream_timeout; 0: none.
	StreamIdleTimeout time.Duration
	// MaxStreamDuration bounds a whole stream.
	MaxStreamDuration time.Duration
}

// Defaults fills unset settings with LiteLLM's defaults where it has them.
func (s *Settings) Defaults() {
	if s.AllowedFails == 0 {
		s.AllowedFails = 3
	}
	if s.CooldownTime == 0 {
		s.CooldownTime = 5 * time.Second
	}
	if s.MaxFallbacks == 0 {
		s.MaxFallbacks = 5
	}
	if s.BackoffBase == 0 {
		s.BackoffBase = 100 * time.Millisecond
	}
	if s.BackoffMax == 0 {
		s.BackoffMax = 5 * time.Second
	}
	if s.RetryAfterMax == 0 {
		s.RetryAfterMax = 10 * time.Second
	}
	if s.LatencyBuffer == 0 {
		s.LatencyBuffer = 0.1
	}
	if s.MaxStreamDuration == 0 {
		s.MaxStreamDuration = time.Hour
	}
	var zero [numClasses]Action
	if s.Policy == zero {
		s.Policy = DefaultPolicy()
	}
}

type strategy uint8

const (
	stShuffle strategy = iota
	stLeastBusy
	stLatency
	stUsage
	stCost
)

// Router holds the groups of a snapshot.
type Router struct {
	groups   map[string]*Group
	names    []string
	wildcard []*Group // groups whose name ends in "*", longest prefix first
	strategy strategy
	set      Settings
	log      *zap.Logger
	// weightBy is what simple-shuffle weighs by: weight, rpm, tpm or none.
	weightBy uint8
}

// New builds a router.
func New(deps []*Deployment, set Settings, log *zap.Logger, m *telemetry.Metrics) *Router {
	set.Defaults()
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = telemetry.NewMetrics()
	}
	r := &Router{groups: map[string]*Group{}, set: set, log: log}
	for _, d := range deps {
		g := r.groups[d.ModelName]
		if g == nil {
			g = &Group{Name: d.ModelName, fallbacks: m.Group(d.ModelName)}
			r.groups[d.ModelName] = g
			r.names = append(r.names, d.ModelName)
		}
		d.metrics = m.Deployment(d.ID, d.ModelName)
		g.Deployments = append(g.Deployments, d)
		if d.hasTag("default") {
			g.hasDefault = true
		}
		if !slices.Contains(g.providers, d.ProviderName) {
			g.providers = append(g.providers, d.ProviderName)
		}
	}
	for name, g := range r.groups {
		g.weighKind = weighKindOf(g)
		g.configFallbacks = r.configFallbacks(name)
		if strings.HasSuffix(name, "*") {
			r.wildcard = append(r.wildcard, g)
		}
	}
	sort.Slice(r.wildcard, func(i, j int) bool { return len(r.wildcard[i].Name) > len(r.wildcard[j].Name) })
	r.computeMaxPrices()
	switch set.Strategy {
	case "least-busy":
		r.strategy = stLeastBusy
	case "latency-based-routing":
		r.strategy = stLatency
	case "usage-based-routing", "usage-based-routing-v2":
		r.strategy = stUsage
	case "cost-based-routing":
		r.strategy = stCost
	default:
		r.strategy = stShuffle
	}
	return r
}

// Names returns the public model names in config order, wildcards excluded.
func (r *Router) Names() []string {
	out := make([]string, 0, len(r.names))
	for _, n := range r.names {
		if !strings.HasSuffix(n, "*") {
			out = append(out, n)
		}
	}
	return out
}

// Group returns the group serving model: an exact name, else the longest
// wildcard prefix ("openai/*", "*").
func (r *Router) Group(model string) (*Group, bool) {
	if g, ok := r.groups[model]; ok {
		return g, true
	}
	for _, g := range r.wildcard {
		if strings.HasPrefix(model, strings.TrimSuffix(g.Name, "*")) {
			return g, true
		}
	}
	return nil, false
}

// weighKindOf decides what simple-shuffle weighs a group by, as LiteLLM:
// weight if any deployment sets one, else rpm, else tpm, else equally.
func weighKindOf(g *Group) uint8 {
	for kind, has := range []func(*Deployment) bool{
		func(d *Deployment) bool { return d.Weight > 0 },
		func(d *Deployment) bool { return d.RPM > 0 },
		func(d *Deployment) bool { return d.TPM > 0 },
	} {
		for _, d := range g.Deployments {
			if has(d) {
				return uint8(kind + 2)
			}
		}
	}
	return 1
}

// Estimate implements keys.Estimator: the most a request for model can
// cost, priced at the dearest deployment of its group and of every group it
// may fall back to, with the output capped at maxOutput or, when 0, the
// largest output cap among them (4,096 tokens when none is known).
func (r *Router) Estimate(model string, fallbacks []string, promptTokens, maxOutput int) (int64, int) {
	g, ok := r.Group(model)
	if !ok {
		return 0, maxOutput
	}
	p := g.maxPrice
	for _, f := range fallbacks {
		if fg, ok := r.groups[f]; ok {
			p = pricing.Max(p, fg.maxPrice)
		}
	}
	if maxOutput <= 0 {
		maxOutput = p.MaxOutputTokens
		if maxOutput <= 0 {
			maxOutput = 4096
		}
	}
	return pricing.Estimate(p, promptTokens, maxOutput), maxOutput
}

// computeMaxPrices sets each group's maxPrice over the group and, through
// the fallback settings, every group reachable from it.
func (r *Router) computeMaxPrices() {
	for _, g := range r.groups {
		seen := map[string]bool{}
		var walk func(name string)
		var best pricing.Price
		walk = func(name string) {
			if seen[name] {
				return
			}
			seen[name] = true
			h, ok := r.groups[name]
			if !ok {
				return
			}
			for _, d := range h.Deployments {
				best = pricing.Max(best, d.Price)
			}
			for _, list := range [][]string{r.set.Fallbacks[name], r.set.ContextWindowFallbacks[name], r.set.ContentPolicyFallbacks[name]} {
				for _, n := range list {
					walk(n)
				}
			}
		}
		walk(g.Name)
		for _, n := range r.set.DefaultFallbacks {
			walk(n)
		}
		for _, n := range r.set.Fallbacks["*"] {
			walk(n)
		}
		g.maxPrice = best
	}
}

// HasDeployment reports whether the model group serves a deployment with
// this id (route decisions from plugins are checked against it).
func (r *Router) HasDeployment(group, id string) bool {
	g, ok := r.Group(group)
	if !ok {
		return false
	}
	for _, d := range g.Deployments {
		if d.ID == id {
			return true
		}
	}
	return false
}

// Providers returns the distinct providers of a model group's deployments,
// in configuration order (nil for an unknown group). The slice is shared:
// callers must not modify it.
func (r *Router) Providers(group string) []string {
	g, ok := r.Group(group)
	if !ok {
		return nil
	}
	return g.providers
}
