package apns_test

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/pki"
)

// TestOutageFailsFastAndRecovers (issue 9 item 4) with the default backoff
// and UnavailableWait: while APNs refuses handshakes a send fails with
// apns.ErrUnavailable in seconds, not at its deadline; a send made a second
// after APNs is back is delivered within 3 s.
func TestOutageFailsFastAndRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("an outage of several seconds")
	}
	ca, err := pki.NewCA("client CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := apnstest.New(apnstest.Options{ClientCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cert, err := ca.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	if err != nil {
		t.Fatal(err)
	}
	tc := cert.TLSCertificate()
	c, err := apns.NewClient(apns.ClientOptions{Endpoint: srv.URL, RootCAs: srv.RootCAs(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tc, nil }})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer c.Close()
	n := apns.RealisticNotification(1)
	if _, err := c.Send(ctxT(t, 10*time.Second), n); err != nil {
		t.Fatal(err)
	}
	srv.SetRefuseHandshakes(true)
	srv.DropConnections()
	outage := time.Now()
	for c.Status().State() != "down" {
		if time.Since(outage) > 5*time.Second {
			t.Fatal("the dropped connection is still reported up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	_, err = c.Send(ctxT(t, 60*time.Second), n)
	took := time.Since(start)
	t.Logf("send during the outage: %v after %s", err, took.Round(time.Millisecond))
	if !errors.Is(err, apns.ErrUnavailable) {
		t.Fatalf("during the outage: got %v, want apns.ErrUnavailable", err)
	}
	if took > 30*time.Second {
		t.Errorf("the send waited %s of its 60 s deadline; UnavailableWait is 3 s", took)
	}
	// Let the backoff grow (0.5, 1, 2, 4, 8 s...) with no request waiting.
	time.Sleep(time.Until(outage.Add(12 * time.Second)))
	srv.SetRefuseHandshakes(false)
	time.Sleep(time.Second)
	dials := c.Status().Dials
	start = time.Now()
	res, err := c.Send(ctxT(t, 3*time.Second), n)
	t.Logf("send 1 s after APNs came back: %v in %s (refused handshakes %d, dials %d)", err, time.Since(start).Round(time.Millisecond), srv.RefusedHandshakes(), c.Status().Dials-dials)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("a send 1 s after APNs came back was not delivered within 3 s: %+v %v", res, err)
	}
}

// BenchmarkSendStandIn: against the in-process stand-in (its CPU counts).
func BenchmarkSendStandIn(b *testing.B) {
	srv, err := apnstest.New(apnstest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	c, err := apns.NewClient(apns.ClientOptions{Endpoint: srv.URL, RootCAs: srv.RootCAs(),
		Authorization: func() (string, error) { return "bearer x.y.z", nil }})
	if err != nil {
		b.Fatal(err)
	}
	c.Start()
	defer c.Close()
	apns.BenchSend(b, c, 256)
}
