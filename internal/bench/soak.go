package bench

import (
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// Sample is one point of the memory time series taken during the daemon
// phase (RunOptions.RSSEvery).
type Sample struct {
	// T is the time since the phase started.
	T time.Duration
	// RSS is this process's VmRSS (daemon + socket clients, + the stand-in
	// sink when it is in-process), bytes.
	RSS int64
	// HeapLive is the Go heap marked live by the last GC, bytes.
	HeapLive int64
	// Goroutines is runtime.NumGoroutine() (the sampler included).
	Goroutines int
	// Done is how many answers the well-behaved socket clients have read
	// since the phase started.
	Done int64
	// SinkRSS is an external sink's VmRSS, bytes (0 if in-process).
	SinkRSS int64
}

// heapLive is the Go heap that the last GC found live, bytes.
func heapLive() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// sampler records a Sample every interval until stopped; each sample is
// also printed to out as it is taken.
type sampler struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	s     []Sample
}

func startSampler(every time.Duration, sinkPID int, done func() int64, out io.Writer) *sampler {
	sp := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	take := func() {
		var x Sample
		x.T = time.Since(start)
		x.RSS, _ = procStatus(0)
		x.HeapLive = heapLive()
		x.Goroutines = runtime.NumGoroutine()
		x.Done = done()
		if sinkPID > 0 {
			x.SinkRSS, _ = procStatus(sinkPID)
		}
		sp.mu.Lock()
		var rate float64
		if n := len(sp.s); n > 0 {
			prev := sp.s[n-1]
			if dt := (x.T - prev.T).Seconds(); dt > 0 {
				rate = float64(x.Done-prev.Done) / dt
			}
		}
		sp.s = append(sp.s, x)
		sp.mu.Unlock()
		fmt.Fprintf(out, "rss: t=%5.1fs VmRSS %s heap-live %s goroutines %d done %d (%.0f/s)\n",
			x.T.Seconds(), mib(x.RSS), mib(x.HeapLive), x.Goroutines, x.Done, rate)
	}
	go func() {
		defer close(sp.done)
		t := time.NewTicker(every)
		defer t.Stop()
		take()
		for {
			select {
			case <-sp.stopc:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return sp
}

// stop takes a last sample and returns the series.
func (sp *sampler) stop() []Sample {
	close(sp.stopc)
	<-sp.done
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.s
}

// Flatness summarises a memory series: after a warm-up (the first tenth
// of the run, at least the first interval) the samples are split into
// thirds and the peak of the last third is compared with the peak of the
// first. RSS is "flat" when the last third's peak is at most 10% (and at
// least 2 MiB, page-level noise) above the first third's.
type Flatness struct {
	// Used is the number of samples compared; Skipped were warm-up.
	Used, Skipped int
	// FirstRSS/LastRSS are the peak VmRSS of the first and last thirds.
	FirstRSS, LastRSS int64
	// FirstHeap/LastHeap are the peak live Go heap of the thirds.
	FirstHeap, LastHeap int64
	// FirstGo/LastGo are the peak goroutine counts of the thirds.
	FirstGo, LastGo int
	// Growth is LastRSS-FirstRSS, bytes; Allowed the tolerance.
	Growth, Allowed int64
	// SlopeMiBPerMin is the least-squares slope of RSS over the compared
	// samples.
	SlopeMiBPerMin float64
	// Flat is the verdict; OK is false when there were too few samples.
	Flat, OK bool
}

// FlatnessOf computes the Flatness of series.
func FlatnessOf(series []Sample) Flatness {
	var f Flatness
	if len(series) == 0 {
		return f
	}
	span := series[len(series)-1].T
	warm := span / 10
	if len(series) > 1 && series[1].T > warm {
		warm = series[1].T
	}
	var s []Sample
	for _, x := range series {
		if x.T < warm {
			f.Skipped++
			continue
		}
		s = append(s, x)
	}
	f.Used = len(s)
	if len(s) < 3 {
		return f
	}
	f.OK = true
	third := len(s) / 3
	peak := func(xs []Sample) (rss, heap int64, g int) {
		for _, x := range xs {
			rss, heap, g = max(rss, x.RSS), max(heap, x.HeapLive), max(g, x.Goroutines)
		}
		return
	}
	f.FirstRSS, f.FirstHeap, f.FirstGo = peak(s[:third])
	f.LastRSS, f.LastHeap, f.LastGo = peak(s[len(s)-third:])
	f.Growth = f.LastRSS - f.FirstRSS
	f.Allowed = max(f.FirstRSS/10, 2<<20)
	f.Flat = f.Growth <= f.Allowed
	// Least-squares slope of RSS (MiB) against time (minutes).
	var sx, sy, sxx, sxy float64
	for _, x := range s {
		t, y := x.T.Minutes(), float64(x.RSS)/(1<<20)
		sx, sy, sxx, sxy = sx+t, sy+y, sxx+t*t, sxy+t*y
	}
	n := float64(len(s))
	if d := n*sxx - sx*sx; d > 0 {
		f.SlopeMiBPerMin = (n*sxy - sx*sy) / d
	}
	return f
}

func (f Flatness) String() string {
	if !f.OK {
		return fmt.Sprintf("too few samples after warm-up (%d) to judge; run longer or sample more often", f.Used)
	}
	verdict := "FLAT"
	if !f.Flat {
		verdict = "NOT FLAT"
	}
	return fmt.Sprintf("%s: peak VmRSS first third %s, last third %s (growth %+.1f MiB, allowed %.1f MiB; slope %+.2f MiB/min); "+
		"peak live heap %s -> %s; peak goroutines %d -> %d (%d samples, %d warm-up skipped)",
		verdict, mib(f.FirstRSS), mib(f.LastRSS), float64(f.Growth)/(1<<20), float64(f.Allowed)/(1<<20), f.SlopeMiBPerMin,
		mib(f.FirstHeap), mib(f.LastHeap), f.FirstGo, f.LastGo, f.Used, f.Skipped)
}
