package pricing

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/store"
)

func mustLookup(t testing.TB, provider, model string) Price {
	t.Helper()
	p, ok := Default().Lookup(provider, model)
	if !ok {
		t.Fatalf("Lookup(%q, %q): not found", provider, model)
	}
	return p
}

func TestCost(t *testing.T) {
	// Prices in nano-dollars per token (USD per 1M tokens * 1000):
	//   o3-mini            input 1100, cached 550, output 4400
	//   gpt-4o             input 2500, cached 1250, output 10000
	//   gpt-4o-mini        input 150, cached 75, output 600
	//   claude-3-5-sonnet  input 3000, cache read 300, cache write 3750, output 15000
	//   claude-3-haiku     input 250, cache read 30, cache write 300, output 1250
	//   claude-sonnet-4    as claude-3-5-sonnet
	//   deepseek-reasoner  input 280, cache hit 28, output 420
	//   text-embedding-3-small input 20
	openaiShape := llm.Tokens{Prompt: 1000, CachedRead: 400, Completion: 500, Reasoning: 200}
	// Anthropic: input_tokens 100 + cache_read_input_tokens 1000 +
	// cache_creation_input_tokens 500, output_tokens 200.
	anthropicShape := llm.Tokens{Prompt: 1600, CachedRead: 1000, CacheWrite: 500, Completion: 200}

	tests := []struct {
		name     string
		provider string
		model    string
		tk       llm.Tokens
		want     store.Nano
	}{
		// 600*1100 + 400*550 + (500-200)*4400 + 200*4400
		// = 660,000 + 220,000 + 1,320,000 + 880,000
		{"openai o3-mini", "openai", "o3-mini", openaiShape, 3_080_000},
		// 7*1100 = 7700 (float64: 7*1.1e-6*1e9 = 7700.000000000001, which a
		// naive math.Ceil bills as 7701)
		{"no float fuzz", "openai", "o3-mini", llm.Tokens{Prompt: 7}, 7700},
		// 600*2500 + 400*1250 + 300*10000 + 200*10000
		// = 1,500,000 + 500,000 + 3,000,000 + 2,000,000
		{"openai gpt-4o", "openai", "gpt-4o", openaiShape, 7_000_000},
		// 600*150 + 400*75 + 500*600 = 90,000 + 30,000 + 300,000
		{"openai gpt-4o-mini", "openai", "gpt-4o-mini", openaiShape, 420_000},
		// 100*3000 + 1000*300 + 500*3750 + 200*15000
		// = 300,000 + 300,000 + 1,875,000 + 3,000,000
		{"anthropic claude-3-5-sonnet", "anthropic", "claude-3-5-sonnet-20241022", anthropicShape, 5_475_000},
		// 100*250 + 1000*30 + 500*300 + 200*1250
		// = 25,000 + 30,000 + 150,000 + 250,000
		{"anthropic claude-3-haiku", "anthropic", "claude-3-haiku-20240307", anthropicShape, 455_000},
		// thinking: output 1000 of which 600 reasoning:
		// 300,000 + 300,000 + 1,875,000 + 400*15000 + 600*15000
		{"anthropic thinking", "anthropic", "claude-sonnet-4-20250514",
			llm.Tokens{Prompt: 1600, CachedRead: 1000, CacheWrite: 500, Completion: 1000, Reasoning: 600}, 17_475_000},
		// 600*280 + 400*28 + 300*420 + 200*420 = 168,000 + 11,200 + 126,000 + 84,000
		{"deepseek cache hit", "deepseek", "deepseek-reasoner", openaiShape, 389_200},
		// 1e6*20
		{"embedding 1M tokens", "openai", "text-embedding-3-small", llm.Tokens{Prompt: 1_000_000}, 20_000_000},
		{"no tokens", "openai", "gpt-4o", llm.Tokens{}, 0},
		{"mock is free", "mock", "gpt-4o", openaiShape, 0},
		// cache beyond the prompt is billed in full: 0*2500 + 2000*1250
		{"cached beyond prompt", "openai", "gpt-4o", llm.Tokens{Prompt: 1000, CachedRead: 2000}, 2_500_000},
		// reasoning beyond completion is billed in full: 300*10000
		{"reasoning beyond completion", "openai", "gpt-4o", llm.Tokens{Completion: 100, Reasoning: 300}, 3_000_000},
		{"negative counts are zero", "openai", "gpt-4o", llm.Tokens{Prompt: -5, CachedRead: -3, Completion: -1, Reasoning: -9}, 0},
		// negative cache counts do not inflate the uncached count: 10*2500
		{"negative cache counts", "openai", "gpt-4o", llm.Tokens{Prompt: 10, CachedRead: -100, CacheWrite: -100}, 25_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := mustLookup(t, tc.provider, tc.model)
			if got := Cost(p, tc.tk); got != tc.want {
				t.Errorf("Cost = %d nano, want %d", got, tc.want)
			}
		})
	}
}

