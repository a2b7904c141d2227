package apns

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestPrefaceSettingsAndAck(t *testing.T) {
	checkNoLeak(t)
	gotAck := make(chan bool, 1)
	var clientSettings map[http2.SettingID]uint32
	p := newPeer(t, func(pc *peerConn) {
		if err := pc.handshake(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 7}); err != nil {
			t.Errorf("handshake: %v", err)
			return
		}
		clientSettings = pc.clientSettings
		r := pc.reader(serveOpts{})
		acked := false
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if sf, ok := ev.frame.(*http2.SettingsFrame); ok && sf.IsAck() {
				acked = true
			}
			if ev.req != nil {
				// The client must have acknowledged our SETTINGS before
				// (or with) its first request? Not required by the RFC,
				// but it must arrive: report what we saw by now.
				select {
				case gotAck <- acked:
				default:
				}
				pc.respond(ev.req.id, 200, []hpack.HeaderField{{Name: "apns-id", Value: "x"}}, nil)
			}
		}
	})
	c := p.client(t, nil)
	res, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd"))
	if err != nil || res.StatusCode != 200 || res.ApnsID != "x" {
		t.Fatalf("got %+v, %v", res, err)
	}
	if !<-gotAck {
		t.Error("the client sent a request before acknowledging the server's SETTINGS")
	}
	if clientSettings[http2.SettingEnablePush] != 0 || clientSettings[http2.SettingMaxHeaderListSize] != maxResponseHeaderBytes {
		t.Errorf("client SETTINGS %v: want ENABLE_PUSH 0 and MAX_HEADER_LIST_SIZE %d", clientSettings, maxResponseHeaderBytes)
	}
	c.Close()
}

// hpackReprs walks an HPACK block and returns each representation's kind:
// 'i' indexed, 'a' literal with incremental indexing, 'n' never indexed,
// 'w' without indexing, 's' table size update (value in sizes).
func hpackReprs(t *testing.T, b []byte) (kinds []byte, sizes []uint64) {
	readInt := func(n uint) uint64 {
		mask := byte(1<<n - 1)
		v := uint64(b[0] & mask)
		b = b[1:]
		if v < uint64(mask) {
			return v
		}
		var m uint
		for {
			c := b[0]
			b = b[1:]
			v += uint64(c&0x7f) << m
			m += 7
			if c&0x80 == 0 {
				return v
			}
		}
	}
	skipString := func() {
		l := readInt(7)
		b = b[l:]
	}
	for len(b) > 0 {
		c := b[0]
		switch {
		case c&0x80 != 0:
			readInt(7)
			kinds = append(kinds, 'i')
		case c&0xc0 == 0x40:
			if readInt(6) == 0 {
				skipString()
			}
			skipString()
			kinds = append(kinds, 'a')
		case c&0xe0 == 0x20:
			sizes = append(sizes, readInt(5))
			kinds = append(kinds, 's')
		case c&0xf0 == 0x10:
			if readInt(4) == 0 {
				skipString()
			}
			skipString()
			kinds = append(kinds, 'n')
		default:
			if readInt(4) == 0 {
				skipString()
			}
			skipString()
			kinds = append(kinds, 'w')
		}
	}
	return kinds, sizes
}

// fieldKinds pairs each decoded field with its representation kind.
func fieldKinds(t *testing.T, q *peerReq) map[string]byte {
	kinds, _ := hpackReprs(t, q.block)
	var fk []byte
	for _, k := range kinds {
		if k != 's' {
			fk = append(fk, k)
		}
	}
	if len(fk) != len(q.fields) {
		t.Fatalf("%d representations for %d fields", len(fk), len(q.fields))
	}
	m := map[string]byte{}
	for i, f := range q.fields {
		m[f.Name] = fk[i]
	}
	return m
}

