package policy

import (
	"context"
	"maps"
	"sort"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestOptions select what Test runs.
type TestOptions struct {
	// Dir or Bundle is the policy source (as PolicySettings).
	Dir, Bundle string
	// Run is a regular expression selecting tests by name ("" all).
	Run string
	// Coverage computes line coverage of the non-test modules.
	Coverage bool
	// Timeout bounds each test (default 5s).
	Timeout time.Duration
	// Trace keeps each test's evaluation trace in its Result.
	Trace bool
}

// TestReport is the outcome of a policy test run.
type TestReport struct {
	Revision string
	// Results are sorted by package and name.
	Results []*tester.Result
	// Coverage is set when asked for: covered lines of the policy
	// modules (tests excluded).
	Coverage *cover.Report
}

// Failed returns the tests that failed or errored.
func (r *TestReport) Failed() []*tester.Result {
	var out []*tester.Result
	for _, res := range r.Results {
		if res.Fail || res.Error != nil {
			out = append(out, res)
		}
	}
	return out
}

// Test runs the policies' *_test.rego tests with the custom builtins
// registered, as a reload does before swapping a revision in.
func Test(ctx context.Context, o TestOptions) (*TestReport, error) {
	src, err := readSource(o.Dir, o.Bundle)
	if err != nil {
		return nil, err
	}
	b := newBuiltins(new(atomic.Uint64), newPIIDetector(), 0)
	return runTests(ctx, src, o, b)
}

func runTests(ctx context.Context, src *source, o TestOptions, b *builtins) (*TestReport, error) {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	mods := make(map[string]*ast.Module, len(src.modules)+len(src.tests))
	maps.Copy(mods, src.modules)
	maps.Copy(mods, src.tests)
	store := inmem.NewFromObjectWithOpts(src.data, inmem.OptRoundTripOnWrite(false))
	runner := tester.NewRunner().
		SetStore(store).
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(true).
		AddCustomBuiltins(b.testerBuiltins()).
		SetTimeout(o.Timeout).
		EnableTracing(o.Trace).
		Filter(o.Run)
	var cov *cover.Cover
	if o.Coverage {
		cov = cover.New()
		runner.SetCoverageQueryTracer(cov)
	}
	ch, err := runner.Run(ctx, mods)
	if err != nil {
		return nil, err
	}
	rep := &TestReport{Revision: src.id}
	for r := range ch {
		rep.Results = append(rep.Results, r)
	}
	sort.Slice(rep.Results, func(i, j int) bool {
		a, b := rep.Results[i], rep.Results[j]
		if a.Package != b.Package {
			return a.Package < b.Package
		}
		return a.Name < b.Name
	})
	if cov != nil {
		r := cov.Report(src.modules)
		rep.Coverage = &r
	}
	return rep, nil
}
