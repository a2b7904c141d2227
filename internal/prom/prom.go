package prom

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Type is a metric family's TYPE.
type Type string

// The metric types apnsd exposes.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
	Summary   Type = "summary"
)

// MaxLabels is how many variable labels a family can have.
const MaxLabels = 4

// Desc describes one metric family. Labels must be sorted (the exposition
// lists label pairs in that order, as client_golang did), valid Prometheus
// label names, and at most MaxLabels; "le" and "quantile" are reserved.
type Desc struct {
	Name, Help string
	Type       Type
	Labels     []string
}

// NewDesc returns a Desc, panicking on a name or labels that are not
// valid (a programming error).
func NewDesc(name, help string, typ Type, labels ...string) *Desc {
	if !validName(name, true) {
		panic("prom: invalid metric name " + strconv.Quote(name))
	}
	if len(labels) > MaxLabels || !slices.IsSorted(labels) {
		panic("prom: " + name + ": labels must be sorted, at most " + strconv.Itoa(MaxLabels))
	}
	for _, l := range labels {
		if !validName(l, false) || l == "le" || l == "quantile" || strings.HasPrefix(l, "__") {
			panic("prom: " + name + ": invalid label name " + strconv.Quote(l))
		}
	}
	return &Desc{Name: name, Help: help, Type: typ, Labels: labels}
}

func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (i > 0 && c >= '0' && c <= '9') || (colon && c == ':')
		if !ok {
			return false
		}
	}
	return true
}

// key is a series' label values (in the Desc's label order).
type key [MaxLabels]string

func makeKey(d *Desc, vals []string) key {
	if len(vals) != len(d.Labels) {
		panic(fmt.Sprintf("prom: %s: %d label values for %d labels", d.Name, len(vals), len(d.Labels)))
	}
	var k key
	copy(k[:], vals)
	return k
}

// Emit is how a Collector reports one sample at scrape time: the value of
// the series of d with labelValues (in d's label order). Only Counter and
// Gauge families can be emitted, plus Summary through EmitSummary.
type Emit func(d *Desc, value float64, labelValues ...string)

// Collector reports metrics read at scrape time. Collect is called once
// per scrape, never concurrently with itself; it must not retain emit.
type Collector interface {
	Describe() []*Desc
	Collect(emit Emit)
}

// Registry holds families and collectors; its zero value is not usable,
// use NewRegistry. Safe for concurrent use.
type Registry struct {
	mu         sync.Mutex // guards the fields below; held for a whole scrape
	names      map[string]bool
	vecs       []family
	collectors []Collector
}

// rawCollector is a Collector of this package that writes samples with
// suffixes (a summary's quantiles, _sum and _count).
type rawCollector interface {
	collectRaw(add func(d *Desc, suffix string, k key, extra string, v float64))
}

// family is a vector a Registry writes.
type family interface {
	desc() *Desc
	samples(add func(suffix string, k key, extra string, v float64))
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

func (r *Registry) claim(ds ...*Desc) {
	for _, d := range ds {
		if r.names[d.Name] {
			panic("prom: " + d.Name + " registered twice")
		}
		r.names[d.Name] = true
	}
}

// MustRegister adds collectors, panicking when one describes a family
// already registered.
func (r *Registry) MustRegister(cs ...Collector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		r.claim(c.Describe()...)
		r.collectors = append(r.collectors, c)
	}
}

// CounterVec is a counter family with variable labels. Safe for
// concurrent use.
type CounterVec struct {
	d  *Desc
	mu sync.RWMutex // guards m
	m  map[key]*atomic.Uint64
}

// NewCounterVec registers a counter family.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	v := &CounterVec{d: NewDesc(name, help, Counter, labels...), m: map[key]*atomic.Uint64{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claim(v.d)
	r.vecs = append(r.vecs, v)
	return v
}

// Inc adds one to the series with labelValues (in label order), creating
// it at 0 first.
func (v *CounterVec) Inc(labelValues ...string) {
	k := makeKey(v.d, labelValues)
	v.mu.RLock()
	c := v.m[k]
	v.mu.RUnlock()
	if c == nil {
		v.mu.Lock()
		if c = v.m[k]; c == nil {
			c = new(atomic.Uint64)
			v.m[k] = c
		}
		v.mu.Unlock()
	}
	c.Add(1)
}

func (v *CounterVec) desc() *Desc { return v.d }

func (v *CounterVec) samples(add func(string, key, string, float64)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for k, c := range v.m {
		add("", k, "", float64(c.Load()))
	}
}

// HistogramVec is a histogram family with variable labels and fixed
// buckets. Safe for concurrent use.
type HistogramVec struct {
	d       *Desc
	buckets []float64 // upper bounds, ascending, without +Inf
	mu      sync.RWMutex
	m       map[key]*histogram
}

type histogram struct {
	counts []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Uint64   // float64 bits
}

