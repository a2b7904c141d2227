package apnstest

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Action is a fault to inject with a [Reply]; see "Fault injection" in the
// package documentation.
type Action int

const (
	// ActionNone answers normally (Status, Reason, after Delay).
	ActionNone Action = iota
	// ActionCloseConn closes the TCP connection that carried the request
	// (after Delay) without answering it, as a network failure or a crashed
	// front end would: no GOAWAY, no TLS close_notify. Every other stream
	// on that connection dies with it.
	ActionCloseConn
	// ActionGoAway answers the request normally (Status, Reason; 0 means
	// 200) and starts a graceful shutdown of its connection: the server sends
	// GOAWAY (error code NO_ERROR, last-stream-id = the highest stream it
	// has received, debug data {"reason":Reason} or {"reason":"Shutdown"}
	// when Reason is empty), finishes the streams it has received, ignores
	// any stream the client opens after that (never handled, never
	// counted: safe to retry) and closes the connection once drained.
	ActionGoAway
	// ActionResetStream answers nothing and resets the request's stream
	// with RST_STREAM(REFUSED_STREAM), which in HTTP/2 means "not
	// processed, safe to retry". The connection stays up.
	ActionResetStream
)

func (a Action) String() string {
	switch a {
	case ActionNone:
		return "none"
	case ActionCloseConn:
		return "close-conn"
	case ActionGoAway:
		return "goaway"
	case ActionResetStream:
		return "reset-stream"
	}
	return "Action(?)"
}

// DefaultGoAwayReason is the reason put in a GOAWAY's debug data when none is
// given.
const DefaultGoAwayReason = "Shutdown"

// Window returns a Responder that answers fault to every request received
// (Request.Received) at or after from and before to, and leaves every other
// request to otherwise (nil: answer 200). Use it to simulate an outage:
//
//	now := time.Now()
//	s.SetResponder(apnstest.Window(now.Add(time.Second), now.Add(3*time.Second),
//		apnstest.Reply{Status: 503, Reason: "ServiceUnavailable"}, nil))
func Window(from, to time.Time, fault Reply, otherwise Responder) Responder {
	return func(r *Request) Reply {
		if !r.Received.Before(from) && r.Received.Before(to) {
			return fault
		}
		if otherwise != nil {
			return otherwise(r)
		}
		return Reply{}
	}
}

// SetRefuseHandshakes makes every new TLS handshake fail (the server answers
// the ClientHello with a TLS internal_error alert) while refuse is true.
// Connections already established are not affected.
func (s *Server) SetRefuseHandshakes(refuse bool) { s.refuseHandshakes.Store(refuse) }

// RefusedHandshakes returns how many TLS handshakes were refused because of
// [Server.SetRefuseHandshakes] (since New or the last Reset).
func (s *Server) RefusedHandshakes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusedHandshakes
}

// SetMaxConcurrentStreams changes the SETTINGS_MAX_CONCURRENT_STREAMS that
// connections accepted from now on advertise and enforce (0 restores
// Options.MaxConcurrentStreams). Connections already open keep the value
// they started with: the HTTP/2 server the stand-in is built on cannot send
// new SETTINGS on a live connection.
func (s *Server) SetMaxConcurrentStreams(n uint32) {
	if n == 0 {
		n = s.opts.MaxConcurrentStreams
	}
	s.maxStreams.Store(n)
}

// GoAway sends GOAWAY (NO_ERROR, debug data {"reason":reason}, "" meaning
// [DefaultGoAwayReason]) on every open connection and lets each drain and
// close, as Apple does before maintenance. The server keeps listening.
func (s *Server) GoAway(reason string) {
	s.mu.Lock()
	cis := make([]*connInfo, 0, len(s.conns))
	for _, ci := range s.conns {
		if ci.id != 0 {
			cis = append(cis, ci)
		}
	}
	s.mu.Unlock()
	for _, ci := range cis {
		ci.goAway(reason)
	}
}

// Unanswered returns how many valid requests (see [Server.Requests]) got no
// answer: those whose Reply was ActionCloseConn or ActionResetStream, and
// those whose Delay was cut short because the stream or connection went away
// (the client gave up, another request's fault closed the connection,
// DropConnections, Close).
func (s *Server) Unanswered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unanswered
}

