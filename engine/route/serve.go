package route

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/sse"
)

// Serve is the terminal handler: pick, call, and on failure retry, cool
// down and fall back until a deployment answers or nothing is left. For a
// stream, "answers" means its first event arrived: until then any failure
// may still be retried or fall back, after it nothing can.
func (r *Router) Serve(x *pipeline.Exchange) error {
	primary, ok := r.Group(x.RouteGroup())
	if !ok {
		e := errs.New(404, errs.CodeModelNotFound, "The model `"+x.RouteGroup()+"` does not exist or you do not have access to it.")
		e.Param = "model"
		return e
	}
	fallbacks := fallbacksFor(primary, x)
	switched := false // moved to a context-window or content-policy list
	g := primary
	next := 0
	used := 0
	for {
		err := r.tryGroup(x, g, primary)
		if err == nil {
			return nil
		}
		e := errs.From(err)
		cls := Classify(e)
		upstream := e.Provider != "" || errs.CodeOf(e) == errNoDeployment
		if !upstream {
			return e
		}
		switch {
		case cls == ClassContextWindow && !switched:
			fallbacks, next, switched = r.set.ContextWindowFallbacks[primary.Name], 0, true
		case cls == ClassContentPolicy && !switched:
			fallbacks, next, switched = r.set.ContentPolicyFallbacks[primary.Name], 0, true
		case !r.set.Policy[cls].Fallback && errs.CodeOf(e) != errNoDeployment:
			return e
		}
		// The next fallback group that exists and was not tried.
		var ng *Group
		for next < len(fallbacks) && ng == nil {
			name := fallbacks[next]
			next++
			if cand, ok := r.groups[name]; ok && cand != g && !x.TriedGroup(name) {
				ng = cand
			}
		}
		if ng == nil || used >= r.set.MaxFallbacks {
			return e
		}
		used++
		x.FallbacksUsed = used
		primary.fallbacks.Fallback()
		r.log.Info("falling back", zap.String("id", x.ID), zap.String("from", g.Name), zap.String("to", ng.Name),
			zap.String("error_code", string(e.Code)), zap.Int("status", e.Status))
		g = ng
	}
}

// errNoDeployment is the code when every deployment of a group is cooling
// down, at capacity or filtered out by tags.
const errNoDeployment errs.Code = "no_deployment_available"

// fallbacksFor returns the ordered fallback groups: the request body's
// "fallbacks" win, then the group's configured ones (configFallbacks,
// resolved when the router is built).
func fallbacksFor(g *Group, x *pipeline.Exchange) []string {
	if len(x.RequestFallbacks) > 0 {
		return x.RequestFallbacks
	}
	return g.configFallbacks
}

// configFallbacks returns router_settings.fallbacks for the group (or
// "*"), else default_fallbacks.
func (r *Router) configFallbacks(group string) []string {
	if f, ok := r.set.Fallbacks[group]; ok {
		return f
	}
	if f, ok := r.set.Fallbacks["*"]; ok {
		return f
	}
	return r.set.DefaultFallbacks
}

