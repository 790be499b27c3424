package policy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	opabuiltins "github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// The request path evaluates a revision's queries with an interpreter of
// OPA's intermediate representation: the plan OPA's planner makes of the
// compiled policies (the same plan the Wasm target compiles; see
// github.com/open-policy-agent/opa/v1/ir). Rule and function bodies become
// blocks of simple statements over numbered locals, so a decision costs a
// few hundred statements instead of topdown's unification, bindings and
// caches per expression: the policies stay Rego, only the evaluator
// changes. The statements are executed as the Wasm target executes them
// (internal/compiler/wasm in OPA): a statement that is undefined leaves
// its block, a break leaves as many blocks as its index says (a scan's
// body counts one more: the loop), rules without arguments are memoized
// per evaluation, builtins are OPA's own implementations (and the custom
// ones). Objects and sets are iterated in topdown's order (sorted), not
// Wasm's. Anything the planner cannot plan, or the interpreter does not
// know, leaves the query on topdown; ir_test.go runs the shipped policies'
// Rego tests through both and compares them on the shipped decisions.

// irTarget is the rego target name under which the planner's output is
// captured (see planProgram).
const irTarget = "portcullis-ir"

type irPlugin struct{}

func init() { rego.RegisterPlugin(irTarget, irPlugin{}) }

func (irPlugin) IsTarget(t string) bool { return t == irTarget }

type planKey struct{}

// planCapture receives the plan and the custom builtins rego hands to the
// target plugin while preparing.
type planCapture struct {
	policy   *ir.Policy
	builtins map[string]*topdown.Builtin
}

func (irPlugin) PrepareForEval(ctx context.Context, p *ir.Policy, opts ...rego.PrepareOption) (rego.TargetPluginEval, error) {
	c, ok := ctx.Value(planKey{}).(*planCapture)
	if !ok {
		return nil, errors.New("the portcullis IR target is only for the policy engine")
	}
	cfg := &rego.PrepareConfig{}
	for _, o := range opts {
		o(cfg)
	}
	c.policy, c.builtins = p, cfg.BuiltinFuncs()
	return irNoEval{}, nil
}

type irNoEval struct{}

func (irNoEval) Eval(context.Context, *rego.EvalContext, ast.Value) (ast.Value, error) {
	return nil, errors.New("evaluate with irProgram.eval")
}

// opcodes of the compiled statements.
type opcode uint8

const (
	opReturn opcode = iota
	opCallFunc
	opCallBuiltin
	opCallDynamic
	opBlock
	opBreak
	opDot
	opLen
	opScan
	opNot
	opAssignInt
	opAssign
	opAssignOnce
	opReset
	opMakeNull
	opMakeNumber
	opMakeArray
	opMakeObject
	opMakeSet
	opEqual
	opNotEqual
	opIsArray
	opIsObject
	opIsSet
	opIsDefined
	opIsUndefined
	opArrayAppend
	opObjectInsert
	opObjectInsertOnce
	opObjectMerge
	opSetAdd
	opWith
	opNop
	opResultAdd
	opResultValue // the plan's result object {var: value} reduced to its value
)

// operand is a local, or a constant (k non-nil).
type operand struct {
	local int32
	k     *ast.Term
}

// inst is one compiled statement; which fields are used depends on op.
type inst struct {
	op     opcode
	dst    int32 // target / result / scan key
	val    int32 // scan value local
	n      int64 // break index, int value, capacity; call_dynamic: the argument count
	a, b   operand
	args   []operand // call arguments (call_dynamic: then the path)
	blocks []*cblock
	fn     *cfunc
	bi     *topdown.Builtin
	biName string
	void   bool
	lazyOK bool        // the builtin reads input.llm.messages as it is (lazyArray)
	direct directFunc  // a custom builtin, called without rego's wrapping
	path   []*ast.Term // with: the path into the local
	loc    *ast.Location
}

type cblock struct{ insts []inst }

type cfunc struct {
	name    string
	params  []int32
	ret     int32
	blocks  []*cblock
	nlocals int
	memo    int // index into the memo table; -1: not memoized
	// shared: the function reads neither the input nor a clock, prints
	// nothing: its value is the same for every evaluation of the revision
	// (whose data never changes), and is kept in irProgram.shared.
	shared bool
	// for the analysis
	readsInput, impure bool
}

// irProgram is one planned query, compiled for the interpreter.
type irProgram struct {
	plan    []*cblock
	nlocals int
	funcs   []*cfunc
	dynamic map[string]*cfunc // data path (segments joined by \x00) → function
	// values: the results are the query's value, not {var: value} objects.
	values bool
	data   *ast.Term // the data document the program was compiled for
	nmemo  int
	shared []atomic.Pointer[ast.Term] // by memo index; undefinedTerm: undefined
	needs  struct{ time bool }
	pool   sync.Pool // *irEval
}

// errIRUnsupported marks a plan the interpreter does not run.
var errIRUnsupported = errors.New("unsupported IR")

