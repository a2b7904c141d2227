package apns_test

// Conformance: apns.Client, through its exported API only, against servers
// that are not this client's: the hostile Framer-based server
// (internal/h2test), Debian's nghttpd (C) and the stand-in (x/net's
// server). For every case: every Send returns exactly once, with a
// response or an error and never both, within a generous deadline; answers
// are not crossed (each response carries its own request's apns-id); no
// goroutine is left behind after Close; all under -race.
//
// The tests make no assertion on speed. Each case is a few hundred sends at
// most, so the file stays well under a minute on a loaded 2-core machine.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/h2test"
	"github.com/apnsd/apnsd/internal/pki"
)

const (
	confTopic = "com.example.conformance"
	// confToken is a device token; tokens of the form confToken[:60]+NNNN
	// tell requests apart in handlers.
	confToken = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	// calmToken marks the requests of recovered: handlers answer them 200
	// without misbehaving.
	calmToken = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface"
	// sendTimeout bounds each Send; hangDeadline bounds a whole batch. A
	// Send still running after hangDeadline is a hang: the test fails and
	// prints every goroutine.
	sendTimeout  = 20 * time.Second
	hangDeadline = 40 * time.Second
)

// leakCheck records the goroutine count now and, at cleanup (which runs
// after every cleanup registered later: the client's and the servers'
// Close), fails the test if more goroutines than that are still alive after
// 10 s of retries.
func leakCheck(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		n := runtime.NumGoroutine()
		for n > base && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			n = runtime.NumGoroutine()
		}
		if n > base {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutine leak: %d goroutines after Close, %d before the test:\n%s", n, base, buf)
		}
	})
}

type clientOpts struct {
	// retryRefused sets ClientOptions.RetryRefusedStream: the client
	// resends a REFUSED_STREAM itself (off by default: the daemon's retry
	// policy counts it as one of its attempts).
	retryRefused bool
	conns        int
	pingEvery    time.Duration
	cert         *tls.Certificate
	bearer       bool
	dialTimeout  time.Duration
}

// newClient starts an apns.Client to url, closed at cleanup.
func newClient(t *testing.T, url string, pool *x509.CertPool, o clientOpts) *apns.Client {
	t.Helper()
	opts := apns.ClientOptions{
		Endpoint:    url,
		RootCAs:     pool,
		Connections: max(o.conns, 1),
		MinBackoff:  20 * time.Millisecond,
		MaxBackoff:  200 * time.Millisecond,
		DialTimeout: 5 * time.Second,
	}
	if o.dialTimeout > 0 {
		opts.DialTimeout = o.dialTimeout
	}
	opts.RetryRefusedStream = o.retryRefused
	if o.pingEvery > 0 {
		opts.PingInterval, opts.PingTimeout = o.pingEvery, 5*time.Second
	}
	if o.cert != nil {
		cert := o.cert
		opts.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	if o.bearer {
		opts.Authorization = func() (string, error) { return "bearer conformance-token", nil }
	}
	c, err := apns.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	return c
}

// outcome is what one Send returned.
type outcome struct {
	n    *apns.Notification
	resp *apns.Response
	err  error
}

// batch is the result of sending many notifications at once.
type batch []outcome

func (b batch) count(f func(outcome) bool) int {
	k := 0
	for _, o := range b {
		if f(o) {
			k++
		}
	}
	return k
}

func (b batch) ok() int { return b.count(func(o outcome) bool { return o.resp != nil && o.resp.OK() }) }

func (b batch) errs() int { return b.count(func(o outcome) bool { return o.err != nil }) }

// summary is a one-line description for logs and failures.
func (b batch) summary() string {
	kinds := map[string]int{}
	for _, o := range b {
		switch {
		case o.err != nil:
			msg := o.err.Error()
			if len(msg) > 90 {
				msg = msg[:90] + "…"
			}
			kinds["error: "+msg]++
		default:
			kinds[fmt.Sprintf("%d %s", o.resp.StatusCode, o.resp.Reason)]++
		}
	}
	var parts []string
	for k, v := range kinds {
		parts = append(parts, fmt.Sprintf("%d× %s", v, k))
	}
	return strings.Join(parts, "; ")
}

// notif makes notification i, with a fresh apns-id.
func notif(i int) *apns.Notification {
	return &apns.Notification{
		DeviceToken: fmt.Sprintf("%s%04d", confToken[:60], i%10000),
		Topic:       confTopic,
		PushType:    "alert",
		ApnsID:      apns.NewUUID(),
		Payload:     fmt.Appendf(nil, `{"aps":{"alert":"conformance %d"}}`, i),
	}
}

// send sends n notifications from conc goroutines and checks the
// exactly-once invariants: every Send returned, with a response or an
// error and never both or neither, within hangDeadline; a response's
// apns-id, when the server echoes it, is its own request's.
func send(t *testing.T, c *apns.Client, n, conc int, mk func(int) *apns.Notification) batch {
	t.Helper()
	if mk == nil {
		mk = notif
	}
	out := make(batch, n)
	var next atomic.Int64
	var returned atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				nt := mk(i)
				ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
				resp, err := c.Send(ctx, nt)
				cancel()
				returned.Add(1)
				out[i] = outcome{n: nt, resp: resp, err: err}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(hangDeadline):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("hang: %d of %d Sends returned within %v\n%s", returned.Load(), n, hangDeadline, buf)
	}
	for i, o := range out {
		switch {
		case o.resp != nil && o.err != nil:
			t.Errorf("send %d: both a response (%d) and an error (%v)", i, o.resp.StatusCode, o.err)
		case o.resp == nil && o.err == nil:
			t.Errorf("send %d: neither a response nor an error", i)
		case o.resp != nil && o.resp.ApnsID != "" && o.resp.ApnsID != o.n.ApnsID:
			t.Errorf("send %d: answer for apns-id %s carries apns-id %s (crossed answers)", i, o.n.ApnsID, o.resp.ApnsID)
		}
	}
	return out
}

