package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
)

// Plugin is one loaded plugin: its compiled module, its settings and a
// bounded pool of instances.
//
// Pool: at most poolSize instances exist at once (idle or busy), so a
// plugin holds at most poolSize x memory_limit_pages of guest memory.
// Instances are created lazily; one serves one call at a time. A caller
// finding none idle and the pool full waits for one until the hook's
// deadline (reason "busy"). An instance whose call failed in any way is
// closed and never returned.
type Plugin struct {
	name     string
	log      *zap.Logger
	metrics  *Metrics
	hm       [numHooks]hookMetrics
	exports  hookSet
	hooks    hookSet // the hooks the plugin is called for
	failOpen bool
	trusted  bool
	timeout  time.Duration
	pages    uint32
	config   []byte
	code     wazero.CompiledModule
	rt       wazero.Runtime
	start    []string
	apply    applyFilter

	slots  chan struct{}  // one token per live instance
	idle   chan *instance // idle instances (each holds a token)
	closed atomic.Bool

	created atomic.Int64
	live    atomic.Int64
	lines   lineLimiter
}

// Name returns the plugin's name (its config name).
func (p *Plugin) Name() string { return p.name }

// Hooks returns the hooks the plugin is called for.
func (p *Plugin) Hooks() []string { return p.hooks.names() }

// Has reports whether the plugin is called for h.
func (p *Plugin) Has(h Hook) bool { return p.hooks.has(h) }

// FailOpen reports whether the plugin's failures are ignored.
func (p *Plugin) FailOpen() bool { return p.failOpen }

// Live returns the number of instances alive (idle or busy).
func (p *Plugin) Live() int { return int(p.live.Load()) }

// Created returns the number of instances created so far.
func (p *Plugin) Created() int { return int(p.created.Load()) }

// defaultPoolSize is 2 x GOMAXPROCS, as config.PluginSettings says.
func defaultPoolSize() int { return 2 * runtime.GOMAXPROCS(0) }

// load reads, compiles and validates a plugin and starts its first
// instance (which runs on_config, so a bad config fails the load).
func (h *host) load(ctx context.Context, ps *config.PluginSettings, o *Options) (*Plugin, error) {
	path := ps.Module
	if !filepath.IsAbs(path) && o.BaseDir != "" {
		path = filepath.Join(o.BaseDir, path)
	}
	code, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pages := ps.MemoryLimitPages
	if pages <= 0 {
		pages = 256
	}
	timeout := ps.Timeout
	if timeout <= 0 {
		timeout = 50 * time.Millisecond
	}
	size := ps.PoolSize
	if size <= 0 {
		size = defaultPoolSize()
	}
	key := runtimeKey{pages: uint32(pages), closeOnDone: !ps.Trusted}
	rt, err := h.runtime(ctx, key)
	if err != nil {
		return nil, err
	}
	c, err := h.compile(ctx, rt, key, code)
	if err != nil {
		return nil, fmt.Errorf("%s: not a valid WebAssembly module: %w", path, err)
	}
	shape := inspectShape(c)
	if len(shape.problems) > 0 {
		return nil, fmt.Errorf("%s: %s", path, strings.Join(shape.problems, "; "))
	}
	if m, ok := c.ExportedMemories()["memory"]; ok && m.Min() > uint32(pages) {
		return nil, fmt.Errorf("%s: the module needs %d pages of memory to start, over memory_limit_pages %d", path, m.Min(), pages)
	}
	p := &Plugin{
		name: ps.Name, log: o.Log.With(zap.String("plugin", ps.Name)), metrics: o.Metrics, exports: shape.exports,
		failOpen: ps.FailurePolicy == "fail_open", trusted: ps.Trusted, timeout: timeout, pages: uint32(pages),
		config: ps.Config, code: c, rt: rt, start: shape.start,
		slots: make(chan struct{}, size), idle: make(chan *instance, size),
	}
	if len(p.config) == 0 {
		p.config = []byte("null")
	}
	for hk := HookConfig; hk < numHooks; hk++ {
		p.hm[hk] = o.Metrics.hook(p.name, hk)
	}
	p.hooks = shape.exports
	if len(ps.Hooks) > 0 {
		var want hookSet
		for _, n := range ps.Hooks {
			hk, ok := ParseHook(n)
			if !ok || hk == HookConfig {
				return nil, fmt.Errorf("hooks: unknown hook %q", n)
			}
			if !shape.exports.has(hk) {
				return nil, fmt.Errorf("hooks: the module does not export %s (it exports: %s)", hk.Export(), strings.Join(shape.exports.names(), ", "))
			}
			want.add(hk)
		}
		p.hooks &= want
	}
	if p.apply, err = compileApply(ps); err != nil {
		return nil, err
	}
	// The first instance validates instantiation and the config, and
	// tells which hooks an SDK that exports all of them handles.
	p.slots <- struct{}{}
	in, narrow, err := p.newInstance()
	if err != nil {
		<-p.slots
		var f *Failure
		if errors.As(err, &f) && f.Reason == ReasonPluginError {
			return nil, fmt.Errorf("the plugin refused its config: %s", f.Msg)
		}
		return nil, err
	}
	if narrow != nil {
		p.hooks &= *narrow | hookSet(1)<<HookConfig
	}
	p.release(in)
	return p, nil
}

