package wasm

import (
	"bytes"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/llm"
)

// promptChars counts the characters (code points) of message text in a
// request body: message contents (strings and text parts) and the system
// prompt, the completions prompt, the embeddings input.
//
// It runs for every request that reaches a plugin, so it walks the body
// with a small scanner (strings are skipped with bytes.IndexByte) rather
// than a general parser. The body is valid JSON (the server checked it).
func promptChars(d llm.Dialect, body []byte) int {
	s := scanner{b: body}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return 0
	}
	chat := d != llm.OpenAICompletion && d != llm.OpenAIEmbedding
	n := 0
	s.object(func(key []byte) {
		switch {
		case chat && string(key) == "messages" && s.peek() == '[':
			s.array(func() {
				if s.peek() != '{' {
					s.skip()
					return
				}
				s.object(func(k []byte) {
					if string(k) == "content" {
						n += s.text()
					} else {
						s.skip()
					}
				})
			})
		case chat && string(key) == "system",
			d == llm.OpenAICompletion && string(key) == "prompt",
			d == llm.OpenAIEmbedding && string(key) == "input":
			n += s.text()
		default:
			s.skip()
		}
	})
	return n
}

// scanner walks well-formed JSON.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// peek returns the next value's first byte (0 at the end).
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str consumes a string at s.i and returns its raw content and whether
// it has escapes.
func (s *scanner) str() (raw []byte, esc bool) {
	start := s.i + 1
	j := start
	for {
		k := bytes.IndexByte(s.b[j:], '"')
		if k < 0 {
			s.i = len(s.b)
			return s.b[start:], esc
		}
		k += j
		bs := 0
		for p := k - 1; p >= start && s.b[p] == '\\'; p-- {
			bs++
		}
		if bs > 0 {
			esc = true
		}
		if bs%2 == 0 {
			s.i = k + 1
			if !esc {
				esc = bytes.IndexByte(s.b[start:k], '\\') >= 0
			}
			return s.b[start:k], esc
		}
		j = k + 1
	}
}

// skip consumes any value.
func (s *scanner) skip() {
	switch s.peek() {
	case '"':
		s.str()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				s.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return
				}
			}
			s.i++
		}
	default:
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}

// object consumes an object, calling member with each key; member must
// consume the value.
func (s *scanner) object(member func(key []byte)) {
	s.i++ // {
	for {
		switch s.peek() {
		case '"':
			key, _ := s.str()
			if s.peek() != ':' {
				return
			}
			s.i++
			start := s.i
			member(key)
			if s.i == start {
				s.skip()
			}
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			return
		}
	}
}

// array consumes an array, calling elem for each element; elem must
// consume it.
func (s *scanner) array(elem func()) {
	s.i++ // [
	for {
		switch s.peek() {
		case ']':
			s.i++
			return
		case ',':
			s.i++
		case 0:
			return
		default:
			start := s.i
			elem()
			if s.i == start {
				s.skip()
			}
		}
	}
}

// text consumes a value and counts the characters of its text: a string,
// or an array of strings and parts with a "text" string.
func (s *scanner) text() int {
	switch s.peek() {
	case '"':
		return s.chars()
	case '[':
		n := 0
		s.array(func() {
			switch s.peek() {
			case '"':
				n += s.chars()
			case '{':
				s.object(func(k []byte) {
					if string(k) == "text" && s.peek() == '"' {
						n += s.chars()
					} else {
						s.skip()
					}
				})
			default:
				s.skip()
			}
		})
		return n
	}
	s.skip()
	return 0
}

// chars consumes a string and counts its code points.
func (s *scanner) chars() int {
	start := s.i
	raw, esc := s.str()
	if !esc {
		return utf8.RuneCount(raw)
	}
	q := s.b[start:s.i]
	return utf8.RuneCountInString(gjson.Parse(unsafe.String(unsafe.SliceData(q), len(q))).Str)
}
