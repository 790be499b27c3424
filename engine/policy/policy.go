// Package policy runs Rego policies (OPA v1, embedded as a library) in the
// request path: a request-phase decision after authentication and before
// routing, and an optional response-phase decision on the output.
//
// Policies and data are read from a directory or an OPA bundle, compiled
// and tested, then prepared once per revision; a revision is immutable and
// swapped atomically on reload, so a request sees exactly one revision for
// both its phases. See README.md for how a request passes through.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/pricing"
)

// Options are the engine's process-level dependencies.
type Options struct {
	// Log receives reloads, rejected revisions, evaluation errors and the
	// policies' print() output (debug). Nil: no logging.
	Log *zap.Logger
	// Metrics registers the engine's metrics. Nil: none.
	Metrics prometheus.Registerer
	// Providers returns the providers that may serve a model group (from
	// the model list); the input carries them as llm.providers so a
	// provider rule can be checked before routing. Nil: unknown.
	Providers func(modelGroup string) []string
	// Price returns the price of the dearest deployment of a model group
	// (pricing.Max over its deployments), false when the group is unknown;
	// the input prices the request with it as llm.estimated_cost. Nil:
	// unknown (estimated_cost is null).
	Price func(modelGroup string) (pricing.Price, bool)
	// Headers is the allow-list of request headers put into the input
	// (lower-case). Nil: DefaultHeaders. Credentials are never included.
	Headers []string
}

// Status describes the running revision and the last reload attempt.
type Status struct {
	Revision string    `json:"revision"`
	Loaded   time.Time `json:"loaded"`
	Source   string    `json:"source"`
	Files    int       `json:"files"`
	// Response is true when the policies define the response decision.
	Response bool `json:"response_phase"`
	// LastError is why the last reload was refused ("" after a success).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastAttempt time.Time `json:"last_attempt"`
}

// Engine holds the current policy revision and reloads it.
type Engine struct {
	s        config.PolicySettings
	log      *zap.Logger
	met      *metrics
	cur      atomic.Pointer[revision]
	pii      *piiDetector
	keys     atomic.Uint64
	headers  []headerName
	provider func(string) []string
	price    func(string) (pricing.Price, bool)

	reloadMu sync.Mutex // one reload at a time
	statusMu sync.Mutex
	status   Status

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// revision is one immutable, prepared set of policies and data.
type revision struct {
	id       string
	loaded   time.Time
	request  query
	response *query    // nil: no response phase
	data     ast.Value // the data document (the readStore's root)
	print    print.Hook
	builtins *builtins
	files    int
	where    string
}

// parsedDecision is a decision parsed from a value the planned program
// shares across evaluations (a constant such as allow_all).
type parsedDecision struct {
	v ast.Value
	d Decision
}

// query is one prepared query: OPA's evaluator (topdown), which explains
// and serves when the plan is missing, and the planned program the
// request path runs (nil when the planner or the interpreter cannot take
// the policies).
type query struct {
	pq   rego.PreparedEvalQuery
	prog *irProgram
	last atomic.Pointer[parsedDecision]
}

// New loads the policies and starts the watcher. It fails when the
// initial load fails: the gateway refuses to start on a broken policy.
func New(s config.PolicySettings, o Options) (*Engine, error) {
	if s.Dir == "" && s.Bundle == "" {
		return nil, errors.New("policy: set dir or bundle")
	}
	s = withDefaults(s)
	e := &Engine{s: s, log: o.Log, pii: newPIIDetector(), provider: o.Providers, price: o.Price, met: newMetrics(o.Metrics)}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.headers = headerList(o.Headers)
	// Taken before the first load, so a change during it is seen.
	fp, _ := fingerprint(s.Dir, s.Bundle)
	if err := e.Reload(context.Background()); err != nil {
		return nil, err
	}
	if s.Watch {
		e.stop, e.done = make(chan struct{}), make(chan struct{})
		go e.watch(fp)
	}
	return e, nil
}

func withDefaults(s config.PolicySettings) config.PolicySettings {
	if s.Query == "" {
		s.Query = "data.gateway.decision"
	}
	if s.ResponseQuery == "" {
		s.ResponseQuery = "data.gateway.response_decision"
	}
	if s.Timeout <= 0 {
		s.Timeout = 50 * time.Millisecond
	}
	if s.MaxTextBytes <= 0 {
		s.MaxTextBytes = 64 << 10
	}
	if s.StreamWindow <= 0 {
		s.StreamWindow = 1 << 10
	}
	if s.WatchInterval <= 0 {
		s.WatchInterval = time.Second
	}
	return s
}

// Close stops the watcher. Evaluation keeps working on the last revision.
func (e *Engine) Close() {
	e.stopOnce.Do(func() {
		if e.stop != nil {
			close(e.stop)
			<-e.done
		}
	})
}

// Status returns the running revision and the last reload's outcome.
func (e *Engine) Status() Status {
	e.statusMu.Lock()
	defer e.statusMu.Unlock()
	return e.status
}

// Revision returns the running revision id.
func (e *Engine) Revision() string { return e.cur.Load().id }

// Reload reads, compiles and tests the policies and swaps them in. On any
// error the running revision stays and the error says why (it is also
// logged and kept in Status). Reloading an unchanged source is a no-op.
func (e *Engine) Reload(ctx context.Context) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	start := time.Now()
	rev, err := e.load(ctx)
	e.statusMu.Lock()
	e.status.LastAttempt = start
	if err != nil {
		e.status.LastError, e.status.LastErrorAt = err.Error(), start
	}
	e.statusMu.Unlock()
	if err != nil {
		e.met.reload("error")
		old := ""
		if cur := e.cur.Load(); cur != nil {
			old = cur.id
		}
		e.log.Error("policy reload refused; the running revision stays", zap.String("running", old), zap.Error(err))
		return err
	}
	if rev == nil {
		e.statusMu.Lock()
		e.status.LastError, e.status.LastErrorAt = "", time.Time{}
		e.statusMu.Unlock()
		return nil // unchanged
	}
	e.cur.Store(rev)
	e.statusMu.Lock()
	e.status = Status{Revision: rev.id, Loaded: rev.loaded, Source: rev.where, Files: rev.files,
		Response: rev.response != nil, LastAttempt: start}
	e.statusMu.Unlock()
	e.met.reload("ok")
	e.met.setRevision(rev.id)
	e.log.Info("policies loaded", zap.String("revision", rev.id), zap.String("source", rev.where),
		zap.Int("files", rev.files), zap.Bool("response_phase", rev.response != nil),
		zap.Duration("took", time.Since(start)))
	return nil
}

