package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/defaults"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/pki"
)

// harness runs a real daemon on a real Unix socket against two stand-ins
// (sandbox and production) over real TLS and HTTP/2, each requiring its own
// client certificate from its own CA.
type harness struct {
	t                   testing.TB
	dir                 string
	sock                string
	cfgPath             string
	sandbox, production *apnstest.Server
	sandboxCA, prodCA   *pki.CA
	sandboxCert         *pki.Issued
	prodCert            *pki.Issued
	d                   *Daemon
}

type harnessOpts struct {
	top        string // extra top-level TOML
	socket     string // extra [socket] TOML
	sandboxURL string // override the sandbox endpoint
	maxStreams uint32
	watch      watchOptions
	// sandboxFiles overrides how the sandbox credential is configured
	// (TOML lines); the files are the test's to write.
	sandboxFiles string
	// logger, if set, is the daemon's logger.
	logger *slog.Logger
}

// harnessInit, when set, lays out extra credential files before the daemon
// starts (see newHarnessWithInit).
var harnessInit func(*harness, *pki.Issued)

func tokenKeys(kid string, k *ecdsa.PrivateKey) map[string]*ecdsa.PublicKey {
	return map[string]*ecdsa.PublicKey{kid: &k.PublicKey}
}

func shortTempDir(t testing.TB) string {
	t.Helper()
	// Unix socket paths are limited to 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "apnsd-t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, dir: shortTempDir(t)}
	h.sock = filepath.Join(h.dir, "apnsd.sock")
	serverCA, err := pki.NewCA("server CA")
	must(t, err)
	h.sandboxCA, err = pki.NewCA("sandbox push CA")
	must(t, err)
	h.prodCA, err = pki.NewCA("production push CA")
	must(t, err)
	h.sandbox, err = apnstest.New(apnstest.Options{CA: serverCA, ClientCAs: h.sandboxCA.Pool(), MaxConcurrentStreams: o.maxStreams})
	must(t, err)
	t.Cleanup(h.sandbox.Close)
	h.production, err = apnstest.New(apnstest.Options{CA: serverCA, ClientCAs: h.prodCA.Pool(), MaxConcurrentStreams: o.maxStreams})
	must(t, err)
	t.Cleanup(h.production.Close)
	h.sandboxCert, err = h.sandboxCA.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	must(t, err)
	h.prodCert, err = h.prodCA.PushCert(pki.PushCertOptions{Topic: "com.example.app", Production: true})
	must(t, err)
	must(t, h.sandboxCert.WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	must(t, h.prodCert.WriteFiles(filepath.Join(h.dir, "prod.pem"), ""))
	must(t, os.WriteFile(filepath.Join(h.dir, "ca.pem"), serverCA.CertPEM, 0o644))
	if harnessInit != nil {
		harnessInit(h, h.sandboxCert)
	}
	sbURL := h.sandbox.URL
	if o.sandboxURL != "" {
		sbURL = o.sandboxURL
	}
	if o.sandboxFiles == "" {
		o.sandboxFiles = "cert_file = \"sb.crt\"\n  key_file = \"sb.key\""
	}
	if !strings.Contains(o.top, "request_timeout") {
		o.top += "\nrequest_timeout = \"10s\""
	}
	if !strings.Contains(o.top, "state_dir") {
		o.top += fmt.Sprintf("\nstate_dir = %q", filepath.Join(h.dir, "state"))
	}
	cfg := fmt.Sprintf(`shutdown_timeout = "5s"
%s
[socket]
path = %q
%s
[[apps]]
name = "app"
topic = "com.example.app"
default_env = "sandbox"
  [apps.sandbox]
  %s
  endpoint = %q
  ca_file = "ca.pem"
  [apps.production]
  cert_file = "prod.pem"
  endpoint = %q
  ca_file = "ca.pem"
  connections = 2
`, o.top, h.sock, o.socket, o.sandboxFiles, sbURL, h.production.URL)
	h.cfgPath = filepath.Join(h.dir, "apnsd.toml")
	must(t, os.WriteFile(h.cfgPath, []byte(cfg), 0o644))
	c, err := config.Load(h.cfgPath)
	must(t, err)
	var log *slog.Logger
	if os.Getenv("APNSD_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.logger != nil {
		log = o.logger
	}
	h.d = startDaemon(t, c, Options{watch: o.watch, Logger: log})
	return h
}

// startDaemon makes and starts a daemon for cfg, and shuts it down when the
// test ends.
func startDaemon(t testing.TB, cfg *config.Config, o Options) *Daemon {
	t.Helper()
	d, err := New(cfg, o)
	must(t, err)
	must(t, d.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	})
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// conn is a raw client connection speaking lines.
type conn struct {
	t  testing.TB
	cn *ipc.Conn
}

func (h *harness) dial() *conn {
	h.t.Helper()
	cn, err := (&ipc.Client{Socket: h.sock}).Connect(context.Background())
	must(h.t, err)
	cn.SetDeadline(time.Now().Add(30 * time.Second))
	h.t.Cleanup(func() { cn.Close() })
	return &conn{t: h.t, cn: cn}
}

func (c *conn) send(line string) {
	c.t.Helper()
	must(c.t, c.cn.WriteLine([]byte(line)))
}

func (c *conn) read() map[string]any {
	c.t.Helper()
	line, err := c.cn.ReadLine()
	must(c.t, err)
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		c.t.Fatalf("answer %q is not JSON: %v", line, err)
	}
	return m
}

