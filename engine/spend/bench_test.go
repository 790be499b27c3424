package spend_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/portcullis/portcullis/engine/spend"
	"github.com/portcullis/portcullis/engine/store"
)

func benchRecords(n int) []store.SpendRecord {
	recs := make([]store.SpendRecord, n)
	for i := range recs {
		recs[i] = store.SpendRecord{RequestID: "req-" + strconv.Itoa(i), KeyHash: "k1", TeamID: "t1", UserID: "u1",
			Model: "gpt-4o", Provider: "openai", PromptTokens: 100, CompletionTokens: 200, Cost: 1234,
			Status: 200, StartTime: t0, EndTime: t0}
	}
	return recs
}

// BenchmarkWriterAdd measures Add into a writer over SQLite, end to end:
// the timer stops after the final Flush, so records/s is the sustained
// commit rate and ns/op the cost per record including its share of the
// transaction.
func BenchmarkWriterAdd(b *testing.B) {
	st := openStore(b)
	w := spend.NewWriter(st, spend.Options{})
	defer w.Close(context.Background())
	recs := benchRecords(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range recs {
		w.Add(recs[i])
	}
	if err := w.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	s := w.Stats()
	b.ReportMetric(float64(s.Written)/float64(max(s.Batches, 1)), "records/batch")
}

// nopStore accepts every write; it isolates the writer's own cost.
type nopStore struct{ store.Store }

func (nopStore) WriteSpend(context.Context, []store.SpendRecord) error { return nil }
func (nopStore) WriteAudit(context.Context, []store.AuditRecord) error { return nil }

// BenchmarkWriterAddParallel measures the Add call itself from many
// goroutines (the request path), over a store that does nothing.
func BenchmarkWriterAddParallel(b *testing.B) {
	w := spend.NewWriter(nopStore{}, spend.Options{})
	defer w.Close(context.Background())
	r := benchRecords(1)[0]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Add(r)
		}
	})
	b.StopTimer()
	if err := w.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWriterAddSync measures strict mode: each op waits for its commit,
// with many concurrent callers sharing transactions.
func BenchmarkWriterAddSync(b *testing.B) {
	st := openStore(b)
	w := spend.NewWriter(st, spend.Options{})
	defer w.Close(context.Background())
	recs := benchRecords(b.N)
	var next atomicCounter
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := w.AddSync(ctx, recs[next.inc()-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	s := w.Stats()
	b.ReportMetric(float64(s.Written)/float64(max(s.Batches, 1)), "records/batch")
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) inc() int64 { return c.n.Add(1) }
