package cache

import (
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
)

// controls are one request's cache controls: LiteLLM's body object
// "cache": {"no-cache", "no-store", "ttl", "s-maxage", "use-cache",
// "namespace"} and the Cache-Control request header (no-cache, no-store,
// max-age / s-maxage). Either source can set a control; none unsets one.
type controls struct {
	// noCache: do not answer from the cache (the answer may be stored).
	noCache bool
	// noStore: do not store the answer.
	noStore bool
	// useCache opts the request in: required under default_off, and it
	// also caches a non-deterministic request.
	useCache bool
	// ttl overrides the configured TTL for the stored answer (0: none).
	ttl time.Duration
	// maxAge: only accept an entry at most this old (hasMaxAge).
	maxAge    time.Duration
	hasMaxAge bool
	// namespace overrides the configured key prefix.
	namespace string
}

// fromBody reads the "cache" object.
func (c *controls) fromBody(v gjson.Result) {
	if !v.IsObject() {
		return
	}
	v.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "no-cache":
			c.noCache = c.noCache || v.Type == gjson.True
		case "no-store":
			c.noStore = c.noStore || v.Type == gjson.True
		case "use-cache":
			c.useCache = c.useCache || v.Type == gjson.True
		case "ttl":
			if d, ok := seconds(v); ok && d > 0 {
				c.ttl = d
			}
		case "s-maxage", "s-max-age":
			if d, ok := seconds(v); ok {
				c.setMaxAge(d)
			}
		case "namespace":
			if v.Type == gjson.String && v.Str != "" {
				c.namespace = strings.Clone(v.Str)
			}
		}
		return true
	})
}

// fromHeader reads a Cache-Control request header: no-cache, no-store,
// max-age=N and s-maxage=N (both as the maximum age accepted).
func (c *controls) fromHeader(h string) {
	for len(h) > 0 {
		var d string
		d, h, _ = strings.Cut(h, ",")
		d = strings.TrimSpace(d)
		name, val, _ := strings.Cut(d, "=")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "no-cache":
			c.noCache = true
		case "no-store":
			c.noStore = true
		case "max-age", "s-maxage":
			if n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64); err == nil && n >= 0 {
				c.setMaxAge(time.Duration(n) * time.Second)
			}
		}
	}
}

// setMaxAge keeps the strictest maximum age.
func (c *controls) setMaxAge(d time.Duration) {
	if d < 0 {
		return
	}
	if !c.hasMaxAge || d < c.maxAge {
		c.maxAge, c.hasMaxAge = d, true
	}
}

// seconds reads a number of seconds (a JSON number or a numeric string).
func seconds(v gjson.Result) (time.Duration, bool) {
	var f float64
	switch v.Type {
	case gjson.Number:
		f = v.Num
	case gjson.String:
		p, err := strconv.ParseFloat(v.Str, 64)
		if err != nil {
			return 0, false
		}
		f = p
	default:
		return 0, false
	}
	if f < 0 || f > 1e9 {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}
