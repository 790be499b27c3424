// Package gateway compiles a configuration into an immutable Runtime
// snapshot and swaps snapshots atomically.
//
// A request takes one snapshot (Holder.Acquire) and uses it from start to
// end, stream included. Reload builds a whole new snapshot first; if that
// fails the old one keeps serving and the error says why. A replaced
// snapshot is cleaned up (upstream connections, provider resources) once
// its last request has released it.
package gateway

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/auth"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/pricing"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/provider/all"
	"github.com/portcullis/portcullis/engine/route"
	"github.com/portcullis/portcullis/engine/telemetry"
)

// Runtime is one compiled configuration. Everything in it is read-only
// after Build.
type Runtime struct {
	Config *config.Config
	Router *route.Router
	// Handler is the compiled middleware chain ending in the router.
	Handler pipeline.Handler
	// Master checks the master key on non-LLM endpoints; nil when none.
	Master *auth.MasterKey
	// AllowAnonymous serves LLM and model-list requests without a key.
	AllowAnonymous bool
	// ModelsJSON is the /v1/models body; ModelJSON holds each /v1/models/{id}.
	ModelsJSON []byte
	ModelJSON  map[string][]byte
	// Metrics per public model name, resolved at build.
	ModelMetrics map[string]*telemetry.Model
	Unknown      *telemetry.Model

	client    *provider.Client
	providers []provider.Provider
	cleanups  []func()
	refs      atomic.Int64
	retired   atomic.Bool
	cleaned   atomic.Bool
	cleanOnce sync.Once
}

// Options are the process-level dependencies a build uses.
type Options struct {
	Log     *zap.Logger
	Metrics *telemetry.Metrics
	Getenv  func(string) string
	// Keys is the virtual-key stage; it outlives snapshots (its counters
	// must survive a reload). Nil: only the master key is checked.
	Keys *keys.Manager
	// Prices is the price table (default: pricing.Default()).
	Prices *pricing.Table
	// Policy is the Rego policy stage (engine/policy); process-level, it
	// reloads on its own. Nil: no policies.
	Policy pipeline.Middleware
	// Plugins compiles the config's Wasm plugins for this snapshot
	// (engine/wasm); the returned cleanup runs when the snapshot is
	// retired. Nil, or a nil middleware: no plugins.
	Plugins func(cfg *config.Config, r *route.Router) (pipeline.Middleware, func(), error)
	// Cache is the response cache stage (engine/cache); process-level, so
	// entries survive reloads. Nil: no cache.
	Cache pipeline.Middleware
}

