package apnstest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var tokenHdr = hdr("apns-topic", bundle, "authorization", "bearer x")

// byToken returns a Responder that answers faults[prefix] to device tokens
// starting with prefix and 200 to the rest.
func byToken(faults map[string]Reply) Responder {
	return func(r *Request) Reply {
		for p, rep := range faults {
			if strings.HasPrefix(r.DeviceToken, p) {
				return rep
			}
		}
		return Reply{}
	}
}

func newTokenServer(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseConn(t *testing.T) {
	s := newTokenServer(t, Options{})
	s.SetResponder(byToken(map[string]Reply{
		"dead": {Action: ActionCloseConn},
		"5105": {Delay: 10 * time.Second}, // in flight when the connection dies
	}))
	c := s.Client()
	url := s.URL + "/3/device/"
	post(t, c, "POST", url+devToken, tokenHdr, []byte(`{}`)) // conn 1

	slowErr := make(chan error, 1)
	go func() {
		_, err := tryPost(context.Background(), c, "POST", url+"5105", tokenHdr, []byte(`{}`))
		slowErr <- err
	}()
	waitFor(t, "the slow request", func() bool { return s.Count() == 2 })

	start := time.Now()
	_, err := tryPost(context.Background(), c, "POST", url+"dead", tokenHdr, []byte(`{}`))
	if err == nil {
		t.Fatal("request on a closed connection succeeded")
	}
	t.Logf("client error for ActionCloseConn: %v", err)
	select {
	case err := <-slowErr:
		if err == nil {
			t.Fatal("other stream on the closed connection succeeded")
		}
		t.Logf("client error for another stream: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("other stream on the closed connection still waiting")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	// Not retried by net/http: POST is not idempotent.
	waitFor(t, "Unanswered 2", func() bool { return s.Unanswered() == 2 })
	if s.Count() != 3 || s.Accepted() != 1 || len(s.Requests()) != 3 {
		t.Fatalf("Count %d Accepted %d Requests %d, want 3 1 3", s.Count(), s.Accepted(), len(s.Requests()))
	}
	waitFor(t, "the connection to close", func() bool { return s.OpenConnections() == 0 })

	// The client reconnects.
	post(t, c, "POST", url+devToken, tokenHdr, []byte(`{}`))
	if s.Connections() != 2 || s.Accepted() != 2 {
		t.Fatalf("Connections %d Accepted %d, want 2 2", s.Connections(), s.Accepted())
	}
}

func TestGoAway(t *testing.T) {
	s := newTokenServer(t, Options{})
	s.SetResponder(byToken(map[string]Reply{
		"90a1": {Action: ActionGoAway, Status: 503, Reason: "Shutdown"},
		"5105": {Delay: 300 * time.Millisecond},
	}))
	c := s.Client()
	url := s.URL + "/3/device/"
	post(t, c, "POST", url+devToken, tokenHdr, []byte(`{}`)) // conn 1

	// Three requests in flight on conn 1 when the GOAWAY comes: they are
	// below its last-stream-id and complete.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := tryPost(context.Background(), c, "POST", url+"5105", tokenHdr, []byte(`{}`))
			if err == nil && a.Status != 200 {
				err = errors.New("status " + a.Reason)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	waitFor(t, "3 requests in flight", func() bool { return s.Count() == 4 })
	a := post(t, c, "POST", url+"90a1", tokenHdr, []byte(`{}`))
	if a.Status != 503 || a.Reason != "Shutdown" {
		t.Fatalf("GOAWAY request answered %+v", a)
	}
	// The client has seen the GOAWAY: the next request opens conn 2.
	post(t, c, "POST", url+devToken, tokenHdr, []byte(`{}`))
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("in-flight request: %v", err)
	}
	rs := s.Requests()
	if last := rs[len(rs)-1]; last.ConnID != 2 {
		t.Fatalf("request after GOAWAY on conn %d, want 2", last.ConnID)
	}
	if s.Count() != 6 || s.Accepted() != 5 || s.Unanswered() != 0 || s.Connections() != 2 {
		t.Fatalf("Count %d Accepted %d Unanswered %d Connections %d, want 6 5 0 2",
			s.Count(), s.Accepted(), s.Unanswered(), s.Connections())
	}
	// Conn 1 drains and closes.
	waitFor(t, "conn 1 to close", func() bool { return s.OpenConnections() == 1 })
}

// rawConn is a hand-driven HTTP/2 client connection, to see frames exactly.
type rawConn struct {
	t   *testing.T
	c   *tls.Conn
	fr  *http2.Framer
	buf bytes.Buffer
	enc *hpack.Encoder
}

func dialRaw(t *testing.T, s *Server) *rawConn {
	t.Helper()
	c, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: s.RootCAs(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.buf)
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

// post sends a valid token-mode request on stream id.
func (rc *rawConn) post(id uint32, token string) {
	rc.t.Helper()
	rc.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "localhost"},
		{":path", "/3/device/" + token}, {"apns-topic", bundle}, {"authorization", "bearer x"}} {
		rc.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.buf.Bytes(), EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
	if err := rc.fr.WriteData(id, true, []byte(`{}`)); err != nil {
		rc.t.Fatal(err)
	}
}

// next returns the next frame that is not connection housekeeping
// (SETTINGS, WINDOW_UPDATE, PING), or nil at EOF.
func (rc *rawConn) next() http2.Frame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			rc.t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				rc.fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame, *http2.PingFrame:
		default:
			return f
		}
	}
}

