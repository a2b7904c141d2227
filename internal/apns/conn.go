package apns

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/sockio"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Settings we announce. The receive windows are generous for APNs' small
// answers; maxResponseBody caps what one stream may deliver.
const (
	ourStreamWindow = 1 << 16 // SETTINGS_INITIAL_WINDOW_SIZE we announce
	ourConnWindow   = 1 << 20 // connection receive window (raised at start)
	// maxStreamIDDefault is the last client stream id before a
	// connection must be replaced (2^31-1).
	maxStreamIDDefault = 1<<31 - 1
	// maxBatch bounds how many new streams one write carries.
	maxBatch = 512
)

// conn is one HTTP/2 connection to APNs, built on x/net/http2's Framer and
// hpack. It owns exactly two goroutines: readLoop decodes frames and
// completes streams by id; writeLoop takes every request that is ready
// (from its Client's queue, up to the stream limit), encodes HEADERS and
// DATA for all of them into one buffer and hands it to TLS in one write,
// then looks again and sleeps only when nothing is ready.
//
// Locking: mu guards the connection state below it, including the write
// buffer, the HPACK encoder and the write framer (so the reader can queue
// control frames: SETTINGS ACK, PING ACK, WINDOW_UPDATE, RST_STREAM).
// Lock order: conn.mu, then Client.qmu. No callback runs under mu.
type conn struct {
	cl    *Client
	id    uint64
	since time.Time
	nc    net.Conn
	rfr   *http2.Framer // reader goroutine only

	dead     chan struct{} // closed when the connection failed or was closed
	settled  chan struct{} // closed at the server's first SETTINGS
	retired  chan struct{} // closed at GOAWAY or stream-id exhaustion
	wake     chan struct{} // cap 1: there may be something to write
	answered atomic.Bool   // a response arrived: SETTINGS applied, credentials good
	noNew    atomic.Bool   // mirrors retiredFlag (set with it) for lock-free readers
	frames   atomic.Uint64 // frames read (health: a clock read per frame costs more)

	mu sync.Mutex
	// mu guards the fields that follow.
	err          error // why the connection ended; nil while alive
	accepting    bool  // takes new requests from the queue (false while draining)
	gotSettings  bool
	retiredFlag  bool
	goaway       bool
	goawayLast   uint32
	streams      map[uint32]*stream
	nextID       uint32
	maxID        uint32 // the last stream id this connection may use
	peerMaxConc  uint32 // SETTINGS_MAX_CONCURRENT_STREAMS
	peerInitWin  int32  // SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32 // SETTINGS_MAX_FRAME_SIZE
	peerMaxHList uint32 // SETTINGS_MAX_HEADER_LIST_SIZE; 0: unlimited
	sendWin      int32  // connection send window
	recvUnacked  int32  // connection bytes received and not yet WINDOW_UPDATEd
	blocked      []*stream
	pingOut      bool
	seenFrames   uint64    // frames at the last health check
	quietSince   time.Time // since when no frame has been read
	pingSent     time.Time
	pingSeq      uint64
	wb           *writeBuf // frames waiting for the next write
	spare        *writeBuf
	wfr          *http2.Framer // writes into wbuf
	hbuf         writeBuf      // HPACK output for one header block
	henc         *headerEncoder
	hdec         *hpack.Decoder // response headers; the reader, under mu
	hb           headerBlock
	sent         uint64 // streams started, for Status and tests
	// free holds streams for reuse (newStream): ones whose lent response
	// (call.lent) was read and whose body was all sent, so that nothing
	// else refers to them.
	free []*stream

	// spent is the reader goroutine's own (not under mu): streams whose
	// completion it has run, handed to free at its next handle.
	spent []*stream
}

// maxFreeStreams bounds a connection's free list.
const maxFreeStreams = 256

// newStream returns a zeroed stream, a recycled one when there is one
// (reuseSpent zeroes them as they are freed). c.mu held.
func (c *conn) newStream() *stream {
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
		return s
	}
	if streamAllocated != nil {
		streamAllocated()
	}
	return new(stream)
}

