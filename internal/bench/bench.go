// Package bench measures apnsd's throughput: it drives concurrent,
// pipelining socket clients through an in-process daemon to an HTTP/2 sink
// and, in the same run, sends the same load straight to the same sink with
// an in-process apns.Client, so the two rates can be compared. The command
// is cmd/apnsbench; docs/performance.md has results.
package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/daemon"
	"github.com/apnsd/apnsd/internal/ipc"
)

// The app, topic and device token every benchmark notification uses.
const (
	App   = "bench"
	Topic = "com.example.bench"
	Token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// Payload is the notification payload sent on both paths.
var Payload = []byte(`{"aps":{"alert":"apnsbench"}}`)

// RequestTimeout bounds one notification on both paths.
const RequestTimeout = 30 * time.Second

// Options configures a benchmark environment.
type Options struct {
	// Sink is SinkStandin (default) or SinkNghttpd.
	Sink string
	// Nghttpd is the nghttpd binary (default "nghttpd" on $PATH).
	Nghttpd string
	// Conns is the number of HTTP/2 connections, for the daemon and the
	// direct client alike (default 1).
	Conns int
	// MaxStreams is the SETTINGS_MAX_CONCURRENT_STREAMS the sink advertises
	// (default 1000).
	MaxStreams int
	// Clients and Pipeline size the load: Clients socket connections, each
	// with up to Pipeline requests outstanding; the direct path runs
	// Clients*Pipeline concurrent senders (defaults 8 and 64).
	Clients, Pipeline int
	// Logger is the daemon's logger; nil means warnings and errors to
	// stderr (so per-request logging does not distort the numbers).
	Logger *slog.Logger
	// MaxPendingPerConn is the daemon's socket.max_pending_per_conn
	// (default max(1024, Pipeline)); MaxLineBytes its
	// socket.max_line_bytes (default: the daemon's, 131072).
	MaxPendingPerConn, MaxLineBytes int
	// Multicast, when > 1, makes the daemon path send multicast lines of
	// this many tokens (at most 1000) instead of one token a line; counts
	// and latencies are still per notification (a batch's latency is each
	// of its notifications'). Pipeline then counts lines.
	Multicast int
	// DirectApnsID gives every direct-path notification a fresh apns-id,
	// as the daemon's backend does (so retries carry the same id); off,
	// the direct path sends none and APNs (or the sink) picks one.
	DirectApnsID bool
}

func (o *Options) defaults() {
	if o.Sink == "" {
		o.Sink = SinkStandin
	}
	if o.Conns <= 0 {
		o.Conns = 1
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 1000
	}
	if o.Clients <= 0 {
		o.Clients = 8
	}
	if o.Pipeline <= 0 {
		o.Pipeline = 64
	}
}

// Env is a sink plus the means to load it through the daemon and directly.
// Make it with Setup; Close it.
type Env struct {
	o    Options
	dir  string
	m    *material
	sink *sink
	cfg  *config.Config
	d    *daemon.Daemon
	// notif is the notification the daemon builds from the request line,
	// so the direct path sends exactly the same request.
	notif  apns.Notification
	direct *apns.Client
	// done counts answers the daemon-path socket clients have read.
	done atomic.Int64
	// hostileSndBuf, when > 0, is the send buffer of hostile connections
	// (tests: a smaller tail to drain when they close).
	hostileSndBuf int
	// sock, when set, is the socket of a daemon in another process (the
	// load generator of Compare); otherwise the in-process daemon's.
	sock string
}

// socketPath is the socket the daemon-path clients dial.
func (e *Env) socketPath() string {
	if e.sock != "" {
		return e.sock
	}
	if e.d == nil {
		return ""
	}
	return e.d.SocketPath()
}

// Setup makes throwaway certificates and starts the sink. The daemon and
// the direct client are started by StartDaemon and StartDirect.
func Setup(o Options) (*Env, error) {
	o.defaults()
	if o.Sink != SinkStandin && o.Sink != SinkNghttpd {
		return nil, fmt.Errorf("sink %q: want %q or %q", o.Sink, SinkStandin, SinkNghttpd)
	}
	// Not t.TempDir: the socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "apnsbench-")
	if err != nil {
		return nil, err
	}
	e := &Env{o: o, dir: dir}
	if err := e.setup(); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Env) setup() error {
	var err error
	if e.m, err = newMaterial(e.dir, Payload); err != nil {
		return err
	}
	if e.o.Sink == SinkStandin {
		e.sink, err = startStandin(e.m, e.o.MaxStreams)
	} else {
		e.sink, _, err = startNghttpd(e.o.Nghttpd, e.m, e.o.MaxStreams, true)
	}
	if err != nil {
		return err
	}
	req, derr := ipc.DecodeRequest(requestLine(nil, 0))
	if derr != nil {
		return derr
	}
	send, derr := req.Send()
	if derr != nil {
		return derr
	}
	if e.notif, derr = daemon.NewNotification(send); derr != nil {
		return derr
	}
	e.notif.Topic = Topic // as the backend fills it in
	return nil
}

// SinkDescription says what the sink is and how it was started.
func (e *Env) SinkDescription() string { return e.sink.desc }

// SinkPID is the sink's process id (0 for the in-process stand-in).
func (e *Env) SinkPID() int { return e.sink.pid() }

// SinkAnswered is how many valid requests the in-process stand-in answered
// (-1 for nghttpd, which does not say).
func (e *Env) SinkAnswered() int64 {
	if e.sink.standin == nil {
		return -1
	}
	return e.sink.answered.Load()
}

// Done is how many answers the daemon path's socket clients have read so
// far (all runs, warm-up included).
func (e *Env) Done() int64 { return e.done.Load() }

// MaxPending is the daemon's max_pending_per_conn.
func (e *Env) MaxPending() int {
	if e.o.MaxPendingPerConn > 0 {
		return e.o.MaxPendingPerConn
	}
	return max(config.DefaultMaxPendingPerConn, e.o.Pipeline)
}

// SocketPath is the daemon's socket (once StartDaemon ran).
func (e *Env) SocketPath() string { return e.d.SocketPath() }

// daemonConfig is the apnsd.toml the benchmark runs the daemon with.
func (e *Env) daemonConfig() string {
	queue := max(config.DefaultQueueSize, 2*e.o.Clients*e.o.Pipeline*max(e.o.Multicast, 1))
	pending := e.MaxPending()
	lineCap := ""
	if e.o.MaxLineBytes > 0 {
		lineCap = fmt.Sprintf("max_line_bytes = %d\n", e.o.MaxLineBytes)
	}
	return fmt.Sprintf(`request_timeout = %q
shutdown_timeout = "5s"
queue_size = %d
log_level = "warn"
state_dir = %q

[socket]
path = %q
mode = "0600"
max_pending_per_conn = %d
%s
[[apps]]
name = %q
topic = %q
default_env = "sandbox"

  [apps.sandbox]
  cert_file = %q
  key_file = %q
  endpoint = %q
  ca_file = %q
  connections = %d
`, RequestTimeout.String(), queue, filepath.Join(e.dir, "state"), filepath.Join(e.dir, "apnsd.sock"), pending, lineCap,
		App, Topic, e.m.certFile, e.m.keyFile, e.sink.url, e.m.caFile, e.o.Conns)
}

// StartDaemon starts apnsd in this process, pointed at the sink, and waits
// until all its APNs connections are up.
func (e *Env) StartDaemon(ctx context.Context) error {
	path := filepath.Join(e.dir, "apnsd.toml")
	if err := os.WriteFile(path, []byte(e.daemonConfig()), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	log := e.o.Logger
	if log == nil {
		if log, err = daemon.NewLogger(os.Stderr, "text", "warn"); err != nil {
			return err
		}
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: log})
	if err != nil {
		return err
	}
	if err := d.Start(); err != nil {
		return err
	}
	e.cfg, e.d = cfg, d
	return waitFor(ctx, 10*time.Second, func() (bool, string) {
		env := d.Status().Apps[0].Envs[0]
		return env.Connections == env.Target, fmt.Sprintf("daemon: %d/%d connections up (last error: %s)", env.Connections, env.Target, env.LastConnErr)
	})
}

// StopDaemon shuts the daemon down.
func (e *Env) StopDaemon() {
	if e.d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.d.Shutdown(ctx)
	e.d = nil
}

// StartDirect starts the in-process apns.Client that sends straight to the
// sink, with the daemon's connection count, and waits for its connections.
func (e *Env) StartDirect(ctx context.Context) error {
	cert := e.m.pushTLS
	c, err := apns.NewClient(apns.ClientOptions{
		Endpoint:             e.sink.url,
		RootCAs:              e.m.roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		Connections:          e.o.Conns,
	})
	if err != nil {
		return err
	}
	c.Start()
	e.direct = c
	return waitFor(ctx, 10*time.Second, func() (bool, string) {
		s := c.Status()
		return s.Connections == s.Target, fmt.Sprintf("direct client: %d/%d connections up (last error: %s)", s.Connections, s.Target, s.LastError)
	})
}

// StopDirect closes the direct client.
func (e *Env) StopDirect() {
	if e.direct != nil {
		e.direct.Close()
		e.direct = nil
	}
}

// Close stops everything and removes the temporary files.
func (e *Env) Close() {
	e.StopDaemon()
	e.StopDirect()
	if e.sink != nil {
		e.sink.close()
	}
	os.RemoveAll(e.dir)
}

func waitFor(ctx context.Context, limit time.Duration, ok func() (bool, string)) error {
	deadline := time.Now().Add(limit)
	for {
		done, why := ok()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %s", limit, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// requestLine appends the request line for id (with its newline) to b.
// multicastLine is requestLine for a multicast of m tokens.
func multicastLine(b []byte, id, m int) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(id), 10)
	b = append(b, `,"tokens":[`...)
	for i := range m {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, Token...)
		b = append(b, '"')
	}
	b = append(b, `],"payload":`...)
	b = append(b, Payload...)
	b = append(b, "}\n"...)
	return b
}