func TestHPACKIndexingOnPurpose(t *testing.T) {
	reqs := make(chan *peerReq, 4)
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			reqs <- q
			pc.respond(q.id, 200, nil, nil)
		})
	})
	c := p.client(t, func(o *ClientOptions) {
		o.Authorization = func() (string, error) { return "bearer eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJBQkMifQ.c2lnbmF0dXJl", nil }
	})
	for i := range 2 {
		if _, err := c.Do(ctxFor(t, 5*time.Second), testReq(fmt.Sprintf("abcd%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	first, second := <-reqs, <-reqs
	k1, k2 := fieldKinds(t, first), fieldKinds(t, second)
	for _, name := range []string{"apns-id", ":path", "content-length"} {
		if k1[name] != 'n' || k2[name] != 'n' {
			t.Errorf("%s sent as %c/%c, want never-indexed literals (n)", name, k1[name], k2[name])
		}
	}
	for _, name := range []string{"apns-topic", "apns-push-type", "authorization", ":authority"} {
		if k1[name] != 'a' || k2[name] != 'i' {
			t.Errorf("%s sent as %c then %c, want indexed: added to the table (a), then referenced (i)", name, k1[name], k2[name])
		}
	}
	if first.get("authorization") == "" || second.get("apns-topic") != "com.example.app" {
		t.Errorf("fields %v", second.fields)
	}
}

func TestHeaderTableSizeSetting(t *testing.T) {
	reqs := make(chan *peerReq, 4)
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}) != nil {
			return
		}
		pc.dec.SetAllowedMaxDynamicTableSize(0)
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req != nil {
				reqs <- ev.req
				pc.respond(ev.req.id, 200, nil, nil)
			}
		}
	})
	c := p.client(t, nil)
	for range 2 {
		if _, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd")); err != nil {
			t.Fatal(err)
		}
	}
	kinds, sizes := hpackReprs(t, (<-reqs).block)
	if kinds[0] != 's' || sizes[0] != 0 {
		t.Errorf("first block starts %c (sizes %v), want a table size update to 0", kinds[0], sizes)
	}
	for _, q := range []*peerReq{<-reqs} {
		kinds, _ := hpackReprs(t, q.block)
		if bytes.IndexByte(kinds, 'a') >= 0 {
			t.Errorf("with HEADER_TABLE_SIZE 0 the client still adds to the table: %s", kinds)
		}
	}
}