// tryGroup tries g until an attempt succeeds or the error's class allows no
// more retries.
func (r *Router) tryGroup(x *pipeline.Exchange, g, primary *Group) error {
	x.MarkGroup(g.Name)
	f := filter{tags: x.Tags}
	if x.RouteDeployment != "" && g == primary {
		// A plugin pinned one deployment of the group: tags do not apply.
		f.only, f.tags = x.RouteDeployment, nil
	}
	for attempt := 0; ; attempt++ {
		f.now = time.Now().UnixNano()
		d := r.pick(g, &f, x.Stream)
		if d == nil && f.skip != nil {
			// The deployment that just failed is the only one left: a
			// retry may go back to it.
			f.skip = nil
			d = r.pick(g, &f, x.Stream)
		}
		if d == nil {
			return r.noDeployment(g, x)
		}
		err := r.attempt(x, g, d)
		if err == nil {
			return nil
		}
		e := errs.From(err)
		if e.Provider == "" && e.Code != errs.CodeUpstreamTimeout {
			return e // the gateway's own error (translation, unsupported): nothing to retry
		}
		if e.Provider == "" {
			e.Provider = d.ProviderName
		}
		cls := Classify(e)
		pol := r.set.Policy[cls]
		allowed := pol.AllowedFails
		if allowed == -2 {
			allowed = r.set.AllowedFails
		}
		// A cooldown only helps when there is somewhere else to go: a
		// group's only deployment, with no fallback, stays in the rotation
		// (cooling it down would turn a burst of errors into an outage).
		if !r.canCoolDown(g, x) {
			allowed = -1
		}
		if d.health.fail(time.Now().UnixNano(), allowed, r.set.CooldownTime) {
			d.metrics.Cooldown()
			r.log.Warn("deployment cooled down", zap.String("deployment", d.ID), zap.String("model", g.Name),
				zap.Duration("for", r.set.CooldownTime), zap.String("class", cls.String()))
		}
		retries := pol.Retries
		if retries == -1 {
			retries = r.set.NumRetries
			if x.NumRetriesSet {
				retries = x.NumRetries
			}
		}
		if attempt >= retries {
			return e
		}
		wait := r.backoff(attempt, e.RetryAfter)
		if wait < 0 || (!x.Deadline.IsZero() && time.Now().Add(wait).After(x.Deadline)) {
			return e // the upstream asks for a longer wait than we accept: fall back instead
		}
		if len(g.Deployments) > 1 {
			f.skip = d
		}
		time.Sleep(wait)
	}
}

// canCoolDown reports whether g has an alternative to a cooled deployment:
// another deployment, or a fallback group.
func (r *Router) canCoolDown(g *Group, x *pipeline.Exchange) bool {
	return len(g.Deployments) > 1 || len(x.RequestFallbacks) > 0 || len(r.set.Fallbacks[g.Name]) > 0 ||
		len(r.set.Fallbacks["*"]) > 0 || len(r.set.DefaultFallbacks) > 0
}

func (r *Router) noDeployment(g *Group, x *pipeline.Exchange) *errs.Error {
	msg := "No deployments available for model `" + g.Name + "`"
	switch {
	case len(x.Tags) > 0:
		msg += " matching the request tags, or all of them are cooling down or at capacity"
	default:
		msg += ": all are cooling down after failures or at capacity"
	}
	e := errs.New(429, errNoDeployment, msg)
	e.Fallback = true
	e.RetryAfter = r.set.CooldownTime.Seconds()
	return e
}

// backoff is the wait before retry number attempt+1: exponential with full
// jitter, raised to the upstream's Retry-After; -1 when Retry-After is
// beyond RetryAfterMax.
func (r *Router) backoff(attempt int, retryAfter float64) time.Duration {
	base := r.set.BackoffBase << min(attempt, 20)
	if base > r.set.BackoffMax || base <= 0 {
		base = r.set.BackoffMax
	}
	wait := time.Duration(rand.Int64N(int64(base)/2+1)) + base/2
	if retryAfter > 0 {
		ra := time.Duration(retryAfter * float64(time.Second))
		if ra > r.set.RetryAfterMax {
			return -1
		}
		if ra > wait {
			wait = ra
		}
	}
	return wait
}

// attempt calls d once. For a stream it waits for the first event under the
// time-to-first-token deadline, so a stream that fails before it is an
// error here and not a broken response.
func (r *Router) attempt(x *pipeline.Exchange, g *Group, d *Deployment) error {
	x.Attempts++
	x.DeploymentID, x.Provider = d.ID, d.ProviderName
	x.UpstreamModel = d.UpstreamModel
	if d.UpstreamModel == "*" {
		// A wildcard deployment passes the requested model on, minus the
		// group's prefix ("openai/*" serving "openai/gpt-4o").
		x.UpstreamModel = x.Model[min(len(x.Model), len(g.Name)-1):]
	}
	start := time.Now()
	d.health.countRequest(start.UnixNano())
	resp, err := r.call(x, d, start)
	if err == nil && resp.Stream != nil {
		err = r.awaitFirst(x, d, resp, start)
		if err != nil {
			resp.Release()
			resp = nil
		}
	}
	if err != nil {
		x.Unhold()
		x.Attempted = append(x.Attempted, d.ID)
		d.metrics.Attempt(false)
		e := errs.From(err)
		r.log.Info("attempt failed", zap.String("id", x.ID), zap.String("deployment", d.ID),
			zap.Int("attempt", x.Attempts), zap.Int("status", e.Status), zap.String("error_code", string(e.Code)),
			zap.Duration("latency", time.Since(start)))
		return e
	}
	d.metrics.Attempt(true)
	if resp.Stream == nil {
		observe(&d.health.latency, time.Since(start))
	}
	x.Response = resp
	x.Served = d
	x.ModelGroup = g.Name
	return nil
}

