package config

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Problem is one finding about a config: where, and what.
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) String() string { return p.Path + ": " + p.Msg }

// reader walks the generic YAML tree with typed getters, recording errors
// and unknown keys with the path they occurred at.
type reader struct {
	errs   []Problem
	warns  []Problem
	getenv func(string) string
}

func (r *reader) errf(path, format string, a ...any) {
	r.errs = append(r.errs, Problem{path, fmt.Sprintf(format, a...)})
}

func (r *reader) warnf(path, format string, a ...any) {
	r.warns = append(r.warns, Problem{path, fmt.Sprintf(format, a...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// obj is one mapping node with the set of keys read from it.
type obj struct {
	r    *reader
	path string
	m    map[string]any
	used map[string]bool
}

func (r *reader) obj(path string, v any) *obj {
	o := &obj{r: r, path: path, used: map[string]bool{}}
	switch m := v.(type) {
	case nil:
	case map[string]any:
		o.m = m
	default:
		r.errf(path, "want a mapping, got %s", kind(v))
	}
	return o
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func (o *obj) has(k string) bool { _, ok := o.m[k]; return ok }

func (o *obj) raw(k string) any {
	o.used[k] = true
	return o.m[k]
}

// env resolves LiteLLM's "os.environ/NAME" references.
func (o *obj) env(path, s string) string {
	if name, ok := strings.CutPrefix(s, "os.environ/"); ok {
		v := o.r.getenv(name)
		if v == "" {
			o.r.warnf(path, "environment variable %s is not set", name)
		}
		return v
	}
	return s
}

func (o *obj) str(k string) string {
	v := o.raw(k)
	p := join(o.path, k)
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return o.env(p, t)
	case int, int64, uint64, float64, bool:
		return fmt.Sprint(t)
	}
	o.r.errf(p, "want a string, got %s", kind(v))
	return ""
}

func (o *obj) num(k string) (float64, bool) {
	v := o.raw(k)
	p := join(o.path, k)
	switch t := v.(type) {
	case nil:
		return 0, false
	case int:
		return float64(t), true
	case int64:
		return float64(t), true
	case uint64:
		return float64(t), true
	case float64:
		return t, true
	case string:
		s := o.env(p, t)
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			o.r.errf(p, "want a number, got %q", s)
			return 0, false
		}
		return f, true
	}
	o.r.errf(p, "want a number, got %s", kind(v))
	return 0, false
}

func (o *obj) integer(k string) int {
	f, ok := o.num(k)
	if !ok {
		return 0
	}
	if f != float64(int64(f)) || f < 0 {
		o.r.errf(join(o.path, k), "want a whole number >= 0, got %v", f)
		return 0
	}
	return int(f)
}

func (o *obj) boolean(k string) bool {
	v := o.raw(k)
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case string:
		s := strings.ToLower(o.env(join(o.path, k), t))
		switch s {
		case "true", "yes", "1", "on":
			return true
		case "false", "no", "0", "off", "":
			return false
		}
	}
	o.r.errf(join(o.path, k), "want true or false, got %v", v)
	return false
}

// duration accepts seconds as a number (LiteLLM's form) or a Go duration
// string ("30s", "2m").
func (o *obj) duration(k string) time.Duration {
	v := o.raw(k)
	p := join(o.path, k)
	if s, ok := v.(string); ok {
		s = o.env(p, s)
		if d, err := time.ParseDuration(s); err == nil {
			if d < 0 {
				o.r.errf(p, "must not be negative")
			}
			return d
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
			return time.Duration(f * float64(time.Second))
		}
		o.r.errf(p, "want seconds or a duration like \"30s\", got %q", s)
		return 0
	}
	f, ok := o.num(k)
	if !ok {
		return 0
	}
	if f < 0 {
		o.r.errf(p, "must not be negative")
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

func (o *obj) strs(k string) []string {
	v := o.raw(k)
	p := join(o.path, k)
	switch t := v.(type) {
	case nil:
		return nil
	case string:
		return []string{o.env(p, t)}
	case []any:
		out := make([]string, 0, len(t))
		for i, e := range t {
			s, ok := e.(string)
			if !ok {
				o.r.errf(fmt.Sprintf("%s[%d]", p, i), "want a string, got %s", kind(e))
				continue
			}
			out = append(out, o.env(p, s))
		}
		return out
	}
	o.r.errf(p, "want a list of strings, got %s", kind(v))
	return nil
}

func (o *obj) list(k string) []any {
	v := o.raw(k)
	switch t := v.(type) {
	case nil:
		return nil
	case []any:
		return t
	}
	o.r.errf(join(o.path, k), "want a list, got %s", kind(v))
	return nil
}

func (o *obj) child(k string) *obj { return o.r.obj(join(o.path, k), o.raw(k)) }

// strMap reads a mapping of strings (headers, environment variables).
func (o *obj) strMap(k string) map[string]string {
	c := o.child(k)
	if c.m == nil {
		return nil
	}
	out := make(map[string]string, len(c.m))
	for key := range c.m {
		out[key] = c.str(key)
	}
	return out
}

// rest returns the keys not read, sorted.
func (o *obj) rest() []string {
	var out []string
	for k := range o.m {
		if !o.used[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// unknown warns about keys not read, except those in accepted (keys
// LiteLLM knows that Portcullis reads but does not act on yet).
func (o *obj) unknown(accepted map[string]string) {
	for _, k := range o.rest() {
		if why, ok := accepted[k]; ok {
			if why == "" {
				why = "a LiteLLM setting Portcullis does not act on yet"
			}
			o.r.warnf(join(o.path, k), "accepted but not used: %s", why)
			continue
		}
		o.r.warnf(join(o.path, k), "unknown key, ignored")
	}
}

func osGetenv(k string) string { return os.Getenv(k) }
