package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

func TestQuietWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	q := newQuietWatch(0, t0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	steps := []struct {
		at       float64
		answered uint64
		pending  int64
		want     uint64
	}{
		{1, 5000, 10, 0},          // busy
		{2, busyAfter + 10, 0, 0}, // still answering
		{3, busyAfter + 10, 0, 0}, // quiet for 1 s
		{4.9, busyAfter + 10, 0, 0},
		{5, busyAfter + 10, 3, 0},              // quiet 3 s, but notifications pending
		{6, busyAfter + 10, 0, busyAfter + 10}, // quiet 4 s, none pending: release
		{7, busyAfter + 10, 0, 0},              // once per spell
		{8, busyAfter + 500, 0, 0},             // a small spell follows
		{20, busyAfter + 500, 0, 0},            // too small to release for
		{21, 3*busyAfter + 10, 0, 0},           // a big one
		{25, 3*busyAfter + 10, 0, 2 * busyAfter},
	}
	for i, s := range steps {
		if got := q.due(s.answered, s.pending, at(s.at)); got != s.want {
			t.Fatalf("step %d (at %vs, %d answered, %d pending): due %d, want %d", i, s.at, s.answered, s.pending, got, s.want)
		}
	}
}

func TestApplyGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	// The test process's own live heap varies with the tests around it:
	// give the tuner a small one, then a large one.
	live := uint64(1 << 20)
	tuner.mu.Lock()
	tuner.live = func() uint64 { return live }
	tuner.mu.Unlock()
	defer func() {
		tuner.mu.Lock()
		tuner.live = nil
		tuner.mu.Unlock()
	}()
	cfg := config.Default()
	cfg.GCPercent = 250
	t.Setenv("GOGC", "")
	applyGC(cfg, slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != 250 {
		t.Errorf("with GOGC unset and a 1 MiB live heap, gc_percent 250 gave GOGC %d", got)
	}
	live = 40 << 20
	applyGC(cfg, slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with a 40 MiB live heap, gc_percent 250 gave GOGC %d, want 100 (tapered)", got)
	}
	live = 1 << 20
	t.Setenv("GOGC", "150")
	applyGC(cfg, slog.New(slog.DiscardHandler))
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC set, applyGC changed the collector to %d", got)
	}
}

// TestBusySpellMemoryGoesBackBinary: the real binary applies gc_percent at
// start and, once a busy spell of sends has ended, gives its memory back
// (runtime.go); both are logged at debug level.
func TestBusySpellMemoryGoesBackBinary(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	sock := filepath.Join(h.dir, "spell.sock")
	cfg := h.procConfig("spell.toml", sock, filepath.Join(h.dir, "spell-state"), "gc_percent = 300", "")
	p := startProc(t, bin, nil, "-config", cfg, "-log-format", "text", "-log-level", "debug")
	p.waitReady(sock)
	if !strings.Contains(p.log.String(), "gc_percent=300") {
		t.Errorf("no sign of gc_percent = 300 in the log:\n%s", p.log.String())
	}
	nc, err := net.Dial("unix", sock)
	must(t, err)
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(3 * time.Minute))
	br := bufio.NewReader(nc)
	const batch = 250
	for sent := 0; sent < busyAfter+batch; sent += batch {
		var b strings.Builder
		for i := range batch {
			fmt.Fprintf(&b, `{"id":%d,"token":"0a%04x","alert":"x"}`+"\n", sent+i, (sent+i)%0xffff)
		}
		_, err := nc.Write([]byte(b.String()))
		must(t, err)
		for range batch {
			line, err := br.ReadString('\n')
			must(t, err)
			if !strings.Contains(line, `"ok":true`) {
				t.Fatalf("answer: %s", line)
			}
		}
	}
	deadline := time.Now().Add(quietAfter + 20*time.Second)
	for !strings.Contains(p.log.String(), "gave the memory of a busy spell back") {
		if time.Now().After(deadline) {
			t.Fatalf("no release logged %s after the spell ended:\n%s", quietAfter+20*time.Second, tail(p.log.String(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestEffectiveGC(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		percent int
		live    uint64
		want    int
	}{
		{400, 1 * mib, 400}, {400, 4 * mib, 400}, {400, 5 * mib, 300}, {400, 8 * mib, 200},
		{400, 16 * mib, 100}, {400, 100 * mib, 100}, {100, 100 * mib, 100}, {50, 100 * mib, 50},
		{1000, 10 * mib, 400}, {400, 0, 400},
	} {
		if got := effectiveGC(c.percent, c.live); got != c.want {
			t.Errorf("effectiveGC(%d, %d MiB) = %d, want %d", c.percent, c.live/mib, got, c.want)
		}
		// The headroom never passes what gc_percent gives a 4 MiB heap (or
		// Go's default 100 would give).
		if eff := effectiveGC(c.percent, c.live); c.live > 0 && c.percent > 100 {
			headroom := c.live * uint64(eff) / 100
			if headroom > uint64(c.percent)*minHeap/100 && eff > 100 {
				t.Errorf("gc_percent %d, live %d MiB: GOGC %d leaves %d MiB of headroom", c.percent, c.live/mib, eff, headroom/mib)
			}
		}
	}
}

func TestApplyProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	log := slog.New(slog.DiscardHandler)
	cfg := config.Default()
	t.Setenv("GOMAXPROCS", "")
	applyProcs(cfg, log)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("default max_procs gave GOMAXPROCS %d, want 1", got)
	}
	cfg.MaxProcs = 3
	applyProcs(cfg, log)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("max_procs 3 gave GOMAXPROCS %d", got)
	}
	runtime.SetDefaultGOMAXPROCS() // Go's default on this machine
	want := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(5)
	cfg.MaxProcs = 0
	applyProcs(cfg, log)
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Errorf("max_procs 0 gave GOMAXPROCS %d, want Go's default %d", got, want)
	}
	t.Setenv("GOMAXPROCS", "2")
	runtime.GOMAXPROCS(2)
	cfg.MaxProcs = 1
	applyProcs(cfg, log)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("with GOMAXPROCS set, applyProcs changed it to %d", got)
	}
}