// streamAllocated, when set (tests), is called for each stream newStream
// allocates rather than reuses.
var streamAllocated func()

// reuseSpent moves the streams the reader has finished with to the free
// list. c.mu held, on the reader goroutine.
func (c *conn) reuseSpent() {
	for i, s := range c.spent {
		if c.hb.stream == s {
			c.hb.stream = nil
		}
		if len(c.free) < maxFreeStreams {
			*s = stream{}
			c.free = append(c.free, s)
		}
		c.spent[i] = nil
	}
	c.spent = c.spent[:0]
}

// stream is one request in flight on a conn. Guarded by conn.mu.
type stream struct {
	id      uint32
	k       *call
	sendWin int32
	body    []byte // request body not yet sent
	// response
	status      int
	hdrs        []Header
	rbody       []byte
	recvUnacked int32
	// res and hdrArr hold the answer, so that a typical response (a few
	// header fields) costs no allocation beyond the stream itself.
	res    Response
	hdrArr [3]Header
}

// writeBuf is an append-only byte buffer (the Framer writes frames here).
type writeBuf struct{ b []byte }

func (w *writeBuf) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// errNoH2 is wrapped by the dial error of a server that does not
// negotiate HTTP/2 with ALPN.
var errNoH2 = errors.New("server does not speak HTTP/2 (ALPN h2 not negotiated); APNs requires HTTP/2")

// dialConn connects, checks TLS and ALPN, writes the client preface and
// our SETTINGS, starts the two goroutines and waits for the server's
// SETTINGS (the server's preface), so a returned conn knows its limits.
func (cl *Client) dialConn(ctx context.Context) (*conn, error) {
	raw, err := cl.dialer(ctx, "tcp", cl.addr)
	if err != nil {
		return nil, err
	}
	// Frames move through raw system calls (sockio: the runtime's monitor
	// then never hands the P away in the middle of a write).
	tc := tls.Client(sockio.Wrap(raw), cl.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		if strings.Contains(err.Error(), "no application protocol") {
			// The server refused our only protocol, h2 (RFC 7301 alert).
			return nil, fmt.Errorf("TLS handshake with %s: %w (%w)", cl.addr, errNoH2, err)
		}
		return nil, fmt.Errorf("TLS handshake with %s: %w", cl.addr, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		if p == "" {
			p = "none"
		}
		return nil, fmt.Errorf("%s: %w (negotiated: %s)", cl.addr, errNoH2, p)
	}
	c := newConn(cl, tc)
	// Client preface, our SETTINGS and the connection window in one write.
	c.mu.Lock()
	c.wb.b = append(c.wb.b, http2.ClientPreface...)
	c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: ourStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxResponseHeaderBytes},
	)
	c.wfr.WriteWindowUpdate(0, ourConnWindow-65535)
	c.mu.Unlock()
	c.kick()
	cl.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
	select {
	case <-c.settled:
		return c, nil
	case <-c.dead:
		return nil, c.cause()
	case <-ctx.Done():
		c.fail(fmt.Errorf("no SETTINGS from %s: %w", cl.addr, ctx.Err()))
		return nil, c.cause()
	}
}

func newConn(cl *Client, nc net.Conn) *conn {
	c := &conn{
		cl: cl, id: cl.dials.Add(1), since: time.Now(), nc: nc,
		dead: make(chan struct{}), settled: make(chan struct{}), retired: make(chan struct{}),
		wake:      make(chan struct{}, 1),
		streams:   make(map[uint32]*stream),
		nextID:    1,
		maxID:     cl.maxStreamID,
		accepting: true,
		// RFC 9113 defaults until the server's SETTINGS arrive.
		peerMaxConc: 1000, peerInitWin: 65535, peerMaxFrame: 16384, sendWin: 65535,
		wb: &writeBuf{b: make([]byte, 0, 4096)}, spare: &writeBuf{b: make([]byte, 0, 4096)},
	}
	c.quietSince = c.since
	// Through a buffer, as x/net's own Transport reads: a frame straight
	// from the TLS conn costs two of its Reads (header, payload), each
	// taking its lock; most responses are a frame or two of a few bytes.
	c.rfr = http2.NewFramer(nil, bufio.NewReaderSize(nc, readBufSize))
	c.hdec = hpack.NewDecoder(4096, c.emitHeader)
	c.hdec.SetMaxStringLength(maxResponseHeaderBytes)
	c.rfr.SetReuseFrames() // frames are used only until the next ReadFrame
	c.wfr = http2.NewFramer(c.wbProxy(), nil)
	c.henc = newHeaderEncoder(&c.hbuf)
	return c
}

