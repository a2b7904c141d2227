package apnstest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"golang.org/x/net/http2"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/pki"
)

const (
	bundle   = "com.example.app"
	devToken = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

// answer is what a client saw.
type answer struct {
	Status    int
	Reason    string
	Timestamp int64
	ApnsID    string
}

func post(t *testing.T, c *http.Client, method, url string, h http.Header, body []byte) answer {
	t.Helper()
	a, err := tryPost(context.Background(), c, method, url, h, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

func tryPost(ctx context.Context, c *http.Client, method, url string, h http.Header, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		return answer{}, errors.New("not HTTP/2: " + resp.Proto)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{Status: resp.StatusCode, ApnsID: resp.Header.Get("apns-id")}
	if resp.StatusCode == 200 {
		if len(b) != 0 {
			return a, errors.New("200 with a body: " + string(b))
		}
		return a, nil
	}
	var j struct {
		Reason    string `json:"reason"`
		Timestamp int64  `json:"timestamp"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return a, errors.New("error body is not JSON: " + string(b))
	}
	a.Reason, a.Timestamp = j.Reason, j.Timestamp
	return a, nil
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// jsonOfSize returns a valid JSON object of exactly n bytes (n >= 10).
func jsonOfSize(n int) []byte {
	b := []byte(`{"a":"` + strings.Repeat("x", n-8) + `"}`)
	if len(b) != n {
		panic("jsonOfSize")
	}
	return b
}

type certFixture struct {
	ca     *pki.CA
	srv    *Server
	single tls.Certificate // UID bundle, no topics extension
	multi  tls.Certificate // UID bundle, extension [bundle, com.example.other]
}

func newCertServer(t *testing.T, o Options) *certFixture {
	t.Helper()
	ca, err := pki.NewCA("test client CA")
	if err != nil {
		t.Fatal(err)
	}
	o.ClientCAs = ca.Pool()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	single, err := ca.PushCert(pki.PushCertOptions{Topic: bundle})
	if err != nil {
		t.Fatal(err)
	}
	multi, err := ca.PushCert(pki.PushCertOptions{Topic: bundle, Topics: []string{bundle, "com.example.other"}, RSA: true})
	if err != nil {
		t.Fatal(err)
	}
	return &certFixture{ca: ca, srv: s, single: single.TLSCertificate(), multi: multi.TLSCertificate()}
}

func TestValidationCertMode(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	single := s.Client(f.single)
	multi := s.Client(f.multi)
	dev := s.URL + "/3/device/" + devToken
	okBody := []byte(`{"aps":{"alert":"hi"}}`)
	const goodID = "123e4567-e89b-12d3-a456-426614174000"

	tests := []struct {
		name   string
		client *http.Client
		method string
		url    string
		h      http.Header
		body   []byte
		status int
		reason string
	}{
		{"minimal", single, "POST", dev, nil, okBody, 200, ""},
		{"all headers", single, "POST", dev, hdr("apns-topic", bundle, "apns-push-type", "alert", "apns-priority", "10",
			"apns-expiration", "0", "apns-collapse-id", "c1", "apns-id", goodID), okBody, 200, ""},
		{"uppercase hex token", single, "POST", s.URL + "/3/device/" + strings.ToUpper(devToken), nil, okBody, 200, ""},
		{"short token", single, "POST", s.URL + "/3/device/ab", nil, okBody, 200, ""},
		{"authorization ignored with certs", single, "POST", dev, hdr("authorization", "bearer junk"), okBody, 200, ""},

		{"GET", single, "GET", dev, nil, nil, 405, "MethodNotAllowed"},
		{"PUT", single, "PUT", dev, nil, okBody, 405, "MethodNotAllowed"},
		{"empty token", single, "POST", s.URL + "/3/device/", nil, okBody, 400, "MissingDeviceToken"},
		{"no token segment", single, "POST", s.URL + "/3/device", nil, okBody, 400, "MissingDeviceToken"},
		{"wrong version", single, "POST", s.URL + "/2/device/" + devToken, nil, okBody, 404, "BadPath"},
		{"root", single, "POST", s.URL + "/", nil, okBody, 404, "BadPath"},
		{"extra segment", single, "POST", dev + "/x", nil, okBody, 404, "BadPath"},
		{"odd token", single, "POST", s.URL + "/3/device/abc", nil, okBody, 400, "BadDeviceToken"},
		{"non-hex token", single, "POST", s.URL + "/3/device/zz" + devToken[2:], nil, okBody, 400, "BadDeviceToken"},

		{"duplicate topic", single, "POST", dev, hdr("apns-topic", bundle, "apns-topic", bundle), okBody, 400, "DuplicateHeaders"},
		{"duplicate id", single, "POST", dev, hdr("apns-id", goodID, "apns-id", goodID), okBody, 400, "DuplicateHeaders"},
		{"duplicate priority", single, "POST", dev, hdr("apns-priority", "10", "apns-priority", "5"), okBody, 400, "DuplicateHeaders"},

		{"topic voip suffix", single, "POST", dev, hdr("apns-topic", bundle+".voip", "apns-push-type", "voip"), okBody, 200, ""},
		{"topic complication suffix", single, "POST", dev, hdr("apns-topic", bundle+".complication"), okBody, 200, ""},
		{"topic liveactivity suffix", single, "POST", dev, hdr("apns-topic", bundle+".push-type.liveactivity"), okBody, 200, ""},
		{"other topic", single, "POST", dev, hdr("apns-topic", "com.example.other"), okBody, 400, "TopicDisallowed"},
		{"unknown suffix", single, "POST", dev, hdr("apns-topic", bundle+".watchkitapp"), okBody, 400, "TopicDisallowed"},
		{"prefix of uid", single, "POST", dev, hdr("apns-topic", "com.example"), okBody, 400, "TopicDisallowed"},
		{"multi: topic required", multi, "POST", dev, nil, okBody, 400, "MissingTopic"},
		{"multi: listed topic", multi, "POST", dev, hdr("apns-topic", "com.example.other"), okBody, 200, ""},
		{"multi: uid", multi, "POST", dev, hdr("apns-topic", bundle), okBody, 200, ""},
		{"multi: uid voip", multi, "POST", dev, hdr("apns-topic", bundle+".voip"), okBody, 200, ""},
		{"multi: unlisted topic", multi, "POST", dev, hdr("apns-topic", "com.example.third"), okBody, 400, "TopicDisallowed"},

		{"push type unknown", single, "POST", dev, hdr("apns-push-type", "banner"), okBody, 400, "InvalidPushType"},
		{"push type empty", single, "POST", dev, hdr("apns-push-type", ""), okBody, 400, "InvalidPushType"},
		{"push type case", single, "POST", dev, hdr("apns-push-type", "Alert"), okBody, 400, "InvalidPushType"},

		{"priority 5", single, "POST", dev, hdr("apns-priority", "5"), okBody, 200, ""},
		{"priority 1", single, "POST", dev, hdr("apns-priority", "1"), okBody, 200, ""},
		{"priority 7", single, "POST", dev, hdr("apns-priority", "7"), okBody, 400, "BadPriority"},
		{"priority word", single, "POST", dev, hdr("apns-priority", "high"), okBody, 400, "BadPriority"},
		{"background 10", single, "POST", dev, hdr("apns-push-type", "background", "apns-priority", "10"), okBody, 400, "BadPriority"},
		{"background 5", single, "POST", dev, hdr("apns-push-type", "background", "apns-priority", "5"), okBody, 200, ""},

		{"expiration future", single, "POST", dev, hdr("apns-expiration", "4102444800"), okBody, 200, ""},
		{"expiration negative", single, "POST", dev, hdr("apns-expiration", "-1"), okBody, 400, "BadExpirationDate"},
		{"expiration plus", single, "POST", dev, hdr("apns-expiration", "+5"), okBody, 400, "BadExpirationDate"},
		{"expiration text", single, "POST", dev, hdr("apns-expiration", "tomorrow"), okBody, 400, "BadExpirationDate"},
		{"expiration float", single, "POST", dev, hdr("apns-expiration", "1.5"), okBody, 400, "BadExpirationDate"},
		{"expiration empty", single, "POST", dev, hdr("apns-expiration", ""), okBody, 400, "BadExpirationDate"},
		{"expiration overflow", single, "POST", dev, hdr("apns-expiration", "99999999999999999999"), okBody, 400, "BadExpirationDate"},

		{"id uppercase", single, "POST", dev, hdr("apns-id", strings.ToUpper(goodID)), okBody, 400, "BadMessageId"},
		{"id no dashes", single, "POST", dev, hdr("apns-id", strings.ReplaceAll(goodID, "-", "")), okBody, 400, "BadMessageId"},
		{"id braces", single, "POST", dev, hdr("apns-id", "{"+goodID+"}"), okBody, 400, "BadMessageId"},

		{"collapse 64", single, "POST", dev, hdr("apns-collapse-id", strings.Repeat("c", 64)), okBody, 200, ""},
		{"collapse 65", single, "POST", dev, hdr("apns-collapse-id", strings.Repeat("c", 65)), okBody, 400, "BadCollapseId"},

		{"empty body", single, "POST", dev, nil, nil, 400, "PayloadEmpty"},
		{"4096", single, "POST", dev, nil, jsonOfSize(4096), 200, ""},
		{"4097", single, "POST", dev, nil, jsonOfSize(4097), 413, "PayloadTooLarge"},
		{"huge", single, "POST", dev, nil, jsonOfSize(200000), 413, "PayloadTooLarge"},
		{"voip 5120", single, "POST", dev, hdr("apns-push-type", "voip", "apns-topic", bundle+".voip"), jsonOfSize(5120), 200, ""},
		{"voip 5121", single, "POST", dev, hdr("apns-push-type", "voip", "apns-topic", bundle+".voip"), jsonOfSize(5121), 413, "PayloadTooLarge"},
		{"alert 5120", single, "POST", dev, hdr("apns-push-type", "alert"), jsonOfSize(5120), 413, "PayloadTooLarge"},
		{"not json", single, "POST", dev, nil, []byte(`{"aps":`), 400, ReasonPayloadNotJSON},
		{"json scalar", single, "POST", dev, nil, []byte(`"hi"`), 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Count()
			a := post(t, tc.client, tc.method, tc.url, tc.h, tc.body)
			if a.Status != tc.status || a.Reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", a.Status, a.Reason, tc.status, tc.reason)
			}
			if !apns.ValidUUID(a.ApnsID) {
				t.Fatalf("apns-id %q is not a canonical UUID", a.ApnsID)
			}
			sent := tc.h.Get("apns-id")
			if sent == goodID && len(tc.h.Values("apns-id")) == 1 && a.ApnsID != goodID {
				t.Fatalf("apns-id %q not echoed, got %q", sent, a.ApnsID)
			}
			if sent != "" && !apns.ValidUUID(sent) && a.ApnsID == sent {
				t.Fatalf("invalid apns-id echoed")
			}
			if tc.status != 200 {
				if want := apns.ReasonStatus[tc.reason]; want != 0 && want != a.Status {
					t.Fatalf("reason %s came with %d, Apple sends it with %d", tc.reason, a.Status, want)
				}
			}
			if got := s.Count(); got != before+1 {
				t.Fatalf("Count went from %d to %d", before, got)
			}
		})
	}
}

func TestRecordedRequests(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	c := s.Client(f.single)
	const id = "00000000-0000-4000-8000-000000000001"
	body := []byte(`{"aps":{"alert":"x"}}`)
	post(t, c, "POST", s.URL+"/3/device/"+devToken, hdr("apns-id", id, "apns-push-type", "alert"), body)
	post(t, c, "POST", s.URL+"/3/device/"+devToken, hdr("apns-topic", bundle+".voip"), body)
	post(t, c, "POST", s.URL+"/3/device/zz", nil, body) // invalid: counted, not recorded
	s.SetResponder(Always(400, "BadDeviceToken"))
	post(t, c, "POST", s.URL+"/3/device/abcd", nil, body) // valid, refused by responder

	if s.Count() != 4 || s.Accepted() != 2 {
		t.Fatalf("Count %d Accepted %d, want 4 and 2", s.Count(), s.Accepted())
	}
	rs := s.Requests()
	if len(rs) != 3 {
		t.Fatalf("%d requests recorded, want 3", len(rs))
	}
	r := rs[0]
	if r.Method != "POST" || r.Path != "/3/device/"+devToken || r.DeviceToken != devToken ||
		r.Topic != bundle || r.ApnsID != id || !bytes.Equal(r.Body, body) ||
		r.Header.Get("apns-push-type") != "alert" || r.ConnID != 1 || r.Received.IsZero() {
		t.Fatalf("bad record %+v", r)
	}
	if r.ClientCert == nil || CertUID(r.ClientCert) != bundle {
		t.Fatalf("client cert not recorded")
	}
	if rs[1].Topic != bundle+".voip" || !apns.ValidUUID(rs[1].ApnsID) || rs[1].ApnsID == id {
		t.Fatalf("bad second record %+v", rs[1])
	}
	if rs[2].DeviceToken != "abcd" {
		t.Fatalf("bad third record %+v", rs[2])
	}
	// Requests is a copy.
	rs[0].DeviceToken = "changed"
	if s.Requests()[0].DeviceToken != devToken {
		t.Fatal("Requests returned shared storage")
	}
	s.Reset()
	if s.Count() != 0 || s.Accepted() != 0 || len(s.Requests()) != 0 || s.Connections() != 0 || s.MaxConcurrent() != 0 {
		t.Fatal("Reset did not clear everything")
	}
	s.SetResponder(nil)
	if a := post(t, c, "POST", s.URL+"/3/device/abcd", nil, body); a.Status != 200 {
		t.Fatalf("SetResponder(nil): got %d", a.Status)
	}
	if rs := s.Requests(); len(rs) != 1 || rs[0].ConnID != 1 {
		t.Fatalf("after Reset: %+v", rs)
	}
}

func TestResponderIsOnlyAskedAboutValidRequests(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	c := s.Client(f.single)
	var mu sync.Mutex
	asked := 0
	s.SetResponder(func(r *Request) Reply {
		mu.Lock()
		asked++
		mu.Unlock()
		return Reply{Status: 503, Reason: "Shutdown"}
	})
	post(t, c, "POST", s.URL+"/3/device/abc", nil, []byte(`{}`))
	post(t, c, "POST", s.URL+"/3/device/abcd", nil, nil)
	a := post(t, c, "POST", s.URL+"/3/device/abcd", nil, []byte(`{}`))
	if a.Status != 503 || a.Reason != "Shutdown" {
		t.Fatalf("got %+v", a)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 1 {
		t.Fatalf("responder asked %d times, want 1", asked)
	}
}

// plainClientCert is a client certificate without Apple's UID or topics.
func plainClientCert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "not a push cert"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	c, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNonPushCertificate(t *testing.T) {
	f := newCertServer(t, Options{})
	c := f.srv.Client(plainClientCert(t, f.ca))
	a := post(t, c, "POST", f.srv.URL+"/3/device/"+devToken, hdr("apns-topic", bundle), []byte(`{}`))
	if a.Status != 403 || a.Reason != "BadCertificate" {
		t.Fatalf("got %+v", a)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	otherCA, err := pki.NewCA("someone else")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.PushCert(pki.PushCertOptions{Topic: bundle})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := f.ca.PushCert(pki.PushCertOptions{Topic: bundle,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*http.Client{
		"foreign CA": s.Client(foreign.TLSCertificate()),
		"expired":    s.Client(expired.TLSCertificate()),
		"no cert":    s.Client(),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tryPost(context.Background(), c, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`))
			if err == nil {
				t.Fatal("request went through")
			}
		})
	}
	// A client that does not trust the server's CA fails too.
	untrusting := s.Client(f.single)
	untrusting.Transport.(*http.Transport).TLSClientConfig.RootCAs = otherCA.Pool()
	if _, err := tryPost(context.Background(), untrusting, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`)); err == nil {
		t.Fatal("client accepted a server it does not trust")
	}
	// An HTTP/1.1-only client is refused: the server speaks HTTP/2 only.
	var p http.Protocols
	p.SetHTTP1(true)
	h1 := s.Client(f.single)
	h1.Transport.(*http.Transport).Protocols = &p
	h1.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	if _, err := tryPost(context.Background(), h1, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`)); err == nil {
		t.Fatal("HTTP/1.1 request went through")
	}
	time.Sleep(50 * time.Millisecond)
	if s.Count() != 0 || s.Connections() != 0 {
		t.Fatalf("Count %d Connections %d after failed handshakes, want 0", s.Count(), s.Connections())
	}
	// The good certificate still works.
	if a := post(t, s.Client(f.single), "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`)); a.Status != 200 {
		t.Fatalf("got %+v", a)
	}
	if s.Connections() != 1 {
		t.Fatalf("Connections %d, want 1", s.Connections())
	}
}

