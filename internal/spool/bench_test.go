package spool

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkAppend measures the daemon's use: each of N appenders appends a
// 512-byte record, waits for its durability signal (the queued:true answer),
// and marks it Done (APNs answered). It reports appends/s, fdatasyncs/s,
// records per fdatasync, and the p50/p99 latency of the durability signal.
// The spool lives in SPOOL_BENCH_DIR if set (e.g. /dev/shm for tmpfs), else
// in the test's temp dir.
func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("appenders=%d", n), func(b *testing.B) {
			benchAppend(b, n, 512)
		})
	}
}

func benchDir(b *testing.B) string {
	if d := os.Getenv("SPOOL_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "spoolbench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

func benchAppend(b *testing.B, appenders, size int) {
	s, _, err := Open(Options{Dir: benchDir(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, size)
	lats := make([][]time.Duration, appenders)
	var wg sync.WaitGroup
	before := s.Stats()
	b.ResetTimer()
	start := time.Now()
	per := b.N/appenders + 1
	for w := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := make(chan error, 1)
			cb := func(_ uint64, err error) { ch <- err }
			l := make([]time.Duration, 0, per)
			for range per {
				t0 := time.Now()
				id, err := s.Append(data, cb)
				if err != nil {
					b.Error(err)
					return
				}
				if err := <-ch; err != nil {
					b.Error(err)
					return
				}
				l = append(l, time.Since(t0))
				s.Done(id)
			}
			lats[w] = l
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	st := s.Stats()
	all := slices.Concat(lats...)
	slices.Sort(all)
	appends := float64(st.Appends - before.Appends)
	syncs := float64(st.Syncs - before.Syncs)
	b.ReportMetric(appends/el.Seconds(), "appends/s")
	b.ReportMetric(syncs/el.Seconds(), "fsyncs/s")
	b.ReportMetric(appends/max(syncs, 1), "records/fsync")
	b.ReportMetric(float64(pct(all, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(all, 99).Microseconds()), "p99-µs")
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, len(d)*p/100)]
}

// BenchmarkPipelined is the socket's shape: C connections, each a reader
// that appends without waiting, up to W records in flight, and a writer that
// takes the durability signals (the queued:true lines) in order, marks each
// record Done and frees its slot.
func BenchmarkPipelined(b *testing.B) {
	for _, c := range []struct{ conns, window int }{{1, 64}, {4, 64}, {4, 256}} {
		b.Run(fmt.Sprintf("conns=%d/window=%d", c.conns, c.window), func(b *testing.B) {
			benchPipelined(b, c.conns, c.window, 512)
		})
	}
}

func benchPipelined(b *testing.B, conns, window, size int) {
	s, _, err := Open(Options{Dir: benchDir(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, size)
	type ack struct {
		id uint64
		t0 time.Time
	}
	lats := make([][]time.Duration, conns)
	per := b.N/conns + 1
	before := s.Stats()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range conns {
		acks := make(chan ack, window) // the connection's answer queue
		slots := make(chan struct{}, window)
		wg.Add(2)
		go func() { // reader
			defer wg.Done()
			for range per {
				slots <- struct{}{}
				t0 := time.Now()
				_, err := s.Append(data, func(id uint64, err error) {
					if err != nil {
						b.Error(err)
					}
					acks <- ack{id, t0} // never blocks: one slot per record
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
		go func() { // writer
			defer wg.Done()
			l := make([]time.Duration, 0, per)
			for range per {
				a := <-acks
				l = append(l, time.Since(a.t0))
				s.Done(a.id)
				<-slots
			}
			lats[c] = l
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	st := s.Stats()
	all := slices.Concat(lats...)
	slices.Sort(all)
	appends := float64(st.Appends - before.Appends)
	syncs := float64(st.Syncs - before.Syncs)
	b.ReportMetric(appends/el.Seconds(), "appends/s")
	b.ReportMetric(syncs/el.Seconds(), "fsyncs/s")
	b.ReportMetric(appends/max(syncs, 1), "records/fsync")
	b.ReportMetric(float64(pct(all, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(all, 99).Microseconds()), "p99-µs")
}
