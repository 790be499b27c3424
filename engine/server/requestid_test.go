package server

import (
	"strings"
	"sync"
	"testing"
)

// Request ids cut from shared batches are unique across goroutines and
// batches, each the server's prefix and a base-36 sequence number.
func TestRequestIDs(t *testing.T) {
	s := &Server{idPrefix: "req-0123abcd-"}
	const workers, each = 4, 3 * idBatchN / 2
	got := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				got[w] = append(got[w], s.requestID())
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, ids := range got {
		for _, id := range ids {
			rest, ok := strings.CutPrefix(id, s.idPrefix)
			if !ok || rest == "" || strings.Trim(rest, "0123456789abcdefghijklmnopqrstuvwxyz") != "" {
				t.Fatalf("id %q is not the prefix and a base-36 number", id)
			}
			if seen[id] {
				t.Fatalf("id %q handed out twice", id)
			}
			seen[id] = true
		}
	}
	if len(seen) != workers*each {
		t.Fatalf("%d distinct ids, want %d", len(seen), workers*each)
	}
}
