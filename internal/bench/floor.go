package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/apnsd/apnsd/internal/apns"
)

// Floor measures what the unavoidable parts of apnsd's work cost on this
// machine, under the same load generator and sink as Compare's apnsd row:
// a minimal socket server that answers each request line without doing
// anything else (the socket floor), and a minimal HTTP/2 client on x/net's
// Framer and hpack that sends apnsd's request to the same nghttpd (the
// HTTP/2 floor). Their sum is the least CPU per notification a daemon
// built this way can spend, to hold against issue 10's 5 µs target.

// FloorServerEnv is the environment variable that turns a process running
// the benchmark's code (cmd/apnsbench, or a test binary) into the socket
// floor's server: its value is a JSON floorServerSpec. See FloorServerMain.
const FloorServerEnv = "APNSBENCH_FLOORSERVER"

// floorServerSpec is what a socket-floor server process is told: the Unix
// socket to listen on, and whether each connection gets a reader and a
// writer goroutine (Split) or one goroutine doing both.
type floorServerSpec struct {
	Socket string
	Split  bool
}

// floorApnsID is the apns_id every socket-floor answer carries: the shape
// of apnsd's answer (a UUID, 36 characters) without making one.
const floorApnsID = "00000000-0000-4000-8000-000000000000"

// FloorServerMain runs a socket-floor server as told by
// $APNSBENCH_FLOORSERVER and returns the process's exit code. It listens,
// prints "ready", and serves until its stdin ends (the parent closes it),
// then exits 0. Errors go to stderr with a non-zero exit.
func FloorServerMain() int {
	var spec floorServerSpec
	if err := json.Unmarshal([]byte(os.Getenv(FloorServerEnv)), &spec); err != nil || spec.Socket == "" {
		fmt.Fprintf(os.Stderr, "floor server: bad %s (%v): want {\"Socket\":path,\"Split\":bool}\n", FloorServerEnv, err)
		return 2
	}
	l, err := net.Listen("unix", spec.Socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor server: %v\n", err)
		return 1
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if spec.Split {
				go serveFloorSplit(c)
			} else {
				go serveFloorOne(c)
			}
		}
	}()
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	l.Close()
	return 0
}

// floorID returns the value of line's "id" member as its raw bytes (up to
// the next ',' or '}'), found by a byte scan, or nil if there is none. It
// is only meant for the benchmark's own request lines.
func floorID(line []byte) []byte {
	i := bytes.Index(line, []byte(`"id":`))
	if i < 0 {
		return nil
	}
	rest := line[i+len(`"id":`):]
	j := bytes.IndexAny(rest, ",}")
	if j < 0 {
		return nil
	}
	return bytes.TrimSpace(rest[:j])
}

// appendFloorAnswer appends the fixed-shape answer to a request whose id
// is id (nil: no id member), with its newline.
func appendFloorAnswer(b, id []byte) []byte {
	b = append(b, '{')
	if id != nil {
		b = append(b, `"id":`...)
		b = append(b, id...)
		b = append(b, ',')
	}
	return append(b, `"ok":true,"status":200,"apns_id":"`+floorApnsID+`"}`+"\n"...)
}

// moreLines reports whether br holds a complete line already: if not, the
// next read may block, so answers must be written first.
func moreLines(br *bufio.Reader) bool {
	n := br.Buffered()
	if n == 0 {
		return false
	}
	p, _ := br.Peek(n)
	return bytes.IndexByte(p, '\n') >= 0
}

const (
	floorReadBuf  = 64 << 10 // a request line longer than this ends the connection
	floorFlushAt  = 32 << 10 // answers buffered beyond this are written at once
	floorMaxIDLen = 32       // split variant: a longer id is answered without it
)

// serveFloorOne is the socket floor's variant (a): one goroutine per
// connection reads lines and answers each, writing the answers of a read
// batch in one write once no complete line is buffered.
func serveFloorOne(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, floorReadBuf)
	out := make([]byte, 0, floorFlushAt+512)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return // EOF, or a line over floorReadBuf: the floor serves only the benchmark's lines
		}
		out = appendFloorAnswer(out, floorID(line))
		if len(out) >= floorFlushAt || !moreLines(br) {
			if _, err := c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
	}
}