// compileIR compiles a plan. Builtins are OPA's (topdown.GetBuiltin) or the
// custom ones rego hands the target. data is the revision's data document
// (nil: unknown): lookups of constant keys in it are resolved once, here.
func compileIR(p *ir.Policy, custom map[string]*topdown.Builtin, direct map[string]directFunc, data ast.Value) (*irProgram, error) {
	if p == nil || p.Plans == nil || len(p.Plans.Plans) != 1 {
		return nil, fmt.Errorf("%w: want one plan", errIRUnsupported)
	}
	c := &irCompiler{pol: p, custom: custom, direct: direct, prog: &irProgram{dynamic: map[string]*cfunc{}},
		byName: map[string]*cfunc{}, builtins: map[string]*topdown.Builtin{}}
	if p.Static != nil {
		for _, s := range p.Static.Strings {
			c.strings = append(c.strings, ast.StringTerm(s.Value))
		}
	}
	if p.Funcs != nil {
		for _, f := range p.Funcs.Funcs {
			cf := &cfunc{name: f.Name, ret: int32(f.Return), memo: -1}
			for _, l := range f.Params {
				cf.params = append(cf.params, int32(l))
			}
			if len(f.Params) == 2 {
				cf.memo = c.prog.nmemo
				c.prog.nmemo++
			}
			c.byName[f.Name] = cf
			c.prog.funcs = append(c.prog.funcs, cf)
			if len(f.Path) > 0 {
				c.prog.dynamic[strings.Join(f.Path, "\x00")] = cf
			}
		}
		for i, f := range p.Funcs.Funcs {
			cf := c.prog.funcs[i]
			c.max = 0
			for _, l := range f.Params {
				c.local(l)
			}
			c.local(f.Return)
			for _, b := range f.Blocks {
				cb, err := c.block(b)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", f.Name, err)
				}
				cf.blocks = append(cf.blocks, cb)
			}
			cf.nlocals = c.max + 1
		}
	}
	c.max = int(ir.Data)
	for _, b := range p.Plans.Plans[0].Blocks {
		cb, err := c.block(b)
		if err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		c.prog.plan = append(c.prog.plan, cb)
	}
	c.prog.nlocals = c.max + 1
	c.prog.values = reduceResults(c.prog.plan)
	if data != nil {
		c.prog.data = ast.NewTerm(data)
		c.foldData(c.prog.data)
	}
	c.analyze()
	c.prog.shared = make([]atomic.Pointer[ast.Term], c.prog.nmemo)
	return c.prog, nil
}

// foldData resolves, once per revision, the lookups of constant keys in
// the data document: the data never changes within a revision, so
// data.portcullis.access is the same term on every evaluation. A lookup
// is folded when its source holds a data term at that point on every path
// to it: the data document itself (a plan's data local, a function's second
// parameter), or a local a folded lookup before it assigned, in the same
// block or an enclosing one, and no statement assigned since. A folded
// lookup becomes an assignment of the term it finds, or, when the data has
// nothing there, a statement that leaves the block as the lookup would.
// Nothing is folded when the plan replaces data (`with data...`) or passes
// anything else as a function's data.
func (c *irCompiler) foldData(data *ast.Term) {
	for _, f := range c.prog.funcs {
		if len(f.params) < 2 || !c.dataSafe(f.blocks, f.params[1]) {
			return
		}
	}
	if !c.dataSafe(c.prog.plan, int32(ir.Data)) {
		return
	}
	for _, f := range c.prog.funcs {
		known := map[int32]*ast.Term{f.params[1]: data}
		for _, b := range f.blocks {
			// Blocks of a function run one after the other.
			for l := range foldBlock(b, known) {
				delete(known, l)
			}
		}
	}
	known := map[int32]*ast.Term{int32(ir.Data): data}
	for _, b := range c.prog.plan {
		for l := range foldBlock(b, known) {
			delete(known, l)
		}
	}
}

// dataSafe reports whether blocks neither replace the data local nor pass
// anything else as a callee's data.
func (c *irCompiler) dataSafe(blocks []*cblock, data int32) bool {
	for _, b := range blocks {
		for i := range b.insts {
			x := &b.insts[i]
			switch x.op {
			case opWith:
				if x.dst == data {
					return false
				}
			case opCallFunc, opCallDynamic:
				n := len(x.args)
				if x.op == opCallDynamic {
					n = int(x.n)
				}
				if n >= 2 && (x.args[1].k != nil || x.args[1].local != data) {
					return false
				}
			}
			if !c.dataSafe(x.blocks, data) {
				return false
			}
		}
	}
	return true
}

// writes returns the locals statement x assigns (its nested blocks aside).
func writes(x *inst) []int32 {
	switch x.op {
	case opAssign, opAssignOnce, opDot, opCallFunc, opCallBuiltin, opCallDynamic, opLen, opAssignInt,
		opReset, opMakeNull, opMakeNumber, opMakeArray, opMakeObject, opMakeSet, opObjectMerge,
		opArrayAppend, opWith:
		return []int32{x.dst}
	case opScan:
		return []int32{x.dst, x.val}
	}
	return nil
}

// writtenIn adds the locals blocks assign, nested blocks included.
func writtenIn(blocks []*cblock, out map[int32]bool) {
	for _, b := range blocks {
		for i := range b.insts {
			for _, l := range writes(&b.insts[i]) {
				out[l] = true
			}
			writtenIn(b.insts[i].blocks, out)
		}
	}
}

// foldBlock folds the lookups in b; known are the locals holding data
// terms when b starts. It returns the locals b may have assigned.
func foldBlock(b *cblock, known map[int32]*ast.Term) map[int32]bool {
	local := maps.Clone(known)
	written := map[int32]bool{}
	forget := func(l int32) {
		delete(local, l)
		written[l] = true
	}
	for i := range b.insts {
		x := &b.insts[i]
		if x.op == opDot && x.a.k == nil && x.b.k != nil {
			if src, ok := local[x.a.local]; ok {
				if v := dot(src.Value, x.b.k); v == nil {
					*x = inst{op: opBreak} // undefined: leave the block, as the lookup would
				} else {
					*x = inst{op: opAssign, dst: x.dst, a: operand{k: v}}
					local[x.dst] = v
					written[x.dst] = true
				}
				continue
			}
		}
		if x.op == opScan {
			// A loop's body may run again after assigning anything it assigns.
			again := map[int32]bool{x.dst: true, x.val: true}
			writtenIn(x.blocks, again)
			for l := range again {
				forget(l)
			}
		}
		for _, nb := range x.blocks {
			for l := range foldBlock(nb, local) {
				forget(l)
			}
		}
		for _, l := range writes(x) {
			forget(l)
		}
	}
	return written
}

// sharedValue reports whether t is the value of a shared function (the
// same term on every evaluation).
func (p *irProgram) sharedValue(t *ast.Term) bool {
	for i := range p.shared {
		if p.shared[i].Load() == t {
			return true
		}
	}
	return false
}

