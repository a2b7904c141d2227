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

// Reply is where a backend puts the one answer it owes for a request it
// accepted (Backend.Submit): Set, exactly once, from any goroutine; it
// never blocks. The server reads the answer without a goroutine or a
// channel per request: Set wakes the connection's writer only when the
// writer is waiting for this very answer.
type Reply struct {
	r  atomic.Pointer[Response]
	q  atomic.Pointer[outQueue] // the connection whose writer awaits it, once queued
	ch chan *Response           // NewChanReply's channel, or nil
}

// NewChanReply returns a Reply whose answer is also delivered on the
// returned channel (buffered: Set does not block), for a backend that
// gathers answers itself (a multicast's per-token answers) and for tests.
func NewChanReply() (*Reply, <-chan *Response) {
	ch := make(chan *Response, 1)
	return &Reply{ch: ch}, ch
}

// Set gives the answer. A second Set is a bug and is ignored.
func (p *Reply) Set(r *Response) {
	if r == nil {
		r = ErrorResponse(Errorf(CodeInternal, "internal error: the backend gave no answer"))
	}
	if !p.r.CompareAndSwap(nil, r) {
		return
	}
	if p.ch != nil {
		p.ch <- r
	}
	if o := p.q.Load(); o != nil {
		o.replied(p)
	}
}

// outQueue is a connection's answers owed, in request order: the reader
// appends (push), the writer takes the answers known at the head (take).
// waitFor is what a sleeping writer waits for: the head's Reply, anyPush
// (the queue was empty: the next push), or nil (awake). Whoever makes that
// true (Set, or a push) swaps it to nil and wakes the writer; the writer
// publishes it under mu and looks again before sleeping, so no wake-up is
// lost (a stale wake token only costs the writer one more look).
type outQueue struct {
	mu      sync.Mutex
	q       []pending
	closed  bool
	waitFor atomic.Pointer[Reply]
	wake    chan struct{} // cap 1
}

// anyPush is the writer's waitFor while the queue is empty.
var anyPush = new(Reply)

func newOutQueue() *outQueue { return &outQueue{wake: make(chan struct{}, 1)} }

func (o *outQueue) kick() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// wakeIf wakes the writer if it waits for w.
func (o *outQueue) wakeIf(w *Reply) {
	if o.waitFor.Load() == w && o.waitFor.CompareAndSwap(w, nil) {
		o.kick()
	}
}

func (o *outQueue) replied(p *Reply) { o.wakeIf(p) }

// push appends an answer owed (the reader's goroutine). A writer asleep on
// an empty queue is woken only if the answer is known already; otherwise
// it goes on sleeping until that answer's Set.
func (o *outQueue) push(p pending) {
	if p.reply != nil {
		p.reply.q.Store(o) // before the writer can see p: its Set wakes the writer from now on
	}
	o.mu.Lock()
	o.q = append(o.q, p)
	first := len(o.q) == 1
	o.mu.Unlock()
	if !first {
		return
	}
	if p.ready() || !o.waitFor.CompareAndSwap(anyPush, p.reply) {
		o.wakeIf(anyPush)
		return
	}
	if p.ready() { // Set came before the queue was known to it
		o.wakeIf(p.reply)
	}
}

// close marks the end of the requests (the reader is done).
func (o *outQueue) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.waitFor.Store(nil)
	o.kick()
}

// take moves the answers known at the head into batch; empty tells
// whether nothing is owed any more, closed whether the reader is done.
func (o *outQueue) take(batch []pending) (_ []pending, empty, closed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for n < len(o.q) && o.q[n].ready() {
		n++
	}
	batch = append(batch, o.q[:n]...)
	m := copy(o.q, o.q[n:])
	clear(o.q[m:])
	o.q = o.q[:m]
	if m == 0 && cap(o.q) > 1024 {
		o.q = nil // let a burst's backing array go
	}
	return batch, m == 0, o.closed
}

// sleep waits until the head's answer is known or, with the queue empty,
// until the next push (or until extra delivers). It returns at once when
// there is something to do already.
func (o *outQueue) sleep(extra <-chan struct{}) {
	o.mu.Lock()
	var w *Reply
	switch {
	case len(o.q) > 0 && o.q[0].ready(), len(o.q) == 0 && o.closed:
		o.mu.Unlock()
		return
	case len(o.q) > 0:
		w = o.q[0].reply
	default:
		w = anyPush
	}
	o.waitFor.Store(w)
	o.mu.Unlock()
	if w != anyPush && w.r.Load() != nil && o.waitFor.CompareAndSwap(w, nil) {
		return // answered while waitFor was being published
	}
	select {
	case <-o.wake:
	case <-extra:
	}
	o.waitFor.Store(nil)
}

// writeLoop writes the answers in request order until the reader is done
// and every answer owed is written, gathering them as described above: it
// takes every answer known at the head of the queue, and writes the buffer
// to c when it would wait. A client that takes no answer for idle is cut
// off. After a write error it keeps draining (answers are then lost with
// the connection, as the client is gone). It releases one slot per answer
// taken.
func (s *Server) writeLoop(c net.Conn, o *outQueue, slots <-chan struct{}, idle time.Duration, rs *readerState, done chan<- struct{}) {
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
			return
		}
		if bufp == nil {
			bufp = writeBufs.Get().(*[]byte)
		}
		if p.line != nil {
			*bufp = append(*bufp, p.line...)
		} else {
			r := p.reply.r.Load()
			r.ID = p.id
			*bufp = appendResponse(*bufp, r)
		}
		if len(*bufp) >= flushAt {
			flush()
		}
	}
	var batch []pending
	yielded := false
	for {
		var empty, closed bool
		batch, empty, closed = o.take(batch[:0])
		for i := range batch {
			write(batch[i])
			batch[i] = pending{}
		}
		if len(batch) > 0 {
			yielded = false
			continue // more may be known by now
		}
		if closed && empty {
			return
		}
		// The writer would wait now: write what is buffered first, once
		// waiting is certain.
		if bufp != nil {
			if !empty {
				if !yielded {
					yielded = true
					runtime.Gosched() // let answers being completed now join this write
					continue
				}
			} else {
				select {
				case <-rs.kick: // drained: a token from now on is a new Read
				default:
				}
				if !rs.reading.Load() {
					// The reader is still working through lines it has
					// read: their answers may join this write.
					o.sleep(rs.kick)
					if b, _, _ := o.peek(); b {
						continue
					}
				}
			}
			flush()
			yielded = false
			continue
		}
		o.sleep(nil)
	}
}

// peek reports whether the head's answer is known.
func (o *outQueue) peek() (ready, empty, closed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.q) > 0 && o.q[0].ready(), len(o.q) == 0, o.closed
}