// onlyConnErrors fails the test for errors other than a connection failure
// (the server misbehaved mid-request) or ErrUnavailable.
func onlyConnErrors(t *testing.T, b batch) {
	t.Helper()
	for i, o := range b {
		var ce *apns.ConnError
		if o.err != nil && !errors.As(o.err, &ce) && !errors.Is(o.err, apns.ErrUnavailable) {
			t.Errorf("send %d: error %v (%T), want a *apns.ConnError or ErrUnavailable", i, o.err, o.err)
		}
	}
}

// recovered checks that after the misbehaviour the client serves again.
func recovered(t *testing.T, c *apns.Client) {
	t.Helper()
	b := send(t, c, 20, 4, func(i int) *apns.Notification {
		n := notif(i)
		n.DeviceToken = calmToken
		return n
	})
	if b.ok() != 20 {
		t.Errorf("after the fault: %d of 20 answered 200 (%s)", b.ok(), b.summary())
	}
}

// hostile starts an h2test server closed at cleanup; the leak check is
// registered first, so it runs after both Closes.
func hostile(t *testing.T, o h2test.Options) *h2test.Server {
	t.Helper()
	leakCheck(t)
	s, err := h2test.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// calm answers r 200 if it is one of recovered's requests.
func calm(r *h2test.Request) bool {
	if r.DeviceToken != calmToken {
		return false
	}
	r.Respond(h2test.Reply{})
	return true
}

// noViolations fails on any HTTP/2 rule the server saw the client break.
func noViolations(t *testing.T, s *h2test.Server) {
	t.Helper()
	st := s.Stats()
	if st.StreamLimitViolations+st.FlowViolations+st.FrameSizeViolations+st.ProtocolErrors+st.BadRequests > 0 {
		t.Errorf("client broke HTTP/2 rules: %+v", st)
	}
}

// answerLoop answers every pending request on every connection with rep,
// every tick, until the test ends.
func answerLoop(t *testing.T, s *h2test.Server, tick time.Duration, rep h2test.Reply) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, c := range s.Conns() {
				for _, id := range c.Pending() {
					c.Respond(id, rep)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(tick):
			}
		}
	}()
	// Registered after the server's Close, so it runs before it.
	t.Cleanup(func() { close(stop); <-done })
}

