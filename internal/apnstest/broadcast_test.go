package apnstest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"

	"github.com/apnsd/apnsd/internal/apns"
)

const (
	reqID      = "2288cf3f-70d8-46a6-97d7-dd5d00867127"
	laUpdate   = `{"aps":{"timestamp":1685952000,"event":"update","content-state":{"score":"1-0"}}}`
	createBody = `{"message-storage-policy":1,"push-type":"LiveActivity"}`
)

// reply is what a raw HTTP/2 client saw.
type reply struct {
	status int
	header http.Header
	body   []byte
	reason string
}

// rawClient is a net/http Transport speaking HTTP/2 only, used directly as
// a RoundTripper (no http.Client in between): an HTTP/2 client independent
// of the one the stand-in's own Client helper builds.
func rawClient(s *Server, certs ...tls.Certificate) *http.Transport {
	var protos http.Protocols
	protos.SetHTTP2(true)
	return &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.RootCAs(), Certificates: certs, MinVersion: tls.VersionTLS12},
		Protocols:       &protos,
	}
}

// apns2Client is sideshow/apns2's client for cert, pointed at s. apns2
// builds an x/net http2.Transport (deprecated); its HTTP client is replaced
// with one on rawClient, so apns2's own request building and response
// parsing are what is tested, with the same timeout apns2 sets.
func apns2Client(s *Server, cert tls.Certificate) *apns2.Client {
	c := apns2.NewClient(cert)
	c.Host = s.URL
	c.HTTPClient = &http.Client{Transport: rawClient(s, cert), Timeout: apns2.HTTPClientTimeout}
	return c
}

func do(t *testing.T, rt http.RoundTripper, method, url string, h http.Header, body []byte) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: b}
	if resp.StatusCode >= 300 {
		var j struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(b, &j); err != nil {
			t.Fatalf("%s %s: error body is not JSON: %q", method, url, b)
		}
		r.reason = j.Reason
		if ct := resp.Header.Get("content-type"); ct != "application/json" {
			t.Errorf("error content-type %q", ct)
		}
	}
	return r
}

func bearerHdr(kv ...string) http.Header {
	return hdr(append([]string{"authorization", "bearer t"}, kv...)...)
}