// reduceResults rewrites the plan's result statements (an object made, its
// one member inserted, the object added to the result set) to add the
// member's value; false when some result statement has another form.
func reduceResults(plan []*cblock) bool {
	all, seen := true, false
	var walk func(b *cblock)
	walk = func(b *cblock) {
		for i := range b.insts {
			x := &b.insts[i]
			if x.op == opResultAdd {
				seen = true
				if i < 2 || b.insts[i-2].op != opMakeObject || b.insts[i-1].op != opObjectInsert ||
					b.insts[i-2].dst != x.a.local || b.insts[i-1].dst != x.a.local || b.insts[i-1].a.k == nil ||
					(b.insts[i-1].b.k == nil && b.insts[i-1].b.local == x.a.local) {
					all = false
					continue
				}
				v := b.insts[i-1].b
				b.insts[i-2], b.insts[i-1] = inst{op: opNop}, inst{op: opNop}
				*x = inst{op: opResultValue, a: v}
			}
			for _, nb := range x.blocks {
				walk(nb)
			}
		}
	}
	for _, b := range plan {
		walk(b)
	}
	return seen && all
}

// undefinedTerm marks a shared value that is undefined.
var undefinedTerm = &ast.Term{}

// analyze marks the functions whose values can be shared across
// evaluations: rules (no arguments) that, with everything they call, do not
// read the input, call no non-deterministic builtin and do not print.
func (c *irCompiler) analyze() {
	for _, f := range c.prog.funcs {
		f.readsInput, f.impure = false, false
		in := int32(-1)
		if len(f.params) > 0 {
			in = f.params[0]
		}
		for _, b := range f.blocks {
			c.scanFacts(f, b, in)
		}
	}
	for changed := true; changed; {
		changed = false
		for _, f := range c.prog.funcs {
			in := int32(-1)
			if len(f.params) > 0 {
				in = f.params[0]
			}
			r, i := f.readsInput, f.impure
			for _, b := range f.blocks {
				c.callFacts(f, b, in)
			}
			changed = changed || r != f.readsInput || i != f.impure
		}
	}
	for _, f := range c.prog.funcs {
		f.shared = f.memo >= 0 && !f.readsInput && !f.impure
	}
}

// scanFacts sets what f's own statements do.
func (c *irCompiler) scanFacts(f *cfunc, b *cblock, in int32) {
	uses := func(o operand) {
		if o.k == nil && o.local == in {
			f.readsInput = true
		}
	}
	for i := range b.insts {
		x := &b.insts[i]
		switch x.op {
		case opCallFunc:
			for j, a := range x.args {
				if j > 0 {
					uses(a)
				}
			}
		case opCallBuiltin:
			for _, a := range x.args {
				uses(a)
			}
			if d := x.bi.Decl; d == nil || d.Nondeterministic || x.biName == ast.InternalPrint.Name ||
				x.biName == ast.Print.Name || timeBuiltins[x.biName] {
				f.impure = true
			}
		case opCallDynamic, opWith:
			f.readsInput, f.impure = true, true
		case opReturn:
			if x.dst == in {
				f.readsInput = true
			}
		case opAssign, opAssignOnce, opLen, opIsArray, opIsObject, opIsSet, opIsDefined, opIsUndefined,
			opScan, opResultAdd, opMakeNumber:
			uses(x.a)
		case opDot, opEqual, opNotEqual, opObjectMerge:
			uses(x.a)
			uses(x.b)
		case opArrayAppend, opSetAdd, opObjectInsert, opObjectInsertOnce:
			uses(x.a)
			if x.op == opObjectInsert || x.op == opObjectInsertOnce {
				uses(x.b)
			}
			if x.dst == in {
				f.readsInput = true
			}
		}
		for _, nb := range x.blocks {
			c.scanFacts(f, nb, in)
		}
	}
}

// callFacts adds what f's callees do.
func (c *irCompiler) callFacts(f *cfunc, b *cblock, in int32) {
	for i := range b.insts {
		x := &b.insts[i]
		if x.op == opCallFunc {
			g := x.fn
			if g.impure {
				f.impure = true
			}
			if g.readsInput && len(x.args) > 0 && x.args[0].k == nil && x.args[0].local == in {
				f.readsInput = true
			}
			if g.readsInput && (len(x.args) == 0 || x.args[0].k != nil || x.args[0].local != in) {
				// the callee reads whatever is passed as its input
				f.readsInput = true
			}
		}
		for _, nb := range x.blocks {
			c.callFacts(f, nb, in)
		}
	}
}

type irCompiler struct {
	pol      *ir.Policy
	custom   map[string]*topdown.Builtin
	direct   map[string]directFunc
	prog     *irProgram
	strings  []*ast.Term
	byName   map[string]*cfunc
	builtins map[string]*topdown.Builtin
	max      int
}

func (c *irCompiler) local(l ir.Local) int32 {
	c.max = max(c.max, int(l))
	return int32(l)
}

func (c *irCompiler) operand(o ir.Operand) (operand, error) {
	switch v := o.Value.(type) {
	case ir.Local:
		return operand{local: c.local(v)}, nil
	case ir.StringIndex:
		if int(v) >= len(c.strings) {
			return operand{}, fmt.Errorf("%w: string %d", errIRUnsupported, v)
		}
		return operand{k: c.strings[v]}, nil
	case ir.Bool:
		return operand{k: ast.InternedTerm(bool(v))}, nil
	}
	return operand{}, fmt.Errorf("%w: operand %T", errIRUnsupported, o.Value)
}

// timeBuiltins read the evaluation's clock (BuiltinContext.Time).
var timeBuiltins = map[string]bool{"time.now_ns": true, "http.send": true, "io.jwt.decode_verify": true}