// TestMaxConcurrentStreamsChanges: the limit is lowered below what is in
// flight mid-connection (no new stream until under it), then raised.
func TestMaxConcurrentStreamsChanges(t *testing.T) {
	checkNoLeak(t)
	var maxLowered, maxRaised, newWhileOver atomic.Int32
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 8}) != nil {
			return
		}
		r := pc.reader(serveOpts{})
		var open atomic.Int32
		var held []uint32
		phase, inPhase := 0, 0 // 0: fill 8; 1: lowered to 2, ACK pending; 2: lowered; 3: raised, ACK pending; 4: raised
		answerLater := func(id uint32) {
			go func() {
				time.Sleep(20 * time.Millisecond)
				open.Add(-1)
				pc.respond(id, 200, nil, nil)
			}()
		}
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if sf, ok := ev.frame.(*http2.SettingsFrame); ok && sf.IsAck() {
				switch phase {
				case 1:
					phase = 2
					for _, id := range held {
						answerLater(id)
					}
					held = nil
				case 3:
					phase = 4
				}
				continue
			}
			if ev.req == nil {
				continue
			}
			if ev.req.get(":path") == "/3/device/00" { // the warm-up request
				pc.respond(ev.req.id, 200, nil, nil)
				continue
			}
			n := open.Add(1)
			switch phase {
			case 0:
				held = append(held, ev.req.id)
				if len(held) == 8 {
					phase = 1
					pc.write(func(fr *http2.Framer) error {
						return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 2})
					})
				}
				continue
			case 1:
				newWhileOver.Add(1) // allowed only before the client saw the SETTINGS
			case 2:
				if n > maxLowered.Load() {
					maxLowered.Store(n)
				}
				if inPhase++; inPhase == 20 {
					phase = 3
					pc.write(func(fr *http2.Framer) error {
						return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 5})
					})
				}
			case 4:
				if n > maxRaised.Load() {
					maxRaised.Store(n)
				}
			}
			answerLater(ev.req.id)
		}
	})
	c := p.client(t, nil)
	// Prove the connection first so the warm-up's one-stream rule is over.
	if _, err := c.Do(ctxFor(t, 5*time.Second), testReq("00")); err != nil {
		t.Fatal(err)
	}
	const n = 80
	rs := newResults(t, n)
	for i := range n {
		if err := c.Enqueue(testReq("abcd"), time.Now().Add(30*time.Second), rs.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range rs.wait(30 * time.Second) {
		if r.err != nil || r.res.StatusCode != 200 {
			t.Errorf("request %d: %+v %v", i, r.res, r.err)
		}
	}
	if m := maxLowered.Load(); m != 2 {
		t.Errorf("after MAX_CONCURRENT_STREAMS was lowered to 2 (8 in flight), at most %d were open at once, want 2", m)
	}
	if m := maxRaised.Load(); m != 5 {
		t.Errorf("after it was raised to 5, at most %d were open at once, want 5", m)
	}
	if newWhileOver.Load() != 0 {
		t.Errorf("%d new streams while 8 were open under a limit of 8", newWhileOver.Load())
	}
	c.Close()
}

// TestFlowControlSend: INITIAL_WINDOW_SIZE 0 holds bodies back; raising it
// mid-connection applies to the open stream; a stream WINDOW_UPDATE sends
// the rest; the connection window bounds all streams together.
func TestFlowControlSend(t *testing.T) {
	type obs struct {
		dataBeforeRaise int
		afterRaise      int
		connMax         int
	}
	got := make(chan obs, 1)
	body := bytes.Repeat([]byte("x"), 3000)
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}) != nil {
			return
		}
		var o obs
		// Phase 1: one stream, window 0: no DATA may arrive.
		f, err := pc.fr.ReadFrame()
		for err == nil {
			if hf, ok := f.(*http2.HeadersFrame); ok {
				pc.dec.DecodeFull(hf.HeaderBlockFragment())
				break
			}
			f, err = pc.fr.ReadFrame()
		}
		if err != nil {
			return
		}
		id := f.Header().StreamID
		pc.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				break
			}
			if d, ok := f.(*http2.DataFrame); ok {
				o.dataBeforeRaise += len(d.Data())
			}
		}
		pc.nc.SetReadDeadline(time.Time{})
		// Raise the initial window to 1000: the open stream may send 1000.
		pc.write(func(fr *http2.Framer) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
		})
		pc.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				break
			}
			if d, ok := f.(*http2.DataFrame); ok {
				o.afterRaise += len(d.Data())
			}
		}
		pc.nc.SetReadDeadline(time.Time{})
		// The rest, then answer.
		pc.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, 1<<20) })
		total := o.afterRaise
		for total < len(body) {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				return
			}
			if d, ok := f.(*http2.DataFrame); ok {
				total += len(d.Data())
			}
		}
		pc.respond(id, 200, nil, nil)
		// Phase 2: streams get a big window, the connection's is what is
		// left of 65535 (minus 3000): 40 bodies of 3000 must stop there
		// until a connection WINDOW_UPDATE.
		pc.write(func(fr *http2.Framer) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		})
		r := pc.reader(serveOpts{noWindowUpdates: true})
		received := 0
		answered := 0
		pc.nc.SetReadDeadline(time.Now().Add(time.Second))
		for {
			ev, err := r.next()
			if err != nil {
				break
			}
			_ = ev
			received = 0
			for _, q := range r.reqs {
				received += len(q.body)
			}
			if ev.req != nil {
				received += len(ev.req.body)
				answered++
				pc.respond(ev.req.id, 200, nil, nil)
			}
			o.connMax = max(o.connMax, received+answered*3000)
		}
		o.connMax = answeredBytes(r, answered)
		pc.nc.SetReadDeadline(time.Time{})
		got <- o
		pc.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<24) })
		r.o.noWindowUpdates = false
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req != nil {
				pc.respond(ev.req.id, 200, nil, nil)
			}
		}
	})
	c := p.client(t, nil)
	req := testReq("abcd")
	req.Body = body
	if res, err := c.Do(ctxFor(t, 10*time.Second), req); err != nil || res.StatusCode != 200 {
		t.Fatalf("%+v %v", res, err)
	}
	const n = 40
	rs := newResults(t, n)
	for i := range n {
		r := testReq("abcd")
		r.Body = body
		c.Enqueue(r, time.Now().Add(20*time.Second), rs.done(i))
	}
	o := <-got
	for i, r := range rs.wait(20 * time.Second) {
		if r.err != nil || r.res.StatusCode != 200 {
			t.Errorf("request %d: %+v %v", i, r.res, r.err)
		}
	}
	if o.dataBeforeRaise != 0 {
		t.Errorf("%d DATA bytes sent into a zero window", o.dataBeforeRaise)
	}
	if o.afterRaise != 1000 {
		t.Errorf("after INITIAL_WINDOW_SIZE 0 -> 1000 the open stream sent %d bytes, want 1000", o.afterRaise)
	}
	if limit := 65535 - len(body); o.connMax > limit || o.connMax < limit-3000 {
		t.Errorf("bytes sent before the connection WINDOW_UPDATE = %d, want just under the connection window %d", o.connMax, limit)
	}
}

// answeredBytes is the DATA the reader saw in requests still open plus
// those answered (3000 bytes each).
func answeredBytes(r *reader, answered int) int {
	n := answered * 3000
	for _, q := range r.reqs {
		n += len(q.body)
	}
	return n
}

