package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingConn counts the Read and Write calls on a connection and keeps
// what was written. Conn may be nil for a writer-only test.
type countingConn struct {
	net.Conn
	mu            sync.Mutex
	reads, writes int
	written       [][]byte
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Conn.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.written = append(c.written, append([]byte(nil), p...))
	c.mu.Unlock()
	if c.Conn == nil {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *countingConn) Close() error {
	if c.Conn == nil {
		return nil
	}
	return c.Conn.Close()
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	if c.Conn == nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *countingConn) counts() (reads, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads, c.writes
}

// countingListener wraps each accepted connection in a countingConn.
type countingListener struct {
	net.Listener
	conns chan *countingConn
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c}
	l.conns <- cc
	return cc, nil
}

// TestWritesPerWakeUp: a client that writes 300 lines at once, whose
// answers are all known at once (refusals), gets them in at
// most one write per read the server made: answers are not flushed one by
// one while the reader is still working through lines it has read.
func TestWritesPerWakeUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := countingListener{Listener: l, conns: make(chan *countingConn, 1)}
	s := &Server{Backend: &fakeBackend{}}
	go s.Serve(cl)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.CloseConns(ctx)
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 300
	var lines bytes.Buffer
	// Three kinds of answer the server knows at once: bad_json,
	// unknown_op, and the backend's immediate queue_full.
	codes := []string{CodeBadJSON, CodeUnknownOp, CodeQueueFull}
	for i := range n {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&lines, "garbage %d\n", i)
		case 1:
			fmt.Fprintf(&lines, `{"id":%d,"op":"nope"}`+"\n", i)
		case 2:
			fmt.Fprintf(&lines, `{"id":%d,"token":"aabb","alert":"x","app":"full"}`+"\n", i)
		}
	}
	if _, err := nc.Write(lines.Bytes()); err != nil {
		t.Fatal(err)
	}
	nc.(*net.TCPConn).CloseWrite()
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	for i := range n {
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		var r Response
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("answer %d: %q: %v", i, line, err)
		}
		if r.Error != codes[i%3] || i%3 != 0 && string(r.ID) != fmt.Sprint(i) {
			t.Fatalf("answer %d: %s", i, line)
		}
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("more answers than requests")
	}
	cc := <-cl.conns
	reads, writes := cc.counts()
	t.Logf("%d answers in %d writes; the server read %d times", n, writes, reads)
	if writes > reads {
		t.Errorf("%d writes for %d reads: answers were flushed without the writer having to wait", writes, reads)
	}
}

// TestWriterGathersReadyAnswers: answers that become ready together leave
// in one write, in request order; when the next answer is not ready, what
// is buffered is written before waiting for it.
func TestWriterGathersReadyAnswers(t *testing.T) {
	const n = 64
	order := make(chan pending, n)
	chs := make([]chan *Response, n)
	for i := range chs {
		chs[i] = make(chan *Response, 1)
		order <- pending{id: json.RawMessage(fmt.Sprint(i)), ch: chs[i]}
	}
	cc := &countingConn{}
	rs := newReaderState()
	rs.reading.Store(true) // the reader waits for the client
	done := make(chan struct{})
	s := &Server{}
	slots := make(chan struct{}, n)
	for range n {
		slots <- struct{}{}
	}
	go s.writeLoop(cc, order, slots, time.Minute, rs, done)

	answer := func(i int) { chs[i] <- &Response{OK: true, Status: 200, ApnsID: fmt.Sprint("a", i)} }
	// The first half becomes ready, last one first.
	for i := n/2 - 1; i >= 0; i-- {
		answer(i)
	}
	waitWrites(t, cc, 1)
	// The writer now waits for answer n/2; the rest becomes ready together.
	for i := n - 1; i >= n/2; i-- {
		answer(i)
	}
	waitWrites(t, cc, 2)
	close(order)
	<-done
	if _, w := cc.counts(); w != 2 {
		t.Fatalf("%d writes, want 2", w)
	}
	var all []string
	for k, w := range cc.written {
		got := strings.Split(strings.TrimSuffix(string(w), "\n"), "\n")
		if len(got) != n/2 {
			t.Errorf("write %d has %d answers, want %d", k, len(got), n/2)
		}
		all = append(all, got...)
	}
	for i, line := range all {
		want := fmt.Sprintf(`{"id":%d,"ok":true,"status":200,"apns_id":"a%d"}`, i, i)
		if line != want {
			t.Fatalf("answer %d: %s, want %s", i, line, want)
		}
	}
}