// call sends the request to d's provider.
func (r *Router) call(x *pipeline.Exchange, d *Deployment, start time.Time) (*provider.Response, error) {
	req := &x.Upstream
	*req = provider.Request{
		Buf:     &x.UpstreamBuf,
		Dialect: x.Dialect,
		Body:    x.Body,
		Model:   x.UpstreamModel,
		Stream:  x.Stream,
		Header:  x.Header,

		SetHeaders:    x.UpstreamSet,
		RemoveHeaders: x.UpstreamRemove,
	}
	switch {
	case x.Stream:
		// A stream is bounded by its first-token and idle deadlines (see
		// awaitFirst and watched), and as a whole by MaxStreamDuration.
		req.Deadline = start.Add(r.set.MaxStreamDuration)
		if t := d.ttft(); t > 0 {
			req.HeaderDeadline = start.Add(t)
		}
	case d.Timeout > 0:
		req.Deadline = start.Add(d.Timeout)
	}
	if !x.Deadline.IsZero() && (req.Deadline.IsZero() || x.Deadline.Before(req.Deadline)) {
		req.Deadline = x.Deadline
	}
	ctx := x.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	x.Hold(&d.health.inflight)
	switch x.Dialect.Operation() {
	case llm.OpEmbedding:
		e, ok := d.Provider.(provider.Embedder)
		if !ok {
			return nil, errs.BadRequest(errs.CodeUnsupported, "model", "model `"+x.Model+"` ("+d.ProviderName+") does not serve embeddings")
		}
		return e.Embed(ctx, req)
	case llm.OpCompletion:
		if c, ok := d.Provider.(provider.Completer); ok {
			return c.Complete(ctx, req)
		}
		// Served through chat; the server converts the response.
		return d.Provider.Chat(ctx, req)
	}
	return d.Provider.Chat(ctx, req)
}

// ttft returns the time-to-first-token deadline for d, 0 for none.
func (d *Deployment) ttft() time.Duration {
	if d.StreamTimeout > 0 {
		return d.StreamTimeout
	}
	return d.Timeout
}

// awaitFirst reads the stream up to its first token (the first event that
// carries content, a tool call, a finish or the end) within the deadline,
// holding back the preamble events before it (OpenAI's role chunk,
// Anthropic's message_start and ping), so a stream that dies before its
// first token is an error here, not a broken response, and may fall back.
// The stream is wrapped so held events are replayed and later gaps are
// bounded.
func (r *Router) awaitFirst(x *pipeline.Exchange, d *Deployment, resp *provider.Response, start time.Time) error {
	s := &watched{inner: resp.Stream}
	s.waiter, _ = resp.Stream.(provider.Waiter)
	// A stream whose connection bounds the first token (its read
	// deadline, the call's header deadline) needs no timer.
	bounded, _ := resp.Stream.(provider.FirstTokenBounded)
	if t := d.ttft(); t > 0 && bounded == nil {
		if left := t - time.Since(start); left > 0 {
			s.arm(left)
		} else {
			s.fired.Store(true)
		}
	}
	for {
		ev, err := s.inner.Next()
		if s.fired.Load() || (bounded != nil && err != nil && errs.CodeOf(err) == errs.CodeUpstreamTimeout) {
			s.disarm()
			e := errs.New(408, errs.CodeUpstreamTimeout, d.ProviderName+": no first token within "+d.ttft().String())
			e.Retryable, e.Fallback, e.Provider = true, true, d.ProviderName
			return e
		}
		if err != nil {
			s.disarm()
			if errors.Is(err, io.EOF) {
				e := errs.New(502, errs.CodeUpstreamProtocol, d.ProviderName+": upstream stream ended before the first token")
				e.Retryable, e.Fallback, e.Provider = true, true, d.ProviderName
				return e
			}
			e := errs.From(err)
			if e.Provider == "" {
				e.Provider = d.ProviderName
			}
			return e
		}
		if isErrorEvent(resp.Dialect, ev) {
			// An error before the first token (Anthropic's
			// overloaded_error arrives this way): nothing was sent yet.
			s.disarm()
			e := errs.New(503, errs.CodeUpstream, d.ProviderName+": upstream reported an error before the first token")
			e.Retryable, e.Fallback, e.Provider = true, true, d.ProviderName
			return e
		}
		if isPreamble(resp.Dialect, ev) && len(s.held) < 8 {
			s.hold(ev)
			continue
		}
		s.disarm()
		// The stream's own deadline is set on the next wait for the
		// upstream, after the first byte has gone out.
		s.bounded = bounded
		s.first, s.hasFirst = ev, true
		break
	}
	observe(&d.health.ttft, time.Since(start))
	s.idle = d.StreamTimeout
	if s.idle == 0 {
		s.idle = r.set.StreamIdleTimeout
	}
	resp.Stream = s
	return nil
}