// TestFramesAndContinuation: MAX_FRAME_SIZE bounds every frame; big header
// blocks go out as HEADERS + CONTINUATION; a response split over
// CONTINUATION frames is read.
func TestFramesAndContinuation(t *testing.T) {
	maxSeen := make(chan [2]int, 1)
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384}) != nil {
			return
		}
		maxData, conts := 0, 0
		var q *peerReq
		r := pc.reader(serveOpts{})
		for q == nil {
			f, err := pc.fr.ReadFrame()
			if err != nil {
				return
			}
			if f.Header().Length > 16384 {
				t.Errorf("frame of %d bytes beyond MAX_FRAME_SIZE", f.Header().Length)
			}
			switch f := f.(type) {
			case *http2.HeadersFrame:
				pc.hdrID, pc.hdrBlock = f.StreamID, append([]byte(nil), f.HeaderBlockFragment()...)
			case *http2.ContinuationFrame:
				conts++
				pc.hdrBlock = append(pc.hdrBlock, f.HeaderBlockFragment()...)
				if f.HeadersEnded() {
					r.headersDone()
				}
			case *http2.DataFrame:
				maxData = max(maxData, len(f.Data()))
				rq := r.reqs[f.StreamID]
				rq.body = append(rq.body, f.Data()...)
				pc.fr.WriteWindowUpdate(0, f.Length)
				pc.fr.WriteWindowUpdate(f.StreamID, f.Length)
				if f.StreamEnded() {
					q = rq
				}
			}
		}
		maxSeen <- [2]int{maxData, conts}
		if q.get("x-big") != strings.Repeat("v", 40000) || len(q.body) != 100000 {
			t.Errorf("peer got header of %d bytes, body %d", len(q.get("x-big")), len(q.body))
		}
		// Answer with headers split over three frames.
		pc.ebuf.Reset()
		pc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		pc.enc.WriteField(hpack.HeaderField{Name: "apns-id", Value: "split"})
		pc.enc.WriteField(hpack.HeaderField{Name: "apns-pad", Value: strings.Repeat("p", 3000)})
		b := pc.ebuf.Bytes()
		pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: q.id, BlockFragment: b[:10], EndStream: true})
		pc.fr.WriteContinuation(q.id, false, b[10:20])
		pc.fr.WriteContinuation(q.id, true, b[20:])
		for {
			if _, err := r.next(); err != nil {
				return
			}
		}
	})
	c := p.client(t, nil)
	req := testReq("abcd")
	req.Header = append(req.Header, Header{Name: "x-big", Value: strings.Repeat("v", 40000)})
	req.Body = bytes.Repeat([]byte("b"), 100000)
	res, err := c.Do(ctxFor(t, 10*time.Second), req)
	if err != nil || res.StatusCode != 200 || res.ApnsID != "split" || len(res.Get("apns-pad")) != 3000 {
		t.Fatalf("%+v %v", res, err)
	}
	s := <-maxSeen
	if s[0] != 16384 || s[1] < 2 {
		t.Errorf("largest DATA frame %d (want 16384), %d CONTINUATION frames (want 2+)", s[0], s[1])
	}
}

func TestMaxHeaderListSizeSetting(t *testing.T) {
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 600}) != nil {
			return
		}
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req != nil {
				if ev.req.get("x-big") != "" {
					t.Errorf("the peer received a header list beyond its MAX_HEADER_LIST_SIZE")
				}
				pc.respond(ev.req.id, 200, nil, nil)
			}
		}
	})
	c := p.client(t, nil)
	big := testReq("abcd")
	big.Header = append(big.Header, Header{Name: "x-big", Value: strings.Repeat("v", 700)})
	_, err := c.Do(ctxFor(t, 5*time.Second), big)
	if err == nil || !strings.Contains(err.Error(), "MAX_HEADER_LIST_SIZE") {
		t.Fatalf("got %v, want an error naming MAX_HEADER_LIST_SIZE", err)
	}
	if res, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd")); err != nil || res.StatusCode != 200 {
		t.Fatalf("the connection does not work after a refused request: %+v %v", res, err)
	}
}