// TestCostFractionalNano covers prices that are not a whole number of
// nano-dollars per token (below 0.001 USD per 1M tokens, or with more than
// three decimals per 1M tokens): the total is exact and rounded up once.
func TestCostFractionalNano(t *testing.T) {
	tests := []struct {
		name string
		p    Price
		tk   llm.Tokens
		want store.Nano
	}{
		// 0.15 nano per token: 20 tokens = 3, 21 = 3.15 -> 4, 1 = 0.15 -> 1.
		{"whole total", Price{Input: 1.5e-10}, llm.Tokens{Prompt: 20}, 3},
		{"rounds up", Price{Input: 1.5e-10}, llm.Tokens{Prompt: 21}, 4}, // 3.15
		{"one token", Price{Input: 1.5e-10}, llm.Tokens{Prompt: 1}, 1},  // 0.15
		// 0.075 nano per cached token: 40 = 3, 41 = 3.075 -> 4.
		{"cached whole", Price{Input: 1.5e-10, CachedInput: 7.5e-11}, llm.Tokens{Prompt: 40, CachedRead: 40}, 3},
		{"cached rounds up", Price{Input: 1.5e-10, CachedInput: 7.5e-11}, llm.Tokens{Prompt: 41, CachedRead: 41}, 4},
		// 0.1 + 0.2 nano: 10*0.1 + 10*0.2 = 3 exactly; one token of each is
		// 0.3 (0.30000000000000004 in float64), rounded once over the total,
		// not once per part (which would give 2).
		{"parts sum to whole", Price{Input: 1e-10, Output: 2e-10}, llm.Tokens{Prompt: 10, Completion: 10}, 3},
		{"parts round once", Price{Input: 1e-10, Output: 2e-10}, llm.Tokens{Prompt: 1, Completion: 1}, 1}, // 0.3
		// 546.875 nano per token (5.46875e-7 USD): 8 tokens = 4375, 1 = 547.
		{"three decimals whole", Price{Input: 5.46875e-7}, llm.Tokens{Prompt: 8}, 4375},
		{"three decimals rounds up", Price{Input: 5.46875e-7}, llm.Tokens{Prompt: 1}, 547},
		// 312.5 nano (a 1.25x cache write on 0.25 USD/1M): 2 = 625, 3 = 937.5 -> 938.
		{"half nano whole", Price{Input: 2.5e-7, CacheWrite: 3.125e-7}, llm.Tokens{Prompt: 2, CacheWrite: 2}, 625},
		{"half nano rounds up", Price{Input: 2.5e-7, CacheWrite: 3.125e-7}, llm.Tokens{Prompt: 3, CacheWrite: 3}, 938},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cost(tc.p, tc.tk); got != tc.want {
				t.Errorf("Cost = %d nano, want %d", got, tc.want)
			}
		})
	}
}

func TestCostHandBuiltPrice(t *testing.T) {
	tk := llm.Tokens{Prompt: 1000, CachedRead: 400, CacheWrite: 100, Completion: 500, Reasoning: 200}
	// Defaults: cached and write at Input, reasoning at Output.
	// 1000*2500 + 300*10000 + 200*10000 = 7,500,000
	p := Price{Input: 2.5e-6, Output: 1e-5}
	if got := Cost(p, tk); got != 7_500_000 {
		t.Errorf("defaults: Cost = %d, want 7500000", got)
	}
	// Explicit prices for every kind:
	// 500*2500 + 400*1000 + 100*4000 + 300*10000 + 200*20000
	// = 1,250,000 + 400,000 + 400,000 + 3,000,000 + 4,000,000
	p = Price{Input: 2.5e-6, CachedInput: 1e-6, CacheWrite: 4e-6, Output: 1e-5, Reasoning: 2e-5}
	if got := Cost(p, tk); got != 9_050_000 {
		t.Errorf("explicit: Cost = %d, want 9050000", got)
	}

	// A table Price and the same Price built by hand cost the same.
	tp := mustLookup(t, "anthropic", "claude-3-5-sonnet")
	hp := Price{Input: tp.Input, Output: tp.Output, CachedInput: tp.CachedInput, CacheWrite: tp.CacheWrite}
	if a, b := Cost(tp, tk), Cost(hp, tk); a != b {
		t.Errorf("table %d != hand-built %d", a, b)
	}
	if !tp.Equal(Price{Input: tp.Input, Output: tp.Output, CachedInput: tp.CachedInput, CacheWrite: tp.CacheWrite,
		MaxInputTokens: tp.MaxInputTokens, MaxOutputTokens: tp.MaxOutputTokens}) {
		t.Error("Equal: table price differs from its hand-built copy")
	}

	// Changing a table Price's fields after the lookup is noticed.
	gp := mustLookup(t, "openai", "gpt-4o")
	gp.Input = 5e-6
	if got := Cost(gp, llm.Tokens{Prompt: 1000}); got != 5_000_000 {
		t.Errorf("changed price: Cost = %d, want 5000000", got)
	}
}