func TestConformanceHostileBaseline(t *testing.T) {
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		switch {
		case strings.HasSuffix(r.DeviceToken, "0"):
			r.Respond(h2test.Reply{Status: 400, Reason: "BadDeviceToken"})
		case strings.HasSuffix(r.DeviceToken, "1"):
			r.Respond(h2test.Reply{Status: 410, Reason: "Unregistered", Timestamp: 1700000000123})
		default:
			r.Respond(h2test.Reply{})
		}
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{conns: 2})
	b := send(t, c, 400, 100, nil)
	if b.errs() != 0 {
		t.Fatalf("errors against a well-behaved server: %s", b.summary())
	}
	for i, o := range b {
		want := 200
		switch i % 10 {
		case 0:
			want = 400
		case 1:
			want = 410
		}
		if o.resp.StatusCode != want || o.resp.ApnsID != o.n.ApnsID {
			t.Fatalf("send %d: %d apns-id %q, want %d with %q", i, o.resp.StatusCode, o.resp.ApnsID, want, o.n.ApnsID)
		}
		if want == 400 && o.resp.Reason != "BadDeviceToken" || want == 410 && (o.resp.Reason != "Unregistered" || o.resp.Timestamp != 1700000000123) {
			t.Fatalf("send %d: reason %q timestamp %d", i, o.resp.Reason, o.resp.Timestamp)
		}
	}
	// The server counts a response once its write returned, which can be
	// just after the client has read it.
	st := s.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.Responses < 400 && time.Now().Before(deadline); st = s.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	if st.Requests != 400 || st.Responses != 400 {
		t.Errorf("server saw %d requests, wrote %d responses; want 400 each", st.Requests, st.Responses)
	}
	noViolations(t, s)
}

func TestConformanceMaxConcurrentStreamsLowered(t *testing.T) {
	hold := h2test.Options{
		Settings: []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 60}},
		Handler:  func(*h2test.Request) {}, // hold: answered below
	}
	s := hostile(t, hold)
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	var b batch
	done := make(chan struct{})
	go func() { defer close(done); b = send(t, c, 300, 100, nil) }()
	if !s.WaitPending(40, 20*time.Second) {
		t.Fatalf("the client never had 40 requests in flight: %+v", s.Stats())
	}
	acks := s.Stats().SettingsAcks
	for _, cn := range s.Conns() {
		cn.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 3})
	}
	for deadline := time.Now().Add(10 * time.Second); s.Stats().SettingsAcks == acks; {
		if time.Now().After(deadline) {
			t.Fatal("the client did not ACK the new SETTINGS")
		}
		time.Sleep(time.Millisecond)
	}
	// 40+ streams open, limit now 3: the client must not open another
	// until fewer than 3 are open.
	answerLoop(t, s, 2*time.Millisecond, h2test.Reply{})
	// If Sends stall, say what each side thinks is open.
	stall := time.AfterFunc(10*time.Second, func() {
		for _, cn := range s.Conns() {
			t.Logf("after 10s: server conn %d: %d streams open, %d requests unanswered", cn.ID(), cn.Open(), len(cn.Pending()))
		}
		t.Logf("after 10s: client %+v; server %+v", c.Status(), s.Stats())
	})
	<-done
	stall.Stop()
	if b.ok() != 300 {
		t.Errorf("%d of 300 answered 200: %s", b.ok(), b.summary())
	}
	noViolations(t, s)
}