// TestFlowControlReceive: the client returns credit for what it receives
// (stream and connection), and cuts off an endless body.
func TestFlowControlReceive(t *testing.T) {
	var streamUpdates, connUpdates atomic.Int32
	var resetSeen atomic.Bool
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake() != nil {
			return
		}
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			switch f := ev.frame.(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					connUpdates.Add(1)
				} else {
					streamUpdates.Add(1)
				}
			case *http2.RSTStreamFrame:
				resetSeen.Store(true)
			}
			q := ev.req
			if q == nil {
				continue
			}
			size := 60000 // within the client's 64 KiB stream window
			endless := q.get("x-endless") != ""
			go func() {
				pc.write(func(fr *http2.Framer) error {
					pc.ebuf.Reset()
					pc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: q.id, BlockFragment: pc.ebuf.Bytes(), EndHeaders: true})
				})
				chunk := bytes.Repeat([]byte("d"), 10000)
				sent := 0
				for sent < size || endless {
					last := !endless && sent+len(chunk) >= size
					if err := pc.write(func(fr *http2.Framer) error { return fr.WriteData(q.id, last, chunk) }); err != nil {
						return
					}
					sent += len(chunk)
					if endless && (resetSeen.Load() || sent > 1<<22) {
						return
					}
					if endless {
						time.Sleep(time.Millisecond) // let the client's credit arrive
					}
				}
			}()
		}
	})
	c := p.client(t, nil)
	res, err := c.Do(ctxFor(t, 10*time.Second), testReq("abcd"))
	if err != nil || len(res.Body) != 60000 {
		t.Fatalf("%v, body %d", err, len(res.Body))
	}
	endless := testReq("abcd")
	endless.Header = append(endless.Header, Header{Name: "x-endless", Value: "1"})
	_, err = c.Do(ctxFor(t, 10*time.Second), endless)
	var ce *ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "body exceeds") {
		t.Fatalf("endless body: got %v, want a *ConnError about the body limit", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !resetSeen.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !resetSeen.Load() {
		t.Error("the client did not reset the stream with the endless body")
	}
	if streamUpdates.Load() == 0 || connUpdates.Load() == 0 {
		t.Errorf("WINDOW_UPDATEs from the client: %d stream, %d connection; want both", streamUpdates.Load(), connUpdates.Load())
	}
	if res, err := c.Do(ctxFor(t, 10*time.Second), testReq("abcd")); err != nil || res.StatusCode != 200 {
		t.Fatalf("after the cut-off: %+v %v", res, err)
	}
}

// TestOversizedResponseHeaders: a little over the limit resets the stream;
// a megabyte of CONTINUATION ends the connection; both fail the request
// and the client goes on working.
func TestOversizedResponseHeaders(t *testing.T) {
	checkNoLeak(t)
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			switch q.get("x-mode") {
			case "over":
				pc.respond(q.id, 200, []hpack.HeaderField{{Name: "x-a", Value: strings.Repeat("a", 9000)}, {Name: "x-b", Value: strings.Repeat("b", 9000)}}, nil)
			case "flood":
				pc.write(func(fr *http2.Framer) error {
					pc.ebuf.Reset()
					pc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: q.id, BlockFragment: pc.ebuf.Bytes()})
					junk := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x7f, 0}, 16000/5*5/5)
					for range 64 { // ~1 MB
						if err := fr.WriteContinuation(q.id, false, junk); err != nil {
							return err
						}
					}
					return nil
				})
			default:
				pc.respond(q.id, 200, nil, nil)
			}
		})
	})
	c := p.client(t, nil)
	for _, mode := range []string{"over", "flood"} {
		req := testReq("abcd")
		req.Header = append(req.Header, Header{Name: "x-mode", Value: mode})
		_, err := c.Do(ctxFor(t, 10*time.Second), req)
		var ce *ConnError
		if !errors.As(err, &ce) {
			t.Errorf("%s: got %v, want a *ConnError", mode, err)
		}
		if res, err := c.Do(ctxFor(t, 10*time.Second), testReq("abcd")); err != nil || res.StatusCode != 200 {
			t.Fatalf("after %s: %+v %v", mode, res, err)
		}
	}
	c.Close()
}

// Response.Header keeps the apns-* fields only; a malformed apns-* value
// resets the stream (a *ConnError) and the connection goes on serving.
func TestResponseHeaderFields(t *testing.T) {
	checkNoLeak(t)
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			switch q.get("x-mode") {
			case "bad":
				pc.respond(q.id, 200, []hpack.HeaderField{{Name: "apns-id", Value: "a\x01b"}}, nil)
			default:
				pc.respond(q.id, 200, []hpack.HeaderField{{Name: "server", Value: "x"}, {Name: "apns-id", Value: "id-1"},
					{Name: "date", Value: "Tue, 01 Dec 2026 00:00:00 GMT"}, {Name: "apns-unique-id", Value: "u-1"},
					{Name: "x-odd", Value: "\x01"}, {Name: "apns-x", Value: "1"}, {Name: "apns-y", Value: "2"}}, nil)
			}
		})
	})
	c := p.client(t, nil)
	res, err := c.Do(ctxFor(t, 10*time.Second), testReq("abcd"))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%+v %v", res, err)
	}
	var names []string
	for _, h := range res.Header {
		names = append(names, h.Name+"="+h.Value)
	}
	if got := strings.Join(names, " "); got != "apns-id=id-1 apns-unique-id=u-1 apns-x=1 apns-y=2" || res.ApnsID != "id-1" {
		t.Errorf("kept %q (apns-id %q), want the four apns-* fields in order", got, res.ApnsID)
	}
	req := testReq("abcd")
	req.Header = append(req.Header, Header{Name: "x-mode", Value: "bad"})
	_, err = c.Do(ctxFor(t, 10*time.Second), req)
	var ce *ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("a control character in apns-id: got %v, want a *ConnError saying malformed", err)
	}
	if res, err := c.Do(ctxFor(t, 10*time.Second), testReq("abcd")); err != nil || res.StatusCode != 200 {
		t.Fatalf("after the malformed answer: %+v %v", res, err)
	}
	c.Close()
}