func waitWrites(t *testing.T, cc *countingConn, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, w := cc.counts(); w >= n {
			return
		}
		if time.Now().After(deadline) {
			_, w := cc.counts()
			t.Fatalf("%d writes after 10s, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// recyclingBackend answers every send at once on a NewAnswer channel and
// remembers the channels it handed out.
type recyclingBackend struct {
	instantBackend
	mu   sync.Mutex
	gave map[chan *Response]int
}

func (b *recyclingBackend) Submit(_ *Peer, s *Send) (chan *Response, *Error) {
	ch := NewAnswer()
	if len(ch) != 0 {
		panic("NewAnswer gave a channel with an answer in it")
	}
	b.mu.Lock()
	b.gave[ch]++
	b.mu.Unlock()
	ch <- &Response{OK: true, Status: 200, ApnsID: s.Token}
	return ch, nil
}

// TestAnswerChannelsReleased: the server puts back each Submit channel once
// it has read its answer, exactly once per answer, and every answer still
// reaches its own request.
func TestAnswerChannelsReleased(t *testing.T) {
	var mu sync.Mutex
	released := map[chan *Response]int{}
	releasedHook = func(ch chan *Response) {
		mu.Lock()
		released[ch]++
		mu.Unlock()
	}
	t.Cleanup(func() { releasedHook = nil }) // after the server's cleanup
	b := &recyclingBackend{gave: map[chan *Response]int{}}
	c := startServer(t, &Server{Backend: b})
	nc, err := c.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const n = 500
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, `{"id":%d,"token":"%04x","alert":"x"}`+"\n", i, i)
	}
	if _, err := nc.Write([]byte(lines.String())); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	for i := range n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`"id":%d,`, i); !strings.Contains(line, want) || !strings.Contains(line, fmt.Sprintf(`"apns_id":"%04x"`, i)) {
			t.Fatalf("answer %d: %s", i, line)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	total, gave := 0, 0
	for ch, k := range released {
		total += k
		if k > b.gave[ch] {
			t.Errorf("a channel was released %d times, handed out %d", k, b.gave[ch])
		}
	}
	for _, k := range b.gave {
		gave += k
	}
	if total != n || gave != n {
		t.Errorf("%d channels handed out, %d released, want %d each", gave, total, n)
	}
}

// readAtBackend records each send's ReadAt and answers the first one only
// after a delay.
type readAtBackend struct {
	instantBackend
	mu    sync.Mutex
	at    []time.Time
	delay time.Duration
}

func (b *readAtBackend) Submit(_ *Peer, s *Send) (chan *Response, *Error) {
	b.mu.Lock()
	b.at = append(b.at, s.ReadAt)
	first := len(b.at) == 1
	b.mu.Unlock()
	ch := NewAnswer()
	r := &Response{OK: true, Status: 200}
	if first {
		time.AfterFunc(b.delay, func() { ch <- r })
	} else {
		ch <- r
	}
	return ch, nil
}

// TestReadAtAfterBackpressure: Send.ReadAt is when the line was read, and
// a line that waited in the buffer behind backpressure (max_pending_per_conn
// answers owed) gets the time its wait ended, not the time of the read, so
// its request_timeout does not run while it waits.
func TestReadAtAfterBackpressure(t *testing.T) {
	const delay = 300 * time.Millisecond
	b := &readAtBackend{delay: delay}
	c := startServer(t, &Server{Backend: b, MaxPending: 1})
	nc, err := c.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	before := time.Now()
	// Three lines in one write: the first is answered after delay; the
	// second is submitted at once and its push waits for the first's
	// slot; the third was read with the others but is taken after that wait.
	if _, err := nc.Write([]byte(`{"id":1,"token":"aa","alert":"x"}` + "\n" + `{"id":2,"token":"bb","alert":"x"}` + "\n" + `{"id":3,"token":"cc","alert":"x"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	for range 3 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.at) != 3 {
		t.Fatalf("%d sends", len(b.at))
	}
	if b.at[0].Before(before) || b.at[0].After(before.Add(delay)) {
		t.Errorf("first ReadAt %v not the read time (write at %v)", b.at[0], before)
	}
	if got := b.at[2].Sub(b.at[0]); got < delay*3/4 {
		t.Errorf("the line that waited behind MaxPending has ReadAt %v after the first; want about %v (its wait)", got, delay)
	}
}

// lendingBackend answers every send with a Response it lends
// (Response.Owner), once gate is closed, and counts how often each comes
// back.
type lendingBackend struct {
	instantBackend
	gate     chan struct{}
	mu       sync.Mutex
	lent     int
	returned map[*Response]int
}

func (b *lendingBackend) Submit(_ *Peer, s *Send) (chan *Response, *Error) {
	ch := NewAnswer()
	// Long enough that 400 answers take several of the writer's flushes.
	r := &Response{OK: true, Status: 200, ApnsID: s.Token, Message: strings.Repeat("m", 200), Owner: b}
	b.mu.Lock()
	b.lent++
	b.mu.Unlock()
	go func() {
		<-b.gate
		ch <- r
	}()
	return ch, nil
}

func (b *lendingBackend) ResponseDone(r *Response) {
	b.mu.Lock()
	b.returned[r]++
	b.mu.Unlock()
}

// TestLentResponsesReleased: the server gives back every lent Response
// exactly once, after writing it, and also when the client has gone away
// without reading (the writer then drops the answers).
func TestLentResponsesReleased(t *testing.T) {
	for _, hangUp := range []bool{false, true} {
		t.Run(fmt.Sprintf("hang-up=%v", hangUp), func(t *testing.T) {
			b := &lendingBackend{returned: map[*Response]int{}, gate: make(chan struct{})}
			c := startServer(t, &Server{Backend: b})
			nc, err := c.Dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			const n = 400
			var lines strings.Builder
			for i := range n {
				fmt.Fprintf(&lines, `{"id":%d,"token":"%04x","alert":"x"}`+"\n", i, i)
			}
			if _, err := nc.Write([]byte(lines.String())); err != nil {
				t.Fatal(err)
			}
			if hangUp {
				// The answers come once every line was read and the client
				// is gone: the writer's first write fails and the rest are
				// dropped.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					b.mu.Lock()
					all := b.lent == n
					b.mu.Unlock()
					if all {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the server did not read every line in 10s")
					}
				}
				nc.Close()
				time.Sleep(50 * time.Millisecond)
				close(b.gate)
			} else {
				close(b.gate)
				br := bufio.NewReader(nc)
				for i := range n {
					line, err := br.ReadString('\n')
					if err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(line, fmt.Sprintf(`"apns_id":"%04x"`, i)) {
						t.Fatalf("answer %d: %s", i, line)
					}
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				b.mu.Lock()
				lent, back := b.lent, len(b.returned)
				twice := 0
				for _, k := range b.returned {
					if k != 1 {
						twice++
					}
				}
				b.mu.Unlock()
				if twice > 0 {
					t.Fatalf("%d responses released more than once", twice)
				}
				if back == lent && lent == n {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d responses lent, %d released", lent, back)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestAnswerQueue: answers leave in order; a queue that never empties
// (a client that keeps its pipeline full) stays the size of what is
// outstanding instead of growing; an emptied queue keeps no array.
func TestAnswerQueue(t *testing.T) {
	var a answerQueue
	next, out := 0, 0
	a.push(pending{line: []byte("0")})
	next++
	limit := max(cap(a.q), 128) // the pool may give an array another test grew
	for round := range 20000 {
		for a.len() < 50+round%14 { // 50 to 63 outstanding, never empty
			a.push(pending{line: []byte(strconv.Itoa(next))})
			next++
		}
		for range 1 + round%7 {
			if got := string(a.front().line); got != strconv.Itoa(out) {
				t.Fatalf("front is %s, want %d", got, out)
			}
			a.pop()
			out++
		}
		if cap(a.q) > limit {
			t.Fatalf("after %d answers the queue's array holds %d for %d outstanding", out, cap(a.q), a.len())
		}
	}
	for a.len() > 0 {
		a.pop()
		out++
	}
	if out != next || a.q != nil || a.qp != nil {
		t.Errorf("%d in, %d out; emptied queue keeps %d slots", next, out, cap(a.q))
	}
}