// floorItem is one request handed from the split variant's reader to its
// writer: the request's id (by value, so the hand-off allocates nothing),
// and whether the writer should write after it (end of a read batch).
type floorItem struct {
	id    [floorMaxIDLen]byte
	n     int8 // len of id; -1: no id
	flush bool
}

// serveFloorSplit is the socket floor's variant (b), shaped like apnsd's
// ipc server: a reader goroutine decodes lines and hands each request to a
// writer goroutine over a channel; the writer encodes the answers and
// writes them in one write per read batch. The reader closes the channel
// when the client goes; the writer then finishes and closes the
// connection.
func serveFloorSplit(c net.Conn) {
	ch := make(chan floorItem, 256)
	go func() {
		defer c.Close()
		out := make([]byte, 0, floorFlushAt+512)
		var werr error
		for it := range ch {
			if werr != nil {
				continue // drain: the client is gone
			}
			var id []byte
			if it.n >= 0 {
				id = it.id[:it.n]
			}
			out = appendFloorAnswer(out, id)
			if it.flush || len(out) >= floorFlushAt {
				_, werr = c.Write(out)
				out = out[:0]
			}
		}
	}()
	defer close(ch)
	br := bufio.NewReaderSize(c, floorReadBuf)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		var it floorItem
		it.n = -1
		if id := floorID(line); id != nil && len(id) <= floorMaxIDLen {
			it.n = int8(copy(it.id[:], id))
		}
		it.flush = !moreLines(br)
		ch <- it
	}
}

// FloorOptions configures Floor.
type FloorOptions struct {
	// Nghttpd is the Debian binary (nghttp2-server) the HTTP/2 floor
	// sends to, started as Compare starts it.
	Nghttpd string
	// Exe is the program to run as the socket-floor server and the load
	// generator (it must call FloorServerMain and LoadgenMain when their
	// variables are set); "" means this executable.
	Exe string
	// Apnsd, when set, is an apnsd binary to measure in the same run, with
	// the same load generator and sink, for reference.
	Apnsd string
	// Clients socket connections x Pipeline requests outstanding each
	// (defaults 4 x 64, as Compare).
	Clients, Pipeline int
	// InFlight is the HTTP/2 floor's requests outstanding on its one
	// connection (default Clients*Pipeline).
	InFlight int
	// MaxStreams is the sink's SETTINGS_MAX_CONCURRENT_STREAMS (1000).
	MaxStreams int
	// N measured notifications per row (default 1000000: CPU is read in
	// 10 ms ticks from /proc, i.e. 0.01 µs per notification at that N);
	// Warmup the unmeasured ones before each (default 2*Clients*Pipeline).
	N, Warmup int
	// LatencyN is how many notifications the socket floor (a) answers at
	// one request in flight, for the round trip a socket hop costs at the
	// least (negative skips; default 3000).
	LatencyN int
	// Out receives progress lines; nil discards.
	Out io.Writer
}