// TestMaxProcsBinary: the real binary runs on max_procs threads (1 by
// default), a reload applies a new value, and the GOMAXPROCS environment
// variable wins; seen from outside in go_sched_gomaxprocs_threads.
func TestMaxProcsBinary(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	dir := shortTempDir(t)
	msock := filepath.Join(dir, "m.sock")
	metrics := fmt.Sprintf("[metrics]\nlisten = \"unix:%s\"", msock)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", msock)
	}}}
	threads := func() string {
		t.Helper()
		return metricValue(scrape(t, client, "http://apnsd/metrics"), "go_sched_gomaxprocs_threads")
	}
	sock := filepath.Join(dir, "a.sock")
	cfg := h.procConfig("procs.toml", sock, filepath.Join(h.dir, "procs-state"), "", metrics)
	p := startProc(t, bin, func(c *exec.Cmd) { c.Env = withoutEnv(os.Environ(), "GOMAXPROCS") }, "-config", cfg)
	p.waitReady(sock)
	if got := threads(); got != "1" {
		t.Errorf("default: go_sched_gomaxprocs_threads = %q, want 1", got)
	}
	h.procConfig("procs.toml", sock, filepath.Join(h.dir, "procs-state"), "max_procs = 2", metrics)
	r, err := (&ipc.Client{Socket: sock}).Do(context.Background(), map[string]any{"op": "reload"})
	if err != nil || !r.OK {
		t.Fatalf("reload: %v %+v", err, r)
	}
	if got := threads(); got != "2" {
		t.Errorf("after a reload to max_procs = 2: go_sched_gomaxprocs_threads = %q", got)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(30 * time.Second)

	cfg = h.procConfig("procs.toml", sock, filepath.Join(h.dir, "procs-state"), "max_procs = 1", metrics)
	p = startProc(t, bin, func(c *exec.Cmd) { c.Env = append(withoutEnv(os.Environ(), "GOMAXPROCS"), "GOMAXPROCS=2") }, "-config", cfg)
	p.waitReady(sock)
	if got := threads(); got != "2" {
		t.Errorf("GOMAXPROCS=2 in the environment, max_procs = 1: go_sched_gomaxprocs_threads = %q, want 2 (the environment wins)", got)
	}
}

// withoutEnv is env without the variable name.
func withoutEnv(env []string, name string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
