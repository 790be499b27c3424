// Package cache is the response cache: exact-match answers for chat,
// completions, embeddings and Anthropic messages, replayed as a stream
// when the client streams, with identical concurrent misses coalesced into
// one upstream request and entries isolated per team (or key).
//
// The Cache is process-level: it is built once, survives configuration
// reloads (Reconfigure swaps its settings) and owns its store and metrics.
// Its Middleware sits after the policy and plugin stages and before the
// router, so a denied request never reaches it and a hit never reaches the
// router (no upstream call, no upstream rate limit, no spend). See
// README.md for how a request passes through it.
package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/translate"
)

// DefaultMaxWait bounds how long a request waits for an identical request
// in flight (its own deadline may end the wait sooner). A follower of a
// streamed answer waits for the whole stream.
const DefaultMaxWait = 60 * time.Second

// Header names set on cacheable requests: x-cache is HIT or MISS; LiteLLM
// sends the cache key on hits only.
const (
	HeaderCache    = "x-cache"
	HeaderCacheKey = "x-litellm-cache-key"
)

// storeTimeout bounds one Set on a networked store.
const storeTimeout = time.Second

// Options are a Cache's dependencies.
type Options struct {
	Log *zap.Logger
	// Store replaces the in-process ristretto store (a Redis store for
	// several replicas); the Cache does not close it.
	Store Store
	// Now is the clock for entry ages and expiry (tests); time.Now by
	// default.
	Now func() time.Time
	// MaxWait bounds a single-flight follower's wait (DefaultMaxWait).
	MaxWait time.Duration
}

type scope uint8

const (
	scopeTeam scope = iota
	scopeKey
	scopeGlobal
)

// settings are config.CacheSettings compiled for the hot path; swapped
// whole by Reconfigure.
type settings struct {
	enabled    bool
	ttl        time.Duration
	maxBytes   int64
	scope      scope
	all        bool
	defaultOff bool
	types      [8]bool // by llm.Dialect
	namespace  string
}

func compile(s config.CacheSettings) (*settings, error) {
	c := &settings{enabled: s.Enabled, ttl: s.TTL, maxBytes: s.MaxBytes, all: s.AllRequests,
		defaultOff: s.DefaultOff, namespace: s.Namespace}
	switch {
	case c.ttl < 0:
		return nil, fmt.Errorf("cache: ttl must not be negative, got %s", c.ttl)
	case c.ttl == 0:
		c.ttl = 10 * time.Minute
	}
	switch {
	case c.maxBytes < 0:
		return nil, fmt.Errorf("cache: max_bytes must not be negative, got %d", c.maxBytes)
	case c.maxBytes == 0:
		c.maxBytes = 256 << 20
	}
	switch s.Scope {
	case "", "team":
		c.scope = scopeTeam
	case "key":
		c.scope = scopeKey
	case "global":
		c.scope = scopeGlobal
	default:
		return nil, fmt.Errorf("cache: scope must be team, key or global, got %q", s.Scope)
	}
	if len(s.CallTypes) == 0 {
		for _, d := range []llm.Dialect{llm.OpenAIChat, llm.OpenAICompletion, llm.OpenAIEmbedding, llm.AnthropicMessages} {
			c.types[d] = true
		}
	}
	for _, t := range s.CallTypes {
		switch t {
		case "chat":
			c.types[llm.OpenAIChat] = true
		case "completions":
			c.types[llm.OpenAICompletion] = true
		case "embeddings":
			c.types[llm.OpenAIEmbedding] = true
		case "messages":
			c.types[llm.AnthropicMessages] = true
		default:
			return nil, fmt.Errorf("cache: unknown call type %q (chat, completions, embeddings, messages)", t)
		}
	}
	return c, nil
}

// Cache is the response cache and its pipeline stage.
type Cache struct {
	cfg atomic.Pointer[settings]
	// box is the store: Options.Store, or the in-process store the Cache
	// builds the first time its settings enable it (nil until then: a
	// gateway without a cache pays for no store and no goroutine).
	box     atomic.Pointer[storeBox]
	mu      sync.Mutex // builds the in-process store once
	flights flights
	now     func() time.Time
	maxWait time.Duration
	log     *zap.Logger
	m       *metrics
}

var _ pipeline.Middleware = (*Cache)(nil)

