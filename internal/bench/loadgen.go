package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// LoadgenEnv is the environment variable that turns a process running the
// benchmark's code (cmd/apnsbench, or a test binary through TestMain) into
// a load generator: its value is a JSON LoadgenSpec. See LoadgenMain.
const LoadgenEnv = "APNSBENCH_LOADGEN"

// LoadgenSpec is what a load-generator process is told to do: Warmup
// notifications (unmeasured), then N measured ones through the daemon's
// socket at Socket, from Clients connections with Pipeline requests
// outstanding on each.
type LoadgenSpec struct {
	Socket                     string
	Clients, Pipeline, N, Warm int
}

// LoadgenMain runs a load generator as told by $APNSBENCH_LOADGEN and
// returns the process's exit code. The conversation with the parent (see
// runLoadgen) is line-based: the generator warms up and prints "ready";
// the parent, having read the daemon's CPU counters, writes a line; the
// generator sends the measured notifications and prints its Result as one
// JSON line (its own CPU time included), then exits. Errors go to stderr,
// with a non-zero exit.
func LoadgenMain() int {
	var spec LoadgenSpec
	if err := json.Unmarshal([]byte(os.Getenv(LoadgenEnv)), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: bad %s: %v\n", LoadgenEnv, err)
		return 2
	}
	ctx := context.Background()
	e := &Env{o: Options{Clients: spec.Clients, Pipeline: spec.Pipeline}, sock: spec.Socket}
	if spec.Warm > 0 {
		w, err := e.RunDaemon(ctx, spec.Warm, 0)
		if err != nil || w.Errors > 0 {
			fmt.Fprintf(os.Stderr, "loadgen: warm-up: %v (answers %v)\n", err, w.Answers)
			return 1
		}
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: waiting for go: %v\n", err)
		return 1
	}
	cpu0 := cpuTime()
	r, err := e.RunDaemon(ctx, spec.N, 0)
	r.CPU = cpuTime() - cpu0
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		return 1
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	return 0
}

// loadgenRun is one run of a load-generator process, as the parent saw it.
type loadgenRun struct {
	// Result is the generator's own (CPU is the generator's).
	Result Result
	// DaemonCPU is the daemon process's user+system CPU during the
	// measured part; DaemonHWM its peak RSS then (VmHWM, reset at the
	// start), DaemonRSS its VmRSS at the end.
	DaemonCPU            time.Duration
	DaemonHWM, DaemonRSS int64
	// DaemonSys is the daemon's system calls and context switches during
	// the measured part (what batching saves shows here first).
	DaemonSys ProcCounters
	HWMReset  bool
	// Series is the daemon's VmRSS sampled during the measured part.
	Series []Sample
}

// runLoadgen starts exe as a load generator (spec), lets it warm up, then
// measures the daemon process pid while the generator sends, sampling its
// RSS every sampleEvery (0: not at all).
func runLoadgen(ctx context.Context, exe string, spec LoadgenSpec, pid int, sampleEvery time.Duration, progress io.Writer) (*loadgenRun, error) {
	js, _ := json.Marshal(spec)
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), LoadgenEnv+"="+string(js))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Wait()
	defer stdin.Close()
	rd := bufio.NewReader(stdout)
	line, err := rd.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("load generator did not get ready (%q, %w): %s", line, err, stderr.String())
	}
	run := &loadgenRun{}
	run.HWMReset = resetHWM(pid)
	cpu0, err := procCPU(pid)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	sys0 := procCounters(pid)
	var sp *pidSampler
	if sampleEvery > 0 {
		sp = startPIDSampler(pid, sampleEvery, progress)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return nil, err
	}
	line, err = rd.ReadString('\n')
	cpu1, cerr := procCPU(pid)
	run.DaemonSys = procCounters(pid).Sub(sys0)
	run.DaemonRSS, run.DaemonHWM = procStatus(pid)
	if sp != nil {
		run.Series = sp.stop()
	}
	if err != nil {
		return nil, fmt.Errorf("load generator: %w: %s", err, stderr.String())
	}
	if cerr != nil {
		return nil, cerr
	}
	run.DaemonCPU = cpu1 - cpu0
	if err := json.Unmarshal([]byte(line), &run.Result); err != nil {
		return nil, fmt.Errorf("load generator said %q: %w", line, err)
	}
	return run, nil
}

// clockTick is the kernel's USER_HZ (/proc/<pid>/stat counts CPU time in
// these), from getconf; 100 if that fails.
var clockTick = func() time.Duration {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if hz, perr := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && perr == nil && hz > 0 {
		return time.Second / time.Duration(hz)
	}
	return 10 * time.Millisecond
}()

// procCPU is utime+stime of process pid from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unparsable /proc stat")
	}
	// After "pid (comm)": state is field 3, utime 14, stime 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unparsable utime/stime in /proc stat")
	}
	return time.Duration(ut+st) * clockTick, nil
}

// ProcCounters are a process's read and write system calls (syscr and
// syscw of /proc/<pid>/io) and its threads' context switches (summed over
// /proc/<pid>/task/*/status), or their differences over a run.
type ProcCounters struct {
	Reads, Writes, CtxSwitches int64
}

// Sub is c - o, field by field.
func (c ProcCounters) Sub(o ProcCounters) ProcCounters {
	return ProcCounters{c.Reads - o.Reads, c.Writes - o.Writes, c.CtxSwitches - o.CtxSwitches}
}

// procCounters reads pid's ProcCounters; a figure it cannot read stays 0
// (/proc/<pid>/io needs the same user or CAP_SYS_PTRACE).
func procCounters(pid int) ProcCounters {
	var c ProcCounters
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if !ok || err != nil {
				continue
			}
			switch k {
			case "syscr":
				c.Reads = n
			case "syscw":
				c.Writes = n
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				c.CtxSwitches += n
			}
		}
	}
	return c
}

// pidSampler records another process's VmRSS every interval.
type pidSampler struct {
	stopc, done chan struct{}
	s           []Sample
}

func startPIDSampler(pid int, every time.Duration, out io.Writer) *pidSampler {
	sp := &pidSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(sp.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			rss, _ := procStatus(pid)
			x := Sample{T: time.Since(start), RSS: rss}
			sp.s = append(sp.s, x)
			if out != nil {
				fmt.Fprintf(out, "  t=%6.0fs apnsd VmRSS %s\n", x.T.Seconds(), mib(rss))
			}
			select {
			case <-sp.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return sp
}

func (sp *pidSampler) stop() []Sample {
	close(sp.stopc)
	<-sp.done
	return sp.s
}
