package policy

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/types"
)

// The custom builtins policies call. Rule sets are objects of rule id →
// pattern string, or → {"pattern": ...} / {"keywords": [...]} (other
// fields, such as action or message, are ignored here): the policy passes
// the data object itself, so tests can mock it with `with`.
var (
	matchDecl = &rego.Function{
		Name:        "portcullis.match",
		Description: "Returns the ids of the rules in the rule set that match the text, sorted.",
		Decl: types.NewFunction(
			types.Args(types.Named("rules", ruleSetType).Description("rule id to pattern, or to {pattern} / {keywords}"),
				types.Named("text", types.S)),
			types.Named("ids", types.NewArray(nil, types.S)),
		),
	}
	findDecl = &rego.Function{
		Name:        "portcullis.find",
		Description: "Returns every match of every rule: [{id, match, start, end}], by rule id then position.",
		Decl: types.NewFunction(
			types.Args(types.Named("rules", ruleSetType), types.Named("text", types.S)),
			types.Named("matches", types.NewArray(nil, types.NewObject(nil, types.NewDynamicProperty(types.S, types.A)))),
		),
	}
	piiDecl = &rego.Function{
		Name: "portcullis.pii",
		Description: "Finds e-mail addresses, phone numbers, card numbers (Luhn checked) and API-key-shaped secrets: " +
			"[{type, kind, match, start, end}].",
		Decl: types.NewFunction(
			types.Args(types.Named("text", types.S)),
			types.Named("findings", types.NewArray(nil, types.NewObject(nil, types.NewDynamicProperty(types.S, types.A)))),
		),
	}
	scanDecl = &rego.Function{
		Name: "portcullis.scan",
		Description: "Matches each message ({role, text}) against the rules that apply to its role (a rule's roles, " +
			"default user, system, tool): [[rule id, message index], ...].",
		Decl: types.NewFunction(
			types.Args(types.Named("rules", ruleSetType), types.Named("messages", types.NewArray(nil, types.A))),
			types.Named("hits", types.NewArray(nil, types.NewArray([]types.Type{types.S, types.N}, nil))),
		),
	}
	piiScanDecl = &rego.Function{
		Name:        "portcullis.pii_scan",
		Description: "portcullis.pii over each message whose role is in roles: [{message, type, kind, match, start, end}].",
		Decl: types.NewFunction(
			types.Args(types.Named("messages", types.NewArray(nil, types.A)),
				types.Named("roles", types.NewAny(types.NewArray(nil, types.S), types.NewSet(types.S)))),
			types.Named("findings", types.NewArray(nil, types.NewObject(nil, types.NewDynamicProperty(types.S, types.A)))),
		),
	}
	luhnDecl = &rego.Function{
		Name:        "portcullis.luhn",
		Description: "Reports whether the digits of s (spaces and dashes ignored) pass the Luhn check.",
		Decl:        types.NewFunction(types.Args(types.Named("s", types.S)), types.Named("ok", types.B)),
	}
	ruleSetType = types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))
)

// BuiltinDecls are the declarations of the custom builtins, for a compiler
// that checks policies (portcullis policy test, editors).
func BuiltinDecls() map[string]*ast.Builtin {
	m := map[string]*ast.Builtin{}
	for _, d := range []*rego.Function{matchDecl, findDecl, scanDecl, piiDecl, piiScanDecl, luhnDecl, globAnyDecl, globAllDecl, withinHoursDecl} {
		m[d.Name] = &ast.Builtin{Name: d.Name, Description: d.Description, Decl: d.Decl}
	}
	return m
}

// maxSets bounds the distinct rule sets one revision compiles; past it a
// set is compiled per call (and a policy that builds rule sets per request
// shows up in the benchmarks, not as a leak).
const maxSets = 256

// builtins is one revision's state behind the custom builtins: the
// compiled rule sets, found by value, and the result cache. Rule sets are
// compiled when the revision loads (Engine.precompile) or on first use;
// data never changes within a revision, so each set compiles once.
type builtins struct {
	keys  *atomic.Uint64 // engine-wide matcher key source
	sets  atomic.Pointer[map[int][]setEntry]
	mu    sync.Mutex // serialises compiles (never held on a lookup)
	cache *resultCache
	pii   *piiDetector
}

type setEntry struct {
	v ast.Value
	m *matcher
}

func newBuiltins(keys *atomic.Uint64, pii *piiDetector, cacheSize int) *builtins {
	b := &builtins{keys: keys, cache: newResultCache(cacheSize), pii: pii}
	empty := map[int][]setEntry{}
	b.sets.Store(&empty)
	return b
}

