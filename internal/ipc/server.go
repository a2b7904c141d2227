package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/lograte"
	"github.com/apnsd/apnsd/internal/sockio"
)

var errTooManyFiles = syscall.EMFILE

// Backend is what the server needs from the daemon. Its methods are called
// concurrently.
type Backend interface {
	// Submit accepts a send from peer. If it returns a nil *Error, the
	// channel delivers exactly one response later: APNs' answer or a
	// refusal, or for "wait":false the acknowledgement ({"ok":true,
	// "queued":true} once durable, or a refusal); the backend guarantees
	// that, even across reloads and shutdown. It is called on the connection's reader goroutine and must
	// not block.
	//
	// s is the server's and is reused once Submit returns: what the
	// backend needs later it copies (the strings and slices s holds stay
	// valid; the Send struct does not).
	//
	// The channel should come from NewAnswer: once the server has read
	// the one response it puts the channel back for another Submit, so the
	// backend must send exactly once and touch the channel no more after
	// that send. A response with an Owner is released (Response.Release)
	// once written, or dropped with its connection.
	Submit(peer *Peer, s *Send) (chan *Response, *Error)
	// Status reports the daemon's state.
	Status() *StatusReport
	// Reload re-reads the config and every credential. A non-nil error means the
	// reload failed and the previous state is still in use. peer is who
	// asked (for the log).
	Reload(ctx context.Context, peer *Peer) (*ReloadReport, error)
}

// Defaults for Server fields left zero.
const (
	DefaultMaxLineBytes   = 128 << 10
	DefaultMaxPending     = 1024
	DefaultMaxConns       = 512
	DefaultMaxConnsPerUID = 128
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultLineTimeout    = 10 * time.Second
	// closeGrace is how long CloseConns keeps reading a connection before
	// it shuts its read side, so that a request a client writes just after
	// it connected is answered (shutting_down, retryable) instead of being
	// lost unread.
	closeGrace = 500 * time.Millisecond
	// PrivilegedReserve is how many connections beyond MaxConns root and
	// apnsd's own uid may open.
	PrivilegedReserve = 16
	// bufSize is each connection's read and write buffer: small, so that
	// many idle connections cost little; longer lines are read in pieces.
	bufSize = 4 << 10
)

// Server speaks the line protocol on one or more listeners. Set the fields,
// then call Serve. Each connection is read by one goroutine and written by
// another; requests on it run concurrently and are answered in order.
type Server struct {
	Backend Backend
	Version string
	// MaxLineBytes caps one request line; longer lines are answered
	// line_too_long and skipped.
	MaxLineBytes int
	// MaxPending caps the requests read from one connection but not yet
	// answered; beyond it the server stops reading that connection until
	// answers go out (backpressure).
	MaxPending int
	// MaxConns caps the open connections, and MaxConnsPerUID those of one
	// peer uid (fairness: one user cannot take every slot). A connection
	// beyond either is answered one "unavailable" line and closed. apnsd's
	// own probes (its pid) are exempt, and root and apnsd's own uid may
	// use PrivilegedReserve connections beyond MaxConns (an administrator
	// can still run apnsctl while other users fill the socket).
	MaxConns, MaxConnsPerUID int
	// IdleTimeout closes a connection that owes no answer and has sent
	// nothing for this long, and one whose client has not taken an answer
	// for this long (it is not reading).
	IdleTimeout time.Duration
	// LineTimeout closes a connection whose client started a line and has
	// not finished it within this time.
	LineTimeout time.Duration
	// Authorize, if set, vets each new connection by its peer; a refusal is
	// written as one error line and the connection is closed.
	Authorize func(*Peer) *Error
	// Permit, if set, vets each request by its peer and op (see Ops for
	// each op's Permission); a refusal answers that request only (an op
	// with a limited form, status, answers that instead). Nil allows every
	// op to every peer Authorize let in.
	Permit func(*Peer, *Op) *Error
	Logger *slog.Logger

	mu sync.Mutex
	// mu guards the fields that follow.
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]*connState
	perUID    map[int]int
	stopping  bool
	rl        *lograte.Limiter
	// peakConns is the most connections open at once since memory was
	// last handed back (see releaseMemory).
	peakConns int

	// The fields below are safe for concurrent use on their own.
	lastRelease atomic.Int64 // UnixNano of the last releaseMemory
	releasing   atomic.Bool  // a releaseMemory is due
	// refusing bounds the goroutines answering refused connections.
	refusing   chan struct{}
	refuseOnce sync.Once
	accepts    sync.WaitGroup // one per Serve loop
	wg         sync.WaitGroup // one per connection
	logOnce    sync.Once
	nopLog     *slog.Logger
}