// TestChannelLifecycle walks Apple's documented flow with a raw HTTP/2
// client: create (201, apns-channel-id), read, list, broadcast, delete
// (204), then the channel is gone everywhere.
func TestChannelLifecycle(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rt := rawClient(s)
	t.Cleanup(rt.CloseIdleConnections)
	chans := s.URL + "/1/apps/" + bundle + "/channels"
	all := s.URL + "/1/apps/" + bundle + "/all-channels"
	bc := s.URL + "/4/broadcasts/apps/" + bundle

	r := do(t, rt, "POST", chans, bearerHdr("apns-request-id", reqID), []byte(createBody))
	id := r.header.Get("apns-channel-id")
	if r.status != 201 || len(r.body) != 0 || r.header.Get("apns-request-id") != reqID || apns.ValidateChannelID(id) != nil {
		t.Fatalf("create: %d %q %v", r.status, r.body, r.header)
	}
	if b, _ := apns.ChannelIDBytes(id); len(b) != 16 || !strings.HasSuffix(id, "==") {
		t.Errorf("channel id %q: want 16 bytes, standard padded base64", id)
	}
	r = do(t, rt, "POST", chans, bearerHdr(), []byte(`{"message-storage-policy":0,"push-type":"LiveActivity"}`))
	id0 := r.header.Get("apns-channel-id")
	if r.status != 201 || id0 == id || !apns.ValidUUID(r.header.Get("apns-request-id")) {
		t.Fatalf("second create: %d %v", r.status, r.header)
	}

	r = do(t, rt, "GET", chans, bearerHdr("apns-channel-id", id), nil)
	if r.status != 200 || string(r.body) != createBody || r.header.Get("content-type") != "application/json" {
		t.Fatalf("read: %d %s %v", r.status, r.body, r.header)
	}
	r = do(t, rt, "GET", chans, bearerHdr("apns-channel-id", id0), nil)
	if r.status != 200 || string(r.body) != `{"message-storage-policy":0,"push-type":"LiveActivity"}` {
		t.Fatalf("read policy 0: %d %s", r.status, r.body)
	}
	r = do(t, rt, "GET", all, bearerHdr(), nil)
	if r.status != 200 || string(r.body) != `{"channels":["`+id+`","`+id0+`"]}` {
		t.Fatalf("list: %d %s", r.status, r.body)
	}

	bh := func(ch, exp string) http.Header {
		return bearerHdr("apns-channel-id", ch, "apns-push-type", "liveactivity", "apns-priority", "10", "apns-expiration", exp, "apns-request-id", reqID)
	}
	r = do(t, rt, "POST", bc, bh(id, "1900000000"), []byte(laUpdate))
	if r.status != 200 || len(r.body) != 0 || r.header.Get("apns-request-id") != reqID || r.header.Get("apns-id") != "" {
		t.Fatalf("broadcast: %d %q %v", r.status, r.body, r.header)
	}
	r = do(t, rt, "POST", bc, bh(id0, "1900000000"), []byte(laUpdate))
	if r.status != 400 || r.reason != "BadExpirationDate" {
		t.Fatalf("policy 0, expiration set: %d %q", r.status, r.reason)
	}
	if r = do(t, rt, "POST", bc, bh(id0, "0"), []byte(laUpdate)); r.status != 200 {
		t.Fatalf("policy 0, expiration 0: %d %q", r.status, r.reason)
	}

	rs := s.Requests()
	last := rs[len(rs)-1]
	if last.API != APIBroadcast || last.BundleID != bundle || last.ChannelID != id0 || last.ApnsID != reqID || string(last.Body) != laUpdate || last.DeviceToken != "" {
		t.Errorf("recorded broadcast: %+v", last)
	}
	if rs[0].API != APIManagement || rs[0].ChannelOp != apns.ChannelCreate || rs[0].ChannelID != id {
		t.Errorf("recorded create: %+v", rs[0])
	}

	r = do(t, rt, "DELETE", chans, bearerHdr("apns-channel-id", id), nil)
	if r.status != 204 || len(r.body) != 0 {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	for _, c := range []struct {
		what string
		r    reply
	}{
		{"read", do(t, rt, "GET", chans, bearerHdr("apns-channel-id", id), nil)},
		{"delete again", do(t, rt, "DELETE", chans, bearerHdr("apns-channel-id", id), nil)},
		{"broadcast", do(t, rt, "POST", bc, bh(id, "0"), []byte(laUpdate))},
	} {
		if c.r.status != 400 || c.r.reason != "ChannelNotRegistered" {
			t.Errorf("%s after delete: %d %q", c.what, c.r.status, c.r.reason)
		}
	}
	if r = do(t, rt, "GET", all, bearerHdr(), nil); string(r.body) != `{"channels":["`+id0+`"]}` {
		t.Errorf("list after delete: %s", r.body)
	}
	// Another app has channels of its own.
	if r = do(t, rt, "GET", s.URL+"/1/apps/com.example.other/all-channels", bearerHdr(), nil); r.status != 200 || string(r.body) != `{"channels":[]}` {
		t.Errorf("other app: %d %s", r.status, r.body)
	}
	if r = do(t, rt, "GET", s.URL+"/1/apps/com.example.other/channels", bearerHdr("apns-channel-id", id0), nil); r.reason != "ChannelNotRegistered" {
		t.Errorf("other app's view of a channel: %d %q", r.status, r.reason)
	}
}

func TestBroadcastValidation(t *testing.T) {
	f := newCertServer(t, Options{BroadcastDisabled: []string{"com.example.other"}})
	s := f.srv
	ch, err := s.Channels().Create(bundle, apns.StorageLatest)
	if err != nil {
		t.Fatal(err)
	}
	otherCh, _ := s.Channels().Create("com.example.other", apns.StorageLatest)
	single, multi := rawClient(s, f.single), rawClient(s, f.multi)
	t.Cleanup(single.CloseIdleConnections)
	t.Cleanup(multi.CloseIdleConnections)
	bc := s.URL + "/4/broadcasts/apps/" + bundle
	good := func(kv ...string) http.Header {
		h := hdr("apns-channel-id", ch.ID, "apns-push-type", "liveactivity", "apns-priority", "5", "apns-expiration", "0")
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				h.Del(kv[i])
			} else {
				h.Set(kv[i], kv[i+1])
			}
		}
		return h
	}
	body := []byte(laUpdate)
	tests := []struct {
		name   string
		rt     http.RoundTripper
		method string
		url    string
		h      http.Header
		body   []byte
		status int
		reason string
	}{
		{"ok", single, "POST", bc, good(), body, 200, ""},
		{"ok end", single, "POST", bc, good(), []byte(`{"aps":{"event":"end","timestamp":1,"dismissal-date":0}}`), 200, ""},
		{"push type Apple's table spelling", single, "POST", bc, good("apns-push-type", "Liveactivity"), body, 200, ""},
		{"push type LiveActivity", single, "POST", bc, good("apns-push-type", "LiveActivity"), body, 200, ""},
		{"topic header ignored", single, "POST", bc, good("apns-topic", bundle+".push-type.liveactivity"), body, 200, ""},
		{"priority 1", single, "POST", bc, good("apns-priority", "1"), body, 200, ""},
		{"5120 bytes", single, "POST", bc, good(), laOfSize(5120), 200, ""},

		{"GET", single, "GET", bc, good(), nil, 405, "MethodNotAllowed"},
		{"no bundle", single, "POST", s.URL + "/4/broadcasts/apps/", good(), body, 404, "BadPath"},
		{"extra segment", single, "POST", bc + "/x", good(), body, 404, "BadPath"},
		{"wrong version", single, "POST", s.URL + "/4/broadcast/apps/" + bundle, good(), body, 404, "BadPath"},
		{"duplicate channel header", single, "POST", bc, func() http.Header { h := good(); h.Add("apns-channel-id", ch.ID); return h }(), body, 400, "DuplicateHeaders"},
		{"bad request id", single, "POST", bc, good("apns-request-id", "ABC"), body, 400, "BadMessageId"},
		{"suffix in path", single, "POST", bc + ".push-type.liveactivity", good(), body, 400, "TopicDisallowed"},
		{"not the cert's app", single, "POST", s.URL + "/4/broadcasts/apps/com.example.third", good(), body, 403, "TopicMismatch"},
		{"multi cert: listed app without broadcast", multi, "POST", s.URL + "/4/broadcasts/apps/com.example.other", good("apns-channel-id", otherCh.ID), body, 400, "FeatureNotEnabled"},
		{"no push type", single, "POST", bc, good("apns-push-type", ""), body, 400, "MissingPushType"},
		{"push type alert", single, "POST", bc, good("apns-push-type", "alert"), body, 400, "InvalidPushType"},
		{"no channel", single, "POST", bc, good("apns-channel-id", ""), body, 400, "MissingChannelId"},
		{"channel not base64", single, "POST", bc, good("apns-channel-id", "not*base64"), body, 400, "BadChannelId"},
		{"channel too long", single, "POST", bc, good("apns-channel-id", strings.Repeat("QUFB", 30)), body, 400, "BadChannelId"},
		{"unknown channel", single, "POST", bc, good("apns-channel-id", "dHN0LXNyY2gtY2hubA=="), body, 400, "ChannelNotRegistered"},
		{"another app's channel", single, "POST", bc, good("apns-channel-id", otherCh.ID), body, 400, "ChannelNotRegistered"},
		{"no priority", single, "POST", bc, good("apns-priority", ""), body, 400, "BadPriority"},
		{"priority 7", single, "POST", bc, good("apns-priority", "7"), body, 400, "BadPriority"},
		{"no expiration", single, "POST", bc, good("apns-expiration", ""), body, 400, "BadExpirationDate"},
		{"expiration word", single, "POST", bc, good("apns-expiration", "soon"), body, 400, "BadExpirationDate"},
		{"expiration negative", single, "POST", bc, good("apns-expiration", "-1"), body, 400, "BadExpirationDate"},
		{"empty body", single, "POST", bc, good(), nil, 400, "PayloadEmpty"},
		{"5121 bytes", single, "POST", bc, good(), laOfSize(5121), 413, "PayloadTooLarge"},
		{"not json", single, "POST", bc, good(), []byte(`{"aps":`), 400, ReasonPayloadNotJSON},
		{"start on a channel", single, "POST", bc, good(), []byte(`{"aps":{"event":"start","timestamp":1,"content-state":{},"attributes-type":"A","attributes":{},"alert":"x"}}`), 400, ReasonInvalidLiveActivity},
		{"not a live activity", single, "POST", bc, good(), []byte(`{"aps":{"alert":"hi"}}`), 400, ReasonInvalidLiveActivity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.rt, tc.method, tc.url, tc.h, tc.body)
			if r.status != tc.status || r.reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", r.status, r.reason, tc.status, tc.reason)
			}
			if !apns.ValidUUID(r.header.Get("apns-request-id")) {
				t.Errorf("no apns-request-id in %v", r.header)
			}
		})
	}
}