func TestTokenMode(t *testing.T) {
	key, _, err := pki.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := pki.NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	const kid, team = "ABC123DEFG", "DEF123GHIJ"
	now := time.Now()
	mk := func(k *ecdsa.PrivateKey, kid string, iat time.Time) string {
		tok, err := MakeToken(k, kid, team, iat)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mk(key, kid, now)
	parts := strings.Split(good, ".")

	open, err := New(Options{}) // accepts any bearer token
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(open.Close)
	strict, err := New(Options{TokenKeys: map[string]*ecdsa.PublicKey{kid: &key.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(strict.Close)
	custom, err := New(Options{VerifyToken: func(jwt string) string {
		if jwt == "slow-down" {
			return "TooManyProviderTokenUpdates"
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(custom.Close)

	body := []byte(`{"aps":{}}`)
	tests := []struct {
		name   string
		srv    *Server
		h      http.Header
		status int
		reason string
	}{
		{"open: no auth", open, hdr("apns-topic", bundle), 403, "MissingProviderToken"},
		{"open: basic", open, hdr("apns-topic", bundle, "authorization", "basic abc"), 403, "InvalidProviderToken"},
		{"open: bearer only", open, hdr("apns-topic", bundle, "authorization", "bearer"), 403, "InvalidProviderToken"},
		{"open: no topic", open, hdr("authorization", "bearer x"), 400, "MissingTopic"},
		{"open: any token", open, hdr("apns-topic", bundle, "authorization", "bearer x"), 200, ""},
		{"open: Bearer case", open, hdr("apns-topic", "anything.at.all", "authorization", "Bearer x"), 200, ""},
		{"strict: good", strict, hdr("apns-topic", bundle, "authorization", "bearer "+good), 200, ""},
		{"strict: wrong key", strict, hdr("apns-topic", bundle, "authorization", "bearer "+mk(other, kid, now)), 403, "InvalidProviderToken"},
		{"strict: unknown kid", strict, hdr("apns-topic", bundle, "authorization", "bearer "+mk(key, "ZZZ", now)), 403, "InvalidProviderToken"},
		{"strict: expired", strict, hdr("apns-topic", bundle, "authorization", "bearer "+mk(key, kid, now.Add(-61*time.Minute))), 403, "ExpiredProviderToken"},
		{"strict: 59 minutes", strict, hdr("apns-topic", bundle, "authorization", "bearer "+mk(key, kid, now.Add(-59*time.Minute))), 200, ""},
		{"strict: future", strict, hdr("apns-topic", bundle, "authorization", "bearer "+mk(key, kid, now.Add(time.Hour))), 403, "InvalidProviderToken"},
		{"strict: tampered claims", strict, hdr("apns-topic", bundle, "authorization", "bearer "+parts[0]+"."+parts[0]+"."+parts[2]), 403, "InvalidProviderToken"},
		{"strict: garbage", strict, hdr("apns-topic", bundle, "authorization", "bearer a.b.c"), 403, "InvalidProviderToken"},
		{"strict: missing", strict, hdr("apns-topic", bundle), 403, "MissingProviderToken"},
		{"custom: 429", custom, hdr("apns-topic", bundle, "authorization", "bearer slow-down"), 429, "TooManyProviderTokenUpdates"},
		{"custom: ok", custom, hdr("apns-topic", bundle, "authorization", "bearer fine"), 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, tc.srv.Client(), "POST", tc.srv.URL+"/3/device/"+devToken, tc.h, body)
			if a.Status != tc.status || a.Reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", a.Status, a.Reason, tc.status, tc.reason)
			}
		})
	}
	if rs := open.Requests(); len(rs) == 0 || rs[0].ClientCert != nil {
		t.Fatal("token mode request should have no client cert")
	}
}

func TestApns2Client(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	client := apns2Client(s, f.single)
	t.Cleanup(client.CloseIdleConnections)

	n := &apns2.Notification{DeviceToken: devToken, Topic: bundle, Payload: []byte(`{"aps":{"alert":"hello"}}`)}
	resp, err := client.Push(n)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Sent() || resp.StatusCode != 200 || resp.Reason != "" || !apns.ValidUUID(resp.ApnsID) {
		t.Fatalf("200: got %+v", resp)
	}

	n.ApnsID = "5a2f2e9c-7d1b-4f3e-9a8b-0c1d2e3f4a5b"
	s.SetResponder(Always(410, apns2.ReasonUnregistered))
	before := time.Now()
	resp, err = client.Push(n)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 410 || resp.Reason != apns2.ReasonUnregistered || resp.ApnsID != n.ApnsID {
		t.Fatalf("410: got %+v", resp)
	}
	if ts := resp.Timestamp.Time; ts.Before(before.Truncate(time.Second)) || ts.After(time.Now()) {
		t.Fatalf("410 timestamp %v, want about %v", ts, before)
	}

	s.SetResponder(DemoResponder)
	n.DeviceToken = "0400" + devToken[4:]
	resp, err = client.Push(n)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 400 || resp.Reason != apns2.ReasonBadDeviceToken || resp.Sent() {
		t.Fatalf("400: got %+v", resp)
	}

	// apns2 builds headers its own way (push type, priority, expiration).
	s.SetResponder(nil)
	n = &apns2.Notification{DeviceToken: devToken, Topic: bundle + ".voip", PushType: apns2.PushTypeVOIP,
		Priority: apns2.PriorityLow, Expiration: time.Now().Add(time.Hour), CollapseID: "c",
		Payload: map[string]any{"aps": map[string]any{"content-available": 1}}}
	resp, err = client.Push(n)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Sent() {
		t.Fatalf("voip: got %+v", resp)
	}
	if s.Connections() != 1 {
		t.Fatalf("apns2 used %d connections, want 1", s.Connections())
	}
}

func TestDemoResponderTable(t *testing.T) {
	tests := []struct {
		prefix string
		status int
		reason string
	}{
		{"0410", 410, "Unregistered"},
		{"0400", 400, "BadDeviceToken"},
		{"0403", 403, "Forbidden"},
		{"0413", 413, "PayloadTooLarge"},
		{"0429", 429, "TooManyRequests"},
		{"0500", 500, "InternalServerError"},
		{"0503", 503, "ServiceUnavailable"},
		{"0200", 200, ""},
		{"abcd", 200, ""},
		{"04", 200, ""},
	}
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetResponder(DemoResponder)
	c := s.Client()
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			tok := tc.prefix + devToken[len(tc.prefix):]
			if tc.prefix == "04" {
				tok = "04"
			}
			rep := DemoResponder(&Request{DeviceToken: tok})
			st := rep.Status
			if st == 0 {
				st = 200
			}
			if st != tc.status || rep.Reason != tc.reason {
				t.Fatalf("DemoResponder: %d %q, want %d %q", st, rep.Reason, tc.status, tc.reason)
			}
			if tc.status != 200 && apns.ReasonStatus[tc.reason] != tc.status {
				t.Fatalf("table disagrees with Apple: %s is %d", tc.reason, apns.ReasonStatus[tc.reason])
			}
			a := post(t, c, "POST", s.URL+"/3/device/"+tok, hdr("apns-topic", bundle, "authorization", "bearer x"), []byte(`{}`))
			if a.Status != tc.status || a.Reason != tc.reason {
				t.Fatalf("over the wire: %+v", a)
			}
			if tc.status == 410 {
				if d := time.Since(time.UnixMilli(a.Timestamp)); d < 0 || d > time.Minute {
					t.Fatalf("410 timestamp %d is not now", a.Timestamp)
				}
			} else if a.Timestamp != 0 {
				t.Fatalf("unexpected timestamp %d", a.Timestamp)
			}
		})
	}
	// Uppercase token prefixes are the same token.
	if rep := DemoResponder(&Request{DeviceToken: "0410ABCD"}); rep.Status != 410 {
		t.Fatal("uppercase token")
	}
}

func TestMaxConcurrentStreams(t *testing.T) {
	f := newCertServer(t, Options{MaxConcurrentStreams: 4})
	s := f.srv
	s.SetResponder(func(r *Request) Reply { return Reply{Delay: 30 * time.Millisecond} })
	c := s.Client(f.single)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := tryPost(context.Background(), c, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`))
			if err == nil && a.Status != 200 {
				err = errors.New("status " + a.Reason)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.Accepted() != 50 {
		t.Fatalf("Accepted %d, want 50", s.Accepted())
	}
	if m := s.MaxConcurrent(); m > 4 || m < 2 {
		t.Fatalf("MaxConcurrent %d, want 2..4", m)
	}
	t.Logf("50 requests, MaxConcurrent %d, %d connections", s.MaxConcurrent(), s.Connections())

	if got := advertisedMaxStreams(t, s, f.single); got != 4 {
		t.Fatalf("advertised SETTINGS_MAX_CONCURRENT_STREAMS %d, want 4", got)
	}
	def, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	if got := advertisedMaxStreams(t, def, tls.Certificate{}); got != 1000 {
		t.Fatalf("default SETTINGS_MAX_CONCURRENT_STREAMS %d, want 1000", got)
	}
}

// advertisedMaxStreams reads the server's first SETTINGS frame.
func advertisedMaxStreams(t *testing.T, s *Server, cert tls.Certificate) uint32 {
	t.Helper()
	cfg := &tls.Config{RootCAs: s.RootCAs(), NextProtos: []string{"h2"}}
	if cert.Certificate != nil {
		cfg.Certificates = []tls.Certificate{cert}
	}
	conn, err := tls.Dial("tcp", s.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q", p)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			v, ok := sf.Value(http2.SettingMaxConcurrentStreams)
			if !ok {
				t.Fatal("no SETTINGS_MAX_CONCURRENT_STREAMS")
			}
			return v
		}
	}
}

func TestDelay(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	c := s.Client(f.single)
	post(t, c, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`)) // warm up the connection
	s.SetResponder(func(r *Request) Reply { return Reply{Delay: 300 * time.Millisecond} })
	start := time.Now()
	if a := post(t, c, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`)); a.Status != 200 {
		t.Fatalf("got %+v", a)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("answered after %v, want >= 300ms", d)
	}

	// A cancelled request ends the wait and is not answered.
	s.Reset()
	s.SetResponder(func(r *Request) Reply { return Reply{Delay: 20 * time.Second} })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := tryPost(ctx, c, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`)); err == nil {
		t.Fatal("cancelled request succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	if s.Count() != 1 || len(s.Requests()) != 1 || s.Accepted() != 0 {
		t.Fatalf("Count %d Requests %d Accepted %d", s.Count(), len(s.Requests()), s.Accepted())
	}

	// Close ends pending delays too.
	done := make(chan struct{})
	go func() {
		defer close(done)
		tryPost(context.Background(), c, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`))
	}()
	for s.Count() < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	start = time.Now()
	s.Close()
	<-done
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func TestConnections(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	c1 := s.Client(f.single)
	for i := 0; i < 10; i++ {
		post(t, c1, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`))
	}
	if s.Connections() != 1 || s.OpenConnections() != 1 {
		t.Fatalf("Connections %d Open %d after 10 requests on one client, want 1", s.Connections(), s.OpenConnections())
	}
	c2 := s.Client(f.multi)
	post(t, c2, "POST", s.URL+"/3/device/"+devToken, hdr("apns-topic", bundle), []byte(`{}`))
	if s.Connections() != 2 {
		t.Fatalf("Connections %d, want 2", s.Connections())
	}
	rs := s.Requests()
	for i, r := range rs[:10] {
		if r.ConnID != 1 {
			t.Fatalf("request %d on conn %d, want 1", i, r.ConnID)
		}
	}
	if rs[10].ConnID != 2 || rs[10].ClientCert == nil {
		t.Fatalf("last request on conn %d", rs[10].ConnID)
	}
	if _, multi := CertTopics(rs[10].ClientCert); !multi {
		t.Fatal("second connection should carry the multi-topic cert")
	}

	// Dropped connections are replaced by the client.
	s.DropConnections()
	time.Sleep(50 * time.Millisecond)
	if s.OpenConnections() != 0 {
		t.Fatalf("OpenConnections %d after DropConnections", s.OpenConnections())
	}
	post(t, c1, "POST", s.URL+"/3/device/"+devToken, nil, []byte(`{}`))
	if s.Connections() != 3 {
		t.Fatalf("Connections %d after reconnect, want 3", s.Connections())
	}
	if rs := s.Requests(); rs[len(rs)-1].ConnID != 3 {
		t.Fatalf("reconnect ConnID %d", rs[len(rs)-1].ConnID)
	}
}