// connState is what the server tracks of one open connection.
type connState struct {
	peer *Peer
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		s.logOnce.Do(func() { s.nopLog = slog.New(slog.DiscardHandler) })
		return s.nopLog
	}
	return s.Logger
}

// rate is the aggregated logger for events that a hostile or broken client
// can repeat at will (refused connections, timeouts).
func (s *Server) rate() *lograte.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rl == nil {
		s.rl = lograte.New(s.log(), 0)
	}
	return s.rl
}

func (s *Server) limits() (maxConns, perUID int) {
	maxConns, perUID = s.MaxConns, s.MaxConnsPerUID
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if perUID <= 0 {
		perUID = DefaultMaxConnsPerUID
	}
	return maxConns, perUID
}

// Serve accepts connections on l until StopAccepting or Close. It returns
// nil when stopped that way, and the accept error otherwise. A connection
// accepted while the server is stopping is still served (its requests are
// answered; the backend refuses new sends with shutting_down).
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
	}
	s.listeners[l] = struct{}{}
	s.accepts.Add(1)
	s.mu.Unlock()
	defer s.accepts.Done()
	var tempDelay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) || errors.Is(err, syscall.ENFILE) {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.rate().Log(slog.LevelWarn, "accept", "accepting a client connection failed; retrying", "err", err, "retry_in", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		s.admit(c)
	}
}

// admit counts c against the limits and starts serving it, or answers it
// one "unavailable" line and closes it.
func (s *Server) admit(c net.Conn) {
	s.refuseOnce.Do(func() { s.refusing = make(chan struct{}, maxRefusing) })
	peer := ReadPeer(c)
	maxConns, perUID := s.limits()
	own := peer.Known() && peer.PID == os.Getpid()
	privileged := peer.Known() && (peer.UID == 0 || peer.UID == os.Geteuid())
	s.mu.Lock()
	var refusal *Error
	switch {
	case own:
	case privileged && len(s.conns) < maxConns+PrivilegedReserve && s.perUID[peer.UID] < perUID:
	case len(s.conns) >= maxConns:
		refusal = Errorf(CodeUnavailable, "apnsd has too many open connections (%d, socket.max_connections); close idle ones or retry later", maxConns)
	case s.perUID[peer.UID] >= perUID:
		refusal = Errorf(CodeUnavailable, "uid %d has too many open connections to apnsd (%d, socket.max_connections_per_uid); close idle ones or retry later", peer.UID, perUID)
	}
	if refusal != nil {
		s.mu.Unlock()
		s.rate().Log(slog.LevelWarn, fmt.Sprintf("limit uid %d", peer.UID), "refused a client connection: connection limit reached", "uid", peer.UID, "pid", peer.PID, "reason", refusal.Message)
		select {
		case s.refusing <- struct{}{}:
			go func() {
				defer func() { <-s.refusing }()
				refuse(c, refusal)
			}()
		default:
			// Too many refusals at once: no time for courtesy.
			c.Close()
		}
		return
	}
	if s.conns == nil {
		s.conns = map[net.Conn]*connState{}
		s.perUID = map[int]int{}
	}

	s.conns[c] = &connState{peer: peer}
	s.peakConns = max(s.peakConns, len(s.conns))
	s.perUID[peer.UID]++
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c, peer)
}

// maxRefusing bounds the refused connections being answered at once;
// refuseDrain is how long one may take.
const (
	maxRefusing = 64
	refuseDrain = time.Second
)

