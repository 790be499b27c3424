package policy

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// nameCache hands out string terms for identifiers that repeat from one
// request to the next: model names, providers, the principal's key alias,
// key hash and team, roles, request paths. A term is immutable and
// evaluation never changes input terms, so requests can share them. The
// cache is direct-mapped and lock-free: a slot holds one entry, a newer
// name replaces the older. Only short strings are kept, and never message
// text, header values or an end user's id.
type nameCache struct {
	seed  maphash.Seed
	slots [nameSlots]atomic.Pointer[nameEntry]
	lists [nameSlots]atomic.Pointer[listEntry]
}

const (
	nameSlots   = 1 << 13 // a power of two; more than the keys and teams one gateway has, usually
	maxNameSize = 128
)

type nameEntry struct {
	s string
	t *ast.Term
}

type listEntry struct {
	key   string
	items []string
	t     *ast.Term
}

// names is the process's name cache.
var names = &nameCache{seed: maphash.MakeSeed()}

// get returns a string term for s (s is copied when kept).
func (c *nameCache) get(s string) *ast.Term {
	if len(s) > maxNameSize {
		return ast.StringTerm(strings.Clone(s))
	}
	slot := &c.slots[maphash.String(c.seed, s)&(nameSlots-1)]
	if e := slot.Load(); e != nil && e.s == s {
		return e.t
	}
	s = strings.Clone(s)
	t := ast.StringTerm(s)
	slot.Store(&nameEntry{s: s, t: t})
	return t
}

// bytes is get for a byte slice.
func (c *nameCache) bytes(b []byte) *ast.Term {
	if len(b) > maxNameSize {
		return ast.StringTerm(string(b))
	}
	slot := &c.slots[maphash.Bytes(c.seed, b)&(nameSlots-1)]
	if e := slot.Load(); e != nil && e.s == string(b) {
		return e.t
	}
	s := string(b)
	t := ast.StringTerm(s)
	slot.Store(&nameEntry{s: s, t: t})
	return t
}

// list returns an array term of items, cached under key while key maps
// to the same items.
func (c *nameCache) list(key string, items []string) *ast.Term {
	if len(key) > maxNameSize {
		return c.array(items)
	}
	slot := &c.lists[maphash.String(c.seed, key)&(nameSlots-1)]
	if e := slot.Load(); e != nil && e.key == key && slices.Equal(e.items, items) {
		return e.t
	}
	t := c.array(items)
	slot.Store(&listEntry{key: strings.Clone(key), items: slices.Clone(items), t: t})
	return t
}

func (c *nameCache) array(items []string) *ast.Term {
	if len(items) == 0 {
		return emptyArray
	}
	terms := make([]*ast.Term, len(items))
	for i, s := range items {
		terms[i] = c.get(s)
	}
	return ast.ArrayTerm(terms...)
}