// isPreamble reports whether ev comes before any token: OpenAI's role
// chunk (empty content, no tool call, no finish), Anthropic's
// message_start, ping and an empty text block start.
func isPreamble(d llm.Dialect, ev sse.Event) bool {
	if d == llm.AnthropicMessages {
		switch string(ev.Name) {
		case "message_start", "ping":
			return true
		case "content_block_start":
			return gjson.GetBytes(ev.Data, "content_block.type").Str == "text" &&
				gjson.GetBytes(ev.Data, "content_block.text").Str == ""
		}
		return false
	}
	if ev.IsDone() || hasText(ev.Data) {
		return false
	}
	c := gjson.GetBytes(ev.Data, "choices.0")
	if !c.Exists() {
		return false
	}
	delta := c.Get("delta")
	return c.Get("finish_reason").Type == gjson.Null && delta.Get("content").Str == "" &&
		!delta.Get("tool_calls").Exists() && delta.Get("reasoning_content").Str == "" && delta.Get("refusal").Str == ""
}

// hasText reports a member "content" whose value is a non-empty string
// anywhere in an OpenAI chunk: a chunk that carries text is a first token,
// whatever else it holds, and most chunks do (one scan instead of five
// lookups on a stream's first byte). The match is always structural: inside
// a JSON string a quote is escaped, so `"content":"` cannot occur there.
func hasText(data []byte) bool {
	const key = `"content":"`
	i := bytes.Index(data, []byte(key))
	return i >= 0 && i+len(key) < len(data) && data[i+len(key)] != '"'
}

func isErrorEvent(d llm.Dialect, ev sse.Event) bool {
	if d == llm.AnthropicMessages {
		return string(ev.Name) == "error"
	}
	return len(ev.Data) > 9 && string(ev.Data[:9]) == `{"error":`
}

// watched wraps an upstream stream: it replays the peeked first event and
// closes the upstream when no event arrives within the idle timeout, so a
// stalled upstream ends with an error instead of hanging the client.
//
// The idle deadline costs no timer operation per event: Next and Wait
// record when they start waiting (an atomic store), and one timer per
// stream wakes up every idle period to compare. The deadline counts only
// while the gateway waits for the upstream, never while it is blocked
// writing to a slow client.
type watched struct {
	inner    provider.Stream
	waiter   provider.Waiter // inner's, when it has one (asserted once)
	held     []sse.Event
	heldArr  [2]sse.Event // held's first room
	heldData []byte       // the held events' bytes (hold)
	first    sse.Event
	hasFirst bool
	idle     time.Duration
	timer    *time.Timer // the time-to-first-token deadline (awaitFirst)
	// bounded: the inner stream's connection still has the first-token
	// deadline, to be moved on before the next wait for the upstream.
	bounded provider.FirstTokenBounded
	fired   atomic.Bool
	// idle watchdog: waiting is when the current wait began (monotonic
	// nanoseconds since epoch), 0 when not waiting.
	idleTimer *time.Timer
	waiting   atomic.Int64
	closed    atomic.Bool // the watchdog stops re-arming
}

