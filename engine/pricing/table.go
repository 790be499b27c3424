package pricing

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
)

//go:embed prices.json
var defaultJSON []byte

// Table maps provider and model names to Prices. It is immutable once built
// and safe for concurrent use.
type Table struct {
	// byProvider holds provider -> model -> price; model "*" is the
	// provider-wide price.
	byProvider map[string]map[string]*Price
	// byModel holds every model name without its provider. A name listed by
	// several providers keeps the first provider's price, in file order.
	byModel map[string]*Price
	// overrides holds per-deployment prices, by deployment id.
	overrides map[string]Price
	updated   string
}

var (
	defaultOnce  sync.Once
	defaultTable *Table
)

// Default returns the built-in table, parsed from the embedded prices.json
// on first use.
func Default() *Table {
	defaultOnce.Do(func() {
		t, err := Parse(defaultJSON)
		if err != nil {
			panic("pricing: embedded prices.json: " + err.Error())
		}
		defaultTable = t
	})
	return defaultTable
}

// Unit is the price unit of a prices file.
const Unit = "USD per 1M tokens"

type file struct {
	Updated   string         `json:"updated"`
	Unit      string         `json:"unit"`
	Note      string         `json:"note"`
	Providers []fileProvider `json:"providers"`
}

type fileProvider struct {
	Provider string               `json:"provider"`
	Source   string               `json:"source"`
	Models   map[string]fileModel `json:"models"`
}

// fileModel is one model's prices, in USD per 1M tokens.
type fileModel struct {
	Input           float64 `json:"input"`
	Output          float64 `json:"output"`
	CachedInput     float64 `json:"cached_input"`
	CacheWrite      float64 `json:"cache_write"`
	Reasoning       float64 `json:"reasoning"`
	MaxInputTokens  int     `json:"max_input_tokens"`
	MaxOutputTokens int     `json:"max_output_tokens"`
	Note            string  `json:"note"`
}

// Parse builds a table from a prices file in the format of the embedded
// prices.json: {"unit": "USD per 1M tokens", "providers": [{"provider":
// "openai", "source": "...", "models": {"gpt-4o": {"input": 2.5, ...}}}]}.
// Unknown fields are errors.
func Parse(data []byte) (*Table, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("pricing: %w", err)
	}
	if f.Unit != Unit {
		return nil, fmt.Errorf("pricing: unit %q: want %q", f.Unit, Unit)
	}
	t := &Table{
		byProvider: map[string]map[string]*Price{},
		byModel:    map[string]*Price{},
		updated:    f.Updated,
	}
	for i, fp := range f.Providers {
		if fp.Provider == "" || strings.ContainsRune(fp.Provider, '/') {
			return nil, fmt.Errorf("pricing: providers[%d]: provider %q: want a name without '/'", i, fp.Provider)
		}
		if _, dup := t.byProvider[fp.Provider]; dup {
			return nil, fmt.Errorf("pricing: provider %q listed twice", fp.Provider)
		}
		models := make(map[string]*Price, len(fp.Models))
		t.byProvider[fp.Provider] = models
		for name, m := range fp.Models {
			if name == "" {
				return nil, fmt.Errorf("pricing: %s: empty model name", fp.Provider)
			}
			p := &Price{
				Input:           perMillion(m.Input),
				Output:          perMillion(m.Output),
				CachedInput:     perMillion(m.CachedInput),
				CacheWrite:      perMillion(m.CacheWrite),
				Reasoning:       perMillion(m.Reasoning),
				MaxInputTokens:  m.MaxInputTokens,
				MaxOutputTokens: m.MaxOutputTokens,
			}
			if err := p.Validate(); err != nil {
				return nil, fmt.Errorf("pricing: %s/%s: %w", fp.Provider, name, err)
			}
			p.prepare()
			models[name] = p
		}
	}
	// Bare model names, first provider wins: done after all providers so a
	// provider's own map order cannot matter.
	for _, fp := range f.Providers {
		for name, p := range t.byProvider[fp.Provider] {
			if name == "*" {
				continue
			}
			if _, taken := t.byModel[name]; !taken {
				t.byModel[name] = p
			}
		}
	}
	return t, nil
}

func perMillion(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return v // left for Validate to report
	}
	return v / 1e6
}

// Updated is the date the table's prices were last checked ("" if unknown).
func (t *Table) Updated() string {
	if t == nil {
		return ""
	}
	return t.updated
}

