package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// ABOptions are the options of AB: two apnsd binaries measured in one
// run on one sink, alternating, so that the machine's drift (other load,
// frequency, page cache) falls on both alike.
type ABOptions struct {
	CompareOptions
	// A and B are the two daemon binaries.
	A, B string
	// Rounds is how many times each is measured (default 3); a round runs
	// A then B, the next B then A. CompareOptions.IdleWait defaults to 1 s
	// here.
	Rounds int
}

// ABReport is the outcome of AB: each binary's throughput rows in the
// order they ran.
type ABReport struct {
	Opts ABOptions
	A, B []PathResult
}

// AB measures the daemon's throughput path (socket line in to answer line
// out, daemon CPU from /proc) for two binaries, alternating. Only the
// throughput run: no latency, RSS-flat or in-process paths.
func AB(ctx context.Context, o ABOptions) (*ABReport, error) {
	if o.IdleWait <= 0 {
		o.IdleWait = time.Second // no idle RSS is read here: just let the connections settle
	}
	o.defaults()
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.A == "" || o.B == "" {
		return nil, fmt.Errorf("ab needs two apnsd binaries (-a and -b)")
	}
	o.LatencyN, o.FlatN = -1, 0
	e, err := Setup(Options{Sink: SinkNghttpd, Nghttpd: o.Nghttpd, Conns: o.Conns, MaxStreams: o.MaxStreams,
		Clients: o.Clients, Pipeline: o.Pipeline})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	exe := o.Exe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	rep := &ABReport{Opts: o}
	for i := 0; i < o.Rounds; i++ {
		sides := []bool{false, true} // B?
		if i%2 == 1 {
			sides = []bool{true, false}
		}
		for _, isB := range sides {
			bin, rows := o.A, &rep.A
			if isB {
				bin, rows = o.B, &rep.B
			}
			var one CompareReport
			fmt.Fprintf(o.Out, "round %d: %s\n", i+1, bin)
			if err := e.runApnsd(ctx, bin, exe, o.CompareOptions, &one); err != nil {
				return rep, err
			}
			*rows = append(*rows, one.Paths...)
		}
	}
	return rep, nil
}

// Print writes each binary's runs and medians. Besides CPU per
// notification it gives the daemon's CPU over the load generator's in the
// same run: the generator's code is the same on both sides, so the ratio
// cancels much of what a shared machine's drift does to both processes.
func (r *ABReport) Print(w io.Writer) {
	fmt.Fprintf(w, "\n%d clients x %d pipelined, %d notifications per run, %d rounds (A B, B A, ...)\n",
		r.Opts.Clients, r.Opts.Pipeline, r.Opts.N, r.Opts.Rounds)
	for _, side := range []struct {
		name, bin string
		rows      []PathResult
	}{{"A", r.Opts.A, r.A}, {"B", r.Opts.B, r.B}} {
		var cpu, rel, rate, sysc []float64
		for _, p := range side.rows {
			n := float64(max(1, p.Answered))
			cpu = append(cpu, float64(p.CPUPer())/1e3)
			rel = append(rel, float64(p.CPU)/float64(max(1, p.LoadgenCPU)))
			rate = append(rate, p.Rate())
			sysc = append(sysc, float64(p.Sys.Reads+p.Sys.Writes)/n)
		}
		fmt.Fprintf(w, "%s %s\n  CPU/notif µs: %s (median %.2f)\n  apnsd CPU / load generator CPU: %s (median %.2f)\n  notif/s: %s (median %.0f)\n  syscalls/notif: %s (median %.3f)\n",
			side.name, side.bin, list(cpu, "%.2f"), median(cpu), list(rel, "%.2f"), median(rel), list(rate, "%.0f"), median(rate), list(sysc, "%.3f"), median(sysc))
	}
}

func list(xs []float64, f string) string {
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf(f, x)
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