// matcherFor returns the compiled matcher of rule set v.
func (b *builtins) matcherFor(v ast.Value) (*matcher, error) {
	h := v.Hash()
	for _, e := range (*b.sets.Load())[h] {
		if e.v == v || e.v.Compare(v) == 0 {
			return e.m, nil
		}
	}
	specs, err := ruleSpecs(v)
	if err != nil {
		return nil, err
	}
	m, err := newMatcher(b.keys.Add(1), specs)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.sets.Load()
	n := 0
	for _, l := range old {
		n += len(l)
	}
	if n >= maxSets {
		return m, nil
	}
	next := make(map[int][]setEntry, len(old)+1)
	for k, l := range old {
		next[k] = l
	}
	next[h] = append(append([]setEntry(nil), old[h]...), setEntry{v: v, m: m})
	b.sets.Store(&next)
	return m, nil
}

// ruleSpecs reads a rule set object.
func ruleSpecs(v ast.Value) ([]patternSpec, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("rule set must be an object of rule id to pattern, got %s", ast.ValueName(v))
	}
	specs := make([]patternSpec, 0, obj.Len())
	err := obj.Iter(func(k, val *ast.Term) error {
		id, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("rule id %v is not a string", k)
		}
		p, err := rulePattern(val.Value)
		if err != nil {
			return fmt.Errorf("rule %q: %w", string(id), err)
		}
		roles, err := ruleRoles(val.Value)
		if err != nil {
			return fmt.Errorf("rule %q: %w", string(id), err)
		}
		specs = append(specs, patternSpec{id: string(id), pattern: p, roles: roles})
		return nil
	})
	return specs, err
}

func rulePattern(v ast.Value) (string, error) {
	switch x := v.(type) {
	case ast.String:
		return string(x), nil
	case ast.Object:
		p, kw := x.Get(ast.InternedTerm("pattern")), x.Get(ast.InternedTerm("keywords"))
		switch {
		case p != nil && kw != nil:
			return "", errors.New("set pattern or keywords, not both")
		case p != nil:
			s, ok := p.Value.(ast.String)
			if !ok {
				return "", errors.New("pattern must be a string")
			}
			return string(s), nil
		case kw != nil:
			arr, ok := kw.Value.(*ast.Array)
			if !ok || arr.Len() == 0 {
				return "", errors.New("keywords must be a non-empty array of strings")
			}
			words := make([]string, 0, arr.Len())
			for i := 0; i < arr.Len(); i++ {
				s, ok := arr.Elem(i).Value.(ast.String)
				if !ok || s == "" {
					return "", errors.New("keywords must be non-empty strings")
				}
				words = append(words, string(s))
			}
			return keywordPattern(words), nil
		}
		return "", errors.New("want a pattern or keywords")
	}
	return "", fmt.Errorf("want a pattern string or an object, got %s", ast.ValueName(v))
}

// ruleRoles reads a rule's roles (nil: the default roles).
func ruleRoles(v ast.Value) ([]string, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, nil
	}
	t := obj.Get(ast.InternedTerm("roles"))
	if t == nil {
		return nil, nil
	}
	var roles []string
	err := errors.New("roles must be an array of strings")
	switch c := t.Value.(type) {
	case *ast.Array:
		for i := 0; i < c.Len(); i++ {
			s, ok := c.Elem(i).Value.(ast.String)
			if !ok {
				return nil, err
			}
			roles = append(roles, string(s))
		}
	case ast.Set:
		for _, e := range c.Slice() {
			s, ok := e.Value.(ast.String)
			if !ok {
				return nil, err
			}
			roles = append(roles, string(s))
		}
	default:
		return nil, err
	}
	if roles == nil {
		roles = []string{}
	}
	return roles, nil
}

// Set keys in the result cache: a matcher's key times 4, plus the
// operation; the PII detector has its own.
const (
	opMatch = 0
	opFind  = 1
	piiKey  = 2
)

// matchIdx returns the indexes of m's rules matching text, cached.
func (b *builtins) matchIdx(m *matcher, text string) []int {
	key := m.key*4 + opMatch
	if v, h := b.cache.get(key, text); v != nil {
		return v.([]int)
	} else {
		idx := m.match(text)
		if idx == nil {
			idx = []int{}
		}
		b.cache.put(key, h, text, idx)
		return idx
	}
}

// findings returns the PII findings in text, cached.
func (b *builtins) findings(text string) []Finding {
	if v, h := b.cache.get(piiKey, text); v != nil {
		return v.([]Finding)
	} else {
		fs := b.pii.scan(text)
		if fs == nil {
			fs = []Finding{}
		}
		b.cache.put(piiKey, h, text, fs)
		return fs
	}
}

func textArg(t *ast.Term, name string) (string, error) {
	s, ok := t.Value.(ast.String)
	if !ok {
		return "", fmt.Errorf("%s must be a string, got %s", name, ast.ValueName(t.Value))
	}
	return string(s), nil
}

