// Package pricing turns token usage into money.
//
// A Price is a model's list price in USD per token (LiteLLM's unit). A Table
// maps provider and model names to Prices: the built-in one (Default) is the
// embedded prices.json, and With layers per-deployment overrides from the
// config on top. Cost bills a finished request's usage; Estimate gives the
// most a request can cost, for budget reservations made before it runs.
//
// Money comes out as store.Nano (integer nano-dollars), always rounded up to
// the next nano so a request is never under-billed. Every price is converted
// once, when the table is built, to an integer number of pico-dollars (1e-12
// USD) per token, and usage is billed with exact integer arithmetic and a
// single rounding of the total. Plain float64 arithmetic would over-bill:
// 7 tokens at 1.1e-6 USD is 7*1.1e-6*1e9 = 7700.000000000001 nano-dollars in
// float64, which math.Ceil turns into 7701; here it is 7700.
package pricing

import (
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/store"
)

// Price is a model's price in USD per token, and its token limits.
//
// Zero prices mean "unset" and default as follows: CachedInput and
// CacheWrite default to Input (the provider gives no discount or premium for
// those tokens), Reasoning defaults to Output (OpenAI and Anthropic bill
// reasoning tokens as output). A Price whose five prices are all zero is free.
//
// Prices returned by a Table carry their fixed-point conversion, computed once
// when the table was built; a Price built or changed by hand is converted
// when it is billed, with the same result. Compare Prices with Equal, not ==.
type Price struct {
	Input       float64 // uncached prompt tokens
	Output      float64 // completion tokens that are not reasoning tokens
	CachedInput float64 // prompt tokens read from the provider's cache (0 => Input)
	CacheWrite  float64 // prompt tokens written to the provider's cache (0 => Input)
	Reasoning   float64 // reasoning tokens (0 => Output)

	// MaxOutputTokens is the model's output cap: what a budget reservation
	// assumes when a request sets no max_tokens. 0 = unknown.
	MaxOutputTokens int
	// MaxInputTokens is the model's context window for input. 0 = unknown.
	MaxInputTokens int

	fx fixed
}

// fixed is a Price converted to pico-dollars per token, with the defaults
// applied, and the USD prices it was converted from (so a Price changed after
// the conversion is noticed and converted again).
type fixed struct {
	src [5]float64
	r   rates
	ok  bool
}

// rates are pico-dollars per token with the defaults applied.
type rates struct {
	in, out, cachedIn, cacheWrite, reasoning int64
}

const (
	picoPerUSD  = 1e12
	picoPerNano = 1000
	// maxPico caps a per-token price (about 1,126 USD per token) so that a
	// sum of five products of an int and a price always fits in 128 bits.
	maxPico = 1 << 50
)

func (p *Price) sources() [5]float64 {
	return [5]float64{p.Input, p.Output, p.CachedInput, p.CacheWrite, p.Reasoning}
}

// prepare converts p's prices to fixed point and stores the result in p.
func (p *Price) prepare() {
	p.fx = fixed{src: p.sources(), r: p.convert(), ok: true}
}

// rates returns p's fixed-point prices, converting them if p has no
// conversion or was changed since.
func (p *Price) rates() rates {
	if p.fx.ok && p.fx.src == p.sources() {
		return p.fx.r
	}
	return p.convert()
}

func (p *Price) convert() rates {
	r := rates{in: toPico(p.Input), out: toPico(p.Output)}
	r.cachedIn, r.cacheWrite, r.reasoning = r.in, r.in, r.out
	if v := toPico(p.CachedInput); v > 0 {
		r.cachedIn = v
	}
	if v := toPico(p.CacheWrite); v > 0 {
		r.cacheWrite = v
	}
	if v := toPico(p.Reasoning); v > 0 {
		r.reasoning = v
	}
	return r
}

// toPico converts USD per token to whole pico-dollars per token. Values within
// a billionth (relative) of a whole number are taken as that number, which
// absorbs the binary representation error of decimal prices (2.5e-6 is not
// exactly representable); anything else is rounded up. Negative and NaN
// prices are 0; huge ones saturate.
func toPico(usd float64) int64 {
	if !(usd > 0) {
		return 0
	}
	x := usd * picoPerUSD
	if x >= maxPico {
		return maxPico
	}
	r := math.Round(x)
	if math.Abs(x-r) <= x*1e-9 {
		return int64(r)
	}
	return int64(math.Ceil(x))
}

// IsZero reports whether all five prices are zero (a free model).
func (p Price) IsZero() bool {
	return p.Input == 0 && p.Output == 0 && p.CachedInput == 0 && p.CacheWrite == 0 && p.Reasoning == 0
}

// Equal reports whether p and q have the same prices and limits.
func (p Price) Equal(q Price) bool {
	return p.sources() == q.sources() && p.MaxOutputTokens == q.MaxOutputTokens && p.MaxInputTokens == q.MaxInputTokens
}

// Validate reports a price that is negative, NaN or infinite, or a negative
// token limit.
func (p Price) Validate() error {
	names := [5]string{"input", "output", "cached input", "cache write", "reasoning"}
	for i, v := range p.sources() {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("%s price %v: must be a finite number >= 0", names[i], v)
		}
		if v*picoPerUSD >= maxPico {
			return fmt.Errorf("%s price %v USD per token: too large", names[i], v)
		}
	}
	if p.MaxOutputTokens < 0 || p.MaxInputTokens < 0 {
		return errors.New("token limits must not be negative")
	}
	return nil
}