func (o *FloorOptions) defaults() {
	if o.Clients <= 0 {
		o.Clients = 4
	}
	if o.Pipeline <= 0 {
		o.Pipeline = 64
	}
	if o.InFlight <= 0 {
		o.InFlight = o.Clients * o.Pipeline
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 1000
	}
	if o.N <= 0 {
		o.N = 1000000
	}
	if o.Warmup <= 0 {
		o.Warmup = 2 * o.Clients * o.Pipeline
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.LatencyN == 0 {
		o.LatencyN = 3000
	}
}

// Names of Floor's rows.
const (
	FloorSocketOne   = "socket floor (a): 1 goroutine/conn"
	FloorSocketSplit = "socket floor (b): reader+writer/conn"
	FloorH2Naive     = "HTTP/2 floor, hpack naive"
	FloorH2Tuned     = "HTTP/2 floor, constants pre-encoded"
	FloorApnsd       = "apnsd binary via socket (reference)"
)

// FloorReport is the outcome of Floor.
type FloorReport struct {
	Opts FloorOptions
	Sink string
	// NProc is the number of CPUs this process may use; LoadStart and
	// LoadEnd are /proc/loadavg's first three fields before and after.
	NProc              int
	LoadStart, LoadEnd string
	Rows               []PathResult
	// Lat is the socket floor (a) at one request in flight (zero if
	// skipped): the round trip between two processes over the socket.
	Lat Result
}

// Row returns the row called name, or nil.
func (r *FloorReport) Row(name string) *PathResult {
	for i := range r.Rows {
		if r.Rows[i].Name == name {
			return &r.Rows[i]
		}
	}
	return nil
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// Floor runs the floor measurement: both socket-floor variants driven by
// the load-generator process (the server process's CPU counted), both
// HTTP/2-floor variants in this process (its whole CPU counted), and the
// apnsd binary for reference when Apnsd is set. Numbers are measured and
// printed, never judged against a time.
func Floor(ctx context.Context, o FloorOptions) (*FloorReport, error) {
	o.defaults()
	out := o.Out
	rep := &FloorReport{Opts: o, NProc: runtime.NumCPU(), LoadStart: loadAvg()}
	defer func() { rep.LoadEnd = loadAvg() }()
	fmt.Fprintf(out, "machine: %d CPUs, load average %s\n", rep.NProc, rep.LoadStart)
	e, err := Setup(Options{Sink: SinkNghttpd, Nghttpd: o.Nghttpd, Conns: 1, MaxStreams: o.MaxStreams,
		Clients: o.Clients, Pipeline: o.Pipeline})
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
	for _, split := range []bool{false, true} {
		row, err := e.runFloorSocket(ctx, exe, split, o, rep)
		if err != nil {
			return rep, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	for _, tuned := range []bool{false, true} {
		row, err := e.runFloorH2(ctx, tuned, o)
		if err != nil {
			return rep, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	if o.Apnsd != "" {
		row, err := e.runFloorApnsd(ctx, exe, o)
		if err != nil {
			return rep, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	rep.LoadEnd = loadAvg()
	return rep, nil
}

// runFloorSocket starts a socket-floor server process and drives it with
// the load generator, as Compare drives apnsd.
func (e *Env) runFloorSocket(ctx context.Context, exe string, split bool, o FloorOptions, rep *FloorReport) (PathResult, error) {
	name, sock := FloorSocketOne, filepath.Join(e.dir, "floor-a.sock")
	if split {
		name, sock = FloorSocketSplit, filepath.Join(e.dir, "floor-b.sock")
	}
	js, _ := json.Marshal(floorServerSpec{Socket: sock, Split: split})
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), FloorServerEnv+"="+string(js))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return PathResult{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return PathResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return PathResult{}, fmt.Errorf("starting the socket-floor server: %w", err)
	}
	defer func() {
		stdin.Close() // the server exits when its stdin ends
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return PathResult{}, fmt.Errorf("socket-floor server did not get ready (%q, %w): %s", line, err, stderr.String())
	}
	pid := cmd.Process.Pid
	fmt.Fprintf(floorOut(o), "%s (pid %d): %d notifications from a load-generator process (%d clients x %d pipelined)\n", name, pid, o.N, o.Clients, o.Pipeline)
	run, err := runLoadgen(ctx, exe, LoadgenSpec{Socket: sock, Clients: o.Clients, Pipeline: o.Pipeline, N: o.N, Warm: o.Warmup}, pid, 0, nil)
	if err != nil {
		return PathResult{}, fmt.Errorf("%s: %w (server: %s)", name, err, stderr.String())
	}
	row := daemonRow(name, run)
	row.CPUOf = "server process"
	if !split && o.LatencyN > 0 {
		fmt.Fprintf(floorOut(o), "%s: one request in flight, %d notifications\n", name, o.LatencyN)
		lat, err := runLoadgen(ctx, exe, LoadgenSpec{Socket: sock, Clients: 1, Pipeline: 1, N: o.LatencyN, Warm: 200}, pid, 0, nil)
		if err != nil {
			return PathResult{}, fmt.Errorf("%s, one in flight: %w (server: %s)", name, err, stderr.String())
		}
		rep.Lat = lat.Result
	}
	return row, nil
}

func floorOut(o FloorOptions) io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

// runFloorApnsd runs the apnsd binary with the benchmark's config against
// the same sink and drives it with the same load generator.
func (e *Env) runFloorApnsd(ctx context.Context, exe string, o FloorOptions) (PathResult, error) {
	cfgPath := filepath.Join(e.dir, "apnsd.toml")
	if err := os.WriteFile(cfgPath, []byte(e.daemonConfig()), 0o600); err != nil {
		return PathResult{}, err
	}
	var log lockedBuffer
	cmd := exec.Command(o.Apnsd, "-config", cfgPath, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return PathResult{}, fmt.Errorf("starting apnsd: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	sock := filepath.Join(e.dir, "apnsd.sock")
	if err := waitFor(ctx, 10*time.Second, func() (bool, string) {
		select {
		case <-exited:
			return false, fmt.Sprintf("apnsd exited: %v: %s", waitErr, log.String())
		default:
		}
		_, err := os.Stat(sock)
		return err == nil, "no socket yet: " + log.String()
	}); err != nil {
		return PathResult{}, err
	}
	pid := cmd.Process.Pid
	fmt.Fprintf(floorOut(o), "%s (pid %d): %d notifications from a load-generator process (%d clients x %d pipelined)\n", FloorApnsd, pid, o.N, o.Clients, o.Pipeline)
	run, err := runLoadgen(ctx, exe, LoadgenSpec{Socket: sock, Clients: o.Clients, Pipeline: o.Pipeline, N: o.N, Warm: o.Warmup}, pid, 0, nil)
	if err != nil {
		return PathResult{}, fmt.Errorf("apnsd run: %w (apnsd log: %s)", err, log.String())
	}
	return daemonRow(FloorApnsd, run), nil
}

// runFloorH2 measures the HTTP/2 floor in this process: warm-up, then N
// requests at InFlight outstanding on one connection.
func (e *Env) runFloorH2(ctx context.Context, tuned bool, o FloorOptions) (PathResult, error) {
	name := FloorH2Naive
	if tuned {
		name = FloorH2Tuned
	}
	c, err := dialH2Floor(ctx, e.sink.port, e.m, tuned)
	if err != nil {
		return PathResult{}, fmt.Errorf("%s: %w", name, err)
	}
	defer c.close()
	if w, err := c.run(ctx, o.Warmup, o.InFlight); err != nil || w.Errors > 0 {
		return PathResult{}, fmt.Errorf("%s: warm-up: %w (answers %v)", name, err, w.Answers)
	}
	fmt.Fprintf(floorOut(o), "%s: %d requests, %d in flight on 1 connection, in this process\n", name, o.N, o.InFlight)
	r, err := measure(e.SinkPID(), func() (Result, error) { return c.run(ctx, o.N, o.InFlight) })
	if err != nil {
		return PathResult{}, fmt.Errorf("%s: %w", name, err)
	}
	return PathResult{Name: name, Result: r, CPUOf: "whole process", PeakRSS: r.Mem.HWM}, nil
}

// h2Floor is the HTTP/2 floor's client: one TLS connection, one writer and
// one reader goroutine around an x/net/http2 Framer, a table of open
// streams by id, no goroutine per request. It sends apnsd's request
// (POST /3/device/<token>, apns-topic, apns-push-type, apns-priority, a
// fresh apns-id, content-type, content-length, the benchmark payload).
// With tuned, the constant fields go out as pre-encoded indexed references
// and the per-request ones (path, apns-id, content-length) as never-indexed
// literals appended by hand; otherwise every field goes through
// hpack.Encoder.WriteField with default indexing (so each apns-id enters
// and churns the dynamic table).
//
// Only the benchmark's load is supported: bodies must fit the peer's
// stream window and frame size, and the server must allow InFlight
// streams; a GOAWAY, RST_STREAM or connection error fails the run.
type h2Floor struct {
	nc    *tls.Conn
	fr    *http2.Framer // reads from nc; writes go to wbuf (writer goroutine only)
	wbuf  bytes.Buffer
	tuned bool

	// Writer goroutine only:
	enc       *hpack.Encoder
	hbuf      bytes.Buffer
	first     [2][]byte // tuned: the constant pseudo and regular fields, literal with indexing (first request)
	steady    [2][]byte // tuned: the same as indexed references (every later one)
	sentFirst bool
	nextID    uint32
	authority string
	path      string
	body      []byte
	clen      string

	// Reader goroutine only:
	dec    *hpack.Decoder
	status int    // :status of the header block being decoded
	hdrID  uint32 // the stream that header block belongs to

	wake chan struct{} // cap 1: something for the writer to do
	dead chan struct{} // closed when the connection has failed (err set)

	// mu guards the fields that follow.
	mu       sync.Mutex
	err      error
	ready    int                     // requests to start
	left     int                     // requests of the run not yet made ready
	want     int                     // answers the run waits for
	got      int                     // answers so far in the run
	finished chan struct{}           // closed when got == want
	open     map[uint32]*floorStream // by stream id
	sendWin  int64                   // connection send window
	peerWin  int64                   // peer's initial stream window
	peerMax  uint32                  // peer's max concurrent streams (0: unlimited)
	ctrl     []func(*http2.Framer)   // control frames for the writer (acks, window updates)
	tally    *tally
}

type floorStream struct {
	t0     time.Time
	status int
}

// dialH2Floor connects to the sink on loopback port with the run's
// certificates, ALPN h2 required, and starts the writer and reader.
func dialH2Floor(ctx context.Context, port int, m *material, tuned bool) (*h2Floor, error) {
	d := tls.Dialer{Config: &tls.Config{
		RootCAs:      m.roots,
		Certificates: []tls.Certificate{m.pushTLS},
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS12,
	}}
	authority := fmt.Sprintf("127.0.0.1:%d", port)
	nc, err := d.DialContext(ctx, "tcp", authority)
	if err != nil {
		return nil, fmt.Errorf("dialing the sink: %w", err)
	}
	tc := nc.(*tls.Conn)
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		return nil, fmt.Errorf("the sink at %s did not negotiate h2 by ALPN (got %q)", authority, p)
	}
	c := &h2Floor{
		nc: tc, tuned: tuned, nextID: 1, authority: authority, path: "/3/device/" + Token, body: Payload,
		clen: strconv.Itoa(len(Payload)), wake: make(chan struct{}, 1), dead: make(chan struct{}),
		open: map[uint32]*floorStream{}, sendWin: 65535, peerWin: 65535,
	}
	c.fr = http2.NewFramer(&c.wbuf, bufio.NewReaderSize(tc, 64<<10))
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.dec = hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			c.status, _ = strconv.Atoi(f.Value)
		}
	})
	if tuned {
		c.preEncode()
	}
	// Preface, our SETTINGS, and a large connection receive window.
	c.wbuf.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	c.fr.WriteWindowUpdate(0, 1<<30)
	if _, err := tc.Write(c.wbuf.Bytes()); err != nil {
		tc.Close()
		return nil, fmt.Errorf("writing the preface: %w", err)
	}
	c.wbuf.Reset()
	go c.readLoop()
	go c.writeLoop()
	return c, nil
}

// encodeConstants encodes the fields that are the same on every request
// (tuned variant) into hbuf: the pseudo-header fields (pseudo true) or the
// regular ones. They are kept apart because HTTP/2 requires every
// pseudo-header field (the per-request :path among them) before the first
// regular field.
func (c *h2Floor) encodeConstants(pseudo bool) {
	fields := []hpack.HeaderField{
		{Name: "apns-topic", Value: Topic},
		{Name: "apns-push-type", Value: "alert"},
		{Name: "apns-priority", Value: "10"},
		{Name: "content-type", Value: "application/json"},
	}
	if pseudo {
		fields = []hpack.HeaderField{
			{Name: ":method", Value: "POST"},
			{Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: c.authority},
		}
	}
	for _, f := range fields {
		c.enc.WriteField(f)
	}
}

// preEncode fills first and steady (tuned variant): the constant fields
// as the first request carries them (literals with incremental indexing,
// entering both ends' dynamic tables) and as every later one does
// (indexed references to those entries, a byte or two each). The
// per-request fields are never indexed, so the table, and with it steady,
// never changes.
func (c *h2Floor) preEncode() {
	for _, dst := range []*[2][]byte{&c.first, &c.steady} {
		for i, pseudo := range []bool{true, false} {
			c.hbuf.Reset()
			c.encodeConstants(pseudo)
			dst[i] = bytes.Clone(c.hbuf.Bytes())
		}
	}
	c.hbuf.Reset()
}

// appendHpackInt appends v as an HPACK integer with an n-bit prefix, the
// prefix's other bits being flags (RFC 7541, 5.1).
func appendHpackInt(b []byte, flags byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, flags|byte(v))
	}
	b = append(b, flags|byte(max))
	v -= max
	for v >= 128 {
		b = append(b, byte(v&0x7f|0x80))
		v >>= 7
	}
	return append(b, byte(v))
}

// appendNeverIndexed appends a literal header field never indexed (RFC
// 7541, 6.2.3), without Huffman coding: with the static table's name index
// nameIdx, or with a literal name when nameIdx is 0.
func appendNeverIndexed(b []byte, nameIdx uint64, name, value string) []byte {
	b = appendHpackInt(b, 0x10, 4, nameIdx)
	if nameIdx == 0 {
		b = appendHpackInt(b, 0, 7, uint64(len(name)))
		b = append(b, name...)
	}
	b = appendHpackInt(b, 0, 7, uint64(len(value)))
	return append(b, value...)
}

// Static-table indexes (RFC 7541, appendix A).
const (
	hpackPath          = 4
	hpackContentLength = 28
)

// headerBlock encodes the header block of one request with apns-id id.
func (c *h2Floor) headerBlock(id string) []byte {
	c.hbuf.Reset()
	if c.tuned {
		pre := &c.first
		if c.sentFirst {
			pre = &c.steady
		}
		c.sentFirst = true
		b := c.hbuf.AvailableBuffer()
		b = append(b, pre[0]...)
		b = appendNeverIndexed(b, hpackPath, "", c.path)
		b = append(b, pre[1]...)
		b = appendNeverIndexed(b, 0, "apns-id", id)
		b = appendNeverIndexed(b, hpackContentLength, "", c.clen)
		c.hbuf.Write(b)
		return c.hbuf.Bytes()
	}
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: c.authority},
		{Name: ":path", Value: c.path},
		{Name: "apns-topic", Value: Topic},
		{Name: "apns-push-type", Value: "alert"},
		{Name: "apns-priority", Value: "10"},
		{Name: "apns-id", Value: id},
		{Name: "content-type", Value: "application/json"},
		{Name: "content-length", Value: c.clen},
	} {
		c.enc.WriteField(f)
	}
	return c.hbuf.Bytes()
}

