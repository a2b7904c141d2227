package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets this test binary serve as Compare's load generator: the
// parent runs os.Executable() with $APNSBENCH_LOADGEN set.
func TestMain(m *testing.M) {
	if os.Getenv(LoadgenEnv) != "" {
		os.Exit(LoadgenMain())
	}
	os.Exit(m.Run())
}

// TestCompareSmoke runs the whole comparison small: the apnsd binary
// (built here) through its socket from a separate load-generator process,
// apns.Client and apns2 in-process, h2load, on one nghttpd. Every path
// must get all its answers 200 and report its figures; nothing is judged
// on speed.
func TestCompareSmoke(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/nghttpd", "/usr/bin/h2load"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s: %v (scripts/deps.sh installs nghttp2-server and nghttp2-client)", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	// Enough that every CPU figure is several of /proc's 10 ms ticks.
	const n = 20000
	o := CompareOptions{
		Nghttpd: "/usr/sbin/nghttpd", H2load: "/usr/bin/h2load",
		Apnsd:   filepath.Join(t.TempDir(), "apnsd"),
		Clients: 2, Pipeline: 16, N: n, Warmup: 64, LatencyN: 100, FlatN: 3000,
		FlatEvery: 20 * time.Millisecond, IdleWait: 100 * time.Millisecond, Out: &progress,
	}
	// Build the daemon here rather than in Compare, so a build failure
	// says so plainly.
	if out, err := runGo(ctx, "build", "-o", o.Apnsd, "github.com/apnsd/apnsd/cmd/apnsd"); err != nil {
		t.Fatalf("go build apnsd: %v: %s", err, out)
	}
	rep, err := Compare(ctx, o)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(rep.Paths) != 3 || rep.Flat == nil {
		t.Fatalf("paths %d, flat %v", len(rep.Paths), rep.Flat)
	}
	for i, p := range append(rep.Paths, *rep.Flat) {
		want := n
		if i == len(rep.Paths) {
			want = o.FlatN
		}
		if p.Answered != want || p.Answers["200"] != want || p.Errors != 0 {
			t.Errorf("%s: answered %d (%v), want %d answered 200", p.Name, p.Answered, p.Answers, want)
		}
		if p.CPU <= 0 || p.PeakRSS <= 0 || p.P50 <= 0 || p.P99 < p.P50 {
			t.Errorf("%s: implausible figures: CPU %s, peak RSS %d, p50 %s, p99 %s", p.Name, p.CPU, p.PeakRSS, p.P50, p.P99)
		}
	}
	if rep.Paths[0].CPUOf != "apnsd process" || rep.Paths[0].LoadgenCPU <= 0 {
		t.Errorf("daemon row: CPU of %q, load generator CPU %s", rep.Paths[0].CPUOf, rep.Paths[0].LoadgenCPU)
	}
	if s := rep.Paths[0].Sys; s.Reads <= 0 || s.Writes <= 0 || s.CtxSwitches <= 0 {
		t.Errorf("daemon row: system calls and context switches %+v, want all counted", s)
	}
	if rep.LatDaemon.Answered != 100 || rep.LatDirect.Answered != 100 {
		t.Errorf("one-in-flight runs answered %d and %d, want 100 each", rep.LatDaemon.Answered, rep.LatDirect.Answered)
	}
	if rep.IdleRSSStart <= 0 || rep.IdleRSSEnd <= 0 || len(rep.FlatSeries) < 2 {
		t.Errorf("idle RSS %d/%d, %d flat samples", rep.IdleRSSStart, rep.IdleRSSEnd, len(rep.FlatSeries))
	}
	if rep.IdleRSSFloor <= 0 || rep.FloorErr != "" {
		t.Errorf("idle RSS floor %d (%s)", rep.IdleRSSFloor, rep.FloorErr)
	}
	if rep.H2load == nil || rep.H2load.Rate <= 0 {
		t.Errorf("h2load: %+v", rep.H2load)
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	for _, s := range []string{"apnsd binary via socket", "sideshow/apns2 in-process", "apns.Client in-process", "h2load", "added p50", "idle RSS", "RSS over 3000"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}

func runGo(ctx context.Context, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "go", args...).CombinedOutput()
}

// TestABSmoke runs apnsbench ab small, with one binary on both sides: each
// side gets its rounds, all answered 200, with CPU and system calls
// counted.
func TestABSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "apnsd")
	if out, err := runGo(ctx, "build", "-o", bin, "github.com/apnsd/apnsd/cmd/apnsd"); err != nil {
		t.Fatalf("go build apnsd: %v: %s", err, out)
	}
	var progress bytes.Buffer
	// /proc counts CPU time in 10 ms ticks: 20,000 notifications at a few
	// µs each are several ticks, so a round's CPU is never read as zero
	// (1,000 were less than one).
	const n = 20000
	rep, err := AB(ctx, ABOptions{A: bin, B: bin, Rounds: 2, CompareOptions: CompareOptions{
		Nghttpd: "/usr/sbin/nghttpd", Clients: 2, Pipeline: 16, N: n, Warmup: 64,
		IdleWait: 100 * time.Millisecond, Out: &progress}})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(rep.A) != 2 || len(rep.B) != 2 {
		t.Fatalf("%d and %d rows, want 2 each (2 rounds)", len(rep.A), len(rep.B))
	}
	rows := append(rep.A, rep.B...)
	for _, p := range rows {
		if p.Answered != n || p.Answers["200"] != n || p.CPU <= 0 || p.Sys.Reads <= 0 {
			t.Errorf("%s: answered %d (%v), CPU %s, system calls %+v", p.Name, p.Answered, p.Answers, p.CPU, p.Sys)
		}
	}
	var out bytes.Buffer
	rep.Print(&out)
	if !strings.Contains(out.String(), "CPU/notif µs:") || !strings.Contains(out.String(), "median") {
		t.Errorf("report:\n%s", out.String())
	}
	if _, err := AB(ctx, ABOptions{A: bin}); err == nil {
		t.Error("AB with one binary: no error")
	}
}