// instance is one instantiated module. It serves one call at a time.
type instance struct {
	p     *Plugin
	ctx   context.Context // carries the instance to host functions
	mod   api.Module
	mem   api.Memory
	alloc api.Function
	free  api.Function
	fns   [numHooks]api.Function
	stack [2]uint64
	out   *guestWriter
	err   *guestWriter
}

// newInstance instantiates the module, runs _initialize and on_config.
// The caller holds a pool slot for it. narrow is the on_config result's
// hook list, when it has one.
func (p *Plugin) newInstance() (_ *instance, narrow *hookSet, err error) {
	in := &instance{p: p}
	in.ctx = context.WithValue(context.Background(), instanceKey{}, in)
	in.out, in.err = &guestWriter{p: p, level: 1}, &guestWriter{p: p, level: 2}
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions(p.start...).
		WithStdout(in.out).WithStderr(in.err).WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader)
	// Starting a Go guest takes milliseconds: a longer deadline than a
	// hook's.
	ctx, cancel := context.WithTimeout(in.ctx, max(p.timeout, 2*time.Second))
	defer cancel()
	mod, err := p.rt.InstantiateModule(ctx, p.code, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("instantiate: %w", err)
	}
	in.mod, in.mem = mod, mod.Memory()
	in.alloc, in.free = mod.ExportedFunction("gw_alloc"), mod.ExportedFunction("gw_free")
	for h := HookConfig; h < numHooks; h++ {
		if p.exports.has(h) {
			in.fns[h] = mod.ExportedFunction(h.Export())
		}
	}
	p.created.Add(1)
	p.live.Add(1)
	p.metrics.inst.WithLabelValues(p.name).Inc()
	if in.fns[HookConfig] != nil {
		res, ok, f := in.invoke(ctx, HookConfig, p.config, nil)
		if f == nil && ok {
			r, e := decodeResult(HookConfig, res)
			switch {
			case e != nil:
				f = &Failure{Reason: e.reason, Msg: e.msg}
			case r.Action != "continue":
				f = &Failure{Reason: ReasonBadAction, Msg: "on_config may only continue or fail"}
			default:
				if r.Log != "" {
					p.log.Info("plugin config", zap.String("log", r.Log))
				}
				if r.Hooks != nil {
					var s hookSet
					for _, n := range r.Hooks {
						hk, _ := ParseHook(n)
						s.add(hk)
					}
					narrow = &s
				}
			}
		}
		if f != nil {
			in.close()
			f.Plugin, f.Hook = p.name, HookConfig
			return nil, nil, f
		}
	}
	return in, narrow, nil
}

func (in *instance) close() {
	in.out.flush()
	in.err.flush()
	_ = in.mod.Close(context.Background())
	in.p.live.Add(-1)
}

