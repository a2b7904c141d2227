package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CompareOptions configures Compare: one run that measures, side by side
// on one nghttpd sink, the real apnsd binary driven through its socket by a
// separate load-generator process, sideshow/apns2 in-process, the
// project's apns.Client in-process, and h2load.
type CompareOptions struct {
	// Nghttpd and H2load are the Debian binaries (nghttp2-server,
	// nghttp2-client); H2load "" skips the ceiling.
	Nghttpd, H2load string
	// Apnsd is the daemon binary; "" builds ./cmd/apnsd into the run's
	// temp dir with `go build`.
	Apnsd string
	// Exe is the program to run as the load generator (it must call
	// LoadgenMain when $APNSBENCH_LOADGEN is set); "" means this
	// executable.
	Exe string
	// Clients socket connections x Pipeline requests outstanding each
	// (defaults 4 x 64); the in-process paths use Clients*Pipeline
	// goroutines.
	Clients, Pipeline int
	// Conns is the number of HTTP/2 connections for apnsd and apns.Client
	// (default 1; apns2 always has one).
	Conns int
	// MaxStreams is the sink's SETTINGS_MAX_CONCURRENT_STREAMS (1000).
	MaxStreams int
	// N is the number of measured notifications per throughput path
	// (default 50000); Warmup the unmeasured ones before (default
	// 2*Clients*Pipeline).
	N, Warmup int
	// LatencyN notifications at one request in flight, daemon and
	// direct, for the added latency (default 5000; < 0 skips).
	LatencyN int
	// FlatN notifications through the daemon while its RSS is sampled
	// every FlatEvery (default 1s), for the RSS-flat check; 0 skips.
	FlatN     int
	FlatEvery time.Duration
	// IdleWait is how long the daemon is left idle before its idle RSS is
	// read, at start (connections up, nothing sent) and at the end
	// (default 5s: apnsd gives a busy spell's memory back 3-4 s after
	// sending stops).
	IdleWait time.Duration
	// NoApnsID sends no apns-id on the in-process paths (the daemon
	// always gives each notification one); default: a fresh one each, as
	// the daemon does.
	NoApnsID bool
	// Out receives progress lines; nil discards.
	Out io.Writer
}