func TestCostEdges(t *testing.T) {
	// Sub-pico prices round up to 1 pico-dollar per token:
	// 1 token = 1 pico -> 1 nano; 1000 tokens = 1 nano; 1001 -> 2.
	tiny := Price{Input: 1e-13}
	for _, c := range []struct {
		n    int
		want store.Nano
	}{{1, 1}, {1000, 1}, {1001, 2}} {
		if got := Cost(tiny, llm.Tokens{Prompt: c.n}); got != c.want {
			t.Errorf("tiny price, %d tokens: %d, want %d", c.n, got, c.want)
		}
	}
	// Saturation instead of overflow.
	huge := Price{Input: 1000, Output: 1000}
	if got := Cost(huge, llm.Tokens{Prompt: math.MaxInt, Completion: math.MaxInt}); got != math.MaxInt64 {
		t.Errorf("huge: %d, want MaxInt64", got)
	}
	if got := Estimate(huge, math.MaxInt, math.MaxInt); got != math.MaxInt64 {
		t.Errorf("huge estimate: %d, want MaxInt64", got)
	}
	// Just below saturation stays exact: 2^53 tokens at 1 nano.
	one := Price{Input: 1e-9}
	if got := Cost(one, llm.Tokens{Prompt: 1 << 53}); got != 1<<53 {
		t.Errorf("2^53 tokens at 1 nano: %d", got)
	}
	// Invalid prices bill as zero rather than negative.
	bad := Price{Input: -1e-6, Output: math.NaN()}
	if got := Cost(bad, llm.Tokens{Prompt: 10, Completion: 10}); got != 0 {
		t.Errorf("invalid price: %d, want 0", got)
	}
	if bad.Validate() == nil {
		t.Error("Validate accepted a negative price")
	}
	if (Price{Input: math.Inf(1)}).Validate() == nil {
		t.Error("Validate accepted an infinite price")
	}
	if (Price{MaxOutputTokens: -1}).Validate() == nil {
		t.Error("Validate accepted a negative limit")
	}
	if !(Price{MaxOutputTokens: 10}).IsZero() || (Price{Reasoning: 1e-6}).IsZero() {
		t.Error("IsZero")
	}
}

func TestToPico(t *testing.T) {
	cases := []struct {
		usd  float64
		want int64
	}{
		{2.5e-6, 2_500_000},
		{1.1e-6, 1_100_000},
		{4.4e-6, 4_400_000},
		{7.5e-8, 75_000},
		{0.15 / 1e6, 150_000},
		{0.028 / 1e6, 28_000},
		{2.5e-8, 25_000},
		{3.75e-6, 3_750_000},
		{1.875e-5, 18_750_000},
		{5.46875e-7, 546_875},
		{1e-13, 1},
		{1.5e-13, 1},
		{1.5e-12, 2},
		{0, 0},
		{-1, 0},
		{math.NaN(), 0},
		{math.Inf(1), maxPico},
	}
	for _, c := range cases {
		if got := toPico(c.usd); got != c.want {
			t.Errorf("toPico(%g) = %d, want %d", c.usd, got, c.want)
		}
	}
}

func TestEstimate(t *testing.T) {
	gpt := mustLookup(t, "openai", "gpt-4o")
	// 1000*2500 + 500*10000
	if got := Estimate(gpt, 1000, 500); got != 7_500_000 {
		t.Errorf("gpt-4o: %d, want 7500000", got)
	}
	// No max_tokens: the model's cap, 8192 for claude-3-5-sonnet. Prompt
	// tokens at the cache-write price, the dearest: 1000*3750 + 8192*15000.
	son := mustLookup(t, "anthropic", "claude-3-5-sonnet")
	if got := Estimate(son, 1000, 0); got != 126_630_000 {
		t.Errorf("claude-3-5-sonnet: %d, want 126630000", got)
	}
	// A reasoning price above output is the bound: 10*1000 + 10*3000.
	p := Price{Input: 1e-6, Output: 2e-6, Reasoning: 3e-6}
	if got := Estimate(p, 10, 10); got != 40_000 {
		t.Errorf("reasoning bound: %d, want 40000", got)
	}
	if got := Estimate(mustLookup(t, "mock", "x"), 1e6, 1e6); got != 0 {
		t.Errorf("mock: %d, want 0", got)
	}
}