func (c *conn) do(line string) map[string]any {
	c.t.Helper()
	c.send(line)
	return c.read()
}

func wantErr(t *testing.T, m map[string]any, code string) {
	t.Helper()
	if m["ok"] != false || m["error"] != code || m["message"] == "" {
		t.Errorf("got %v, want error %q with a message", m, code)
	}
	if _, ok := m["retryable"]; !ok {
		t.Errorf("error answer %v has no retryable field", m)
	}
}

func TestProtocolErrorCodes(t *testing.T) {
	h := newHarness(t, harnessOpts{socket: "max_line_bytes = 8192"})
	c := h.dial()
	cases := []struct {
		name, line, code string
	}{
		{"bad json", `{"token": "aa",`, ipc.CodeBadJSON},
		{"not an object", `[1,2]`, ipc.CodeBadJSON},
		{"unknown field", `{"id":1,"token":"aa","alert":"x","colapse_id":"y"}`, ipc.CodeBadRequest},
		{"wrong type", `{"id":1,"token":"aa","alert":"x","priority":"high"}`, ipc.CodeBadRequest},
		{"nothing to send", `{"id":1,"token":"aa"}`, ipc.CodeBadRequest},
		{"alert twice", `{"id":1,"token":"aa","alert":"x","payload":{"aps":{"alert":"y"}}}`, ipc.CodeBadRequest},
		{"bad env", `{"id":1,"token":"aa","alert":"x","env":"staging"}`, ipc.CodeBadRequest},
		{"bad priority", `{"id":1,"token":"aa","alert":"x","priority":7}`, ipc.CodeBadRequest},
		{"bad push type", `{"id":1,"token":"aa","alert":"x","push_type":"fax"}`, ipc.CodeBadRequest},
		{"bad apns id", `{"id":1,"token":"aa","alert":"x","apns_id":"ABC"}`, ipc.CodeBadRequest},
		{"long collapse id", `{"id":1,"token":"aa","alert":"x","collapse_id":"` + strings.Repeat("c", 65) + `"}`, ipc.CodeBadRequest},
		{"unknown op", `{"id":1,"op":"frobnicate"}`, ipc.CodeUnknownOp},
		{"odd token", `{"id":1,"token":"abc","alert":"x"}`, ipc.CodeInvalidToken},
		{"non-hex token", `{"id":1,"token":"zz","alert":"x"}`, ipc.CodeInvalidToken},
		{"empty token", `{"id":1,"token":"< >","alert":"x"}`, ipc.CodeInvalidToken},
		{"unknown app", `{"id":1,"token":"aa","alert":"x","app":"nope"}`, ipc.CodeUnknownApp},
		{"payload too large", `{"id":1,"token":"aa","alert":"` + strings.Repeat("x", 4096) + `"}`, ipc.CodePayloadTooLarge},
		{"voip too large", `{"id":1,"token":"aa","push_type":"voip","payload":{"x":"` + strings.Repeat("x", 5120) + `"}}`, ipc.CodePayloadTooLarge},
		{"line too long", `{"id":1,"token":"aa","alert":"` + strings.Repeat("x", 9000) + `"}`, ipc.CodeLineTooLong},
	}
	for _, tc := range cases {
		m := c.do(tc.line)
		wantErr(t, m, tc.code)
		if tc.code != ipc.CodeBadJSON && tc.code != ipc.CodeLineTooLong && m["id"] != float64(1) {
			t.Errorf("%s: id not echoed: %v", tc.name, m)
		}
		// The connection stays usable after every error.
		if p := c.do(`{"op":"ping","id":"after"}`); p["pong"] != true || p["id"] != "after" {
			t.Fatalf("%s: connection unusable afterwards: %v", tc.name, p)
		}
	}
	if h.sandbox.Count()+h.production.Count() != 0 {
		t.Errorf("refused requests reached APNs: %d", h.sandbox.Count()+h.production.Count())
	}
	// A voip payload of 5000 bytes is within its larger limit.
	m := c.do(`{"id":2,"token":"aa","push_type":"voip","payload":{"x":"` + strings.Repeat("x", 5000) + `"}}`)
	if m["ok"] != true {
		t.Errorf("voip 5000 bytes: %v", m)
	}
	if got := h.sandbox.Requests()[0].Header.Get("apns-topic"); got != "com.example.app.voip" {
		t.Errorf("voip topic = %q, want the .voip suffix", got)
	}
}

