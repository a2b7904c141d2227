package apns

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// echoPeer answers each request with its own apns-id: 200, or 400
// BadDeviceToken (with a body) for a token ending in "0bad".
func echoPeer(pc *peerConn) {
	serveRequests(pc, serveOpts{}, func(q *peerReq) {
		h := []hpack.HeaderField{{Name: "apns-id", Value: q.get("apns-id")}}
		if strings.HasSuffix(q.get(":path"), "0bad") {
			pc.respond(q.id, 400, h, []byte(`{"reason":"BadDeviceToken"}`))
			return
		}
		pc.respond(q.id, 200, h, nil)
	})
}

// checking is a Completer that checks, while it completes, that the lent
// response is its own request's.
type checking struct {
	id   string
	bad  bool
	errs *atomic.Int64
	done func()
}

func (c *checking) Complete(res *Response, err error) {
	switch {
	case err != nil, res.ApnsID != c.id:
		c.errs.Add(1)
	case c.bad && (res.StatusCode != 400 || res.Reason != ReasonBadDeviceToken):
		c.errs.Add(1)
	case !c.bad && res.StatusCode != 200:
		c.errs.Add(1)
	}
	c.done()
}

// TestLentStreamsReused: EnqueueTo's responses are lent, so their streams
// are reused (a few allocated for thousands of requests), and each answer
// is still its own request's while Complete reads it, body included.
func TestLentStreamsReused(t *testing.T) {
	var made atomic.Int64
	streamAllocated = func() { made.Add(1) }
	t.Cleanup(func() { streamAllocated = nil }) // after the client's cleanup
	p := newPeer(t, echoPeer)
	c := p.client(t, nil)
	const n, inFlight = 3000, 64
	slots := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	var errs atomic.Int64
	for i := range n {
		slots <- struct{}{}
		tok := "aa01"
		if i%5 == 0 {
			tok = "aa0bad"
		}
		r := testReq(tok)
		wg.Add(1)
		k := &checking{id: headerValue(r, "apns-id"), bad: i%5 == 0, errs: &errs, done: func() { <-slots; wg.Done() }}
		if err := c.EnqueueTo(r, time.Now().Add(20*time.Second), k); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if e := errs.Load(); e > 0 {
		t.Fatalf("%d of %d lent responses were not their request's answer", e, n)
	}
	if m := made.Load(); m > 2*inFlight {
		t.Errorf("%d streams allocated for %d requests at most %d in flight: not reused", m, n, inFlight)
	}
	t.Logf("%d streams allocated for %d requests", made.Load(), n)
}

// TestEnqueueResponsesKept: Enqueue's responses are the caller's to keep:
// their streams are never reused, so every response kept until the end
// is still its own request's.
func TestEnqueueResponsesKept(t *testing.T) {
	p := newPeer(t, echoPeer)
	c := p.client(t, nil)
	const n = 500
	kept := make([]*Response, n)
	ids := make([]string, n)
	slots := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		slots <- struct{}{}
		r := testReq("aa01")
		ids[i] = headerValue(r, "apns-id")
		wg.Add(1)
		if err := c.Enqueue(r, time.Now().Add(20*time.Second), func(res *Response, err error) {
			if err == nil {
				kept[i] = res
			}
			<-slots
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, res := range kept {
		if res == nil || res.ApnsID != ids[i] || res.StatusCode != 200 {
			t.Fatalf("response %d, kept after its callback: %+v, want apns-id %s", i, res, ids[i])
		}
	}
}

func headerValue(r *Request, name string) string {
	for _, h := range r.Header {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

// heldCompleter, completing the first request, sends a second one and
// waits until the peer has it (so a stream freed too early would now be
// the second request's), then checks its own response.
type heldCompleter struct {
	c      *Client
	id     string
	seen   chan string
	second *checking
	got    chan string
}

func (h *heldCompleter) Complete(res *Response, err error) {
	if err != nil {
		h.got <- err.Error()
		return
	}
	r := testReq("aa02")
	h.second.id = headerValue(r, "apns-id")
	if err := h.c.EnqueueTo(r, time.Now().Add(20*time.Second), h.second); err != nil {
		h.got <- err.Error()
		return
	}
	select {
	case id := <-h.seen:
		if id != h.second.id {
			h.got <- "the peer saw " + id
			return
		}
	case <-time.After(10 * time.Second):
		h.got <- "the second request never reached the peer"
		return
	}
	if res.ApnsID != h.id || res.StatusCode != 200 {
		h.got <- "while its Complete ran, the lent response became " + res.ApnsID
		return
	}
	h.got <- ""
}

// TestLentResponseHeldDuringComplete: a lent response's stream is not
// reused before Complete returns, even when another request starts on the
// connection meanwhile.
func TestLentResponseHeldDuringComplete(t *testing.T) {
	seen := make(chan string, 4)
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			pc.respond(q.id, 200, []hpack.HeaderField{{Name: "apns-id", Value: q.get("apns-id")}}, nil)
			seen <- q.get("apns-id")
		})
	})
	c := p.client(t, nil)
	var errs atomic.Int64
	secondDone := make(chan struct{})
	h := &heldCompleter{c: c, seen: seen, got: make(chan string, 1),
		second: &checking{errs: &errs, done: func() { close(secondDone) }}}
	r := testReq("aa01")
	h.id = headerValue(r, "apns-id")
	if err := c.EnqueueTo(r, time.Now().Add(20*time.Second), h); err != nil {
		t.Fatal(err)
	}
	if id := <-seen; id != h.id {
		t.Fatalf("the peer saw %s first", id)
	}
	if msg := <-h.got; msg != "" {
		t.Fatal(msg)
	}
	<-secondDone
	if errs.Load() != 0 {
		t.Error("the second request's answer was not its own")
	}
}

// slotJob makes attempts one after another in one Slot, the next from
// within the Complete of the one before (as the daemon's retries do).
type slotJob struct {
	c        *Client
	slot     Slot
	attempts int
	slow     bool // the first attempt's answer comes after its deadline
	id       string
	errs     *atomic.Int64
	timeouts *atomic.Int64
	done     func()
}

func (j *slotJob) next() {
	tok := "aa01"
	deadline := time.Now().Add(20 * time.Second)
	switch {
	case j.slow && j.attempts == 0:
		tok, deadline = "aa0de1", time.Now().Add(100*time.Millisecond)
	case j.slow && j.attempts == 1:
		tok = "aa0de2" // in flight when the first one's late answer comes
	}
	r := testReq(tok)
	j.id = headerValue(r, "apns-id")
	j.attempts++
	if err := j.c.EnqueueIn(&j.slot, r, deadline, j); err != nil {
		j.errs.Add(1)
		j.done()
	}
}

func (j *slotJob) Complete(res *Response, err error) {
	switch {
	case j.slow && j.attempts == 1:
		if !errors.Is(err, context.DeadlineExceeded) {
			j.errs.Add(1) // the slow attempt must end at its deadline
		} else {
			j.timeouts.Add(1)
		}
	case err != nil || res.ApnsID != j.id || res.StatusCode != 200:
		j.errs.Add(1) // an answer that is not this attempt's
	}
	if j.attempts < 5 {
		j.next()
		return
	}
	j.done()
}

// TestEnqueueInReusedSlot: a Slot reused for attempt after attempt, from
// within Complete, gets each attempt's own answer; an attempt that ended
// at its deadline (stream reset) never delivers its late answer (at
// 300 ms) to the next attempt in the same Slot (in flight until 600 ms).
func TestEnqueueInReusedSlot(t *testing.T) {
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			h := []hpack.HeaderField{{Name: "apns-id", Value: q.get("apns-id")}}
			switch {
			case strings.HasSuffix(q.get(":path"), "0de1"):
				time.AfterFunc(300*time.Millisecond, func() { pc.respond(q.id, 200, h, nil) })
				return
			case strings.HasSuffix(q.get(":path"), "0de2"):
				time.AfterFunc(500*time.Millisecond, func() { pc.respond(q.id, 200, h, nil) })
				return
			}
			pc.respond(q.id, 200, h, nil)
		})
	})
	c := p.client(t, nil)
	const jobs = 64
	var wg sync.WaitGroup
	var errs, timeouts atomic.Int64
	for i := range jobs {
		wg.Add(1)
		j := &slotJob{c: c, slow: i%4 == 0, errs: &errs, timeouts: &timeouts, done: wg.Done}
		j.next()
	}
	wg.Wait()
	if e := errs.Load(); e > 0 {
		t.Fatalf("%d of %d attempts got an answer that was not their own", e, 5*jobs)
	}
	if n := timeouts.Load(); n != jobs/4 {
		t.Errorf("%d slow attempts ended at their deadline, want %d", n, jobs/4)
	}
}
