package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// cpuTime is the user+system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func answersText(a map[string]int) string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, a[k])
	}
	return strings.Join(parts, " ")
}

// Print writes the report as a table plus notes.
func (r *Report) Print(w io.Writer) {
	o := r.Opts
	size := fmt.Sprintf("n=%d", o.N)
	if o.Duration > 0 {
		size = "duration=" + o.Duration.String()
	}
	fmt.Fprintf(w, "\napnsbench: sink=%s conns=%d clients=%d pipeline=%d %s warmup=%d GOMAXPROCS=%d %s\n",
		o.Sink, o.Conns, o.Clients, o.Pipeline, size, o.Warmup, runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(w, "sink: %s\n\n", r.Sink)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tnotifications\tseconds\tnotifications/s\tp50\tp90\tp99\tmax\terrors\tCPU s\tCPU µs/notif\t")
	for _, x := range r.results() {
		per := 0.0
		if x.Answered > 0 {
			per = float64(x.CPU.Microseconds()) / float64(x.Answered)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%d\t%.2f\t%.1f\t\n",
			x.Path, x.Answered, x.Elapsed.Seconds(), x.Rate(), ms(x.P50), ms(x.P90), ms(x.P99), ms(x.Max), x.Errors, x.CPU.Seconds(), per)
	}
	tw.Flush()
	if r.DirectSkipped {
		fmt.Fprintf(w, "\ndirect phase skipped\n")
		fmt.Fprintf(w, "answers: daemon %s", answersText(r.Daemon.Answers))
	} else {
		fmt.Fprintf(w, "\nratio daemon/direct: %.2f\n", r.Ratio())
		fmt.Fprintf(w, "answers: daemon %s | direct %s", answersText(r.Daemon.Answers), answersText(r.Direct.Answers))
	}
	if r.SinkAnswered >= 0 {
		fmt.Fprintf(w, " | stand-in answered %d valid requests (incl. warm-up)", r.SinkAnswered)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "\nmemory: the daemon runs in this process, so RSS covers daemon + socket clients")
	if o.Sink == SinkStandin {
		fmt.Fprintf(w, " + the in-process stand-in sink")
	}
	fmt.Fprintf(w, " (+ the direct client in phase B).\n")
	fmt.Fprintf(w, "  RSS before the daemon started: %s\n", mib(r.Baseline))
	for _, x := range r.results() {
		m := x.Mem
		peak := "VmHWM (peak RSS, reset at phase start)"
		if !m.HWMReset {
			peak = "VmHWM (peak RSS since process start)"
		}
		fmt.Fprintf(w, "  %-6s phase: VmRSS %s -> %s, %s %s; goroutines %d -> peak %d -> %d\n",
			x.Path, mib(m.RSSBefore), mib(m.RSSAfter), peak, mib(m.HWM), m.GoBefore, m.GoPeak, m.GoAfter)
	}
	if r.Daemon.Mem.SinkHWM > 0 {
		if r.DirectSkipped {
			fmt.Fprintf(w, "  sink process peak RSS: daemon phase %s\n", mib(r.Daemon.Mem.SinkHWM))
		} else {
			fmt.Fprintf(w, "  sink process peak RSS: daemon phase %s, direct phase %s\n", mib(r.Daemon.Mem.SinkHWM), mib(r.Direct.Mem.SinkHWM))
		}
	}
	fmt.Fprintf(w, "  CPU s = user+system CPU of this process during the phase (daemon + clients")
	if o.Sink == SinkStandin {
		fmt.Fprintf(w, " + stand-in")
	}
	fmt.Fprintf(w, "); the machine has %d CPUs.\n", runtime.NumCPU())
	if len(r.Series) > 0 {
		r.printSeries(w)
	}
	if len(r.Hostile) > 0 {
		r.printHostile(w)
	}
	if h := r.H2load; h != nil {
		fmt.Fprintf(w, "\nh2load ceiling: %.0f req/s (ratio daemon/h2load %.2f, direct/h2load %.2f)\n", h.Rate, r.Daemon.Rate()/h.Rate, r.Direct.Rate()/h.Rate)
		fmt.Fprintf(w, "  server: %s\n  client: %s\n", h.Server, h.Command)
		for _, l := range h.Summary {
			fmt.Fprintf(w, "  | %s\n", l)
		}
	}
}

func (r *Report) results() []*Result {
	if r.DirectSkipped {
		return []*Result{&r.Daemon}
	}
	return []*Result{&r.Daemon, &r.Direct}
}

// printSeries prints the daemon phase's memory time series and its
// flatness verdict.
func (r *Report) printSeries(w io.Writer) {
	fmt.Fprintf(w, "\nmemory over the daemon phase (every %s):\n", r.Opts.RSSEvery)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	sink := r.Series[0].SinkRSS > 0
	hdr := "t s\tVmRSS MiB\tlive heap MiB\tgoroutines\tdone\tnotif/s\t"
	if sink {
		hdr += "sink RSS MiB\t"
	}
	fmt.Fprintln(tw, hdr)
	for i, x := range r.Series {
		rate := 0.0
		if i > 0 {
			p := r.Series[i-1]
			if dt := (x.T - p.T).Seconds(); dt > 0 {
				rate = float64(x.Done-p.Done) / dt
			}
		}
		fmt.Fprintf(tw, "%.1f\t%.1f\t%.1f\t%d\t%d\t%.0f\t", x.T.Seconds(), float64(x.RSS)/(1<<20), float64(x.HeapLive)/(1<<20), x.Goroutines, x.Done, rate)
		if sink {
			fmt.Fprintf(tw, "%.1f\t", float64(x.SinkRSS)/(1<<20))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintf(w, "RSS %s\n", r.Flat)
}

// printHostile prints what the hostile connections managed.
func (r *Report) printHostile(w io.Writer) {
	fmt.Fprintf(w, "\nhostile connections (daemon phase):\n")
	for _, h := range r.Hostile {
		switch h.Kind {
		case NeverRead:
			fmt.Fprintf(w, "  %s x%d: apnsd accepted %s in all, at most %s (%d lines of %d bytes) from one connection; "+
				"%d of %d stalled at the end (apnsd stopped reading them; max_pending_per_conn %d)\n",
				h.Kind, h.Conns, mib(h.Written), mib(h.MaxWritten), h.MaxWritten/int64(h.LineBytes), h.LineBytes,
				h.Stalled, h.Conns, r.maxPending())
		case LongLine:
			fmt.Fprintf(w, "  %s x%d: sent %s as %d-byte lines; %d answers, %d line_too_long\n",
				h.Kind, h.Conns, mib(h.Written), h.LineBytes, h.Answers, h.TooLong)
		}
		for _, e := range h.Errs {
			fmt.Fprintf(w, "    error: %s\n", e)
		}
	}
}

func (r *Report) maxPending() int {
	if r.Opts.MaxPendingPerConn > 0 {
		return r.Opts.MaxPendingPerConn
	}
	return max(1024, r.Opts.Pipeline)
}
