package cli

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// Start-up leaves garbage behind that an idle daemon would otherwise hold
// as resident memory for minutes: the config decode, every credential
// parsed, the system root pool parsed once for a ca_file, the TLS
// handshakes of the first connections (docs/performance.md, "Idle RSS":
// about 2 MiB of the idle RSS). releaseStartupMemory waits until every
// configured APNs connection is up, or at most startupSettle, and then
// returns that memory to the OS once (debug.FreeOSMemory: one forced GC
// and scavenge, a few milliseconds, never repeated, nothing on the send
// path).
const (
	startupSettle = 10 * time.Second
	startupPoll   = 100 * time.Millisecond
)

// releaseStartupMemory calls release once, when status reports every
// environment's connections up (Connections >= Target), or when settle
// has passed, whichever is first; not at all if ctx ends first. It polls
// status every poll. It blocks until then: run it in its own goroutine.
// status must be safe to call concurrently with the daemon.
func releaseStartupMemory(ctx context.Context, status func() *ipc.StatusReport, release func(), settle, poll time.Duration) {
	deadline := time.NewTimer(settle)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for !allConnected(status()) {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			release()
			return
		case <-tick.C:
		}
	}
	release()
}

// allConnected reports whether every environment of every app has its
// configured connections up.
func allConnected(rep *ipc.StatusReport) bool {
	for _, app := range rep.Apps {
		for _, env := range app.Envs {
			if env.Connections < env.Target {
				return false
			}
		}
	}
	return true
}

// freeOSMemory is what releaseStartupMemory releases with in apnsd.
func freeOSMemory() { debug.FreeOSMemory() }
