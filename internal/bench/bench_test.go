package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// TestBenchSmoke runs both phases briefly against the stand-in, so the
// benchmark cannot rot unnoticed: every request must get an answer, in
// order, and both paths must see the same answers.
func TestBenchSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 2000
	o := RunOptions{Options: Options{Sink: SinkStandin, Conns: 2, Clients: 4, Pipeline: 16}, N: n, Warmup: 100, RSSEvery: 20 * time.Millisecond}
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
	if len(rep.Series) < 2 {
		t.Errorf("memory series has %d samples, want at least a first and a last", len(rep.Series))
	} else {
		for i := 1; i < len(rep.Series); i++ {
			if p, x := rep.Series[i-1], rep.Series[i]; x.Done < p.Done || x.T < p.T || x.RSS <= 0 || x.Goroutines <= 0 {
				t.Errorf("sample %d %+v does not follow %+v", i, x, p)
			}
		}
		if last := rep.Series[len(rep.Series)-1]; last.Done != n {
			t.Errorf("last sample counts %d done, want %d", last.Done, n)
		}
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

func TestFlatness(t *testing.T) {
	series := func(rss func(i int) int64) []Sample {
		var s []Sample
		for i := range 19 { // 0..90s every 5s
			s = append(s, Sample{T: time.Duration(i) * 5 * time.Second, RSS: rss(i), Goroutines: 1000})
		}
		return s
	}
	const m = 1 << 20
	flat := FlatnessOf(series(func(i int) int64 {
		if i == 0 {
			return 20 * m // before the load: skipped as warm-up
		}
		return int64(30+i%3) * m // noise, no trend
	}))
	if !flat.OK || !flat.Flat || flat.Skipped != 2 {
		t.Errorf("steady series judged %+v (%s)", flat, flat)
	}
	leak := FlatnessOf(series(func(i int) int64 { return int64(30+2*i) * m }))
	if !leak.OK || leak.Flat || leak.SlopeMiBPerMin < 20 || leak.SlopeMiBPerMin > 28 {
		t.Errorf("growing series (24 MiB/min) judged %+v (%s)", leak, leak)
	}
	if few := FlatnessOf(series(func(int) int64 { return m })[:3]); few.OK {
		t.Errorf("3 samples judged %s", few)
	}
}

// TestHostileClientsAreBounded: connections that send and never read make
// apnsd stop reading them after max_pending_per_conn answers are owed, so
// what it accepts, its heap and its goroutines stay bounded, other
// clients are still served, and everything is released when they go.
// Over-long lines are answered line_too_long. Only bounds with generous
// margins are asserted, never speed.
func TestHostileClientsAreBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const pending, hostile = 64, 4
	e, err := Setup(Options{Conns: 1, Clients: 1, Pipeline: 1, MaxPendingPerConn: pending})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RunDaemon(ctx, 10, 0); err != nil { // warm the connection
		t.Fatal(err)
	}
	runtime.GC()
	g0, heap0 := runtime.NumGoroutine(), heapLive()

	// apnsd still delivers the lines left in a closed connection's socket
	// buffer; a small send buffer keeps that tail (and the test) short.
	e.hostileSndBuf = 16 << 10
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	h, err := e.StartHostile(hctx, hostile, 1)
	if err != nil {
		hcancel()
		h.Wait()
		t.Fatal(err)
	}
	// Per connection apnsd may hold max_pending answers plus what the two
	// socket buffers and its 16 KiB bufio buffers take: a few thousand
	// lines. Allow 8 MiB, i.e. ~68,000 lines: an unbounded reader would
	// keep going and never stall.
	const limit = 8 << 20
	deadline := time.Now().Add(10 * time.Second)
	for !h.AllStalled() || h.Stats()[1].Answers == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: stats %+v (never-read connections not all stalled, or no long-line answer)", h.Stats())
		}
		for _, c := range h.Conns() {
			if c.Kind == NeverRead && c.Written.Load() > limit {
				t.Fatalf("apnsd accepted %d bytes from a never-reading connection (limit %d): it did not stop reading", c.Written.Load(), limit)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tStalled := time.Now()
	// Keep them pushing a while longer: a reader that only looked stalled
	// because the sink was slow would take more, but within the limit.
	for time.Since(tStalled) < time.Second {
		for _, c := range h.Conns() {
			if c.Kind == NeverRead && c.Written.Load() > limit {
				t.Fatalf("apnsd accepted %d bytes from a never-reading connection (limit %d): it did not stop reading", c.Written.Load(), limit)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	runtime.GC()
	gStalled, heapStalled := runtime.NumGoroutine(), heapLive()

	// Another client is still served.
	cl := ipc.Client{Socket: e.SocketPath()}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	res, err := cl.Do(rctx, map[string]any{"id": 1, "token": Token, "payload": json.RawMessage(Payload)})
	rcancel()
	if err != nil || !res.OK || res.Status != 200 {
		t.Errorf("a well-behaved client beside the hostile ones got %+v, %v", res, err)
	}

	hcancel()
	stats := h.Wait()
	for _, s := range stats {
		if len(s.Errs) > 0 {
			t.Errorf("%s: %v", s.Kind, s.Errs)
		}
		switch s.Kind {
		case NeverRead:
			if s.MaxWritten > limit || s.Written < hostile*pending*int64(s.LineBytes) {
				t.Errorf("never-read: accepted %d bytes (at most %d from one), want between %d and %d per connection",
					s.Written, s.MaxWritten, pending*s.LineBytes, limit)
			}
		case LongLine:
			if s.TooLong != s.Answers {
				t.Errorf("long-line: %d answers, only %d line_too_long", s.Answers, s.TooLong)
			}
		}
	}
	// Requests read but not yet answered by the sink each hold a few
	// goroutines (backend delivery, HTTP/2 client stream, the in-process
	// stand-in's handler); at most max_pending per connection are read.
	if gStalled > g0+4*hostile*(pending+1)+50 {
		t.Errorf("goroutines: %d before, %d with %d stalled hostile connections", g0, gStalled, hostile)
	}
	if heapStalled > heap0+32<<20 {
		t.Errorf("live heap: %d before, %d with the hostile connections stalled", heap0, heapStalled)
	}
	// Closing them releases everything apnsd held for them.
	deadline = time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > g0+2 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before the hostile connections, %d 10s after they closed", g0, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%+v; goroutines %d -> %d stalled; live heap %.1f -> %.1f MiB", stats, g0, gStalled, float64(heap0)/(1<<20), float64(heapStalled)/(1<<20))
}

// TestOverLongLineIsNotBuffered streams one 16 MiB line (cap 8 KiB) and
// checks apnsd did not keep it: its heap does not grow by the line, and
// the line is answered line_too_long, followed by a normal answer.
func TestOverLongLineIsNotBuffered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := Setup(Options{Conns: 1, Clients: 1, Pipeline: 1, MaxLineBytes: 8192})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", e.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	chunk := bytes.Repeat([]byte("x"), 256<<10)
	runtime.GC()
	heap0 := heapLive()
	const total = 16 << 20
	for sent := 0; sent < total; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("after %d bytes: %v", sent, err)
		}
	}
	// Everything but the socket buffers has been read by apnsd by now.
	runtime.GC()
	heap1 := heapLive()
	if heap1 > heap0+4<<20 {
		t.Errorf("live heap grew from %d to %d while a %d-byte line streamed in", heap0, heap1, total)
	}
	if _, err := c.Write(append([]byte("\n"), requestLine(nil, 7)...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, want := range []string{"error:line_too_long", "200"} {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if k, _ := classify([]byte(line)); k != want || (want == "200" && !strings.HasPrefix(line, `{"id":7,`)) {
			t.Errorf("answer %d = %s, want %s", i, line, want)
		}
	}
	t.Logf("live heap %.1f -> %.1f MiB across a %d MiB line", float64(heap0)/(1<<20), float64(heap1)/(1<<20), total>>20)
}

func TestHistPercentiles(t *testing.T) {
	var h hist
	// 1..100000 µs: the p-quantile is p*100000 µs.
	for i := 1; i <= 100000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	if h.count() != 100000 {
		t.Fatalf("count %d", h.count())
	}
	for _, p := range []float64{0.5, 0.9, 0.99} {
		want := time.Duration(p*100000+1) * time.Microsecond
		got := h.percentile(p)
		if d := float64(got-want) / float64(want); d > 0.01 || d < -0.01 {
			t.Errorf("p%.0f = %s, want %s within 1%%", p*100, got, want)
		}
	}
	if m := h.percentile(1); m != 100*time.Millisecond {
		t.Errorf("max %s", m)
	}
	for _, v := range []int64{0, 1, 127, 128, 129, 1000, 1 << 20, 1<<42 + 5, 1 << 62} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		if mid := histValue(i); v < 1<<42 && (float64(mid-v) > 0.01*float64(v)+0.5 || float64(v-mid) > 0.01*float64(v)+0.5) {
			t.Errorf("value %d: bucket %d middle %d, more than 1%% off", v, i, mid)
		}
	}
}

// TestBenchMulticast runs the daemon path with multicast lines: every
// notification of every batch is answered 200 and counted once.
func TestBenchMulticast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 8000
	o := RunOptions{Options: Options{Sink: SinkStandin, Conns: 2, Clients: 2, Pipeline: 2, Multicast: 1000}, N: n, Warmup: 2000, SkipDirect: true}
	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Daemon
	if r.Sent != n || r.Answered != n || r.Errors != 0 || r.Answers["200"] != n {
		t.Errorf("multicast: sent %d, answered %d, errors %d, answers %v; want %d answered 200", r.Sent, r.Answered, r.Errors, r.Answers, n)
	}
	if want := int64(n + o.Warmup); rep.SinkAnswered != want {
		t.Errorf("stand-in answered %d, want %d", rep.SinkAnswered, want)
	}
	t.Logf("multicast daemon path: %.0f notifications/s", r.Rate())
}
