package cache

import (
	"encoding/binary"
	"errors"

	"github.com/portcullis/portcullis/engine/llm"
)

// Entry encoding, version 1, little endian:
//
//	[0]      version (1)
//	[1]      dialect of the body (llm.Dialect)
//	[2:10]   created, Unix nanoseconds
//	[10:18]  expires, Unix nanoseconds
//	[18:26]  original cost, nano-dollars
//	[26:46]  tokens: prompt, completion, cached read, cache write,
//	         reasoning (uint32 each)
//	[46:48]  length n of the model group
//	[48:48+n] model group
//	[48+n:]  the complete response body in the client's dialect
//
// A decoder that meets another version treats the entry as a miss, so a
// shared store survives an upgrade that changes the layout.
const (
	entryVersion = 1
	headerLen    = 48
)

var errEntry = errors.New("cache: malformed or foreign entry")

// entry is a decoded cache entry. body and group alias the encoded bytes,
// which are shared and never mutated (which is what makes the unsafe
// string view of group safe).
type entry struct {
	dialect llm.Dialect
	created int64
	expires int64
	cost    int64
	tokens  llm.Tokens
	group   string
	body    []byte
}

// encode returns e in the version-1 layout, in one new slice (the store
// owns it from then on).
func (e *entry) encode() []byte {
	g := e.group
	if len(g) > 0xffff {
		g = g[:0xffff]
	}
	b := make([]byte, headerLen+len(g)+len(e.body))
	b[0] = entryVersion
	b[1] = byte(e.dialect)
	binary.LittleEndian.PutUint64(b[2:], uint64(e.created))
	binary.LittleEndian.PutUint64(b[10:], uint64(e.expires))
	binary.LittleEndian.PutUint64(b[18:], uint64(e.cost))
	t := e.tokens
	for i, n := range [5]int{t.Prompt, t.Completion, t.CachedRead, t.CacheWrite, t.Reasoning} {
		binary.LittleEndian.PutUint32(b[26+4*i:], uint32(max(0, min(n, 1<<32-1))))
	}
	binary.LittleEndian.PutUint16(b[46:], uint16(len(g)))
	copy(b[headerLen:], g)
	copy(b[headerLen+len(g):], e.body)
	return b
}

// decode reads b into e without copying.
func (e *entry) decode(b []byte) error {
	if len(b) < headerLen || b[0] != entryVersion {
		return errEntry
	}
	n := int(binary.LittleEndian.Uint16(b[46:]))
	if len(b) < headerLen+n {
		return errEntry
	}
	e.dialect = llm.Dialect(b[1])
	e.created = int64(binary.LittleEndian.Uint64(b[2:]))
	e.expires = int64(binary.LittleEndian.Uint64(b[10:]))
	e.cost = int64(binary.LittleEndian.Uint64(b[18:]))
	u := func(i int) int { return int(binary.LittleEndian.Uint32(b[26+4*i:])) }
	e.tokens = llm.Tokens{Prompt: u(0), Completion: u(1), CachedRead: u(2), CacheWrite: u(3), Reasoning: u(4)}
	e.group = bstr(b[headerLen : headerLen+n])
	e.body = b[headerLen+n:]
	return nil
}