func (c *h2Floor) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// fail records the connection's first error and wakes everyone.
func (c *h2Floor) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		close(c.dead)
	}
}

// writeLoop waits for work, then encodes the control frames and HEADERS +
// DATA of every ready request (as far as the connection window allows)
// into one buffer and writes it to the connection in one write.
func (c *h2Floor) writeLoop() {
	for {
		select {
		case <-c.wake:
		case <-c.dead:
			return
		}
		c.mu.Lock()
		ctrl := c.ctrl
		c.ctrl = nil
		k := c.ready
		if per := int64(len(c.body)); per > 0 {
			k = int(min(int64(k), c.sendWin/per))
			c.sendWin -= int64(k) * per
		}
		c.ready -= k
		c.mu.Unlock()
		if len(ctrl) == 0 && k == 0 {
			continue
		}
		c.wbuf.Reset()
		for _, f := range ctrl {
			f(c.fr)
		}
		now := time.Now()
		ids := c.nextID
		for range k {
			id := c.nextID
			c.nextID += 2
			c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.headerBlock(apns.NewUUID()), EndHeaders: true, EndStream: len(c.body) == 0})
			if len(c.body) > 0 {
				c.fr.WriteData(id, true, c.body)
			}
		}
		if k > 0 {
			c.mu.Lock()
			for id := ids; id != c.nextID; id += 2 {
				c.open[id] = &floorStream{t0: now}
			}
			c.mu.Unlock()
		}
		if _, err := c.nc.Write(c.wbuf.Bytes()); err != nil {
			c.fail(fmt.Errorf("writing to the sink: %w", err))
			return
		}
	}
}

