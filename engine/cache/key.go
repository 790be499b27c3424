package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// keyVersion is hashed first: changing the canonical form or the key's
// material changes it, so old entries in a shared store are never misread.
const keyVersion = "pc-cache-1"

// ignoredField reports whether a top-level request field does not change
// the answer and so stays out of the key: transport (stream,
// stream_options), attribution (user, metadata), gateway routing (tags,
// fallbacks, retries, timeouts), LiteLLM's cache controls and mock_*
// testing fields. "model" is replaced by the model group.
func ignoredField(k string) bool {
	switch k {
	case "model", "stream", "stream_options", "user", "metadata", "litellm_metadata", "cache", "caching",
		"tags", "fallbacks", "num_retries", "context_window_fallbacks", "timeout", "request_timeout",
		"litellm_session_id", "litellm_trace_id", "litellm_call_id":
		return true
	}
	return strings.HasPrefix(k, "mock_")
}

// request is what the middleware reads from one request body.
type request struct {
	ctl controls
	// hasCtl: the request carried LiteLLM's "cache" object
	// (x.CacheParams; the server strips it from the body).
	hasCtl bool
	// deterministic: temperature 0, a seed, or an embedding.
	deterministic bool
}

// The canonical form is not JSON: it is only hashed, so it is a compact,
// unambiguous encoding of the JSON value. Each value starts with a tag:
//
//	s <uvarint n> <n bytes>   a string, unescaped (so "\u0041" and "A" agree)
//	H <32 bytes>              a string longer than longString: its SHA-256
//	                          (keeps the buffer small for base64 images)
//	n <uvarint n> <n bytes>   a number: integers as written, others in Go's
//	                          shortest form (1.0 and 1 agree)
//	t f z                     true, false, null
//	a <values> e              an array
//	o (<key string> <value>)* e   an object, members sorted by key
//
// Whitespace never reaches it, so formatting does not change a key.
const longString = 512

// topMember is a top-level member, kept between the two passes.
type topMember struct {
	k string // unescaped key
	v string // the value's JSON text
}

// span is an object member inside the canonical buffer: the key's
// encoding is buf[ks:ke], the value's buf[ke:ve].
type span struct{ ks, ke, ve int }

// keyer computes keys. Pooled: its buffers grow to the largest request
// seen, up to a bound past which it is not pooled again.
type keyer struct {
	buf   []byte // canonical form
	tmp   []byte // reordering scratch
	str   []byte // unescaping scratch
	spans []span
	top   []topMember
}

var keyers = sync.Pool{New: func() any {
	return &keyer{buf: make([]byte, 0, 4096), tmp: make([]byte, 0, 1024), str: make([]byte, 0, 1024),
		spans: make([]span, 0, 32), top: make([]topMember, 0, 16)}
}}

func acquireKeyer() *keyer {
	k := keyers.Get().(*keyer)
	k.buf, k.tmp, k.str, k.spans, k.top = k.buf[:0], k.tmp[:0], k.str[:0], k.spans[:0], k.top[:0]
	return k
}

func (k *keyer) release() {
	if cap(k.buf) > 1<<20 || cap(k.tmp) > 1<<20 || cap(k.str) > 1<<20 {
		return // an outsized request: let the GC have it
	}
	clear(k.top[:cap(k.top)]) // drop references to the body
	keyers.Put(k)
}