// goAway makes the connection's HTTP/2 server send GOAWAY and drain.
func (ci *connInfo) goAway(reason string) {
	if ci.h1 == nil {
		return
	}
	if reason == "" {
		reason = DefaultGoAwayReason
	}
	b, _ := json.Marshal(struct {
		Reason string `json:"reason"`
	}{reason})
	ci.goAwayDebug.CompareAndSwap(nil, &b) // the first reason sticks
	// net/http's HTTP/2 server starts a graceful shutdown (GOAWAY, then
	// drain) of its connections when its http.Server shuts down; ci.h1
	// serves only this connection, so this shuts down just this one.
	// Shutdown starts that in a goroutine of its own and then waits for
	// the connection to close; the context, already done, makes it return
	// at once instead. (It also closes ci.h1's one-connection listener,
	// which only ends ci.h1's accept loop.)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	ci.h1.Shutdown(done)
}

// closeAbruptly closes the TCP connection under the TLS one: no GOAWAY, no
// close_notify.
func (ci *connInfo) closeAbruptly() {
	ci.conn.Close()
}

// HTTP/2 frame types and error codes the wire rewriter cares about
// (RFC 9113).
const (
	frameHeaders   = 0x1
	frameRSTStream = 0x3
	frameGoAway    = 0x7

	flagPadded   = 0x8
	flagPriority = 0x20

	errCodeInternal      = 0x2
	errCodeRefusedStream = 0x7
)

// wireConn is the TLS connection as net/http's HTTP/2 server sees it. It
// follows the frames the server writes (which always start on a frame
// boundary: the server side sends no preface) so that the stand-in can
//
//   - count a 200 answer as accepted only when its HEADERS frame is
//     written to the socket (Server.Accepted is exact under faults);
//   - add Apple's JSON debug data to the server's GOAWAY frame;
//   - turn the RST_STREAM(INTERNAL_ERROR) that follows an aborted handler
//     into RST_STREAM(REFUSED_STREAM) for ActionResetStream.
//
// Only HEADERS, RST_STREAM and GOAWAY frames are held until complete; all
// other bytes pass straight through.
//
// It is a plain net.Conn on purpose (it does not offer ConnectionState): net/http
// then serves it as prior-knowledge HTTP/2, see Server.serveConn.
type wireConn struct {
	tc *tls.Conn
	s  *Server
	ci *connInfo

	mu   sync.Mutex
	hdr  [9]byte
	hdrN int
	rem  uint32 // payload bytes still to come in the current frame
	hold bool   // the current frame is collected in held
	held []byte
	out  []byte
}

func (w *wireConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	total := len(p) // held bytes go out with a later Write
	out := w.out[:0]
	var oks []int // end offsets in out of 200 HEADERS frames
	for len(p) > 0 {
		if w.rem > 0 {
			n := min(uint32(len(p)), w.rem)
			if w.hold {
				w.held = append(w.held, p[:n]...)
			} else {
				out = append(out, p[:n]...)
			}
			w.rem -= n
			p = p[n:]
			if w.rem == 0 && w.hold {
				out, oks = w.emitHeld(out, oks)
			}
			continue
		}
		n := copy(w.hdr[w.hdrN:], p)
		w.hdrN += n
		p = p[n:]
		if w.hdrN < len(w.hdr) {
			continue
		}
		w.hdrN = 0
		w.rem = uint32(w.hdr[0])<<16 | uint32(w.hdr[1])<<8 | uint32(w.hdr[2])
		switch w.hdr[3] {
		case frameHeaders, frameRSTStream, frameGoAway:
			w.hold = true
			w.held = append(w.held[:0], w.hdr[:]...)
			if w.rem == 0 {
				out, oks = w.emitHeld(out, oks)
			}
		default:
			w.hold = false
			out = append(out, w.hdr[:]...)
		}
	}
	w.out = out
	if len(out) == 0 {
		return total, nil
	}
	// Count before writing, so that a client never sees a 200 that
	// Accepted does not yet include; take back what did not get out.
	if len(oks) > 0 {
		w.s.mu.Lock()
		w.s.accepted += len(oks)
		w.s.mu.Unlock()
	}
	n, err := w.tc.Write(out)
	if err != nil {
		lost := 0
		for _, end := range oks {
			if end > n {
				lost++
			}
		}
		if lost > 0 {
			w.s.mu.Lock()
			w.s.accepted -= lost
			w.s.mu.Unlock()
		}
		return 0, err
	}
	return total, nil
}