func TestGoAwayFrames(t *testing.T) {
	s := newTokenServer(t, Options{})
	s.SetResponder(byToken(map[string]Reply{"90a1": {Action: ActionGoAway}}))
	rc := dialRaw(t, s)
	rc.post(1, devToken)
	if f := rc.next(); f == nil || f.Header().Type != http2.FrameHeaders || f.Header().StreamID != 1 {
		t.Fatalf("want the answer on stream 1, got %v", f)
	}
	rc.post(3, "90a1")
	f := rc.next()
	ga, ok := f.(*http2.GoAwayFrame)
	if !ok {
		t.Fatalf("want GOAWAY before the answer, got %v", f)
	}
	if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 3 || string(ga.DebugData()) != `{"reason":"Shutdown"}` {
		t.Fatalf("GOAWAY code %v last %d debug %q", ga.ErrCode, ga.LastStreamID, ga.DebugData())
	}
	mh, ok := rc.next().(*http2.MetaHeadersFrame)
	if !ok || mh.StreamID != 3 || mh.PseudoValue("status") != "200" {
		t.Fatalf("want 200 on stream 3 after the GOAWAY, got %v", mh)
	}
	// A stream above the last-stream-id is ignored: never handled, never
	// answered, never counted; the connection closes once drained.
	rc.post(5, devToken)
	start := time.Now()
	for f := rc.next(); f != nil; f = rc.next() {
		if f.Header().StreamID == 5 {
			t.Fatalf("stream 5 (after GOAWAY) got %v", f)
		}
	}
	t.Logf("connection closed %v after the last answer", time.Since(start).Round(time.Millisecond))
	if s.Count() != 2 || s.Accepted() != 2 || len(s.Requests()) != 2 {
		t.Fatalf("Count %d Accepted %d Requests %d, want 2 2 2", s.Count(), s.Accepted(), len(s.Requests()))
	}

	// Server.GoAway: an idle connection gets GOAWAY (last-stream-id 0 as it
	// never had a stream) with the given reason.
	rc = dialRaw(t, s)
	waitFor(t, "the connection", func() bool { return s.OpenConnections() == 1 })
	s.GoAway("ServiceUnavailable")
	ga, ok = rc.next().(*http2.GoAwayFrame)
	if !ok || ga.LastStreamID != 0 || string(ga.DebugData()) != `{"reason":"ServiceUnavailable"}` {
		t.Fatalf("Server.GoAway: got %v", ga)
	}
}

func TestResetStreamFrames(t *testing.T) {
	s := newTokenServer(t, Options{})
	s.SetResponder(byToken(map[string]Reply{"0ff0": {Action: ActionResetStream}}))
	rc := dialRaw(t, s)
	rc.post(1, "0ff0")
	rst, ok := rc.next().(*http2.RSTStreamFrame)
	if !ok || rst.StreamID != 1 || rst.ErrCode != http2.ErrCodeRefusedStream {
		t.Fatalf("want RST_STREAM(REFUSED_STREAM) on stream 1, got %v", rst)
	}
	// The connection stays usable.
	rc.post(3, devToken)
	mh, ok := rc.next().(*http2.MetaHeadersFrame)
	if !ok || mh.StreamID != 3 || mh.PseudoValue("status") != "200" {
		t.Fatalf("want 200 on stream 3, got %v", mh)
	}
	if s.Count() != 2 || s.Accepted() != 1 || s.Unanswered() != 1 {
		t.Fatalf("Count %d Accepted %d Unanswered %d, want 2 1 1", s.Count(), s.Accepted(), s.Unanswered())
	}
}

func TestResetStreamGoClient(t *testing.T) {
	s := newTokenServer(t, Options{})
	var refused atomic.Int32
	s.SetResponder(func(r *Request) Reply {
		if strings.HasPrefix(r.DeviceToken, "0ff0") && refused.Add(1) == 1 {
			return Reply{Action: ActionResetStream}
		}
		return Reply{}
	})
	c := s.Client()
	post(t, c, "POST", s.URL+"/3/device/"+devToken, tokenHdr, []byte(`{}`)) // a cached connection
	a, err := tryPost(context.Background(), c, "POST", s.URL+"/3/device/0ff0", tokenHdr, []byte(`{}`))
	t.Logf("Go client after REFUSED_STREAM: %+v, err %v", a, err)
	if err != nil || a.Status != 200 {
		t.Fatalf("net/http did not retry the refused stream: %+v %v", a, err)
	}
	if s.Count() != 3 || s.Accepted() != 2 || s.Unanswered() != 1 || s.Connections() != 1 {
		t.Fatalf("Count %d Accepted %d Unanswered %d Connections %d, want 3 2 1 1",
			s.Count(), s.Accepted(), s.Unanswered(), s.Connections())
	}
}