func (o *CompareOptions) defaults() {
	if o.Clients <= 0 {
		o.Clients = 4
	}
	if o.Pipeline <= 0 {
		o.Pipeline = 64
	}
	if o.Conns <= 0 {
		o.Conns = 1
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 1000
	}
	if o.N <= 0 {
		o.N = 50000
	}
	if o.Warmup <= 0 {
		o.Warmup = 2 * o.Clients * o.Pipeline
	}
	if o.LatencyN == 0 {
		o.LatencyN = 5000
	}
	if o.FlatEvery <= 0 {
		o.FlatEvery = time.Second
	}
	if o.IdleWait <= 0 {
		o.IdleWait = 5 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// PathResult is one row of the comparison.
type PathResult struct {
	Name string
	Result
	// CPUOf says whose CPU Result.CPU is: "apnsd process" or "whole
	// process (client + load)".
	CPUOf string
	// LoadgenCPU is the separate load generator's CPU (daemon path only).
	LoadgenCPU time.Duration
	// Sys is the daemon's system calls and context switches (daemon path
	// only).
	Sys ProcCounters
	// PeakRSS is the measured process's VmHWM during the run (apnsd, or
	// the benchmark process for in-process paths).
	PeakRSS int64
}

// CPUPer is CPU per answered notification.
func (p PathResult) CPUPer() time.Duration {
	if p.Answered == 0 {
		return 0
	}
	return p.CPU / time.Duration(p.Answered)
}

// CompareReport is the outcome of Compare.
type CompareReport struct {
	Opts         CompareOptions
	Sink, Apnsd  string
	Paths        []PathResult
	H2load       *H2loadResult
	LatDaemon    Result // one request in flight, through apnsd's socket
	LatDirect    Result // one request in flight, apns.Client in-process
	IdleRSSStart int64  // apnsd VmRSS, connections up, nothing sent yet
	IdleRSSEnd   int64  // apnsd VmRSS after everything, idle
	// IdleRSSFloor is the VmRSS of rssfloor (internal/bench/rssfloor, built
	// as apnsd is) idling with one HTTP/2 TLS connection to the same sink
	// and a Unix socket: what any Go process doing that costs here. 0 if it
	// could not be measured (FloorErr says why).
	IdleRSSFloor int64
	FloorErr     string
	Flat         *PathResult
	FlatSeries   []Sample
	Flatness     Flatness
}

// AddedP50 is the daemon's p50 at one request in flight minus the direct
// client's.
func (r *CompareReport) AddedP50() time.Duration { return r.LatDaemon.P50 - r.LatDirect.P50 }

// Compare runs the comparison. Numbers are measured and printed, never
// judged against a time.
func Compare(ctx context.Context, o CompareOptions) (*CompareReport, error) {
	o.defaults()
	out := o.Out
	rep := &CompareReport{Opts: o}
	e, err := Setup(Options{Sink: SinkNghttpd, Nghttpd: o.Nghttpd, Conns: o.Conns, MaxStreams: o.MaxStreams,
		Clients: o.Clients, Pipeline: o.Pipeline, DirectApnsID: !o.NoApnsID})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	rep.Sink = e.SinkDescription()
	fmt.Fprintf(out, "sink: %s\n", rep.Sink)
	exe := o.Exe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}

	// apnsd, the real binary, in its own process.
	bin := o.Apnsd
	if bin == "" {
		bin = filepath.Join(e.dir, "apnsd")
		fmt.Fprintf(out, "building apnsd as the .deb does: CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o %s github.com/apnsd/apnsd/cmd/apnsd\n", bin)
		if err := buildAsShipped(ctx, bin, "github.com/apnsd/apnsd/cmd/apnsd"); err != nil {
			return nil, err
		}
	}
	rep.Apnsd = bin
	if err := e.runApnsd(ctx, bin, exe, o, rep); err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "rssfloor: a bare Go process with one HTTP/2 TLS connection and a Unix socket; idle %s\n", o.IdleWait)
	if rep.IdleRSSFloor, err = e.idleRSSFloor(ctx, o.IdleWait); err != nil {
		rep.FloorErr = err.Error()
	}

	// The project's own client, in-process.
	if err := e.StartDirect(ctx); err != nil {
		return rep, err
	}
	if w, err := e.RunDirect(ctx, o.Warmup, 0); err != nil || w.Errors > 0 {
		return rep, fmt.Errorf("apns.Client warm-up: %w (%v)", err, w.Answers)
	}
	fmt.Fprintf(out, "apns.Client in-process: %d notifications, %d goroutines, %d connection(s)\n", o.N, o.Clients*o.Pipeline, o.Conns)
	r, err := measure(e.SinkPID(), func() (Result, error) { return e.RunDirect(ctx, o.N, 0) })
	if err != nil {
		return rep, err
	}
	rep.Paths = append(rep.Paths, PathResult{Name: "apns.Client in-process", Result: r, CPUOf: "whole process", PeakRSS: r.Mem.HWM})
	if o.LatencyN > 0 {
		fmt.Fprintf(out, "apns.Client in-process, one request in flight: %d notifications\n", o.LatencyN)
		if rep.LatDirect, err = e.runDirect(ctx, o.LatencyN, 0, 1); err != nil {
			return rep, err
		}
	}
	e.StopDirect()

	// sideshow/apns2, in-process.
	workers := o.Clients * o.Pipeline
	if w, err := e.runApns2(ctx, o.Warmup, workers, !o.NoApnsID); err != nil || w.Errors > 0 {
		return rep, fmt.Errorf("apns2 warm-up: %w (%v)", err, w.Answers)
	}
	fmt.Fprintf(out, "sideshow/apns2 in-process: %d notifications, %d goroutines, 1 connection\n", o.N, workers)
	r, err = measure(e.SinkPID(), func() (Result, error) { return e.runApns2(ctx, o.N, workers, !o.NoApnsID) })
	if err != nil {
		return rep, err
	}
	rep.Paths = append(rep.Paths, PathResult{Name: "sideshow/apns2 in-process", Result: r, CPUOf: "whole process", PeakRSS: r.Mem.HWM})

	if o.H2load != "" {
		fmt.Fprintf(out, "h2load: the ceiling, against a second nghttpd\n")
		h, err := runH2load(ctx, RunOptions{Options: e.o, N: o.N, H2load: o.H2load}, e.m)
		if err != nil {
			return rep, err
		}
		rep.H2load = h
	}
	return rep, nil
}