// classifyMulticast tallies a multicast answer's entries: delivered ones
// as "200", the rest as errors (an entry's status or error code).
func classifyMulticast(t *tally, line []byte, m int, lat time.Duration) {
	ok := bytes.Count(line, []byte(`"ok":true,"status":200`))
	for range ok {
		t.add("200", false, lat)
	}
	for range m - ok {
		t.add("error:multicast-entry", true, lat)
	}
}

func requestLine(b []byte, id int) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(id), 10)
	b = append(b, `,"token":"`...)
	b = append(b, Token...)
	b = append(b, `","payload":`...)
	b = append(b, Payload...)
	b = append(b, "}\n"...)
	return b
}

// Result is one path's measurement.
type Result struct {
	Path string
	// Sent is how many notifications were issued, Answered how many got a
	// terminal answer (an APNs status or an apnsd error).
	Sent, Answered int
	Elapsed        time.Duration
	// Answers counts answers by kind: "200", "404"… for sink statuses,
	// "error:<code>" for apnsd refusals or client errors.
	Answers map[string]int
	// Errors is the number of answers that are not a sink status.
	Errors int
	// Latency percentiles, from issuing a request to reading its answer.
	P50, P90, P99, Max time.Duration
	// CPU is the user+system CPU time of this whole process during the
	// phase.
	CPU time.Duration
	// Mem are the process memory and goroutine figures of the phase.
	Mem MemStats
}