func (c *irCompiler) builtin(name string) (*topdown.Builtin, error) {
	if b, ok := c.builtins[name]; ok {
		return b, nil
	}
	var b *topdown.Builtin
	if cb, ok := c.custom[name]; ok {
		b = cb
	} else if f := topdown.GetBuiltin(name); f != nil {
		b = &topdown.Builtin{Decl: ast.BuiltinMap[name], Func: f}
	} else {
		return nil, fmt.Errorf("%w: builtin %s", errIRUnsupported, name)
	}
	if b.Decl == nil && c.pol.Static != nil {
		for _, d := range c.pol.Static.BuiltinFuncs {
			if d.Name == name {
				b = &topdown.Builtin{Decl: &ast.Builtin{Name: name, Decl: d.Decl}, Func: b.Func}
			}
		}
	}
	if b.Decl == nil {
		return nil, fmt.Errorf("%w: no declaration of builtin %s", errIRUnsupported, name)
	}
	if timeBuiltins[name] {
		c.prog.needs.time = true
	}
	c.builtins[name] = b
	return b, nil
}

func (c *irCompiler) block(b *ir.Block) (*cblock, error) {
	cb := &cblock{insts: make([]inst, 0, len(b.Stmts))}
	for _, s := range b.Stmts {
		in, err := c.stmt(s)
		if err != nil {
			return nil, err
		}
		cb.insts = append(cb.insts, in)
	}
	return cb, nil
}

func (c *irCompiler) blocks(bs []*ir.Block) ([]*cblock, error) {
	out := make([]*cblock, 0, len(bs))
	for _, b := range bs {
		cb, err := c.block(b)
		if err != nil {
			return nil, err
		}
		out = append(out, cb)
	}
	return out, nil
}

func (c *irCompiler) stmt(s ir.Stmt) (in inst, err error) {
	ops := func(dst *operand, o ir.Operand) {
		if err == nil {
			*dst, err = c.operand(o)
		}
	}
	switch s := s.(type) {
	case *ir.ReturnLocalStmt:
		in = inst{op: opReturn, dst: c.local(s.Source)}
	case *ir.CallStmt:
		in.dst = c.local(s.Result)
		in.args = make([]operand, len(s.Args))
		for i, a := range s.Args {
			ops(&in.args[i], a)
		}
		if f, ok := c.byName[s.Func]; ok {
			in.op, in.fn = opCallFunc, f
			if len(s.Args) > len(f.params) {
				err = fmt.Errorf("%w: %s called with %d arguments", errIRUnsupported, s.Func, len(s.Args))
			}
			break
		}
		in.op, in.biName = opCallBuiltin, s.Func
		in.lazyOK = s.Func == scanDecl.Name || s.Func == piiScanDecl.Name
		if f, ok := c.direct[s.Func]; ok && c.custom[s.Func] != nil {
			in.direct = f
		}
		if err != nil {
			break
		}
		if in.bi, err = c.builtin(s.Func); err == nil {
			in.void = in.bi.Decl.Decl.Result() == nil
			if s.Func == ast.InternalPrint.Name || s.Func == ast.Print.Name {
				in.loc = c.location(s.Location)
			}
		}
	case *ir.CallDynamicStmt:
		in = inst{op: opCallDynamic, dst: c.local(s.Result), n: int64(len(s.Args))}
		in.args = make([]operand, len(s.Args)+len(s.Path))
		for i, a := range s.Args {
			in.args[i] = operand{local: c.local(a)}
		}
		for i, p := range s.Path {
			ops(&in.args[len(s.Args)+i], p)
		}
	case *ir.BlockStmt:
		in.op = opBlock
		in.blocks, err = c.blocks(s.Blocks)
	case *ir.BreakStmt:
		in = inst{op: opBreak, n: int64(s.Index)}
	case *ir.DotStmt:
		in = inst{op: opDot, dst: c.local(s.Target)}
		ops(&in.a, s.Source)
		ops(&in.b, s.Key)
	case *ir.LenStmt:
		in = inst{op: opLen, dst: c.local(s.Target)}
		ops(&in.a, s.Source)
	case *ir.ScanStmt:
		in = inst{op: opScan, a: operand{local: c.local(s.Source)}, dst: c.local(s.Key), val: c.local(s.Value)}
		in.blocks, err = c.blocks([]*ir.Block{s.Block})
	case *ir.NotStmt:
		in.op = opNot
		in.blocks, err = c.blocks([]*ir.Block{s.Block})
	case *ir.AssignIntStmt:
		in = inst{op: opAssignInt, dst: c.local(s.Target), n: s.Value}
	case *ir.AssignVarStmt:
		in = inst{op: opAssign, dst: c.local(s.Target)}
		ops(&in.a, s.Source)
	case *ir.AssignVarOnceStmt:
		in = inst{op: opAssignOnce, dst: c.local(s.Target), loc: c.location(s.Location)}
		ops(&in.a, s.Source)
	case *ir.ResetLocalStmt:
		in = inst{op: opReset, dst: c.local(s.Target)}
	case *ir.MakeNullStmt:
		in = inst{op: opMakeNull, dst: c.local(s.Target)}
	case *ir.MakeNumberIntStmt:
		in = inst{op: opMakeNumber, dst: c.local(s.Target), a: operand{k: ast.InternedTerm(int(s.Value))}}
		if int64(int(s.Value)) != s.Value {
			in.a.k = ast.NewTerm(ast.Number(strconv.FormatInt(s.Value, 10)))
		}
	case *ir.MakeNumberRefStmt:
		if s.Index < 0 || s.Index >= len(c.strings) {
			return in, fmt.Errorf("%w: number %d", errIRUnsupported, s.Index)
		}
		n := ast.Number(c.strings[s.Index].Value.(ast.String))
		in = inst{op: opMakeNumber, dst: c.local(s.Target), a: operand{k: ast.NewTerm(n)}}
		if i, ok := n.Int(); ok && strconv.Itoa(i) == string(n) {
			in.a.k = ast.InternedTerm(i)
		}
	case *ir.MakeArrayStmt:
		in = inst{op: opMakeArray, dst: c.local(s.Target), n: int64(s.Capacity)}
	case *ir.MakeObjectStmt:
		in = inst{op: opMakeObject, dst: c.local(s.Target)}
	case *ir.MakeSetStmt:
		in = inst{op: opMakeSet, dst: c.local(s.Target)}
	case *ir.EqualStmt:
		in.op = opEqual
		ops(&in.a, s.A)
		ops(&in.b, s.B)
	case *ir.NotEqualStmt:
		in.op = opNotEqual
		ops(&in.a, s.A)
		ops(&in.b, s.B)
	case *ir.IsArrayStmt:
		in.op = opIsArray
		ops(&in.a, s.Source)
	case *ir.IsObjectStmt:
		in.op = opIsObject
		ops(&in.a, s.Source)
	case *ir.IsSetStmt:
		in.op = opIsSet
		ops(&in.a, s.Source)
	case *ir.IsDefinedStmt:
		in = inst{op: opIsDefined, a: operand{local: c.local(s.Source)}}
	case *ir.IsUndefinedStmt:
		in = inst{op: opIsUndefined, a: operand{local: c.local(s.Source)}}
	case *ir.ArrayAppendStmt:
		in = inst{op: opArrayAppend, dst: c.local(s.Array)}
		ops(&in.a, s.Value)
	case *ir.ObjectInsertStmt:
		in = inst{op: opObjectInsert, dst: c.local(s.Object)}
		ops(&in.a, s.Key)
		ops(&in.b, s.Value)
	case *ir.ObjectInsertOnceStmt:
		in = inst{op: opObjectInsertOnce, dst: c.local(s.Object), loc: c.location(s.Location)}
		ops(&in.a, s.Key)
		ops(&in.b, s.Value)
	case *ir.ObjectMergeStmt:
		in = inst{op: opObjectMerge, dst: c.local(s.Target), a: operand{local: c.local(s.A)}, b: operand{local: c.local(s.B)}}
	case *ir.SetAddStmt:
		in = inst{op: opSetAdd, dst: c.local(s.Set)}
		ops(&in.a, s.Value)
	case *ir.WithStmt:
		in = inst{op: opWith, dst: c.local(s.Local)}
		ops(&in.a, s.Value)
		for _, i := range s.Path {
			if i < 0 || i >= len(c.strings) {
				return in, fmt.Errorf("%w: with path", errIRUnsupported)
			}
			in.path = append(in.path, c.strings[i])
		}
		if err == nil {
			in.blocks, err = c.blocks([]*ir.Block{s.Block})
		}
	case *ir.NopStmt:
		in.op = opNop
	case *ir.ResultSetAddStmt:
		in = inst{op: opResultAdd, a: operand{local: c.local(s.Value)}}
	default:
		return in, fmt.Errorf("%w: statement %T", errIRUnsupported, s)
	}
	return in, err
}

