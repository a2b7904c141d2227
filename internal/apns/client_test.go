package apns_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/pki"
)

type fixture struct {
	srv      *apnstest.Server
	clientCA *pki.CA
	cert     *pki.Issued
	certPtr  atomic.Pointer[tls.Certificate]
}

func newFixture(t *testing.T, o apnstest.Options) *fixture {
	t.Helper()
	ca, err := pki.NewCA("client CA")
	if err != nil {
		t.Fatal(err)
	}
	o.ClientCAs = ca.Pool()
	srv, err := apnstest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cert, err := ca.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, clientCA: ca, cert: cert}
	tc := cert.TLSCertificate()
	f.certPtr.Store(&tc)
	return f
}

func (f *fixture) client(t *testing.T, conns int) *apns.Client {
	t.Helper()
	c, err := apns.NewClient(apns.ClientOptions{
		Endpoint:    f.srv.URL,
		RootCAs:     f.srv.RootCAs(),
		Connections: conns,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return f.certPtr.Load(), nil
		},
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	return c
}

func note(token string) *apns.Notification {
	return &apns.Notification{DeviceToken: token, Topic: "com.example.app", PushType: apns.PushTypeAlert, Payload: []byte(`{"aps":{"alert":"hi"}}`)}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSendHeadersAndAnswer(t *testing.T) {
	f := newFixture(t, apnstest.Options{})
	c := f.client(t, 1)
	n := &apns.Notification{
		DeviceToken: "a1b2c3d4", Topic: "com.example.app.voip", PushType: apns.PushTypeVoIP,
		Priority: 5, Expiration: 0, HasExpiration: true, CollapseID: "c1",
		ApnsID: "123e4567-e89b-12d3-a456-426614174000", Payload: []byte(`{"aps":{}}`),
	}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	res, err := c.Send(ctxT(t, 5*time.Second), n)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || res.ApnsID != n.ApnsID {
		t.Fatalf("got %+v", res)
	}
	reqs := f.srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("stand-in saw %d requests", len(reqs))
	}
	h := reqs[0].Header
	for k, want := range map[string]string{
		"apns-topic": "com.example.app.voip", "apns-push-type": "voip", "apns-priority": "5",
		"apns-expiration": "0", "apns-collapse-id": "c1", "apns-id": n.ApnsID,
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if reqs[0].DeviceToken != "a1b2c3d4" || string(reqs[0].Body) != `{"aps":{}}` {
		t.Errorf("stand-in got token %q body %q", reqs[0].DeviceToken, reqs[0].Body)
	}
}

func TestErrorAnswers(t *testing.T) {
	f := newFixture(t, apnstest.Options{})
	c := f.client(t, 1)
	f.srv.SetResponder(apnstest.DemoResponder)
	cases := []struct {
		token, reason string
		status        int
		ts            bool
	}{
		{"0410aa", apns.ReasonUnregistered, 410, true},
		{"0400aa", apns.ReasonBadDeviceToken, 400, false},
		{"0429aa", apns.ReasonTooManyRequests, 429, false},
		{"0503aa", apns.ReasonServiceUnavailable, 503, false},
		{"aaaa", "", 200, false},
	}
	for _, tc := range cases {
		res, err := c.Send(ctxT(t, 5*time.Second), note(tc.token))
		if err != nil {
			t.Fatalf("%s: %v", tc.token, err)
		}
		if res.StatusCode != tc.status || res.Reason != tc.reason || (res.Timestamp != 0) != tc.ts || !apns.ValidUUID(res.ApnsID) {
			t.Errorf("%s: got %+v, want status %d reason %q timestamp %v", tc.token, res, tc.status, tc.reason, tc.ts)
		}
	}
}

func TestPersistentConnections(t *testing.T) {
	f := newFixture(t, apnstest.Options{})
	c := f.client(t, 2)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Send(ctxT(t, 10*time.Second), note("abcd")); err != nil {
				t.Errorf("send %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if got := f.srv.Connections(); got != 2 {
		t.Errorf("stand-in saw %d connections for 200 sends, want 2 (kept open)", got)
	}
	if st := c.Status(); st.Connections != 2 || st.State() != "up" {
		t.Errorf("status %+v", st)
	}
}

func TestNeverExceedsMaxConcurrentStreams(t *testing.T) {
	f := newFixture(t, apnstest.Options{MaxConcurrentStreams: 3})
	f.srv.SetResponder(func(*apnstest.Request) apnstest.Reply { return apnstest.Reply{Delay: 10 * time.Millisecond} })
	c := f.client(t, 1)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Send(ctxT(t, 20*time.Second), note("abcd"))
			if err != nil || res.StatusCode != 200 {
				failed.Add(1)
				t.Errorf("send: %v %+v", err, res)
			}
		}()
	}
	wg.Wait()
	if m := f.srv.MaxConcurrent(); m > 3 || m < 2 {
		t.Errorf("max concurrent streams seen by the server = %d, want 2..3", m)
	}
	if f.srv.Accepted() != 60 {
		t.Errorf("accepted %d, want 60", f.srv.Accepted())
	}
}

func TestUnavailableWhenNoConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c, err := apns.NewClient(apns.ClientOptions{Endpoint: "https://" + addr, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer c.Close()
	_, err = c.Send(ctxT(t, 300*time.Millisecond), note("abcd"))
	if !errors.Is(err, apns.ErrUnavailable) {
		t.Fatalf("got %v, want apns.ErrUnavailable", err)
	}
	if st := c.Status(); st.State() != "down" || st.LastError == "" {
		t.Errorf("status %+v, want down with an error", st)
	}
}

func TestReconnectsAfterDrop(t *testing.T) {
	f := newFixture(t, apnstest.Options{})
	c := f.client(t, 1)
	if _, err := c.Send(ctxT(t, 5*time.Second), note("abcd")); err != nil {
		t.Fatal(err)
	}
	f.srv.DropConnections()
	// The next send may race the drop; within its deadline it must succeed
	// on a new connection, or fail as a connection error at worst.
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := c.Send(ctxT(t, 5*time.Second), note("abcd"))
		if err == nil && res.StatusCode == 200 {
			break
		}
		var ce *apns.ConnError
		if !errors.As(err, &ce) || time.Now().After(deadline) {
			t.Fatalf("after drop: %v", err)
		}
	}
	if f.srv.Connections() < 2 {
		t.Errorf("connections = %d, want a new one", f.srv.Connections())
	}
}

func TestRotatePresentsNewCertificate(t *testing.T) {
	f := newFixture(t, apnstest.Options{})
	c := f.client(t, 1)
	f.srv.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		if r.DeviceToken == "5104" {
			return apnstest.Reply{Delay: 300 * time.Millisecond}
		}
		return apnstest.Reply{}
	})
	if _, err := c.Send(ctxT(t, 5*time.Second), note("abcd")); err != nil {
		t.Fatal(err)
	}
	// A slow request in flight on the old connection must finish.
	slow := make(chan error, 1)
	go func() {
		res, err := c.Send(ctxT(t, 5*time.Second), note("5104"))
		if err == nil && res.StatusCode != 200 {
			err = errors.New(res.Reason)
		}
		slow <- err
	}()
	time.Sleep(50 * time.Millisecond)
	next, err := f.clientCA.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	tc := next.TLSCertificate()
	f.certPtr.Store(&tc)
	c.Rotate()
	// Make before break: sends keep succeeding, and go out with the new
	// certificate once its connection is up.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		if _, err := c.Send(ctxT(t, 5*time.Second), note("abcd")); err != nil {
			t.Fatalf("send %d after rotate: %v", i, err)
		}
		reqs := f.srv.Requests()
		if reqs[len(reqs)-1].ClientCert.Equal(next.Cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("after Rotate the stand-in still sees the old certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-slow; err != nil {
		t.Fatalf("request in flight during rotation: %v", err)
	}
	// The old connection closes once the new one has answered and the old
	// one's last stream is done.
	for f.srv.OpenConnections() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("open connections after rotation = %d, want 1 (old one closed once drained)", f.srv.OpenConnections())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewClientRejectsBadEndpoint(t *testing.T) {
	for _, ep := range []string{"http://x:1", "https://", "https://x/3/device", "::"} {
		if _, err := apns.NewClient(apns.ClientOptions{Endpoint: ep}); err == nil {
			t.Errorf("apns.NewClient(%q) accepted", ep)
		}
	}
}

// New credentials that APNs refuses at the TLS level (TLS 1.3 reports a
// refused client certificate only after the handshake) must not take the
// environment down: the previous connection serves again.
func TestRotateToRefusedCertificateKeepsOldConnection(t *testing.T) {
	f := newFixture(t, apnstest.Options{})
	c := f.client(t, 1)
	if _, err := c.Send(ctxT(t, 5*time.Second), note("abcd")); err != nil {
		t.Fatal(err)
	}
	stranger, err := pki.NewCA("a CA the stand-in does not trust")
	if err != nil {
		t.Fatal(err)
	}
	bad, err := stranger.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	tc := bad.TLSCertificate()
	f.certPtr.Store(&tc)
	c.Rotate()
	deadline := time.Now().Add(3 * time.Second)
	connErrs := 0
	for i := 0; time.Now().Before(deadline); i++ {
		res, err := c.Send(ctxT(t, 5*time.Second), note("abcd"))
		if err != nil {
			// A request that tries a refused connection fails as a
			// connection error (the daemon retries those); with the old
			// connection back in service that stays rare.
			var ce *apns.ConnError
			if !errors.As(err, &ce) {
				t.Fatalf("send %d after rotating to a refused certificate: %v", i, err)
			}
			if connErrs++; connErrs > 3 {
				t.Fatalf("%d connection errors: the previous connection is not serving", connErrs)
			}
			continue
		}
		if res.StatusCode != 200 {
			t.Fatalf("send %d: %+v", i, res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, r := range f.srv.Requests() {
		if !r.ClientCert.Equal(f.cert.Cert) {
			t.Fatal("the stand-in accepted the refused certificate")
		}
	}
}