// bstr views b as a string without copying; the string must not outlive b
// (or b must never change, as cached entries never do).
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// read makes the first, cheap pass over the request's top level: the
// cache controls (body and Cache-Control header), whether the request is
// deterministic, and the members that make the key (kept for key, so a
// request that turns out not cacheable pays for no more). It reports false
// for a body that is not a well-formed JSON object.
func (k *keyer) read(x *pipeline.Exchange, r *request) bool {
	s := bstr(x.Body)
	i := skipWS(s, 0)
	if i >= len(s) || s[i] != '{' {
		return false
	}
	zeroTemp, seed := false, false
	i = skipWS(s, i+1)
	if i < len(s) && s[i] == '}' {
		i++
	} else {
		for {
			if i >= len(s) || s[i] != '"' {
				return false
			}
			end, esc, ok := stringEnd(s, i)
			if !ok {
				return false
			}
			key := s[i+1 : end-1]
			if esc {
				var u []byte
				if u, ok = unescape(nil, key); !ok {
					return false
				}
				key = string(u)
			}
			i = skipWS(s, end)
			if i >= len(s) || s[i] != ':' {
				return false
			}
			vs := skipWS(s, i+1)
			ve, ok := skipValue(s, vs)
			if !ok {
				return false
			}
			v := s[vs:ve]
			switch key {
			case "temperature":
				f, err := strconv.ParseFloat(v, 64)
				zeroTemp = err == nil && f == 0
			case "seed":
				seed = v != "null"
			}
			if !ignoredField(key) {
				k.top = append(k.top, topMember{k: key, v: v})
			}
			i = skipWS(s, ve)
			if i < len(s) && s[i] == ',' {
				i = skipWS(s, i+1)
				continue
			}
			if i < len(s) && s[i] == '}' {
				i++
				break
			}
			return false
		}
	}
	if skipWS(s, i) != len(s) {
		return false
	}
	r.deterministic = zeroTemp || seed
	if len(x.CacheParams) > 0 {
		// The server took the "cache" object out of the body.
		r.hasCtl = true
		r.ctl.fromBody(gjson.ParseBytes(x.CacheParams))
	}
	if x.Dialect == llm.OpenAIEmbedding {
		// Embeddings have no sampling: the same input is the same vector.
		r.deterministic = true
	}
	if x.Header != nil {
		if h := x.Header.Peek("Cache-Control"); len(h) > 0 {
			r.ctl.fromHeader(bstr(h))
		}
	}
	return true
}

// key hashes what read kept, with the dialect, the caller's scope and the
// model group, and returns the cache key: the hex SHA-256, prefixed with
// "namespace:" when a namespace is set (LiteLLM's form). ok is false when
// a member's value is malformed.
func (k *keyer) key(cfg *settings, x *pipeline.Exchange, r *request) (string, bool) {
	k.buf = append(k.buf, keyVersion...)
	k.buf = append(k.buf, 0, byte(x.Dialect), 0)
	k.buf = appendScope(k.buf, cfg.scope, x)
	k.buf = append(k.buf, 0)
	k.buf = append(k.buf, x.RouteGroup()...)
	k.buf = append(k.buf, 0, 'o')
	slices.SortStableFunc(k.top, func(a, b topMember) int { return strings.Compare(a.k, b.k) })
	for j, m := range k.top {
		if j+1 < len(k.top) && k.top[j+1].k == m.k {
			continue // a duplicate: the last one counts
		}
		k.buf = appendStr(k.buf, m.k)
		if end, ok := k.value(m.v, 0, 1); !ok || skipWS(m.v, end) != len(m.v) {
			return "", false
		}
	}
	k.buf = append(k.buf, 'e')
	sum := sha256.Sum256(k.buf)

	ns := cfg.namespace
	if r.ctl.namespace != "" {
		ns = r.ctl.namespace
	}
	n := len(ns)
	if n > 0 {
		n++
	}
	out := make([]byte, n+2*sha256.Size)
	if n > 0 {
		copy(out, ns)
		out[n-1] = ':'
	}
	hex.Encode(out[n:], sum[:])
	return unsafe.String(unsafe.SliceData(out), len(out)), true
}

// appendScope appends the part of the key that isolates callers: the
// team (the key when the caller has no team), the key, or nothing.
func appendScope(b []byte, s scope, x *pipeline.Exchange) []byte {
	switch {
	case s == scopeGlobal:
		return append(b, 'g')
	case s == scopeTeam && x.TeamID != "":
		return append(append(b, "t:"...), x.TeamID...)
	}
	return append(append(b, "k:"...), x.KeyHash...)
}