// runApnsd starts the apnsd binary and measures it: idle RSS, the
// throughput run, one request in flight, the long RSS-flat run, idle RSS
// again.
func (e *Env) runApnsd(ctx context.Context, bin, exe string, o CompareOptions, rep *CompareReport) error {
	out := o.Out
	cfgPath := filepath.Join(e.dir, "apnsd.toml")
	if err := os.WriteFile(cfgPath, []byte(e.daemonConfig()), 0o600); err != nil {
		return err
	}
	var log lockedBuffer // written by exec's copying goroutine, read here
	cmd := exec.Command(bin, "-config", cfgPath, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{}) // closed once apnsd has exited; then waitErr is set
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	e.sock = filepath.Join(e.dir, "apnsd.sock")
	if err := waitFor(ctx, 10*time.Second, func() (bool, string) {
		select {
		case <-exited:
			return false, fmt.Sprintf("apnsd exited: %v: %s", waitErr, log.String())
		default:
		}
		_, err := os.Stat(e.sock)
		return err == nil, "no socket yet: " + log.String()
	}); err != nil {
		return err
	}
	fmt.Fprintf(out, "apnsd (pid %d): %s -config %s; idle %s\n", pid, bin, cfgPath, o.IdleWait)
	time.Sleep(o.IdleWait)
	rep.IdleRSSStart, _ = procStatus(pid)

	spec := LoadgenSpec{Socket: e.sock, Clients: o.Clients, Pipeline: o.Pipeline, N: o.N, Warm: o.Warmup}
	fmt.Fprintf(out, "apnsd: %d notifications from a load-generator process (%d clients x %d pipelined)\n", o.N, o.Clients, o.Pipeline)
	run, err := runLoadgen(ctx, exe, spec, pid, 0, nil)
	if err != nil {
		return fmt.Errorf("apnsd run: %w (apnsd log: %s)", err, log.String())
	}
	rep.Paths = append(rep.Paths, daemonRow("apnsd binary via socket", run))

	if o.LatencyN > 0 {
		fmt.Fprintf(out, "apnsd: one request in flight, %d notifications\n", o.LatencyN)
		lat, err := runLoadgen(ctx, exe, LoadgenSpec{Socket: e.sock, Clients: 1, Pipeline: 1, N: o.LatencyN, Warm: 200}, pid, 0, nil)
		if err != nil {
			return fmt.Errorf("apnsd latency run: %w", err)
		}
		rep.LatDaemon = lat.Result
	}
	if o.FlatN > 0 {
		fmt.Fprintf(out, "apnsd: RSS-flat run, %d notifications, VmRSS every %s\n", o.FlatN, o.FlatEvery)
		spec.N, spec.Warm = o.FlatN, 0
		run, err := runLoadgen(ctx, exe, spec, pid, o.FlatEvery, out)
		if err != nil {
			return fmt.Errorf("apnsd flat run: %w (apnsd log: %s)", err, log.String())
		}
		row := daemonRow("apnsd binary via socket, long run", run)
		rep.Flat = &row
		rep.FlatSeries = run.Series
		rep.Flatness = FlatnessOf(run.Series)
	}
	runtime.GC()
	time.Sleep(o.IdleWait)
	rep.IdleRSSEnd, _ = procStatus(pid)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			return fmt.Errorf("apnsd on SIGTERM: %w: %s", waitErr, log.String())
		}
	case <-time.After(15 * time.Second):
		return fmt.Errorf("apnsd did not exit within 15s of SIGTERM")
	}
	return nil
}

func daemonRow(name string, run *loadgenRun) PathResult {
	r := run.Result
	lg := r.CPU
	r.CPU = run.DaemonCPU
	return PathResult{Name: name, Result: r, CPUOf: "apnsd process", LoadgenCPU: lg, Sys: run.DaemonSys, PeakRSS: run.DaemonHWM}
}

