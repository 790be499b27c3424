// Package wasm is the Wasm plugin host and the "plugins" pipeline stage:
// it runs guest modules written against sdk/ABI.md (gw ABI v1) in wazero.
// See README.md for the lifecycle and how a request passes through.
package wasm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/route"
)

// Error codes the stage returns.
const (
	// CodePluginFailed is a fail_closed plugin's failure (503).
	CodePluginFailed errs.Code = "plugin_failed"
	// CodeBlocked is the default code of a plugin's reject.
	CodeBlocked errs.Code = "blocked_by_plugin"
)

// maxPlugins bounds portcullis.plugins (a request's plugins are a bit set).
const maxPlugins = 64

// Options configure Build.
type Options struct {
	Log *zap.Logger
	// Router validates route decisions and lists the model groups for the
	// envelope's "models". Nil (tools only): routes are not checked.
	Router *route.Router
	// CacheDir is portcullis.wasm.cache_dir: the compilation cache
	// directory ("" the user cache dir's portcullis/wasm, "off" none).
	CacheDir string
	// Metrics are the process-level collectors (NewMetrics, created
	// once). Nil: unregistered collectors.
	Metrics *Metrics
	// BaseDir resolves relative module paths (the config file's
	// directory); "" leaves them relative to the working directory.
	BaseDir string
	// Source names the config in error messages.
	Source string
	// Models are the envelope's "models" when Router is nil (tools).
	Models []string
}

// Stage is the compiled plugins of one config snapshot: the "plugins"
// middleware. It owns wazero runtimes and instance pools; Close releases
// them when the snapshot is retired.
type Stage struct {
	log     *zap.Logger
	host    *host
	router  *route.Router
	models  []byte // the envelope's "models" array
	plugins []*Plugin
	// respMask has a bit per plugin called for a response or stream hook.
	respMask uint64
	once     sync.Once
}

var _ pipeline.Middleware = (*Stage)(nil)

// Build loads, compiles and validates plugins (in list order) and starts
// one instance of each. Errors are a *config.Error naming the plugin.
func Build(plugins []config.PluginSettings, o Options) (*Stage, error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	s := &Stage{log: o.Log.Named("plugins"), router: o.Router}
	problem := func(path, msg string) error {
		return &config.Error{Source: o.Source, Problems: []config.Problem{{Path: path, Msg: msg}}}
	}
	if len(plugins) > maxPlugins {
		return nil, problem("portcullis.plugins", fmt.Sprintf("at most %d plugins", maxPlugins))
	}
	names := o.Models
	if o.Router != nil {
		names = o.Router.Names()
	}
	s.models, _ = json.Marshal(append([]string{}, names...))
	s.host = newHost(s.log, o.CacheDir)
	lo := o
	lo.Log = o.Log.Named("plugin")
	for i := range plugins {
		ps := &plugins[i]
		path := ps.Path_
		if path == "" {
			path = fmt.Sprintf("portcullis.plugins[%d]", i)
		}
		if ps.Name == "" {
			s.Close()
			return nil, problem(path, "the plugin has no name")
		}
		p, err := s.host.load(context.Background(), ps, &lo)
		if err != nil {
			s.Close()
			return nil, problem(path, fmt.Sprintf("plugin %q: %v", ps.Name, err))
		}
		s.plugins = append(s.plugins, p)
		if p.hooks.has(HookResponse) || p.hooks.has(HookStreamEvent) || p.hooks.has(HookStreamEnd) {
			s.respMask |= 1 << i
		}
	}
	return s, nil
}

// Middleware returns the stage as the pipeline's "plugins" middleware.
func (s *Stage) Middleware() pipeline.Middleware { return s }

// Name implements pipeline.Middleware.
func (s *Stage) Name() string { return "plugins" }

// Plugins returns the loaded plugins in list order.
func (s *Stage) Plugins() []*Plugin { return s.plugins }

// Close closes every instance and runtime. Calls after Close fail with
// reason "closed". Safe to call more than once.
func (s *Stage) Close() {
	s.once.Do(func() {
		for _, p := range s.plugins {
			p.close()
		}
		if s.host != nil {
			s.host.close(context.Background())
		}
	})
}

// Serve runs the on_request hooks of the plugins that apply to x, in list
// order, and registers one response filter for those with response or
// stream hooks.
func (s *Stage) Serve(x *pipeline.Exchange, next pipeline.Handler) error {
	var mask uint64
	var ri reqInfo
	for i, p := range s.plugins {
		if !p.apply.match(x) {
			continue
		}
		mask |= 1 << i
		if !p.hooks.has(HookRequest) {
			continue
		}
		done, err := s.request(p, x, &ri)
		if err != nil || done {
			return err
		}
	}
	if mask &= s.respMask; mask != 0 {
		f := s.newFilter(mask)
		if !x.AddFilter(f) {
			for _, p := range f.ps {
				if !p.failOpen {
					return errs.New(503, CodePluginFailed, "plugin "+p.name+" cannot see the response: too many response filters")
				}
			}
			s.log.Warn("response plugins skipped: too many response filters", zap.String("id", x.ID))
		}
	}
	return next(x)
}