func TestSendDefaultsAndShorthand(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	m := c.do(`{"id":"a","token":"<A1B2C3D4 e5f60718>","alert":"hello","badge":3,"sound":"default","payload":{"custom":1}}`)
	if m["ok"] != true || m["status"] != float64(200) || m["id"] != "a" {
		t.Fatalf("got %v", m)
	}
	req := h.sandbox.Requests()[0]
	if req.DeviceToken != "a1b2c3d4e5f60718" {
		t.Errorf("token sent as %q", req.DeviceToken)
	}
	var body map[string]any
	must(t, json.Unmarshal(req.Body, &body))
	aps := body["aps"].(map[string]any)
	if aps["alert"] != "hello" || aps["badge"] != float64(3) || aps["sound"] != "default" || body["custom"] != float64(1) {
		t.Errorf("payload sent: %s", req.Body)
	}
	if req.Header.Get("apns-push-type") != "alert" || req.Header.Get("apns-topic") != "com.example.app" {
		t.Errorf("headers: %v", req.Header)
	}
	if m["apns_id"] != req.ApnsID {
		t.Errorf("apns_id %v, stand-in answered %v", m["apns_id"], req.ApnsID)
	}
	// A content-available-only payload is a background push at priority 5.
	c.do(`{"token":"aa","payload":{"aps":{"content-available":1}}}`)
	req = h.sandbox.Requests()[1]
	if req.Header.Get("apns-push-type") != "background" || req.Header.Get("apns-priority") != "5" {
		t.Errorf("silent push headers: %v", req.Header)
	}
	// Numeric ids are echoed unchanged.
	if m := c.do(`{"id":12345678901,"op":"ping"}`); m["id"] != float64(12345678901) {
		t.Errorf("numeric id: %v", m)
	}
}

func TestRoutingByEnvironment(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	for _, env := range []string{"sandbox", "production", ""} {
		m := c.do(fmt.Sprintf(`{"token":"aa","alert":"x","env":%q}`, env))
		if m["ok"] != true {
			t.Fatalf("env %q: %v", env, m)
		}
	}
	if h.sandbox.Accepted() != 2 || h.production.Accepted() != 1 {
		t.Fatalf("sandbox got %d, production %d; want 2 and 1", h.sandbox.Accepted(), h.production.Accepted())
	}
	if !h.sandbox.Requests()[0].ClientCert.Equal(h.sandboxCert.Cert) {
		t.Error("sandbox stand-in did not see the sandbox certificate")
	}
	if !h.production.Requests()[0].ClientCert.Equal(h.prodCert.Cert) {
		t.Error("production stand-in did not see the production certificate")
	}
}