// Rate is notifications answered per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Answered) / r.Elapsed.Seconds()
}

// tally is one client's (or sender's) count of answers by kind; the
// latencies go to the phase's shared histogram.
type tally struct {
	lat     *hist
	answers map[string]int
	errs    int
}

func newTally(h *hist) *tally {
	return &tally{lat: h, answers: map[string]int{}}
}

func (t *tally) add(kind string, isErr bool, d time.Duration) {
	t.lat.add(d)
	t.answers[kind]++
	if isErr {
		t.errs++
	}
}

func finish(path string, sent int, elapsed time.Duration, ts []*tally, lat *hist) Result {
	r := Result{Path: path, Sent: sent, Elapsed: elapsed, Answers: map[string]int{}}
	for _, t := range ts {
		for k, v := range t.answers {
			r.Answers[k] += v
		}
		r.Errors += t.errs
	}
	r.Answered = lat.count()
	r.P50, r.P90, r.P99, r.Max = lat.percentile(0.50), lat.percentile(0.90), lat.percentile(0.99), time.Duration(lat.max.Load())
	return r
}

// share splits n into k near-equal parts.
func share(n, k, i int) int {
	s := n / k
	if i < n%k {
		s++
	}
	return s
}

// RunDaemon sends n notifications (or, if d > 0, as many as fit in d)
// through the daemon's socket: Clients connections, each with a writer
// and a reader goroutine and at most Pipeline requests outstanding.
func (e *Env) RunDaemon(ctx context.Context, n int, d time.Duration) (Result, error) {
	if e.socketPath() == "" {
		return Result{}, errors.New("daemon not started")
	}
	clients, pipeline := e.o.Clients, e.o.Pipeline
	var deadline time.Time
	if d > 0 {
		n = -1
	}
	ts := make([]*tally, clients)
	lat := new(hist)
	errs := make([]error, clients)
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	if d > 0 {
		deadline = start.Add(d)
	}
	per := max(e.o.Multicast, 1)
	for i := range clients {
		count := -1
		if n >= 0 {
			count = (share(n, clients, i) + per - 1) / per // lines
		}
		ts[i] = newTally(lat)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := e.runConn(ctx, count, pipeline, deadline, ts[i])
			sent.Add(int64(s))
			errs[i] = err
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := finish("daemon", int(sent.Load())*per, elapsed, ts, lat)
	return r, errors.Join(errs...)
}

// line appends the daemon path's request line id: one token, or a
// multicast of Options.Multicast tokens.
func (e *Env) line(b []byte, id int) []byte {
	if e.o.Multicast > 1 {
		return multicastLine(b, id, e.o.Multicast)
	}
	return requestLine(b, id)
}

// runConn is one socket client. count < 0 means until deadline (count is in
// lines: one notification each, or Options.Multicast).
func (e *Env) runConn(ctx context.Context, count, pipeline int, deadline time.Time, t *tally) (sent int, err error) {
	var nc net.Conn
	sock := e.socketPath()
	cl := ipc.Client{Socket: sock, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", sock)
		nc = c
		return c, err
	}}
	conn, err := cl.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	sem := make(chan struct{}, pipeline)
	times := make(chan time.Time, pipeline)
	writeErr := make(chan error, 1)
	var written atomic.Int64
	writerDone := make(chan struct{})
	quit := make(chan struct{}) // the reader gave up
	fail := func(err error) (int, error) {
		close(quit)
		conn.Close()
		<-writerDone
		return int(written.Load()), err
	}
	go func() {
		defer close(writerDone)
		buf := make([]byte, 0, 32<<10)
		id := 0
		more := func() bool {
			return (count < 0 || id < count) && (deadline.IsZero() || time.Now().Before(deadline))
		}
		for more() {
			select {
			case sem <- struct{}{}:
			case <-quit:
				close(times)
				return
			}
			now := time.Now()
			times <- now
			buf = e.line(buf[:0], id)
			id++
			// Batch whatever else the window allows into one write.
		fill:
			for (count < 0 || id < count) && len(buf) < 16<<10 {
				select {
				case sem <- struct{}{}:
					times <- now
					buf = e.line(buf, id)
					id++
				default:
					break fill
				}
			}
			if _, err := nc.Write(buf); err != nil {
				writeErr <- err
				written.Store(int64(id))
				close(times)
				return
			}
			written.Store(int64(id))
		}
		close(times)
		// No half-close: the daemon answers everything on a live
		// connection; the reader stops after the last answer.
	}()

	got := 0
	for {
		t0, ok := <-times
		if !ok {
			break
		}
		line, err := conn.ReadLine()
		if err != nil {
			return fail(fmt.Errorf("reading answer %d: %w", got, err))
		}
		lat := time.Since(t0)
		<-sem
		if !bytes.HasPrefix(line, []byte(`{"id":`+strconv.Itoa(got)+`,`)) {
			return fail(fmt.Errorf("answer %d out of order or without its id: %s", got, line))
		}
		if m := e.o.Multicast; m > 1 {
			classifyMulticast(t, line, m, lat)
			e.done.Add(int64(m))
		} else {
			kind, isErr := classify(line)
			t.add(kind, isErr, lat)
			e.done.Add(1)
		}
		got++
	}
	<-writerDone
	select {
	case err := <-writeErr:
		return int(written.Load()), err
	default:
	}
	return got, nil
}