// refuse answers a refused connection its one error line and closes it
// without resetting it: after the line, the write side is shut and what
// the client sends meanwhile (its first request, say) is read and dropped
// until it closes or refuseDrain passes, so the client's write succeeds and
// it reads the refusal instead of a broken pipe.
func refuse(c net.Conn, e *Error) {
	defer c.Close()
	b, _ := json.Marshal(ErrorResponse(e))
	c.SetWriteDeadline(time.Now().Add(refuseDrain))
	if _, err := c.Write(append(b, '\n')); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(refuseDrain))
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

// StopAccepting closes the listeners; open connections keep being served.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	for l := range s.listeners {
		l.Close()
	}
}

// CloseConns ends every connection gracefully: each keeps being read for a
// short grace (so that a request written just now is answered, by then
// shutting_down from the backend), then its read side is shut: the client's
// further writes fail (EPIPE), while every line it wrote before is still
// read and answered. Each connection writes every answer it owes and
// closes. Connections still busy when ctx ends are closed at once. Call it
// after the backend has answered everything it accepted.
func (s *Server) CloseConns(ctx context.Context) error {
	s.StopAccepting()
	s.accepts.Wait() // no connection is added after this
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.rate().Stop() // log what the aggregation still holds
	select {
	case <-done:
		return nil
	case <-grace.C:
		s.mu.Lock()
		for c := range s.conns {
			closeRead(c)
		}
		s.mu.Unlock()
	case <-ctx.Done():
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		// A writer still waiting for an answer the backend never gave
		// would hold this forever; do not wait for it past a moment.
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		return ctx.Err()
	}
}

// closeRead shuts c's read side: what the client wrote before is still
// read, then EOF; its further writes fail.
func closeRead(c net.Conn) {
	if cr, ok := c.(interface{ CloseRead() error }); ok {
		cr.CloseRead()
		return
	}
	c.SetReadDeadline(time.Now())
}

func (s *Server) serveConn(c net.Conn, peer *Peer) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if s.perUID[peer.UID]--; s.perUID[peer.UID] <= 0 {
			delete(s.perUID, peer.UID)
		}
		release := s.peakConns >= releaseAfterPeak && len(s.conns) <= s.peakConns/4
		if release {
			s.peakConns = len(s.conns)
		}
		s.mu.Unlock()
		c.Close()
		if release {
			s.releaseMemory()
		}
	}()
	if s.Authorize != nil {
		if e := s.Authorize(peer); e != nil {
			refuse(c, e)
			return
		}
	}
	maxLine := s.MaxLineBytes
	if maxLine <= 0 {
		maxLine = DefaultMaxLineBytes
	}
	maxPending := s.MaxPending
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	idle := s.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	lineTimeout := s.LineTimeout
	if lineTimeout <= 0 {
		lineTimeout = DefaultLineTimeout
	}
	// slots bounds the requests read but not answered (a chan struct{}
	// holds no elements, so the bound costs nothing until used); order
	// hands them to the writer, which queues them in a slice that grows
	// only as far as they are actually pending.
	slots := make(chan struct{}, maxPending)
	order := make(chan pending, orderBuf)
	writerDone := make(chan struct{})
	rs := newReaderState()
	// Lines and answers move through raw system calls (sockio: the
	// runtime's monitor then never hands the P away mid-call); c itself
	// stays the key of s.conns and is what is closed.
	sc := sockio.Wrap(c)
	go s.writeLoop(sc, order, slots, idle, rs, writerDone)

	cr := &connReader{s: s, c: sc, idle: idle, line: lineTimeout, slots: slots}
	br := bufio.NewReaderSize(kickReader{cr, rs}, bufSize)
	// push hands p to the writer. When it had to wait (backpressure), the
	// lines still buffered were read before the wait, so the reader's clock
	// (the ReadAt of the next sends) is read again: a notification's
	// request_timeout starts when it is taken, not while it waited here.
	push := func(p pending) {
		waited := false
		select {
		case slots <- struct{}{}:
		default:
			slots <- struct{}{}
			waited = true
		}
		select {
		case order <- p:
		default:
			order <- p
			waited = true
		}
		if waited {
			cr.lastRead = time.Now()
		}
	}
	for {
		line, tooLong, err := readLine(br, maxLine)
		// The line is complete: the next one starts with what is buffered
		// already, or with the next bytes to arrive.
		cr.lineDone(br.Buffered() > 0)
		if tooLong {
			push(answered(nil, ErrorResponse(Errorf(CodeLineTooLong, "request line is longer than %d bytes", maxLine))))
		} else if len(bytes.TrimSpace(line)) > 0 && (err == nil || !cr.timedOut) {
			push(s.handleLine(peer, line, cr.lastRead))
		}
		if err != nil {
			switch {
			case cr.timedOut && cr.reason != "":
				s.rate().Log(slog.LevelInfo, "timeout "+cr.reason, "closed a client connection: "+cr.reason, "uid", peer.UID, "pid", peer.PID)
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err):
				s.log().Debug("client connection read failed", "err", err)
			}
			break
		}
	}
	close(order)
	<-writerDone
}