// readBufSize is the buffer between the TLS conn and the frame reader.
const readBufSize = 4 << 10

// wbProxy is the Framer's writer: it appends to whichever buffer is
// current (the writer swaps buffers under mu).
func (c *conn) wbProxy() io.Writer { return wbProxy{c} }

type wbProxy struct{ c *conn }

func (p wbProxy) Write(b []byte) (int, error) { return p.c.wb.Write(b) }

// kick wakes the writer.
func (c *conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// cause is why the connection ended.
func (c *conn) cause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// alive reports whether the connection has not failed.
func (c *conn) alive() bool {
	select {
	case <-c.dead:
		return false
	default:
		return true
	}
}

// usable: alive and taking new streams (no GOAWAY, ids left).
func (c *conn) usable() bool { return !c.noNew.Load() }

// unusable is !usable.
func (c *conn) unusable() bool { return c.noNew.Load() }

func (c *conn) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams)
}

// setAccepting starts or stops the connection taking requests from the
// client's queue (a connection being replaced stops).
func (c *conn) setAccepting(v bool) {
	c.mu.Lock()
	c.accepting = v
	c.mu.Unlock()
	if v {
		c.kick()
	}
}

// fail ends the connection with err (first error wins): every stream in
// flight completes with a *ConnError, since APNs may or may not have
// received it. Safe to call from any goroutine, more than once.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.blocked = nil
	c.retireLocked()
	c.mu.Unlock()
	close(c.dead)
	c.nc.Close()
	for _, s := range streams {
		c.cl.finish(s.k, nil, &ConnError{Err: err})
	}
	c.cl.poke()
}

// writeNow sends what is buffered (and what the caller just added) from
// the calling goroutine, best effort, before the connection is closed.
// c.mu held; it is released and taken again.
func (c *conn) writeNowLocked() {
	out := append([]byte(nil), c.wb.b...)
	c.wb.b = c.wb.b[:0]
	c.mu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.nc.Write(out) // TLS serialises this with the writer's writes
	c.mu.Lock()
}

// closeGracefully sends GOAWAY(NO_ERROR) when it can and closes.
func (c *conn) closeGracefully() {
	c.mu.Lock()
	if c.err == nil {
		c.wfr.WriteGoAway(0, http2.ErrCodeNo, nil)
		c.writeNowLocked()
	}
	c.mu.Unlock()
	c.fail(ErrClosed)
}

// retireLocked stops new streams; the slot keeper replaces the connection.
func (c *conn) retireLocked() {
	if !c.retiredFlag {
		c.retiredFlag = true
		c.noNew.Store(true)
		close(c.retired)
	}
}

// room is how many new streams may open now. c.mu held.
func (c *conn) room() int {
	if !c.accepting || c.retiredFlag || !c.gotSettings || c.err != nil {
		return 0
	}
	limit := int(c.peerMaxConc)
	// A new connection carries one stream until it has answered once or
	// warmUp has passed: the server's real SETTINGS are applied by then,
	// and with token auth APNs allows one stream until a valid token went
	// through. The time bound keeps one slow first request from holding
	// up the rest. It never raises the server's limit (which may be 0).
	if !c.answered.Load() && time.Since(c.since) < warmUp {
		limit = min(limit, 1)
	}
	return min(limit-len(c.streams), maxBatch)
}

