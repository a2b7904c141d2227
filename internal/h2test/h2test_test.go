package h2test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestServesAPNsShapedAnswers(t *testing.T) {
	s, err := New(Options{Handler: func(r *Request) {
		if r.DeviceToken == "bad" {
			r.Respond(Reply{Status: 400, Reason: "BadDeviceToken", Fragment: 1})
			return
		}
		r.Respond(Reply{})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.Pool()}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, tc := range []struct {
		token, id string
		status    int
		body      string
	}{
		{"abcd", "8e7b6a8e-2c5a-4b8a-9d43-0a1b2c3d4e5f", 200, ""},
		{"bad", "", 400, `{"reason":"BadDeviceToken"}`},
	} {
		req, _ := http.NewRequest("POST", s.URL()+"/3/device/"+tc.token, strings.NewReader(`{"aps":{}}`))
		req.Header.Set("apns-topic", "com.example")
		if tc.id != "" {
			req.Header.Set("apns-id", tc.id)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || string(body) != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.token, res.StatusCode, body, tc.status, tc.body)
		}
		if id := res.Header.Get("apns-id"); id == "" || tc.id != "" && id != tc.id {
			t.Errorf("%s: apns-id %q, want %q (or a fresh one)", tc.token, id, tc.id)
		}
	}
	st := s.Stats()
	if st.Requests != 2 || st.Responses != 2 || st.H2Conns != 1 || st.DataBytesRecv != 20 {
		t.Errorf("stats %+v", st)
	}
	if st.StreamLimitViolations+st.FlowViolations+st.ProtocolErrors != 0 {
		t.Errorf("x/net's client broke rules? %+v", st)
	}
}

// rawClient is a minimal HTTP/2 client on a Framer that does what it is
// told, rules or not.
type rawClient struct {
	t    *testing.T
	fr   *http2.Framer
	conn *tls.Conn
	enc  *hpack.Encoder
	buf  bytes.Buffer
}

func dialRaw(t *testing.T, s *Server) *rawClient {
	tc, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: s.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(tc, http2.ClientPreface)
	c := &rawClient{t: t, fr: http2.NewFramer(tc, tc), conn: tc}
	c.enc = hpack.NewEncoder(&c.buf)
	c.fr.WriteSettings()
	return c
}

// until reads frames until one satisfies ok, ACKing SETTINGS on the way.
func (c *rawClient) until(ok func(http2.Frame) bool) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatal(err)
		}
		if sf, isSettings := f.(*http2.SettingsFrame); isSettings && !sf.IsAck() {
			c.fr.WriteSettingsAck()
		}
		if ok(f) {
			return
		}
	}
}

func (c *rawClient) open(id uint32, end bool) {
	c.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", "/3/device/ab"}, {":authority", "x"}} {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndHeaders: true, EndStream: end})
}

func TestCountsAClientThatBreaksTheRules(t *testing.T) {
	s, err := New(Options{
		Settings: []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 1}, {ID: http2.SettingInitialWindowSize, Val: 4}},
		Handler:  func(*Request) {}, // never answer: streams stay open
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dialRaw(t, s)
	defer c.conn.Close()
	c.until(func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && !sf.IsAck() })
	// Our ACK is written; the server applies it when it reads it. A PING
	// round trip after it proves it has.
	c.fr.WritePing(false, [8]byte{1})
	c.until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() })
	c.open(1, false)
	c.fr.WriteData(1, false, []byte("12345678")) // 4 over the window
	c.open(3, true)                              // over the stream limit of 1
	c.until(func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == 3 && r.ErrCode == http2.ErrCodeRefusedStream
	})
	c.fr.WriteData(1, true, nil)
	c.fr.WritePing(false, [8]byte{2})
	c.until(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() && p.Data[0] == 2 })
	st := s.Stats()
	if st.StreamLimitViolations != 1 || st.FlowViolations != 1 || st.Requests != 1 || st.PingsRecv != 2 || st.SettingsAcks != 1 {
		t.Errorf("stats %+v", st)
	}
	if p := s.Conns()[0].Pending(); len(p) != 1 || p[0] != 1 {
		t.Errorf("pending %v, want [1]", p)
	}
}

