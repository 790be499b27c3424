package pricing

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/engine/llm"
)

func TestDefaultTable(t *testing.T) {
	tab := Default()
	if tab.Updated() == "" {
		t.Error("no updated date")
	}
	required := map[string][]string{
		"openai": {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o1-mini", "o3", "o3-mini",
			"o4-mini", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"},
		"anthropic": {"claude-3-5-sonnet", "claude-3-5-haiku", "claude-3-7-sonnet", "claude-3-opus", "claude-3-haiku",
			"claude-sonnet-4", "claude-opus-4"},
		"mistral":  {"mistral-small-latest", "mistral-large-latest", "mistral-medium", "codestral"},
		"deepseek": {"deepseek-chat", "deepseek-reasoner"},
		"groq":     {"llama-3.3-70b-versatile"},
	}
	for prov, models := range required {
		for _, m := range models {
			p, ok := tab.byProvider[prov][m]
			if !ok {
				t.Errorf("%s/%s missing", prov, m)
				continue
			}
			if p.Input <= 0 {
				t.Errorf("%s/%s: no input price", prov, m)
			}
			if p.MaxInputTokens <= 0 {
				t.Errorf("%s/%s: no max input tokens", prov, m)
			}
			embedding := strings.HasPrefix(m, "text-embedding")
			if !embedding && (p.Output <= 0 || p.MaxOutputTokens <= 0) {
				t.Errorf("%s/%s: no output price or max output tokens", prov, m)
			}
		}
	}
	// Anthropic: cache reads are 0.1x input; 5-minute cache writes 1.25x
	// (except claude-3-haiku, listed at 0.03 and 0.30 on 0.25).
	for m, p := range tab.byProvider["anthropic"] {
		wantRead, wantWrite := p.Input/10, p.Input*1.25
		if m == "claude-3-haiku" {
			wantRead, wantWrite = 3e-8, 3e-7
		}
		if !near(p.CachedInput, wantRead) {
			t.Errorf("anthropic/%s: cache read %g, want %g", m, p.CachedInput, wantRead)
		}
		if !near(p.CacheWrite, wantWrite) {
			t.Errorf("anthropic/%s: cache write %g, want %g", m, p.CacheWrite, wantWrite)
		}
	}
	// OpenAI: cached input is a discount when listed.
	for m, p := range tab.byProvider["openai"] {
		if p.CachedInput > p.Input {
			t.Errorf("openai/%s: cached input %g above input %g", m, p.CachedInput, p.Input)
		}
		if p.CacheWrite != 0 {
			t.Errorf("openai/%s: OpenAI has no cache-write price", m)
		}
	}
	// Every price has its fixed-point conversion.
	for prov, models := range tab.byProvider {
		for m, p := range models {
			if !p.fx.ok {
				t.Errorf("%s/%s: not prepared", prov, m)
			}
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(math.Abs(a), math.Abs(b)) }

func TestLookup(t *testing.T) {
	tab := Default()
	tests := []struct {
		name, provider, model string
		want                  string // "provider/model" of the expected entry, "" = not found
	}{
		{"exact", "openai", "gpt-4o", "openai/gpt-4o"},
		{"exact anthropic", "anthropic", "claude-3-5-sonnet", "anthropic/claude-3-5-sonnet"},
		{"model alone, other provider", "azure", "gpt-4o-mini", "openai/gpt-4o-mini"},
		{"model alone, no provider", "", "o3-mini", "openai/o3-mini"},
		{"provider in model", "", "anthropic/claude-3-opus", "anthropic/claude-3-opus"},
		{"provider repeated in model", "openai", "openai/gpt-4.1", "openai/gpt-4.1"},
		{"provider-qualified model with slash", "groq", "openai/gpt-oss-120b", "groq/openai/gpt-oss-120b"},
		{"slash model, no provider", "", "groq/openai/gpt-oss-120b", "groq/openai/gpt-oss-120b"},

		{"dated yyyymmdd", "anthropic", "claude-3-5-sonnet-20241022", "anthropic/claude-3-5-sonnet"},
		{"dated yyyymmdd no provider", "", "claude-3-haiku-20240307", "anthropic/claude-3-haiku"},
		{"dated yyyy-mm-dd", "openai", "gpt-4o-2024-08-06", "openai/gpt-4o"},
		{"dated mini keeps mini", "openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"},
		{"older snapshot listed exactly", "openai", "gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13"},
		{"dated o-series", "openai", "o3-mini-2025-01-31", "openai/o3-mini"},
		{"dated mmdd", "openai", "gpt-3.5-turbo-0125", "openai/gpt-3.5-turbo"},
		{"dated yymm", "mistral", "mistral-small-2503", "mistral/mistral-small"},
		{"dated older snapshot listed", "mistral", "mistral-large-2411", "mistral/mistral-large-2411"},
		{"latest", "anthropic", "claude-3-7-sonnet-latest", "anthropic/claude-3-7-sonnet"},
		{"latest listed exactly", "mistral", "codestral-latest", "mistral/codestral-latest"},
		{"vertex @date", "vertex_ai", "claude-3-5-haiku@20241022", "anthropic/claude-3-5-haiku"},
		{"claude 4 dated", "anthropic", "claude-opus-4-20250514", "anthropic/claude-opus-4"},
		{"claude 4.5 dated", "anthropic", "claude-opus-4-5-20251101", "anthropic/claude-opus-4-5"},

		{"prefix", "openai", "gpt-4o-mini-search-preview", "openai/gpt-4o-mini"},
		{"prefix after stripping fails", "vertex_ai", "claude-3-5-sonnet-v2@20241022", "anthropic/claude-3-5-sonnet"},
		{"prefix alias", "anthropic", "claude-sonnet-4-0", "anthropic/claude-sonnet-4"},
		{"prefix on provider entry", "groq", "llama-3.3-70b-versatile-128k", "groq/llama-3.3-70b-versatile"},
		{"prefix stops at a boundary", "openai", "o1x", ""},
		{"no partial segment", "openai", "gpt-4.10", ""},
		{"listed so prefix does not under-bill", "openai", "o1-pro-2025-03-19", "openai/o1-pro"},

		{"mock wildcard", "mock", "gpt-4o", "mock/*"},
		{"mock via model", "", "mock/anything", "mock/*"},
		{"unknown", "openai", "gpt-9", ""},
		{"unknown provider and model", "nobody", "nothing", ""},
		{"empty", "", "", ""},
		{"provider only", "openai", "openai/", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tab.Lookup(tc.provider, tc.model)
			if tc.want == "" {
				if ok {
					t.Fatalf("found %+v, want not found", got)
				}
				return
			}
			if !ok {
				t.Fatalf("not found, want %s", tc.want)
			}
			prov, model, _ := strings.Cut(tc.want, "/")
			want := *tab.byProvider[prov][model]
			if !got.Equal(want) {
				t.Errorf("got %+v, want %s %+v", got, tc.want, want)
			}
		})
	}
	var nilTab *Table
	if _, ok := nilTab.Lookup("openai", "gpt-4o"); ok {
		t.Error("nil table found a price")
	}
}

func TestStripDated(t *testing.T) {
	for in, want := range map[string]string{
		"claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
		"gpt-4o-2024-08-06":          "gpt-4o",
		"gpt-4-0613":                 "gpt-4",
		"x@20241022":                 "x",
		"claude-3-5-sonnet-latest":   "claude-3-5-sonnet",
		"gpt-4o":                     "",
		"o1":                         "",
		"-latest":                    "",
		"-2024-08-06":                "",
		"gpt-4o-2024-8-06":           "",
		"model-12a4":                 "",
	} {
		got, ok := stripDated(in)
		if ok != (want != "") || got != want {
			t.Errorf("stripDated(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestLookupAllocs(t *testing.T) {
	tab := Default()
	cases := [][2]string{
		{"openai", "gpt-4o"},                          // exact
		{"azure", "gpt-4o"},                           // model alone
		{"", "anthropic/claude-3-5-sonnet"},           // provider split from model
		{"anthropic", "claude-3-5-sonnet-20241022"},   // dated suffix
		{"openai", "gpt-4o-mini-search-preview"},      // prefix
		{"mock", "anything"},                          // wildcard
		{"openai", "no-such-model-anywhere-20250101"}, // miss
	}
	for _, c := range cases {
		allocs := testing.AllocsPerRun(200, func() { tab.Lookup(c[0], c[1]) })
		if allocs != 0 {
			t.Errorf("Lookup(%q, %q): %v allocs, want 0", c[0], c[1], allocs)
		}
	}
	withOv := tab.With(map[string]Price{"dep": {Input: 1e-6}})
	if a := testing.AllocsPerRun(200, func() { withOv.ForDeployment("dep", "openai", "gpt-4o") }); a != 0 {
		t.Errorf("ForDeployment: %v allocs", a)
	}
	p, _ := tab.Lookup("openai", "gpt-4o")
	tk := llm.Tokens{Prompt: 1000, CachedRead: 400, Completion: 500, Reasoning: 200}
	if a := testing.AllocsPerRun(200, func() { Cost(p, tk); Estimate(p, 1000, 0) }); a != 0 {
		t.Errorf("Cost/Estimate: %v allocs", a)
	}
}

func TestWithOverrides(t *testing.T) {
	base := Default()
	custom := Price{Input: 1e-6, Output: 2e-6}
	tab := base.With(map[string]Price{"azure-eu": custom, "tiny": {Input: 1e-7, MaxOutputTokens: 99}})

	// Override beats the table, with limits from the table.
	got, ok := tab.ForDeployment("azure-eu", "azure", "gpt-4o")
	if !ok {
		t.Fatal("override not found")
	}
	table, _ := base.Lookup("openai", "gpt-4o")
	if got.Input != 1e-6 || got.Output != 2e-6 || got.CachedInput != 0 {
		t.Errorf("override prices: %+v", got)
	}
	if got.MaxOutputTokens != table.MaxOutputTokens || got.MaxInputTokens != table.MaxInputTokens {
		t.Errorf("override limits %d/%d, want the table's %d/%d",
			got.MaxInputTokens, got.MaxOutputTokens, table.MaxInputTokens, table.MaxOutputTokens)
	}
	// Cached tokens default to the override's input price, not the table's
	// cached price: 1000*1000 + 500*2000 nano.
	if c := Cost(got, llm.Tokens{Prompt: 1000, CachedRead: 600, Completion: 500}); c != 2_000_000 {
		t.Errorf("override cost %d, want 2000000", c)
	}
	// An override's own limit wins.
	if got, _ := tab.ForDeployment("tiny", "openai", "gpt-4o"); got.MaxOutputTokens != 99 {
		t.Errorf("override limit %d, want 99", got.MaxOutputTokens)
	}
	// An override applies to a model the table does not know.
	if got, ok := tab.ForDeployment("azure-eu", "custom", "my-finetune"); !ok || got.Input != 1e-6 || got.MaxOutputTokens != 0 {
		t.Errorf("override for unknown model: %+v %v", got, ok)
	}
	// Another deployment gets the table's price; no id, no override.
	if got, ok := tab.ForDeployment("other", "openai", "gpt-4o"); !ok || !got.Equal(table) {
		t.Errorf("no override: %+v", got)
	}
	if got, ok := tab.ForDeployment("", "openai", "gpt-4o"); !ok || !got.Equal(table) {
		t.Errorf("empty id: %+v", got)
	}
	if _, ok := tab.ForDeployment("other", "openai", "gpt-9"); ok {
		t.Error("unknown model without override found")
	}
	// Mock deployments are free unless overridden.
	if got, _ := tab.ForDeployment("m1", "mock", "mock-gpt"); !got.IsZero() {
		t.Errorf("mock: %+v", got)
	}
	paid := tab.With(map[string]Price{"m1": {Input: 1e-6}})
	if got, _ := paid.ForDeployment("m1", "mock", "mock-gpt"); got.Input != 1e-6 {
		t.Errorf("overridden mock: %+v", got)
	}
	// With does not change its receiver and layers on earlier overrides.
	if _, ok := base.ForDeployment("azure-eu", "custom", "my-finetune"); ok {
		t.Error("With changed the base table")
	}
	if got, _ := paid.ForDeployment("azure-eu", "azure", "gpt-4o"); got.Input != 1e-6 {
		t.Error("second With lost the first override")
	}
	again := paid.With(map[string]Price{"azure-eu": {Input: 3e-6}})
	if got, _ := again.ForDeployment("azure-eu", "azure", "gpt-4o"); got.Input != 3e-6 {
		t.Error("a later override does not replace an earlier one")
	}
	if got, _ := paid.ForDeployment("azure-eu", "azure", "gpt-4o"); got.Input != 1e-6 {
		t.Error("With changed its receiver's overrides")
	}
	// A nil table works as an empty one.
	var nilTab *Table
	if got, ok := nilTab.With(map[string]Price{"d": custom}).ForDeployment("d", "openai", "gpt-4o"); !ok || got.Input != 1e-6 {
		t.Errorf("nil With: %+v %v", got, ok)
	}
}

func TestParse(t *testing.T) {
	good := `{"unit": "USD per 1M tokens", "providers": [
		{"provider": "a", "models": {"m": {"input": 1, "output": 2}, "shared": {"input": 5}}},
		{"provider": "b", "models": {"shared": {"input": 7}, "*": {"input": 9}}}]}`
	tab, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := tab.Lookup("a", "m"); p.Input != 1e-6 || p.Output != 2e-6 {
		t.Errorf("a/m: %+v", p)
	}
	// A bare name listed by two providers belongs to the first.
	if p, _ := tab.Lookup("", "shared"); p.Input != 5e-6 {
		t.Errorf("shared: %+v", p)
	}
	if p, _ := tab.Lookup("b", "shared"); p.Input != 7e-6 {
		t.Errorf("b/shared: %+v", p)
	}
	// The wildcard is not a bare name.
	if _, ok := tab.Lookup("", "*"); ok {
		t.Error("bare * found")
	}
	if p, _ := tab.Lookup("b", "other"); p.Input != 9e-6 {
		t.Errorf("b/*: %+v", p)
	}

	bad := map[string]string{
		"not json":          `{`,
		"wrong unit":        `{"unit": "USD per token", "providers": []}`,
		"unknown field":     `{"unit": "USD per 1M tokens", "providers": [{"provider": "a", "models": {"m": {"inptu": 1}}}]}`,
		"negative":          `{"unit": "USD per 1M tokens", "providers": [{"provider": "a", "models": {"m": {"input": -1}}}]}`,
		"negative limit":    `{"unit": "USD per 1M tokens", "providers": [{"provider": "a", "models": {"m": {"max_output_tokens": -1}}}]}`,
		"duplicate":         `{"unit": "USD per 1M tokens", "providers": [{"provider": "a"}, {"provider": "a"}]}`,
		"slash in provider": `{"unit": "USD per 1M tokens", "providers": [{"provider": "a/b"}]}`,
		"empty provider":    `{"unit": "USD per 1M tokens", "providers": [{"provider": ""}]}`,
		"empty model":       `{"unit": "USD per 1M tokens", "providers": [{"provider": "a", "models": {"": {}}}]}`,
	}
	for name, src := range bad {
		if _, err := Parse([]byte(src)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestPricesFileIsPlainJSON keeps prices.json readable by other tools.
func TestPricesFileIsPlainJSON(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal(defaultJSON, &v); err != nil {
		t.Fatal(err)
	}
	for _, p := range v["providers"].([]any) {
		if p.(map[string]any)["source"] == "" {
			t.Errorf("provider %v has no source", p.(map[string]any)["provider"])
		}
	}
}

func TestFromLiteLLM(t *testing.T) {
	p, ok, err := FromLiteLLM(map[string]any{
		KeyInputCost:      0.0000025,
		KeyOutputCost:     "1e-5",
		KeyCacheReadCost:  json.Number("1.25e-6"),
		KeyCacheWriteCost: 0,
		KeyReasoningCost:  float32(0),
		KeyMaxOutput:      uint64(16384),
		KeyMaxInput:       128000,
		"api_key":         "ignored",
	})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	want := Price{Input: 2.5e-6, Output: 1e-5, CachedInput: 1.25e-6, MaxOutputTokens: 16384, MaxInputTokens: 128000}
	if !p.Equal(want) {
		t.Errorf("got %+v, want %+v", p, want)
	}
	if _, ok, err := FromLiteLLM(map[string]any{KeyMaxOutput: 100, "model": "x"}); ok || err != nil {
		t.Errorf("no price keys: ok=%v err=%v", ok, err)
	}
	if _, ok, err := FromLiteLLM(nil); ok || err != nil {
		t.Errorf("nil: ok=%v err=%v", ok, err)
	}
	for name, params := range map[string]map[string]any{
		"negative":       {KeyInputCost: -1.0},
		"text":           {KeyOutputCost: "cheap"},
		"bool":           {KeyOutputCost: true},
		"nan":            {KeyOutputCost: math.NaN()},
		"inf":            {KeyOutputCost: math.Inf(1)},
		"fraction limit": {KeyInputCost: 1e-6, KeyMaxOutput: 1.5},
	} {
		if _, _, err := FromLiteLLM(params); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "_") {
			t.Errorf("%s: error %q does not name the key", name, err)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	tab := Default()
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tab.Lookup("openai", "gpt-4o")
		}
	})
	b.Run("dated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tab.Lookup("anthropic", "claude-3-5-sonnet-20241022")
		}
	})
	b.Run("prefix", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tab.Lookup("openai", "gpt-4o-mini-search-preview-2025-03-11")
		}
	})
}