// readLoop decodes frames until the connection fails: answers complete
// their stream by id and make the run's next request ready; SETTINGS,
// PING and received DATA queue their acknowledgements for the writer.
func (c *h2Floor) readLoop() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.fail(fmt.Errorf("reading from the sink: %w", err))
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			c.mu.Lock()
			f.ForeachSetting(func(s http2.Setting) error {
				switch s.ID {
				case http2.SettingInitialWindowSize:
					c.peerWin = int64(s.Val)
				case http2.SettingMaxConcurrentStreams:
					c.peerMax = s.Val
				}
				return nil
			})
			c.ctrl = append(c.ctrl, func(fr *http2.Framer) { fr.WriteSettingsAck() })
			c.mu.Unlock()
			c.signal()
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				c.mu.Lock()
				c.sendWin += int64(f.Increment)
				c.mu.Unlock()
				c.signal()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				c.mu.Lock()
				c.ctrl = append(c.ctrl, func(fr *http2.Framer) { fr.WritePing(true, data) })
				c.mu.Unlock()
				c.signal()
			}
		case *http2.HeadersFrame:
			c.status, c.hdrID = 0, f.StreamID
			if err := c.headers(f.HeaderBlockFragment(), f.HeadersEnded()); err != nil {
				c.fail(err)
				return
			}
			if f.StreamEnded() {
				c.complete(f.StreamID, nil)
			}
		case *http2.ContinuationFrame:
			if err := c.headers(f.HeaderBlockFragment(), f.HeadersEnded()); err != nil {
				c.fail(err)
				return
			}
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				id, end := f.StreamID, f.StreamEnded()
				c.mu.Lock()
				c.ctrl = append(c.ctrl, func(fr *http2.Framer) {
					fr.WriteWindowUpdate(0, n)
					if !end {
						fr.WriteWindowUpdate(id, n)
					}
				})
				c.mu.Unlock()
				c.signal()
			}
			if f.StreamEnded() {
				c.complete(f.StreamID, nil)
			}
		case *http2.RSTStreamFrame:
			c.complete(f.StreamID, fmt.Errorf("stream %d reset by the sink: %v", f.StreamID, f.ErrCode))
		case *http2.GoAwayFrame:
			c.fail(fmt.Errorf("the sink sent GOAWAY (%v, last stream %d)", f.ErrCode, f.LastStreamID))
			return
		}
	}
}

