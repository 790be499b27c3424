package policy

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/pricing"
)

// The principal's metadata, budgets and limits, and the request's estimated
// cost. They come from the key stage's snapshot of the key
// (pipeline.Principal, one pointer shared by the key's requests) and from
// the model group's price; like the rest of the input they are built only
// when a policy reads them. What does not change while the snapshot lives
// (the metadata objects, the limits, a budget's maximum and period) is
// converted to terms once per snapshot and kept in Principal.Memo; a
// budget's spend is read from the live account each time it is built.

var (
	kTeamMetadata   = ast.StringTerm("team_metadata")
	kBudget         = ast.StringTerm("budget")
	kTeamBudget     = ast.StringTerm("team_budget")
	kLimits         = ast.StringTerm("limits")
	kMaxBudget      = ast.StringTerm("max_budget")
	kSpend          = ast.StringTerm("spend")
	kRemaining      = ast.StringTerm("remaining")
	kBudgetDuration = ast.StringTerm("budget_duration")
	kBudgetResetAt  = ast.StringTerm("budget_reset_at")
	kRPMLimit       = ast.StringTerm("rpm_limit")
	kTPMLimit       = ast.StringTerm("tpm_limit")
	kMaxParallel    = ast.StringTerm("max_parallel_requests")
	kModels         = ast.StringTerm("models")
)

// Members of the principal node past the ids (memberKeys[nodePrincipal]).
const (
	pMetadata = 5 + iota
	pTeamMetadata
	pBudget
	pTeamBudget
	pLimits
)

// principalTerms are the parts of a Principal's input that last as long as
// the snapshot.
type principalTerms struct {
	metadata, teamMetadata, limits *ast.Term
	budget, teamBudget             budgetTerms
}

// budgetTerms are a budget's fixed members.
type budgetTerms struct{ max, duration *ast.Term }

// termsOf returns p's terms, built on the first read of any of them.
func termsOf(p *pipeline.Principal) *principalTerms {
	if t, ok := p.Memo.Load().(*principalTerms); ok {
		return t
	}
	t := &principalTerms{
		metadata:     metadataTerm(p.Metadata),
		teamMetadata: metadataTerm(p.TeamMetadata),
		budget:       budgetTermsOf(&p.Budget),
		limits: ast.ObjectTerm(
			[2]*ast.Term{kRPMLimit, limitTerm(p.RPMLimit)},
			[2]*ast.Term{kTPMLimit, limitTerm(p.TPMLimit)},
			[2]*ast.Term{kMaxParallel, limitTerm(p.MaxParallel)},
			[2]*ast.Term{kModels, stringsTerm(p.Models)},
		),
	}
	if p.TeamBudget != nil {
		t.teamBudget = budgetTermsOf(p.TeamBudget)
	}
	if !p.Memo.CompareAndSwap(nil, t) {
		return p.Memo.Load().(*principalTerms)
	}
	return t
}

// principalMember builds principal member i (pMetadata...) for p; without
// a virtual key (master key, anonymous) the metadata are {} and the rest
// null.
func principalMember(p *pipeline.Principal, i int) *ast.Term {
	if p == nil {
		switch i {
		case pMetadata, pTeamMetadata:
			return ast.InternedEmptyObject
		}
		return ast.InternedNullTerm
	}
	t := termsOf(p)
	switch i {
	case pMetadata:
		return t.metadata
	case pTeamMetadata:
		return t.teamMetadata
	case pBudget:
		return budgetTerm(&p.Budget, &t.budget)
	case pTeamBudget:
		if p.TeamBudget == nil {
			return ast.InternedNullTerm
		}
		return budgetTerm(p.TeamBudget, &t.teamBudget)
	case pLimits:
		return t.limits
	}
	return nil
}

// metadataTerm is a metadata object as a term; {} when raw is not one.
func metadataTerm(raw []byte) *ast.Term {
	r := gjson.ParseBytes(raw)
	if !r.IsObject() {
		return ast.InternedEmptyObject
	}
	return jsonTerm(r, 0)
}

func budgetTermsOf(b *pipeline.Budget) budgetTerms {
	t := budgetTerms{max: ast.InternedNullTerm, duration: ast.InternedNullTerm}
	if b.Max >= 0 {
		t.max = usdTerm(b.Max)
	}
	if b.Duration != "" {
		t.duration = ast.StringTerm(b.Duration)
	}
	return t
}

// budgetTerm is a budget with its current spend: {max_budget, spend,
// remaining, budget_duration, budget_reset_at}, money in USD.
func budgetTerm(b *pipeline.Budget, t *budgetTerms) *ast.Term {
	var spent, resetAt int64
	if b.Account != nil {
		spent, resetAt = b.Account.Spent(), b.Account.ResetAt()
	}
	remaining, reset := ast.InternedNullTerm, ast.InternedNullTerm
	if b.Max >= 0 {
		remaining = usdTerm(max(b.Max-spent, 0))
	}
	if resetAt != 0 {
		reset = ast.StringTerm(time.Unix(0, resetAt).UTC().Format(time.RFC3339))
	}
	return ast.ObjectTerm(
		[2]*ast.Term{kMaxBudget, t.max},
		[2]*ast.Term{kSpend, usdTerm(spent)},
		[2]*ast.Term{kRemaining, remaining},
		[2]*ast.Term{kBudgetDuration, t.duration},
		[2]*ast.Term{kBudgetResetAt, reset},
	)
}

// limitTerm is a limit (-1: none, null).
func limitTerm(n int64) *ast.Term {
	if n < 0 {
		return ast.InternedNullTerm
	}
	return ast.IntNumberTerm(int(n))
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

// usdTerm is an amount of nano-dollars as a number of USD, written exactly
// (200000 → 0.0002).
func usdTerm(nano int64) *ast.Term {
	var buf [32]byte
	b := buf[:0]
	u := uint64(nano)
	if nano < 0 {
		b = append(b, '-')
		u = -u
	}
	b = strconv.AppendUint(b, u/1e9, 10)
	if frac := u % 1e9; frac != 0 {
		var digits [9]byte
		for i := len(digits) - 1; i >= 0; i-- {
			digits[i] = byte('0' + frac%10)
			frac /= 10
		}
		n := len(digits)
		for digits[n-1] == '0' {
			n--
		}
		b = append(b, '.')
		b = append(b, digits[:n]...)
	}
	return ast.NumberTerm(json.Number(b))
}

// estimatedCost is llm.estimated_cost: promptTokens at the input price of
// the dearest deployment of the model group plus max_tokens (0 when unset)
// at its output price, in USD; null when the group is unknown or unpriced.
func (d *inputDoc) estimatedCost(promptTokens int) *ast.Term {
	if d.e.price == nil {
		return ast.InternedNullTerm
	}
	p, ok := d.e.price(d.group())
	if !ok || p.IsZero() {
		return ast.InternedNullTerm
	}
	return usdTerm(pricing.Cost(p, llm.Tokens{Prompt: promptTokens, Completion: max(d.x.MaxTokens, 0)}))
}