// writeLoop is the connection's writer goroutine (see conn).
func (c *conn) writeLoop() {
	defer c.cl.wg.Done()
	tick := time.NewTicker(c.cl.healthTick)
	defer tick.Stop()
	warm := time.NewTimer(warmUp) // the warm-up ends: more streams may go
	defer warm.Stop()
	var done []doneItem
	for {
		select {
		case <-c.wake:
		case <-warm.C:
		case <-tick.C:
			if err := c.health(); err != nil {
				c.fail(err)
				return
			}
		case <-c.dead:
			return
		}
		for {
			var out *writeBuf
			out, done = c.fill(done[:0])
			for _, d := range done {
				c.cl.finish(d.k, d.res, d.err)
			}
			if out == nil || len(out.b) == 0 {
				break
			}
			// A server that stops reading must not wedge the writer (and
			// with it the PING health check): the write has PingTimeout.
			c.nc.SetWriteDeadline(time.Now().Add(c.cl.o.PingTimeout))
			_, err := c.nc.Write(out.b)
			c.mu.Lock()
			out.b = out.b[:0]
			if cap(out.b) > 1<<20 {
				out.b = nil // do not keep a huge buffer after a burst
			}
			c.spare = out
			c.mu.Unlock()
			if err != nil {
				c.fail(fmt.Errorf("writing to APNs: %w", err))
				return
			}
		}
	}
}

type doneItem struct {
	k   *call
	res *Response
	err error
	// reuse is res's stream, to recycle once k is complete (a lent
	// response; see endStream).
	reuse *stream
}

// fill encodes everything ready into the current buffer and takes it: new
// streams from the client's queue (up to room), DATA of streams blocked on
// flow control, and queued control frames. Calls it will not send (expired
// or cancelled in the queue, refused locally) are appended to done.
func (c *conn) fill(done []doneItem) (*writeBuf, []doneItem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return nil, done
	}
	if len(c.blocked) > 0 && c.sendWin > 0 {
		c.sendBlocked()
	}
	if n := c.room(); n > 0 && c.cl.queued.Load() > 0 {
		var batch []*call
		batch, done = c.cl.take(n, done)
		for _, k := range batch {
			if c.nextID > c.maxID {
				done = c.cl.requeue([]*call{k}, done)
				c.retireLocked()
				c.cl.log.Info("connection used all its stream ids; replacing it", "conn", c.id)
				continue
			}
			if err := c.start(k); err != nil {
				done = append(done, doneItem{k: k, err: err})
			}
		}
	}
	if len(c.wb.b) == 0 {
		return nil, done
	}
	out := c.wb
	if c.spare == nil {
		c.spare = &writeBuf{}
	}
	c.wb, c.spare = c.spare, nil
	return out, done
}