func (c *irCompiler) location(l ir.Location) *ast.Location {
	file := ""
	if c.pol.Static != nil && l.File >= 0 && l.File < len(c.pol.Static.Files) {
		file = c.pol.Static.Files[l.File].Value
	}
	return &ast.Location{File: file, Row: l.Row, Col: l.Col}
}

// irEval is the state of one evaluation; evaluations take one from the
// program's pool.
type irEval struct {
	p        *irProgram
	stack    []*ast.Term
	memo     []*ast.Term
	memos    [][]*ast.Term // saved by with
	results  []*ast.Term
	bctx     topdown.BuiltinContext
	out      *ast.Term
	argbuf   []*ast.Term
	cache    opabuiltins.Cache
	iter     func(*ast.Term) error
	steps    int
	cancel   topdown.Cancel
	deadline time.Time
}

// irInput is what one evaluation needs.
type irInput struct {
	ctx      context.Context
	input    ast.Value
	data     ast.Value
	timeNS   int64
	cancel   topdown.Cancel // optional
	deadline time.Time      // optional: the evaluation is cancelled past it
	print    print.Hook
}

var errIRCancel = &topdown.Error{Code: topdown.CancelErr, Message: "caused by cancellation"}

// The values MakeArray, MakeObject and MakeSet start with: shared and never
// changed (an insert or an add replaces them with a value of its own first;
// an append makes a new array anyway).
var (
	emptyObject = ast.NewTerm(ast.NewObject())
	emptySet    = ast.NewTerm(ast.NewSet())
)

// ctlReturn is the code a block passes up for a return statement.
const ctlReturn = 1 << 30

// eval runs the program and returns its first result: the query's value
// (p.values) or the object binding it; nil when the query is undefined.
func (p *irProgram) eval(in irInput) (result *ast.Term, err error) {
	ev, _ := p.pool.Get().(*irEval)
	if ev == nil {
		ev = &irEval{p: p, memo: make([]*ast.Term, p.nmemo), cache: opabuiltins.Cache{}}
		ev.iter = func(t *ast.Term) error { ev.out = t; return nil }
	}
	defer ev.release()
	ev.cancel, ev.deadline = in.cancel, in.deadline
	ev.bctx = topdown.BuiltinContext{
		Context:   in.ctx,
		Metrics:   opametrics.NoOp(),
		Seed:      rand.Reader,
		Cancel:    in.cancel,
		Cache:     ev.cache,
		PrintHook: in.print,
	}
	if p.needs.time {
		ev.bctx.Time = ast.NewTerm(ast.Number(strconv.FormatInt(in.timeNS, 10)))
	}
	if cap(ev.stack) < p.nlocals {
		ev.stack = make([]*ast.Term, p.nlocals, max(64, 2*p.nlocals))
	}
	ev.stack = ev.stack[:p.nlocals]
	if in.input != nil {
		ev.stack[ir.Input] = ast.NewTerm(in.input)
	}
	if p.data != nil && in.data == p.data.Value {
		ev.stack[ir.Data] = p.data
	} else {
		ev.stack[ir.Data] = ast.NewTerm(in.data)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("policy evaluation failed: %v", r)
		}
	}()
	for _, b := range p.plan {
		r, err := ev.block(b, 0)
		if err != nil {
			return nil, err
		}
		if r > 0 && r != ctlReturn {
			break
		}
	}
	if len(ev.results) == 0 {
		return nil, nil
	}
	return ev.results[0], nil
}