// New builds a Cache from s. Unless o.Store is set it owns an in-process
// store bounded to s.MaxBytes, released by Close.
func New(s config.CacheSettings, o Options) (*Cache, error) {
	cfg, err := compile(s)
	if err != nil {
		return nil, err
	}
	c := &Cache{now: o.Now, maxWait: o.MaxWait, log: o.Log, m: newMetrics()}
	if o.Store != nil {
		c.box.Store(&storeBox{s: o.Store})
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.maxWait <= 0 {
		c.maxWait = DefaultMaxWait
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.log = c.log.Named("cache")
	if err := c.ensureStore(cfg); err != nil {
		return nil, err
	}
	c.cfg.Store(cfg)
	return c, nil
}

// storeBox holds the store and, when the Cache built it, the same store
// as its in-process type.
type storeBox struct {
	s   Store
	own *ristrettoStore
}

// ensureStore builds the in-process store when cfg enables the cache and
// there is none yet. It runs before cfg is published, so a request that
// sees the cache enabled finds the store.
func (c *Cache) ensureStore(cfg *settings) error {
	if !cfg.enabled || c.box.Load() != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.box.Load() != nil {
		return nil
	}
	st, err := newRistrettoStore(cfg.maxBytes, func(expired bool) {
		if expired {
			c.m.expired.Inc()
		} else {
			c.m.evicted.Inc()
		}
	})
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	c.box.Store(&storeBox{s: st, own: st})
	return nil
}

// store returns the store, nil while the cache has never been enabled.
func (c *Cache) store() Store {
	if b := c.box.Load(); b != nil {
		return b.s
	}
	return nil
}

// own returns the in-process store the Cache built, if any.
func (c *Cache) own() *ristrettoStore {
	if b := c.box.Load(); b != nil {
		return b.own
	}
	return nil
}

// Reconfigure applies new settings (a config reload): entries stay; a
// changed max_bytes resizes the in-process store, which is built here if
// the cache is enabled for the first time.
func (c *Cache) Reconfigure(s config.CacheSettings) error {
	cfg, err := compile(s)
	if err != nil {
		return err
	}
	if err := c.ensureStore(cfg); err != nil {
		return err
	}
	c.mu.Lock() // orders resizes with a concurrent build
	defer c.mu.Unlock()
	old := c.cfg.Swap(cfg)
	if own := c.own(); own != nil && old.maxBytes != cfg.maxBytes {
		own.setMaxBytes(cfg.maxBytes)
	}
	return nil
}

// Close releases the store the Cache built (not one passed in Options).
func (c *Cache) Close() {
	if own := c.own(); own != nil {
		_ = own.Close()
	}
}

// Collectors returns the cache's metrics, to register once.
func (c *Cache) Collectors() []prometheus.Collector { return c.m.collectors() }

// Middleware returns the pipeline stage (the Cache itself).
func (c *Cache) Middleware() pipeline.Middleware { return c }

// Name implements pipeline.Middleware.
func (c *Cache) Name() string { return "cache" }

// Serve implements pipeline.Middleware: answer from the cache, wait for an
// identical request in flight, or go upstream and store the answer.
func (c *Cache) Serve(x *pipeline.Exchange, next pipeline.Handler) error {
	cfg := c.cfg.Load()
	if !cfg.enabled || int(x.Dialect) >= len(cfg.types) || !cfg.types[x.Dialect] {
		return next(x)
	}
	var r request
	k := acquireKeyer()
	if !k.read(x, &r) {
		k.release()
		return next(x)
	}
	if !eligible(cfg, &r) || (r.ctl.noCache && r.ctl.noStore) {
		k.release()
		return next(x)
	}
	key, ok := k.key(cfg, x, &r)
	k.release()
	if !ok {
		return next(x)
	}

	if !r.ctl.noCache {
		if e, _, ok := c.lookup(x, key, &r.ctl); ok {
			c.m.hits.Inc()
			c.hit(x, key, &e)
			return nil
		}
	}
	var fl *flight
	if !r.ctl.noCache {
		var leader bool
		fl, leader = c.flights.join(key, !r.ctl.noStore)
		switch {
		case fl != nil && !leader:
			if raw := wait(x, fl, c.maxWait); raw != nil {
				var e entry
				if e.decode(raw) == nil && e.dialect == x.Dialect {
					c.m.coalesced.Inc()
					c.hit(x, key, &e)
					return nil
				}
			}
			// The leader failed, its answer was not cacheable, or the wait
			// ended: this request goes upstream itself (every waiting
			// follower does, at once).
			fl = nil
		case leader:
			// A leader that finished between our lookup and join stored
			// its entry before leaving the table: look once more.
			if e, raw, ok := c.lookup(x, key, &r.ctl); ok {
				c.flights.finish(key, fl, raw)
				c.m.hits.Inc()
				c.hit(x, key, &e)
				return nil
			}
		}
	}
	c.m.misses.Inc()
	x.ResponseSet = append(x.ResponseSet, [2]string{HeaderCache, "MISS"})
	if r.ctl.noStore {
		return next(x)
	}
	ttl := cfg.ttl
	if r.ctl.ttl > 0 {
		ttl = r.ctl.ttl
	}
	return c.fetch(x, key, ttl, fl, next)
}

// eligible decides whether a request uses the cache at all: an explicit
// "use-cache": true always; under default_off nothing else; otherwise
// deterministic requests (temperature 0, a seed, embeddings), or every
// request with all_requests.
func eligible(cfg *settings, r *request) bool {
	if r.ctl.useCache {
		return true
	}
	if cfg.defaultOff {
		return false
	}
	return cfg.all || r.deterministic
}

func ctxOf(x *pipeline.Exchange) context.Context {
	if x.Ctx != nil {
		return x.Ctx
	}
	return context.Background()
}

// lookup returns the live entry for key that the request accepts.
func (c *Cache) lookup(x *pipeline.Exchange, key string, ctl *controls) (entry, []byte, bool) {
	var e entry
	st := c.store()
	if st == nil {
		return e, nil, false
	}
	raw, ok, err := st.Get(ctxOf(x), key)
	if err != nil {
		c.log.Debug("cache read failed", zap.String("id", x.ID), zap.Error(err))
		return e, nil, false
	}
	if !ok || e.decode(raw) != nil || e.dialect != x.Dialect {
		return e, nil, false
	}
	now := c.now().UnixNano()
	if now >= e.expires || (ctl.hasMaxAge && now-e.created > int64(ctl.maxAge)) {
		return e, nil, false
	}
	return e, raw, true
}

// hit answers x from e: the stored body, or a replayed stream when the
// client streams. Nothing is priced (x.Served stays nil); SavedCost is
// what the answer cost when it was fetched.
func (c *Cache) hit(x *pipeline.Exchange, key string, e *entry) {
	x.CacheHit = true
	x.SavedCost = e.cost
	x.ModelGroup = e.group
	x.ResponseSet = append(x.ResponseSet, [2]string{HeaderCache, "HIT"}, [2]string{HeaderCacheKey, key})
	resp := &provider.Response{Dialect: x.Dialect, Status: 200, Usage: e.tokens, HasUsage: true}
	if x.Stream {
		resp.Stream = newReplay(x.Dialect, e.body, e.tokens, x.IncludeUsage)
	} else {
		resp.Body = e.body
	}
	x.Response = resp
}

// fetch goes upstream and stores the answer. A complete body is stored
// (and handed to the followers) before fetch returns; a stream is stored
// by a response filter when it ends complete. fl (nil when the request
// leads no flight) is always finished, whatever happens.
func (c *Cache) fetch(x *pipeline.Exchange, key string, ttl time.Duration, fl *flight, next pipeline.Handler) error {
	handed := false
	defer func() {
		if !handed {
			c.flights.finish(key, fl, nil)
		}
	}()
	err := next(x)
	resp := x.Response
	if err != nil || resp == nil || resp.Status != 200 || x.Err != nil {
		return err
	}
	if resp.Stream != nil {
		rec := &recorder{c: c, key: key, ttl: ttl, fl: fl, asm: newAssembler(x.Dialect)}
		if !x.AddFilter(rec) {
			return nil
		}
		// The guard finishes the flight if the stream is closed before its
		// end reached the filters (the server failed before streaming).
		resp.Stream = &guarded{Stream: resp.Stream, rec: rec}
		handed = true
		return nil
	}
	body, t, ok := clientBody(x)
	if !ok {
		return nil
	}
	c.flights.finish(key, fl, c.put(x, key, ttl, body, t))
	handed = true
	return nil
}

// clientBody returns the answer in the client's dialect and its usage. An
// answer in another dialect is translated here, once, and x.Response is
// replaced by the translated same-dialect response, which the server
// passes through.
func clientBody(x *pipeline.Exchange) ([]byte, llm.Tokens, bool) {
	resp := x.Response
	if resp.Dialect == x.Dialect {
		t := resp.Usage
		if !resp.HasUsage {
			t, _ = translate.UsageFromBody(x.Dialect, resp.Body)
		}
		return resp.Body, t, isAnswer(x.Dialect, resp.Body)
	}
	body, t, err := translate.ConvertBody(resp.Dialect, x.Dialect, resp.Body, x.Model)
	if err != nil {
		return nil, t, false // the server's own translation reports it
	}
	x.Response = &provider.Response{Dialect: x.Dialect, Status: resp.Status, Body: body, Usage: t, HasUsage: true}
	resp.Release()
	return body, t, isAnswer(x.Dialect, body)
}

// isAnswer is a sanity check that body is a successful answer.
func isAnswer(d llm.Dialect, body []byte) bool {
	switch d {
	case llm.OpenAIChat, llm.OpenAICompletion:
		return gjson.GetBytes(body, "choices").IsArray()
	case llm.OpenAIEmbedding:
		return gjson.GetBytes(body, "data").IsArray()
	case llm.AnthropicMessages:
		return gjson.GetBytes(body, "type").Str == "message"
	}
	return false
}

// put stores an answer and returns its encoded entry (for the followers,
// even when the store refused it).
func (c *Cache) put(x *pipeline.Exchange, key string, ttl time.Duration, body []byte, t llm.Tokens) []byte {
	now := c.now()
	e := entry{dialect: x.Dialect, created: now.UnixNano(), expires: now.Add(ttl).UnixNano(), tokens: t, body: body,
		group: x.ModelGroup}
	if e.group == "" {
		e.group = x.RouteGroup()
	}
	if x.Served != nil {
		e.cost = x.Served.Cost(t)
	}
	raw := e.encode()
	st := c.store()
	if st == nil {
		return raw
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	err := st.Set(ctx, key, raw, ttl)
	cancel()
	if err != nil {
		c.log.Warn("cache write failed", zap.String("id", x.ID), zap.Error(err))
		return raw
	}
	c.m.stores.Inc()
	return raw
}

// recorder is the response filter of a streamed miss: it passes every
// event on unchanged, assembles them, and stores the answer when the
// stream ends complete. One per request.
type recorder struct {
	c       *Cache
	key     string
	ttl     time.Duration
	fl      *flight
	asm     *assembler
	settled atomic.Bool
}

var _ pipeline.Filter = (*recorder)(nil)

// Body is not used: complete bodies are stored by fetch.
func (r *recorder) Body(_ *pipeline.Exchange, body []byte) ([]byte, error) { return body, nil }

// Event records the event and passes it on.
func (r *recorder) Event(_ *pipeline.Exchange, name, data []byte, emit pipeline.Emit) error {
	r.asm.event(name, data)
	return emit(name, data)
}

// End stores the assembled answer when the stream completed normally;
// a cut or failed stream is never stored. Followers are released either
// way.
func (r *recorder) End(x *pipeline.Exchange, complete bool, _ pipeline.Emit) error {
	if !r.settled.CompareAndSwap(false, true) {
		return nil
	}
	var raw []byte
	if complete && x.Err == nil {
		if body, ok := r.asm.body(x.Tokens); ok {
			raw = r.c.put(x, r.key, r.ttl, body, x.Tokens)
		}
	}
	r.c.flights.finish(r.key, r.fl, raw)
	return nil
}

func (r *recorder) abandon() {
	if r.settled.CompareAndSwap(false, true) {
		r.c.flights.finish(r.key, r.fl, nil)
	}
}

// guarded is the upstream stream of a streamed miss: closing it (always
// done when the exchange is released) abandons the recorder if the filters
// never saw the end.
type guarded struct {
	provider.Stream
	rec *recorder
}

func (g *guarded) Close() error {
	err := g.Stream.Close()
	g.rec.abandon()
	return err
}
