package daemon

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"time"

	"github.com/apnsd/apnsd/internal/config"
)

// Go runtime tuning, done only when the daemon is the whole process
// (Options.TuneRuntime: apnsd itself, not a test or benchmark that embeds
// it).
//
// gc_percent sets the garbage collector's GOGC. Most of what a notification
// costs apnsd, beyond the floor of system calls, TLS and HTTP/2 framing, is
// allocation and collection: at Go's default of 100 the heap target stays
// at its 4 MiB minimum and the collector runs about every 1,500
// notifications; at 400 (the default) the minimum is 16 MiB, it runs four
// times less often, and the daemon's CPU per notification roughly halves
// for some 12 MiB more heap under load (docs/performance.md, "Garbage
// collection"). The GOGC environment variable, when set, wins, as it does
// for any Go program.
//
// The extra heap is bounded, not proportional: gc_percent applies while
// the live heap is small (what a sending daemon has: a few MiB), and after
// every collection gcTuner lowers the effective GOGC as the live heap
// grows, so that the headroom above the live heap stays within what
// gc_percent gives a 4 MiB heap (16 MiB at 400), down to Go's 100. A peer
// that makes apnsd hold a lot (hundreds of connections with answers
// unread) thus costs what it costs at Go's default, not five times that.
//
// Once a busy spell is over, that heap would stay with the process until
// the runtime's scavenger hands it back slowly: releaseWhenQuiet gives it
// back to the system at once when sending stops, so an idle apnsd is as
// small after a burst as before it.

// max_procs sets Go's GOMAXPROCS, 1 by default: apnsd's goroutines hand
// each notification on four times (socket reader, APNs writer, APNs reader,
// socket writer), and with more than one thread each hand-off may wake an
// idle thread (a futex call and, in a VM, an inter-processor interrupt)
// that then looks for work another thread already took. On one thread the
// hand-off is a goroutine switch. Measured side by side, one thread costs
// about a sixth less CPU per notification at the same rate, and one core
// carries far more than APNs takes from one provider
// (docs/performance.md, "One core"). 0 restores Go's default (every CPU
// the process may use, updated as that changes). The GOMAXPROCS
// environment variable, when set, wins.

// applyRuntime applies cfg's runtime settings (gc_percent, max_procs).
func applyRuntime(cfg *config.Config, log *slog.Logger) {
	applyGC(cfg, log)
	applyProcs(cfg, log)
}

// applyProcs sets GOMAXPROCS from cfg unless the environment set it.
func applyProcs(cfg *config.Config, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	prev := runtime.GOMAXPROCS(0)
	if cfg.MaxProcs == 0 {
		runtime.SetDefaultGOMAXPROCS()
	} else {
		runtime.GOMAXPROCS(cfg.MaxProcs)
	}
	if now := runtime.GOMAXPROCS(0); now != prev {
		log.Debug("threads running Go code set", "max_procs", cfg.MaxProcs, "gomaxprocs", now, "was", prev)
	}
}

// applyGC sets GOGC from cfg unless the environment set it.
func applyGC(cfg *config.Config, log *slog.Logger) {
	if os.Getenv("GOGC") != "" {
		return
	}
	if prev := tuner.set(cfg.GCPercent); prev != cfg.GCPercent {
		log.Debug("garbage collector target set", "gc_percent", cfg.GCPercent, "was", prev)
	}
}

// tuner is the process's gcTuner (GOGC is process-wide).
var tuner gcTuner

// gcTuner applies gc_percent as described above: after each collection it
// sets GOGC to effectiveGC of the live heap.
type gcTuner struct {
	mu      sync.Mutex
	percent int // gc_percent; 0 until set
	applied int // the GOGC last given to the runtime
	armed   bool
	// live reads the live heap (tests; nil: the runtime's metric).
	live func() uint64
}

// set makes percent the tuner's gc_percent, applies it for the live heap
// now and returns the configured value it replaces (Go's 100 at first).
func (t *gcTuner) set(percent int) (prev int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev = t.percent
	if prev == 0 {
		prev = 100
	}
	t.percent = percent
	t.applied = 0 // apply whatever GOGC is now
	t.applyLocked()
	if !t.armed {
		t.armed = true
		t.arm()
	}
	return prev
}

// arm has afterGC run once the next collection has found an object
// unreachable (a finalizer: the runtime's own "after each GC" hook).
func (t *gcTuner) arm() {
	s := new(gcSentinel)
	runtime.SetFinalizer(s, func(*gcSentinel) { t.afterGC() })
}

type gcSentinel struct{ _ [16]byte } // not tiny-allocated: its finalizer runs

func (t *gcTuner) afterGC() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applyLocked()
	t.arm()
}

func (t *gcTuner) applyLocked() {
	if eff := effectiveGC(t.percent, t.liveHeap()); eff != t.applied {
		debug.SetGCPercent(eff)
		t.applied = eff
	}
}

func (t *gcTuner) liveHeap() uint64 {
	if t.live != nil {
		return t.live()
	}
	sample := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(sample)
	if sample[0].Value.Kind() == rtmetrics.KindUint64 {
		return sample[0].Value.Uint64()
	}
	return 0
}

// minHeap is the Go runtime's heap target at GOGC 100 for a small heap.
const minHeap = 4 << 20

// effectiveGC is the GOGC to use with a live heap of live bytes: percent
// while the headroom it gives (live*percent/100) stays within what it
// gives a minHeap heap, then less, down to 100 (never below percent
// itself), rounded down to a multiple of 25 so that small changes of the
// live heap do not reset the collector's target after every cycle.
func effectiveGC(percent int, live uint64) int {
	if percent <= 100 || live <= minHeap {
		return percent
	}
	budget := uint64(percent) * minHeap // headroom in bytes, times 100
	eff := int(budget / live)
	eff -= eff % 25
	return max(100, min(percent, eff))
}

// quietAfter is how long sending must have stopped before the memory of a
// busy spell is given back; busyAfter is how many notifications make a
// spell worth a release (a forced collection costs a few milliseconds).
const (
	quietAfter = 3 * time.Second
	busyAfter  = 10000
)

// releaseWhenQuiet returns the heap a busy spell left to the system once
// no notification has been answered for quietAfter; it ends when stop is
// closed.
func (d *Daemon) releaseWhenQuiet(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	q := newQuietWatch(d.sent.Load()+d.failed.Load(), time.Now())
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if n := q.due(d.sent.Load()+d.failed.Load(), d.pending.Load(), now); n > 0 {
				debug.FreeOSMemory()
				d.log.Debug("gave the memory of a busy spell back to the system", "notifications", n)
			}
		}
	}
}

// quietWatch decides when a busy spell has ended (releaseWhenQuiet).
type quietWatch struct {
	last, since uint64 // answered at the last look, and at the last release
	changed     time.Time
}

func newQuietWatch(answered uint64, now time.Time) *quietWatch {
	return &quietWatch{last: answered, since: answered, changed: now}
}

// due takes the answered count and the notifications pending at now; it
// returns the size of the spell to release memory for, or 0 for none.
func (q *quietWatch) due(answered uint64, pending int64, now time.Time) uint64 {
	if answered != q.last {
		q.last, q.changed = answered, now
		return 0
	}
	if spell := answered - q.since; spell >= busyAfter && now.Sub(q.changed) >= quietAfter && pending == 0 {
		q.since = answered
		return spell
	}
	return 0
}