// start opens a stream for k: HEADERS (+CONTINUATION) and as much DATA as
// the windows allow. c.mu held.
func (c *conn) start(k *call) error {
	r := k.req
	auth := ""
	if c.cl.o.Authorization != nil {
		a, err := c.cl.o.Authorization()
		if err != nil {
			return err
		}
		auth = a
	}
	method := r.Method
	if method == "" {
		method = "POST"
	}
	// Check the header list against the server's limit first.
	if c.peerMaxHList != 0 {
		size := 4*32 + len(":method") + len(method) + len(":scheme") + 5 + len(":authority") + len(c.cl.authority) + len(":path") + len(r.Path)
		for _, h := range r.Header {
			size += 32 + len(h.Name) + len(h.Value)
		}
		if auth != "" {
			size += 32 + len("authorization") + len(auth)
		}
		if len(r.Body) > 0 {
			size += 32 + len("content-length") + 5
		}
		if size > int(c.peerMaxHList) {
			return fmt.Errorf("request headers are %d bytes; the server allows at most %d (SETTINGS_MAX_HEADER_LIST_SIZE)", size, c.peerMaxHList)
		}
	}
	e := c.henc
	e.startBlock()
	e.field(":method", method, false)
	e.field(":scheme", "https", false)
	e.field(":authority", c.cl.authority, false)
	e.field(":path", r.Path, pathNeverIndexed(r.Path))
	for _, h := range r.Header {
		e.field(h.Name, h.Value, h.NeverIndex || neverIndexed(h.Name))
	}
	if auth != "" {
		e.field("authorization", auth, false)
	}
	if len(r.Body) > 0 {
		e.contentLength(len(r.Body))
	}
	e.endBlock()
	id := c.nextID
	c.nextID += 2
	s := c.newStream()
	s.id, s.k, s.sendWin, s.body = id, k, c.peerInitWin, r.Body
	k.auth = auth
	k.state.Store(stateSent)
	c.streams[id] = s
	c.sent++
	block := c.hbuf.b
	endStream := len(r.Body) == 0
	frag := block
	if uint32(len(frag)) > c.peerMaxFrame {
		frag = block[:c.peerMaxFrame]
	}
	block = block[len(frag):]
	c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		frag = block
		if uint32(len(frag)) > c.peerMaxFrame {
			frag = block[:c.peerMaxFrame]
		}
		block = block[len(frag):]
		c.wfr.WriteContinuation(id, len(block) == 0, frag)
	}
	if !endStream && !c.sendData(s) {
		c.blocked = append(c.blocked, s)
	}
	return nil
}

// sendData writes as much of s's body as the windows and the frame size
// allow; it reports whether the body is done. c.mu held.
func (c *conn) sendData(s *stream) bool {
	for len(s.body) > 0 {
		n := min(int64(len(s.body)), int64(c.sendWin), int64(s.sendWin), int64(c.peerMaxFrame))
		if n <= 0 {
			return false
		}
		end := int(n) == len(s.body)
		c.wfr.WriteData(s.id, end, s.body[:n])
		s.body = s.body[n:]
		c.sendWin -= int32(n)
		s.sendWin -= int32(n)
	}
	return true
}

// sendBlocked continues the bodies that waited for window. c.mu held.
func (c *conn) sendBlocked() {
	keep := c.blocked[:0]
	for _, s := range c.blocked {
		if c.streams[s.id] != s { // finished or reset meanwhile
			continue
		}
		if !c.sendData(s) {
			keep = append(keep, s)
		}
	}
	clear(c.blocked[len(keep):])
	c.blocked = keep
}

// health runs on the writer's tick: PING a connection that has been quiet
// for PingInterval; fail one whose PING went unanswered for PingTimeout.
func (c *conn) health() error {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pingOut {
		if now.Sub(c.pingSent) > c.cl.o.PingTimeout {
			return fmt.Errorf("no answer to PING within %s: connection dead", c.cl.o.PingTimeout)
		}
		return nil
	}
	if n := c.frames.Load(); n != c.seenFrames {
		c.seenFrames, c.quietSince = n, now
	}
	if now.Sub(c.quietSince) >= c.cl.o.PingInterval {
		c.pingSeq++
		var data [8]byte
		putUint64(data[:], c.pingSeq)
		c.wfr.WritePing(false, data)
		c.pingOut = true
		c.pingSent = now
		c.kick()
	}
	return nil
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

func getUint64(b []byte) (v uint64) {
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

// readLoop is the connection's reader goroutine (see conn).
func (c *conn) readLoop() {
	defer c.cl.wg.Done()
	var done []doneItem
	for {
		f, err := c.rfr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				done = c.streamError(se, done[:0])
				c.complete(done)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.protocolError(http2.ErrCode(ce), fmt.Sprintf("reading from APNs: %v", err))
				return
			}
			if c.alive() {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("APNs closed the connection: %w", err)
				} else {
					err = fmt.Errorf("reading from APNs: %w", err)
				}
			}
			c.fail(err)
			return
		}
		c.frames.Add(1)
		done, err = c.handle(f, done[:0])
		c.complete(done)
		for i := range done {
			if s := done[i].reuse; s != nil {
				c.spent = append(c.spent, s)
			}
			done[i] = doneItem{}
		}
		if err != nil {
			var ce http2.ConnectionError
			code := http2.ErrCodeProtocol
			if errors.As(err, &ce) {
				code = http2.ErrCode(ce)
			}
			c.protocolError(code, err.Error())
			return
		}
	}
}