// Read, Close and the rest of net.Conn go straight to the TLS connection.
func (w *wireConn) Read(p []byte) (int, error)         { return w.tc.Read(p) }
func (w *wireConn) Close() error                       { return w.tc.Close() }
func (w *wireConn) LocalAddr() net.Addr                { return w.tc.LocalAddr() }
func (w *wireConn) RemoteAddr() net.Addr               { return w.tc.RemoteAddr() }
func (w *wireConn) SetDeadline(t time.Time) error      { return w.tc.SetDeadline(t) }
func (w *wireConn) SetReadDeadline(t time.Time) error  { return w.tc.SetReadDeadline(t) }
func (w *wireConn) SetWriteDeadline(t time.Time) error { return w.tc.SetWriteDeadline(t) }

// emitHeld appends the complete held frame, rewritten as needed, to out.
func (w *wireConn) emitHeld(out []byte, oks []int) ([]byte, []int) {
	f := w.held
	w.hold = false
	payload := f[9:]
	switch f[3] {
	case frameHeaders:
		out = append(out, f...)
		if headersIs200(f[4], payload) {
			oks = append(oks, len(out))
		}
	case frameRSTStream:
		if len(payload) == 4 && binary.BigEndian.Uint32(payload) == errCodeInternal && w.ci.takeRefusal() {
			binary.BigEndian.PutUint32(payload, errCodeRefusedStream)
		}
		out = append(out, f...)
	case frameGoAway:
		w.ci.goAwayOnce.Do(func() { close(w.ci.goAwaySent) })
		if d := w.ci.goAwayDebug.Load(); d != nil && len(payload) == 8 {
			n := len(payload) + len(*d)
			out = append(out, byte(n>>16), byte(n>>8), byte(n))
			out = append(out, f[3:]...)
			out = append(out, *d...)
		} else {
			out = append(out, f...)
		}
	default:
		out = append(out, f...)
	}
	return out, oks
}

// headersIs200 reports whether a HEADERS frame payload's header block begins
// with ":status: 200", which HPACK encodes as static-table index 8 (0x88).
// The server writes :status first; dynamic table size updates may precede
// it.
func headersIs200(flags byte, p []byte) bool {
	if flags&flagPadded != 0 {
		if len(p) < 1 {
			return false
		}
		pad := int(p[0])
		p = p[1:]
		if pad > len(p) {
			return false
		}
		p = p[:len(p)-pad]
	}
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return false
		}
		p = p[5:]
	}
	for len(p) > 0 && p[0]&0xe0 == 0x20 { // dynamic table size update
		if p[0]&0x1f != 0x1f {
			p = p[1:]
			continue
		}
		p = p[1:]
		for len(p) > 0 && p[0]&0x80 != 0 {
			p = p[1:]
		}
		if len(p) > 0 {
			p = p[1:]
		}
	}
	return len(p) > 0 && p[0] == 0x88
}

// takeRefusal consumes one pending ActionResetStream, if any.
func (ci *connInfo) takeRefusal() bool {
	for {
		n := ci.refusals.Load()
		if n <= 0 {
			return false
		}
		if ci.refusals.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// connInfo is what the server knows about one connection.
type connInfo struct {
	conn     net.Conn // the TCP connection
	wire     *wireConn
	h1       *http.Server         // serves only this connection; Shutdown sends GOAWAY
	tls      *tls.ConnectionState // set once the handshake succeeded, before serving
	id       uint64               // 0 until the connection is ready for HTTP/2
	inFlight atomic.Int64

	closed    chan struct{} // closed once net/http has closed the connection
	closeOnce sync.Once

	goAwayDebug atomic.Pointer[[]byte]
	goAwaySent  chan struct{} // closed once a GOAWAY frame has been written
	goAwayOnce  sync.Once
	refusals    atomic.Int32 // handler aborts to turn into REFUSED_STREAM
}

// connListener hands net/http's Server.Serve one connection, then blocks
// in Accept until closed. It is safe for concurrent use.
type connListener struct {
	c      net.Conn
	mu     sync.Mutex
	given  bool
	done   chan struct{}
	closed sync.Once
}

func newConnListener(c net.Conn) *connListener {
	return &connListener{c: c, done: make(chan struct{})}
}

// Accept returns the connection the first time, then net.ErrClosed once
// the listener is closed.
func (l *connListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if !l.given {
		select {
		case <-l.done:
		default:
			l.given = true
			l.mu.Unlock()
			return l.c, nil
		}
	}
	l.mu.Unlock()
	<-l.done
	return nil, net.ErrClosed
}

// handedOut reports whether Accept returned the connection.
func (l *connListener) handedOut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.given
}

// Close ends Accept; it does not close the connection.
func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.c.LocalAddr() }
