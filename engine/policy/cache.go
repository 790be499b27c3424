package policy

import (
	"hash/maphash"
	"sync/atomic"
)

// resultCache remembers what a builtin returned for a (rule set, text)
// pair: chat requests resend the whole conversation, so most messages of
// a request were scanned by the one before. It is direct-mapped and
// lock-free: a slot holds one immutable entry behind an atomic pointer; a
// newer entry for the same slot replaces the older. Keys are 64-bit
// hashes of the text (seeded per process, so not predictable by clients)
// with the set's key and the text's length; nothing of the text is kept.
type resultCache struct {
	seed  maphash.Seed
	slots []atomic.Pointer[cacheEntry]
	mask  uint64
}

type cacheEntry struct {
	set, hash uint64
	n         int
	val       any // immutable once stored
}

// cacheSlots is the size of one revision's cache (a power of two).
const cacheSlots = 4096

func newResultCache(slots int) *resultCache {
	if slots <= 0 {
		return nil
	}
	size := 1
	for size < slots {
		size <<= 1
	}
	return &resultCache{seed: maphash.MakeSeed(), slots: make([]atomic.Pointer[cacheEntry], size), mask: uint64(size - 1)}
}

// get returns the cached value for set and text, and the text's hash for
// a following put. A nil cache never hits.
func (c *resultCache) get(set uint64, text string) (any, uint64) {
	if c == nil {
		return nil, 0
	}
	h := maphash.String(c.seed, text)
	e := c.slots[(h^set*0x9E3779B97F4A7C15)&c.mask].Load()
	if e != nil && e.hash == h && e.set == set && e.n == len(text) {
		return e.val, h
	}
	return nil, h
}

func (c *resultCache) put(set, h uint64, text string, v any) {
	if c == nil {
		return
	}
	c.slots[(h^set*0x9E3779B97F4A7C15)&c.mask].Store(&cacheEntry{set: set, hash: h, n: len(text), val: v})
}