// connReader is the connection as the line reader sees it: each read has a
// deadline, the idle timeout between lines and the line timeout within one.
// Used by the connection's reader goroutine only.
type connReader struct {
	s          *Server
	c          net.Conn
	idle, line time.Duration
	slots      chan struct{}
	// lineStart is when the line being read began (its first bytes
	// arrived), or zero between lines.
	lineStart time.Time
	// lastRead is when the last Read returned bytes.
	lastRead time.Time
	timedOut bool
	reason   string // why the connection timed out, for the log
}

func (r *connReader) Read(p []byte) (int, error) {
	for {
		now := time.Now()
		deadline := now.Add(r.idle)
		if !r.lineStart.IsZero() {
			deadline = r.lineStart.Add(r.line)
		}
		r.c.SetReadDeadline(deadline)
		n, err := r.c.Read(p)
		if n > 0 {
			r.lastRead = time.Now()
			if r.lineStart.IsZero() {
				r.lineStart = r.lastRead
			}
		}
		if err != nil && isTimeout(err) {
			switch {
			case !r.lineStart.IsZero():
				r.timedOut, r.reason = true, fmt.Sprintf("a request line was not finished within %s (socket.line_timeout)", r.line)
			case len(r.slots) > 0:
				// Not idle: answers are owed; the writer's own deadline
				// catches a client that does not read them.
				if n == 0 {
					continue
				}
			default:
				r.timedOut, r.reason = true, fmt.Sprintf("idle for %s (socket.idle_timeout)", r.idle)
			}
		}
		return n, err
	}
}

// lineDone marks the end of a line; more tells whether bytes of the next
// one are already buffered: then that line began by the last Read (no
// clock read per line).
func (r *connReader) lineDone(more bool) {
	if more {
		r.lineStart = r.lastRead
	} else {
		r.lineStart = time.Time{}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) writeFailed(c net.Conn, err error) {
	if isTimeout(err) {
		s.rate().Log(slog.LevelInfo, "timeout write", "closed a client connection: it did not read its answers (socket.idle_timeout)")
	} else {
		s.log().Debug("client connection write failed", "err", err)
	}
	c.Close() // unblock the reader
}

// readLine reads one '\n'-terminated line (without "\n" or "\r\n"). A line
// longer than max is consumed to its end and reported with tooLong; its
// bytes are not kept. err is set at the end of input; line may still hold a
// last unterminated line. line may be br's own buffer: it is valid until
// the next read from br (a line that fits br's buffer is not copied).
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		frag, e := br.ReadSlice('\n')
		if !tooLong {
			switch {
			case len(line)+len(frag) > max+2:
				tooLong = true
				line = nil
			case line == nil && !errors.Is(e, bufio.ErrBufferFull):
				line = frag // the whole line at once: no copy
			default:
				line = append(line, frag...)
			}
		}
		if errors.Is(e, bufio.ErrBufferFull) {
			continue
		}
		err = e
		break
	}
	if tooLong {
		return nil, true, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > max {
		return nil, true, err
	}
	return line, false, err
}

// pending is an answer owed: the request's id and where its answer will
// arrive (exactly once) or the answer itself: r once known, or line, the
// encoded answer line of one known at once (small: held by a client that
// pipelines without reading).
type pending struct {
	id   json.RawMessage
	ch   <-chan *Response
	r    *Response
	line []byte
	// recycle is ch as Submit gave it: put back (ReleaseAnswer) once its
	// answer is read.
	recycle chan *Response
}

