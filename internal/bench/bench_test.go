package bench

import (
	"context"

	"testing"
	"time"
)

// TestBenchSmoke runs both phases briefly against the stand-in, so the
// benchmark cannot rot unnoticed: every request must get an answer, in
// order, and both paths must see the same answers.
func TestBenchSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 2000
	o := RunOptions{Options: Options{Sink: SinkStandin, Conns: 2, Clients: 4, Pipeline: 16}, N: n, Warmup: 100}
	start := time.Now()
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Result{rep.Daemon, rep.Direct} {
		if r.Sent != n || r.Answered != n || r.Errors != 0 || r.Answers["200"] != n {
			t.Errorf("%s: sent %d, answered %d, errors %d, answers %v; want %d answered 200", r.Path, r.Sent, r.Answered, r.Errors, r.Answers, n)
		}
		if r.Rate() <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Errorf("%s: implausible figures: rate %.0f p50 %s p99 %s", r.Path, r.Rate(), r.P50, r.P99)
		}
	}
	if want := int64(2 * (n + o.Warmup)); rep.SinkAnswered != want {
		t.Errorf("stand-in answered %d valid requests, want %d (both phases plus warm-ups)", rep.SinkAnswered, want)
	}
	if rep.Daemon.Mem.HWM <= 0 || rep.Daemon.Mem.GoPeak <= 0 {
		t.Errorf("memory figures missing: %+v", rep.Daemon.Mem)
	}
	t.Logf("smoke run took %s: daemon %.0f/s, direct %.0f/s", time.Since(start).Round(time.Millisecond), rep.Daemon.Rate(), rep.Direct.Rate())
}

// TestRunDurationMode checks the -duration form on the daemon path.
func TestRunDurationMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := Setup(Options{Conns: 1, Clients: 2, Pipeline: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := e.RunDaemon(ctx, 0, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Answered == 0 || r.Answered != r.Sent || r.Errors != 0 {
		t.Errorf("sent %d answered %d errors %d (%v)", r.Sent, r.Answered, r.Errors, r.Answers)
	}
}

func TestClassify(t *testing.T) {
	for line, want := range map[string]string{
		`{"id":1,"ok":true,"status":200,"apns_id":"x"}`:                           "200",
		`{"id":1,"ok":false,"status":410,"reason":"Unregistered"}`:                "410",
		`{"id":1,"ok":false,"error":"queue_full","message":"m","retryable":true}`: "error:queue_full",
		`{"id":1}`: "error:unparsed",
	} {
		if got, _ := classify([]byte(line)); got != want {
			t.Errorf("classify(%s) = %q, want %q", line, got, want)
		}
	}
}

// benchEnv starts a stand-in sink and, per path, the daemon or the direct
// client; b.N notifications go through the chosen path.
func benchPath(b *testing.B, daemonPath bool) {
	ctx := context.Background()
	e, err := Setup(Options{Sink: SinkStandin, Conns: 2, Clients: 8, Pipeline: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	run := e.RunDirect
	start := e.StartDirect
	if daemonPath {
		run, start = e.RunDaemon, e.StartDaemon
	}
	if err := start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := run(ctx, 1024, 0); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	r, err := run(ctx, b.N, 0)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	if r.Errors != 0 || r.Answered != b.N {
		b.Fatalf("answered %d of %d, %d errors: %v", r.Answered, b.N, r.Errors, r.Answers)
	}
	b.ReportMetric(r.Rate(), "notif/s")
	b.ReportMetric(float64(r.P99.Microseconds())/1000, "p99-ms")
}

// BenchmarkDaemonSend: notifications through the daemon's socket (8
// pipelining clients x 64) to the in-process stand-in over 2 connections.
func BenchmarkDaemonSend(b *testing.B) { benchPath(b, true) }

// BenchmarkDirectSend: the same load straight to the stand-in from an
// in-process apns.Client, for comparison.
func BenchmarkDirectSend(b *testing.B) { benchPath(b, false) }