func TestConformanceMaxConcurrentStreamsRaised(t *testing.T) {
	s := hostile(t, h2test.Options{
		Settings: []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 1}},
		Handler:  func(*h2test.Request) {},
	})
	answerLoop(t, s, 3*time.Millisecond, h2test.Reply{})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	var b batch
	done := make(chan struct{})
	go func() { defer close(done); b = send(t, c, 300, 64, nil) }()
	for deadline := time.Now().Add(20 * time.Second); s.Stats().Responses < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("10 answers did not come in 20s: %+v", s.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	if st := s.Stats(); st.MaxOpenStreams != 1 {
		t.Errorf("with a limit of 1 the client had %d streams open", st.MaxOpenStreams)
	}
	for _, cn := range s.Conns() {
		cn.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	}
	<-done
	if b.ok() != 300 {
		t.Errorf("%d of 300 answered 200: %s", b.ok(), b.summary())
	}
	if st := s.Stats(); st.MaxOpenStreams < 2 {
		t.Errorf("the raised limit was never used: at most %d stream open", st.MaxOpenStreams)
	}
	noViolations(t, s)
}

// TestConformanceZeroStreamLimit: a server that allows no streams at all
// (SETTINGS_MAX_CONCURRENT_STREAMS 0) gets none, not even the one stream
// a new connection starts with while it warms up; once it raises the
// limit the waiting request goes out. (The churn test's limit of 0 used to
// catch the client's warm-up stream only when a connection was young.)
func TestConformanceZeroStreamLimit(t *testing.T) {
	s := hostile(t, h2test.Options{Settings: []http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 0}}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	var b batch
	done := make(chan struct{})
	// Queued while the client is still dialling, so it is ready to go
	// the moment the server's SETTINGS arrive.
	go func() { defer close(done); b = send(t, c, 1, 1, nil) }()
	for deadline := time.Now().Add(20 * time.Second); s.Stats().SettingsAcks == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the client did not ACK the server's SETTINGS: %+v", s.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	// A stream opened on the strength of the SETTINGS follows their ACK
	// in the same write; a PING sent now is answered after it.
	cn := s.Conns()[0]
	if cn.PingFlood(1) != 1 {
		t.Fatal("PING not written")
	}
	for deadline := time.Now().Add(20 * time.Second); s.Stats().PingAcksRecv == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the client did not ACK the PING: %+v", s.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	if st := s.Stats(); st.StreamLimitViolations != 0 || cn.Open() != 0 {
		t.Errorf("with a stream limit of 0 the client opened a stream: %d open; %+v", cn.Open(), st)
	}
	cn.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 10})
	<-done
	if b.ok() != 1 {
		t.Errorf("after the limit went up to 10: %s", b.summary())
	}
	noViolations(t, s)
}

func TestConformanceOneByteWindow(t *testing.T) {
	s := hostile(t, h2test.Options{Settings: []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1}}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	b := send(t, c, 60, 16, nil)
	if b.ok() != 60 {
		t.Errorf("%d of 60 answered 200: %s", b.ok(), b.summary())
	}
	noViolations(t, s)
	var want int64
	for _, o := range b {
		want += int64(len(o.n.Payload))
	}
	if got := s.Stats().DataBytesRecv; got != want {
		t.Errorf("server received %d DATA bytes, want %d (the payloads)", got, want)
	}
}

// TestConformanceSettingsChurn changes SETTINGS every few milliseconds
// while requests flow: stream limit, initial window (applied to open
// streams, windows going negative), frame size, header table size.
func TestConformanceSettingsChurn(t *testing.T) {
	s := hostile(t, h2test.Options{})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{conns: 2})
	stop := make(chan struct{})
	churned := make(chan int)
	go func() {
		sets := [][]http2.Setting{
			{{ID: http2.SettingMaxConcurrentStreams, Val: 2}, {ID: http2.SettingInitialWindowSize, Val: 1}},
			{{ID: http2.SettingMaxFrameSize, Val: 1 << 20}, {ID: http2.SettingHeaderTableSize, Val: 0}},
			{{ID: http2.SettingMaxConcurrentStreams, Val: 50}, {ID: http2.SettingInitialWindowSize, Val: 65535}},
			{{ID: http2.SettingMaxFrameSize, Val: 16384}, {ID: http2.SettingInitialWindowSize, Val: 7}},
			{{ID: http2.SettingMaxConcurrentStreams, Val: 0}},
			{{ID: http2.SettingMaxConcurrentStreams, Val: 10}, {ID: http2.SettingHeaderTableSize, Val: 4096}, {ID: http2.SettingInitialWindowSize, Val: 300}},
		}
		k := 0
		for {
			select {
			case <-stop:
				churned <- k
				return
			case <-time.After(3 * time.Millisecond):
			}
			for _, cn := range s.Conns() {
				cn.WriteSettings(sets[k%len(sets)]...)
			}
			k++
		}
	}()
	b := send(t, c, 300, 64, func(i int) *apns.Notification {
		n := notif(i)
		n.Payload = fmt.Appendf(nil, `{"aps":{"alert":"%s"}}`, strings.Repeat("w", 1000+i))
		return n
	})
	close(stop)
	k := <-churned
	t.Logf("%d SETTINGS rounds; %s; server %+v", k, b.summary(), s.Stats())
	if b.ok() != 300 {
		t.Errorf("%d of 300 answered 200: %s", b.ok(), b.summary())
	}
	noViolations(t, s)
}