// TestEstimateBoundsCost checks Estimate >= Cost for random consistent usage
// within the estimate's bounds, for every price in the table and some odd
// hand-built ones.
func TestEstimateBoundsCost(t *testing.T) {
	var prices []Price
	for _, models := range Default().byProvider {
		for _, p := range models {
			prices = append(prices, *p)
		}
	}
	prices = append(prices,
		Price{Input: 1e-6, CachedInput: 5e-6, Output: 1e-6},                     // cached dearer than input
		Price{Input: 1e-6, Output: 2e-6, Reasoning: 8e-6},                       // reasoning dearer than output
		Price{Input: 3e-13, CacheWrite: 7e-13, Output: 1e-13, Reasoning: 2e-12}, // sub-nano everywhere
		Price{Output: 1e-5}, // free input
	)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		p := prices[rng.IntN(len(prices))]
		promptMax := rng.IntN(2_000_000)
		outMax := rng.IntN(200_000)
		prompt := rng.IntN(promptMax + 1)
		cached := rng.IntN(prompt + 1)
		written := rng.IntN(prompt - cached + 1)
		completion := rng.IntN(outMax + 1)
		reasoning := rng.IntN(completion + 1)
		tk := llm.Tokens{Prompt: prompt, CachedRead: cached, CacheWrite: written, Completion: completion, Reasoning: reasoning}
		c, e := Cost(p, tk), Estimate(p, promptMax, outMax)
		if c > e {
			t.Fatalf("Cost %d > Estimate %d for %+v, tokens %+v, bounds %d/%d", c, e, p, tk, promptMax, outMax)
		}
		if c < 0 {
			t.Fatalf("negative cost %d", c)
		}
	}
}

func BenchmarkCost(b *testing.B) {
	p := mustLookup(b, "openai", "o3-mini")
	tk := llm.Tokens{Prompt: 1000, CachedRead: 400, Completion: 500, Reasoning: 200}
	b.ReportAllocs()
	for b.Loop() {
		Cost(p, tk)
	}
}

func TestMax(t *testing.T) {
	a := Price{Input: 1e-6, Output: 2e-6, MaxOutputTokens: 100, MaxInputTokens: 5000}
	b := Price{Input: 3e-6, CachedInput: 5e-7, Output: 1e-6, MaxOutputTokens: 300}
	m := Max(a, b)
	want := Price{Input: 3e-6, Output: 2e-6, CachedInput: 1e-6, CacheWrite: 3e-6, Reasoning: 2e-6,
		MaxOutputTokens: 300, MaxInputTokens: 5000}
	if !m.Equal(want) {
		t.Errorf("Max = %+v, want %+v", m, want)
	}
	if !Max(Price{}, Price{}).IsZero() {
		t.Error("Max of free prices is not free")
	}
	if got := Max(Price{}, a); got.Input != a.Input || got.CachedInput != a.Input || got.Reasoning != a.Output {
		t.Errorf("Max with zero: %+v", got)
	}
	if got := Max(Price{Input: math.NaN(), Output: -1}, Price{}); !got.IsZero() {
		t.Errorf("invalid prices: %+v", got)
	}

	// Property: the max bounds both, for Cost and Estimate.
	var prices []Price
	for _, models := range Default().byProvider {
		for _, p := range models {
			prices = append(prices, *p)
		}
	}
	prices = append(prices, Price{Input: 1e-6, CachedInput: 5e-6, Output: 1e-6, Reasoning: 9e-6}, Price{Output: 1e-5})
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20000; i++ {
		a, b := prices[rng.IntN(len(prices))], prices[rng.IntN(len(prices))]
		m := Max(a, b)
		prompt := rng.IntN(1_000_000)
		cached := rng.IntN(prompt + 1)
		written := rng.IntN(prompt - cached + 1)
		completion := rng.IntN(100_000)
		tk := llm.Tokens{Prompt: prompt, CachedRead: cached, CacheWrite: written, Completion: completion, Reasoning: rng.IntN(completion + 1)}
		if cm := Cost(m, tk); cm < Cost(a, tk) || cm < Cost(b, tk) {
			t.Fatalf("Cost(Max) %d below Cost(a) %d or Cost(b) %d; a=%+v b=%+v tk=%+v", cm, Cost(a, tk), Cost(b, tk), a, b, tk)
		}
		if em := Estimate(m, prompt, completion); em < Estimate(a, prompt, completion) || em < Estimate(b, prompt, completion) {
			t.Fatalf("Estimate(Max) below an input's; a=%+v b=%+v", a, b)
		}
	}
}
