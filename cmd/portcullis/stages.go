package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/cache"
	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/gateway"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/policy"
	"github.com/portcullis/portcullis/engine/pricing"
	"github.com/portcullis/portcullis/engine/route"
	"github.com/portcullis/portcullis/engine/telemetry"
	"github.com/portcullis/portcullis/engine/wasm"
)

// stages are the process-level pipeline stages that outlive snapshots:
// the policy engine (it reloads on its own, and each request is decided
// by one revision) and the response cache (its entries survive a reload).
type stages struct {
	policy *policy.Engine
	cache  *cache.Cache
	// wasm are the plugin metrics (process-level); the plugins themselves
	// are compiled with each snapshot.
	wasm *wasm.Metrics
	log  *zap.Logger
	// holder is set once the first snapshot exists (policies ask it which
	// providers serve a model group).
	holder *gateway.Holder
}

func openStages(cfg *config.Config, log *zap.Logger, m *telemetry.Metrics) (*stages, error) {
	s := &stages{wasm: wasm.NewMetrics(m.Registry), log: log}
	if cfg.Policy.Dir != "" || cfg.Policy.Bundle != "" {
		eng, err := policy.New(cfg.Policy, policy.Options{Log: log.Named("policy"), Metrics: m.Registry, Providers: s.providers,
			Price: s.price})
		if err != nil {
			return nil, err
		}
		s.policy = eng
	}
	// The cache stage exists even when disabled, so that a reload can turn
	// it on; its store (ristretto) is built only once it is enabled.
	c, err := cache.New(cfg.Cache, cache.Options{Log: log})
	if err != nil {
		return nil, err
	}
	for _, col := range c.Collectors() {
		m.Registry.MustRegister(col)
	}
	s.cache = c
	return s, nil
}

// providers are the providers serving a model group in the current
// snapshot.
func (s *stages) providers(group string) []string {
	if s.holder == nil {
		return nil
	}
	return s.holder.Current().Router.Providers(group)
}

// price is the price of the dearest deployment of a model group in the
// current snapshot, for the policies' llm.estimated_cost.
func (s *stages) price(group string) (pricing.Price, bool) {
	if s.holder == nil {
		return pricing.Price{}, false
	}
	return s.holder.Current().GroupPrice(group)
}

// ops are the operator endpoints: policy status and reload.
func (s *stages) ops() map[string]fasthttp.RequestHandler {
	ops := map[string]fasthttp.RequestHandler{}
	if s.cache != nil {
		// LiteLLM's /cache/ping, /cache/delete, /cache/flushall.
		for path, h := range s.cache.AdminHandlers() {
			ops[path] = h
		}
	}
	if s.policy == nil {
		return ops
	}
	status := func(ctx *fasthttp.RequestCtx) {
		b, _ := json.Marshal(s.policy.Status())
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	}
	ops["/policy/status"] = status
	ops["/policy/reload"] = func(ctx *fasthttp.RequestCtx) {
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			ctx.SetStatusCode(405)
			ctx.SetBodyString(`{"error":{"message":"use POST","type":"invalid_request_error","code":"method_not_allowed"}}`)
			return
		}
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.policy.Reload(c); err != nil {
			// The running revision stays; the reason is in the status.
			ctx.SetStatusCode(422)
		}
		status(ctx)
	}
	return ops
}

// plugins compiles a snapshot's Wasm plugins (module paths relative to
// the config file); they are closed when the snapshot is retired.
func (s *stages) plugins(cfg *config.Config, r *route.Router) (pipeline.Middleware, func(), error) {
	base := "."
	if cfg.Source != "" && cfg.Source != "embedded" {
		base = filepath.Dir(cfg.Source)
	}
	st, err := wasm.Build(cfg.Plugins, wasm.Options{Log: s.log.Named("plugins"), Router: r, CacheDir: cfg.Wasm.CacheDir,
		Metrics: s.wasm, BaseDir: base, Source: cfg.Source})
	if err != nil {
		return nil, nil, err
	}
	return st.Middleware(), st.Close, nil
}

// apply puts the stages into a snapshot's options.
func (s *stages) apply(o *gateway.Options) {
	o.Plugins = s.plugins
	if s.policy != nil {
		o.Policy = s.policy.Middleware()
	}
	if s.cache != nil {
		o.Cache = s.cache.Middleware()
	}
}

// reload applies the settings of a changed config file to the stages
// (before the snapshot is rebuilt); a file that does not load is reported
// by the snapshot's own reload.
func (s *stages) reload(path string, log *zap.Logger) {
	if s.policy != nil {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.policy.Reload(c); err != nil {
			log.Error("policy reload refused; the running revision keeps deciding", zap.Error(err))
		}
		cancel()
	}
	cfg, err := config.LoadFile(path)
	if err != nil {
		return
	}
	if s.cache != nil {
		if err := s.cache.Reconfigure(cfg.Cache); err != nil {
			log.Error("cache settings not applied", zap.Error(err))
		}
	}
}

func (s *stages) close() {
	if s.policy != nil {
		s.policy.Close()
	}
	if s.cache != nil {
		s.cache.Close()
	}
}