// failure applies the plugin's failure policy: nil when it fails open.
func (s *Stage) failure(p *Plugin, f *Failure) error {
	if p.failOpen {
		return nil
	}
	return errs.New(503, CodePluginFailed, "plugin "+p.name+" failed ("+f.Reason+")").Wrap(f)
}

// buffers hold an envelope and a result for one call.
type buffers struct {
	env, res []byte
}

var bufPool = sync.Pool{New: func() any { return &buffers{env: make([]byte, 0, 4096), res: make([]byte, 0, 1024)} }}

func getBuffers() *buffers { return bufPool.Get().(*buffers) }

func putBuffers(b *buffers) {
	if cap(b.env) > maxResult || cap(b.res) > maxResult {
		return
	}
	bufPool.Put(b)
}

// call runs one hook and decodes its result. r is nil when the guest
// returned 0. On success the instance is still held: the caller applies
// the result and calls p.finish.
func (p *Plugin) call(h Hook, env func([]byte) []byte) (in *instance, r *Result, f *Failure) {
	b := getBuffers()
	b.env = env(b.env[:0])
	in, res, ok, f := p.begin(h, b.env, b.res[:0])
	b.res = res
	if f != nil || !ok {
		putBuffers(b)
		return in, nil, f
	}
	r, e := decodeResult(h, res)
	putBuffers(b)
	if e != nil {
		f = &Failure{Plugin: p.name, Hook: h, Reason: e.reason, Msg: e.msg}
		p.finish(in, f)
		return nil, nil, f
	}
	return in, r, nil
}

// request runs one plugin's on_request. done is true when the plugin
// answered (respond) or rejected the request.
func (s *Stage) request(p *Plugin, x *pipeline.Exchange, ri *reqInfo) (done bool, err error) {
	in, r, f := p.call(HookRequest, func(b []byte) []byte { return s.appendRequestEnvelope(b, x, ri) })
	if f != nil {
		return false, s.failure(p, f)
	}
	if r == nil {
		p.finish(in, nil)
		return false, nil
	}
	// Validate everything before changing x.
	var rb *reqBody
	if len(r.ops) > 0 {
		body, e := r.applyPatch(x.Body)
		if e == nil {
			rb, e = reparse(x.Dialect, body, touchesTags(r))
		}
		if e != nil {
			return false, s.refuse(p, in, HookRequest, e)
		}
	}
	switch r.Action {
	case "route":
		if e := s.checkRoute(r.Route); e != nil {
			return false, s.refuse(p, in, HookRequest, e)
		}
	case "respond":
		stream := x.Stream
		if rb != nil {
			stream = rb.stream
		}
		if stream {
			return false, s.refuse(p, in, HookRequest, bad(ReasonBadAction, "respond to a streaming request"))
		}
	}
	p.finish(in, nil)

	if rb != nil {
		x.Body, x.Model, x.Stream, x.MaxTokens = rb.body, rb.model, rb.stream, rb.maxTokens
		if rb.tagsTouched {
			x.Tags = rb.tags
		}
		ri.hasChars = false
	}
	for _, k := range sortedKeys(r.SetHeaders) {
		if !deniedHeader(k) {
			x.UpstreamSet = append(x.UpstreamSet, [2]string{strings.ToLower(k), r.SetHeaders[k]})
		}
	}
	for _, k := range r.RemoveHeaders {
		if !deniedHeader(k) {
			x.UpstreamRemove = append(x.UpstreamRemove, strings.ToLower(k))
		}
	}
	s.record(p, x, HookRequest, r, nil)
	switch r.Action {
	case "route":
		group := x.RouteGroup()
		x.RouteModel, x.RouteDeployment = r.Route.Model, r.Route.Deployment
		if r.Route.Fallbacks != nil {
			x.RequestFallbacks = *r.Route.Fallbacks
		}
		if x.RouteGroup() != group {
			// The key's model lists and budget reservation follow the
			// new group (pipeline.Readmitter).
			if err := x.Readmit(); err != nil {
				return true, err
			}
		}
	case "reject":
		return true, rejectError(p, r.Reject)
	case "respond":
		var body bytes.Buffer
		if err := json.Compact(&body, r.Respond.Body); err != nil {
			return true, errs.Internal("plugin response body", err)
		}
		x.Response = &provider.Response{Dialect: x.Dialect, Status: r.Respond.Status, Body: body.Bytes(), HasUsage: true}
		return true, nil
	}
	return false, nil
}

// refuse discards the instance whose result was refused and applies the
// failure policy.
func (s *Stage) refuse(p *Plugin, in *instance, h Hook, e *resultError) error {
	f := &Failure{Plugin: p.name, Hook: h, Reason: e.reason, Msg: e.msg}
	p.finish(in, f)
	return s.failure(p, f)
}