func TestConformanceGoAwayMidFlight(t *testing.T) {
	var holding atomic.Bool
	holding.Store(true)
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		if !holding.Load() {
			r.Respond(h2test.Reply{})
		}
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	var b batch
	done := make(chan struct{})
	go func() { defer close(done); b = send(t, c, 200, 80, nil) }()
	if !s.WaitPending(40, 20*time.Second) {
		t.Fatalf("40 requests never in flight: %+v", s.Stats())
	}
	cn := s.Conns()[0]
	pend := cn.Pending()
	last := pend[len(pend)/2]
	holding.Store(false)
	cn.GoAway(last, http2.ErrCodeNo, []byte(`{"reason":"Shutdown"}`))
	answered := 0
	for _, id := range cn.Pending() {
		if id <= last && cn.Respond(id, h2test.Reply{}) == nil {
			answered++
		}
	}
	time.Sleep(100 * time.Millisecond)
	cn.Close() // the streams above last-stream-id were never processed
	<-done
	t.Logf("GOAWAY last-stream-id %d with %d in flight, %d answered below it; %s", last, len(pend), answered, b.summary())
	if b.ok() < answered {
		t.Errorf("only %d answered 200, fewer than the %d streams at or below last-stream-id", b.ok(), answered)
	}
	onlyConnErrors(t, b)
	// RFC 9113 6.8: the streams above last-stream-id were not processed,
	// so they can be sent again; the client retries them on another
	// connection and answers each once.
	if b.ok() != 200 {
		t.Errorf("%d of 200 answered 200 (streams above GOAWAY's last-stream-id are safe to retry): %s", b.ok(), b.summary())
	}
	noViolations(t, s)
	recovered(t, c)
}

func TestConformanceResetStream(t *testing.T) {
	var seen sync.Map // apns-id -> attempts
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		if calm(r) {
			return
		}
		v, _ := seen.LoadOrStore(r.ApnsID, new(atomic.Int32))
		attempt := v.(*atomic.Int32).Add(1)
		switch r.DeviceToken[len(r.DeviceToken)-1] {
		case '0', '1', '2': // refused on the first attempt: safe to retry
			if attempt == 1 {
				r.Conn.Reset(r.StreamID, http2.ErrCodeRefusedStream)
				return
			}
		case '3':
			r.Conn.Reset(r.StreamID, http2.ErrCodeInternal)
			return
		case '4':
			r.Conn.Reset(r.StreamID, http2.ErrCodeCancel)
			return
		case '5':
			r.Conn.Reset(r.StreamID, http2.ErrCodeEnhanceYourCalm)
			return
		}
		r.Respond(h2test.Reply{})
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{retryRefused: true})
	b := send(t, c, 200, 50, nil)
	t.Logf("%s; server %+v", b.summary(), s.Stats())
	onlyConnErrors(t, b)
	for i, o := range b {
		switch i % 10 {
		case 3, 4, 5:
			if o.err == nil {
				t.Errorf("send %d: reset with a non-retryable code, got a response %d", i, o.resp.StatusCode)
			}
		case 0, 1, 2:
			if o.resp == nil || !o.resp.OK() {
				t.Errorf("send %d: REFUSED_STREAM must be retried (RFC 9113 8.7); got %v", i, o.err)
			}
		default:
			if o.resp == nil || !o.resp.OK() {
				t.Errorf("send %d: %v", i, o.err)
			}
		}
	}
	noViolations(t, s)
	recovered(t, c)
}