// laOfSize returns a valid Live Activity update of exactly n bytes.
func laOfSize(n int) []byte {
	const frame = `{"aps":{"event":"update","timestamp":1,"content-state":{"x":""}}}`
	b := []byte(`{"aps":{"event":"update","timestamp":1,"content-state":{"x":"` + strings.Repeat("a", n-len(frame)) + `"}}}`)
	if len(b) != n {
		panic("laOfSize")
	}
	return b
}

func TestManagementValidation(t *testing.T) {
	f := newCertServer(t, Options{BroadcastDisabled: []string{"com.example.other"}})
	s := f.srv
	ch, _ := s.Channels().Create(bundle, apns.StorageNone)
	single, multi := rawClient(s, f.single), rawClient(s, f.multi)
	t.Cleanup(single.CloseIdleConnections)
	t.Cleanup(multi.CloseIdleConnections)
	chans := s.URL + "/1/apps/" + bundle + "/channels"
	all := s.URL + "/1/apps/" + bundle + "/all-channels"
	cid := hdr("apns-channel-id", ch.ID)
	tests := []struct {
		name   string
		rt     http.RoundTripper
		method string
		url    string
		h      http.Header
		body   string
		status int
		reason string
	}{
		{"create", single, "POST", chans, nil, createBody, 201, ""},
		{"create lowercase push type", single, "POST", chans, nil, `{"message-storage-policy":0,"push-type":"liveactivity"}`, 201, ""},
		{"read", single, "GET", chans, cid, "", 200, ""},
		{"list", single, "GET", all, nil, "", 200, ""},

		{"PUT channels", single, "PUT", chans, nil, createBody, 405, "MethodNotAllowed"},
		{"POST all-channels", single, "POST", all, nil, createBody, 405, "MethodNotAllowed"},
		{"DELETE all-channels", single, "DELETE", all, cid, "", 405, "MethodNotAllowed"},
		{"wrong tail", single, "GET", s.URL + "/1/apps/" + bundle + "/channel", cid, "", 404, "BadPath"},
		{"channel id in path", single, "GET", chans + "/" + ch.ID, nil, "", 404, "BadPath"},
		{"no bundle", single, "GET", s.URL + "/1/apps//channels", cid, "", 404, "BadPath"},
		{"wrong version", single, "POST", s.URL + "/2/apps/" + bundle + "/channels", nil, createBody, 404, "BadPath"},
		{"suffix in path", single, "POST", s.URL + "/1/apps/" + bundle + ".voip/channels", nil, createBody, 400, "TopicDisallowed"},
		{"not the cert's app", single, "GET", s.URL + "/1/apps/com.example.third/all-channels", nil, "", 403, "TopicMismatch"},
		{"multi cert, other listed topic, no broadcast", multi, "GET", s.URL + "/1/apps/com.example.other/all-channels", nil, "", 400, "FeatureNotEnabled"},
		{"bad request id", single, "GET", all, hdr("apns-request-id", "x"), "", 400, "BadMessageId"},
		{"read no channel", single, "GET", chans, nil, "", 400, "MissingChannelId"},
		{"delete no channel", single, "DELETE", chans, nil, "", 400, "MissingChannelId"},
		{"read bad channel", single, "GET", chans, hdr("apns-channel-id", "%%"), "", 400, "BadChannelId"},
		{"read unknown channel", single, "GET", chans, hdr("apns-channel-id", "dHN0LXNyY2gtY2hubA=="), "", 400, "ChannelNotRegistered"},
		{"create empty body", single, "POST", chans, nil, "", 400, "BadRequestPayload"},
		{"create not json", single, "POST", chans, nil, "{", 400, "BadRequestPayload"},
		{"create array", single, "POST", chans, nil, "[]", 400, "BadRequestPayload"},
		{"create extra key", single, "POST", chans, nil, `{"message-storage-policy":1,"push-type":"LiveActivity","name":"x"}`, 400, "BadRequestParams"},
		{"create no policy", single, "POST", chans, nil, `{"push-type":"LiveActivity"}`, 400, "BadRequestParams"},
		{"create policy 2", single, "POST", chans, nil, `{"message-storage-policy":2,"push-type":"LiveActivity"}`, 400, "BadRequestParams"},
		{"create policy string", single, "POST", chans, nil, `{"message-storage-policy":"1","push-type":"LiveActivity"}`, 400, "BadRequestParams"},
		{"create no push type", single, "POST", chans, nil, `{"message-storage-policy":1}`, 400, "MissingPushType"},
		{"create push type alert", single, "POST", chans, nil, `{"message-storage-policy":1,"push-type":"alert"}`, 400, "InvalidPushType"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			r := do(t, tc.rt, tc.method, tc.url, tc.h, body)
			if r.status != tc.status || r.reason != tc.reason {
				t.Fatalf("got %d %q (%s), want %d %q", r.status, r.reason, r.body, tc.status, tc.reason)
			}
		})
	}
}

