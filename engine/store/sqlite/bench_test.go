package sqlite

import (
	"context"
	"strconv"
	"testing"

	"github.com/portcullis/portcullis/engine/store"
)

// BenchmarkWriteSpend512 commits batches of 512 records spread over 16
// keys, 4 teams and 16 users; ns/op is per batch.
func BenchmarkWriteSpend512(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	seedOwners(b, s)
	const batch = 512
	recs := make([]store.SpendRecord, batch)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		for i := range recs {
			n++
			recs[i] = store.SpendRecord{
				RequestID: "req-" + strconv.Itoa(n), KeyHash: "k" + strconv.Itoa(n%16), TeamID: "t" + strconv.Itoa(n%4),
				UserID: "u" + strconv.Itoa(n%16), Model: "gpt-4o", Provider: "openai", PromptTokens: 100,
				CompletionTokens: 200, Cost: 1234, Status: 200, StartTime: t0, EndTime: t0,
			}
		}
		if err := s.WriteSpend(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkGetKey(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	if err := s.CreateKey(ctx, sampleKey("aaaa1111")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetKey(ctx, "aaaa1111"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