// Lookup finds the price of a model, trying in order:
//
//  1. "provider/model" exactly;
//  2. the provider-wide price "provider/*" (the mock provider is free);
//  3. the model name alone, under any provider;
//  4. the name without a dated or -latest suffix (claude-3-5-sonnet-20241022
//     and claude-3-5-sonnet-latest -> claude-3-5-sonnet, gpt-4o-2024-08-06 ->
//     gpt-4o, mistral-large-2411 -> mistral-large, name@20241022 -> name),
//     with the provider, then alone;
//  5. the longest known prefix ending at a '-', '_', ':', '@' or '/'
//     (gpt-4o-mini-search-preview -> gpt-4o-mini), with the provider, then
//     alone. A '.' is not a boundary: it separates version numbers, and
//     gpt-4.5 must not be billed as gpt-4.
//
// A model given as "provider/model" with an empty provider is split at the
// first '/'; a model that repeats the provider ("openai", "openai/gpt-4o")
// loses the prefix. Names are case-sensitive. Lookup does not allocate.
func (t *Table) Lookup(provider, model string) (Price, bool) {
	if p := t.find(provider, model); p != nil {
		return *p, true
	}
	return Price{}, false
}

func (t *Table) find(provider, model string) *Price {
	if t == nil {
		return nil
	}
	if provider == "" {
		if i := strings.IndexByte(model, '/'); i > 0 {
			provider, model = model[:i], model[i+1:]
		}
	} else if len(model) > len(provider) && model[len(provider)] == '/' && model[:len(provider)] == provider {
		model = model[len(provider)+1:]
	}
	if model == "" {
		return nil
	}
	pm := t.byProvider[provider] // nil for an unknown provider: lookups miss
	if p := pm[model]; p != nil {
		return p
	}
	if p := pm["*"]; p != nil {
		return p
	}
	if p := t.byModel[model]; p != nil {
		return p
	}
	if base, ok := stripDated(model); ok {
		if p := pm[base]; p != nil {
			return p
		}
		if p := t.byModel[base]; p != nil {
			return p
		}
	}
	for i := len(model) - 1; i > 0; i-- {
		if !isSep(model[i]) {
			continue
		}
		prefix := model[:i]
		if p := pm[prefix]; p != nil {
			return p
		}
		if p := t.byModel[prefix]; p != nil {
			return p
		}
	}
	return nil
}

func isSep(c byte) bool {
	return c == '-' || c == '_' || c == ':' || c == '@' || c == '/'
}

// stripDated removes one version suffix: -latest, -YYYY-MM-DD, -YYYYMMDD or
// @YYYYMMDD, or a four-digit -MMDD/-YYMM (gpt-4-0613, mistral-large-2411).
func stripDated(m string) (string, bool) {
	n := len(m)
	switch {
	case strings.HasSuffix(m, "-latest") && n > len("-latest"):
		return m[:n-len("-latest")], true
	case n > 11 && m[n-11] == '-' && m[n-6] == '-' && m[n-3] == '-' &&
		digits(m[n-10:n-6]) && digits(m[n-5:n-3]) && digits(m[n-2:]):
		return m[:n-11], true
	case n > 9 && (m[n-9] == '-' || m[n-9] == '@') && digits(m[n-8:]):
		return m[:n-9], true
	case n > 5 && m[n-5] == '-' && digits(m[n-4:]):
		return m[:n-5], true
	}
	return "", false
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// With returns a copy of t with per-deployment price overrides, keyed by
// deployment id; they are added to (and replace, id by id) any overrides t
// already has. t is not changed.
//
// An override replaces the table's prices for that deployment entirely: a
// price it leaves at zero follows the Price defaults (CachedInput and
// CacheWrite at Input, Reasoning at Output), not the table. Its token limits,
// when zero, come from the table (see ForDeployment).
func (t *Table) With(overrides map[string]Price) *Table {
	c := &Table{overrides: map[string]Price{}}
	if t != nil {
		c.byProvider, c.byModel, c.updated = t.byProvider, t.byModel, t.updated
		maps.Copy(c.overrides, t.overrides)
	}
	for id, p := range overrides {
		p.prepare()
		c.overrides[id] = p
	}
	return c
}

// ForDeployment is the price of one deployment: its override if it has one
// (with token limits it leaves at zero filled in from the table), else
// Lookup(provider, model). It does not allocate.
func (t *Table) ForDeployment(id, provider, model string) (Price, bool) {
	base := t.find(provider, model)
	if t != nil && id != "" {
		if o, ok := t.overrides[id]; ok {
			if base != nil {
				if o.MaxOutputTokens == 0 {
					o.MaxOutputTokens = base.MaxOutputTokens
				}
				if o.MaxInputTokens == 0 {
					o.MaxInputTokens = base.MaxInputTokens
				}
			}
			return o, true
		}
	}
	if base == nil {
		return Price{}, false
	}
	return *base, true
}