// hold keeps a copy of ev (its slices are the upstream reader's, valid
// until its next event) to replay. The copies share one buffer, and the
// first two events the held list's own room: OpenAI's role chunk costs
// one allocation, Anthropic's message_start, ping and block start one or
// two, on the stream's first byte.
func (s *watched) hold(ev sse.Event) {
	if s.held == nil {
		s.held = s.heldArr[:0]
	}
	n := len(ev.Name) + len(ev.Data)
	if cap(s.heldData)-len(s.heldData) < n {
		// A new buffer: the events held before keep the old one.
		s.heldData = make([]byte, 0, max(n, 1024))
	}
	start := len(s.heldData)
	s.heldData = append(s.heldData, ev.Name...)
	s.heldData = append(s.heldData, ev.Data...)
	var name []byte
	if len(ev.Name) > 0 {
		name = s.heldData[start : start+len(ev.Name) : start+len(ev.Name)]
	}
	data := s.heldData[start+len(ev.Name) : len(s.heldData) : len(s.heldData)]
	s.held = append(s.held, sse.Event{Name: name, Data: data})
}

// epoch is the origin of the watchdog's monotonic clock.
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

func (s *watched) arm(d time.Duration) {
	if s.timer == nil {
		s.timer = time.AfterFunc(d, func() {
			s.fired.Store(true)
			_ = s.inner.Close()
		})
		return
	}
	s.timer.Reset(d)
}

func (s *watched) disarm() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

// beginWait starts the idle deadline of one wait for the upstream.
func (s *watched) beginWait() {
	if s.bounded != nil {
		s.bounded.FirstTokenArrived()
		s.bounded = nil
	}
	if s.idle <= 0 {
		return
	}
	s.waiting.Store(monoNow())
	if s.idleTimer == nil {
		// Created stopped and then armed, so that the callback sees the
		// field set.
		s.idleTimer = time.AfterFunc(time.Hour, s.checkIdle)
		s.idleTimer.Reset(s.idle)
	}
}

func (s *watched) endWait() {
	if s.idle > 0 {
		s.waiting.Store(0)
	}
}

// checkIdle runs on the watchdog timer: it ends a wait that has lasted the
// idle timeout, and otherwise looks again when the current wait would.
func (s *watched) checkIdle() {
	if s.closed.Load() {
		return
	}
	w := s.waiting.Load()
	if w == 0 {
		s.idleTimer.Reset(s.idle)
		return
	}
	if waited := time.Duration(monoNow() - w); waited < s.idle {
		s.idleTimer.Reset(s.idle - waited)
		return
	}
	s.fired.Store(true)
	_ = s.inner.Close()
}

func (s *watched) Next() (sse.Event, error) {
	if len(s.held) > 0 {
		ev := s.held[0]
		s.held = s.held[1:]
		return ev, nil
	}
	if s.hasFirst {
		s.hasFirst = false
		return s.first, nil
	}
	s.beginWait()
	ev, err := s.inner.Next()
	s.endWait()
	if err != nil && s.fired.Load() {
		return ev, errs.New(408, errs.CodeUpstreamTimeout, "upstream stream idle for more than "+s.idle.String())
	}
	return ev, err
}

// Wait implements provider.Waiter: it waits for the inner stream under
// the idle deadline, as Next does.
func (s *watched) Wait() {
	if len(s.held) > 0 || s.hasFirst {
		return
	}
	if s.waiter == nil {
		return
	}
	s.beginWait()
	s.waiter.Wait()
	s.endWait()
}

// Buffered implements provider.Waiter: held events and the peeked first
// one are buffered, as is what the inner stream has already read.
func (s *watched) Buffered() bool {
	return len(s.held) > 0 || s.hasFirst || (s.waiter != nil && s.waiter.Buffered())
}

func (s *watched) Close() error {
	s.closed.Store(true)
	s.disarm()
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	return s.inner.Close()
}
