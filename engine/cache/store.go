package cache

import (
	"context"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Store holds encoded entries by key. It sees bytes only, so a networked
// backend (Redis, for several replicas) implements it without knowing the
// entry layout.
//
// Ownership: the slice Get returns is read-only and may be shared with
// other readers (the in-process store hands out the stored slice itself);
// the store must never change or reuse it afterwards, since hits serve it
// as the response body and may keep views of it (the model group) past
// the request. Set takes ownership of value, which the caller never
// changes afterwards.
type Store interface {
	// Get returns the value for key; ok is false when there is none (or it
	// expired). An error is a backend failure, served as a miss.
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Set stores value under key for ttl (> 0).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key.
	Delete(ctx context.Context, key string) error
}

// entryOverhead approximates what one entry costs the in-process store
// beyond its key and value bytes (ristretto's item, map and policy
// records), so MaxBytes bounds memory and not only payload.
const entryOverhead = 128

// ristrettoStore is the in-process Store: ristretto with cost = bytes, so
// MaxBytes bounds the memory and TinyLFU picks what to evict.
type ristrettoStore struct {
	c *ristretto.Cache[string, []byte]
}

var _ Store = (*ristrettoStore)(nil)

// newRistrettoStore builds a store bounded to maxBytes. onEvict is called
// (from ristretto's goroutine) for each entry removed for room (expired
// false) or at its TTL (expired true).
func newRistrettoStore(maxBytes int64, onEvict func(expired bool)) (*ristrettoStore, error) {
	// About ten counters per entry the bound can hold, at a 4 KiB average.
	counters := min(max(maxBytes/4096*10, 10_000), 10_000_000)
	c, err := ristretto.NewCache(&ristretto.Config[string, []byte]{
		NumCounters:        counters,
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true, // Set passes the full cost, overhead included
		OnEvict: func(it *ristretto.Item[[]byte]) {
			if onEvict != nil {
				onEvict(!it.Expiration.IsZero() && !it.Expiration.After(time.Now()))
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return &ristrettoStore{c: c}, nil
}

func (s *ristrettoStore) Get(_ context.Context, key string) ([]byte, bool, error) {
	v, ok := s.c.Get(key)
	return v, ok, nil
}

// Set stores value and waits until ristretto applied the write, so the
// next Get sees it (ristretto buffers writes; a set that is not visible
// yet would let a just-finished single-flight be repeated upstream). The
// wait is paid once per stored upstream answer, never on a hit.
func (s *ristrettoStore) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	s.c.SetWithTTL(key, value, int64(len(key)+len(value)+entryOverhead), ttl)
	s.c.Wait()
	return nil
}

func (s *ristrettoStore) Delete(_ context.Context, key string) error {
	s.c.Del(key)
	return nil
}

// setMaxBytes changes the memory bound (a config reload).
func (s *ristrettoStore) setMaxBytes(n int64) { s.c.UpdateMaxCost(n) }

// Close stops ristretto's goroutine and drops the entries.
func (s *ristrettoStore) Close() error {
	s.c.Close()
	return nil
}
