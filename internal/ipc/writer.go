package ipc

import (
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The answer side of a connection: the writer goroutine gathers every
// answer that is ready, in request order, into one buffer and hands it to
// the socket in one write when it would otherwise wait.
//
// The writer would wait in two places: for the next answer's channel (the
// answer is not known yet) and for the next pending from the reader (no
// request is outstanding beyond what it has written). In the first case it
// flushes before waiting (after yielding once, so that goroutines about to
// complete answers run first). In the second it flushes only once the reader
// is itself about to wait for the client (readerState): while the reader is
// still working through lines it has already read, their answers join the
// same write. So a client that pipelines gets its answers in one write per
// wake-up, not one per answer, and a client that sends one line and waits
// gets its answer as soon as it is known.

// flushAt is the buffer size at which the writer writes without waiting for
// more; writeBufs keeps buffers of up to keepBuf bytes for reuse, so an idle
// connection holds no write buffer.
const (
	flushAt = 32 << 10
	keepBuf = 64 << 10
)

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// readerState tells a connection's writer whether its reader is waiting for
// the client (in a Read of the socket). Safe for the two goroutines.
type readerState struct {
	reading atomic.Bool
	// kick has a token after the reader entered a Read; the writer drains it.
	kick chan struct{}
}

func newReaderState() *readerState { return &readerState{kick: make(chan struct{}, 1)} }

// kickReader is the connection as the reader goroutine reads it: it marks
// each Read in the readerState.
type kickReader struct {
	r  io.Reader
	st *readerState
}

func (k kickReader) Read(p []byte) (int, error) {
	k.st.reading.Store(true)
	select {
	case k.st.kick <- struct{}{}:
	default:
	}
	n, err := k.r.Read(p)
	k.st.reading.Store(false)
	return n, err
}

// answerQueue is a writer's answers owed, in request order: q[head:]. Its
// backing array comes from pendingQueues when a burst starts and goes back
// when the burst is written, so that neither a busy connection grows a new
// one per burst nor an idle one keeps one.
type answerQueue struct {
	q    []pending
	qp   *[]pending // the pooled slice q came from; nil while q is nil
	head int
}

// pendingQueues recycles answerQueue arrays; maxPooledQueue bounds the ones
// kept.
var pendingQueues = sync.Pool{New: func() any { q := make([]pending, 0, 64); return &q }}

const maxPooledQueue = 4096

func (a *answerQueue) len() int { return len(a.q) - a.head }

// front is the oldest answer owed; a.len() > 0.
func (a *answerQueue) front() *pending { return &a.q[a.head] }

func (a *answerQueue) push(p pending) {
	if a.qp == nil {
		a.qp = pendingQueues.Get().(*[]pending)
		a.q = (*a.qp)[:0]
	}
	if len(a.q) == cap(a.q) && a.head > 0 {
		// Full, with written slots in front: move the waiting ones down
		// rather than grow (a queue that never empties would otherwise
		// grow without end).
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	a.q = append(a.q, p)
}

// pop drops the front; the last one out hands the array back.
func (a *answerQueue) pop() {
	a.q[a.head] = pending{}
	a.head++
	if a.head < len(a.q) {
		return
	}
	if cap(a.q) <= maxPooledQueue {
		*a.qp = a.q[:0]
		pendingQueues.Put(a.qp)
	}
	a.q, a.qp, a.head = nil, nil, 0
}

// writeLoop writes the answers in request order until order is closed,
// gathering them as described above: it takes every pending handed over,
// writes every answer that is ready, and writes the buffer to c when it
// would wait. A client that takes no answer for idle is cut off. After a
// write error it keeps draining (answers are then lost with the
// connection, as the client is gone). It releases one slot per answer
// taken.
func (s *Server) writeLoop(c net.Conn, order <-chan pending, slots <-chan struct{}, idle time.Duration, rs *readerState, done chan<- struct{}) {
	defer close(done)
	var bufp *[]byte // nil while nothing is buffered
	var werr error
	flush := func() {
		if bufp == nil {
			return
		}
		if werr == nil {
			c.SetWriteDeadline(time.Now().Add(idle))
			if _, werr = c.Write(*bufp); werr != nil {
				s.writeFailed(c, werr)
			}
		}
		if cap(*bufp) <= keepBuf {
			*bufp = (*bufp)[:0]
			writeBufs.Put(bufp)
		}
		bufp = nil
	}
	defer flush()
	write := func(p pending) {
		<-slots
		if werr != nil {
			if p.r != nil {
				p.r.Release()
			}
			return
		}
		if bufp == nil {
			bufp = writeBufs.Get().(*[]byte)
		}
		if p.line != nil {
			*bufp = append(*bufp, p.line...)
		} else {
			r := p.r
			r.ID = p.id
			*bufp = appendResponse(*bufp, r)
			r.Release()
		}
		if len(*bufp) >= flushAt {
			flush()
		}
	}
	var q answerQueue
	open := true
	take := func(p pending, ok bool) {
		if !ok {
			open = false
			return
		}
		q.push(p)
	}
	for open || q.len() > 0 {
		// Take every pending already handed over, then write every
		// answer that is ready, in order.
		for open {
			select {
			case p, ok := <-order:
				take(p, ok)
				continue
			default:
			}
			break
		}
		for q.len() > 0 && q.front().ready() {
			write(*q.front())
			q.pop()
		}
		if !open && q.len() == 0 {
			break
		}
		// The writer would wait now: write what is buffered first, once
		// waiting is certain.
		if bufp != nil {
			if q.len() > 0 {
				runtime.Gosched() // let answers being completed now join this write
				if q.front().ready() {
					continue
				}
				flush()
			} else {
				select {
				case <-rs.kick: // drained: a token from now on is a new Read
				default:
				}
				if !rs.reading.Load() {
					select {
					case p, ok := <-order:
						take(p, ok)
						continue
					case <-rs.kick:
					}
				}
				flush()
			}
		}
		var first <-chan *Response
		if q.len() > 0 {
			first = q.front().ch
		}
		in := order
		if !open {
			in = nil
		}
		select {
		case p, ok := <-in:
			take(p, ok)
		case r := <-first:
			q.front().took(r)
		}
	}
}
