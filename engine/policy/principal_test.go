package policy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/pricing"
)

// account is a pipeline.BudgetAccount with fixed counters.
type account struct{ spent, resetAt int64 }

func (a *account) Spent() int64   { return a.spent }
func (a *account) ResetAt() int64 { return a.resetAt }

// testPrincipal: a key of the finance department with a 1 USD monthly
// budget of which 0.25 is spent, 60 requests a minute and 4 in parallel,
// in a team with a 10 USD budget.
func testPrincipal() *pipeline.Principal {
	return &pipeline.Principal{
		Metadata:     []byte(`{"department":"finance","tags":["a","b"],"nested":{"n":1.5}}`),
		TeamMetadata: []byte(`{"cost_center":"cc-7"}`),
		Budget: pipeline.Budget{Max: 1_000_000_000, Duration: "30d",
			Account: &account{spent: 250_000_000, resetAt: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC).UnixNano()}},
		TeamBudget:  &pipeline.Budget{Max: 10_000_000_000, Account: &account{spent: 1}},
		RPMLimit:    60,
		TPMLimit:    -1,
		MaxParallel: 4,
		Models:      []string{"gpt-4o", "claude-*"},
	}
}

// gpt4oPrice is 2.5 USD per million input tokens, 10 per million output.
func gpt4oPrice(g string) (pricing.Price, bool) {
	switch g {
	case "gpt-4o":
		return pricing.Price{Input: 2.5e-6, Output: 1e-5}, true
	case "free":
		return pricing.Price{}, true
	}
	return pricing.Price{}, false
}

// principalPolicy reads every new member and reports what it saw as tags;
// it denies when the estimated cost is more than what is left of the key's
// budget.
const principalPolicy = `
import rego.v1

p := input.principal

tags contains sprintf("dept:%s", [p.metadata.department]) if p.metadata.department
tags contains sprintf("cc:%s", [p.team_metadata.cost_center]) if p.team_metadata.cost_center
tags contains "no_metadata" if p.metadata == {}
tags contains sprintf("rpm:%d", [p.limits.rpm_limit]) if is_number(p.limits.rpm_limit)
tags contains "tpm:none" if p.limits.tpm_limit == null
tags contains sprintf("parallel:%d", [p.limits.max_parallel_requests]) if is_number(p.limits.max_parallel_requests)
tags contains sprintf("models:%s", [concat(",", p.limits.models)]) if p.limits.models
tags contains "limits:null" if p.limits == null
tags contains "budget:null" if p.budget == null
tags contains "team_budget:null" if p.team_budget == null
tags contains "remaining:0.75" if p.budget.remaining == 0.75
tags contains "spend:0.25" if p.budget.spend == 0.25
tags contains "max:1" if p.budget.max_budget == 1
tags contains sprintf("duration:%s", [p.budget.budget_duration]) if p.budget.budget_duration
tags contains sprintf("reset:%s", [p.budget.budget_reset_at]) if p.budget.budget_reset_at
tags contains "team_remaining:9.999999999" if p.team_budget.remaining == 9.999999999
tags contains "team_reset:null" if p.team_budget.budget_reset_at == null
tags contains "cost:0.01025" if input.llm.estimated_cost == 0.01025
tags contains "cost:null" if input.llm.estimated_cost == null

over_budget if {
	is_number(p.budget.remaining)
	is_number(input.llm.estimated_cost)
	p.budget.remaining < input.llm.estimated_cost
}

decision := {"allow": true, "tags": tags} if not over_budget

decision := {"allow": false, "status": 402, "reasons": [{"code": "budget_too_low", "status": 402,
	"message": sprintf("estimated %v USD, %v left", [input.llm.estimated_cost, p.budget.remaining])}]} if over_budget
`