func TestConformancePingFlood(t *testing.T) {
	s := hostile(t, h2test.Options{})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{conns: 2})
	recovered(t, c) // both connections up
	var flooded atomic.Int64
	var wg sync.WaitGroup
	for _, cn := range s.Conns() {
		wg.Add(1)
		go func() { defer wg.Done(); flooded.Add(int64(cn.PingFlood(3000))) }()
	}
	b := send(t, c, 300, 64, nil)
	wg.Wait()
	if b.ok() != 300 {
		t.Errorf("%d of 300 answered 200 under a PING flood: %s", b.ok(), b.summary())
	}
	for deadline := time.Now().Add(10 * time.Second); s.Stats().PingAcksRecv < flooded.Load() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.PingAcksRecv != flooded.Load() {
		t.Errorf("%d PINGs sent, %d ACKed", flooded.Load(), st.PingAcksRecv)
	}
	noViolations(t, s)
}

func TestConformanceContinuation(t *testing.T) {
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		// 1-byte fragments for some, 7 for others, 400s with a reason too.
		frag := 1 + int(r.StreamID%2)*6
		if r.StreamID%3 == 0 {
			r.Respond(h2test.Reply{Status: 400, Reason: "BadTopic", Fragment: frag})
			return
		}
		r.Respond(h2test.Reply{Fragment: frag})
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	b := send(t, c, 200, 40, nil)
	if b.errs() != 0 {
		t.Fatalf("errors: %s", b.summary())
	}
	for i, o := range b {
		if o.resp.ApnsID != o.n.ApnsID || (o.resp.StatusCode == 400) != (o.resp.Reason == "BadTopic") {
			t.Errorf("send %d: %+v", i, o.resp)
		}
	}
	if st := s.Stats(); st.Responses != 200 {
		t.Errorf("server wrote %d responses, want 200", st.Responses)
	}
	noViolations(t, s)
}

func TestConformanceOversizedHeaders(t *testing.T) {
	oversized := func(token string) bool { return strings.HasSuffix(token, "0") || strings.HasSuffix(token, "1") }
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		if oversized(r.DeviceToken) {
			r.Respond(h2test.Reply{PadHeaders: 1 << 20})
			return
		}
		r.Respond(h2test.Reply{})
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	b := send(t, c, 10, 4, nil)
	t.Logf("%s", b.summary())
	onlyConnErrors(t, b)
	for i, o := range b {
		if oversized(o.n.DeviceToken) && o.resp != nil {
			t.Errorf("send %d: a 1 MiB response header block was accepted (status %d); a client must cut it off", i, o.resp.StatusCode)
		}
	}
	recovered(t, c)
}