func (ev *irEval) release() {
	clear(ev.stack)
	ev.stack = ev.stack[:0]
	clear(ev.memo)
	clear(ev.results)
	ev.results = ev.results[:0]
	clear(ev.argbuf)
	ev.argbuf = ev.argbuf[:0]
	clear(ev.cache)
	ev.memos, ev.out, ev.cancel, ev.steps, ev.deadline = ev.memos[:0], nil, nil, 0, time.Time{}
	ev.bctx = topdown.BuiltinContext{}
	if cap(ev.stack) <= 1<<12 && cap(ev.argbuf) <= 1<<12 {
		ev.p.pool.Put(ev)
	}
}

func (ev *irEval) read(base int, o operand) *ast.Term {
	if o.k != nil {
		return o.k
	}
	return ev.stack[base+int(o.local)]
}

// block runs b in the frame at base: -1 when it ran to its end, 0 when a
// statement left it, n > 0 to leave n more enclosing blocks, ctlReturn for
// a return.
func (ev *irEval) block(b *cblock, base int) (int, error) {
	for i := range b.insts {
		r, err := ev.exec(&b.insts[i], base)
		if err != nil {
			return 0, err
		}
		if r >= 0 {
			return r, nil
		}
	}
	return -1, nil
}

// up is what a statement returns when a nested block it ran returned r.
func up(r int) int {
	if r == ctlReturn {
		return r
	}
	return r - 1
}

// exec runs one statement: -1 to go on with the next, otherwise what its
// block returns (0: leave it).
func (ev *irEval) exec(in *inst, base int) (int, error) {
	s := ev.stack
	switch in.op {
	case opAssign:
		s[base+int(in.dst)] = ev.read(base, in.a)
	case opDot:
		src := ev.read(base, in.a)
		if in.a.k != nil || src == nil {
			return 0, nil
		}
		v := dot(src.Value, ev.read(base, in.b))
		if v == nil {
			return 0, nil
		}
		s[base+int(in.dst)] = v
	case opCallFunc:
		v, err := ev.call(in.fn, in.args, base)
		if err != nil {
			return 0, err
		}
		if v == nil {
			return 0, nil
		}
		ev.stack[base+int(in.dst)] = v
	case opCallBuiltin:
		v, err := ev.callBuiltin(in, base)
		if err != nil {
			return 0, err
		}
		if v == nil {
			if in.void {
				return -1, nil
			}
			return 0, nil
		}
		ev.stack[base+int(in.dst)] = v
	case opBlock:
		for _, b := range in.blocks {
			r, err := ev.block(b, base)
			if err != nil {
				return 0, err
			}
			if r > 0 {
				return up(r), nil
			}
		}
	case opBreak:
		return int(in.n), nil
	case opNotEqual, opEqual:
		a, b := ev.read(base, in.a), ev.read(base, in.b)
		var eq bool
		if (isLazy(a) && b != nil && b.Value == ast.Boolean(false)) || (isLazy(b) && a != nil && a.Value == ast.Boolean(false)) {
			eq = false // a part of the input is an object or an array, never false
		} else {
			eq = termEqual(a, b)
		}
		if eq == (in.op == opNotEqual) {
			return 0, nil
		}
	case opIsDefined:
		if s[base+int(in.a.local)] == nil {
			return 0, nil
		}
	case opIsUndefined:
		if s[base+int(in.a.local)] != nil {
			return 0, nil
		}
	case opReset:
		s[base+int(in.dst)] = nil
	case opAssignOnce:
		v := ev.read(base, in.a)
		if cur := s[base+int(in.dst)]; cur != nil && !termEqual(cur, v) {
			return 0, &topdown.Error{Code: topdown.ConflictErr, Location: in.loc,
				Message: "complete rules must not produce multiple outputs"}
		}
		s[base+int(in.dst)] = v
	case opReturn:
		return ctlReturn, nil
	case opScan:
		return ev.scan(in, base)
	case opNot:
		r, err := ev.block(in.blocks[0], base)
		if err != nil {
			return 0, err
		}
		switch {
		case r < 0: // the negated body held
			return 0, nil
		case r == 0:
			return -1, nil
		}
		return up(r), nil
	case opMakeNumber:
		s[base+int(in.dst)] = in.a.k
	case opAssignInt:
		s[base+int(in.dst)] = ast.InternedTerm(int(in.n))
	case opMakeNull:
		s[base+int(in.dst)] = ast.InternedNullTerm
	case opMakeArray:
		s[base+int(in.dst)] = emptyArray // appends make a new array
	case opMakeObject:
		s[base+int(in.dst)] = emptyObject // copied on the first insert
	case opMakeSet:
		s[base+int(in.dst)] = emptySet // copied on the first add
	case opArrayAppend:
		t := s[base+int(in.dst)]
		arr, ok := termValue(t).(*ast.Array)
		if !ok {
			return 0, fmt.Errorf("policy evaluation: append to %s", valueName(termValue(t)))
		}
		s[base+int(in.dst)] = ast.NewTerm(arr.Append(materialize(ev.read(base, in.a))))
	case opObjectInsert, opObjectInsertOnce:
		t := s[base+int(in.dst)]
		if t == emptyObject {
			t = ast.NewTerm(ast.NewObject())
			s[base+int(in.dst)] = t
		}
		obj, ok := termValue(t).(ast.Object)
		if !ok {
			return 0, fmt.Errorf("policy evaluation: insert into %s", valueName(termValue(t)))
		}
		k, v := materialize(ev.read(base, in.a)), materialize(ev.read(base, in.b))
		if in.op == opObjectInsertOnce {
			if cur := obj.Get(k); cur != nil && !termEqual(cur, v) {
				return 0, &topdown.Error{Code: topdown.ConflictErr, Location: in.loc,
					Message: "object keys must be unique"}
			}
		}
		obj.Insert(k, v)
	case opSetAdd:
		t := s[base+int(in.dst)]
		if t == emptySet {
			t = ast.NewTerm(ast.NewSet())
			s[base+int(in.dst)] = t
		}
		set, ok := termValue(t).(ast.Set)
		if !ok {
			return 0, fmt.Errorf("policy evaluation: add to %s", valueName(termValue(t)))
		}
		set.Add(materialize(ev.read(base, in.a)))
	case opLen:
		src := ev.read(base, in.a)
		if la, ok := termValue(src).(*lazyArray); ok {
			s[base+int(in.dst)] = ast.InternedTerm(la.len())
			break
		}
		src = materialize(src)
		n := 0
		switch v := termValue(src).(type) {
		case *ast.Array:
			n = v.Len()
		case ast.Object:
			n = v.Len()
		case ast.Set:
			n = v.Len()
		case ast.String:
			n = len(v)
		}
		s[base+int(in.dst)] = ast.InternedTerm(n)
	case opIsArray:
		switch termValue(ev.read(base, in.a)).(type) {
		case *ast.Array, *lazyArray:
		default:
			return 0, nil
		}
		if in.a.k != nil {
			return 0, nil
		}
	case opIsObject:
		switch termValue(ev.read(base, in.a)).(type) {
		case ast.Object, *lazyObject:
		default:
			return 0, nil
		}
		if in.a.k != nil {
			return 0, nil
		}
	case opIsSet:
		if _, ok := termValue(ev.read(base, in.a)).(ast.Set); !ok || in.a.k != nil {
			return 0, nil
		}
	case opObjectMerge:
		s[base+int(in.dst)] = mergeTerms(materialize(s[base+int(in.a.local)]), materialize(s[base+int(in.b.local)]))
	case opResultAdd:
		ev.results = append(ev.results, materialize(s[base+int(in.a.local)]))
	case opResultValue:
		ev.results = append(ev.results, materialize(ev.read(base, in.a)))
	case opWith:
		return ev.with(in, base)
	case opCallDynamic:
		return ev.callDynamic(in, base)
	case opNop:
	default:
		return 0, fmt.Errorf("policy evaluation: opcode %d", in.op)
	}
	return -1, nil
}

