package hist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestExactBelowSubCount(t *testing.T) {
	for v := int64(0); v < subCount; v++ {
		i := Index(v)
		lo, hi := Bounds(i)
		if lo != v || hi != v {
			t.Fatalf("value %d: bucket %d holds [%d,%d], want exact", v, i, lo, hi)
		}
	}
}

func TestBucketsTileTheRange(t *testing.T) {
	// Consecutive buckets are adjacent and every value maps into the
	// bucket whose bounds contain it.
	prevHi := int64(-1)
	for i := 0; i < nBuckets; i++ {
		lo, hi := Bounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if Index(lo) != i || Index(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: Index(lo)=%d Index(hi)=%d", i, lo, hi, Index(lo), Index(hi))
		}
		prevHi = hi
	}
	if prevHi != MaxValue {
		t.Fatalf("last bucket ends at %d, want MaxValue %d", prevHi, MaxValue)
	}
	if Index(math.MaxInt64) != nBuckets-1 || Index(-5) != 0 {
		t.Fatal("out-of-range values are not clamped")
	}
}

func TestRelativeError(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bound := math.Ldexp(1, 1-SubBits)
	for range 100000 {
		v := int64(r.Uint64N(uint64(MaxValue)))>>r.IntN(40) + 1
		lo, hi := Bounds(Index(v))
		if v < lo || v > hi {
			t.Fatalf("%d outside its bucket [%d,%d]", v, lo, hi)
		}
		if rel := float64(hi-lo) / float64(v); rel > bound {
			t.Fatalf("%d: bucket width %d is %.5f of the value, bound %.5f", v, hi-lo, rel, bound)
		}
	}
}

// exactQuantile is HdrHistogram's definition on sorted data.
func exactQuantile(sorted []int64, q float64) int64 {
	n := int64(math.Ceil(q * float64(len(sorted))))
	n = max(n, 1)
	return sorted[n-1]
}

func TestQuantilesMatchSortedData(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	h := New()
	var vals []int64
	// A latency-like mix: a body around 80 µs and a tail to 20 ms.
	for range 200000 {
		v := int64(80_000 + r.NormFloat64()*5_000)
		if r.IntN(100) == 0 {
			v = int64(r.ExpFloat64() * 2e6)
		}
		v = max(v, 0)
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 0.9999} {
		want := exactQuantile(vals, q)
		got := h.Quantile(q)
		tol := float64(want)*math.Ldexp(1, 1-SubBits) + 1
		if math.Abs(float64(got-want)) > tol {
			t.Errorf("q=%v: got %d want %d (±%.0f)", q, got, want, tol)
		}
		if got < want {
			t.Errorf("q=%v: got %d below the exact %d: must be the bucket's highest equivalent value", q, got, want)
		}
	}
	if h.Count() != int64(len(vals)) || h.Min() != vals[0] || h.Max() != vals[len(vals)-1] {
		t.Fatalf("count/min/max %d/%d/%d", h.Count(), h.Min(), h.Max())
	}
	if h.Quantile(0) != vals[0] || h.Quantile(1) != vals[len(vals)-1] {
		t.Fatal("q=0 and q=1 must be min and max")
	}
}

func TestSmallCounts(t *testing.T) {
	h := New()
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Min() != 0 || h.Max() != 0 {
		t.Fatal("empty histogram must report zeros")
	}
	for _, v := range []int64{10, 20, 30, 40} {
		h.Record(v)
	}
	cases := map[float64]int64{0.25: 10, 0.26: 20, 0.5: 20, 0.51: 30, 0.75: 30, 0.99: 40, 0.999: 40}
	for q, want := range cases {
		if got := h.Quantile(q); got != want {
			t.Errorf("q=%v: got %d want %d", q, got, want)
		}
	}
	if h.Mean() != 25 {
		t.Errorf("mean %v", h.Mean())
	}
	h.RecordN(1000, 96) // now 100 values, 96 of them 1000
	if got := h.Quantile(0.04); got != 40 {
		t.Errorf("q=0.04 got %d", got)
	}
	if got := h.Quantile(0.05); got != 1000 {
		t.Errorf("q=0.05 got %d", got)
	}
}

func TestMergeAndReset(t *testing.T) {
	a, b, all := New(), New(), New()
	for i := int64(1); i <= 5000; i++ {
		v := i * 997 % 100000
		all.Record(v)
		if i%2 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(b)
	a.Merge(nil)
	a.Merge(New())
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatal("merged summary differs")
	}
	for _, q := range []float64{0.1, 0.5, 0.9, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Fatalf("q=%v differs after merge", q)
		}
	}
	a.Reset()
	if a.Count() != 0 || a.Quantile(0.5) != 0 {
		t.Fatal("reset did not empty")
	}
	a.Record(7)
	if a.Min() != 7 {
		t.Fatal("min after reset")
	}
}
