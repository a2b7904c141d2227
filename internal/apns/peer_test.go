package apns

// A small HTTP/2 server on the Framer for in-package tests of the
// transport's protocol rules: each test scripts the server's side.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/pki"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type h2peer struct {
	t      *testing.T
	ln     net.Listener
	ca     *pki.CA
	conf   *tls.Config
	handle func(pc *peerConn)
	wg     sync.WaitGroup
	nconns atomic.Int32
	mu     sync.Mutex
	open   []*peerConn
}

// newPeer listens on loopback; handle runs for each connection once TLS is
// up (it owns the connection; newPeer closes it after handle returns).
func newPeer(t *testing.T, handle func(pc *peerConn)) *h2peer {
	t.Helper()
	ca, err := pki.NewCA("peer CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.ServerCert()
	if err != nil {
		t.Fatal(err)
	}
	p := &h2peer{t: t, ca: ca, handle: handle, conf: &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{sc.TLSCertificate()}, NextProtos: []string{"h2"},
	}}
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *h2peer) accept() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			tc := tls.Server(nc, p.conf)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				nc.Close()
				return
			}
			tc.SetDeadline(time.Time{})
			pc := newPeerConn(p.t, tc)
			p.mu.Lock()
			p.open = append(p.open, pc)
			p.mu.Unlock()
			p.nconns.Add(1)
			p.handle(pc)
			tc.Close()
		}()
	}
}

func (p *h2peer) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, pc := range p.open {
		pc.nc.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *h2peer) url() string { return "https://" + p.ln.Addr().String() }

// client makes a started client for the peer; mod adjusts the options.
func (p *h2peer) client(t *testing.T, mod func(*ClientOptions)) *Client {
	t.Helper()
	o := ClientOptions{Endpoint: p.url(), RootCAs: p.ca.Pool(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	return c
}

type peerConn struct {
	t    *testing.T
	nc   net.Conn
	fr   *http2.Framer
	dec  *hpack.Decoder
	wmu  sync.Mutex
	ebuf bytes.Buffer
	enc  *hpack.Encoder
	// client's SETTINGS (the first frame after the preface)
	clientSettings map[http2.SettingID]uint32
	// pending header block (HEADERS + CONTINUATION)
	hdrID    uint32
	hdrBlock []byte
	hdrEnd   bool
}

func newPeerConn(t *testing.T, nc net.Conn) *peerConn {
	pc := &peerConn{t: t, nc: nc, dec: hpack.NewDecoder(4096, nil)}
	pc.fr = http2.NewFramer(nc, nc)
	pc.enc = hpack.NewEncoder(&pc.ebuf)
	return pc
}

// handshake reads the client preface and SETTINGS and sends ours.
func (pc *peerConn) handshake(settings ...http2.Setting) error {
	buf := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(pc.nc, buf); err != nil {
		return err
	}
	if string(buf) != http2.ClientPreface {
		return errors.New("bad preface " + strconv.Quote(string(buf)))
	}
	f, err := pc.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return errors.New("first frame is not SETTINGS")
	}
	pc.clientSettings = map[http2.SettingID]uint32{}
	sf.ForeachSetting(func(s http2.Setting) error { pc.clientSettings[s.ID] = s.Val; return nil })
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	if err := pc.fr.WriteSettings(settings...); err != nil {
		return err
	}
	return pc.fr.WriteSettingsAck()
}

// peerReq is one request the peer received.
type peerReq struct {
	id     uint32
	fields []hpack.HeaderField
	block  []byte // the raw HPACK block
	body   []byte
	ended  bool
}

func (r *peerReq) get(name string) string {
	for _, f := range r.fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// event is what next returns: a complete request (END_STREAM seen), or a
// frame the script may want to see (anything but DATA and HEADERS).
type event struct {
	req   *peerReq
	frame http2.Frame
}

// serveOpts tunes next's automatic behaviour.
type serveOpts struct {
	noWindowUpdates bool // do not return flow-control credit for DATA
	noPingAck       bool
}

// reader reads frames and assembles requests; it answers PINGs and
// SETTINGS and returns flow-control credit unless told not to.
type reader struct {
	pc   *peerConn
	o    serveOpts
	reqs map[uint32]*peerReq
}

func (pc *peerConn) reader(o serveOpts) *reader {
	return &reader{pc: pc, o: o, reqs: map[uint32]*peerReq{}}
}

func (r *reader) next() (event, error) {
	pc := r.pc
	for {
		f, err := pc.fr.ReadFrame()
		if err != nil {
			return event{}, err
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			pc.hdrID = f.StreamID
			pc.hdrBlock = append([]byte(nil), f.HeaderBlockFragment()...)
			pc.hdrEnd = f.StreamEnded()
			if f.HeadersEnded() {
				if ev, ok := r.headersDone(); ok {
					return ev, nil
				}
			}
		case *http2.ContinuationFrame:
			pc.hdrBlock = append(pc.hdrBlock, f.HeaderBlockFragment()...)
			if f.HeadersEnded() {
				if ev, ok := r.headersDone(); ok {
					return ev, nil
				}
			}
		case *http2.DataFrame:
			q := r.reqs[f.StreamID]
			if q == nil {
				continue
			}
			q.body = append(q.body, f.Data()...)
			if n := f.Length; n > 0 && !r.o.noWindowUpdates {
				pc.wmu.Lock()
				pc.fr.WriteWindowUpdate(0, n)
				if !f.StreamEnded() {
					pc.fr.WriteWindowUpdate(f.StreamID, n)
				}
				pc.wmu.Unlock()
			}
			if f.StreamEnded() {
				q.ended = true
				delete(r.reqs, f.StreamID)
				return event{req: q}, nil
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				pc.wmu.Lock()
				pc.fr.WriteSettingsAck()
				pc.wmu.Unlock()
			}
			return event{frame: f}, nil
		case *http2.PingFrame:
			if !f.IsAck() && !r.o.noPingAck {
				pc.wmu.Lock()
				pc.fr.WritePing(true, f.Data)
				pc.wmu.Unlock()
			}
			return event{frame: f}, nil
		default:
			return event{frame: f}, nil
		}
	}
}

func (r *reader) headersDone() (event, bool) {
	pc := r.pc
	fields, err := pc.dec.DecodeFull(pc.hdrBlock)
	if err != nil {
		pc.t.Errorf("peer: HPACK decode: %v", err)
		return event{}, false
	}
	q := &peerReq{id: pc.hdrID, fields: fields, block: pc.hdrBlock, ended: pc.hdrEnd}
	if q.ended {
		return event{req: q}, true
	}
	r.reqs[q.id] = q
	return event{}, false
}

// respond sends a complete answer on stream id.
func (pc *peerConn) respond(id uint32, status int, hdrs []hpack.HeaderField, body []byte) error {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	pc.ebuf.Reset()
	pc.enc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	for _, h := range hdrs {
		pc.enc.WriteField(h)
	}
	if err := pc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: pc.ebuf.Bytes(), EndHeaders: true, EndStream: len(body) == 0}); err != nil {
		return err
	}
	if len(body) > 0 {
		return pc.fr.WriteData(id, true, body)
	}
	return nil
}