// Build compiles cfg. It returns an error naming the place and the reason
// for every deployment that cannot be built.
func Build(cfg *config.Config, o Options) (*Runtime, error) {
	all.Register()
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	if o.Prices == nil {
		o.Prices = pricing.Default()
	}
	rt := &Runtime{Config: cfg, client: provider.NewClient(), ModelJSON: map[string][]byte{}, ModelMetrics: map[string]*telemetry.Model{}}
	var problems []config.Problem
	var deps []*route.Deployment
	for i, m := range cfg.Models {
		info, ok := provider.Lookup(m.Provider)
		if !ok {
			problems = append(problems, config.Problem{Path: m.Path + ".litellm_params.model",
				Msg: fmt.Sprintf("unknown provider %q (known: %s)", m.Provider, strings.Join(provider.Names(), ", "))})
			continue
		}
		base, _ := provider.ResolveBase(info, m.APIBase, o.Getenv)
		rt.client.Prepare(base)
		if base == "" {
			problems = append(problems, config.Problem{Path: m.Path + ".litellm_params.api_base",
				Msg: fmt.Sprintf("required for %s/ models (or set %s_API_BASE)", m.Provider, info.EnvPrefixes[0])})
			continue
		}
		key := provider.ResolveKey(info, m.APIKey, o.Getenv)
		if key == "" && !info.NoKey && o.Log != nil {
			o.Log.Warn("deployment has no API key; upstream calls will likely fail with 401",
				zap.String("at", m.Path), zap.String("model_name", m.ModelName), zap.String("env", info.EnvPrefixes[0]+"_API_KEY"))
		}
		p, err := info.Factory(provider.Spec{
			Provider: m.Provider, Model: m.UpstreamModel, APIKey: key, APIBase: base, APIVersion: m.APIVersion,
			Organization: m.Organization, Headers: m.Headers, Params: m.Params, Client: rt.client,
		})
		if err != nil {
			problems = append(problems, config.Problem{Path: m.Path + ".litellm_params", Msg: err.Error()})
			continue
		}
		rt.providers = append(rt.providers, p)
		id := m.ID
		if id == "" {
			id = deploymentID(i, &m)
		}
		timeout := m.Timeout
		if timeout == 0 {
			timeout = cfg.Router.Timeout
		}
		if timeout == 0 {
			timeout = cfg.LiteLLM.RequestTimeout
		}
		st := m.StreamTimeout
		if st == 0 {
			st = cfg.Router.StreamTimeout
		}
		deps = append(deps, &route.Deployment{
			ID: id, ModelName: m.ModelName, ProviderName: m.Provider, UpstreamModel: m.UpstreamModel,
			Provider: p, Weight: m.Weight, RPM: m.RPM, TPM: m.TPM, MaxParallel: m.MaxParallel, Tags: m.Tags,
			Price: price(o.Prices, &m), Timeout: timeout, StreamTimeout: st, Mode: m.Info.Mode,
		})
	}
	if len(problems) > 0 {
		rt.cleanup()
		return nil, &config.Error{Source: cfg.Source, Problems: problems}
	}
	rt.Router = route.New(deps, routerSettings(&cfg.Router), o.Log, o.Metrics)
	var mws []pipeline.Middleware
	rt.AllowAnonymous = cfg.Auth.AllowAnonymous || cfg.General.MasterKey == ""
	switch {
	case cfg.General.MasterKey == "":
		// No master key: no authentication at all, as LiteLLM (whatever
		// key a client sends is ignored).
	case o.Keys != nil:
		// Virtual keys (the master key is one of them).
		mws = append(mws, o.Keys)
		rt.Master = &auth.MasterKey{Key: []byte(cfg.General.MasterKey)}
	default:
		rt.Master = &auth.MasterKey{Key: []byte(cfg.General.MasterKey)}
		if !cfg.Auth.AllowAnonymous {
			mws = append(mws, rt.Master)
		}
	}
	// After authentication, in this order: policies decide on the request
	// as the client sent it; plugins may rewrite or route it; the cache
	// answers only what was allowed, after every rewrite.
	if o.Policy != nil {
		mws = append(mws, o.Policy)
	}
	if o.Plugins != nil && len(cfg.Plugins) > 0 {
		mw, cleanup, err := o.Plugins(cfg, rt.Router)
		if err != nil {
			rt.cleanup()
			return nil, err
		}
		rt.cleanups = append(rt.cleanups, cleanup)
		if mw != nil {
			mws = append(mws, mw)
		}
	}
	if o.Cache != nil {
		mws = append(mws, o.Cache)
	}
	rt.Handler = pipeline.Chain(mws, rt.Router.Serve)
	rt.buildModels(deps)
	for _, n := range rt.Router.Names() {
		rt.ModelMetrics[n] = o.Metrics.Model(n)
	}
	for _, d := range deps {
		if rt.ModelMetrics[d.ModelName] == nil {
			rt.ModelMetrics[d.ModelName] = o.Metrics.Model(d.ModelName)
		}
	}
	rt.Unknown = o.Metrics.Model("")
	return rt, nil
}

// price is a deployment's price: the table's for its provider and model
// (or model_info.base_model); when the config entry sets any price, the
// config's prices replace the table's wholesale (an unset cached or
// cache-write price is the input price, an unset reasoning price the output
// price), so a custom price never mixes with list prices it did not name.
func price(t *pricing.Table, m *config.Model) pricing.Price {
	p, _ := t.Lookup(m.Provider, m.UpstreamModel)
	if m.Info.BaseModel != "" {
		if bp, ok := t.Lookup(m.Provider, m.Info.BaseModel); ok {
			p = bp
		}
	}
	if m.InputCostPerToken > 0 || m.OutputCostPerToken > 0 || m.CacheReadCost > 0 || m.CacheWriteCost > 0 || m.ReasoningCost > 0 {
		p = pricing.Price{Input: m.InputCostPerToken, Output: m.OutputCostPerToken, CachedInput: m.CacheReadCost,
			CacheWrite: m.CacheWriteCost, Reasoning: m.ReasoningCost,
			MaxOutputTokens: p.MaxOutputTokens, MaxInputTokens: p.MaxInputTokens}
	}
	if m.Info.MaxOutputTokens > 0 {
		p.MaxOutputTokens = m.Info.MaxOutputTokens
	}
	if m.Info.MaxInputTokens > 0 {
		p.MaxInputTokens = m.Info.MaxInputTokens
	}
	return p
}