// invoke writes the envelope into a guest buffer, calls the hook and
// appends the result document to dst. ok is false when the guest returned
// 0 (continue, no changes).
func (in *instance) invoke(ctx context.Context, h Hook, env, dst []byte) (_ []byte, ok bool, f *Failure) {
	fail := func(reason, msg string, err error) ([]byte, bool, *Failure) {
		// A trap with memory (nearly) at the limit: most likely a failed
		// memory.grow (a guest allocator aborting).
		if reason == ReasonTrap && uint64(in.mem.Size()) >= uint64(in.p.pages)*65536*9/10 {
			reason = ReasonMemory
		}
		return dst, false, &Failure{Plugin: in.p.name, Hook: h, Reason: reason, Msg: msg, cause: err}
	}
	st := in.stack[:]
	st[0] = uint64(uint32(len(env)))
	if err := in.alloc.CallWithStack(ctx, st[:1]); err != nil {
		return fail(exitReason(err, ctx.Err() != nil), "gw_alloc", err)
	}
	ptr := uint32(st[0])
	if ptr == 0 || !in.mem.Write(ptr, env) {
		return fail(ReasonAlloc, fmt.Sprintf("gw_alloc(%d) returned %#x", len(env), ptr), nil)
	}
	st[0], st[1] = uint64(ptr), uint64(uint32(len(env)))
	if err := in.fns[h].CallWithStack(ctx, st); err != nil {
		return fail(exitReason(err, ctx.Err() != nil), "", err)
	}
	packed := st[0]
	if packed == 0 {
		return dst, false, nil
	}
	rp, rl := uint32(packed>>32), uint32(packed)
	if rl > maxResult {
		return fail(ReasonTooLarge, fmt.Sprintf("%d bytes", rl), nil)
	}
	b, inside := in.mem.Read(rp, rl)
	if !inside {
		return fail(ReasonBadResult, "the result is outside memory", nil)
	}
	dst = append(dst, b...)
	st[0] = uint64(rp)
	if err := in.free.CallWithStack(ctx, st[:1]); err != nil {
		return fail(exitReason(err, ctx.Err() != nil), "gw_free", err)
	}
	return dst, rl > 0, nil
}

// acquire takes an idle instance, or creates one when the pool has room,
// or waits for either until the hook's deadline.
func (p *Plugin) acquire(h Hook) (*instance, *Failure) {
	if p.closed.Load() {
		return nil, &Failure{Plugin: p.name, Hook: h, Reason: ReasonClosed}
	}
	select {
	case in := <-p.idle:
		return in, nil
	default:
	}
	select {
	case in := <-p.idle:
		return in, nil
	case p.slots <- struct{}{}:
		return p.create(h)
	default:
	}
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case in := <-p.idle:
		return in, nil
	case p.slots <- struct{}{}:
		return p.create(h)
	case <-t.C:
		return nil, &Failure{Plugin: p.name, Hook: h, Reason: ReasonBusy, Msg: "no instance became free before the deadline"}
	}
}

func (p *Plugin) create(h Hook) (*instance, *Failure) {
	in, _, err := p.newInstance()
	if err != nil {
		<-p.slots
		var f *Failure
		if errors.As(err, &f) {
			f.Reason = ReasonInstantiate
			return nil, f
		}
		return nil, &Failure{Plugin: p.name, Hook: h, Reason: ReasonInstantiate, cause: err}
	}
	return in, nil
}

// release returns a healthy instance to the pool.
func (p *Plugin) release(in *instance) {
	if p.closed.Load() {
		p.discard(in)
		return
	}
	select {
	case p.idle <- in:
	default:
		p.discard(in)
	}
}

// discard closes an instance and frees its slot.
func (p *Plugin) discard(in *instance) {
	in.close()
	<-p.slots
}

// close closes the idle instances; busy ones are closed when released.
func (p *Plugin) close() {
	p.closed.Store(true)
	for {
		select {
		case in := <-p.idle:
			p.discard(in)
		default:
			return
		}
	}
}

// begin runs one hook call on a pooled instance: envelope in, raw result
// out (appended to dst). On success the caller validates and applies the
// result, then calls finish with the instance and the outcome. On failure
// the instance is already discarded and the failure counted.
func (p *Plugin) begin(h Hook, env, dst []byte) (in *instance, res []byte, ok bool, f *Failure) {
	t0 := time.Now()
	hm := &p.hm[h]
	hm.calls.Inc()
	in, f = p.acquire(h)
	if f != nil {
		p.failed(f)
		return nil, dst, false, f
	}
	ctx, cancel := in.ctx, context.CancelFunc(nil)
	if !p.trusted {
		ctx, cancel = context.WithTimeout(in.ctx, p.timeout)
	}
	res, ok, f = in.invoke(ctx, h, env, dst)
	if cancel != nil {
		cancel()
	}
	el := time.Since(t0)
	hm.latency.Observe(el.Seconds())
	if f == nil && p.trusted && el > p.timeout {
		// A trusted plugin cannot be stopped mid-call; one that overran
		// its deadline still fails, after the fact.
		f = &Failure{Plugin: p.name, Hook: h, Reason: ReasonTimeout, Msg: fmt.Sprintf("took %v (trusted: not interrupted)", el)}
	}
	if f != nil {
		p.discard(in)
		p.failed(f)
		return nil, dst, false, f
	}
	return in, res, ok, nil
}