func (c *conn) complete(done []doneItem) {
	for _, d := range done {
		c.cl.finish(d.k, d.res, d.err)
	}
	if len(done) > 0 && c.cl.queued.Load() > 0 {
		c.kick() // streams freed: more may go
	}
}

// protocolError sends GOAWAY with code and ends the connection.
func (c *conn) protocolError(code http2.ErrCode, msg string) {
	c.mu.Lock()
	if c.err == nil {
		c.wfr.WriteGoAway(0, code, nil)
		c.writeNowLocked()
	}
	c.mu.Unlock()
	c.fail(fmt.Errorf("HTTP/2 protocol error from APNs (%v): %s", code, msg))
}

// streamError resets one stream the Framer found malformed.
func (c *conn) streamError(se http2.StreamError, done []doneItem) []doneItem {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[se.StreamID]; s != nil {
		delete(c.streams, se.StreamID)
		c.wfr.WriteRSTStream(se.StreamID, se.Code)
		c.kick()
		done = append(done, doneItem{k: s.k, err: &ConnError{Err: fmt.Errorf("malformed response on stream %d: %w", se.StreamID, se)}})
	}
	return done
}

// handle applies one frame. It returns the calls it completed (to run
// after unlocking) and a connection error, if the frame is one.
func (c *conn) handle(f http2.Frame, done []doneItem) ([]doneItem, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.spent) > 0 {
		c.reuseSpent()
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return done, nil
		}
		if err := f.ForeachSetting(c.applySetting); err != nil {
			return done, err
		}
		c.wfr.WriteSettingsAck()
		if !c.gotSettings {
			c.gotSettings = true
			close(c.settled)
		}
		c.kick()
	case *http2.HeadersFrame:
		c.hb = headerBlock{stream: c.streams[f.StreamID], endStream: f.StreamEnded()}
		if st := c.hb.stream; st != nil && st.hdrs == nil {
			st.hdrs = st.hdrArr[:0]
		}
		return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded(), done)
	case *http2.ContinuationFrame: // the Framer checks it continues the open block
		return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded(), done)
	case *http2.DataFrame:
		n := int32(f.Length) // padding counts against flow control
		c.recvUnacked += n
		if c.recvUnacked >= ourConnWindow/4 {
			c.wfr.WriteWindowUpdate(0, uint32(c.recvUnacked))
			c.recvUnacked = 0
			c.kick()
		}
		s := c.streams[f.StreamID]
		if s == nil {
			return done, nil
		}
		if len(s.rbody)+len(f.Data()) > maxResponseBody {
			delete(c.streams, s.id)
			c.wfr.WriteRSTStream(s.id, http2.ErrCodeCancel)
			c.kick()
			return append(done, doneItem{k: s.k, err: &ConnError{Err: fmt.Errorf("response body exceeds %d bytes; stream reset", maxResponseBody)}}), nil
		}
		s.rbody = append(s.rbody, f.Data()...)
		if f.StreamEnded() {
			return c.endStream(s, done), nil
		}
		s.recvUnacked += n
		if s.recvUnacked >= ourStreamWindow/4 {
			c.wfr.WriteWindowUpdate(s.id, uint32(s.recvUnacked))
			s.recvUnacked = 0
			c.kick()
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			if int64(c.sendWin)+int64(f.Increment) > 1<<31-1 {
				return done, http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			c.sendWin += int32(f.Increment)
		} else if s := c.streams[f.StreamID]; s != nil {
			if int64(s.sendWin)+int64(f.Increment) > 1<<31-1 {
				delete(c.streams, s.id)
				c.wfr.WriteRSTStream(s.id, http2.ErrCodeFlowControl)
				return append(done, doneItem{k: s.k, err: &ConnError{Err: errors.New("stream window overflow (FLOW_CONTROL_ERROR)")}}), nil
			}
			s.sendWin += int32(f.Increment)
		}
		if len(c.blocked) > 0 {
			c.kick()
		}
	case *http2.RSTStreamFrame:
		s := c.streams[f.StreamID]
		if s == nil {
			return done, nil
		}
		delete(c.streams, s.id)
		if f.ErrCode == http2.ErrCodeRefusedStream {
			// Not processed by the server: safe to send again.
			if c.cl.o.RetryRefusedStream {
				return c.cl.requeue([]*call{s.k}, done), nil
			}
			return append(done, doneItem{k: s.k, err: &ConnError{Err: ErrRefusedStream}}), nil
		}
		if f.ErrCode == http2.ErrCodeNo && s.status != 0 {
			// The server answered and stopped reading our body: done.
			return c.endStream(s, done), nil
		}
		return append(done, doneItem{k: s.k, err: &ConnError{Err: fmt.Errorf("APNs reset the stream (%v)", f.ErrCode)}}), nil
	case *http2.PingFrame:
		if f.IsAck() {
			if c.pingOut && getUint64(f.Data[:]) == c.pingSeq {
				c.pingOut = false
			}
			return done, nil
		}
		c.wfr.WritePing(true, f.Data)
		c.kick()
	case *http2.GoAwayFrame:
		c.goaway = true
		c.goawayLast = f.LastStreamID
		c.retireLocked()
		var again []*call
		for id, s := range c.streams {
			if id > f.LastStreamID {
				delete(c.streams, id)
				again = append(again, s.k)
			}
		}
		done = c.cl.requeue(again, done)
		c.cl.log.Info("APNs sent GOAWAY; replacing the connection", "conn", c.id, "code", f.ErrCode.String(),
			"last_stream", f.LastStreamID, "in_flight", len(c.streams), "retried", len(again), "debug", string(f.DebugData()))
	case *http2.PushPromiseFrame:
		return done, http2.ConnectionError(http2.ErrCodeProtocol) // push is disabled
	}
	return done, nil
}