// appendStr appends the canonical encoding of an unescaped string.
func appendStr(b []byte, s string) []byte {
	if len(s) > longString {
		sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s)))
		return append(append(b, 'H'), sum[:]...)
	}
	b = append(b, 's')
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// maxDepth bounds nesting: a deeper request is not cached (and the
// recursion stays shallow).
const maxDepth = 128

// value appends the canonical form of the JSON value at s[i:] (after
// whitespace) and returns the index after it.
func (k *keyer) value(s string, i, depth int) (int, bool) {
	i = skipWS(s, i)
	if i >= len(s) || depth > maxDepth {
		return i, false
	}
	switch c := s[i]; {
	case c == '{':
		return k.object(s, i, depth+1)
	case c == '[':
		k.buf = append(k.buf, 'a')
		i = skipWS(s, i+1)
		if i < len(s) && s[i] == ']' {
			k.buf = append(k.buf, 'e')
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = k.value(s, i, depth+1); !ok {
				return i, false
			}
			i = skipWS(s, i)
			if i >= len(s) {
				return i, false
			}
			if s[i] == ',' {
				i++
				continue
			}
			if s[i] == ']' {
				k.buf = append(k.buf, 'e')
				return i + 1, true
			}
			return i, false
		}
	case c == '"':
		return k.string(s, i)
	case c == 't' && strings.HasPrefix(s[i:], "true"):
		k.buf = append(k.buf, 't')
		return i + 4, true
	case c == 'f' && strings.HasPrefix(s[i:], "false"):
		k.buf = append(k.buf, 'f')
		return i + 5, true
	case c == 'n' && strings.HasPrefix(s[i:], "null"):
		k.buf = append(k.buf, 'z')
		return i + 4, true
	case c == '-' || c >= '0' && c <= '9':
		j := numberEnd(s, i)
		raw := s[i:j]
		k.buf = append(k.buf, 'n')
		if strings.IndexAny(raw, ".eE") < 0 {
			k.buf = binary.AppendUvarint(k.buf, uint64(len(raw)))
			k.buf = append(k.buf, raw...)
			return j, true
		}
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return j, false
		}
		var tmp [32]byte
		num := strconv.AppendFloat(tmp[:0], f, 'g', -1, 64)
		k.buf = binary.AppendUvarint(k.buf, uint64(len(num)))
		k.buf = append(k.buf, num...)
		return j, true
	}
	return i, false
}

// string appends the string literal at s[i] (a quote).
func (k *keyer) string(s string, i int) (int, bool) {
	end, esc, ok := stringEnd(s, i)
	if !ok {
		return end, false
	}
	lit := s[i+1 : end-1]
	if !esc {
		k.buf = appendStr(k.buf, lit)
		return end, true
	}
	if k.str, ok = unescape(k.str[:0], lit); !ok {
		return end, false
	}
	k.buf = appendStr(k.buf, bstr(k.str))
	return end, true
}