// finish returns the instance to the pool, or discards it when its result
// was refused (f not nil, counted here).
func (p *Plugin) finish(in *instance, f *Failure) {
	if f != nil {
		p.discard(in)
		p.failed(f)
		return
	}
	p.release(in)
}

func (p *Plugin) failed(f *Failure) {
	p.metrics.failed(p.name, f.Hook, f.Reason)
	if p.lines.allow() {
		p.log.Warn("plugin failed", zap.String("hook", f.Hook.String()), zap.String("reason", f.Reason),
			zap.String("error", f.Error()), zap.Bool("fail_open", p.failOpen))
	}
}

// Call runs hook h with an envelope on a pooled instance and returns the
// validated raw result (nil when the guest returned 0). It is what
// `portcullis plugin test` and benchmarks use; the stage validates
// routes against the router on top of this.
func (p *Plugin) Call(h Hook, env []byte) ([]byte, *Result, error) {
	if !p.hooks.has(h) && h != HookConfig {
		return nil, nil, fmt.Errorf("plugin %s is not called for %s (hooks: %s)", p.name, h, strings.Join(p.hooks.names(), ", "))
	}
	in, res, ok, f := p.begin(h, env, nil)
	if f != nil {
		return nil, nil, f
	}
	if !ok {
		p.finish(in, nil)
		return nil, &Result{Action: "continue"}, nil
	}
	r, e := decodeResult(h, res)
	if e != nil {
		f = &Failure{Plugin: p.name, Hook: h, Reason: e.reason, Msg: e.msg}
		p.finish(in, f)
		return res, nil, f
	}
	p.finish(in, nil)
	return res, r, nil
}

// guestLog writes a gw.log line.
func (p *Plugin) guestLog(level int32, msg string) {
	if !p.lines.allow() {
		return
	}
	switch level {
	case 0:
		p.log.Debug(msg)
	case 1:
		p.log.Info(msg)
	case 2:
		p.log.Warn(msg)
	default:
		p.log.Error(msg)
	}
}

// lineLimiter caps a plugin's log output at linesPerSecond lines (guest
// output and failure warnings), so a chatty or failing plugin cannot flood
// the gateway log.
type lineLimiter struct {
	sec     atomic.Int64
	n       atomic.Int64
	dropped atomic.Int64
}

const linesPerSecond = 50

func (l *lineLimiter) allow() bool {
	now := time.Now().Unix()
	if s := l.sec.Load(); s != now && l.sec.CompareAndSwap(s, now) {
		l.n.Store(0)
		l.dropped.Store(0)
	}
	if l.n.Add(1) <= linesPerSecond {
		return true
	}
	l.dropped.Add(1)
	return false
}

// guestWriter turns a guest's stdout or stderr into log lines of at most
// 4 KiB.
type guestWriter struct {
	p     *Plugin
	level int32
	mu    sync.Mutex
	buf   []byte
}

func (w *guestWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if room := maxLogLen - len(w.buf); room > 0 {
			w.buf = append(w.buf, b[:min(i, room)]...)
		}
		if i == len(b) {
			break
		}
		w.emit()
		b = b[i+1:]
	}
	return n, nil
}

func (w *guestWriter) emit() {
	if len(w.buf) > 0 {
		w.p.guestLog(w.level, string(w.buf))
	}
	w.buf = w.buf[:0]
}

func (w *guestWriter) flush() {
	w.mu.Lock()
	w.emit()
	w.mu.Unlock()
}

// pagesNow returns the memory size of an idle instance, in pages (tests).
func (p *Plugin) pagesNow() uint32 {
	select {
	case in := <-p.idle:
		n := in.mem.Size() / 65536
		p.idle <- in
		return n
	default:
		return 0
	}
}
