package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// How apnsctl sends request lines (the single send and bulk mode alike):
//
//   - every send line gets "deadline" = apnsctl's start + -timeout (unless
//     it has one), so a request apnsd reads after apnsctl gave up is
//     answered expired and never sent: exit 3 means "not sent";
//   - an answer marked retryable is sent again within the timeout:
//     shutting_down at once on a fresh connection (the next apnsd, or the
//     one behind a held socket, takes it), queue_full, unavailable and the
//     others after a short jittered backoff;
//   - when the connection ends (EOF, EPIPE) before every line written was
//     answered, apnsctl reconnects and writes the unanswered lines again.
//     A line apnsd had already taken may be sent to APNs twice: delivery is
//     at least once.
//
// Answers are written out in input order, one per line.

// maxInFlightBytes bounds the bytes of lines written and not yet answered,
// so that apnsctl never blocks writing while apnsd waits for it to read.
const maxInFlightBytes = 64 << 10

// Backoff before sending again a line answered queue_full or unavailable.
const (
	resendBackoff    = 50 * time.Millisecond
	resendBackoffMax = time.Second
)

type outLine struct {
	idx     int
	data    []byte
	backoff time.Duration
}

type answerMsg struct {
	gen  int
	line []byte
	err  error
}

// exchange writes the lines from in (closed at the end of input) to apnsd
// and calls emit with each line's final answer, in input order. It returns
// an error (wrapping ipc.ErrUnreachable or ctx's) when apnsd could not be
// reached, or ctx ended, before every line was answered; emit has then been
// called for the answered prefix only, and unanswered reports how many
// lines were left.
func (c *cli) exchange(ctx context.Context, in <-chan []byte, emit func(line []byte)) (unanswered int, err error) {
	var (
		cn       *ipc.Conn
		gen      int
		stop     chan struct{}
		answers  = make(chan answerMsg, 16)
		retry    = make(chan *outLine, 16)
		pending  []*outLine // written on cn, not answered, in order
		inflight int        // their bytes
		results  = map[int][]byte{}
		next     int // next index to emit
		count    int // lines read from in
		eof      bool
	)
	connect := func() error {
		for {
			var err error
			cn, err = c.client.Connect(ctx)
			if err == nil {
				break
			}
			if gen == 0 || ctx.Err() != nil {
				return err // the first connection fails at once
			}
			select { // apnsd restarting: its socket comes back
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
		gen++
		stop = make(chan struct{})
		g, s, conn := gen, stop, cn
		go func() {
			for {
				line, err := conn.ReadLine()
				select {
				case answers <- answerMsg{gen: g, line: line, err: err}:
				case <-s:
					return
				}
				if err != nil {
					return
				}
			}
		}()
		return nil
	}
	// reconnect replaces the connection and writes the pending lines again.
	var reconnect func() error
	write := func(l *outLine) error {
		pending = append(pending, l)
		inflight += len(l.data)
		if err := cn.WriteLine(l.data); err != nil {
			return reconnect()
		}
		return nil
	}
	reconnect = func() error {
		for {
			if cn != nil {
				cn.Close()
				close(stop)
			}
			if err := connect(); err != nil {
				return err
			}
			ok := true
			for _, l := range pending {
				if cn.WriteLine(l.data) != nil {
					ok = false
					break
				}
			}
			if ok {
				return nil
			}
		}
	}
	defer func() {
		if cn != nil {
			cn.Close()
			close(stop)
		}
	}()
	if err := connect(); err != nil {
		return 0, err
	}
	for !eof || next < count {
		input := in
		if eof || (len(pending) > 0 && inflight >= maxInFlightBytes) {
			input = nil
		}
		select {
		case data, ok := <-input:
			if !ok {
				eof = true
				continue
			}
			l := &outLine{idx: count, data: data, backoff: resendBackoff}
			count++
			if err := write(l); err != nil {
				return count - next, err
			}
		case l := <-retry:
			if err := write(l); err != nil {
				return count - next, err
			}
		case a := <-answers:
			if a.gen != gen {
				continue // from a connection given up
			}
			if a.err != nil || len(pending) == 0 {
				if len(pending) == 0 && a.err != nil {
					// Nothing owed: reconnect only when more is written.
					if err := reconnect(); err != nil {
						return count - next, err
					}
					continue
				}
				if err := reconnect(); err != nil {
					return count - next, fmt.Errorf("connection to apnsd ended with %d answer(s) owed and could not be reopened: %w", len(pending), err)
				}
				continue
			}
			l := pending[0]
			pending = pending[1:]
			inflight -= len(l.data)
			var r ipc.Response
			if json.Unmarshal(a.line, &r) == nil && r.Error != "" && r.Retryable != nil && *r.Retryable && ctx.Err() == nil {
				if r.Error == ipc.CodeShuttingDown {
					// Send it again at once, on a fresh connection:
					// the lines behind it are written again too.
					pending = append([]*outLine{l}, pending...)
					inflight += len(l.data)
					if err := reconnect(); err != nil {
						return count - next, err
					}
					continue
				}
				wait := l.backoff/2 + rand.N(l.backoff/2+1)
				if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > wait {
					l.backoff = min(2*l.backoff, resendBackoffMax)
					time.AfterFunc(wait, func() {
						select {
						case retry <- l:
						case <-ctx.Done():
						}
					})
					continue
				}
			}
			results[l.idx] = a.line
			for {
				line, ok := results[next]
				if !ok {
					break
				}
				delete(results, next)
				emit(line)
				next++
			}
		case <-ctx.Done():
			return count - next, ctx.Err()
		}
	}
	return 0, nil
}

// withDeadline adds "deadline" (Unix ms) to a request line that is a JSON
// object without one; any other line is returned as is (apnsd answers it).
func withDeadline(line []byte, deadline time.Time) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(line, &m) != nil || m == nil {
		return line
	}
	if op, ok := m["op"]; ok && !bytes.Equal(op, []byte(`"send"`)) {
		return line
	}
	if _, ok := m["deadline"]; ok {
		return line
	}
	m["deadline"] = json.RawMessage(fmt.Sprint(deadline.UnixMilli()))
	b, err := json.Marshal(m)
	if err != nil {
		return line
	}
	return b
}