func TestRefuseHandshakes(t *testing.T) {
	s := newTokenServer(t, Options{})
	url := s.URL + "/3/device/" + devToken
	old := s.Client()
	post(t, old, "POST", url, tokenHdr, []byte(`{}`))

	s.SetRefuseHandshakes(true)
	_, err := tryPost(context.Background(), s.Client(), "POST", url, tokenHdr, []byte(`{}`))
	if err == nil {
		t.Fatal("handshake not refused")
	}
	t.Logf("client error for a refused handshake: %v", err)
	// The established connection is not affected.
	post(t, old, "POST", url, tokenHdr, []byte(`{}`))
	waitFor(t, "RefusedHandshakes 1", func() bool { return s.RefusedHandshakes() == 1 })

	s.SetRefuseHandshakes(false)
	post(t, s.Client(), "POST", url, tokenHdr, []byte(`{}`))
	if s.Connections() != 2 || s.Count() != 3 || s.Accepted() != 3 {
		t.Fatalf("Connections %d Count %d Accepted %d, want 2 3 3", s.Connections(), s.Count(), s.Accepted())
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Now()
	fault := Reply{Status: 503, Reason: "ServiceUnavailable"}
	w := Window(t0.Add(time.Second), t0.Add(2*time.Second), fault, Always(410, "Unregistered"))
	for _, tc := range []struct {
		at     time.Duration
		status int
	}{{0, 410}, {999 * time.Millisecond, 410}, {time.Second, 503}, {1999 * time.Millisecond, 503}, {2 * time.Second, 410}} {
		if got := w(&Request{Received: t0.Add(tc.at)}); got.Status != tc.status {
			t.Errorf("at %v: %d, want %d", tc.at, got.Status, tc.status)
		}
	}
	if got := Window(t0, t0.Add(time.Second), fault, nil)(&Request{Received: t0.Add(-time.Second)}); got != (Reply{}) {
		t.Errorf("nil otherwise: %+v", got)
	}

	// Over the wire: a 200 ms outage starting now.
	s := newTokenServer(t, Options{})
	now := time.Now()
	s.SetResponder(Window(now, now.Add(200*time.Millisecond), Reply{Action: ActionCloseConn}, nil))
	c := s.Client()
	url := s.URL + "/3/device/" + devToken
	if _, err := tryPost(context.Background(), c, "POST", url, tokenHdr, []byte(`{}`)); err == nil {
		t.Fatal("request in the window succeeded")
	}
	time.Sleep(time.Until(now.Add(200 * time.Millisecond)))
	post(t, c, "POST", url, tokenHdr, []byte(`{}`))
	if s.Accepted() != 1 || s.Unanswered() != 1 {
		t.Fatalf("Accepted %d Unanswered %d", s.Accepted(), s.Unanswered())
	}
}

func TestSetMaxConcurrentStreams(t *testing.T) {
	s := newTokenServer(t, Options{MaxConcurrentStreams: 7})
	s.SetMaxConcurrentStreams(1)
	if got := advertisedMaxStreams(t, s, tls.Certificate{}); got != 1 {
		t.Fatalf("advertised %d, want 1", got)
	}
	s.SetMaxConcurrentStreams(0)
	if got := advertisedMaxStreams(t, s, tls.Certificate{}); got != 7 {
		t.Fatalf("advertised %d, want 7 again", got)
	}
}

func TestHeadersIs200(t *testing.T) {
	for _, tc := range []struct {
		flags byte
		p     []byte
		want  bool
	}{
		{0, []byte{0x88, 0x40}, true},
		{0, []byte{0x8d}, false},                           // :status 404
		{0, []byte{0x3f, 0xe1, 0x1f, 0x88}, true},          // size update 4096 first
		{0, []byte{0x20, 0x88}, true},                      // size update 0
		{flagPadded, []byte{2, 0x88, 0, 0}, true},          // padded
		{flagPriority, []byte{0, 0, 0, 1, 16, 0x88}, true}, // priority
		{0, nil, false},
		{flagPadded, []byte{9, 0x88}, false},
	} {
		if got := headersIs200(tc.flags, tc.p); got != tc.want {
			t.Errorf("%x %x: %v", tc.flags, tc.p, got)
		}
	}
}

// A client that cancels during a Delay gets no answer; with the stream
// already gone nothing is written, and the request counts as unanswered.
func TestUnansweredOnCancel(t *testing.T) {
	s := newTokenServer(t, Options{})
	s.SetResponder(func(*Request) Reply { return Reply{Delay: 10 * time.Second} })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := tryPost(ctx, s.Client(), "POST", s.URL+"/3/device/"+devToken, tokenHdr, []byte(`{}`)); err == nil {
		t.Fatal("cancelled request succeeded")
	}
	waitFor(t, "Unanswered 1", func() bool { return s.Unanswered() == 1 })
	if s.Accepted() != 0 {
		t.Fatalf("Accepted %d", s.Accepted())
	}
}
