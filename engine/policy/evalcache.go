package policy

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// evalCache is the per-evaluation cache of rule results (topdown's virtual
// cache) and of base documents read from the store (its base cache), with
// the semantics of topdown's own, but flat: hash tables keyed by a hash of
// the reference, whose storage is kept in a pool and reused by the next
// evaluation. topdown builds its caches as tries with a hash map per
// reference segment: most of the allocations of a rule evaluated.
//
// One evalCache serves one evaluation at a time; get one with
// getEvalCache and give it back with release once the evaluation is done.
type evalCache struct {
	frames []*vcFrame // the virtual cache's stack; frames[depth-1] is on top
	depth  int
	base   vcFrame // the base cache (one level: `with` does not go through it)
	arena  []*ast.Term
}

// vcFrame is one frame of the virtual cache: entries chained per hash.
type vcFrame struct {
	index   map[uint64]int32
	entries []vcEntry
}

type vcEntry struct {
	hash      uint64
	ref       ast.Ref
	value     *ast.Term
	base      ast.Value // the base cache's value
	undefined bool
	next      int32 // index of the next entry with the same hash; -1: none
}

var evalCaches = sync.Pool{New: func() any { return &evalCache{} }}

// maxPooledEntries bounds what a pooled cache keeps between evaluations.
const maxPooledEntries = 1 << 12

func getEvalCache() *evalCache {
	c := evalCaches.Get().(*evalCache)
	c.Push()
	return c
}

// release clears the cache and returns it to the pool.
func (c *evalCache) release() {
	n := len(c.base.entries) + len(c.arena)
	for _, f := range c.frames {
		n += len(f.entries)
		f.reset()
	}
	c.depth = 0
	c.base.reset()
	clear(c.arena)
	c.arena = c.arena[:0]
	if n <= maxPooledEntries {
		evalCaches.Put(c)
	}
}

func (f *vcFrame) reset() {
	clear(f.index)
	clear(f.entries)
	f.entries = f.entries[:0]
}

// find returns the index of the entry for ref (of hash h), -1 if none.
func (f *vcFrame) find(h uint64, ref ast.Ref) int32 {
	i, ok := f.index[h]
	if !ok {
		return -1
	}
	for ; i >= 0; i = f.entries[i].next {
		if e := &f.entries[i]; e.hash == h && refEqual(e.ref, ref) {
			return i
		}
	}
	return -1
}

func (f *vcFrame) add(c *evalCache, h uint64, ref ast.Ref, v *ast.Term, undefined bool) {
	if f.index == nil {
		f.index = make(map[uint64]int32, 64)
	}
	next, ok := f.index[h]
	if !ok {
		next = -1
	}
	f.index[h] = int32(len(f.entries))
	f.entries = append(f.entries, vcEntry{hash: h, ref: c.keep(ref), value: v, undefined: undefined, next: next})
}

// keep copies ref: topdown reuses the slices it passes.
func (c *evalCache) keep(ref ast.Ref) ast.Ref {
	start := len(c.arena)
	c.arena = append(c.arena, ref...)
	return c.arena[start:len(c.arena):len(c.arena)]
}

const (
	hashSeed  = 14695981039346656037
	hashPrime = 1099511628211
)

func hashStep(h uint64, t *ast.Term) uint64 { return (h ^ uint64(t.Hash())) * hashPrime }

func refHash(ref ast.Ref) uint64 {
	h := uint64(hashSeed)
	for _, t := range ref {
		h = hashStep(h, t)
	}
	return h
}

func refEqual(a, b ast.Ref) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

var _ topdown.VirtualCache = (*evalCache)(nil)

// Push implements topdown.VirtualCache.
func (c *evalCache) Push() {
	if c.depth == len(c.frames) {
		c.frames = append(c.frames, &vcFrame{})
	}
	c.depth++
}

// Pop implements topdown.VirtualCache.
func (c *evalCache) Pop() {
	c.depth--
	c.frames[c.depth].reset()
}

// Get implements topdown.VirtualCache: (nil, true) for a ref recorded as
// undefined, (value, false) for a defined one, (nil, false) when unknown.
func (c *evalCache) Get(ref ast.Ref) (*ast.Term, bool) {
	f := c.frames[c.depth-1]
	i := f.find(refHash(ref), ref)
	if i < 0 {
		return nil, false
	}
	if e := &f.entries[i]; e.undefined {
		return nil, true
	} else {
		return e.value, false
	}
}

// Put implements topdown.VirtualCache; a nil value records "undefined".
func (c *evalCache) Put(ref ast.Ref, value *ast.Term) {
	f := c.frames[c.depth-1]
	h := refHash(ref)
	if i := f.find(h, ref); i >= 0 {
		if e := &f.entries[i]; value == nil {
			e.undefined = true
		} else {
			e.value = value
		}
		return
	}
	f.add(c, h, ref, value, value == nil)
}

// Keys implements topdown.VirtualCache.
func (c *evalCache) Keys() []ast.Ref {
	f := c.frames[c.depth-1]
	var keys []ast.Ref
	for _, e := range f.entries {
		if e.value != nil {
			keys = append(keys, e.ref)
		}
	}
	return keys
}

// baseCache is the evalCache seen as a topdown.BaseCache.
type baseCache evalCache

var _ topdown.BaseCache = (*baseCache)(nil)

// Get returns the value at ref within the value cached for its shortest
// cached prefix, as topdown's trie does.
func (b *baseCache) Get(ref ast.Ref) ast.Value {
	f := &b.base
	if len(f.entries) == 0 {
		return nil
	}
	h := uint64(hashSeed)
	for i := range ref {
		h = hashStep(h, ref[i])
		j := f.find(h, ref[:i+1])
		if j < 0 {
			continue
		}
		v := f.entries[j].base
		if v == nil {
			return nil
		}
		if i == len(ref)-1 {
			return v
		}
		res, err := v.Find(ref[i+1:])
		if err != nil {
			return nil
		}
		return res
	}
	return nil
}

// Put caches value at ref.
func (b *baseCache) Put(ref ast.Ref, value ast.Value) {
	c := (*evalCache)(b)
	h := refHash(ref)
	if i := c.base.find(h, ref); i >= 0 {
		c.base.entries[i].base = value
		return
	}
	c.base.add(c, h, ref, nil, false)
	c.base.entries[len(c.base.entries)-1].base = value
}
