// Package hist is a small HDR-style (log-linear) histogram of int64 values,
// used by the load generator for latencies in nanoseconds.
//
// Values below 2^SubBits are counted exactly. Above that, every power of
// two [2^e, 2^(e+1)) is split into 2^(SubBits-1) equal sub-buckets, so a
// value is known to within a relative error of 2^(1-SubBits) (0.2% with
// SubBits = 10). Recording is O(1)
// with no allocation; percentiles walk the counts once.
//
// A Histogram is not safe for concurrent use; give each goroutine its own
// and Merge them, or guard one with a mutex.
package hist

import (
	"math"
	"math/bits"
)

// SubBits sets the precision: 2^SubBits exact values, then 2^(SubBits-1)
// sub-buckets per power of two (relative error at most 2^(1-SubBits)).
const SubBits = 10

// MaxBits bounds the values kept: larger values are counted as MaxValue
// (2^44 ns is almost five hours).
const MaxBits = 44

// MaxValue is the largest value a histogram tells apart.
const MaxValue = int64(1)<<MaxBits - 1

const (
	subCount = 1 << SubBits
	half     = subCount / 2
	maxShift = MaxBits - SubBits
	nBuckets = subCount + maxShift*half
)

// Histogram counts non-negative int64 values.
type Histogram struct {
	counts [nBuckets]int64
	total  int64
	sum    float64
	min    int64
	max    int64
}

// New returns an empty histogram.
func New() *Histogram { return &Histogram{min: math.MaxInt64} }

// Index returns the bucket of v (negative values count as 0).
func Index(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < subCount {
		return int(v)
	}
	if v > MaxValue {
		v = MaxValue
	}
	k := bits.Len64(uint64(v)) - SubBits
	return subCount + (k-1)*half + int(v>>uint(k)) - half
}

// Bounds returns the lowest and highest value that fall in bucket i.
func Bounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	j := i - subCount
	k := j/half + 1
	sub := int64(j%half + half)
	lo = sub << uint(k)
	return lo, lo + int64(1)<<uint(k) - 1
}

// Record counts one value.
func (h *Histogram) Record(v int64) { h.RecordN(v, 1) }

// RecordN counts value v n times.
func (h *Histogram) RecordN(v int64, n int64) {
	if n <= 0 {
		return
	}
	v = max(0, min(v, MaxValue))
	h.counts[Index(v)] += n
	h.total += n
	h.sum += float64(v) * float64(n)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Count is the number of values recorded.
func (h *Histogram) Count() int64 { return h.total }

// Min is the smallest value recorded, 0 when empty.
func (h *Histogram) Min() int64 {
	if h.total == 0 {
		return 0
	}
	return h.min
}

// Max is the largest value recorded, 0 when empty.
func (h *Histogram) Max() int64 { return h.max }

// Mean is the exact mean of the values recorded, 0 when empty.
func (h *Histogram) Mean() float64 {
	if h.total == 0 {
		return 0
	}
	return h.sum / float64(h.total)
}

// Quantile returns the value at quantile q in [0, 1]: the highest value
// equivalent to the smallest recorded value with at least ceil(q*count)
// values at or below it (HdrHistogram's definition), clamped to the
// recorded min and max. It returns 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.total == 0 {
		return 0
	}
	if q <= 0 {
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	target := int64(math.Ceil(q * float64(h.total)))
	if target < 1 {
		target = 1
	}
	var seen int64
	for i := range h.counts {
		seen += h.counts[i]
		if seen >= target {
			_, hi := Bounds(i)
			return min(max(hi, h.min), h.max)
		}
	}
	return h.max
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Reset empties h.
func (h *Histogram) Reset() {
	*h = Histogram{min: math.MaxInt64}
}