func TestPingHealth(t *testing.T) {
	checkNoLeak(t)
	var pings atomic.Int32
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake() != nil {
			return
		}
		n := pings.Load()
		// The first connection answers PINGs for a while, then stops.
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if f, ok := ev.frame.(*http2.PingFrame); ok && !f.IsAck() {
				if pings.Add(1) == 3 && n == 0 {
					r.o.noPingAck = true
				}
			}
			if ev.req != nil {
				pc.respond(ev.req.id, 200, nil, nil)
			}
		}
	})
	c := p.client(t, func(o *ClientOptions) {
		o.PingInterval = 50 * time.Millisecond
		o.PingTimeout = 200 * time.Millisecond
	})
	if _, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.nconns.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("a connection whose PINGs go unanswered was not replaced (pings %d)", pings.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pings.Load() < 3 {
		t.Errorf("only %d PINGs before the replacement", pings.Load())
	}
	if res, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd")); err != nil || res.StatusCode != 200 {
		t.Fatalf("on the new connection: %+v %v", res, err)
	}
	c.Close()
}

// TestGoAwayInFlight: streams at or below last-stream-id finish on the old
// connection; those above are sent again on a new one; each is answered
// once.
func TestGoAwayInFlight(t *testing.T) {
	checkNoLeak(t)
	var first atomic.Bool
	first.Store(true)
	var answeredOld, answeredNew atomic.Int32
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake() != nil {
			return
		}
		old := first.Swap(false)
		r := pc.reader(serveOpts{})
		var open []uint32
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req == nil {
				continue
			}
			if !old {
				answeredNew.Add(1)
				pc.respond(ev.req.id, 200, nil, nil)
				continue
			}
			if ev.req.get("x-warm") != "" {
				answeredOld.Add(1)
				pc.respond(ev.req.id, 200, nil, nil)
				continue
			}
			open = append(open, ev.req.id)
			if len(open) == 6 {
				last := open[2]
				pc.write(func(fr *http2.Framer) error {
					return fr.WriteGoAway(last, http2.ErrCodeNo, []byte(`{"reason":"Shutdown"}`))
				})
				for _, id := range open[:3] {
					answeredOld.Add(1)
					pc.respond(id, 200, nil, nil)
				}
			}
		}
	})
	c := p.client(t, nil)
	warm := testReq("abcd")
	warm.Header = append(warm.Header, Header{Name: "x-warm", Value: "1"})
	if _, err := c.Do(ctxFor(t, 5*time.Second), warm); err != nil {
		t.Fatal(err)
	}
	rs := newResults(t, 6)
	for i := range 6 {
		c.Enqueue(testReq("abcd"), time.Now().Add(20*time.Second), rs.done(i))
	}
	for i, r := range rs.wait(20 * time.Second) {
		if r.err != nil || r.res.StatusCode != 200 {
			t.Errorf("request %d: %+v %v", i, r.res, r.err)
		}
	}
	if answeredOld.Load() != 4 || answeredNew.Load() != 3 {
		t.Errorf("answered %d on the old connection (want 1+3), %d on the new one (want 3)", answeredOld.Load(), answeredNew.Load())
	}
	c.Close()
}

func TestRSTStream(t *testing.T) {
	var refusedOnce atomic.Bool
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			switch q.get("x-mode") {
			case "refuse":
				if !refusedOnce.Swap(true) {
					pc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(q.id, http2.ErrCodeRefusedStream) })
					return
				}
			case "internal":
				pc.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(q.id, http2.ErrCodeInternal) })
				return
			}
			pc.respond(q.id, 200, nil, nil)
		})
	})
	c := p.client(t, nil)
	req := testReq("abcd")
	req.Header = append(req.Header, Header{Name: "x-mode", Value: "refuse"})
	_, err := c.Do(ctxFor(t, 5*time.Second), req)
	if !errors.Is(err, ErrRefusedStream) {
		t.Fatalf("REFUSED_STREAM without RetryRefusedStream: got %v, want ErrRefusedStream", err)
	}
	refusedOnce.Store(false)
	c = p.client(t, func(o *ClientOptions) { o.RetryRefusedStream = true })
	if res, err := c.Do(ctxFor(t, 5*time.Second), req); err != nil || res.StatusCode != 200 || !refusedOnce.Load() {
		t.Fatalf("REFUSED_STREAM must be retried: %+v %v", res, err)
	}
	req = testReq("abcd")
	req.Header = append(req.Header, Header{Name: "x-mode", Value: "internal"})
	_, err = c.Do(ctxFor(t, 5*time.Second), req)
	var ce *ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Fatalf("RST_STREAM(INTERNAL_ERROR): got %v, want a *ConnError naming it", err)
	}
	if p.nconns.Load() != 2 {
		t.Errorf("%d connections for 2 clients; a stream reset must not cost the connection", p.nconns.Load())
	}
}