func TestAPNsRefusalsPassedBack(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.sandbox.SetResponder(apnstest.DemoResponder)
	c := h.dial()
	m := c.do(`{"id":7,"token":"0410aa","alert":"x"}`)
	if m["ok"] != false || m["status"] != float64(410) || m["reason"] != "Unregistered" || m["id"] != float64(7) {
		t.Errorf("410: %v", m)
	}
	if ts, _ := m["timestamp"].(float64); ts < float64(time.Now().Add(-time.Minute).UnixMilli()) {
		t.Errorf("410 without a plausible timestamp: %v", m)
	}
	if id, _ := m["apns_id"].(string); len(id) != 36 {
		t.Errorf("410 without apns_id: %v", m)
	}
	for token, want := range map[string]struct {
		status    float64
		reason    string
		retryable bool
	}{
		"0400aa": {400, "BadDeviceToken", false},
		"0403aa": {403, "Forbidden", false},
		"0429aa": {429, "TooManyRequests", true},
		"0500aa": {500, "InternalServerError", true},
		"0503aa": {503, "ServiceUnavailable", true},
	} {
		m := c.do(fmt.Sprintf(`{"token":%q,"alert":"x"}`, token))
		if m["ok"] != false || m["status"] != want.status || m["reason"] != want.reason || m["retryable"] != want.retryable {
			t.Errorf("%s: got %v, want %v", token, m, want)
		}
		if _, has := m["timestamp"]; has {
			t.Errorf("%s: unexpected timestamp: %v", token, m)
		}
	}
}