// NewHistogramVec registers a histogram family with the bucket upper
// bounds given (ascending; +Inf is implied).
func (r *Registry) NewHistogramVec(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if len(buckets) == 0 || !sort.Float64sAreSorted(buckets) || math.IsInf(buckets[len(buckets)-1], 1) {
		panic("prom: " + name + ": buckets must be ascending, without +Inf")
	}
	v := &HistogramVec{d: NewDesc(name, help, Histogram, labels...), buckets: buckets, m: map[key]*histogram{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claim(v.d)
	r.vecs = append(r.vecs, v)
	return v
}

// Observe records x in the series with labelValues (in label order).
func (v *HistogramVec) Observe(x float64, labelValues ...string) {
	k := makeKey(v.d, labelValues)
	v.mu.RLock()
	h := v.m[k]
	v.mu.RUnlock()
	if h == nil {
		v.mu.Lock()
		if h = v.m[k]; h == nil {
			h = &histogram{counts: make([]atomic.Uint64, len(v.buckets)+1)}
			v.m[k] = h
		}
		v.mu.Unlock()
	}
	h.counts[sort.SearchFloat64s(v.buckets, x)].Add(1) // first bound >= x: le is inclusive
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+x)) {
			return
		}
	}
}

func (v *HistogramVec) desc() *Desc { return v.d }

func (v *HistogramVec) samples(add func(string, key, string, float64)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for k, h := range v.m {
		// _count is the +Inf bucket, so the two always agree.
		var cum uint64
		for i := range h.counts {
			cum += h.counts[i].Load()
			le := "+Inf"
			if i < len(v.buckets) {
				le = formatFloat(v.buckets[i])
			}
			add("_bucket", k, `le="`+le+`"`, float64(cum))
		}
		add("_sum", k, "", math.Float64frombits(h.sum.Load()))
		add("_count", k, "", float64(cum))
	}
}

// sample is one line of the exposition.
type sample struct {
	suffix string // "", _bucket, _sum, _count
	k      key
	extra  string // le="..." or quantile="...", written last
	order  float64
	v      float64
}

// Gather writes the exposition of every family: sorted by name, each with
// HELP and TYPE, its series sorted by label values. Collectors that emit
// an undescribed family or the wrong label count panic (a programming
// error).
func (r *Registry) Gather(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fams := map[string]*Desc{}
	lines := map[string][]sample{}
	for _, v := range r.vecs {
		d := v.desc()
		fams[d.Name] = d
		lines[d.Name] = lines[d.Name][:0]
		v.samples(func(suffix string, k key, extra string, val float64) {
			lines[d.Name] = append(lines[d.Name], sample{suffix: suffix, k: k, extra: extra, v: val, order: float64(len(lines[d.Name]))})
		})
	}
	for _, c := range r.collectors {
		known := map[*Desc]bool{}
		for _, d := range c.Describe() {
			known[d] = true
			fams[d.Name] = d
			if _, ok := lines[d.Name]; !ok {
				lines[d.Name] = nil
			}
		}
		add := func(d *Desc, suffix string, k key, extra string, val float64) {
			if !known[d] {
				panic("prom: collector emitted undescribed " + d.Name)
			}
			lines[d.Name] = append(lines[d.Name], sample{suffix: suffix, k: k, extra: extra, v: val, order: float64(len(lines[d.Name]))})
		}
		if rc, ok := c.(rawCollector); ok {
			rc.collectRaw(add)
			continue
		}
		c.Collect(func(d *Desc, val float64, labelValues ...string) {
			if d.Type != Counter && d.Type != Gauge {
				panic("prom: " + d.Name + ": only counters and gauges can be emitted")
			}
			add(d, "", makeKey(d, labelValues), "", val)
		})
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriter(w)
	for _, n := range names {
		d, ls := fams[n], lines[n]
		if len(ls) == 0 {
			continue // a vector without series yet, like client_golang
		}
		// Series by label values; within one series, in the order written
		// (buckets ascending, then _sum, _count).
		sort.SliceStable(ls, func(i, j int) bool {
			if ls[i].k != ls[j].k {
				return slices.Compare(ls[i].k[:], ls[j].k[:]) < 0
			}
			return ls[i].order < ls[j].order
		})
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", n, escapeHelp(d.Help), n, d.Type)
		for _, s := range ls {
			writeSample(bw, d, s)
		}
	}
	return bw.Flush()
}

func writeSample(w *bufio.Writer, d *Desc, s sample) {
	w.WriteString(d.Name)
	w.WriteString(s.suffix)
	if len(d.Labels) > 0 || s.extra != "" {
		w.WriteByte('{')
		for i, l := range d.Labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l)
			w.WriteString(`="`)
			w.WriteString(escapeLabel(s.k[i]))
			w.WriteByte('"')
		}
		if s.extra != "" {
			if len(d.Labels) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(s.extra)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(s.v))
	w.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// formatFloat is the text format's number: shortest 'g', +Inf, -Inf, NaN.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// ContentType is the text format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Handler serves r's exposition on GET and HEAD, gzipped when the
// scraper accepts it (Prometheus does).
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		if !acceptsGzip(req.Header.Get("Accept-Encoding")) {
			r.Gather(w)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		gz := gzip.NewWriter(w)
		r.Gather(gz)
		gz.Close()
	})
}

// acceptsGzip reports whether an Accept-Encoding value allows gzip (and
// does not give it q=0).
func acceptsGzip(h string) bool {
	for part := range strings.SplitSeq(h, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		v, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
		if !ok {
			return true
		}
		q, err := strconv.ParseFloat(v, 64)
		return err == nil && q > 0
	}
	return false
}