func TestConformanceEndlessBody(t *testing.T) {
	s := hostile(t, h2test.Options{EndlessLimit: 16 << 20, Handler: func(r *h2test.Request) {
		r.Respond(h2test.Reply{Status: 400, EndlessBody: true})
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	b := send(t, c, 10, 5, nil)
	t.Logf("%s; %d body bytes sent", b.summary(), s.Stats().EndlessBytes)
	onlyConnErrors(t, b)
	// The server resets a stream (CANCEL) only when it reached the limit:
	// the client must have stopped reading (reset the stream or closed
	// the connection) well before 16 MiB.
	for deadline := time.Now().Add(5 * time.Second); s.Stats().ResetsRecv+int64(len(s.Conns())) == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.ResetsSent != 0 {
		t.Errorf("%d endless bodies ran to the server's 16 MiB limit: the client did not cut them off", st.ResetsSent)
	}
}

func TestConformanceDataOnClosedStream(t *testing.T) {
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		if calm(r) {
			return
		}
		r.Respond(h2test.Reply{})
		if r.StreamID%3 == 0 {
			r.Conn.WriteFrame(http2.FrameData, 0, r.StreamID, []byte("late data"))
		}
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	b := send(t, c, 200, 40, nil)
	t.Logf("%s; server %+v", b.summary(), s.Stats())
	onlyConnErrors(t, b)
	if b.ok() == 0 {
		t.Errorf("nothing answered: %s", b.summary())
	}
	noViolations(t, s)
	recovered(t, c)
}

func TestConformanceUnknownFrames(t *testing.T) {
	// RFC 9113 4.1/5.5: frames of unknown type are ignored, on stream 0
	// and on open streams alike. Nothing may fail.
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		r.Conn.WriteFrame(0xfa, 0x3, 0, []byte("ignore me"))
		r.Conn.WriteFrame(0xfb, 0xff, r.StreamID, bytes.Repeat([]byte{0xee}, 100))
		r.Respond(h2test.Reply{})
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	b := send(t, c, 200, 40, nil)
	if b.ok() != 200 {
		t.Errorf("%d of 200 answered 200 with unknown frames around: %s", b.ok(), b.summary())
	}
	noViolations(t, s)
}

func TestConformanceGarbageFrames(t *testing.T) {
	var count atomic.Int64
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		if calm(r) {
			return
		}
		switch count.Add(1) {
		case 30:
			// A WINDOW_UPDATE of length 3 (must be 4): FRAME_SIZE_ERROR.
			r.Conn.WriteBytes([]byte{0, 0, 3, 0x8, 0, 0, 0, 0, 0, 1, 2, 3})
			return
		case 90:
			// A DATA frame on stream 0: PROTOCOL_ERROR.
			r.Conn.WriteFrame(http2.FrameData, 0, 0, []byte("x"))
			return
		case 150:
			// Bytes that read as the header of a 16 KiB frame, then
			// silence: the connection is stuck mid-frame until the
			// client's PING goes unanswered.
			r.Conn.WriteBytes([]byte("\x00\x40\x00\x00GARBAGE GARBAGE GARBAGE"))
			return
		}
		r.Respond(h2test.Reply{})
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{pingEvery: 300 * time.Millisecond})
	b := send(t, c, 200, 20, nil)
	t.Logf("%s; server %+v", b.summary(), s.Stats())
	onlyConnErrors(t, b)
	if b.ok() < 100 {
		t.Errorf("only %d of 200 answered 200: %s", b.ok(), b.summary())
	}
	if st := s.Stats(); st.H2Conns < 3 {
		t.Errorf("the client did not reconnect after each of 3 garbage frames (%d connections)", st.H2Conns)
	}
	recovered(t, c)
}

func TestConformanceCutMidFrame(t *testing.T) {
	var holding atomic.Bool
	holding.Store(true)
	s := hostile(t, h2test.Options{Handler: func(r *h2test.Request) {
		if !holding.Load() {
			r.Respond(h2test.Reply{})
		}
	}})
	c := newClient(t, s.URL(), s.Pool(), clientOpts{})
	var b batch
	done := make(chan struct{})
	go func() { defer close(done); b = send(t, c, 100, 30, nil) }()
	if !s.WaitPending(20, 20*time.Second) {
		t.Fatalf("20 requests never in flight: %+v", s.Stats())
	}
	holding.Store(false)
	cut := len(s.Conns()[0].Pending())
	s.Conns()[0].CutMidFrame()
	<-done
	t.Logf("cut with %d in flight: %s", cut, b.summary())
	onlyConnErrors(t, b)
	if b.errs() > 30 {
		t.Errorf("%d errors, but at most 30 requests (the senders) can have been in flight at the cut", b.errs())
	}
	recovered(t, c)
}

// TestConformanceNoH2: a server that does not speak HTTP/2. Without ALPN
// at all (the handshake completes, nothing negotiated) and with ALPN
// "http/1.1" only (a TLS no_application_protocol alert), every Send fails
// with ErrUnavailable within its deadline and the error says why.
func TestConformanceNoH2(t *testing.T) {
	for _, tc := range []struct {
		name string
		alpn []string
	}{{"NoALPN", nil}, {"ALPNHTTP1", []string{"http/1.1"}}} {
		t.Run(tc.name, func(t *testing.T) {
			s := hostile(t, h2test.Options{NoH2: true, ALPN: tc.alpn})
			c := newClient(t, s.URL(), s.Pool(), clientOpts{})
			out := make(batch, 8)
			var wg sync.WaitGroup
			for i := range out {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					defer cancel()
					n := notif(i)
					resp, err := c.Send(ctx, n)
					out[i] = outcome{n: n, resp: resp, err: err}
				}()
			}
			wg.Wait()
			for i, o := range out {
				if o.err == nil {
					t.Errorf("send %d: got %d from a server that does not speak h2", i, o.resp.StatusCode)
				} else if !errors.Is(o.err, apns.ErrUnavailable) {
					t.Errorf("send %d: %v, want ErrUnavailable", i, o.err)
				}
			}
			st := c.Status()
			t.Logf("last error: %q; send error: %v; server %+v", st.LastError, out[0].err, s.Stats())
			if st.Connections != 0 {
				t.Errorf("%d connections up to a server without h2", st.Connections)
			}
			low := strings.ToLower(st.LastError)
			if !strings.Contains(low, "h2") && !strings.Contains(low, "http/2") && !strings.Contains(low, "alpn") && !strings.Contains(low, "application protocol") {
				t.Errorf("last error %q does not say that the server does not speak HTTP/2 (ALPN h2)", st.LastError)
			}
			if s.Stats().Conns == 0 {
				t.Errorf("the client never reached the server")
			}
		})
	}
}

func TestConformanceNghttpd(t *testing.T) {
	bin := "/usr/sbin/nghttpd"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (Debian package nghttp2-server; scripts/deps.sh installs it)", bin, err)
	}
	leakCheck(t)
	dir := t.TempDir()
	ca, err := pki.NewCA("conformance nghttpd CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerCert()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := srv.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	// nghttpd answers a POST to a path naming a file with 200 and the
	// file's (empty) content, as APNs does.
	dev := filepath.Join(dir, "htdocs", "3", "device")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := os.WriteFile(filepath.Join(dev, notif(i).DeviceToken), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var log bytes.Buffer
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-d", filepath.Join(dir, "htdocs"), "-m", "100", fmt.Sprint(port), keyFile, certFile)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		nc, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nghttpd did not listen on %s: %s", addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := newClient(t, "https://"+addr, ca.Pool(), clientOpts{conns: 2})
	b := send(t, c, 1000, 150, func(i int) *apns.Notification { return notif(i % 100) })
	if b.ok() != 1000 {
		t.Errorf("%d of 1000 answered 200 by nghttpd: %s", b.ok(), b.summary())
	}
	// A token nghttpd has no file for: 404, an answer, not an error.
	n := notif(5000)
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	resp, err := c.Send(ctx, n)
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("unknown path: %v %v, want a 404 answer", resp, err)
	}
}

func TestConformanceStandin(t *testing.T) {
	leakCheck(t)
	clientCA, err := pki.NewCA("conformance client CA")
	if err != nil {
		t.Fatal(err)
	}
	push, err := clientCA.PushCert(pki.PushCertOptions{Topic: confTopic})
	if err != nil {
		t.Fatal(err)
	}
	s, err := apnstest.New(apnstest.Options{ClientCAs: clientCA.Pool(), MaxConcurrentStreams: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	cert := push.TLSCertificate()
	c := newClient(t, s.URL, s.CA.Pool(), clientOpts{conns: 2, cert: &cert})
	b := send(t, c, 1000, 150, nil)
	if b.ok() != 1000 {
		t.Errorf("%d of 1000 answered 200 by the stand-in: %s", b.ok(), b.summary())
	}
	if got := s.Accepted(); got != 1000 {
		t.Errorf("stand-in accepted %d, want 1000", got)
	}
}