// headers feeds one fragment of a response header block to the decoder;
// the block's :status lands in c.status, then in its stream.
func (c *h2Floor) headers(frag []byte, ended bool) error {
	if _, err := c.dec.Write(frag); err != nil {
		return fmt.Errorf("decoding response headers: %w", err)
	}
	if ended {
		if err := c.dec.Close(); err != nil {
			return fmt.Errorf("decoding response headers: %w", err)
		}
		c.mu.Lock()
		if s := c.open[c.hdrID]; s != nil && s.status == 0 {
			s.status = c.status
		}
		c.mu.Unlock()
	}
	return nil
}

// complete ends stream id: counts its answer (the status its header
// block carried, or err) and makes the run's next request ready.
func (c *h2Floor) complete(id uint32, err error) {
	now := time.Now()
	c.mu.Lock()
	s := c.open[id]
	if s == nil {
		c.mu.Unlock()
		return // not ours (or already done): ignore
	}
	delete(c.open, id)
	if c.tally != nil {
		switch {
		case err != nil:
			c.tally.add("error:rst", true, now.Sub(s.t0))
		case s.status == 200:
			c.tally.add("200", false, now.Sub(s.t0)) // no strconv: the measuring should not cost an allocation per answer
		default:
			c.tally.add(strconv.Itoa(s.status), s.status == 0, now.Sub(s.t0))
		}
	}
	c.got++
	if c.left > 0 {
		c.left--
		c.ready++
	}
	done := c.got == c.want && c.finished != nil
	if done {
		close(c.finished)
		c.finished = nil
	}
	c.mu.Unlock()
	if !done {
		c.signal()
	}
}