// Max is a price at least as high as a and b for every kind of token, with
// the larger of each token limit: for any usage, Cost(Max(a, b), tk) is at
// least Cost(a, tk) and Cost(b, tk), and the same holds for Estimate with an
// explicit maxOutput. Defaults are resolved first, so the result sets all
// five prices: Max({Input: 1, Output: 2}, {Input: 3, CachedInput: 0.5}) has
// CachedInput 1 (a's cached tokens cost its input price), not 0.5. Invalid
// (negative, NaN) prices count as 0. Use it for the dearest deployment of a
// group, e.g. to reserve budget before knowing which one will serve.
func Max(a, b Price) Price {
	ea, eb := a.effective(), b.effective()
	m := Price{MaxOutputTokens: max(a.MaxOutputTokens, b.MaxOutputTokens), MaxInputTokens: max(a.MaxInputTokens, b.MaxInputTokens)}
	dst := [5]*float64{&m.Input, &m.Output, &m.CachedInput, &m.CacheWrite, &m.Reasoning}
	for i := range dst {
		*dst[i] = max(ea[i], eb[i])
	}
	m.prepare()
	return m
}

// effective is p's five USD prices with the defaults applied and invalid
// values as 0, in the order of sources.
func (p *Price) effective() [5]float64 {
	e := p.sources()
	for i, v := range e {
		if !(v > 0) {
			e[i] = 0
		}
	}
	if e[2] == 0 {
		e[2] = e[0]
	}
	if e[3] == 0 {
		e[3] = e[0]
	}
	if e[4] == 0 {
		e[4] = e[1]
	}
	return e
}

// Cost is what a request with usage tk costs at price p, in nano-dollars,
// rounded up to the next nano-dollar.
//
// The usage follows the OpenAI convention: Prompt counts every prompt token,
// including those read from and written to the cache, and Completion counts
// every output token, including the Reasoning tokens. So:
//
//	uncached = Prompt - CachedRead - CacheWrite   (at least 0)
//	visible  = Completion - Reasoning             (at least 0)
//	cost     = uncached*Input + CachedRead*CachedInput + CacheWrite*CacheWrite
//	         + visible*Output + Reasoning*Reasoning
//
// with the Price defaults above. Anthropic usage (input_tokens excludes
// cache_read_input_tokens and cache_creation_input_tokens) must be summed
// into Prompt first. Inconsistent usage is billed in full rather than
// discounted: cache tokens beyond Prompt and reasoning tokens beyond
// Completion are still charged. Negative counts count as 0. The result
// saturates at math.MaxInt64.
func Cost(p Price, tk llm.Tokens) store.Nano {
	r := p.rates()
	prompt, cached, written := nonNeg(tk.Prompt), nonNeg(tk.CachedRead), nonNeg(tk.CacheWrite)
	uncached := prompt
	uncached -= min(uncached, cached)
	uncached -= min(uncached, written)
	completion, reasoning := nonNeg(tk.Completion), nonNeg(tk.Reasoning)
	visible := completion - min(completion, reasoning)

	var a acc
	a.add(uncached, r.in)
	a.add(cached, r.cachedIn)
	a.add(written, r.cacheWrite)
	a.add(visible, r.out)
	a.add(reasoning, r.reasoning)
	return a.nanoCeil()
}

// Estimate is the most a request can cost: promptTokens at the dearest price
// a prompt token can have (the largest of Input, CachedInput and CacheWrite)
// plus maxOutput tokens at the dearer of Output and Reasoning, rounded up to
// the next nano-dollar. It is at least Cost for any consistent usage with
// Prompt <= promptTokens and Completion <= maxOutput. A maxOutput <= 0 means
// the request set no limit: p.MaxOutputTokens is used (0 if unknown).
func Estimate(p Price, promptTokens, maxOutput int) store.Nano {
	r := p.rates()
	if maxOutput <= 0 {
		maxOutput = p.MaxOutputTokens
	}
	var a acc
	a.add(nonNeg(promptTokens), max(r.in, r.cachedIn, r.cacheWrite))
	a.add(nonNeg(maxOutput), max(r.out, r.reasoning))
	return a.nanoCeil()
}

func nonNeg(n int) int { return max(n, 0) }

// acc is an unsigned 128-bit sum of pico-dollars. Token counts are below 2^63
// and prices at most 2^50, so five products stay below 2^116.
type acc struct{ hi, lo uint64 }

func (a *acc) add(n int, pico int64) {
	if n <= 0 || pico <= 0 {
		return
	}
	hi, lo := bits.Mul64(uint64(n), uint64(pico))
	var carry uint64
	a.lo, carry = bits.Add64(a.lo, lo, 0)
	a.hi += hi + carry
}

// nanoCeil is the sum in nano-dollars, rounded up, saturating at MaxInt64.
func (a acc) nanoCeil() store.Nano {
	if a.hi >= picoPerNano { // the quotient would not fit in 64 bits
		return math.MaxInt64
	}
	q, rem := bits.Div64(a.hi, a.lo, picoPerNano)
	if rem != 0 {
		if q == math.MaxUint64 {
			return math.MaxInt64
		}
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return store.Nano(q)
}
