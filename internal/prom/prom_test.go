package prom

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func gather(t *testing.T, r *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.Gather(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// promtoolCheck runs `promtool check metrics` (Debian's prometheus
// package; scripts/deps.sh installs it) on an exposition.
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (scripts/deps.sh does)")
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n--- exposition:\n%s", err, out, body)
	}
}

type testCollector struct{ d *Desc }

func (c testCollector) Describe() []*Desc { return []*Desc{c.d} }
func (c testCollector) Collect(emit Emit) {
	emit(c.d, 2, "b")
	emit(c.d, 1.5, "a")
}

// The exposition, exactly: families sorted by name with HELP (escaped)
// and TYPE, series sorted by label values, label values escaped,
// histogram buckets cumulative with le last, _count equal to the +Inf
// bucket, an empty vector left out.
func TestGatherExact(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("z_total", "Help with \\ and\nnewline.", "code", "env")
	h := r.NewHistogramVec("a_seconds", "A histogram.", []float64{0.5, 1}, "app")
	r.NewCounterVec("empty_total", "Never incremented.", "x")
	r.MustRegister(testCollector{NewDesc("m_value", "From a collector.", Gauge, "k")})
	c.Inc("x", "b\"q\\\n")
	c.Inc("x", "a")
	c.Inc("x", "a")
	h.Observe(0.5, "p") // le is inclusive
	h.Observe(0.7, "p")
	h.Observe(3, "p")
	want := `# HELP a_seconds A histogram.
# TYPE a_seconds histogram
a_seconds_bucket{app="p",le="0.5"} 1
a_seconds_bucket{app="p",le="1"} 2
a_seconds_bucket{app="p",le="+Inf"} 3
a_seconds_sum{app="p"} 4.2
a_seconds_count{app="p"} 3
# HELP m_value From a collector.
# TYPE m_value gauge
m_value{k="a"} 1.5
m_value{k="b"} 2
# HELP z_total Help with \\ and\nnewline.
# TYPE z_total counter
z_total{code="x",env="a"} 2
z_total{code="x",env="b\"q\\\n"} 1
`
	if got := gather(t, r); got != want {
		t.Fatalf("exposition:\n%s\nwant:\n%s", got, want)
	}
	promtoolCheck(t, want)
}

// Counters and histograms under concurrent use lose nothing.
func TestConcurrentUpdates(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("n_total", "n", "k")
	h := r.NewHistogramVec("d_seconds", "d", []float64{1}, "k")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			k := strconv.Itoa(g % 2)
			for range 1000 {
				c.Inc(k)
				h.Observe(0.25, k)
			}
		})
	}
	wg.Wait()
	body := gather(t, r)
	for _, line := range []string{`n_total{k="0"} 4000`, `n_total{k="1"} 4000`, `d_seconds_count{k="1"} 4000`, `d_seconds_sum{k="0"} 1000`, `d_seconds_bucket{k="0",le="1"} 4000`} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("missing %q in\n%s", line, body)
		}
	}
}

// The Go runtime and process collectors give client_golang's names, and
// the whole exposition passes promtool.
func TestRuntimeCollectors(t *testing.T) {
	r := NewRegistry()
	r.MustRegister(GoCollector{}, ProcessCollector{})
	body := gather(t, r)
	names := []string{"go_goroutines", "go_threads", `go_info{version="` + runtime.Version() + `"} 1`, `go_gc_duration_seconds{quantile="0.5"}`, "go_gc_duration_seconds_count",
		"go_memstats_heap_inuse_bytes", "go_memstats_alloc_bytes_total", "go_gc_gogc_percent", "go_sched_gomaxprocs_threads", "process_max_fds", "process_start_time_seconds"}
	if runtime.GOOS == "linux" {
		names = append(names, "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_virtual_memory_bytes")
	}
	for _, n := range names {
		if !strings.Contains(body, "\n"+n) {
			t.Errorf("no %s in\n%s", n, body)
		}
	}
	promtoolCheck(t, body)
}

// /proc/<pid>/stat's command name may hold spaces and parentheses.
func TestReadStat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stat")
	line := "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 4242 1716748288 4765 18446744073709551615\n"
	if err := os.WriteFile(path, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (procStat{utime: 250, stime: 50, starttime: 4242, vsize: 1716748288, rss: 4765}); st != want {
		t.Fatalf("readStat = %+v, want %+v", st, want)
	}
	if err := os.WriteFile(path, []byte("1234 (short) S 1 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readStat(path); err == nil {
		t.Fatal("a truncated stat line parsed")
	}
}

// The handler serves the text format, gzipped when asked, and refuses
// methods other than GET and HEAD.
func TestHandler(t *testing.T) {
	r := NewRegistry()
	r.NewCounterVec("x_total", "x").Inc()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	for _, gz := range []bool{false, true} {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		} else {
			req.Header.Set("Accept-Encoding", "identity")
		}
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		var body io.Reader = res.Body
		if gz {
			if res.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("gzip asked, Content-Encoding %q", res.Header.Get("Content-Encoding"))
			}
			if body, err = gzip.NewReader(res.Body); err != nil {
				t.Fatal(err)
			}
		}
		b, err := io.ReadAll(body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if ct := res.Header.Get("Content-Type"); ct != ContentType {
			t.Errorf("Content-Type %q", ct)
		}
		if want := "# HELP x_total x\n# TYPE x_total counter\nx_total 1\n"; string(b) != want {
			t.Errorf("gzip=%v: body %q, want %q", gz, b, want)
		}
	}
	res, err := http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", res.Status)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "deflate, gzip;q=1.0, *;q=0.5": true, "identity": false,
		"gzip;q=0": false, "gzip; q=0.000": false, "gzip;q=0.5": true, "xgzip": false,
	} {
		if got := acceptsGzip(h); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", h, got, want)
		}
	}
}

// Programming errors are caught at registration or at the call.
func TestMisuse(t *testing.T) {
	for name, f := range map[string]func(){
		"unsorted labels":  func() { NewDesc("a", "a", Gauge, "b", "a") },
		"bad name":         func() { NewDesc("1a", "a", Gauge) },
		"reserved label":   func() { NewDesc("a", "a", Gauge, "le") },
		"too many labels":  func() { NewDesc("a", "a", Gauge, "a", "b", "c", "d", "e") },
		"registered twice": func() { r := NewRegistry(); r.NewCounterVec("a", "a"); r.NewCounterVec("a", "a") },
		"wrong label count": func() {
			r := NewRegistry()
			r.NewCounterVec("a", "a", "x").Inc("1", "2")
		},
		"unsorted buckets": func() { NewRegistry().NewHistogramVec("h", "h", []float64{2, 1}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