// TestChannelLimit checks Apple's 10,000 channels per app: the store is
// filled directly, and the 10,001st create over HTTP/2 is refused.
func TestChannelLimit(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if s.Channels().Max() != 10000 {
		t.Fatalf("default limit %d", s.Channels().Max())
	}
	for i := 0; i < 10000; i++ {
		if _, err := s.Channels().Create(bundle, apns.StorageNone); err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
	}
	if _, err := s.Channels().Create(bundle, apns.StorageNone); !errors.Is(err, ErrChannelLimit) {
		t.Fatalf("10,001st direct create: %v", err)
	}
	rt := rawClient(s)
	t.Cleanup(rt.CloseIdleConnections)
	chans := s.URL + "/1/apps/" + bundle + "/channels"
	r := do(t, rt, "POST", chans, bearerHdr(), []byte(createBody))
	if r.status != 400 || r.reason != "CannotCreateChannelConfig" {
		t.Fatalf("10,001st create: %d %q", r.status, r.reason)
	}
	// The limit is per app.
	if r = do(t, rt, "POST", s.URL+"/1/apps/com.example.other/channels", bearerHdr(), []byte(createBody)); r.status != 201 {
		t.Fatalf("other app: %d %q", r.status, r.reason)
	}
	r = do(t, rt, "GET", s.URL+"/1/apps/"+bundle+"/all-channels", bearerHdr(), nil)
	var list struct{ Channels []string }
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Channels) != 10000 {
		t.Fatalf("list: %d channels, %v", len(list.Channels), err)
	}
	// Deleting one frees a place.
	if r = do(t, rt, "DELETE", chans, bearerHdr("apns-channel-id", list.Channels[0]), nil); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if r = do(t, rt, "POST", chans, bearerHdr(), []byte(createBody)); r.status != 201 {
		t.Fatalf("create after delete: %d %q", r.status, r.reason)
	}
}