// load builds a revision from the source; nil, nil when it is unchanged.
func (e *Engine) load(ctx context.Context) (*revision, error) {
	src, err := readSource(e.s.Dir, e.s.Bundle)
	if err != nil {
		return nil, err
	}
	if cur := e.cur.Load(); cur != nil && cur.id == src.id {
		return nil, nil
	}
	return e.build(ctx, src)
}

// build compiles, tests and prepares src.
func (e *Engine) build(ctx context.Context, src *source) (*revision, error) {
	store, err := newReadStore(src.data)
	if err != nil {
		return nil, fmt.Errorf("revision %s: %w", src.id, err)
	}
	c, err := compile(ctx, store, src.modules)
	if err != nil {
		return nil, fmt.Errorf("revision %s does not compile: %w", src.id, err)
	}
	if !e.s.SkipTests && len(src.tests) > 0 {
		rep, err := runTests(ctx, src, TestOptions{}, e.newBuiltins(0))
		if err != nil {
			return nil, fmt.Errorf("revision %s: tests: %w", src.id, err)
		}
		if failed := rep.Failed(); len(failed) > 0 {
			names := make([]string, 0, len(failed))
			for _, r := range failed {
				names = append(names, r.Package+"."+r.Name)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("revision %s: %d of %d tests fail: %s", src.id, len(failed), len(rep.Results), strings.Join(names, ", "))
		}
	}
	rev := &revision{id: src.id, loaded: time.Now(), builtins: e.newBuiltins(cacheSlots), files: src.files, where: src.where,
		data: store.root, print: printHook{e.log}}
	if !defines(c, e.s.Query) {
		return nil, fmt.Errorf("revision %s does not define %s", src.id, e.s.Query)
	}
	if rev.request.pq, err = e.prepare(ctx, c, store, rev.builtins, e.s.Query); err != nil {
		return nil, fmt.Errorf("revision %s: %w", src.id, err)
	}
	if defines(c, e.s.ResponseQuery) {
		on, err := e.responseEnabled(ctx, c, store, rev.builtins)
		if err != nil {
			return nil, fmt.Errorf("revision %s: %w", src.id, err)
		}
		if on {
			pq, err := e.prepare(ctx, c, store, rev.builtins, e.s.ResponseQuery)
			if err != nil {
				return nil, fmt.Errorf("revision %s: %w", src.id, err)
			}
			rev.response = &query{pq: pq}
		}
	}
	if err := e.precompile(ctx, c, store, rev.builtins); err != nil {
		return nil, fmt.Errorf("revision %s: %w", src.id, err)
	}
	rev.request.prog = e.plan(ctx, src, store, rev.builtins, e.s.Query)
	if rev.response != nil {
		rev.response.prog = e.plan(ctx, src, store, rev.builtins, e.s.ResponseQuery)
	}
	return rev, nil
}

// compile compiles the modules against the store (data may not overlap
// the policies' packages).
func compile(ctx context.Context, store storage.Store, modules map[string]*ast.Module) (*ast.Compiler, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	c := ast.NewCompiler().
		WithBuiltins(BuiltinDecls()).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(true).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithUseTypeCheckAnnotations(true)
	if c.Compile(modules); c.Failed() {
		return nil, c.Errors
	}
	return c, nil
}

// defines reports whether the compiled policies define the rule a query
// such as data.gateway.decision names.
func defines(c *ast.Compiler, query string) bool {
	ref, err := ast.ParseRef(query)
	if err != nil {
		return false
	}
	return len(c.GetRulesExact(ref)) > 0
}

func (e *Engine) newBuiltins(cacheSize int) *builtins {
	return newBuiltins(&e.keys, e.pii, cacheSize)
}

func (e *Engine) prepare(ctx context.Context, c *ast.Compiler, store storage.Store, b *builtins, query string) (rego.PreparedEvalQuery, error) {
	opts := append([]func(*rego.Rego){
		rego.Query(query),
		rego.Compiler(c),
		rego.Store(store),
		rego.StrictBuiltinErrors(true),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{e.log}),
	}, b.options()...)
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return pq, fmt.Errorf("prepare %s: %w", query, err)
	}
	return pq, nil
}

