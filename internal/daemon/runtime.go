package daemon

import (
	"log/slog"
	"os"
	"runtime/debug"
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
// Once a busy spell is over, that heap would stay with the process until
// the runtime's scavenger hands it back slowly: releaseWhenQuiet gives it
// back to the system at once when sending stops, so an idle apnsd is as
// small after a burst as before it.

// applyGC sets GOGC from cfg unless the environment set it.
func applyGC(cfg *config.Config, log *slog.Logger) {
	if os.Getenv("GOGC") != "" {
		return
	}
	if prev := debug.SetGCPercent(cfg.GCPercent); prev != cfg.GCPercent {
		log.Debug("garbage collector target set", "gc_percent", cfg.GCPercent, "was", prev)
	}
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
