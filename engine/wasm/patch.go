package wasm

import (
	"encoding/json"
	"strings"

	"github.com/tidwall/gjson"
)

// fastPatch applies the common patches (replace, or add over an existing
// member, at a plain path) by splicing bytes at the offsets gjson finds:
// a redaction plugin patches every stream event, and a general JSON Patch
// library costs tens of microseconds per event. It reports false when a
// patch needs the general implementation (other operations, paths with
// characters gjson treats specially, a missing target); nothing is
// changed then.
func fastPatch(doc []byte, ops []patchOp) ([]byte, bool) {
	out := doc
	for i := range ops {
		op := &ops[i]
		if op.Op != "replace" && op.Op != "add" {
			return nil, false
		}
		path, ok := gjsonPath(op.Path)
		if !ok {
			return nil, false
		}
		res := gjson.GetBytes(out, path)
		if !res.Exists() || res.Index <= 0 || res.Index+len(res.Raw) > len(out) {
			return nil, false
		}
		if op.Op == "add" && lastIsIndex(op.Path) {
			// add into an array inserts: not a replacement
			return nil, false
		}
		val := compactValue(op.Value)
		nb := make([]byte, 0, len(out)-len(res.Raw)+len(val))
		nb = append(nb, out[:res.Index]...)
		nb = append(nb, val...)
		nb = append(nb, out[res.Index+len(res.Raw):]...)
		out = nb
	}
	return out, true
}

// gjsonPath converts a JSON pointer whose tokens are plain names or
// indexes ([A-Za-z0-9_-], no leading zero) into a gjson path.
func gjsonPath(ptr string) (string, bool) {
	if len(ptr) < 2 || ptr[0] != '/' {
		return "", false
	}
	p := ptr[1:]
	for _, tok := range strings.Split(p, "/") {
		if tok == "" || (len(tok) > 1 && tok[0] == '0' && allDigits(tok)) {
			return "", false
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				return "", false
			}
		}
		if tok == "-" {
			return "", false
		}
	}
	return strings.ReplaceAll(p, "/", "."), true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func lastIsIndex(ptr string) bool { return allDigits(ptr[strings.LastIndexByte(ptr, '/')+1:]) }

// compactValue removes insignificant whitespace from a JSON value (the
// result may be pretty-printed; SSE data is better on one line).
func compactValue(v json.RawMessage) []byte {
	if !hasSpace(v) {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	in := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if in {
			b.WriteByte(c)
			if c == '\\' && i+1 < len(v) {
				i++
				b.WriteByte(v[i])
			} else if c == '"' {
				in = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			in = true
		}
		b.WriteByte(c)
	}
	return []byte(b.String())
}

func hasSpace(v []byte) bool {
	in := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if in {
			if c == '\\' {
				i++
			} else if c == '"' {
				in = false
			}
			continue
		}
		switch c {
		case '"':
			in = true
		case ' ', '\t', '\n', '\r':
			return true
		}
	}
	return false
}
