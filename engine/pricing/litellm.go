package pricing

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The LiteLLM config keys (litellm_params or model_info) that set a
// deployment's price, in USD per token, and its token limits.
const (
	KeyInputCost      = "input_cost_per_token"
	KeyOutputCost     = "output_cost_per_token"
	KeyCacheReadCost  = "cache_read_input_token_cost"
	KeyCacheWriteCost = "cache_creation_input_token_cost"
	KeyReasoningCost  = "output_cost_per_reasoning_token"
	KeyMaxInput       = "max_input_tokens"
	KeyMaxOutput      = "max_output_tokens"
)

// FromLiteLLM reads a deployment's price override from LiteLLM-named keys
// (the Key constants). Values may be numbers (float64, float32, int, int64,
// json.Number) or numeric strings. ok is false when none of the five price
// keys is present, i.e. the deployment has no override. A negative, NaN or
// non-numeric value is an error naming the key.
func FromLiteLLM(params map[string]any) (p Price, ok bool, err error) {
	prices := [...]struct {
		key string
		dst *float64
	}{
		{KeyInputCost, &p.Input},
		{KeyOutputCost, &p.Output},
		{KeyCacheReadCost, &p.CachedInput},
		{KeyCacheWriteCost, &p.CacheWrite},
		{KeyReasoningCost, &p.Reasoning},
	}
	for _, f := range prices {
		v, present := params[f.key]
		if !present {
			continue
		}
		n, err := number(v)
		if err != nil {
			return Price{}, false, fmt.Errorf("%s: %w", f.key, err)
		}
		*f.dst = n
		ok = true
	}
	limits := [...]struct {
		key string
		dst *int
	}{
		{KeyMaxInput, &p.MaxInputTokens},
		{KeyMaxOutput, &p.MaxOutputTokens},
	}
	for _, f := range limits {
		v, present := params[f.key]
		if !present {
			continue
		}
		n, err := number(v)
		if err != nil || n != float64(int(n)) {
			return Price{}, false, fmt.Errorf("%s: %v: want a whole number >= 0", f.key, v)
		}
		*f.dst = int(n)
	}
	if err := p.Validate(); err != nil {
		return Price{}, false, err
	}
	return p, ok, nil
}

func number(v any) (float64, error) {
	var n float64
	switch x := v.(type) {
	case float64:
		n = x
	case float32:
		n = float64(x)
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return 0, fmt.Errorf("%q: not a number", x)
		}
		n = f
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("%q: not a number", x)
		}
		n = f
	default:
		return 0, fmt.Errorf("%v: not a number", v)
	}
	if math.IsNaN(n) || math.IsInf(n, 0) || n < 0 {
		return 0, fmt.Errorf("%v: want a finite number >= 0", v)
	}
	return n, nil
}
