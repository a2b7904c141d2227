package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

var errTooManyFiles = syscall.EMFILE

// Backend is what the server needs from the daemon. Its methods are called
// concurrently.
type Backend interface {
	// Submit accepts a send from peer. If it returns a nil *Error, the
	// channel delivers exactly one response later (APNs' answer or a
	// refusal); the backend guarantees that, even across reloads and
	// shutdown. It is called on the connection's reader goroutine and must
	// not block.
	Submit(peer *Peer, s *Send) (<-chan *Response, *Error)
	// Status reports the daemon's state.
	Status() *StatusReport
	// Reload re-reads the config and every credential. A non-nil error means the
	// reload failed and the previous state is still in use.
	Reload(ctx context.Context) (*ReloadReport, error)
}

// Defaults for Server fields left zero.
const (
	DefaultMaxLineBytes = 128 << 10
	DefaultMaxPending   = 1024
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
	// Authorize, if set, vets each new connection by its peer; a refusal is
	// written as one error line and the connection is closed.
	Authorize func(*Peer) *Error
	// Permit, if set, vets each request by its peer and op (see Ops for
	// each op's Permission); a refusal answers that request only. Nil
	// allows every op to every peer Authorize let in.
	Permit func(*Peer, *Op) *Error
	Logger *slog.Logger

	mu sync.Mutex
	// mu guards the fields that follow.
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	stopping  bool

	wg sync.WaitGroup // one per connection
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Serve accepts connections on l until StopAccepting or Close. It returns
// nil when stopped that way, and the accept error otherwise.
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
	s.mu.Unlock()
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
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.log().Warn("accept failed; retrying", "err", err, "retry_in", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		if s.conns == nil {
			s.conns = map[net.Conn]struct{}{}
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
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

// CloseConns stops reading every connection, lets each write the answers it
// owes, and closes it. Connections still busy when ctx ends are closed at
// once. Call it after the backend has answered everything it accepted.
func (s *Server) CloseConns(ctx context.Context) error {
	s.StopAccepting()
	s.mu.Lock()
	for c := range s.conns {
		closeRead(c)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
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

func closeRead(c net.Conn) {
	if cr, ok := c.(interface{ CloseRead() error }); ok {
		cr.CloseRead()
		return
	}
	c.SetReadDeadline(time.Now())
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	peer := ReadPeer(c)
	if s.Authorize != nil {
		if e := s.Authorize(peer); e != nil {
			b, _ := json.Marshal(ErrorResponse(e))
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(append(b, '\n'))
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
	// order holds the answers owed, in request order; its capacity is the
	// per-connection bound on requests read but not answered.
	order := make(chan pending, maxPending)
	writerDone := make(chan struct{})
	go s.writeLoop(c, order, writerDone)

	br := bufio.NewReaderSize(c, 16<<10)
	for {
		line, tooLong, err := readLine(br, maxLine)
		if tooLong {
			order <- answered(nil, ErrorResponse(Errorf(CodeLineTooLong, "request line is longer than %d bytes", maxLine)))
		} else if len(bytes.TrimSpace(line)) > 0 {
			order <- s.handleLine(peer, line)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				s.log().Debug("client connection read failed", "err", err)
			}
			break
		}
	}
	close(order)
	<-writerDone
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeLoop writes the answers in request order. It flushes whenever the
// next answer is not ready yet, so a pipelining client sees answers as soon
// as they are in order. After a write error it keeps draining (answers are
// then lost with the connection, as the client is gone).
func (s *Server) writeLoop(c net.Conn, order <-chan pending, done chan<- struct{}) {
	defer close(done)
	bw := bufio.NewWriterSize(c, 16<<10)
	var werr error
	for p := range order {
		var r *Response
		select {
		case r = <-p.ch:
		default:
			if werr == nil {
				werr = bw.Flush()
			}
			r = <-p.ch
		}
		if werr != nil {
			continue
		}
		r.ID = p.id
		b, err := json.Marshal(r)
		if err != nil {
			b, _ = json.Marshal(ErrorResponse(Errorf(CodeInternal, "encoding response: %v", err)))
		}
		b = append(b, '\n')
		if _, werr = bw.Write(b); werr != nil {
			s.log().Debug("client connection write failed", "err", werr)
			c.Close() // unblock the reader
			continue
		}
		if len(order) == 0 {
			werr = bw.Flush()
		}
	}
	if werr == nil {
		bw.Flush()
	}
}

// readLine reads one '\n'-terminated line (without "\n" or "\r\n"). A line
// longer than max is consumed to its end and reported with tooLong; its
// bytes are not kept. err is set at the end of input; line may still hold a
// last unterminated line.
func readLine(br *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		frag, e := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > max+2 {
				tooLong = true
				line = nil
			} else {
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
// arrive (exactly once).
type pending struct {
	id json.RawMessage
	ch <-chan *Response
}

// answered is a pending whose answer is already known.
func answered(id json.RawMessage, r *Response) pending {
	ch := make(chan *Response, 1)
	ch <- r
	return pending{id: id, ch: ch}
}

// handleLine decodes line, checks the op's permission and returns where its
// one answer will come from.
func (s *Server) handleLine(p *Peer, line []byte) pending {
	req, derr := DecodeRequest(line)
	if derr != nil {
		var id json.RawMessage
		if req != nil {
			id = req.ID
		}
		return answered(id, ErrorResponse(derr))
	}
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
			return answered(req.ID, ErrorResponse(e))
		}
	}
	return op.handle(s, p, req)
}