// run sends n requests, at most inflight outstanding, and waits for all
// their answers. Runs must not overlap.
func (c *h2Floor) run(ctx context.Context, n, inflight int) (Result, error) {
	lat := new(hist)
	t := newTally(lat)
	fin := make(chan struct{})
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return Result{}, c.err
	}
	if c.peerMax != 0 && uint32(inflight) > c.peerMax {
		c.mu.Unlock()
		return Result{}, fmt.Errorf("the sink allows %d concurrent streams, the floor wants %d", c.peerMax, inflight)
	}
	if int64(len(c.body)) > c.peerWin {
		c.mu.Unlock()
		return Result{}, fmt.Errorf("the sink's stream window (%d) is smaller than a body (%d)", c.peerWin, len(c.body))
	}
	first := min(n, inflight)
	c.tally, c.got, c.want, c.finished = t, 0, n, fin
	c.ready, c.left = first, n-first
	c.mu.Unlock()
	start := time.Now()
	c.signal()
	var err error
	if n > 0 {
		select {
		case <-fin:
		case <-c.dead:
			c.mu.Lock()
			err = c.err
			c.mu.Unlock()
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	elapsed := time.Since(start)
	c.mu.Lock()
	c.tally, c.finished = nil, nil
	c.mu.Unlock()
	r := finish("h2floor", n, elapsed, []*tally{t}, lat)
	return r, err
}

// close ends the connection; the goroutines exit on the error it causes.
func (c *h2Floor) close() {
	c.nc.Close()
	c.fail(errors.New("closed"))
}

// Print writes the floor table, the combined estimate and the machine's
// context.
func (r *FloorReport) Print(w io.Writer) {
	o := r.Opts
	fmt.Fprintf(w, "\nmachine: %d CPUs; load average (1, 5, 15 min) at start %s, at end %s\n", r.NProc, r.LoadStart, r.LoadEnd)
	fmt.Fprintf(w, "sink: %s\n", r.Sink)
	fmt.Fprintf(w, "load: socket rows %d clients x %d pipelined from a separate load-generator process; HTTP/2 rows %d in flight on 1 connection; %d measured per row after %d warm-up\n\n",
		o.Clients, o.Pipeline, o.InFlight, o.N, o.Warmup)
	fmt.Fprintf(w, "%-40s %9s %10s %9s %9s %12s %-16s %s\n", "row", "notifs", "notif/s", "p50", "p99", "CPU/notif", "CPU of", "answers")
	for _, p := range r.Rows {
		fmt.Fprintf(w, "%-40s %9d %10.0f %9s %9s %10.2fµs %-16s %s\n", p.Name, p.Answered, p.Rate(), ms(p.P50), ms(p.P99),
			float64(p.CPUPer())/1e3, p.CPUOf, answersText(p.Answers))
	}
	fmt.Fprintln(w)
	for _, p := range r.Rows {
		if p.LoadgenCPU > 0 {
			fmt.Fprintf(w, "%s: load generator process CPU %.2fµs/notif (not counted above)\n", p.Name, float64(p.LoadgenCPU)/float64(max(1, p.Answered))/1e3)
		}
	}
	us := func(name string) (float64, bool) {
		p := r.Row(name)
		if p == nil || p.Answered == 0 {
			return 0, false
		}
		return float64(p.CPUPer()) / 1e3, true
	}
	if r.Lat.Answered > 0 {
		fmt.Fprintf(w, "one request in flight: %s p50 %s p99 %s (%d): the round trip of a socket hop between two processes, the least apnsd's socket can add over a direct send\n",
			FloorSocketOne, ms(r.Lat.P50), ms(r.Lat.P99), r.Lat.Answered)
	}
	fmt.Fprintln(w, "\ncombined floor estimate (socket floor + HTTP/2 floor, against the 5µs target):")
	for _, pair := range [][2]string{{FloorSocketOne, FloorH2Tuned}, {FloorSocketSplit, FloorH2Tuned}, {FloorSocketSplit, FloorH2Naive}} {
		a, ok1 := us(pair[0])
		b, ok2 := us(pair[1])
		if !ok1 || !ok2 {
			continue
		}
		fmt.Fprintf(w, "  %s + %s = %.2fµs (%.0f%% of 5µs; %+.2fµs left for everything else)\n", pair[0], pair[1], a+b, (a+b)/5*100, 5-(a+b))
	}
	if d, ok := us(FloorApnsd); ok {
		if a, ok := us(FloorSocketSplit); ok {
			if b, ok := us(FloorH2Tuned); ok {
				fmt.Fprintf(w, "  apnsd in this run: %.2fµs, %.2fµs above floor (b) + tuned HTTP/2\n", d, d-a-b)
			}
		}
	}
}
