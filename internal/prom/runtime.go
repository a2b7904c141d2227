package prom

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// GoCollector reports the Go runtime's metrics under the names
// client_golang's default Go collector used (go_goroutines, go_threads,
// go_info, go_gc_duration_seconds, go_memstats_*, go_gc_gogc_percent,
// go_gc_gomemlimit_bytes, go_sched_gomaxprocs_threads), so dashboards
// built on those keep working. A scrape stops the world briefly
// (runtime.ReadMemStats), as client_golang's did.
type GoCollector struct{}

var (
	goGoroutines = NewDesc("go_goroutines", "Number of goroutines that currently exist.", Gauge)
	goThreads    = NewDesc("go_threads", "Number of OS threads created.", Gauge)
	goInfo       = NewDesc("go_info", "Information about the Go environment.", Gauge, "version")
	goGCDuration = NewDesc("go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", Summary)
	goGOGC       = NewDesc("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function.", Gauge)
	goMemLimit   = NewDesc("go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function.", Gauge)
	goMaxProcs   = NewDesc("go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously.", Gauge)
)

// memStat is one go_memstats_* gauge or counter.
type memStat struct {
	d   *Desc
	get func(*runtime.MemStats) float64
}

var memStats = []memStat{
	{NewDesc("go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.Alloc) }},
	{NewDesc("go_memstats_alloc_bytes_total", "Total number of bytes allocated in heap until now, even if released already.", Counter), func(m *runtime.MemStats) float64 { return float64(m.TotalAlloc) }},
	{NewDesc("go_memstats_sys_bytes", "Number of bytes obtained from system.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.Sys) }},
	{NewDesc("go_memstats_mallocs_total", "Total number of heap objects allocated, both live and gc-ed.", Counter), func(m *runtime.MemStats) float64 { return float64(m.Mallocs) }},
	{NewDesc("go_memstats_frees_total", "Total number of heap objects frees.", Counter), func(m *runtime.MemStats) float64 { return float64(m.Frees) }},
	{NewDesc("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.HeapAlloc) }},
	{NewDesc("go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.HeapSys) }},
	{NewDesc("go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.HeapIdle) }},
	{NewDesc("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.HeapInuse) }},
	{NewDesc("go_memstats_heap_released_bytes", "Number of heap bytes released to OS.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.HeapReleased) }},
	{NewDesc("go_memstats_heap_objects", "Number of currently allocated objects.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.HeapObjects) }},
	{NewDesc("go_memstats_stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.StackInuse) }},
	{NewDesc("go_memstats_stack_sys_bytes", "Number of bytes obtained from system for stack allocator.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.StackSys) }},
	{NewDesc("go_memstats_mspan_inuse_bytes", "Number of bytes in use by mspan structures.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.MSpanInuse) }},
	{NewDesc("go_memstats_mspan_sys_bytes", "Number of bytes used for mspan structures obtained from system.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.MSpanSys) }},
	{NewDesc("go_memstats_mcache_inuse_bytes", "Number of bytes in use by mcache structures.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.MCacheInuse) }},
	{NewDesc("go_memstats_mcache_sys_bytes", "Number of bytes used for mcache structures obtained from system.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.MCacheSys) }},
	{NewDesc("go_memstats_buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.BuckHashSys) }},
	{NewDesc("go_memstats_gc_sys_bytes", "Number of bytes used for garbage collection system metadata.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.GCSys) }},
	{NewDesc("go_memstats_other_sys_bytes", "Number of bytes used for other system allocations.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.OtherSys) }},
	{NewDesc("go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.NextGC) }},
	{NewDesc("go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", Gauge), func(m *runtime.MemStats) float64 { return float64(m.LastGC) / 1e9 }},
}

// Describe implements Collector.
func (GoCollector) Describe() []*Desc {
	ds := []*Desc{goGoroutines, goThreads, goInfo, goGCDuration, goGOGC, goMemLimit, goMaxProcs}
	for _, m := range memStats {
		ds = append(ds, m.d)
	}
	return ds
}

// Collect implements Collector (unused: collectRaw writes the summary).
func (c GoCollector) Collect(emit Emit) {
	c.collectRaw(func(d *Desc, suffix string, k key, extra string, v float64) {
		if suffix == "" && extra == "" {
			emit(d, v, k[:len(d.Labels)]...)
		}
	})
}

func (GoCollector) collectRaw(add func(d *Desc, suffix string, k key, extra string, v float64)) {
	var none key
	add(goGoroutines, "", none, "", float64(runtime.NumGoroutine()))
	add(goThreads, "", none, "", float64(pprof.Lookup("threadcreate").Count()))
	add(goInfo, "", key{runtime.Version()}, "", 1)
	add(goMaxProcs, "", none, "", float64(runtime.GOMAXPROCS(0)))
	rm := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(rm)
	if rm[0].Value.Kind() == metrics.KindUint64 {
		add(goGOGC, "", none, "", float64(rm[0].Value.Uint64()))
	}
	if rm[1].Value.Kind() == metrics.KindUint64 {
		add(goMemLimit, "", none, "", float64(rm[1].Value.Uint64()))
	}

	var gc debug.GCStats
	gc.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&gc)
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		add(goGCDuration, "", none, `quantile="`+q+`"`, gc.PauseQuantiles[i].Seconds())
	}
	add(goGCDuration, "_sum", none, "", gc.PauseTotal.Seconds())
	add(goGCDuration, "_count", none, "", float64(gc.NumGC))

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	for _, m := range memStats {
		add(m.d, "", none, "", m.get(&ms))
	}
}

// ProcessCollector reports the process's CPU, memory, file descriptors
// and start time under client_golang's process_* names. On a system
// without /proc (not Linux) only process_max_fds and
// process_start_time_seconds are reported.
type ProcessCollector struct {
	// Start is the process's start time, used where /proc/self/stat
	// cannot be read.
	Start time.Time
}

var (
	procCPU    = NewDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", Counter)
	procOpen   = NewDesc("process_open_fds", "Number of open file descriptors.", Gauge)
	procMax    = NewDesc("process_max_fds", "Maximum number of open file descriptors.", Gauge)
	procVirt   = NewDesc("process_virtual_memory_bytes", "Virtual memory size in bytes.", Gauge)
	procRSS    = NewDesc("process_resident_memory_bytes", "Resident memory size in bytes.", Gauge)
	procStartT = NewDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", Gauge)
)

// Describe implements Collector.
func (ProcessCollector) Describe() []*Desc {
	return []*Desc{procCPU, procOpen, procMax, procVirt, procRSS, procStartT}
}

// userHZ is the kernel's clock tick for /proc times (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// Collect implements Collector.
func (c ProcessCollector) Collect(emit Emit) {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		emit(procMax, float64(lim.Cur))
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		emit(procOpen, float64(len(fds)))
	}
	st, err := readStat("/proc/self/stat")
	if err != nil {
		emit(procStartT, float64(c.Start.UnixNano())/1e9)
		return
	}
	emit(procCPU, float64(st.utime+st.stime)/userHZ)
	emit(procVirt, float64(st.vsize))
	emit(procRSS, float64(st.rss*uint64(os.Getpagesize())))
	if bt, err := bootTime(); err == nil {
		emit(procStartT, float64(bt)+float64(st.starttime)/userHZ)
	} else {
		emit(procStartT, float64(c.Start.UnixNano())/1e9)
	}
}

type procStat struct{ utime, stime, starttime, vsize, rss uint64 }

// readStat parses the fields of /proc/<pid>/stat we report. The command
// name (field 2) is in parentheses and may contain spaces: fields are
// counted from the last ')'.
func readStat(path string) (procStat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, syscall.EINVAL
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 22 {
		return procStat{}, syscall.EINVAL
	}
	var st procStat
	for _, p := range []struct {
		dst   *uint64
		field int // 1-based, as in proc(5)
	}{{&st.utime, 14}, {&st.stime, 15}, {&st.starttime, 22}, {&st.vsize, 23}, {&st.rss, 24}} {
		if *p.dst, err = strconv.ParseUint(f[p.field-3], 10, 64); err != nil {
			return procStat{}, err
		}
	}
	return st, nil
}

// bootTime is btime from /proc/stat: the boot time in seconds since 1970.
func bootTime() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, syscall.EINVAL
}
