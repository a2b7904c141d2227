// Command apnsbench measures apnsd's throughput: concurrent pipelining
// socket clients through an in-process daemon to an HTTP/2 sink, then the
// same load straight to the same sink from an in-process HTTP/2 client.
// `apnsbench compare` instead runs, on one nghttpd sink, the real apnsd
// binary driven by a separate load-generator process, sideshow/apns2 and
// apns.Client in-process, and h2load, and prints them side by side.
// `apnsbench floor` measures what the unavoidable parts cost under the same
// load and sink: a minimal socket server and a minimal HTTP/2 client.
// See docs/performance.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/bench"
	"github.com/apnsd/apnsd/internal/daemon"
)

func main() {
	if os.Getenv(bench.LoadgenEnv) != "" {
		// A load generator started by -compare (see bench.LoadgenMain).
		os.Exit(bench.LoadgenMain())
	}
	if os.Getenv(bench.FloorServerEnv) != "" {
		// A socket-floor server started by floor (see bench.FloorServerMain).
		os.Exit(bench.FloorServerMain())
	}
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		os.Exit(floor(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "ab" {
		os.Exit(ab(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "compare" {
		os.Exit(compare(os.Args[2:]))
	}
	var o bench.RunOptions
	var logLevel string
	var h2load bool
	var h2loadPath string
	flag.IntVar(&o.Clients, "clients", 8, "concurrent socket clients (direct path: clients*pipeline senders)")
	flag.IntVar(&o.Pipeline, "pipeline", 64, "requests each socket client keeps outstanding")
	flag.IntVar(&o.Multicast, "multicast", 0, "daemon path: send multicast lines of this many tokens (2..1000) instead of one token a line; -pipeline then counts lines")
	flag.IntVar(&o.N, "n", 50000, "notifications per phase")
	flag.DurationVar(&o.Duration, "duration", 0, "run each phase this long instead of -n notifications")
	flag.IntVar(&o.Warmup, "warmup", 0, "unmeasured notifications per phase first (default 2*clients*pipeline)")
	flag.IntVar(&o.Conns, "conns", 2, "HTTP/2 connections to the sink (daemon and direct client alike)")
	flag.IntVar(&o.MaxStreams, "streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS the sink advertises")
	flag.StringVar(&o.Sink, "sink", bench.SinkStandin, "sink: standin (in-process apnstest) or nghttpd")
	flag.StringVar(&o.Nghttpd, "nghttpd", "/usr/sbin/nghttpd", "nghttpd binary (Debian: nghttp2-server)")
	flag.BoolVar(&h2load, "h2load", false, "also run h2load against a separate nghttpd for the machine's ceiling")
	flag.StringVar(&h2loadPath, "h2load-bin", "/usr/bin/h2load", "h2load binary (Debian: nghttp2-client)")
	flag.StringVar(&logLevel, "log-level", "warn", "daemon log level (debug logging distorts the numbers)")
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the daemon phase to this file")
	flag.DurationVar(&o.RSSEvery, "rss-every", 0, "sample VmRSS, live heap, goroutines and notifications done this often during the daemon phase, and judge whether RSS stays flat (e.g. 5s)")
	flag.IntVar(&o.Hostile, "hostile", 0, "add this many hostile connections to the daemon phase that send requests and never read an answer")
	flag.IntVar(&o.LongLine, "longline", 0, "add this many hostile connections to the daemon phase that send 1 MiB lines (over max_line_bytes), 8 a second")
	flag.IntVar(&o.MaxPendingPerConn, "max-pending", 0, "the daemon's socket.max_pending_per_conn (default max(1024, pipeline))")
	flag.BoolVar(&o.DirectApnsID, "direct-apns-id", false, "give each direct-path notification a fresh apns-id, as the daemon does (default: none, as before)")
	direct := flag.Bool("direct", true, "run phase B (straight to the sink); -direct=false for a daemon-only soak")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	o.SkipDirect = !*direct
	if h2load {
		o.H2load = h2loadPath
	}
	log, err := daemon.NewLogger(os.Stderr, "text", logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apnsbench:", err)
		os.Exit(2)
	}
	o.Logger = log
	o.Out = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := bench.Run(ctx, o)
	if rep != nil && err == nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apnsbench:", err)
		os.Exit(1)
	}
}

// compare is `apnsbench compare [flags]`.
func compare(args []string) int {
	fs := flag.NewFlagSet("apnsbench compare", flag.ContinueOnError)
	var o bench.CompareOptions
	fs.StringVar(&o.Nghttpd, "nghttpd", "/usr/sbin/nghttpd", "nghttpd binary (Debian: nghttp2-server)")
	fs.StringVar(&o.H2load, "h2load", "/usr/bin/h2load", "h2load binary (Debian: nghttp2-client); empty skips the ceiling")
	fs.StringVar(&o.Apnsd, "apnsd", "", "apnsd binary; empty builds ./cmd/apnsd with go build")
	fs.IntVar(&o.Clients, "clients", 4, "socket clients of the load generator (in-process paths: clients*pipeline goroutines)")
	fs.IntVar(&o.Pipeline, "pipeline", 64, "requests each socket client keeps outstanding")
	fs.IntVar(&o.Conns, "conns", 1, "HTTP/2 connections for apnsd and apns.Client (apns2 has one)")
	fs.IntVar(&o.MaxStreams, "streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS the sink advertises")
	fs.IntVar(&o.N, "n", 50000, "measured notifications per throughput path")
	fs.IntVar(&o.Warmup, "warmup", 0, "unmeasured notifications before each (default 2*clients*pipeline)")
	fs.IntVar(&o.LatencyN, "latency-n", 5000, "notifications at one request in flight, apnsd and apns.Client (negative skips)")
	fs.IntVar(&o.FlatN, "flat-n", 1000000, "notifications through apnsd for the RSS-flat check (0 skips; the documented run uses 10000000)")
	fs.DurationVar(&o.FlatEvery, "flat-every", time.Second, "apnsd VmRSS sampling interval during the RSS-flat run")
	fs.DurationVar(&o.IdleWait, "idle", 5*time.Second, "idle time before reading apnsd's idle RSS (at start, and after the runs: apnsd gives a busy spell's memory back 3-4 s after sending stops)")
	fs.BoolVar(&o.NoApnsID, "no-apns-id", false, "in-process paths send no apns-id (apnsd always sends one)")
	timeout := fs.Duration("timeout", 60*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Out = os.Stderr
	return execute("apnsbench compare", *timeout, func(ctx context.Context) (func(io.Writer), error) {
		rep, err := bench.Compare(ctx, o)
		if rep == nil {
			return nil, err
		}
		return rep.Print, err
	})
}

// ab is `apnsbench ab -a BIN -b BIN [flags]`: two apnsd binaries, the
// throughput path only, alternating in one run.
func ab(args []string) int {
	fs := flag.NewFlagSet("apnsbench ab", flag.ContinueOnError)
	var o bench.ABOptions
	fs.StringVar(&o.A, "a", "", "first apnsd binary")
	fs.StringVar(&o.B, "b", "", "second apnsd binary")
	fs.IntVar(&o.Rounds, "rounds", 3, "runs of each binary (alternating)")
	fs.StringVar(&o.Nghttpd, "nghttpd", "/usr/sbin/nghttpd", "nghttpd binary (Debian: nghttp2-server)")
	fs.IntVar(&o.Clients, "clients", 4, "socket clients of the load generator")
	fs.IntVar(&o.Pipeline, "pipeline", 64, "requests each socket client keeps outstanding")
	fs.IntVar(&o.N, "n", 200000, "measured notifications per run")
	timeout := fs.Duration("timeout", 60*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Out = os.Stderr
	return execute("apnsbench ab", *timeout, func(ctx context.Context) (func(io.Writer), error) {
		rep, err := bench.AB(ctx, o)
		if rep == nil {
			return nil, err
		}
		return rep.Print, err
	})
}

// floor is `apnsbench floor [flags]`.
func floor(args []string) int {
	fs := flag.NewFlagSet("apnsbench floor", flag.ContinueOnError)
	var o bench.FloorOptions
	fs.StringVar(&o.Nghttpd, "nghttpd", "/usr/sbin/nghttpd", "nghttpd binary (Debian: nghttp2-server)")
	fs.StringVar(&o.Apnsd, "apnsd", "", "also measure this apnsd binary in the same run, for reference (empty skips)")
	fs.IntVar(&o.Clients, "clients", 4, "socket clients of the load generator")
	fs.IntVar(&o.Pipeline, "pipeline", 64, "requests each socket client keeps outstanding")
	fs.IntVar(&o.LatencyN, "latency-n", 3000, "socket floor (a) at one request in flight: notifications (negative skips)")
	fs.IntVar(&o.InFlight, "inflight", 0, "HTTP/2 floor: requests in flight on its one connection (default clients*pipeline)")
	fs.IntVar(&o.MaxStreams, "streams", 1000, "SETTINGS_MAX_CONCURRENT_STREAMS the sink advertises")
	fs.IntVar(&o.N, "n", 1000000, "measured notifications per row (CPU is read in 10 ms ticks: keep it large)")
	fs.IntVar(&o.Warmup, "warmup", 0, "unmeasured notifications before each row (default 2*clients*pipeline)")
	timeout := fs.Duration("timeout", 20*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Out = os.Stderr
	return execute("apnsbench floor", *timeout, func(ctx context.Context) (func(io.Writer), error) {
		rep, err := bench.Floor(ctx, o)
		if rep == nil {
			return nil, err
		}
		return rep.Print, err
	})
}

// execute runs a subcommand's measurement until it ends, SIGINT or SIGTERM
// arrives or timeout passes, prints its report (even a partial one) to
// stdout and gives the exit status: 0, or 1 with the error on stderr.
func execute(name string, timeout time.Duration, run func(ctx context.Context) (print func(io.Writer), err error)) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	print, err := run(ctx)
	if print != nil {
		print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	return 0
}