// Many connections pipeline many requests each while the stand-in answers
// after random delays: every connection must get its answers in its own
// request order.
func TestPipeliningOrderUnderConcurrency(t *testing.T) {
	h := newHarness(t, harnessOpts{maxStreams: 16})
	delay := func(r *apnstest.Request) apnstest.Reply {
		var n int
		fmt.Sscanf(r.DeviceToken[len(r.DeviceToken)-2:], "%x", &n)
		return apnstest.Reply{Delay: time.Duration(n%7) * time.Millisecond}
	}
	h.sandbox.SetResponder(delay)
	h.production.SetResponder(delay)
	const conns, perConn = 8, 150
	var wg sync.WaitGroup
	for ci := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := h.dial()
			go func() {
				for i := range perConn {
					env := "sandbox"
					if i%3 == 0 {
						env = "production"
					}
					line := fmt.Sprintf(`{"id":"%d-%d","token":"%04x%02x","alert":"x","env":%q}`, ci, i, ci, i%256, env)
					if i%50 == 49 {
						line = `{"id":"` + fmt.Sprintf("%d-%d", ci, i) + `","op":"ping"}`
					}
					if err := c.cn.WriteLine([]byte(line)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			for i := range perConn {
				m := c.read()
				if want := fmt.Sprintf("%d-%d", ci, i); m["id"] != want || m["ok"] != true {
					t.Errorf("conn %d answer %d: got %v, want id %s ok", ci, i, m, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := h.sandbox.Accepted() + h.production.Accepted(); got != conns*(perConn-perConn/50) {
		t.Errorf("stand-ins accepted %d", got)
	}
	if h.production.MaxConcurrent() > 16 || h.sandbox.MaxConcurrent() > 16 {
		t.Errorf("exceeded MAX_CONCURRENT_STREAMS: %d / %d", h.sandbox.MaxConcurrent(), h.production.MaxConcurrent())
	}
	if h.sandbox.Connections() != 1 || h.production.Connections() != 2 {
		t.Errorf("connections: sandbox %d (want 1), production %d (want 2)", h.sandbox.Connections(), h.production.Connections())
	}
}

func TestQueueFull(t *testing.T) {
	h := newHarness(t, harnessOpts{top: "queue_size = 2"})
	release := make(chan struct{})
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		<-release
		return apnstest.Reply{}
	})
	a, b := h.dial(), h.dial()
	a.send(`{"id":1,"token":"aa","alert":"x"}`)
	a.send(`{"id":2,"token":"aa","alert":"x","wait":false}`)
	waitFor(t, func() bool { return h.d.Status().Queue.Depth+h.d.Status().Queue.InFlight == 2 })
	m := b.do(`{"id":3,"token":"aa","alert":"x"}`)
	wantErr(t, m, ipc.CodeQueueFull)
	if m["retryable"] != true {
		t.Errorf("queue_full must be retryable: %v", m)
	}
	close(release)
	if m := a.read(); m["id"] != float64(1) || m["ok"] != true || m["status"] != float64(200) {
		t.Errorf("first: %v", m)
	}
	if m := a.read(); m["id"] != float64(2) || m["ok"] != true || m["queued"] != true {
		t.Errorf("no-wait: %v", m)
	}
	// The stand-in counts a push when it answers; the daemon frees the slot
	// when it has read that answer, so wait for the daemon's own count.
	waitFor(t, func() bool { return h.sandbox.Accepted() == 2 && h.d.pending.Load() == 0 })
	if m := b.do(`{"id":4,"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Errorf("after the queue drained: %v", m)
	}
}

// TestQueueSlotFreeBeforeAnswer: a client that has its answer may send the
// next notification at once; with queue_size = 1 it must never meet
// queue_full for the notification it was just answered for.
func TestQueueSlotFreeBeforeAnswer(t *testing.T) {
	h := newHarness(t, harnessOpts{top: "queue_size = 1"})
	c := h.dial()
	for i := range 300 {
		if m := c.do(fmt.Sprintf(`{"id":%d,"token":"aa","alert":"x"}`, i)); m["ok"] != true {
			t.Fatalf("send %d right after the answer to the one before: %v", i, m)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTimeoutAndUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	dead := "https://" + l.Addr().String()
	l.Close()
	h := newHarness(t, harnessOpts{top: `request_timeout = "300ms"`, sandboxURL: dead})
	h.production.SetResponder(func(*apnstest.Request) apnstest.Reply { return apnstest.Reply{Delay: 2 * time.Second} })
	c := h.dial()
	m := c.do(`{"token":"aa","alert":"x","env":"sandbox"}`)
	wantErr(t, m, ipc.CodeUnavailable)
	if m["retryable"] != true {
		t.Errorf("unavailable must be retryable: %v", m)
	}
	m = c.do(`{"token":"aa","alert":"x","env":"production"}`)
	wantErr(t, m, ipc.CodeTimeout)
	st := h.d.Status()
	for _, e := range st.Apps[0].Envs {
		if e.Env == "sandbox" && (e.State != "down" || e.LastConnErr == "") {
			t.Errorf("sandbox status %+v, want down with the connection error", e)
		}
		if e.Env == "production" && e.State != "up" {
			t.Errorf("production status %+v, want up", e)
		}
	}
}

func TestStatusAndPing(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	c.do(`{"token":"aa","alert":"x"}`)
	p := c.do(`{"op":"ping"}`)
	if p["ok"] != true || p["pong"] != true || p["version"] != defaults.Version {
		t.Errorf("ping: %v", p)
	}
	waitFor(t, func() bool { return h.d.Status().Apps[0].Envs[1].Connections == 2 })
	s := c.do(`{"op":"status","id":"s"}`)
	if s["ok"] != true || s["id"] != "s" {
		t.Fatalf("status: %v", s)
	}
	apps := s["apps"].([]any)
	envs := apps[0].(map[string]any)["envs"].([]any)
	sb := envs[0].(map[string]any)
	if sb["env"] != "sandbox" || sb["state"] != "up" || sb["auth"] != "certificate" || sb["sent"] != float64(1) ||
		!strings.Contains(sb["cert_subject"].(string), "com.example.app") || sb["not_after"] == nil || sb["loaded_at"] == nil {
		t.Errorf("sandbox status: %v", sb)
	}
	if q := s["queue"].(map[string]any); q["sent"] != float64(1) || q["capacity"] != float64(10000) {
		t.Errorf("queue: %v", q)
	}
}

func TestReloadSwapsCertificateAndKeepsOldOnError(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Fatal(m)
	}
	// Bad material: the old certificate keeps working.
	must(t, os.WriteFile(filepath.Join(h.dir, "sb.crt"), []byte("garbage"), 0o644))
	m := c.do(`{"op":"reload"}`)
	wantErr(t, m, ipc.CodeReloadFailed)
	if !strings.Contains(m["message"].(string), "sb.crt") {
		t.Errorf("reload error does not name the file: %v", m)
	}
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Fatalf("send after a failed reload: %v", m)
	}
	if e := h.d.Status().Apps[0].Envs[0]; e.LastReloadError == "" {
		t.Errorf("status does not show the reload error: %+v", e)
	}
	// Good material: new sends present the new certificate.
	next, err := h.sandboxCA.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	must(t, err)
	must(t, next.WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	m = c.do(`{"op":"reload"}`)
	if m["ok"] != true || len(m["reloaded"].([]any)) != 1 {
		t.Fatalf("reload: %v", m)
	}
	// New sends move to the new certificate once its connection is up
	// (make before break); every send succeeds meanwhile.
	h.waitPresents(c, next.Cert)
	if e := h.d.Status().Apps[0].Envs[0]; e.LastReloadError != "" {
		t.Errorf("reload error not cleared: %+v", e)
	}
}

// Graceful shutdown: requests in flight finish, new ones are refused with
// shutting_down, and with a short deadline the ones still waiting are
// answered shutting_down. Every accepted request gets exactly one answer.
func TestGracefulShutdownAnswersEverything(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		if strings.HasPrefix(r.DeviceToken, "51") {
			return apnstest.Reply{Delay: 30 * time.Second}
		}
		return apnstest.Reply{Delay: 200 * time.Millisecond}
	})
	c := h.dial()
	const fast, slow = 20, 5
	for i := range fast {
		c.send(fmt.Sprintf(`{"id":%d,"token":"aa","alert":"x"}`, i))
	}
	for i := range slow {
		c.send(fmt.Sprintf(`{"id":%d,"token":"51aa","alert":"x"}`, fast+i))
	}
	waitFor(t, func() bool { return h.d.Status().Queue.InFlight+h.d.Status().Queue.Depth == fast+slow })
	done := make(chan struct{})
	go func() {
		// Long enough for the fast requests even on a loaded machine.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		h.d.Shutdown(ctx)
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	// Sent after shutdown began: refused, in order, after the others.
	c.send(fmt.Sprintf(`{"id":%d,"token":"aa","alert":"x"}`, fast+slow))
	counts := map[string]int{}
	for i := range fast + slow + 1 {
		m := c.read()
		if m["id"] != float64(i) {
			t.Fatalf("answer %d has id %v", i, m["id"])
		}
		switch {
		case i < fast:
			if m["ok"] != true {
				t.Errorf("in-flight request %d: %v", i, m)
			}
		default:
			wantErr(t, m, ipc.CodeShuttingDown)
		}
		counts[fmt.Sprint(m["ok"], m["error"])]++
	}
	if _, err := c.cn.ReadLine(); err == nil {
		t.Error("connection still open after shutdown, or an extra answer")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	if _, err := os.Stat(h.sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
	t.Logf("answers: %v", counts)
}

func TestSocketSetup(t *testing.T) {
	h := newHarness(t, harnessOpts{socket: `mode = "0600"`})
	fi, err := os.Stat(h.sock)
	must(t, err)
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want 0600 socket", fi.Mode())
	}
	// A second daemon on the same socket is refused.
	if _, err := ListenUnix(h.sock, 0o600, ""); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second listener: %v", err)
	}
	// A stale socket file (nothing listening) is replaced.
	stale := filepath.Join(h.dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	must(t, err)
	l.SetUnlinkOnClose(false)
	l.Close()
	l2, err := ListenUnix(stale, 0o660, "")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	// A regular file in the way is not removed.
	file := filepath.Join(h.dir, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	if _, err := ListenUnix(file, 0o660, ""); err == nil {
		t.Error("ListenUnix replaced a regular file")
	}
}

func TestHalfCloseStillAnswers(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	var lines bytes.Buffer
	for i := range 10 {
		fmt.Fprintf(&lines, `{"id":%d,"token":"aa","alert":"x"}`+"\n", i)
	}
	lines.WriteString(`{"id":10,"op":"ping"}`) // last line without newline
	must(t, c.cn.WriteLine(bytes.TrimSuffix(lines.Bytes(), []byte("\n"))))
	c.cn.CloseWrite()
	for i := range 11 {
		if m := c.read(); m["id"] != float64(i) || m["ok"] != true {
			t.Fatalf("answer %d: %v", i, m)
		}
	}
}

func TestUnregisteredFileAndAllowList(t *testing.T) {
	dir := shortTempDir(t)
	file := filepath.Join(dir, "unregistered.jsonl")
	h := newHarness(t, harnessOpts{top: fmt.Sprintf("unregistered_file = %q", file), socket: "allow_uids = [0, 4242]"})
	h.sandbox.SetResponder(apnstest.DemoResponder)
	c := h.dial()
	if os.Getuid() != 0 {
		t.Fatalf("this test runs as root (CI does): uid %d", os.Getuid())
	}
	m := c.do(`{"token":"0410aabbccdd","alert":"x"}`)
	if m["status"] != float64(410) {
		t.Fatal(m)
	}
	c.do(`{"token":"0400aa","alert":"x"}`) // not a 410: not recorded
	data, err := os.ReadFile(file)
	must(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 1 {
		t.Fatalf("unregistered file: %q", data)
	}
	var rec ipc.UnregisteredRecord
	must(t, json.Unmarshal([]byte(lines[0]), &rec))
	if rec.Token != "0410aabbccdd" || rec.App != "app" || rec.Env != "sandbox" || rec.Reason != "Unregistered" || rec.Timestamp == 0 || rec.ApnsID != m["apns_id"] {
		t.Errorf("record %+v", rec)
	}
	if st := h.d.Status(); st.Unregistered != file {
		t.Errorf("status unregistered_file = %q", st.Unregistered)
	}
}

func TestSocketGroup(t *testing.T) {
	dir := shortTempDir(t)
	for _, group := range []string{"0", "root"} {
		path := filepath.Join(dir, "g"+group+".sock")
		l, err := ListenUnix(path, 0o660, group)
		if err != nil {
			t.Fatalf("group %q: %v", group, err)
		}
		fi, err := os.Stat(path)
		must(t, err)
		if st := fi.Sys().(*syscall.Stat_t); st.Gid != 0 || fi.Mode().Perm() != 0o660 {
			t.Errorf("group %q: gid %d mode %v", group, st.Gid, fi.Mode().Perm())
		}
		l.Close()
	}
	_, err := ListenUnix(filepath.Join(dir, "x.sock"), 0o660, "no-such-group-apnsd")
	if err == nil || !strings.Contains(err.Error(), "no-such-group-apnsd") {
		t.Errorf("unknown group: %v", err)
	}
}

func TestUndeliveredWarningIsRateLimited(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	es := &envSender{}
	for range 100 {
		es.logUndelivered(log, ipc.Errorf(ipc.CodeUnavailable, "no working connection"))
	}
	if n := strings.Count(buf.String(), "notification not delivered"); n != 1 {
		t.Fatalf("%d warnings for 100 failures in a burst, want 1:\n%s", n, buf.String())
	}
	es.undeliveredSince = time.Now().Add(-undeliveredEvery) // the period is over
	es.logUndelivered(log, ipc.Errorf(ipc.CodeUnavailable, "no working connection"))
	if !strings.Contains(buf.String(), "count_since_last_warning=100") {
		t.Errorf("the next warning does not count the suppressed ones:\n%s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer for concurrent log writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