// plan has OPA's planner plan query and compiles the plan for the
// interpreter (ir.go); nil when either cannot, and the query is then
// evaluated by topdown. The planner is given a compiler of its own: rego
// switches the compiler it plans from to the IR mode.
func (e *Engine) plan(ctx context.Context, src *source, store storage.Store, b *builtins, q string) *irProgram {
	if e.s.Evaluator == "opa" {
		return nil // configured: OPA's own evaluator for every decision
	}
	prog, err := planProgram(ctx, src, store, b, q)
	if err != nil {
		e.log.Info("policy query left to OPA's evaluator (not planned)", zap.String("revision", src.id),
			zap.String("query", q), zap.Error(err))
		return nil
	}
	return prog
}

func planProgram(ctx context.Context, src *source, store storage.Store, b *builtins, q string) (*irProgram, error) {
	c, err := compile(ctx, store, src.modules)
	if err != nil {
		return nil, err
	}
	capture := &planCapture{}
	opts := append([]func(*rego.Rego){
		rego.Query(q),
		rego.Compiler(c),
		rego.Store(store),
		rego.StrictBuiltinErrors(true),
		rego.EnablePrintStatements(true),
		rego.Target(irTarget),
	}, b.options()...)
	if _, err := rego.New(opts...).PrepareForEval(context.WithValue(ctx, planKey{}, capture)); err != nil {
		return nil, err
	}
	var data ast.Value
	if rs, ok := store.(*readStore); ok {
		data = rs.root
	}
	return compileIR(capture.policy, capture.builtins, b.direct(), data)
}

