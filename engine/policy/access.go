package policy

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/types"
)

// The access builtins: the primitives the team-access policy calls per
// request, so that a decision costs a couple of builtin calls instead of a
// loop of glob.match calls and the time arithmetic in Rego. Which profile
// applies and what a failed check means stays in the policy.
var (
	globAnyDecl = &rego.Function{
		Name: "portcullis.glob_any",
		Description: "Reports whether name matches any of the glob patterns, as glob.match(pattern, [\"/\"], name) " +
			"would (\"*\" and \"?\" do not cross \"/\", \"**\" does).",
		Decl: types.NewFunction(
			types.Args(types.Named("patterns", types.NewAny(types.NewArray(nil, types.S), types.NewSet(types.S))),
				types.Named("name", types.S)),
			types.Named("matched", types.B),
		),
	}
	globAllDecl = &rego.Function{
		Name:        "portcullis.glob_all",
		Description: "Reports whether every one of names matches one of the glob patterns (portcullis.glob_any for each).",
		Decl: types.NewFunction(
			types.Args(types.Named("patterns", types.NewAny(types.NewArray(nil, types.S), types.NewSet(types.S))),
				types.Named("names", types.NewAny(types.NewArray(nil, types.S), types.NewSet(types.S)))),
			types.Named("matched", types.B),
		),
	}
	withinHoursDecl = &rego.Function{
		Name: "portcullis.within_hours",
		Description: "Reports whether time_ns falls in the window hours = {tz (UTC), from (0), to (24), days} " +
			"describes: from <= hour < to in time zone tz (from > to: a window over midnight), on one of days " +
			"(names, compared by their first three letters, case-insensitively; absent: any day).",
		Decl: types.NewFunction(
			types.Args(types.Named("hours", types.NewObject(nil, types.NewDynamicProperty(types.S, types.A))),
				types.Named("time_ns", types.N)),
			types.Named("within", types.B),
		),
	}
)

// globMatch is OPA's glob.match, for the patterns the fast path does not
// take (classes, alternatives, escapes, ?): the same semantics, its cache.
var globMatch = topdown.GetBuiltin(ast.GlobMatch.Name)

var slashDelimiter = ast.ArrayTerm(ast.StringTerm("/"))

// globAny implements portcullis.glob_any.
func globAny(bctx rego.BuiltinContext, patterns, name *ast.Term) (*ast.Term, error) {
	s, ok := name.Value.(ast.String)
	if !ok {
		return nil, fmt.Errorf("name must be a string, got %s", ast.ValueName(name.Value))
	}
	m, err := matchAny(bctx, patterns, name, string(s))
	if err != nil {
		return nil, err
	}
	return ast.InternedTerm(m), nil
}

// globAll implements portcullis.glob_all.
func globAll(bctx rego.BuiltinContext, patterns, names *ast.Term) (*ast.Term, error) {
	switch c := names.Value.(type) {
	case *ast.Array:
		for i := 0; i < c.Len(); i++ {
			if m, err := nameMatches(bctx, patterns, c.Elem(i)); err != nil || !m {
				return ast.InternedTerm(false), err
			}
		}
	case ast.Set:
		for _, t := range c.Slice() {
			if m, err := nameMatches(bctx, patterns, t); err != nil || !m {
				return ast.InternedTerm(false), err
			}
		}
	default:
		return nil, fmt.Errorf("names must be an array or set of strings, got %s", ast.ValueName(names.Value))
	}
	return ast.InternedTerm(true), nil
}

func nameMatches(bctx rego.BuiltinContext, patterns, t *ast.Term) (bool, error) {
	s, ok := t.Value.(ast.String)
	if !ok {
		return false, fmt.Errorf("names must be strings, got %s", ast.ValueName(t.Value))
	}
	return matchAny(bctx, patterns, t, string(s))
}

// matchAny reports whether name (s) matches one of patterns.
func matchAny(bctx rego.BuiltinContext, patterns, name *ast.Term, s string) (bool, error) {
	switch c := patterns.Value.(type) {
	case *ast.Array:
		for i := 0; i < c.Len(); i++ {
			if m, err := globOne(bctx, c.Elem(i), name, s); err != nil || m {
				return m, err
			}
		}
	case ast.Set:
		for _, p := range c.Slice() {
			if m, err := globOne(bctx, p, name, s); err != nil || m {
				return m, err
			}
		}
	default:
		return false, fmt.Errorf("patterns must be an array or set of strings, got %s", ast.ValueName(patterns.Value))
	}
	return false, nil
}

func globOne(bctx rego.BuiltinContext, p, name *ast.Term, s string) (bool, error) {
	ps, ok := p.Value.(ast.String)
	if !ok {
		return false, fmt.Errorf("patterns must be strings, got %s", ast.ValueName(p.Value))
	}
	if m, ok := simpleGlob(string(ps), s); ok {
		return m, nil
	}
	return slowGlob(bctx, p, name)
}