func TestStreamIDExhaustion(t *testing.T) {
	checkNoLeak(t)
	var maxID atomic.Uint32
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake() != nil {
			return
		}
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req != nil {
				if ev.req.id > maxID.Load() {
					maxID.Store(ev.req.id)
				}
				pc.respond(ev.req.id, 200, nil, nil)
			}
		}
	})
	c := p.client(t, func(o *ClientOptions) { o.streamIDLimit = 7 })
	for i := range 10 {
		if res, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd")); err != nil || res.StatusCode != 200 {
			t.Fatalf("send %d: %+v %v", i, res, err)
		}
	}
	if maxID.Load() > 7 {
		t.Errorf("stream id %d used beyond the limit 7", maxID.Load())
	}
	if n := p.nconns.Load(); n < 3 {
		t.Errorf("%d connections for 10 requests with 4 stream ids each, want 3", n)
	}
	c.Close()
}

func TestTLSAndALPNRequired(t *testing.T) {
	cases := []struct {
		name string
		conf func(*tls.Config)
		want string
	}{
		{"no-h2", func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }, "does not speak HTTP/2"},
		{"no-alpn", func(c *tls.Config) { c.NextProtos = nil }, "does not speak HTTP/2"},
		{"tls11", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, "TLS handshake"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, serveOK)
			tc.conf(p.conf)
			c := p.client(t, func(o *ClientOptions) { o.UnavailableWait = 300 * time.Millisecond })
			_, err := c.Do(ctxFor(t, 5*time.Second), testReq("abcd"))
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrUnavailable saying %q", err, tc.want)
			}
			if st := c.Status(); !strings.Contains(st.LastError, tc.want) {
				t.Errorf("status last error %q", st.LastError)
			}
		})
	}
}

// TestGeneralRequest: any method and path, extra request headers, response
// headers (apns-*) and body surfaced (what Apple's broadcast API needs).
func TestGeneralRequest(t *testing.T) {
	p := newPeer(t, func(pc *peerConn) {
		serveRequests(pc, serveOpts{}, func(q *peerReq) {
			h := []hpack.HeaderField{
				{Name: "apns-request-id", Value: q.get("apns-request-id")},
				{Name: "apns-channel-id", Value: "ch-" + q.get(":method")},
				{Name: "apns-x-path", Value: q.get(":path")},
				{Name: "apns-x-body", Value: string(q.body)},
			}
			pc.respond(q.id, 201, h, []byte(`{"channels":["a","b"]}`))
		})
	})
	c := p.client(t, nil)
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/1/apps/com.example.app/channels", `{"message-storage-policy":1,"push-type":"LiveActivity"}`},
		{"GET", "/1/apps/com.example.app/all-channels", ""},
		{"DELETE", "/1/apps/com.example.app/channels", ""},
		{"POST", "/4/broadcasts/apps/com.example.app", `{"aps":{}}`},
	} {
		req := &Request{Method: tc.method, Path: tc.path, Body: []byte(tc.body), Header: []Header{
			{Name: "apns-request-id", Value: "0f5c4c2e-0000-4000-8000-000000000001", NeverIndex: true},
			{Name: "apns-channel-id", Value: "dHN0LXNyY2gtY2hubA=="},
		}}
		res, err := c.Do(ctxFor(t, 5*time.Second), req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 201 || res.Get("apns-request-id") != "0f5c4c2e-0000-4000-8000-000000000001" ||
			res.Get("apns-channel-id") != "ch-"+tc.method || res.Get("apns-x-path") != tc.path || res.Get("apns-x-body") != tc.body ||
			string(res.Body) != `{"channels":["a","b"]}` {
			t.Errorf("%s %s: got %+v body %q", tc.method, tc.path, res, res.Body)
		}
	}
}

// TestQueuedDeadline: a request whose deadline passes while queued is
// completed without being sent; Send's cancel works too.
func TestQueuedDeadline(t *testing.T) {
	var seen atomic.Int32
	release := make(chan struct{})
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}) != nil {
			return
		}
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req != nil {
				seen.Add(1)
				id := ev.req.id
				go func() {
					<-release
					pc.respond(id, 200, nil, nil)
				}()
			}
		}
	})
	c := p.client(t, nil)
	rs := newResults(t, 3)
	c.Enqueue(testReq("aa"), time.Now().Add(10*time.Second), rs.done(0)) // occupies the only stream
	c.Enqueue(testReq("bb"), time.Now().Add(200*time.Millisecond), rs.done(1))
	c.Enqueue(testReq("cc"), time.Now().Add(10*time.Second), rs.done(2))
	time.Sleep(500 * time.Millisecond)
	close(release)
	got := rs.wait(10 * time.Second)
	if !errors.Is(got[1].err, context.DeadlineExceeded) {
		t.Errorf("queued past its deadline: got %+v %v", got[1].res, got[1].err)
	}
	if got[0].err != nil || got[2].err != nil {
		t.Errorf("others: %v, %v", got[0].err, got[2].err)
	}
	if seen.Load() != 2 {
		t.Errorf("server saw %d requests, want 2 (the expired one never sent)", seen.Load())
	}
}