// TestChannelLimitConcurrent races creates against a small limit: exactly
// the limit succeed, the rest are refused as Apple would.
func TestChannelLimitConcurrent(t *testing.T) {
	s, err := New(Options{MaxChannels: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rt := rawClient(s)
	t.Cleanup(rt.CloseIdleConnections)
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", s.URL+"/1/apps/"+bundle+"/channels", strings.NewReader(createBody))
			req.Header.Set("authorization", "bearer t")
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			got[resp.Status+" "+string(b)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got["201 Created "] != 5 || got[`400 Bad Request {"reason":"CannotCreateChannelConfig"}`] != 15 || s.Channels().Len(bundle) != 5 {
		t.Fatalf("answers %v, %d channels", got, s.Channels().Len(bundle))
	}
}

// TestSeparateManagementServer splits the APIs as Apple does: push and
// broadcast on one server, management on another sharing its channels.
func TestSeparateManagementServer(t *testing.T) {
	push, err := New(Options{APIs: APIPush | APIBroadcast, BundleIDs: []string{bundle}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(push.Close)
	mgmt, err := NewManagement(push)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgmt.Close)
	if mgmt.URL == push.URL || mgmt.Channels() != push.Channels() || mgmt.CA != push.CA {
		t.Fatal("management server must be a second listener with the same CA and store")
	}
	rt := rawClient(push) // same CA: one client reaches both
	t.Cleanup(rt.CloseIdleConnections)

	r := do(t, rt, "POST", push.URL+"/1/apps/"+bundle+"/channels", bearerHdr(), []byte(createBody))
	if r.status != 404 || r.reason != "BadPath" {
		t.Fatalf("management on the push host: %d %q", r.status, r.reason)
	}
	r = do(t, rt, "POST", mgmt.URL+"/1/apps/"+bundle+"/channels", bearerHdr(), []byte(createBody))
	id := r.header.Get("apns-channel-id")
	if r.status != 201 || id == "" {
		t.Fatalf("create: %d %q", r.status, r.reason)
	}
	bh := bearerHdr("apns-channel-id", id, "apns-push-type", "liveactivity", "apns-priority", "10", "apns-expiration", "0")
	if r = do(t, rt, "POST", mgmt.URL+"/4/broadcasts/apps/"+bundle, bh, []byte(laUpdate)); r.status != 404 || r.reason != "BadPath" {
		t.Fatalf("broadcast on the management host: %d %q", r.status, r.reason)
	}
	if r = do(t, rt, "POST", mgmt.URL+"/3/device/"+devToken, bearerHdr("apns-topic", bundle), []byte(`{"aps":{}}`)); r.status != 404 || r.reason != "BadPath" {
		t.Fatalf("push on the management host: %d %q", r.status, r.reason)
	}
	if r = do(t, rt, "POST", push.URL+"/4/broadcasts/apps/"+bundle, bh, []byte(laUpdate)); r.status != 200 {
		t.Fatalf("broadcast on a channel made by the management server: %d %q", r.status, r.reason)
	}
	if r = do(t, rt, "POST", push.URL+"/3/device/"+devToken, bearerHdr("apns-topic", bundle), []byte(`{"aps":{}}`)); r.status != 200 {
		t.Fatalf("push: %d %q", r.status, r.reason)
	}
	// Options.BundleIDs: the token's team owns only bundle.
	if r = do(t, rt, "GET", mgmt.URL+"/1/apps/com.example.other/all-channels", bearerHdr(), nil); r.status != 403 || r.reason != "TopicMismatch" {
		t.Fatalf("other team's app: %d %q", r.status, r.reason)
	}
	if len(mgmt.Requests()) != 1 || len(push.Requests()) != 2 { // refused requests are not recorded
		t.Errorf("recorded: management %d, push %d", len(mgmt.Requests()), len(push.Requests()))
	}
	// Credentials are checked on the management server too.
	if r = do(t, rt, "GET", mgmt.URL+"/1/apps/"+bundle+"/all-channels", nil, nil); r.status != 403 || r.reason != "MissingProviderToken" {
		t.Fatalf("no token: %d %q", r.status, r.reason)
	}
}

// TestManagementFaults: the Responder's faults apply to management requests
// and a faulted create creates nothing.
func TestManagementFaults(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rt := rawClient(s)
	t.Cleanup(rt.CloseIdleConnections)
	chans := s.URL + "/1/apps/" + bundle + "/channels"
	s.SetResponder(Always(500, "InternalServerError"))
	r := do(t, rt, "POST", chans, bearerHdr(), []byte(createBody))
	if r.status != 500 || r.reason != "InternalServerError" || r.header.Get("apns-channel-id") != "" || s.Channels().Len(bundle) != 0 {
		t.Fatalf("faulted create: %d %q, %d channels", r.status, r.reason, s.Channels().Len(bundle))
	}
	s.SetResponder(func(r *Request) Reply {
		if r.API == APIManagement && r.ChannelOp == apns.ChannelCreate {
			return Reply{Delay: 50 * time.Millisecond}
		}
		return Reply{Status: 429, Reason: "TooManyRequests"}
	})
	if r = do(t, rt, "POST", chans, bearerHdr(), []byte(createBody)); r.status != 201 {
		t.Fatalf("delayed create: %d", r.status)
	}
	id := r.header.Get("apns-channel-id")
	bh := bearerHdr("apns-channel-id", id, "apns-push-type", "liveactivity", "apns-priority", "10", "apns-expiration", "0")
	if r = do(t, rt, "POST", s.URL+"/4/broadcasts/apps/"+bundle, bh, []byte(laUpdate)); r.status != 429 || r.reason != "TooManyRequests" {
		t.Fatalf("faulted broadcast: %d %q", r.status, r.reason)
	}
	if s.Accepted() != 0 {
		t.Errorf("Accepted() = %d, want 0 (a 201 is not a 200)", s.Accepted())
	}
}

// TestApnsRequestsAgainstStandIn drives the stand-in with the requests
// internal/apns builds and parses its answers with internal/apns.
func TestApnsRequestsAgainstStandIn(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rt := rawClient(s)
	t.Cleanup(rt.CloseIdleConnections)
	must := func(r *apns.APIRequest, err error) *apns.APIRequest {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	send := func(op apns.ChannelOp, ar *apns.APIRequest) *apns.ChannelResponse {
		t.Helper()
		hr, err := ar.HTTPRequest(context.Background(), s.URL)
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("authorization", "bearer t")
		resp, err := rt.RoundTrip(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if op == 0 {
			return apns.ParseBroadcastResponse(resp.StatusCode, resp.Header, b)
		}
		cr, err := apns.ParseChannelResponse(op, resp.StatusCode, resp.Header, b)
		if err != nil {
			t.Fatal(err)
		}
		return cr
	}
	cr := send(apns.ChannelCreate, must(apns.CreateChannelRequest(bundle, apns.StorageNone, reqID)))
	if !cr.OK() || cr.StatusCode != 201 || cr.RequestID != reqID || cr.ChannelID == "" {
		t.Fatalf("create: %+v", cr)
	}
	id := cr.ChannelID
	if cr = send(apns.ChannelGet, must(apns.GetChannelRequest(bundle, id, ""))); !cr.OK() || cr.Config.StoragePolicy != apns.StorageNone || cr.Config.PushType != "LiveActivity" {
		t.Fatalf("get: %+v", cr)
	}
	if cr = send(apns.ChannelList, must(apns.ListChannelsRequest(bundle, ""))); !cr.OK() || len(cr.Channels) != 1 || cr.Channels[0] != id {
		t.Fatalf("list: %+v", cr)
	}
	b := apns.Broadcast{BundleID: bundle, ChannelID: id, Payload: []byte(laUpdate), RequestID: reqID}
	if cr = send(0, must(b.Request())); !cr.OK() || cr.RequestID != reqID {
		t.Fatalf("broadcast: %+v", cr)
	}
	b.Expiration = time.Now().Add(time.Hour).Unix()
	if cr = send(0, must(b.Request())); cr.OK() || cr.Reason != apns.ReasonBadExpirationDate {
		t.Fatalf("broadcast with expiration on a no-storage channel: %+v", cr)
	}
	if cr = send(apns.ChannelDelete, must(apns.DeleteChannelRequest(bundle, id, ""))); !cr.OK() || cr.StatusCode != 204 {
		t.Fatalf("delete: %+v", cr)
	}
	if cr = send(apns.ChannelGet, must(apns.GetChannelRequest(bundle, id, ""))); cr.OK() || cr.Reason != apns.ReasonChannelNotRegistered || cr.StatusCode != 400 {
		t.Fatalf("get after delete: %+v", cr)
	}
}

// TestLiveActivityPush checks the liveactivity rules on /3/device, with
// payloads built by sideshow/apns2's payload builder and sent by its client.
func TestLiveActivityPush(t *testing.T) {
	f := newCertServer(t, Options{})
	s := f.srv
	client := apns2Client(s, f.single)
	t.Cleanup(client.CloseIdleConnections)
	now := time.Now().Unix()
	update := payload.NewPayload().SetEvent(payload.LiveActivityEventUpdate).SetTimestamp(now).
		SetContentState(map[string]any{"score": "2-1"}).SetStaleDate(now + 600)
	// apns2 v0.25 has no constant for event start.
	start := payload.NewPayload().SetEvent(payload.ELiveActivityEvent("start")).SetTimestamp(now).
		SetContentState(map[string]any{"score": "0-0"}).SetAttributesType("GameAttributes").
		SetAttributes(map[string]any{"home": "A", "away": "B"}).AlertTitle("Kick-off")
	startNoAlert := payload.NewPayload().SetEvent(payload.ELiveActivityEvent("start")).SetTimestamp(now).
		SetContentState(map[string]any{"score": "0-0"}).SetAttributesType("GameAttributes").SetAttributes(map[string]any{"home": "A"})
	ms := payload.NewPayload().SetEvent(payload.LiveActivityEventUpdate).SetTimestamp(time.Now().UnixMilli()).
		SetContentState(map[string]any{"score": "2-1"})
	topic := bundle + ".push-type.liveactivity"
	tests := []struct {
		name   string
		n      apns2.Notification
		status int
		reason string
	}{
		{"update", apns2.Notification{Topic: topic, Payload: update}, 200, ""},
		{"start", apns2.Notification{Topic: topic, Payload: start}, 200, ""},
		{"priority 5", apns2.Notification{Topic: topic, Payload: update, Priority: 5}, 200, ""},
		{"priority 1", apns2.Notification{Topic: topic, Payload: update, Priority: 1}, 400, "BadPriority"},
		{"bare topic", apns2.Notification{Topic: bundle, Payload: update}, 400, "BadTopic"},
		{"start without alert", apns2.Notification{Topic: topic, Payload: startNoAlert}, 400, ReasonInvalidLiveActivity},
		{"timestamp in ms", apns2.Notification{Topic: topic, Payload: ms}, 400, ReasonInvalidLiveActivity},
		{"alert payload", apns2.Notification{Topic: topic, Payload: []byte(`{"aps":{"alert":"hi"}}`)}, 400, ReasonInvalidLiveActivity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.n
			n.DeviceToken, n.PushType = devToken, apns2.PushTypeLiveActivity
			resp, err := client.Push(&n)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || resp.Reason != tc.reason {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, resp.Reason, tc.status, tc.reason)
			}
		})
	}
	// The liveactivity suffix without push type liveactivity is left alone,
	// as before (the push type decides).
	resp, err := client.Push(&apns2.Notification{DeviceToken: devToken, Topic: topic, Payload: []byte(`{"aps":{"alert":"x"}}`)})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("suffix without push type: %v %+v", err, resp)
	}
}

func TestAPIString(t *testing.T) {
	for a, want := range map[API]string{0: "none", APIPush: "push", APIPush | APIManagement: "push+management", allAPIs: "push+broadcast+management"} {
		if a.String() != want {
			t.Errorf("%d: %q, want %q", a, a.String(), want)
		}
	}
}