func slowGlob(bctx rego.BuiltinContext, pattern, name *ast.Term) (bool, error) {
	var out bool
	err := globMatch(bctx, []*ast.Term{pattern, slashDelimiter, name}, func(t *ast.Term) error {
		out = bool(t.Value.(ast.Boolean))
		return nil
	})
	return out, err
}

// globSpecials are the characters the glob syntax gives a meaning; ","
// does inside braces only, but a pattern with one is left to glob.match.
const globSpecials = `*?\[]{},`

// simpleGlob matches the common pattern forms without compiling anything:
// a literal, and a literal with one "*" or "**" at its start or end (the
// separator is "/"). ok is false for any other form.
func simpleGlob(pattern, name string) (matched, ok bool) {
	i := strings.IndexAny(pattern, globSpecials)
	if i < 0 {
		return pattern == name, utf8.ValidString(pattern)
	}
	switch {
	case pattern == "**":
		return true, true
	case pattern == "*":
		return !strings.Contains(name, "/"), true
	case i == len(pattern)-2 && strings.HasSuffix(pattern, "**"): // lit**
		lit := pattern[:i]
		return strings.HasPrefix(name, lit), utf8.ValidString(lit)
	case i == len(pattern)-1 && pattern[i] == '*': // lit*
		lit := pattern[:i]
		return strings.HasPrefix(name, lit) && !strings.Contains(name[len(lit):], "/"), utf8.ValidString(lit)
	case i == 0 && pattern[0] == '*' && len(pattern) > 1 && !strings.ContainsAny(pattern[1:], globSpecials): // *lit
		lit := pattern[1:]
		return strings.HasSuffix(name, lit) && !strings.Contains(name[:len(name)-len(lit)], "/"), utf8.ValidString(lit)
	}
	return false, false
}

// locations caches time zones by name (time.LoadLocation reads tzdata).
var locations sync.Map // string → *time.Location

func location(tz string) (*time.Location, error) {
	switch tz {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return time.Local, nil
	}
	if l, ok := locations.Load(tz); ok {
		return l.(*time.Location), nil
	}
	l, err := time.LoadLocation(tz)
	if err != nil {
		return nil, err
	}
	locations.Store(tz, l)
	return l, nil
}

var (
	kTZ   = ast.StringTerm("tz")
	kFrom = ast.StringTerm("from")
	kTo   = ast.StringTerm("to")
	kDays = ast.StringTerm("days")
)

// withinHours implements portcullis.within_hours.
func withinHours(_ rego.BuiltinContext, hours, ns *ast.Term) (*ast.Term, error) {
	obj, ok := hours.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("hours must be an object, got %s", ast.ValueName(hours.Value))
	}
	n, ok := ns.Value.(ast.Number)
	if !ok {
		return nil, fmt.Errorf("time_ns must be a number, got %s", ast.ValueName(ns.Value))
	}
	nanos, ok := n.Int64()
	if !ok {
		return nil, errors.New("time_ns must be a whole number of nanoseconds")
	}
	tz := ""
	if t := obj.Get(kTZ); t != nil {
		s, ok := t.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("hours.tz must be a string, got %s", ast.ValueName(t.Value))
		}
		tz = string(s)
	}
	loc, err := location(tz)
	if err != nil {
		return nil, err
	}
	from, err := hourBound(obj, kFrom, 0)
	if err != nil {
		return nil, err
	}
	to, err := hourBound(obj, kTo, 24)
	if err != nil {
		return nil, err
	}
	t := time.Unix(0, nanos).In(loc)
	h := float64(t.Hour())
	in := h >= from && h < to
	if from > to { // over midnight, such as 22 → 6
		in = h >= from || h < to
	}
	if !in {
		return ast.InternedTerm(false), nil
	}
	days := obj.Get(kDays)
	if days == nil || days.Value.Compare(ast.Boolean(false)) == 0 {
		return ast.InternedTerm(true), nil
	}
	arr, ok := days.Value.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("hours.days must be an array of day names, got %s", ast.ValueName(days.Value))
	}
	day := t.Weekday().String()[:3]
	for i := 0; i < arr.Len(); i++ {
		d, ok := arr.Elem(i).Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("hours.days must be day names, got %s", ast.ValueName(arr.Elem(i).Value))
		}
		if len(d) >= 3 && strings.EqualFold(string(d[:3]), day) {
			return ast.InternedTerm(true), nil
		}
	}
	return ast.InternedTerm(false), nil
}

func hourBound(obj ast.Object, k *ast.Term, def float64) (float64, error) {
	t := obj.Get(k)
	if t == nil {
		return def, nil
	}
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("hours.%s must be a number, got %s", k.Value.(ast.String), ast.ValueName(t.Value))
	}
	f, ok := n.Float64()
	if !ok {
		return 0, fmt.Errorf("hours.%s is not a number", k.Value.(ast.String))
	}
	return f, nil
}