// routerSettings compiles router_settings (and portcullis.router) into
// the router's settings.
func routerSettings(c *config.RouterSettings) route.Settings {
	s := route.Settings{
		Strategy: c.RoutingStrategy, NumRetries: c.NumRetries, AllowedFails: c.AllowedFails, CooldownTime: c.CooldownTime,
		Fallbacks: c.Fallbacks, DefaultFallbacks: c.DefaultFallbacks, ContextWindowFallbacks: c.ContextWindowFallbacks,
		ContentPolicyFallbacks: c.ContentPolicyFallbacks, MaxFallbacks: c.MaxFallbacks, LatencyBuffer: c.LatencyBuffer,
		BackoffBase: c.BackoffBase, BackoffMax: c.BackoffMax, RetryAfterMax: c.RetryAfterMax,
		StreamIdleTimeout: c.StreamIdleTimeout, MaxStreamDuration: c.MaxStreamDuration,
		Policy: route.DefaultPolicy(),
	}
	for name, n := range c.RetryPolicy {
		classes, _ := route.ClassByLiteLLMName(name)
		for _, cls := range classes {
			s.Policy[cls].Retries = n
		}
	}
	for name, n := range c.AllowedFailsPolicy {
		classes, _ := route.ClassByLiteLLMName(name)
		for _, cls := range classes {
			s.Policy[cls].AllowedFails = n
		}
	}
	for name, a := range c.Errors {
		cls, ok := route.ClassByName(name)
		if !ok {
			continue
		}
		if a.Retries != nil {
			s.Policy[cls].Retries = *a.Retries
		}
		if a.Fallback != nil {
			s.Policy[cls].Fallback = *a.Fallback
		}
		if a.AllowedFails != nil {
			s.Policy[cls].AllowedFails = *a.AllowedFails
		}
	}
	return s
}

func deploymentID(i int, m *config.Model) string {
	return fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(m.ModelName), i)
}

type modelObj struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (rt *Runtime) buildModels(deps []*route.Deployment) {
	owner := map[string]string{}
	for _, d := range deps {
		if _, ok := owner[d.ModelName]; !ok {
			owner[d.ModelName] = d.ProviderName
		}
	}
	list := struct {
		Object string     `json:"object"`
		Data   []modelObj `json:"data"`
	}{Object: "list", Data: []modelObj{}}
	for _, n := range rt.Router.Names() {
		o := modelObj{ID: n, Object: "model", Created: 1677610602, OwnedBy: owner[n]}
		list.Data = append(list.Data, o)
		rt.ModelJSON[n], _ = json.Marshal(o)
	}
	rt.ModelsJSON, _ = json.Marshal(list)
}

// GroupPrice is the price of the dearest deployment of a model group (an
// exact name or a wildcard group), field by field (pricing.Max: at least
// every deployment's price for every kind of token); false when no group
// serves the name. Policies price a request with it before routing
// (policy.Options.Price).
func (rt *Runtime) GroupPrice(group string) (pricing.Price, bool) {
	g, ok := rt.Router.Group(group)
	if !ok || len(g.Deployments) == 0 {
		return pricing.Price{}, false
	}
	p := g.Deployments[0].Price
	for _, d := range g.Deployments[1:] {
		p = pricing.Max(p, d.Price)
	}
	return p, true
}

// CloseIdleConnections closes the runtime's idle upstream connections
// (the server sheds them when it runs out of file descriptors).
func (rt *Runtime) CloseIdleConnections() { rt.client.CloseIdleConnections() }

func (rt *Runtime) cleanup() {
	rt.cleanOnce.Do(func() {
		for _, p := range rt.providers {
			if c, ok := p.(provider.Closer); ok {
				_ = c.Close()
			}
		}
		rt.client.CloseIdleConnections()
		for _, f := range rt.cleanups {
			if f != nil {
				f()
			}
		}
		rt.cleaned.Store(true)
	})
}

// Release gives back a snapshot taken with Holder.Acquire.
func (rt *Runtime) Release() {
	if rt.refs.Add(-1) == 0 && rt.retired.Load() {
		rt.cleanup()
	}
}

// Holder holds the current snapshot.
type Holder struct {
	cur atomic.Pointer[Runtime]
	mu  sync.Mutex // serialises Swap
}

// NewHolder returns a holder serving rt.
func NewHolder(rt *Runtime) *Holder {
	h := &Holder{}
	h.cur.Store(rt)
	return h
}

// Acquire returns the current snapshot, counted until Release.
func (h *Holder) Acquire() *Runtime {
	for {
		rt := h.cur.Load()
		rt.refs.Add(1)
		if h.cur.Load() == rt {
			return rt
		}
		// Swapped between the load and the count: give it back, retry.
		rt.Release()
	}
}

// Current returns the current snapshot without counting it (for reads
// that do not outlive the call, such as validation output).
func (h *Holder) Current() *Runtime { return h.cur.Load() }

// Swap installs rt and retires the previous snapshot, which is cleaned up
// once its last request releases it.
func (h *Holder) Swap(rt *Runtime) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Swap(rt)
	if old == nil || old == rt {
		return
	}
	old.retired.Store(true)
	old.refs.Add(1)
	old.Release() // cleans up now if idle
}

// Reload loads path, builds it, and swaps it in. On any error the current
// snapshot keeps serving.
func (h *Holder) Reload(path string, o Options) (*config.Config, error) {
	cfg, err := config.LoadFile(path)
	if err != nil {
		return nil, err
	}
	rt, err := Build(cfg, o)
	if err != nil {
		return nil, err
	}
	h.Swap(rt)
	return cfg, nil
}

// Close retires the current snapshot.
func (h *Holder) Close() {
	if rt := h.cur.Load(); rt != nil {
		rt.retired.Store(true)
		rt.refs.Add(1)
		rt.Release()
	}
}