// responseEnabled evaluates the optional response_enabled rule next to
// the response decision (data.gateway.response_enabled) once, with an
// empty input: false skips the response phase for this revision, so
// policies whose response rules are not configured cost nothing on the
// output. Undefined: enabled.
func (e *Engine) responseEnabled(ctx context.Context, c *ast.Compiler, store storage.Store, b *builtins) (bool, error) {
	q := e.s.ResponseQuery
	i := strings.LastIndexByte(q, '.')
	if i < 0 {
		return true, nil
	}
	q = q[:i] + ".response_enabled"
	if !defines(c, q) {
		return true, nil
	}
	pq, err := e.prepare(ctx, c, store, b, q)
	if err != nil {
		return false, err
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(ast.NewObject()))
	if err != nil {
		return false, fmt.Errorf("%s: %w", q, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return true, nil
	}
	on, ok := rs[0].Expressions[0].Value.(bool)
	if !ok {
		return false, fmt.Errorf("%s must be a boolean", q)
	}
	return on, nil
}

// patternSetsQuery names an optional rule listing the data objects the
// policies pass to portcullis.match / portcullis.find. They are compiled
// when the revision loads, so a bad pattern refuses the reload instead of
// failing requests, and no request pays for a compile.
const patternSetsQuery = "data.gateway.pattern_sets"

func (e *Engine) precompile(ctx context.Context, c *ast.Compiler, store storage.Store, b *builtins) error {
	if !defines(c, patternSetsQuery) {
		return nil
	}
	pq, err := e.prepare(ctx, c, store, b, patternSetsQuery)
	if err != nil {
		return err
	}
	rs, err := pq.Eval(ctx, rego.EvalParsedInput(ast.NewObject()))
	if err != nil {
		return fmt.Errorf("%s: %w", patternSetsQuery, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil
	}
	v, err := ast.InterfaceToValue(rs[0].Expressions[0].Value)
	if err != nil {
		return err
	}
	var sets []ast.Value
	switch x := v.(type) {
	case *ast.Array:
		x.Foreach(func(t *ast.Term) { sets = append(sets, t.Value) })
	case ast.Set:
		x.Foreach(func(t *ast.Term) { sets = append(sets, t.Value) })
	case ast.Object:
		x.Foreach(func(_, t *ast.Term) { sets = append(sets, t.Value) })
	default:
		return fmt.Errorf("%s must be a collection of rule sets, got %s", patternSetsQuery, ast.ValueName(v))
	}
	for _, s := range sets {
		if _, err := b.matcherFor(s); err != nil {
			return fmt.Errorf("%s: %w", patternSetsQuery, err)
		}
	}
	return nil
}

// printHook sends the policies' print() output to the log at debug level.
type printHook struct{ log *zap.Logger }

func (h printHook) Print(pc print.Context, msg string) error {
	if ce := h.log.Check(zap.DebugLevel, "policy print"); ce != nil {
		loc := ""
		if pc.Location != nil {
			loc = pc.Location.String()
		}
		ce.Write(zap.String("at", loc), zap.String("msg", msg))
	}
	return nil
}

// EvalError is an evaluation that produced no valid decision. The
// middleware fails closed on it (503 policy_error) unless fail_open.
type EvalError struct {
	// Kind is timeout, undefined, shape or eval.
	Kind     string
	Revision string
	Err      error
}

func (e *EvalError) Error() string {
	return "policy " + e.Kind + " (revision " + e.Revision + "): " + e.Err.Error()
}

func (e *EvalError) Unwrap() error { return e.Err }

// Eval evaluates the request decision for input (an input document as
// README.md describes) on the running revision.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (Decision, error) {
	rev := e.cur.Load()
	return rev.eval(ctx, &rev.request, input, time.Now(), e.s.Timeout, false, nil)
}

// EvalResponse evaluates the response decision (ok false: the policies
// define none).
func (e *Engine) EvalResponse(ctx context.Context, input ast.Value) (d Decision, ok bool, err error) {
	rev := e.cur.Load()
	if rev.response == nil {
		return Decision{}, false, nil
	}
	d, err = rev.eval(ctx, rev.response, input, time.Now(), e.s.Timeout, true, nil)
	return d, true, err
}

// Explain evaluates like Eval and writes OPA's trace of the evaluation to
// w (topdown.PrettyTraceWithLocation).
func (e *Engine) Explain(ctx context.Context, input ast.Value, w io.Writer) (Decision, error) {
	rev := e.cur.Load()
	buf := topdown.NewBufferTracer()
	d, err := rev.eval(ctx, &rev.request, input, time.Now(), e.s.Timeout, false, buf)
	topdown.PrettyTraceWithLocation(w, *buf)
	return d, err
}

// eval runs one prepared query with a deadline: the planned program, or
// topdown when there is none or a tracer wants OPA's trace. Any error, an
// undefined result, a result that does not validate, or running past the
// deadline is an *EvalError.
func (r *revision) eval(ctx context.Context, q *query, input ast.Value, now time.Time,
	timeout time.Duration, response bool, tracer topdown.QueryTracer) (Decision, error) {
	var t *ast.Term
	var err error
	timedOut := false
	if q.prog != nil && tracer == nil {
		// The program checks the deadline as it goes: no timer.
		start := time.Now()
		t, err = r.evalProgram(ctx, q.prog, input, now, nil, start.Add(timeout))
		timedOut = topdown.IsCancel(err) || time.Since(start) > timeout
	} else {
		cancel := topdown.NewCancel()
		timer := time.AfterFunc(timeout, cancel.Cancel)
		t, err = r.evalTopdown(ctx, &q.pq, materializeValue(input), now, cancel, tracer)
		timer.Stop()
		timedOut = cancel.Cancelled() || topdown.IsCancel(err)
	}
	switch {
	case timedOut:
		return Decision{}, &EvalError{Kind: "timeout", Revision: r.id, Err: fmt.Errorf("evaluation took longer than %v", timeout)}
	case err == nil && ctx.Err() != nil:
		err = ctx.Err()
	}
	if err != nil {
		return Decision{}, &EvalError{Kind: "eval", Revision: r.id, Err: err}
	}
	if t == nil {
		return Decision{}, &EvalError{Kind: "undefined", Revision: r.id, Err: errors.New("the decision is undefined")}
	}
	if c := q.last.Load(); c != nil && c.v == t.Value {
		return c.d, nil // the same constant decision as before (allow_all)
	}
	d, err := parseDecision(t.Value, response)
	if err != nil {
		return Decision{}, &EvalError{Kind: "shape", Revision: r.id, Err: err}
	}
	d.Revision = r.id
	if d.plain() && q.prog != nil && q.prog.sharedValue(t) {
		q.last.Store(&parsedDecision{v: t.Value, d: d})
	}
	d.Revision = r.id
	return d, nil
}

// evalProgram runs the planned query; nil when it is undefined.
func (r *revision) evalProgram(ctx context.Context, prog *irProgram, input ast.Value, now time.Time, cancel topdown.Cancel,
	deadline time.Time) (*ast.Term, error) {
	res, err := prog.eval(irInput{ctx: ctx, input: input, data: r.data, timeNS: now.UnixNano(), cancel: cancel,
		deadline: deadline, print: r.print})
	if err != nil || res == nil || prog.values {
		return res, err
	}
	// A result binds the query's one expression.
	obj, ok := res.Value.(ast.Object)
	if !ok || obj.Len() != 1 {
		return nil, fmt.Errorf("the query's result has the wrong shape: %v", res)
	}
	var t *ast.Term
	obj.Foreach(func(_, v *ast.Term) { t = v })
	return t, nil
}

// evalTopdown runs the query with OPA's evaluator; nil when undefined.
func (r *revision) evalTopdown(ctx context.Context, pq *rego.PreparedEvalQuery, input ast.Value, now time.Time,
	cancel topdown.Cancel, tracer topdown.QueryTracer) (*ast.Term, error) {
	vc := getEvalCache()
	defer vc.release()
	opts := [9]rego.EvalOption{rego.EvalParsedInput(input), rego.EvalExternalCancel(cancel), rego.EvalTime(now),
		rego.EvalVirtualCache(vc), rego.EvalBaseCache((*baseCache)(vc)), evalNoMetrics, evalASTResult}
	n := 7
	if r.data != nil {
		opts[n] = evalReadTxn
		n++
	}
	if tracer != nil {
		opts[n] = rego.EvalQueryTracer(tracer)
		n++
	}
	rs, err := pq.Eval(ctx, opts[:n]...)
	if err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, err
	}
	t, _ := rs[0].Expressions[0].Value.(*ast.Term)
	return t, nil
}

// Evaluation options every evaluation shares: no transaction (the
// revision's readStore needs none), no metrics, and the result as the AST
// term it is (parseDecision reads it; converting it to Go maps first costs
// an allocation per value).
var (
	evalReadTxn   = rego.EvalTransaction(readTxn{})
	evalNoMetrics = rego.EvalMetrics(opametrics.NoOp())
	evalASTResult = rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil })
)

// watch polls the source every WatchInterval and reloads when a file's
// size or modification time changed. A refused revision is not retried
// until the files change again.
func (e *Engine) watch(last string) {
	defer close(e.done)
	t := time.NewTicker(e.s.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		fp, err := fingerprint(e.s.Dir, e.s.Bundle)
		if err != nil || fp == last {
			continue
		}
		last = fp
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = e.Reload(ctx) // logged and kept in Status
		cancel()
	}
}