// Print writes the comparison table and the other figures.
func (r *CompareReport) Print(w io.Writer) {
	o := r.Opts
	fmt.Fprintf(w, "\nsink: %s\n", r.Sink)
	fmt.Fprintf(w, "load: %d clients x %d pipelined through the socket; %d goroutines in-process; %d HTTP/2 connection(s) (apns2: 1); apns-id on every notification: %v\n\n",
		o.Clients, o.Pipeline, o.Clients*o.Pipeline, o.Conns, !o.NoApnsID)
	fmt.Fprintf(w, "%-36s %9s %10s %9s %9s %12s %-16s %10s %s\n", "path", "notifs", "notif/s", "p50", "p99", "CPU/notif", "CPU of", "peak RSS", "answers")
	rows := append([]PathResult{}, r.Paths...)
	if r.Flat != nil {
		rows = append(rows, *r.Flat)
	}
	for _, p := range rows {
		fmt.Fprintf(w, "%-36s %9d %10.0f %9s %9s %10.2fµs %-16s %10s %s\n", p.Name, p.Answered, p.Rate(), ms(p.P50), ms(p.P99),
			float64(p.CPUPer())/1e3, p.CPUOf, mib(p.PeakRSS), answersText(p.Answers))
	}
	if r.H2load != nil {
		fmt.Fprintf(w, "%-36s %9d %10.0f %9s %9s %12s %-16s\n", "h2load (C) -> nghttpd, the ceiling", o.N, r.H2load.Rate, "-", "-", "-", "-")
	}
	fmt.Fprintln(w)
	for _, p := range rows {
		if p.LoadgenCPU > 0 {
			fmt.Fprintf(w, "%s: load generator process CPU %.2fµs/notif (not counted above)\n", p.Name, float64(p.LoadgenCPU)/float64(max(1, p.Answered))/1e3)
		}
		if s := p.Sys; s.Reads+s.Writes > 0 {
			n := float64(max(1, p.Answered))
			fmt.Fprintf(w, "%s: apnsd per notification: %.3f read and %.3f write system calls, %.3f context switches\n", p.Name, float64(s.Reads)/n, float64(s.Writes)/n, float64(s.CtxSwitches)/n)
		}
	}
	var apns2, daemon float64
	for _, p := range r.Paths {
		switch p.Name {
		case "sideshow/apns2 in-process":
			apns2 = p.Rate()
		case "apnsd binary via socket":
			daemon = p.Rate()
		}
	}
	if apns2 > 0 {
		fmt.Fprintf(w, "socket path rate / apns2 in-process rate: %.2fx\n", daemon/apns2)
	}
	if r.LatDaemon.Answered > 0 && r.LatDirect.Answered > 0 {
		fmt.Fprintf(w, "one request in flight: apnsd p50 %s p99 %s (%d); apns.Client p50 %s p99 %s (%d); added p50 %.0fµs\n",
			ms(r.LatDaemon.P50), ms(r.LatDaemon.P99), r.LatDaemon.Answered, ms(r.LatDirect.P50), ms(r.LatDirect.P99), r.LatDirect.Answered,
			float64(r.AddedP50())/1e3)
	}
	fmt.Fprintf(w, "apnsd idle RSS: %s at start (connections up, nothing sent), %s at the end\n", mib(r.IdleRSSStart), mib(r.IdleRSSEnd))
	if r.IdleRSSFloor > 0 {
		fmt.Fprintf(w, "idle RSS floor (rssfloor: Go, one HTTP/2 TLS connection, a Unix socket, built as apnsd is): %s; apnsd is %s above it\n",
			mib(r.IdleRSSFloor), mib(r.IdleRSSStart-r.IdleRSSFloor))
	} else if r.FloorErr != "" {
		fmt.Fprintf(w, "idle RSS floor: not measured: %s\n", r.FloorErr)
	}
	if r.Flat != nil {
		f := r.Flatness
		if !f.OK {
			fmt.Fprintf(w, "apnsd RSS over %d notifications: %s\n", r.Flat.Answered, f)
		} else {
			verdict := "FLAT"
			if !f.Flat {
				verdict = "NOT FLAT"
			}
			lo, hi := f.FirstRSS, f.FirstRSS
			for _, x := range r.FlatSeries {
				lo, hi = min(lo, x.RSS), max(hi, x.RSS)
			}
			fmt.Fprintf(w, "apnsd RSS over %d notifications (%s, %d samples, %d warm-up skipped): %s: peak VmRSS first third %s, last third %s (growth %+.1f MiB, allowed %.1f MiB; slope %+.2f MiB/min); all samples %s - %s\n",
				r.Flat.Answered, r.Flat.Elapsed.Round(time.Second), f.Used, f.Skipped, verdict, mib(f.FirstRSS), mib(f.LastRSS),
				float64(f.Growth)/(1<<20), float64(f.Allowed)/(1<<20), f.SlopeMiBPerMin, mib(lo), mib(hi))
		}
	}
	if r.H2load != nil {
		fmt.Fprintf(w, "h2load: %s\n  server: %s\n", r.H2load.Command, r.H2load.Server)
		for _, l := range r.H2load.Summary {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent
// readers (a child process's output, read while it runs).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// idleRSSFloor builds and runs rssfloor against the sink and returns its
// VmRSS after idle.
func (e *Env) idleRSSFloor(ctx context.Context, idle time.Duration) (int64, error) {
	bin := filepath.Join(e.dir, "rssfloor")
	if err := buildAsShipped(ctx, bin, "github.com/apnsd/apnsd/internal/bench/rssfloor"); err != nil {
		return 0, err
	}
	u, err := url.Parse(e.sink.url)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, bin, u.Host, e.m.certFile, e.m.keyFile, e.m.caFile, filepath.Join(e.dir, "rssfloor.sock"))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "up" {
		return 0, fmt.Errorf("rssfloor did not come up (%q, %w): %s", line, err, stderr.String())
	}
	time.Sleep(idle)
	rss, _ := procStatus(cmd.Process.Pid)
	if rss <= 0 {
		return 0, errors.New("no VmRSS for rssfloor")
	}
	return rss, nil
}

// buildAsShipped builds pkg into bin as packaging/build-deb.sh builds what
// ships: static (no cgo, so no libc pages in its RSS), trimmed paths, no
// symbol table.
func buildAsShipped(ctx context.Context, bin, pkg string) error {
	b := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, pkg)
	b.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := b.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w: %s", path.Base(pkg), err, msg)
	}
	return nil
}