func rejectError(p *Plugin, rj *RejectResult) error {
	msg := rj.Message
	if msg == "" {
		msg = "blocked by plugin " + p.name
	}
	return errs.New(rj.Status, errs.Code(rj.Code), msg)
}

// checkRoute checks a route decision against the configured models.
func (s *Stage) checkRoute(rt *RouteResult) *resultError {
	if s.router == nil {
		return nil
	}
	if _, ok := s.router.Group(rt.Model); !ok {
		return bad(ReasonBadRoute, "route to unknown model "+strconvQuote(rt.Model))
	}
	if rt.Deployment != "" && !s.router.HasDeployment(rt.Model, rt.Deployment) {
		return bad(ReasonBadRoute, "route to unknown deployment "+strconvQuote(rt.Deployment)+" of "+strconvQuote(rt.Model))
	}
	if rt.Fallbacks != nil {
		for _, m := range *rt.Fallbacks {
			if _, ok := s.router.Group(m); !ok {
				return bad(ReasonBadRoute, "fallback to unknown model "+strconvQuote(m))
			}
		}
	}
	return nil
}

// record applies what every hook's result may carry: labels, redactions
// (as "redacted:<kind>" labels and a log line, or counted into agg for a
// stream) and the log note.
func (s *Stage) record(p *Plugin, x *pipeline.Exchange, h Hook, r *Result, agg map[string]int) {
	for _, l := range r.Labels {
		addLabel(x, l)
	}
	if len(r.Redactions) > 0 {
		for _, rd := range r.Redactions {
			addLabel(x, "redacted:"+rd.Kind)
			if agg != nil {
				agg[rd.Kind] += max(rd.Count, 1)
			}
		}
		if agg == nil {
			p.log.Info("plugin redacted", zap.String("id", x.ID), zap.String("hook", h.String()), zap.Any("redactions", r.Redactions))
		}
	}
	if r.Log != "" {
		p.log.Info("plugin note", zap.String("id", x.ID), zap.String("hook", h.String()), zap.String("log", r.Log))
	}
}

func addLabel(x *pipeline.Exchange, l string) {
	if l == "" || slices.Contains(x.Labels, l) {
		return
	}
	x.Labels = append(x.Labels, l)
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// reqBody is a patched request body and what the server's parse reads
// from it.
type reqBody struct {
	body        []byte
	model       string
	stream      bool
	maxTokens   int
	tags        []string
	tagsTouched bool
}

// touchesTags reports whether a patch may change the routing tags.
func touchesTags(r *Result) bool {
	for _, op := range r.ops {
		for _, p := range []string{op.Path, op.From} {
			if strings.HasPrefix(p, "/tags") || strings.HasPrefix(p, "/metadata") {
				return true
			}
		}
	}
	return false
}

// reparse re-reads model, stream, max_tokens and (when a patch touched
// them) the tags from a patched request body, as the server's parse does.
// Top-level "tags" are the gateway's and are removed from the body.
func reparse(d llm.Dialect, body []byte, tags bool) (*reqBody, *resultError) {
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, bad(ReasonBadPatch, "the patched body is not a JSON object")
	}
	rb := &reqBody{body: body, tagsTouched: tags}
	m := root.Get("model")
	if m.Type != gjson.String || m.Str == "" {
		return nil, bad(ReasonBadPatch, "the patched body has no model")
	}
	rb.model = m.Str
	switch st := root.Get("stream"); st.Type {
	case gjson.True:
		rb.stream = true
	case gjson.False, gjson.Null:
	default:
		return nil, bad(ReasonBadPatch, "the patched body's stream is not a boolean")
	}
	if rb.stream && d == llm.OpenAIEmbedding {
		return nil, bad(ReasonBadPatch, "embeddings cannot be streamed")
	}
	for _, k := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		if v := root.Get(k); v.Type == gjson.Number && v.Int() > 0 && (rb.maxTokens == 0 || int(v.Int()) < rb.maxTokens) {
			rb.maxTokens = int(v.Int())
		}
	}
	if tags {
		t := root.Get("tags")
		top := t.Exists()
		if !top {
			t = root.Get("metadata.tags")
		}
		if t.Exists() && t.Type != gjson.Null {
			if !t.IsArray() {
				return nil, bad(ReasonBadPatch, "the patched body's tags are not an array of strings")
			}
			for _, e := range t.Array() {
				if e.Type != gjson.String {
					return nil, bad(ReasonBadPatch, "the patched body's tags are not an array of strings")
				}
				rb.tags = append(rb.tags, e.Str)
			}
		}
		if top {
			b, err := sjson.DeleteBytes(body, "tags")
			if err != nil {
				return nil, bad(ReasonBadPatch, err.Error())
			}
			rb.body = b
		}
	}
	return rb, nil
}
