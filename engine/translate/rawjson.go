package translate

import (
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
)

// A few raw JSON scanners for the stream hot path. gjson unescapes every
// string it returns, which allocates when the text holds an escape (most
// deltas do: newlines, quotes in tool arguments). The translators only copy
// string literals from one JSON document to another, so they take the raw
// literal instead and never unescape a well-formed one.

// rawStr returns the raw JSON string literal (quotes included) of obj's
// top-level field key, or "" when the field is absent or not a string.
func rawStr(obj gjson.Result, key string) string {
	if obj.Type != gjson.JSON {
		return ""
	}
	v, ok := objectField(obj.Raw, key)
	if !ok || len(v) < 2 || v[0] != '"' {
		return ""
	}
	return v
}

// emptyRaw reports whether a rawStr result holds no text.
func emptyRaw(raw string) bool { return len(raw) <= 2 }

// appendRawString appends a raw string literal from rawStr: as is when
// well formed, re-encoded otherwise, "" when absent.
func appendRawString(b []byte, raw string) []byte {
	if raw == "" {
		return append(b, `""`...)
	}
	if validStringLiteral(raw) {
		return append(b, raw...)
	}
	return errs.AppendJSONString(b, gjson.Parse(raw).Str)
}

// objectField returns the raw value of key among the top-level fields of
// the JSON object obj. Keys are compared as written (escaped keys never
// match). Malformed input yields ok=false.
func objectField(obj, key string) (string, bool) {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return "", false
	}
	i = skipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return "", false
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return "", false
		}
		end := stringEnd(obj, i)
		if end < 0 {
			return "", false
		}
		k := obj[i+1 : end-1]
		i = skipWS(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return "", false
		}
		i = skipWS(obj, i+1)
		vend := valueEnd(obj, i)
		if vend < 0 {
			return "", false
		}
		if k == key {
			return obj[i:vend], true
		}
		i = skipWS(obj, vend)
		if i >= len(obj) || obj[i] != ',' {
			return "", false
		}
		i = skipWS(obj, i+1)
	}
}

func skipWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string literal starting at
// s[i] == '"', or -1 if it is unterminated.
func stringEnd(s string, i int) int {
	for i++; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the JSON value starting at s[i], or
// -1 if it is cut short.
func valueEnd(s string, i int) int {
	if i >= len(s) {
		return -1
	}
	switch s[i] {
	case '"':
		return stringEnd(s, i)
	case '{', '[':
		depth := 0
		for ; i < len(s); i++ {
			switch s[i] {
			case '"':
				e := stringEnd(s, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	start := i
	for i < len(s) {
		switch s[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return -1
			}
			return i
		}
		i++
	}
	return -1
}
