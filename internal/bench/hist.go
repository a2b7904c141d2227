package bench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram (HDR-style): exact below 128 ns,
// then 64 buckets per power of two, so a percentile read from it is within
// 1% of the true value. Its memory is constant however long the run (a
// 90 s soak answers ~2 million notifications; keeping every latency would
// itself grow the process by 8 bytes each and spoil the RSS series). Safe
// for concurrent use.
type hist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Int64
	max    atomic.Int64
}

const (
	histSubBits = 7  // 1<<histSubBits linear values, then 1<<(histSubBits-1) per octave
	histMaxLen  = 42 // values up to 2^42 ns (~73 min)
	histHalf    = 1 << (histSubBits - 1)
	histBuckets = 1<<histSubBits + (histMaxLen-histSubBits)*histHalf
)

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < 1<<histSubBits {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - histSubBits // >= 1
	m := int(v >> e)                         // in [64, 128)
	i := 1<<histSubBits + (e-1)*histHalf + (m - histHalf)
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < 1<<histSubBits {
		return int64(i)
	}
	j := i - 1<<histSubBits
	e := j/histHalf + 1
	m := int64(j%histHalf + histHalf)
	lo := m << e
	return lo + (int64(1)<<e)/2
}

func (h *hist) add(d time.Duration) {
	v := int64(d)
	h.counts[histIndex(v)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// count is the number of values recorded.
func (h *hist) count() int { return int(h.n.Load()) }

// percentile is the p-quantile (0..1): the value of rank floor(p*n) in
// sorted order, as before with a sorted slice; the maximum is exact.
func (h *hist) percentile(p float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := min(n-1, int64(p*float64(n)))
	var cum int64
	for i := range h.counts {
		cum += int64(h.counts[i].Load())
		if cum > rank {
			return time.Duration(min(histValue(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}