// answers recycles Submit's answer channels (NewAnswer, ReleaseAnswer): a
// channel and its buffer are two allocations per notification otherwise.
var answers = sync.Pool{New: func() any { return make(chan *Response, 1) }}

// NewAnswer returns an empty answer channel with room for one response, so
// that its one send never blocks (see Backend.Submit).
func NewAnswer() chan *Response { return answers.Get().(chan *Response) }

// ReleaseAnswer puts back a channel whose one answer has been read, for a
// later NewAnswer. Only a caller that received that answer may release it
// (the server does so for Submit's channels; a backend that reads
// channels of its own Submit, as a multicast does, releases them itself).
// A channel that is not empty or not of capacity 1 is left alone.
func ReleaseAnswer(ch chan *Response) {
	if ch != nil && cap(ch) == 1 && len(ch) == 0 {
		if releasedHook != nil {
			releasedHook(ch)
		}
		answers.Put(ch)
	}
}

// releasedHook, when set (tests), sees every channel ReleaseAnswer puts back.
var releasedHook func(chan *Response)

// took records that p's answer was read from its channel.
func (p *pending) took(r *Response) {
	p.r = r
	ReleaseAnswer(p.recycle)
	p.recycle = nil
}

// ready reports whether the answer is known, taking it from ch if it has
// arrived.
func (p *pending) ready() bool {
	if p.line != nil || p.r != nil {
		return true
	}
	select {
	case r := <-p.ch:
		p.took(r)
		return true
	default:
		return false
	}
}

// answered is a pending whose answer is already known.
func answered(id json.RawMessage, r *Response) pending {
	r.ID = id
	return pending{id: id, line: appendResponse(nil, r)}
}

// handleLine decodes line, checks the op's permission and returns where its
// one answer will come from. It keeps nothing of line (the reader reuses
// its buffer): DecodeRequest's result does not alias it.
func (s *Server) handleLine(p *Peer, line []byte, readAt time.Time) pending {
	req, derr := DecodeRequest(line)
	if derr != nil {
		var id json.RawMessage
		if req != nil {
			id = req.ID
		}
		return answered(id, ErrorResponse(derr))
	}
	req.readAt = readAt
	name := req.Op
	if name == "" {
		name = "send"
	}
	op := opByName[name]
	if op == nil {
		return answered(req.ID, ErrorResponse(Errorf(CodeUnknownOp, "unknown op %q (known: %s)", req.Op, opNames())))
	}
	if s.Permit != nil {
		if e := s.Permit(p, op); e != nil {
			if op.limited != nil {
				return op.limited(s, p, req)
			}
			return answered(req.ID, ErrorResponse(e))
		}
	}
	return op.handle(s, p, req)
}

// orderBuf is how many read requests the reader may hand to the writer
// before the writer takes them: enough that a pipelining client's reader
// does not stop at every line to meet the writer, small enough that an idle
// connection costs little (the slots bound what is outstanding).
const orderBuf = 32

// releaseAfterPeak: once this many connections were open at once and
// three quarters of them have closed, the memory they used is handed back
// to the system (releaseMemory).
const releaseAfterPeak = 64

// releaseMemory hands memory freed by closed connections back to the
// system at once (a GC and a scavenge), at most every releaseEvery. Without
// it a burst of connections (hundreds of clients, or a hostile peer filling
// its quota) leaves the daemon's RSS at its peak until the runtime's next
// periodic GC, up to two minutes later, and then returns it only slowly.
func (s *Server) releaseMemory() {
	if !s.releasing.CompareAndSwap(false, true) {
		return // one is already due
	}
	wait := time.Until(time.Unix(0, s.lastRelease.Load()).Add(releaseEvery))
	time.AfterFunc(max(wait, 0), func() {
		debug.FreeOSMemory()
		s.lastRelease.Store(time.Now().UnixNano())
		s.releasing.Store(false)
	})
}

const releaseEvery = 5 * time.Second