// object appends the object at s[i] ('{') with its members sorted by key
// (their encodings compare in a fixed order: what matters is that it
// never depends on the order the client wrote them in).
func (k *keyer) object(s string, i, depth int) (int, bool) {
	k.buf = append(k.buf, 'o')
	start, base := len(k.buf), len(k.spans)
	defer func() { k.spans = k.spans[:base] }()
	sorted := true
	i = skipWS(s, i+1)
	if i < len(s) && s[i] == '}' {
		k.buf = append(k.buf, 'e')
		return i + 1, true
	}
	for {
		if i >= len(s) || s[i] != '"' {
			return i, false
		}
		ks := len(k.buf)
		var ok bool
		if i, ok = k.string(s, i); !ok {
			return i, false
		}
		ke := len(k.buf)
		if n := len(k.spans); n > base && sorted {
			p := k.spans[n-1]
			// Equal keys too: a duplicate is dropped by the rewrite.
			sorted = bytes.Compare(k.buf[p.ks:p.ke], k.buf[ks:ke]) < 0
		}
		i = skipWS(s, i)
		if i >= len(s) || s[i] != ':' {
			return i, false
		}
		if i, ok = k.value(s, i+1, depth); !ok {
			return i, false
		}
		k.spans = append(k.spans, span{ks: ks, ke: ke, ve: len(k.buf)})
		i = skipWS(s, i)
		if i < len(s) && s[i] == ',' {
			i = skipWS(s, i+1)
			continue
		}
		if i < len(s) && s[i] == '}' {
			i++
			break
		}
		return i, false
	}
	if !sorted {
		sp := k.spans[base:]
		slices.SortStableFunc(sp, func(a, b span) int { return bytes.Compare(k.buf[a.ks:a.ke], k.buf[b.ks:b.ke]) })
		k.tmp = append(k.tmp[:0], k.buf[start:]...)
		k.buf = k.buf[:start]
		for j, m := range sp {
			if j+1 < len(sp) && bytes.Equal(k.tmp[m.ks-start:m.ke-start], k.tmp[sp[j+1].ks-start:sp[j+1].ke-start]) {
				continue // a duplicate key: the last one counts, as for most JSON decoders
			}
			k.buf = append(k.buf, k.tmp[m.ks-start:m.ve-start]...)
		}
	}
	k.buf = append(k.buf, 'e')
	return i, true
}

func skipWS(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t') {
		i++
	}
	return i
}

// stringEnd returns the index after the string literal starting at s[i]
// (a quote) and whether it contains escapes.
func stringEnd(s string, i int) (end int, esc bool, ok bool) {
	j := i + 1
	for {
		q := strings.IndexByte(s[j:], '"')
		if q < 0 {
			return len(s), esc, false
		}
		q += j
		b := strings.IndexByte(s[j:q], '\\')
		if b < 0 {
			return q + 1, esc, true
		}
		// Skip the escape pair and look again (past q when it escaped q).
		esc = true
		j += b + 2
		if j > len(s) {
			return len(s), esc, false
		}
	}
}

func numberEnd(s string, i int) int {
	for i < len(s) {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index after the JSON value at s[i], checking only
// its framing (the key pass checks the rest).
func skipValue(s string, i int) (int, bool) {
	if i >= len(s) {
		return i, false
	}
	switch c := s[i]; {
	case c == '"':
		end, _, ok := stringEnd(s, i)
		return end, ok
	case c == '{' || c == '[':
		depth := 0
		for i < len(s) {
			switch s[i] {
			case '"':
				end, _, ok := stringEnd(s, i)
				if !ok {
					return end, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return i, false
	case c == 't' && strings.HasPrefix(s[i:], "true"), c == 'n' && strings.HasPrefix(s[i:], "null"):
		return i + 4, true
	case c == 'f' && strings.HasPrefix(s[i:], "false"):
		return i + 5, true
	case c == '-' || c >= '0' && c <= '9':
		return numberEnd(s, i), true
	}
	return i, false
}

// unescape appends the value of a JSON string literal's contents (without
// the quotes) to dst.
func unescape(dst []byte, lit string) ([]byte, bool) {
	for i := 0; i < len(lit); {
		j := strings.IndexByte(lit[i:], '\\')
		if j < 0 {
			return append(dst, lit[i:]...), true
		}
		dst = append(dst, lit[i:i+j]...)
		i += j
		if i+1 >= len(lit) {
			return dst, false
		}
		switch c := lit[i+1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(lit, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(lit, i+2); ok && i+1 < len(lit) && lit[i] == '\\' && lit[i+1] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						dst = utf8.AppendRune(dst, d)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}