// TestPrincipalInput: a policy reads the key's metadata, budget and limits
// and the request's estimated cost, with the planned program and with OPA's
// evaluator; the master key and anonymous requests see {} and nulls.
func TestPrincipalInput(t *testing.T) {
	// 400 bytes of text: 100 estimated prompt tokens at 2.5e-6 plus 1000
	// output tokens at 1e-5 = 0.00025 + 0.01 USD.
	body := `{"model":"gpt-4o","max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("abcd", 100) + `"}]}`
	for _, ev := range []string{"planned", "opa"} {
		t.Run(ev, func(t *testing.T) {
			e, _ := newEngine(t, config.PolicySettings{Dir: policyDir(t, principalPolicy, ""), Evaluator: ev})
			if planned := e.cur.Load().request.prog != nil; planned != (ev == "planned") {
				t.Fatalf("planned program: %v", planned)
			}
			e.price = gpt4oPrice

			x := exchange(body)
			x.KeyHash, x.TeamID, x.MaxTokens, x.Principal = "abc", "t1", 1000, testPrincipal()
			if reached, err := serve(e, x); !reached || err != nil {
				t.Fatalf("key: %v %v", reached, err)
			}
			want := []string{"cc:cc-7", "cost:0.01025", "dept:finance", "duration:30d", "max:1", "models:gpt-4o,claude-*",
				"parallel:4", "remaining:0.75", "reset:2025-02-01T00:00:00Z", "rpm:60", "spend:0.25",
				"team_remaining:9.999999999", "team_reset:null", "tpm:none"}
			if got := sorted(x.Labels); !slices.Equal(got, want) {
				t.Fatalf("key tags\n got %v\nwant %v", got, want)
			}

			// 0.005 USD left: the estimate does not fit.
			x = exchange(body)
			x.KeyHash, x.MaxTokens, x.Principal = "abc", 1000, testPrincipal()
			x.Principal.Budget.Account = &account{spent: 995_000_000}
			_, err := serve(e, x)
			if e := errCode(t, err); e.Status != 402 || e.Code != "budget_too_low" || e.Message != "estimated 0.01025 USD, 0.005 left" {
				t.Fatalf("over budget: %d %s %q", e.Status, e.Code, e.Message)
			}

			// Master key, anonymous: no budget, limits or metadata; an
			// unknown or unpriced model: no estimate.
			for _, who := range []struct{ alias, model string }{{"master_key", "gpt-4o"}, {"", "unknown"}, {"", "free"}} {
				x = exchange(strings.Replace(body, "gpt-4o", who.model, 1))
				x.KeyAlias, x.MaxTokens = who.alias, 1000
				if reached, err := serve(e, x); !reached || err != nil {
					t.Fatalf("%v: %v %v", who, reached, err)
				}
				want := []string{"budget:null", "cost:0.01025", "limits:null", "no_metadata", "team_budget:null"}
				if who.model != "gpt-4o" {
					want[1] = "cost:null"
					slices.Sort(want)
				}
				if got := sorted(x.Labels); !slices.Equal(got, want) {
					t.Fatalf("%v tags\n got %v\nwant %v", who, got, want)
				}
			}
		})
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestPrincipalInputDocument: the materialized document (what topdown,
// explanations and `portcullis policy eval` see) has the documented shape.
func TestPrincipalInputDocument(t *testing.T) {
	e, _ := newEngine(t, config.PolicySettings{Dir: policyDir(t, `decision := {"allow": true}`, "")})
	e.price = gpt4oPrice
	x := exchange(`{"model":"gpt-4o","messages":[{"role":"user","content":"abcdabcd"}]}`)
	x.KeyHash, x.Principal = "abc", testPrincipal()
	x.Principal.TeamBudget = nil
	x.Principal.Metadata = []byte(`["not", "an object"]`)
	doc := e.Input(x).(ast.Object)
	principal := doc.Get(ast.StringTerm("principal")).Value.(ast.Object)
	for k, want := range map[string]string{
		"metadata":      `{}`,
		"team_metadata": `{"cost_center": "cc-7"}`,
		"budget": `{"budget_duration": "30d", "budget_reset_at": "2025-02-01T00:00:00Z", "max_budget": 1, ` +
			`"remaining": 0.75, "spend": 0.25}`,
		"team_budget": `null`,
		"limits":      `{"max_parallel_requests": 4, "models": ["gpt-4o", "claude-*"], "rpm_limit": 60, "tpm_limit": null}`,
	} {
		if got := principal.Get(ast.StringTerm(k)); got == nil || got.String() != want {
			t.Errorf("principal.%s = %v, want %s", k, got, want)
		}
	}
	// Two estimated prompt tokens at 2.5e-6, no max_tokens: 0.000005.
	if got := doc.Get(ast.StringTerm("llm")).Value.(ast.Object).Get(ast.StringTerm("estimated_cost")); got == nil || got.String() != "0.000005" {
		t.Errorf("llm.estimated_cost = %v", got)
	}
}

func TestUSDTerm(t *testing.T) {
	for nano, want := range map[int64]string{0: "0", 1: "0.000000001", 200_000: "0.0002", 1_000_000_000: "1",
		12_345_678_900: "12.3456789", -5: "-0.000000005", -1 << 63: "-9223372036.854775808"} {
		if got := usdTerm(nano).String(); got != want {
			t.Errorf("%d: %s, want %s", nano, got, want)
		}
	}
}

// TestIRPrincipalMatchesTopdown: the planned program reading the new
// members of the lazy input agrees with topdown on the materialized
// document, over principals with and without teams, budgets, limits and
// metadata, priced and unpriced models, and rules that read the members
// whole, iterate them and look them up with builtins.
func TestIRPrincipalMatchesTopdown(t *testing.T) {
	mod := `package gateway

import rego.v1

decision := {"allow": true}

p := input.principal

facts := {
	"dept": object.get(p.metadata, "department", "none"),
	"nested": object.get(p.metadata, ["nested", "n"], 0),
	"metadata": p.metadata,
	"team_metadata": p.team_metadata,
	"budget": p.budget,
	"team_budget": p.team_budget,
	"limits": p.limits,
	"budget_keys": [k | some k, _ in p.budget],
	"limit_values": limit_values,
	"cost": input.llm.estimated_cost,
	"over": over,
	"headroom": headroom,
	"model_allowed": model_allowed,
	"principal": p,
}

limit_values := [v | some v in object.filter(p.limits, ["rpm_limit", "tpm_limit", "max_parallel_requests"])] if {
	is_object(p.limits)
} else := []

default over := false

over if {
	is_number(p.budget.remaining)
	is_number(input.llm.estimated_cost)
	p.budget.remaining < input.llm.estimated_cost
}

headroom := p.budget.remaining - input.llm.estimated_cost if {
	is_number(p.budget.remaining)
	is_number(input.llm.estimated_cost)
} else := "unknown"

default model_allowed := true

model_allowed := portcullis.glob_any(p.limits.models, input.llm.model) if count(p.limits.models) > 0
`
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"gateway/p.rego": mod})
	e, _ := newEngine(t, config.PolicySettings{Dir: dir, SkipTests: true})
	src, err := readSource(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	h := newIRHarness(t, src)

	principals := map[string]func() *pipeline.Principal{
		"none": func() *pipeline.Principal { return nil },
		"full": testPrincipal,
		"no team": func() *pipeline.Principal {
			p := testPrincipal()
			p.TeamBudget, p.TeamMetadata = nil, nil
			return p
		},
		"no limits": func() *pipeline.Principal {
			return &pipeline.Principal{Budget: pipeline.Budget{Max: -1, Account: &account{spent: 42}},
				RPMLimit: -1, TPMLimit: -1, MaxParallel: -1}
		},
		"spent": func() *pipeline.Principal {
			p := testPrincipal()
			p.Budget.Account = &account{spent: 2_000_000_000}
			p.Metadata = []byte(`not json`)
			return p
		},
	}
	prices := map[string]func(string) (pricing.Price, bool){"nil": nil, "priced": gpt4oPrice}
	for pname, mk := range principals {
		for prname, price := range prices {
			for _, model := range []string{"gpt-4o", "claude-3", "free"} {
				for _, maxTokens := range []int{0, 256, 100_000} {
					t.Run(fmt.Sprintf("%s/%s/%s/%d", pname, prname, model, maxTokens), func(t *testing.T) {
						h.t = t
						e.price = price
						x := exchange(`{"model":"` + model + `","messages":[{"role":"user","content":"` + strings.Repeat("word ", 40) + `"}]}`)
						x.MaxTokens, x.Principal = maxTokens, mk()
						if x.Principal != nil {
							x.KeyHash = "abc"
						}
						got, err := h.runLazy("data.gateway.facts", e.buildInput(x).value(), e.Input(x))
						if err != nil || got == nil {
							t.Fatalf("%v %v", got, err)
						}
					})
				}
			}
		}
	}
}

// TestPrincipalTermsBuiltOnce: the terms that last as long as the key's
// snapshot are built on the first read and shared by later requests; the
// spend is read again for each.
func TestPrincipalTermsBuiltOnce(t *testing.T) {
	p := testPrincipal()
	a := p.Budget.Account.(*account)
	m1 := principalMember(p, pMetadata)
	if m2 := principalMember(p, pMetadata); m1 != m2 {
		t.Fatal("metadata term built twice")
	}
	if principalMember(p, pLimits) != principalMember(p, pLimits) {
		t.Fatal("limits term built twice")
	}
	b1 := principalMember(p, pBudget)
	a.spent = 500_000_000
	b2 := principalMember(p, pBudget)
	if got := b2.Value.(ast.Object).Get(kSpend).String(); got != "0.5" || b1.Value.(ast.Object).Get(kSpend).String() != "0.25" {
		t.Fatalf("spend %s after the account moved", got)
	}
	// Reading the limits of a key costs no allocation once built.
	if n := testing.AllocsPerRun(100, func() { _ = principalMember(p, pLimits); _ = principalMember(p, pMetadata) }); n != 0 {
		t.Fatalf("%v allocations per read", n)
	}
}

// TestPrincipalTermsConcurrent: requests of one key build and share its
// terms from many goroutines at once (run with -race); all see the same.
func TestPrincipalTermsConcurrent(t *testing.T) {
	p := testPrincipal()
	got := make([]*principalTerms, 8)
	var wg sync.WaitGroup
	for g := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[g] = termsOf(p)
			_ = principalMember(p, pBudget).String()
		}()
	}
	wg.Wait()
	for _, tt := range got {
		if tt != got[0] {
			t.Fatal("two goroutines got different terms")
		}
	}
}