// TestSendCancelResetsStream: a Send whose context is cancelled while its
// request is in flight returns at once, and the stream is reset.
func TestSendCancelResetsStream(t *testing.T) {
	checkNoLeak(t)
	reset := make(chan http2.ErrCode, 1)
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake() != nil {
			return
		}
		r := pc.reader(serveOpts{})
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if f, ok := ev.frame.(*http2.RSTStreamFrame); ok {
				reset <- f.ErrCode
			}
			// never answers
		}
	})
	c := p.client(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for c.Status().InFlight == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	_, err := c.Do(ctx, testReq("abcd"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	select {
	case code := <-reset:
		if code != http2.ErrCodeCancel {
			t.Errorf("stream reset with %v, want CANCEL", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled stream was not reset")
	}
	if st := c.Status(); st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("after the cancel: %+v", st)
	}
	c.Close()
}

// TestServerStopsReading: a server that never reads makes the writer's
// TLS write block; the write deadline (PingTimeout) ends the connection and
// every request is answered, none hangs.
func TestServerStopsReading(t *testing.T) {
	checkNoLeak(t)
	stop := make(chan struct{})
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1 << 20}) != nil {
			return
		}
		<-stop // read nothing more
	})
	t.Cleanup(func() { close(stop) }) // runs before the peer's cleanup
	c := p.client(t, func(o *ClientOptions) {
		o.PingInterval = 100 * time.Millisecond
		o.PingTimeout = 500 * time.Millisecond
	})
	// Warm the connection up is not possible (nothing is answered); wait
	// out warmUp so the writer takes everything at once.
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Connections == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(warmUp + 100*time.Millisecond)
	const n = 40000
	rs := newResults(t, n)
	pad := strings.Repeat("p", 400)
	for i := range n {
		r := &Request{Method: "GET", Path: "/x", Header: []Header{{Name: "x-pad", Value: pad, NeverIndex: true}}}
		if err := c.Enqueue(r, time.Now().Add(20*time.Second), rs.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	got := rs.wait(30 * time.Second)
	var connErrs int
	for _, r := range got {
		var ce *ConnError
		if errors.As(r.err, &ce) {
			connErrs++
		}
	}
	if connErrs == 0 {
		t.Errorf("no request failed with a connection error; the stuck write was not cut off")
	}
	c.Close()
}

// TestOneStreamUntilAnswered: a new connection carries one stream until it
// has answered (Apple's rule for token auth), then as many as allowed.
func TestOneStreamUntilAnswered(t *testing.T) {
	var maxBefore, maxAfter atomic.Int32
	p := newPeer(t, func(pc *peerConn) {
		if pc.handshake(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 50}) != nil {
			return
		}
		r := pc.reader(serveOpts{})
		var open atomic.Int32
		var firstAnswered atomic.Bool
		answered := false
		for {
			ev, err := r.next()
			if err != nil {
				return
			}
			if ev.req == nil {
				continue
			}
			n := open.Add(1)
			if !answered {
				maxBefore.Store(max(maxBefore.Load(), n))
				answered = true
				id := ev.req.id
				go func() {
					time.Sleep(200 * time.Millisecond) // < warmUp
					open.Add(-1)
					firstAnswered.Store(true)
					pc.respond(id, 200, nil, nil)
				}()
				continue
			}
			if !firstAnswered.Load() {
				maxBefore.Store(max(maxBefore.Load(), n))
			}
			maxAfter.Store(max(maxAfter.Load(), n))
			id := ev.req.id
			go func() {
				time.Sleep(20 * time.Millisecond)
				open.Add(-1)
				pc.respond(id, 200, nil, nil)
			}()
		}
	})
	c := p.client(t, func(o *ClientOptions) { o.Authorization = func() (string, error) { return "bearer a.b.c", nil } })
	const n = 200
	rs := newResults(t, n)
	for i := range n {
		c.Enqueue(testReq("abcd"), time.Now().Add(20*time.Second), rs.done(i))
	}
	for i, r := range rs.wait(20 * time.Second) {
		if r.err != nil {
			t.Errorf("request %d: %v", i, r.err)
		}
	}
	if maxBefore.Load() != 1 {
		t.Errorf("%d streams open before the first answer, want 1", maxBefore.Load())
	}
	if maxAfter.Load() < 10 {
		t.Errorf("at most %d streams open after the first answer, want many (limit 50)", maxAfter.Load())
	}
}