func TestNoH2AnswersHTTP1(t *testing.T) {
	s, err := New(Options{NoH2: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tc, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: s.Pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" {
		t.Fatalf("negotiated %q, want none", p)
	}
	io.WriteString(tc, http2.ClientPreface)
	got, _ := io.ReadAll(tc)
	if !strings.HasPrefix(string(got), "HTTP/1.1 505") {
		t.Errorf("answer %q", got)
	}
	if st := s.Stats(); st.NonH2Conns != 1 || st.H2Conns != 0 {
		t.Errorf("stats %+v", st)
	}
}

// settle reads the server's SETTINGS (ACKing them) and makes a PING round
// trip, so the server has applied our ACK.
func (c *rawClient) settle() {
	c.until(func(f http2.Frame) bool { sf, ok := f.(*http2.SettingsFrame); return ok && !sf.IsAck() })
	c.fence(0xff)
}

// fence sends a PING and reads up to its ACK: the server has handled
// everything written before it. It returns the frames read on the way.
func (c *rawClient) fence(tag byte) []http2.Frame {
	c.fr.WritePing(false, [8]byte{tag})
	var seen []http2.Frame
	c.until(func(f http2.Frame) bool {
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data[0] == tag {
			return true
		}
		seen = append(seen, f) // the Framer does not reuse frames here
		return false
	})
	return seen
}

// Streams opened above a GOAWAY's last-stream-id are ignored, their DATA
// included (RFC 9113 6.8): no RST_STREAM (a STREAM_CLOSED reset written
// before the GOAWAY made clients fail requests that were safe to retry),
// and the DATA's connection-window credit comes back.
func TestIgnoresStreamsAboveGoAway(t *testing.T) {
	s, err := New(Options{Handler: func(*Request) {}}) // hold every request
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dialRaw(t, s)
	defer c.conn.Close()
	c.settle()
	c.open(1, false)
	c.fr.WriteData(1, true, []byte("first"))
	c.fence(1)
	if !s.WaitPending(1, 10*time.Second) {
		t.Fatalf("stream 1 never pending: %+v", s.Stats())
	}
	cn := s.Conns()[0]
	if err := cn.GoAway(1, http2.ErrCodeNo, nil); err != nil {
		t.Fatal(err)
	}
	c.open(3, false)
	c.fr.WriteData(3, true, []byte("0123456789"))
	c.open(5, true)
	var goaway bool
	var connCredit uint32
	for _, f := range c.fence(2) {
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			goaway = f.LastStreamID == 1
		case *http2.RSTStreamFrame:
			t.Errorf("RST_STREAM %v on stream %d, which the server must ignore", f.ErrCode, f.StreamID)
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				connCredit += f.Increment
			} else if f.StreamID != 1 {
				t.Errorf("WINDOW_UPDATE for ignored stream %d", f.StreamID)
			}
		default:
			if f.Header().StreamID > 1 {
				t.Errorf("%v frame on ignored stream %d", f.Header().Type, f.Header().StreamID)
			}
		}
	}
	if !goaway {
		t.Error("no GOAWAY with last-stream-id 1")
	}
	// "first" may have been refilled before or after the GOAWAY.
	if connCredit != 10 && connCredit != 15 {
		t.Errorf("connection credit returned after GOAWAY %d, want the 10 bytes of stream 3 (+5 of stream 1)", connCredit)
	}
	if err := cn.Respond(3, Reply{}); !errors.Is(err, ErrStreamDone) {
		t.Errorf("Respond on an ignored stream: %v, want ErrStreamDone", err)
	}
	if err := cn.Respond(1, Reply{}); err != nil {
		t.Errorf("Respond on stream 1 (below last-stream-id): %v", err)
	}
	st := s.Stats()
	if st.StreamsAfterGoAway != 2 || st.ResetsSent != 0 || st.ProtocolErrors != 0 || st.Requests != 1 || st.DataBytesRecv != 15 {
		t.Errorf("stats %+v", st)
	}
}

// DATA on a stream the server refused (sent before the client read the
// RST_STREAM) is ignored; DATA after the client's own END_STREAM is the
// client's error (STREAM_CLOSED, counted).
func TestDataOnRefusedAndClosedStreams(t *testing.T) {
	s, err := New(Options{
		Settings: []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 1}},
		Handler:  func(*Request) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dialRaw(t, s)
	defer c.conn.Close()
	c.settle()
	c.open(1, true)
	c.open(3, false) // over the limit: refused
	c.fr.WriteData(3, true, []byte("abc"))
	var refused int
	for _, f := range c.fence(1) {
		if r, ok := f.(*http2.RSTStreamFrame); ok {
			if r.StreamID == 3 && r.ErrCode == http2.ErrCodeRefusedStream {
				refused++
			} else {
				t.Errorf("RST_STREAM %v on stream %d", r.ErrCode, r.StreamID)
			}
		}
	}
	if refused != 1 {
		t.Errorf("%d REFUSED_STREAM for stream 3, want 1", refused)
	}
	if st := s.Stats(); st.ProtocolErrors != 0 || st.StreamLimitViolations != 1 {
		t.Errorf("after DATA on a refused stream: %+v", st)
	}
	c.fr.WriteData(1, false, []byte("late")) // stream 1 already sent END_STREAM
	var closed bool
	for _, f := range c.fence(2) {
		if r, ok := f.(*http2.RSTStreamFrame); ok && r.StreamID == 1 && r.ErrCode == http2.ErrCodeStreamClosed {
			closed = true
		}
	}
	if !closed {
		t.Error("no STREAM_CLOSED for DATA after END_STREAM")
	}
	if st := s.Stats(); st.ProtocolErrors != 1 || !strings.Contains(st.LastProtocolError, "closed stream 1") {
		t.Errorf("DATA after END_STREAM not counted: %+v", st)
	}
}