func (b *builtins) match(_ rego.BuiltinContext, rules, text *ast.Term) (*ast.Term, error) {
	s, err := textArg(text, "text")
	if err != nil {
		return nil, err
	}
	m, err := b.matcherFor(rules.Value)
	if err != nil {
		return nil, err
	}
	idx := b.matchIdx(m, s)
	terms := make([]*ast.Term, len(idx))
	for i, r := range idx {
		terms[i] = ast.StringTerm(m.rules[r].id)
	}
	return ast.ArrayTerm(terms...), nil
}

// messageList is input.llm.messages as the scanning builtins read it: the
// input's own messages (lazyArray), or any array of {role, text} objects.
type messageList struct {
	arr  *ast.Array
	lazy []message
}

func (l messageList) len() int {
	if l.arr != nil {
		return l.arr.Len()
	}
	return len(l.lazy)
}

// at reads message i: role and text.
func (l messageList) at(i int) (role, text string, err error) {
	if l.arr == nil {
		return l.lazy[i].role, l.lazy[i].text, nil
	}
	obj, ok := l.arr.Elem(i).Value.(ast.Object)
	if ok {
		r, rok := termValue(obj.Get(kRole)).(ast.String)
		t := obj.Get(kText)
		if t != nil && rok {
			if s, ok := t.Value.(ast.String); ok {
				return string(r), string(s), nil
			}
		}
	}
	return "", "", fmt.Errorf("messages[%d] must be an object with role and text strings", i)
}

func messagesArg(t *ast.Term) (messageList, error) {
	switch a := t.Value.(type) {
	case *ast.Array:
		return messageList{arr: a}, nil
	case *lazyArray:
		return messageList{lazy: a.messages()}, nil
	}
	return messageList{}, fmt.Errorf("messages must be an array, got %s", ast.ValueName(t.Value))
}

// scan matches every message against the rules that apply to its role:
// [[rule id, message index], ...]. One call per request instead of one
// per message keeps the policy's own work to its decision logic.
func (b *builtins) scan(_ rego.BuiltinContext, rules, messages *ast.Term) (*ast.Term, error) {
	msgs, err := messagesArg(messages)
	if err != nil {
		return nil, err
	}
	m, err := b.matcherFor(rules.Value)
	if err != nil {
		return nil, err
	}
	var out []*ast.Term
	for i := 0; i < msgs.len(); i++ {
		role, text, err := msgs.at(i)
		if err != nil {
			return nil, err
		}
		if !m.scans(role) {
			continue
		}
		for _, r := range b.matchIdx(m, text) {
			if m.appliesTo(r, role) {
				out = append(out, ast.ArrayTerm(ast.StringTerm(m.rules[r].id), ast.InternedTerm(i)))
			}
		}
	}
	return ast.ArrayTerm(out...), nil
}

func (b *builtins) find(_ rego.BuiltinContext, rules, text *ast.Term) (*ast.Term, error) {
	s, err := textArg(text, "text")
	if err != nil {
		return nil, err
	}
	m, err := b.matcherFor(rules.Value)
	if err != nil {
		return nil, err
	}
	key := m.key*4 + opFind
	var spans []span
	if v, h := b.cache.get(key, s); v != nil {
		spans = v.([]span)
	} else {
		spans = m.find(s)
		if spans == nil {
			spans = []span{}
		}
		b.cache.put(key, h, s, spans)
	}
	terms := make([]*ast.Term, len(spans))
	for i, sp := range spans {
		terms[i] = ast.ObjectTerm(
			ast.Item(ast.InternedTerm("id"), ast.StringTerm(m.rules[sp.rule].id)),
			ast.Item(ast.InternedTerm("match"), ast.StringTerm(s[sp.start:sp.end])),
			ast.Item(ast.InternedTerm("start"), ast.InternedTerm(sp.start)),
			ast.Item(ast.InternedTerm("end"), ast.InternedTerm(sp.end)),
		)
	}
	return ast.ArrayTerm(terms...), nil
}

func findingTerm(text string, f Finding, msg int) *ast.Term {
	items := make([][2]*ast.Term, 0, 6)
	if msg >= 0 {
		items = append(items, ast.Item(ast.InternedTerm("message"), ast.InternedTerm(msg)))
	}
	items = append(items,
		ast.Item(ast.InternedTerm("type"), ast.StringTerm(f.Type)),
		ast.Item(ast.InternedTerm("kind"), ast.StringTerm(f.Kind)),
		ast.Item(ast.InternedTerm("match"), ast.StringTerm(text[f.Start:f.End])),
		ast.Item(ast.InternedTerm("start"), ast.InternedTerm(f.Start)),
		ast.Item(ast.InternedTerm("end"), ast.InternedTerm(f.End)),
	)
	return ast.ObjectTerm(items...)
}

