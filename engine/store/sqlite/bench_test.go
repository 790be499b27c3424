package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

// BenchmarkWriteSpend512 commits batches of 512 records spread over 16
// keys, 4 teams and 16 users; ns/op is per batch, cpu-ns/record the
// process's CPU time (GC included) per record.
func BenchmarkWriteSpend512(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	seedOwners(b, s)
	const batch = 512
	recs := make([]store.SpendRecord, batch)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
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
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*batch), "cpu-ns/record")
	}
}

// BenchmarkWriteSpend512ManyKeys is BenchmarkWriteSpend512 closer to a
// busy gateway: 1024 keys (SHA-256 hex hashes), 64 teams and 1024 users,
// all stored, advancing start times, into a table already holding 51200
// records. A batch then updates hundreds of keys and users and touches
// hundreds of leaf pages of the key and team indexes.
func BenchmarkWriteSpend512ManyKeys(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	const batch = 512
	var keys [1024]string
	for i := range keys {
		h := sha256.Sum256([]byte(strconv.Itoa(i)))
		keys[i] = hex.EncodeToString(h[:])
		if err := s.CreateKey(ctx, &store.Key{Hash: keys[i], TeamID: "t" + strconv.Itoa(i%64), UserID: "u" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
		if err := s.CreateUser(ctx, &store.User{UserID: "u" + strconv.Itoa(i)}); err != nil {
			b.Fatal(err)
		}
		if i < 64 {
			if err := s.CreateTeam(ctx, &store.Team{TeamID: "t" + strconv.Itoa(i)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	recs := make([]store.SpendRecord, batch)
	n := 0
	fill := func() {
		for i := range recs {
			n++
			recs[i] = store.SpendRecord{
				RequestID: "req-" + strconv.Itoa(n), KeyHash: keys[n*7919%1024], TeamID: "t" + strconv.Itoa(n%64),
				UserID: "u" + strconv.Itoa(n%1024), Model: "gpt-4o", Provider: "openai", PromptTokens: 100,
				CompletionTokens: 200, Cost: 1234, Status: 200, StartTime: t0.Add(time.Duration(n) * time.Millisecond), EndTime: t0,
			}
		}
	}
	for range 100 {
		fill()
		if err := s.WriteSpend(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		fill()
		if err := s.WriteSpend(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*batch), "cpu-ns/record")
	}
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