func TestCertHelpers(t *testing.T) {
	ca, err := pki.NewCA("x")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.PushCert(pki.PushCertOptions{Topic: bundle, Topics: []string{bundle, bundle + ".voip", "com.b"}})
	if err != nil {
		t.Fatal(err)
	}
	topics, ok := CertTopics(c.Cert)
	if !ok || strings.Join(topics, ",") != bundle+","+bundle+".voip,com.b" {
		t.Fatalf("CertTopics %v %v", topics, ok)
	}
	if CertUID(c.Cert) != bundle {
		t.Fatal("CertUID")
	}
	if TopicAllowed("com.bx", bundle, topics) || !TopicAllowed("com.b", bundle, topics) ||
		!TopicAllowed(bundle+".voip-ptt", bundle, nil) || TopicAllowed(bundle+"x", bundle, nil) ||
		TopicAllowed("", "", nil) {
		t.Fatal("TopicAllowed")
	}
	if pem := (&Server{CA: ca}).CACertPEM(); !bytes.Equal(pem, ca.CertPEM) {
		t.Fatal("CACertPEM")
	}
}

func TestNewUUID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		u := newUUID()
		if !apns.ValidUUID(u) || seen[u] {
			t.Fatalf("bad or repeated UUID %q", u)
		}
		seen[u] = true
	}
}