func (b *builtins) piiText(_ rego.BuiltinContext, text *ast.Term) (*ast.Term, error) {
	s, err := textArg(text, "text")
	if err != nil {
		return nil, err
	}
	fs := b.findings(s)
	terms := make([]*ast.Term, len(fs))
	for i, f := range fs {
		terms[i] = findingTerm(s, f, -1)
	}
	return ast.ArrayTerm(terms...), nil
}

// piiScan scans the messages whose role is in roles.
func (b *builtins) piiScan(_ rego.BuiltinContext, messages, roles *ast.Term) (*ast.Term, error) {
	msgs, err := messagesArg(messages)
	if err != nil {
		return nil, err
	}
	var want []string
	switch c := roles.Value.(type) {
	case *ast.Array:
		c.Foreach(func(t *ast.Term) {
			if s, ok := t.Value.(ast.String); ok {
				want = append(want, string(s))
			}
		})
	case ast.Set:
		c.Foreach(func(t *ast.Term) {
			if s, ok := t.Value.(ast.String); ok {
				want = append(want, string(s))
			}
		})
	default:
		return nil, fmt.Errorf("roles must be an array or set of strings, got %s", ast.ValueName(roles.Value))
	}
	var out []*ast.Term
	for i := 0; i < msgs.len(); i++ {
		role, text, err := msgs.at(i)
		if err != nil {
			return nil, err
		}
		scan := false
		for _, r := range want {
			scan = scan || r == role
		}
		if !scan {
			continue
		}
		for _, f := range b.findings(text) {
			out = append(out, findingTerm(text, f, i))
		}
	}
	return ast.ArrayTerm(out...), nil
}

func luhnBuiltin(_ rego.BuiltinContext, s *ast.Term) (*ast.Term, error) {
	str, ok := s.Value.(ast.String)
	if !ok {
		return nil, fmt.Errorf("s must be a string, got %s", ast.ValueName(s.Value))
	}
	return ast.InternedTerm(luhn(string(str))), nil
}

// options registers the builtins on a rego.Rego.
func (b *builtins) options() []func(*rego.Rego) {
	return []func(*rego.Rego){
		rego.Function2(matchDecl, b.match),
		rego.Function2(findDecl, b.find),
		rego.Function2(scanDecl, b.scan),
		rego.Function1(piiDecl, b.piiText),
		rego.Function2(piiScanDecl, b.piiScan),
		rego.Function1(luhnDecl, luhnBuiltin),
		rego.Function2(globAnyDecl, globAny),
		rego.Function2(globAllDecl, globAll),
		rego.Function2(withinHoursDecl, withinHours),
	}
}

// directFunc is a custom builtin as the planned program calls it.
type directFunc func(rego.BuiltinContext, []*ast.Term) (*ast.Term, error)

// direct returns the custom builtins by name, for the planned program to
// call without rego's wrapping (the same functions options registers).
func (b *builtins) direct() map[string]directFunc {
	two := func(f func(rego.BuiltinContext, *ast.Term, *ast.Term) (*ast.Term, error)) directFunc {
		return func(bctx rego.BuiltinContext, a []*ast.Term) (*ast.Term, error) { return f(bctx, a[0], a[1]) }
	}
	one := func(f func(rego.BuiltinContext, *ast.Term) (*ast.Term, error)) directFunc {
		return func(bctx rego.BuiltinContext, a []*ast.Term) (*ast.Term, error) { return f(bctx, a[0]) }
	}
	return map[string]directFunc{
		matchDecl.Name:       two(b.match),
		findDecl.Name:        two(b.find),
		scanDecl.Name:        two(b.scan),
		piiDecl.Name:         one(b.piiText),
		piiScanDecl.Name:     two(b.piiScan),
		luhnDecl.Name:        one(luhnBuiltin),
		globAnyDecl.Name:     two(globAny),
		globAllDecl.Name:     two(globAll),
		withinHoursDecl.Name: two(withinHours),
	}
}

// testerBuiltins registers the builtins on a tester.Runner.
func (b *builtins) testerBuiltins() []*tester.Builtin {
	decls := BuiltinDecls()
	opts := b.options()
	names := []string{matchDecl.Name, findDecl.Name, scanDecl.Name, piiDecl.Name, piiScanDecl.Name, luhnDecl.Name,
		globAnyDecl.Name, globAllDecl.Name, withinHoursDecl.Name}
	out := make([]*tester.Builtin, len(names))
	for i, n := range names {
		out[i] = &tester.Builtin{Decl: decls[n], Func: opts[i]}
	}
	return out
}