// headerBlock is the response header block being decoded (HEADERS and its
// CONTINUATIONs). Guarded by conn.mu (the reader decodes under it).
type headerBlock struct {
	stream    *stream // nil: a stream we no longer track (decoded for HPACK state only)
	endStream bool
	size      int // decoded size (name + value + 32 per field)
	wire      int // encoded bytes so far
	truncated bool
	invalid   bool
}

// headerFragment decodes one fragment of the current header block; at the
// block's end it applies the headers to their stream. The decoded size is
// bounded by maxResponseHeaderBytes (beyond it the stream is reset); a block
// whose encoded size passes twice that is a flood and ends the connection.
// c.mu held.
func (c *conn) headerFragment(frag []byte, end bool, done []doneItem) ([]doneItem, error) {
	hb := &c.hb
	hb.wire += len(frag)
	if hb.wire > 2*maxResponseHeaderBytes {
		return done, fmt.Errorf("a response header block beyond %d bytes: %w", 2*maxResponseHeaderBytes, http2.ConnectionError(http2.ErrCodeProtocol))
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return done, fmt.Errorf("HPACK: %w: %w", err, http2.ConnectionError(http2.ErrCodeCompression))
	}
	if !end {
		return done, nil
	}
	if err := c.hdec.Close(); err != nil {
		return done, fmt.Errorf("HPACK: %w: %w", err, http2.ConnectionError(http2.ErrCodeCompression))
	}
	s := hb.stream
	if s == nil || c.streams[s.id] != s {
		return done, nil
	}
	if hb.truncated || hb.invalid {
		delete(c.streams, s.id)
		code, msg := http2.ErrCodeCancel, fmt.Sprintf("response headers exceed %d bytes; stream reset", maxResponseHeaderBytes)
		if hb.invalid {
			code, msg = http2.ErrCodeProtocol, "malformed response header field; stream reset"
		}
		c.wfr.WriteRSTStream(s.id, code)
		c.kick()
		return append(done, doneItem{k: s.k, err: &ConnError{Err: errors.New(msg)}}), nil
	}
	if hb.endStream {
		done = c.endStream(s, done)
	}
	return done, nil
}