// dot is DotStmt: an object's value at key, an array's element at an
// integer index, a set's element equal to key; nil otherwise.
func dot(src ast.Value, key *ast.Term) *ast.Term {
	if key == nil {
		return nil
	}
	switch v := src.(type) {
	case *lazyObject:
		return v.get(key)
	case *lazyArray:
		n, ok := key.Value.(ast.Number)
		if !ok {
			return nil
		}
		i, ok := n.Int()
		if !ok {
			return nil
		}
		return v.elem(i)
	case ast.Object:
		return v.Get(key)
	case *ast.Array:
		n, ok := key.Value.(ast.Number)
		if !ok {
			return nil
		}
		i, ok := n.Int()
		if !ok || i < 0 || i >= v.Len() {
			return nil
		}
		return v.Elem(i)
	case ast.Set:
		if v.Contains(key) {
			return key
		}
	}
	return nil
}

func termEqual(a, b *ast.Term) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return materialize(a).Value.Compare(materialize(b).Value) == 0
}

// mergeTerms is ObjectMergeStmt: a recursive merge of two objects where a
// wins over b on anything but objects; a when either is not an object.
func mergeTerms(a, b *ast.Term) *ast.Term {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	ao, ok1 := a.Value.(ast.Object)
	bo, ok2 := b.Value.(ast.Object)
	if !ok1 || !ok2 {
		return a
	}
	out := ast.NewObject()
	ao.Foreach(func(k, v *ast.Term) {
		if o := bo.Get(k); o != nil {
			v = mergeTerms(v, o)
		}
		out.Insert(k, v)
	})
	bo.Foreach(func(k, v *ast.Term) {
		if ao.Get(k) == nil {
			out.Insert(k, v)
		}
	})
	return ast.NewTerm(out)
}

// cancelEvery is how many scan iterations and calls pass between checks
// of the cancel flag.
const cancelEvery = 64

func (ev *irEval) tick() error {
	ev.steps++
	if ev.steps%cancelEvery == 0 {
		if (ev.cancel != nil && ev.cancel.Cancelled()) || (!ev.deadline.IsZero() && time.Now().After(ev.deadline)) {
			return errIRCancel
		}
	}
	return nil
}

