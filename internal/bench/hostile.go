package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Hostile client kinds.
const (
	// NeverRead clients write send requests as fast as the socket takes
	// them and never read an answer. apnsd must stop reading such a
	// connection once max_pending_per_conn answers are owed, so what it
	// accepts (and holds) stays bounded.
	NeverRead = "never-read"
	// LongLine clients send request lines far over max_line_bytes (1 MiB
	// each, paced) and read the line_too_long answers; apnsd must discard
	// such a line as it reads it rather than buffer it.
	LongLine = "long-line"
)

// longLineBytes is the size of one over-long line; longLineRate paces
// each LongLine client (lines per second), so the soak measures memory,
// not a memcpy race.
const (
	longLineBytes = 1 << 20
	longLineRate  = 8
)

// hostileStall: a NeverRead connection counts as stalled (apnsd stopped
// reading it) once a write has made no progress for this long.
const hostileStall = 250 * time.Millisecond

// HostileConn is the state of one hostile connection.
type HostileConn struct {
	Kind string
	// Written is the bytes apnsd accepted from this connection.
	Written atomic.Int64
	// Answers is the answers read (LongLine only); TooLong those that
	// were line_too_long.
	Answers, TooLong atomic.Int64
	// stalledAt is when writes stopped making progress (unix nanos, 0:
	// flowing).
	stalledAt atomic.Int64
	err       error
}

// Stalled says whether apnsd has stopped taking bytes from the
// connection (NeverRead) since at least hostileStall.
func (h *HostileConn) Stalled() bool { return h.stalledAt.Load() != 0 }

// HostileStats summarises the hostile connections of one kind.
type HostileStats struct {
	Kind  string
	Conns int
	// Written is the bytes apnsd accepted over all connections of the
	// kind; MaxWritten the most from one connection; LineBytes the size
	// of one line the kind sends.
	Written, MaxWritten int64
	LineBytes           int
	// Stalled is how many connections apnsd had stopped reading at the
	// end (NeverRead).
	Stalled int
	// Answers, TooLong: answers read (LongLine).
	Answers, TooLong int64
	// Errs are connection failures other than the expected ones.
	Errs []string
}

// hostileLine is the request a NeverRead client repeats: a real send,
// always with the same id, so every line has the same length.
func hostileLine() []byte { return requestLine(nil, 7) }

// Hostile runs hostile clients against the daemon until ctx ends.
type Hostile struct {
	conns []*HostileConn
	wg    sync.WaitGroup
}

// StartHostile opens neverRead NeverRead and longLine LongLine
// connections to the daemon; they run until ctx is done (then they close
// their connections). Call Wait after cancelling ctx.
func (e *Env) StartHostile(ctx context.Context, neverRead, longLine int) (*Hostile, error) {
	if e.d == nil {
		return nil, errors.New("daemon not started")
	}
	h := &Hostile{}
	for i := range neverRead + longLine {
		kind := NeverRead
		if i >= neverRead {
			kind = LongLine
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", e.d.SocketPath())
		if err != nil {
			return h, err // the caller cancels ctx and Waits
		}
		if uc, ok := c.(*net.UnixConn); ok && e.hostileSndBuf > 0 {
			uc.SetWriteBuffer(e.hostileSndBuf)
		}
		hc := &HostileConn{Kind: kind}
		h.conns = append(h.conns, hc)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			if kind == NeverRead {
				hc.err = neverReader(ctx, c, hc)
			} else {
				hc.err = longLiner(ctx, c, hc)
			}
			if ctx.Err() != nil {
				hc.err = nil // closed by us
			}
		}()
	}
	return h, nil
}

// Conns are the hostile connections.
func (h *Hostile) Conns() []*HostileConn { return h.conns }

// AllStalled says whether every NeverRead connection has stalled.
func (h *Hostile) AllStalled() bool {
	for _, c := range h.conns {
		if c.Kind == NeverRead && !c.Stalled() {
			return false
		}
	}
	return true
}

// Wait waits for the clients to finish (cancel their ctx first) and
// summarises them by kind.
func (h *Hostile) Wait() []HostileStats {
	h.wg.Wait()
	return h.Stats()
}

// Stats summarises the connections by kind (safe while they run).
func (h *Hostile) Stats() []HostileStats {
	var out []HostileStats
	for _, kind := range []string{NeverRead, LongLine} {
		s := HostileStats{Kind: kind, LineBytes: len(hostileLine())}
		if kind == LongLine {
			s.LineBytes = longLineBytes + 1
		}
		for _, c := range h.conns {
			if c.Kind != kind {
				continue
			}
			s.Conns++
			w := c.Written.Load()
			s.Written += w
			s.MaxWritten = max(s.MaxWritten, w)
			if c.Stalled() {
				s.Stalled++
			}
			s.Answers += c.Answers.Load()
			s.TooLong += c.TooLong.Load()
			if c.err != nil {
				s.Errs = append(s.Errs, c.err.Error())
			}
		}
		if s.Conns > 0 {
			out = append(out, s)
		}
	}
	return out
}

// neverReader writes request lines until ctx ends and never reads. Each
// write has a short deadline so a blocked socket is noticed (and ctx
// honoured); a partial write resumes where it stopped.
func neverReader(ctx context.Context, c net.Conn, hc *HostileConn) error {
	line := hostileLine()
	buf := bytes.Repeat(line, (32<<10)/len(line))
	off := 0
	lastProgress := time.Now()
	for ctx.Err() == nil {
		c.SetWriteDeadline(time.Now().Add(hostileStall))
		n, err := c.Write(buf[off:])
		if n > 0 {
			hc.Written.Add(int64(n))
			off = (off + n) % len(buf)
			lastProgress = time.Now()
			hc.stalledAt.Store(0)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if n == 0 && time.Since(lastProgress) >= hostileStall && !hc.Stalled() {
					hc.stalledAt.Store(time.Now().UnixNano())
				}
				continue
			}
			return fmt.Errorf("never-read client: write: %w", err)
		}
	}
	return nil
}

// longLiner sends over-long lines at longLineRate per second and reads
// the answers.
func longLiner(ctx context.Context, c net.Conn, hc *HostileConn) error {
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	defer func() { c.Close(); <-readDone }()
	go func() {
		defer close(readDone)
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				readErr <- err
				return
			}
			hc.Answers.Add(1)
			if k, _ := classify(line); k == "error:line_too_long" {
				hc.TooLong.Add(1)
			}
		}
	}()
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	tick := time.NewTicker(time.Second / longLineRate)
	defer tick.Stop()
	for ctx.Err() == nil {
		for sent := 0; sent < longLineBytes; sent += len(chunk) {
			n, err := c.Write(chunk)
			hc.Written.Add(int64(n))
			if err != nil {
				return fmt.Errorf("long-line client: write: %w", err)
			}
		}
		n, err := c.Write([]byte("\n"))
		hc.Written.Add(int64(n))
		if err != nil {
			return fmt.Errorf("long-line client: write: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		case err := <-readErr:
			return fmt.Errorf("long-line client: read: %w", err)
		}
	}
	return nil
}