// emitHeader receives each decoded response header field (hdec's emit
// function, called from headerFragment under c.mu).
func (c *conn) emitHeader(hf hpack.HeaderField) {
	hb := &c.hb
	hb.size += int(hf.Size())
	if hb.size > maxResponseHeaderBytes {
		hb.truncated = true
	}
	s := hb.stream
	if s == nil || hb.truncated || hb.invalid {
		return
	}
	if hf.Name == ":status" {
		if hf.Value == "200" {
			s.status = 200
			return
		}
		if !httpguts.ValidHeaderFieldValue(hf.Value) {
			hb.invalid = true
			return
		}
		if st, err := strconv.Atoi(hf.Value); err == nil {
			if st >= 100 && st < 200 {
				s.status = 0 // informational: the real answer follows
				return
			}
			s.status = st
		}
		return
	}
	// Only the apns-* fields are kept (Response.Header): they are all APNs
	// sends that means anything, and all apnsd reads. Others (a server's
	// date, server, content-length) still count towards the size limit
	// but are neither checked nor kept.
	if !strings.HasPrefix(hf.Name, "apns-") {
		return
	}
	if !httpguts.ValidHeaderFieldValue(hf.Value) || !httpguts.ValidHeaderFieldName(hf.Name) {
		hb.invalid = true
		return
	}
	s.hdrs = append(s.hdrs, Header{Name: hf.Name, Value: hf.Value})
}

// applySetting applies one of the server's SETTINGS. c.mu held.
func (c *conn) applySetting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err
	}
	switch s.ID {
	case http2.SettingMaxConcurrentStreams:
		c.peerMaxConc = s.Val // lowered below in flight: no new streams until under it
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - int64(c.peerInitWin)
		for _, st := range c.streams {
			if int64(st.sendWin)+delta > 1<<31-1 {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			st.sendWin += int32(delta)
		}
		c.peerInitWin = int32(s.Val)
	case http2.SettingMaxFrameSize:
		c.peerMaxFrame = s.Val
	case http2.SettingHeaderTableSize:
		c.henc.setMaxTableSize(s.Val)
	case http2.SettingMaxHeaderListSize:
		c.peerMaxHList = s.Val
	}
	return nil
}

// endStream completes s with its response. c.mu held.
func (c *conn) endStream(s *stream, done []doneItem) []doneItem {
	delete(c.streams, s.id)
	if s.status == 0 {
		return append(done, doneItem{k: s.k, err: &ConnError{Err: fmt.Errorf("stream %d ended without a :status", s.id)}})
	}
	if !c.answered.Load() {
		c.answered.Store(true)
		c.kick() // the warm-up is over
	}
	r := &s.res
	*r = Response{StatusCode: s.status, Header: s.hdrs, Authorization: s.k.auth}
	if len(s.rbody) > 0 {
		r.Body = s.rbody
	}
	it := doneItem{k: s.k, res: r}
	if s.k.lent && len(s.body) == 0 {
		// The caller reads r only while it completes, and a stream whose
		// body was all sent is in no blocked list: it may be reused after.
		it.reuse = s
	}
	return append(done, it)
}

// expire resets the streams whose call was cancelled or passed its
// deadline; the reaper calls it. Returns the completions to run.
func (c *conn) expire(now time.Time, done []doneItem) []doneItem {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return done
	}
	reset := false
	for id, s := range c.streams {
		if err := s.k.expired(now); err != nil {
			delete(c.streams, id)
			c.wfr.WriteRSTStream(id, http2.ErrCodeCancel)
			reset = true
			done = append(done, doneItem{k: s.k, err: err})
		}
	}
	if reset {
		c.kick()
	}
	return done
}