func (ev *irEval) scan(in *inst, base int) (int, error) {
	src := materialize(ev.stack[base+int(in.a.local)])
	if src == nil {
		return -1, nil
	}
	body := in.blocks[0]
	// run the body for one element: -1 next, else what the scan returns.
	each := func(k, v *ast.Term) (int, error) {
		if err := ev.tick(); err != nil {
			return 0, err
		}
		ev.stack[base+int(in.dst)] = k
		ev.stack[base+int(in.val)] = v
		r, err := ev.block(body, base)
		switch {
		case err != nil:
			return 0, err
		case r <= 0: // next element
			return -1, nil
		case r == 1: // out of the loop
			return -1 - 1, nil
		case r == ctlReturn:
			return r, nil
		}
		return r - 2, nil
	}
	r := -1
	var err error
	stop := func(res int, e error) bool {
		r, err = res, e
		return e != nil || res != -1
	}
	switch v := src.Value.(type) {
	case *ast.Array:
		for i := 0; i < v.Len(); i++ {
			if stop(each(ast.InternedTerm(i), v.Elem(i))) {
				break
			}
		}
	case ast.Object:
		for _, k := range v.Keys() {
			val := v.Get(k)
			if val == nil {
				continue
			}
			if stop(each(k, val)) {
				break
			}
		}
	case ast.Set:
		sorted := v.Sorted()
		for i := 0; i < sorted.Len(); i++ {
			if e := sorted.Elem(i); stop(each(e, e)) {
				break
			}
		}
	default:
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	if r == -2 { // left the loop
		return -1, nil
	}
	return r, nil
}

// call runs a user function in a new frame above base.
func (ev *irEval) call(f *cfunc, args []operand, base int) (*ast.Term, error) {
	share := f.shared && len(ev.memos) == 0
	if share {
		if v := ev.p.shared[f.memo].Load(); v != nil {
			if v == undefinedTerm {
				return nil, nil
			}
			return v, nil
		}
	}
	if f.memo >= 0 {
		if v := ev.memo[f.memo]; v != nil {
			return v, nil
		}
	}
	if err := ev.tick(); err != nil {
		return nil, err
	}
	nb := len(ev.stack)
	need := nb + f.nlocals
	if need > cap(ev.stack) {
		grown := make([]*ast.Term, nb, 2*need)
		copy(grown, ev.stack)
		ev.stack = grown
	}
	ev.stack = ev.stack[:need]
	// The planner calls a function with fewer arguments than it has
	// parameters when it builds the extent of a document the function is
	// in: a function is not part of a document (topdown leaves it out).
	if len(args) < len(f.params) {
		ev.stack = ev.stack[:nb]
		return nil, nil
	}
	for i, a := range args {
		ev.stack[nb+int(f.params[i])] = ev.read(base, a)
	}
	var res *ast.Term
	for _, b := range f.blocks {
		r, err := ev.block(b, nb)
		if err != nil {
			return nil, err
		}
		if r == ctlReturn {
			res = ev.stack[nb+int(f.ret)]
			break
		}
		if r > 0 {
			return nil, fmt.Errorf("policy evaluation: %s: break out of the function", f.name)
		}
	}
	clear(ev.stack[nb:need])
	ev.stack = ev.stack[:nb]
	if res != nil && f.memo >= 0 {
		ev.memo[f.memo] = res
	}
	if share {
		if res == nil {
			ev.p.shared[f.memo].Store(undefinedTerm)
		} else {
			ev.p.shared[f.memo].Store(res)
		}
	}
	return res, nil
}

func (ev *irEval) callBuiltin(in *inst, base int) (*ast.Term, error) {
	if err := ev.tick(); err != nil {
		return nil, err
	}
	// Operand slices are cut from an arena the evaluation owns and never
	// reuses before it ends.
	start := len(ev.argbuf)
	for _, a := range in.args {
		t := ev.read(base, a)
		if t == nil {
			ev.argbuf = ev.argbuf[:start]
			return nil, nil
		}
		if _, ok := t.Value.(*lazyArray); !ok || !in.lazyOK {
			t = materialize(t)
		}
		ev.argbuf = append(ev.argbuf, t)
	}
	args := ev.argbuf[start:len(ev.argbuf):len(ev.argbuf)]
	ev.bctx.Location = in.loc
	if in.direct != nil {
		t, err := in.direct(ev.bctx, args)
		if err != nil {
			return nil, &topdown.Error{Code: topdown.BuiltinErr, Location: in.loc, Message: in.biName + ": " + err.Error()}
		}
		return t, nil
	}
	ev.out = nil
	err := in.bi.Func(ev.bctx, args, ev.iter)
	if err != nil {
		var h topdown.Halt
		if errors.As(err, &h) {
			return nil, h.Err
		}
		if topdown.IsError(err) {
			return nil, err
		}
		return nil, &topdown.Error{Code: topdown.BuiltinErr, Location: in.loc, Message: in.biName + ": " + err.Error()}
	}
	return ev.out, nil
}

func (ev *irEval) callDynamic(in *inst, base int) (int, error) {
	nargs := int(in.n)
	var key strings.Builder
	for i, p := range in.args[nargs:] {
		t := ev.read(base, p)
		s, ok := termValue(t).(ast.String)
		if !ok {
			return 0, nil
		}
		if i > 0 {
			key.WriteByte(0)
		}
		key.WriteString(string(s))
	}
	f, ok := ev.p.dynamic[key.String()]
	if !ok || len(f.params) != nargs {
		return 0, nil // no such function: the next block looks in the data
	}
	v, err := ev.call(f, in.args[:nargs], base)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 3, nil
	}
	ev.stack[base+int(in.dst)] = v
	return -1, nil
}

func (ev *irEval) with(in *inst, base int) (int, error) {
	slot := base + int(in.dst)
	saved := ev.stack[slot]
	value := materialize(ev.read(base, in.a))
	if len(in.path) == 0 {
		ev.stack[slot] = value
	} else {
		ev.stack[slot] = upsert(materialize(saved), in.path, value)
	}
	ev.memos = append(ev.memos, ev.memo)
	ev.memo = make([]*ast.Term, len(ev.memo))
	r, err := ev.block(in.blocks[0], base)
	ev.memo = ev.memos[len(ev.memos)-1]
	ev.memos = ev.memos[:len(ev.memos)-1]
	ev.stack[base+int(in.dst)] = saved
	if err != nil {
		return 0, err
	}
	switch {
	case r < 0:
		return -1, nil
	case r == 0:
		return 0, nil
	}
	return up(r), nil
}

// upsert returns doc with value at path, copying the objects on the way
// (doc is never changed); missing or non-object nodes become objects.
func upsert(doc *ast.Term, path []*ast.Term, value *ast.Term) *ast.Term {
	if len(path) == 0 {
		return value
	}
	out := ast.NewObject()
	var child *ast.Term
	if obj, ok := termValue(doc).(ast.Object); ok {
		obj.Foreach(func(k, v *ast.Term) { out.Insert(k, v) })
		child = obj.Get(path[0])
	}
	out.Insert(path[0], upsert(child, path[1:], value))
	return ast.NewTerm(out)
}