// classify reads an answer line cheaply: "error:<code>" for an apnsd
// error, else the sink's status.
func classify(line []byte) (kind string, isErr bool) {
	if i := bytes.Index(line, []byte(`"error":"`)); i >= 0 {
		rest := line[i+len(`"error":"`):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			return "error:" + string(rest[:j]), true
		}
		return "error:?", true
	}
	if i := bytes.Index(line, []byte(`"status":`)); i >= 0 {
		rest := line[i+len(`"status":`):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		return string(rest[:j]), false
	}
	return "error:unparsed", true
}

// RunDirect sends n notifications (or as many as fit in d) straight to the
// sink with the in-process apns.Client, from Clients*Pipeline goroutines.
func (e *Env) RunDirect(ctx context.Context, n int, d time.Duration) (Result, error) {
	return e.runDirect(ctx, n, d, e.o.Clients*e.o.Pipeline)
}

// runDirect is RunDirect with workers concurrent senders.
func (e *Env) runDirect(ctx context.Context, n int, d time.Duration, workers int) (Result, error) {
	if e.direct == nil {
		return Result{}, errors.New("direct client not started")
	}
	if n >= 0 && d <= 0 {
		workers = max(1, min(workers, n))
	}
	var next atomic.Int64
	ts := make([]*tally, workers)
	lat := new(hist)
	var wg sync.WaitGroup
	start := time.Now()
	var deadline time.Time
	if d > 0 {
		deadline = start.Add(d)
	}
	for w := range workers {
		ts[w] = newTally(lat)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := ts[w]
			for {
				if d > 0 {
					if time.Now().After(deadline) {
						return
					}
				} else if next.Add(1) > int64(n) {
					return
				}
				if ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
				n := &e.notif
				if e.o.DirectApnsID {
					c := e.notif
					c.ApnsID = apns.NewUUID()
					n = &c
				}
				res, err := e.direct.Send(rctx, n)
				cancel()
				lat := time.Since(t0)
				if err != nil {
					t.add("error:"+directErrKind(err), true, lat)
					continue
				}
				t.add(strconv.Itoa(res.StatusCode), false, lat)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := finish("direct", 0, elapsed, ts, lat)
	r.Sent = r.Answered
	return r, ctx.Err()
}

func directErrKind(err error) string {
	var ce *apns.ConnError
	switch {
	case errors.Is(err, apns.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ce):
		return "conn"
	case errors.Is(err, apns.ErrClosed):
		return "closed"
	}
	return "other"
}

// MemStats are process-wide memory and goroutine figures.
type MemStats struct {
	// RSS and HWM (peak RSS) from /proc/self/status, bytes; HWM is reset
	// at the start of each phase where the kernel allows it.
	RSSBefore, RSSAfter, HWM int64
	// HWMReset says whether the peak was reset for this phase (else HWM is
	// the peak since process start).
	HWMReset bool
	// Goroutines before, peak during (sampled every 10ms) and after.
	GoBefore, GoPeak, GoAfter int
	// SinkRSS is the external sink's peak RSS (VmHWM), bytes, if known.
	SinkHWM int64
}

// procStatus reads VmRSS and VmHWM (bytes) of pid (0 = self).
func procStatus(pid int) (rss, hwm int64) {
	p := "/proc/self/status"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, 0
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		var dst *int64
		switch {
		case bytes.HasPrefix(l, []byte("VmRSS:")):
			dst = &rss
		case bytes.HasPrefix(l, []byte("VmHWM:")):
			dst = &hwm
		default:
			continue
		}
		f := bytes.Fields(l)
		if len(f) >= 2 {
			kb, _ := strconv.ParseInt(string(f[1]), 10, 64)
			*dst = kb << 10
		}
	}
	return rss, hwm
}

// resetHWM asks the kernel to reset the peak RSS of pid (0 = self).
func resetHWM(pid int) bool {
	p := "/proc/self/clear_refs"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/clear_refs", pid)
	}
	return os.WriteFile(p, []byte("5"), 0) == nil
}

// measure runs f while recording CPU, memory and goroutines.
func measure(sinkPID int, f func() (Result, error)) (Result, error) {
	runtime.GC()
	var m MemStats
	m.HWMReset = resetHWM(0)
	if sinkPID > 0 {
		resetHWM(sinkPID)
	}
	m.RSSBefore, _ = procStatus(0)
	m.GoBefore = runtime.NumGoroutine()
	stop := make(chan struct{})
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if g := int64(runtime.NumGoroutine()); g > peak.Load() {
				peak.Store(g)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	cpu0 := cpuTime()
	r, err := f()
	r.CPU = cpuTime() - cpu0
	close(stop)
	<-sampled
	m.GoPeak = int(peak.Load()) - 1 // not the sampler itself
	m.RSSAfter, m.HWM = procStatus(0)
	m.GoAfter = runtime.NumGoroutine()
	if sinkPID > 0 {
		_, m.SinkHWM = procStatus(sinkPID)
	}
	r.Mem = m
	return r, err
}

// Report is the outcome of Run.
type Report struct {
	Opts           RunOptions
	Sink           string
	Daemon, Direct Result
	// Baseline is this process's RSS before the daemon started, bytes.
	Baseline int64
	// SinkAnswered: valid requests the stand-in answered (-1: unknown).
	SinkAnswered int64
	// H2load is the h2load ceiling, when asked for.
	H2load *H2loadResult
	// Series is the memory time series of the daemon phase (RSSEvery),
	// Flat its summary.
	Series []Sample
	Flat   Flatness
	// Hostile summarises the hostile connections of the daemon phase.
	Hostile []HostileStats
	// DirectSkipped: phase B was not run (SkipDirect).
	DirectSkipped bool
}

// Ratio is the daemon's rate over the direct rate.
func (r *Report) Ratio() float64 {
	if r.Direct.Rate() == 0 {
		return 0
	}
	return r.Daemon.Rate() / r.Direct.Rate()
}

// RunOptions are Options plus the size of the run.
type RunOptions struct {
	Options
	// N notifications per phase (default 50000), unless Duration is set.
	N int
	// Duration, when > 0, runs each phase for this long instead.
	Duration time.Duration
	// Warmup notifications per phase before measuring (default
	// 2*Clients*Pipeline): fills every connection's stream window.
	Warmup int
	// H2load, when set, also runs h2load (this binary) against a separate
	// nghttpd without client-certificate checking, with the same
	// connections and concurrency, for the machine's ceiling.
	H2load string
	// CPUProfile, when set, is a file to write a CPU profile of the daemon
	// phase to (daemon and socket clients, plus an in-process sink).
	CPUProfile string
	// RSSEvery, when > 0, samples VmRSS, the live Go heap, goroutines and
	// notifications done this often during the daemon phase (Report.Series
	// and Report.Flat).
	RSSEvery time.Duration
	// Hostile and LongLine add that many NeverRead and LongLine
	// connections to the daemon phase, alongside the measured clients.
	Hostile, LongLine int
	// SkipDirect skips phase B (e.g. for a daemon-only soak).
	SkipDirect bool
	// Out receives progress lines; nil discards.
	Out io.Writer
}

// Run performs a whole benchmark: sink, daemon phase, direct phase and
// optionally h2load.
func Run(ctx context.Context, o RunOptions) (*Report, error) {
	o.defaults()
	if o.N <= 0 {
		o.N = 50000
	}
	if o.Warmup <= 0 {
		o.Warmup = 2 * o.Clients * o.Pipeline
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	rep := &Report{Opts: o}
	runtime.GC()
	rep.Baseline, _ = procStatus(0)
	e, err := Setup(o.Options)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	rep.Sink = e.SinkDescription()
	fmt.Fprintf(out, "sink: %s\n", rep.Sink)

	n, d := o.N, o.Duration
	// Phase A: through the daemon.
	if err := e.StartDaemon(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "daemon: socket %s, %d connection(s) to the sink up; warming up (%d)\n", e.SocketPath(), o.Conns, o.Warmup)
	if w, err := e.RunDaemon(ctx, o.Warmup, 0); err != nil {
		return nil, fmt.Errorf("daemon warm-up: %w", err)
	} else if w.Errors > 0 {
		return nil, fmt.Errorf("daemon warm-up: %d errors: %v", w.Errors, w.Answers)
	}
	var hostile *Hostile
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	if o.Hostile > 0 || o.LongLine > 0 {
		fmt.Fprintf(out, "hostile: %d never-reading and %d over-long-line connection(s) (max_pending_per_conn %d)\n", o.Hostile, o.LongLine, e.MaxPending())
		if hostile, err = e.StartHostile(hctx, o.Hostile, o.LongLine); err != nil {
			hcancel()
			hostile.Wait()
			return nil, fmt.Errorf("hostile clients: %w", err)
		}
	}
	fmt.Fprintf(out, "phase A: %s through the daemon (%d clients x %d pipelined)\n", sizeText(n, d), o.Clients, o.Pipeline)
	var sp *sampler
	if o.RSSEvery > 0 {
		done0 := e.Done()
		sp = startSampler(o.RSSEvery, e.SinkPID(), func() int64 { return e.Done() - done0 }, out)
	}
	rep.Daemon, err = measure(e.SinkPID(), func() (Result, error) {
		if o.CPUProfile != "" {
			f, err := os.Create(o.CPUProfile)
			if err != nil {
				return Result{}, err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return Result{}, err
			}
			defer pprof.StopCPUProfile()
		}
		return e.RunDaemon(ctx, n, d)
	})
	if sp != nil {
		rep.Series = sp.stop()
		rep.Flat = FlatnessOf(rep.Series)
	}
	if hostile != nil {
		hcancel()
		rep.Hostile = hostile.Wait()
	}
	if err != nil {
		return rep, fmt.Errorf("daemon phase: %w", err)
	}
	e.StopDaemon()
	if o.SkipDirect {
		rep.DirectSkipped = true
	} else if err := runDirectPhase(ctx, o, e, rep, out); err != nil {
		return rep, err
	}
	rep.SinkAnswered = e.SinkAnswered()

	if o.H2load != "" {
		fmt.Fprintf(out, "h2load: ceiling against a separate nghttpd\n")
		h, err := runH2load(ctx, o, e.m)
		if err != nil {
			return rep, fmt.Errorf("h2load: %w", err)
		}
		rep.H2load = h
	}
	return rep, nil
}

// runDirectPhase is phase B: the same load straight to the sink.
func runDirectPhase(ctx context.Context, o RunOptions, e *Env, rep *Report, out io.Writer) error {
	n, d := o.N, o.Duration
	if err := e.StartDirect(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "direct: %d connection(s) up; warming up (%d)\n", o.Conns, o.Warmup)
	if w, err := e.RunDirect(ctx, o.Warmup, 0); err != nil {
		return fmt.Errorf("direct warm-up: %w", err)
	} else if w.Errors > 0 {
		return fmt.Errorf("direct warm-up: %d errors: %v", w.Errors, w.Answers)
	}
	fmt.Fprintf(out, "phase B: %s straight to the sink (%d concurrent senders)\n", sizeText(n, d), o.Clients*o.Pipeline)
	var err error
	rep.Direct, err = measure(e.SinkPID(), func() (Result, error) { return e.RunDirect(ctx, n, d) })
	if err != nil {
		return fmt.Errorf("direct phase: %w", err)
	}
	e.StopDirect()
	return nil
}

func sizeText(n int, d time.Duration) string {
	if d > 0 {
		return "for " + d.String()
	}
	return strconv.Itoa(n) + " notifications"
}
