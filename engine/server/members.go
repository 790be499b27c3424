package server

import (
	"bytes"
	"unsafe"

	"github.com/tidwall/gjson"
)

// members walks the members of a request body's top-level object and
// validates the whole document as it goes, by gjson.ValidBytes's rules
// (FuzzMembers holds it to them): one pass over the body where a
// validation and then a walk would take two, and no gjson Result is built
// for a member the gateway does not read. On a stream's first byte every
// pass over the body counts (bench/README.md).
type members struct {
	b   []byte
	i   int
	n   int  // members read
	bad bool // the body is not valid JSON
	end bool
}

// newMembers starts the walk; false: the body is not an object (or not
// JSON).
func newMembers(body []byte) (members, bool) {
	i := skipSpace(body, 0)
	return members{b: body, i: i + 1}, i < len(body) && body[i] == '{'
}

// next returns the next member's key (unescaped) and raw value; false at
// the end of the object, or when the body turned out not to be valid JSON
// (bad).
func (m *members) next() (key, val []byte, ok bool) {
	if m.end || m.bad {
		return nil, nil, false
	}
	b := m.b
	i := skipSpace(b, m.i)
	if i < len(b) && b[i] == '}' {
		m.end = true
		m.bad = skipSpace(b, i+1) != len(b) // only whitespace may follow
		return nil, nil, false
	}
	if m.n > 0 {
		if i >= len(b) || b[i] != ',' {
			m.bad = true
			return nil, nil, false
		}
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		m.bad = true
		return nil, nil, false
	}
	kend, ok := validString(b, i+1)
	j := skipSpace(b, kend)
	if !ok || j >= len(b) || b[j] != ':' {
		m.bad = true
		return nil, nil, false
	}
	key = b[i+1 : kend-1]
	vi := skipSpace(b, j+1)
	end, ok := validValue(b, vi)
	if !ok {
		m.bad = true
		return nil, nil, false
	}
	m.i, m.n = end, m.n+1
	if bytes.IndexByte(key, '\\') >= 0 {
		// Rare: an escaped key ("mod\u0065l" is "model").
		key = []byte(result(b[i:kend]).Str)
	}
	return key, b[vi:end], true
}

// result is the gjson Result of a raw JSON value, over its memory.
func result(raw []byte) gjson.Result {
	return gjson.Parse(unsafe.String(unsafe.SliceData(raw), len(raw)))
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// validKey validates `"key" :` at i and returns where the value after it
// starts (whitespace skipped).
func validKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := validString(b, i+1)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return skipSpace(b, i+1), true
}

// validString validates the string whose content starts at i and returns
// the index after its closing quote: no control character, only JSON's
// escapes.
func validString(b []byte, i int) (int, bool) {
	for ; i < len(b); i++ {
		c := b[i]
		if c >= ' ' && c != '"' && c != '\\' {
			continue
		}
		switch {
		case c == '"':
			return i + 1, true
		case c < ' ':
			return i, false
		case c == '\\':
			i++
			if i >= len(b) {
				return i, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return i, false
				}
				i += 4
			default:
				return i, false
			}
		}
	}
	return i, false
}

func isHex(c byte) bool { return c-'0' < 10 || (c|0x20)-'a' < 6 }

func isDigit(c byte) bool { return c-'0' < 10 }

// validNumber validates the number starting at i and returns the index
// after it.
func validNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) || !isDigit(b[i]) {
		return i, false
	}
	if b[i] == '0' {
		i++
	} else {
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, true
}

// validValue validates the value starting at i and returns the index after
// it. Iterative: a deeply nested body costs its own length in stack
// bytes, not a goroutine stack frame per level.
func validValue(b []byte, i int) (int, bool) {
	var stk [32]byte
	stack := stk[:0] // the closing bracket of each open container
	for {
		if i >= len(b) {
			return i, false
		}
		var ok bool
		switch b[i] {
		case '{', '[':
			end := b[i] + 2 // '}' or ']'
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == end {
				i++
				break
			}
			stack = append(stack, end)
			if end == '}' {
				if i, ok = validKey(b, i); !ok {
					return i, false
				}
			}
			continue
		case '"':
			if i, ok = validString(b, i+1); !ok {
				return i, false
			}
		case 't':
			if !bytes.HasPrefix(b[i:], []byte("true")) {
				return i, false
			}
			i += 4
		case 'f':
			if !bytes.HasPrefix(b[i:], []byte("false")) {
				return i, false
			}
			i += 5
		case 'n':
			if !bytes.HasPrefix(b[i:], []byte("null")) {
				return i, false
			}
			i += 4
		default:
			if i, ok = validNumber(b, i); !ok {
				return i, false
			}
		}
		// A value ended at i: close the containers it ends, then go on
		// to the next value.
		for {
			if len(stack) == 0 {
				return i, true
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return i, false
			}
			top := stack[len(stack)-1]
			if b[i] == top {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			if b[i] != ',' {
				return i, false
			}
			i = skipSpace(b, i+1)
			if top == '}' {
				if i, ok = validKey(b, i); !ok {
					return i, false
				}
			}
			break
		}
	}
}