func (pc *peerConn) write(f func(fr *http2.Framer) error) error {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	return f(pc.fr)
}

// serveRequests does the handshake, then calls fn with each complete
// request (on the connection's reading goroutine) until the connection ends.
func serveRequests(pc *peerConn, o serveOpts, fn func(q *peerReq)) {
	if pc.handshake() != nil {
		return
	}
	r := pc.reader(o)
	for {
		ev, err := r.next()
		if err != nil {
			return
		}
		if ev.req != nil {
			fn(ev.req)
		}
	}
}

// serveOK answers every request 200 with an apns-id until the connection ends.
func serveOK(pc *peerConn) {
	serveRequests(pc, serveOpts{}, func(q *peerReq) {
		pc.respond(q.id, 200, []hpack.HeaderField{{Name: "apns-id", Value: "id-" + strconv.Itoa(int(q.id))}}, nil)
	})
}

// results collects Enqueue callbacks and checks each is called once.
type results struct {
	t    *testing.T
	mu   sync.Mutex
	got  map[int]sendResult
	all  chan struct{}
	want int
}

func newResults(t *testing.T, want int) *results {
	return &results{t: t, got: map[int]sendResult{}, all: make(chan struct{}), want: want}
}

func (r *results) done(i int) func(*Response, error) {
	return func(res *Response, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, dup := r.got[i]; dup {
			r.t.Errorf("request %d answered twice", i)
			return
		}
		r.got[i] = sendResult{res, err}
		if len(r.got) == r.want {
			close(r.all)
		}
	}
}

func (r *results) wait(d time.Duration) map[int]sendResult {
	r.t.Helper()
	select {
	case <-r.all:
	case <-time.After(d):
		r.mu.Lock()
		n := len(r.got)
		r.mu.Unlock()
		r.t.Fatalf("only %d of %d requests answered within %s", n, r.want, d)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

func testReq(token string) *Request {
	n := &Notification{DeviceToken: token, Topic: "com.example.app", PushType: PushTypeAlert, ApnsID: NewUUID(), Payload: []byte(`{"aps":{"alert":"hi"}}`)}
	return n.Request()
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkNoLeak fails if goroutines started during the test outlive it.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// Cleanups run in reverse order: this runs after the client's
		// and the peer's cleanups (registered later).
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				n := runtime.Stack(buf, true)
				t.Errorf("%d goroutines left behind (before: %d):\n%s", runtime.NumGoroutine()-before, before, trimStacks(buf[:n]))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func trimStacks(b []byte) string {
	var out []string
	for _, g := range strings.Split(string(b), "\n\n") {
		if strings.Contains(g, "internal/apns") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
