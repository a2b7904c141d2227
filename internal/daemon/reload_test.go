package daemon

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/pki"
)

// fastWatch makes the watcher react in test time, and disables the poll so
// that only fsnotify events can trigger a reload.
var fastWatch = watchOptions{Debounce: 50 * time.Millisecond, Settle: 2 * time.Second, Poll: time.Hour, Retry: 100 * time.Millisecond}

func (h *harness) newSandboxCert() *pki.Issued {
	h.t.Helper()
	c, err := h.sandboxCA.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	must(h.t, err)
	return c
}

// waitPresents sends on the sandbox until the stand-in sees cert; every
// send must succeed meanwhile.
func (h *harness) waitPresents(c *conn, cert *x509.Certificate) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
			h.t.Fatalf("send failed while waiting for the new certificate: %v", m)
		}
		reqs := h.sandbox.Requests()
		if reqs[len(reqs)-1].ClientCert.Equal(cert) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the stand-in never saw the new certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	must(t, os.WriteFile(tmp, data, 0o600))
	must(t, os.Rename(tmp, path))
}

func symlinkAtomic(t *testing.T, target, link string) {
	t.Helper()
	tmp := link + ".tmp"
	os.Remove(tmp)
	must(t, os.Symlink(target, tmp))
	must(t, os.Rename(tmp, link)) // what `ln -sfn` and Kubernetes do
}

func TestHotReloadReplacementStyles(t *testing.T) {
	type setup struct {
		files string                                                    // sandbox credential TOML
		init  func(h *harness, cert *pki.Issued)                        // lay out the first credential
		swap  func(t *testing.T, h *harness, cert *pki.Issued, gen int) // replace it
	}
	cases := map[string]setup{
		"rewrite in place (cert, then key)": {
			files: `cert_file = "sb.crt"` + "\n  " + `key_file = "sb.key"`,
			swap: func(t *testing.T, h *harness, c *pki.Issued, _ int) {
				// Truncate-then-write, one file after the other: between
				// the two the pair does not match and must not be used.
				must(t, os.WriteFile(filepath.Join(h.dir, "sb.crt"), c.CertPEM, 0o644))
				time.Sleep(150 * time.Millisecond)
				must(t, os.WriteFile(filepath.Join(h.dir, "sb.key"), c.KeyPEM, 0o600))
			},
		},
		"write temp then rename": {
			files: `cert_file = "sb.crt"` + "\n  " + `key_file = "sb.key"`,
			swap: func(t *testing.T, h *harness, c *pki.Issued, _ int) {
				writeAtomic(t, filepath.Join(h.dir, "sb.key"), c.KeyPEM)
				writeAtomic(t, filepath.Join(h.dir, "sb.crt"), c.CertPEM)
			},
		},
		"combined PEM rename": {
			files: `cert_file = "combined.pem"`,
			init: func(h *harness, c *pki.Issued) {
				must(h.t, c.WriteFiles(filepath.Join(h.dir, "combined.pem"), ""))
			},
			swap: func(t *testing.T, h *harness, c *pki.Issued, _ int) {
				writeAtomic(t, filepath.Join(h.dir, "combined.pem"), append(append([]byte{}, c.CertPEM...), c.KeyPEM...))
			},
		},
		"kubernetes ..data symlink swap": {
			files: `cert_file = "secret/tls.crt"` + "\n  " + `key_file = "secret/tls.key"`,
			init: func(h *harness, c *pki.Issued) {
				sec := filepath.Join(h.dir, "secret")
				must(h.t, c.WriteFiles(filepath.Join(sec, "..v0", "tls.crt"), filepath.Join(sec, "..v0", "tls.key")))
				must(h.t, os.Symlink("..v0", filepath.Join(sec, "..data")))
				must(h.t, os.Symlink("..data/tls.crt", filepath.Join(sec, "tls.crt")))
				must(h.t, os.Symlink("..data/tls.key", filepath.Join(sec, "tls.key")))
			},
			swap: func(t *testing.T, h *harness, c *pki.Issued, gen int) {
				sec := filepath.Join(h.dir, "secret")
				v := fmt.Sprintf("..v%d", gen)
				must(t, c.WriteFiles(filepath.Join(sec, v, "tls.crt"), filepath.Join(sec, v, "tls.key")))
				symlinkAtomic(t, v, filepath.Join(sec, "..data"))
			},
		},
		"certbot live/ links to archive/": {
			files: `cert_file = "live/cert.pem"` + "\n  " + `key_file = "live/privkey.pem"`,
			init: func(h *harness, c *pki.Issued) {
				must(h.t, c.WriteFiles(filepath.Join(h.dir, "archive", "cert0.pem"), filepath.Join(h.dir, "archive", "privkey0.pem")))
				must(h.t, os.MkdirAll(filepath.Join(h.dir, "live"), 0o755))
				must(h.t, os.Symlink("../archive/cert0.pem", filepath.Join(h.dir, "live", "cert.pem")))
				must(h.t, os.Symlink("../archive/privkey0.pem", filepath.Join(h.dir, "live", "privkey.pem")))
			},
			swap: func(t *testing.T, h *harness, c *pki.Issued, gen int) {
				must(t, c.WriteFiles(filepath.Join(h.dir, "archive", fmt.Sprintf("cert%d.pem", gen)), filepath.Join(h.dir, "archive", fmt.Sprintf("privkey%d.pem", gen))))
				symlinkAtomic(t, fmt.Sprintf("../archive/privkey%d.pem", gen), filepath.Join(h.dir, "live", "privkey.pem"))
				symlinkAtomic(t, fmt.Sprintf("../archive/cert%d.pem", gen), filepath.Join(h.dir, "live", "cert.pem"))
			},
		},
		"ln -sfn of the directory": {
			files: `cert_file = "current/c.pem"` + "\n  " + `key_file = "current/k.pem"`,
			init: func(h *harness, c *pki.Issued) {
				must(h.t, c.WriteFiles(filepath.Join(h.dir, "v0", "c.pem"), filepath.Join(h.dir, "v0", "k.pem")))
				must(h.t, os.Symlink("v0", filepath.Join(h.dir, "current")))
			},
			swap: func(t *testing.T, h *harness, c *pki.Issued, gen int) {
				v := fmt.Sprintf("v%d", gen)
				must(t, c.WriteFiles(filepath.Join(h.dir, v, "c.pem"), filepath.Join(h.dir, v, "k.pem")))
				symlinkAtomic(t, v, filepath.Join(h.dir, "current"))
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarnessWithInit(t, harnessOpts{watch: fastWatch, sandboxFiles: tc.files}, tc.init)
			c := h.dial()
			for gen := 1; gen <= 2; gen++ {
				next := h.newSandboxCert()
				tc.swap(t, h, next, gen)
				h.waitPresents(c, next.Cert)
			}
			if e := h.d.Status().Apps[0].Envs[0]; e.LastReloadError != "" {
				t.Errorf("status shows a reload error after good swaps: %s", e.LastReloadError)
			}
		})
	}
}

// newHarnessWithInit lays out the first sandbox credential with init (when
// set) before the daemon starts.
func newHarnessWithInit(t *testing.T, o harnessOpts, init func(*harness, *pki.Issued)) *harness {
	if init == nil {
		return newHarness(t, o)
	}
	prev := harnessInit
	harnessInit = init
	defer func() { harnessInit = prev }()
	return newHarness(t, o)
}

func TestHotReloadBadMaterialKeepsOldAndRecovers(t *testing.T) {
	w := fastWatch
	w.Settle = 300 * time.Millisecond
	h := newHarness(t, harnessOpts{watch: w})
	c := h.dial()
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Fatal(m)
	}
	must(t, os.WriteFile(filepath.Join(h.dir, "sb.crt"), []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o644))
	waitFor(t, func() bool { return h.d.Status().Apps[0].Envs[0].LastReloadError != "" })
	e := h.d.Status().Apps[0].Envs[0]
	if !strings.Contains(e.LastReloadError, "sb.crt") || e.LastReloadErrorAt.IsZero() {
		t.Errorf("reload error does not name the file or time: %+v", e)
	}
	// The old certificate keeps working, on the same connection.
	before := h.sandbox.Connections()
	for range 5 {
		if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
			t.Fatalf("send with the old certificate: %v", m)
		}
	}
	if h.sandbox.Connections() != before {
		t.Errorf("a refused reload replaced connections")
	}
	// Good material appears: recovered without any command.
	next := h.newSandboxCert()
	must(t, next.WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	h.waitPresents(c, next.Cert)
	waitFor(t, func() bool { return h.d.Status().Apps[0].Envs[0].LastReloadError == "" })
}

func TestHotReloadExpiredCertificateRefused(t *testing.T) {
	w := fastWatch
	w.Settle = 200 * time.Millisecond
	h := newHarness(t, harnessOpts{watch: w})
	old, err := h.sandboxCA.PushCert(pki.PushCertOptions{Topic: "com.example.app", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	must(t, err)
	must(t, old.WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	waitFor(t, func() bool {
		return strings.Contains(h.d.Status().Apps[0].Envs[0].LastReloadError, "expired")
	})
	c := h.dial()
	h.waitPresents(c, h.sandboxCert.Cert)
}

// Rotation under continuous load: no request fails or is lost.
func TestRotationUnderLoadLosesNothing(t *testing.T) {
	h := newHarness(t, harnessOpts{watch: fastWatch})
	h.sandbox.SetResponder(func(*apnstest.Request) apnstest.Reply { return apnstest.Reply{Delay: 2 * time.Millisecond} })
	stop := make(chan struct{})
	var okCount, bad atomic.Int64
	var wg sync.WaitGroup
	for ci := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := h.dial()
			sent := make(chan int, 64)
			go func() {
				defer close(sent)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c.cn.WriteLine([]byte(fmt.Sprintf(`{"id":%d,"token":"%04x","alert":"x"}`, i, ci)))
					sent <- i
				}
			}()
			for i := range sent {
				m := c.read()
				if m["id"] != float64(i) || m["ok"] != true {
					bad.Add(1)
					t.Errorf("conn %d request %d: %v", ci, i, m)
					continue
				}
				okCount.Add(1)
			}
		}()
	}
	var certs []*pki.Issued
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		next := h.newSandboxCert()
		certs = append(certs, next)
		writeAtomic(t, filepath.Join(h.dir, "sb.key"), next.KeyPEM)
		writeAtomic(t, filepath.Join(h.dir, "sb.crt"), next.CertPEM)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed during rotation", bad.Load())
	}
	if int(okCount.Load()) != h.sandbox.Accepted() {
		t.Errorf("daemon answered ok %d times, stand-in accepted %d", okCount.Load(), h.sandbox.Accepted())
	}
	seen := map[string]bool{}
	for _, r := range h.sandbox.Requests() {
		seen[string(r.ClientCert.Raw)] = true
	}
	for i, c := range certs {
		if i == len(certs)-1 && !seen[string(c.Cert.Raw)] {
			t.Errorf("the last rotated certificate was never presented")
		}
	}
	t.Logf("%d notifications, %d certificates seen, %d connections", okCount.Load(), len(seen), h.sandbox.Connections())
	waitFor(t, func() bool { return h.sandbox.OpenConnections() == 1 })
}

func TestConfigReload(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	orig, err := os.ReadFile(h.cfgPath)
	must(t, err)
	// Add an app that uses the production stand-in with its own cert.
	other, err := h.prodCA.PushCert(pki.PushCertOptions{Topic: "com.example.other", Production: true})
	must(t, err)
	must(t, other.WriteFiles(filepath.Join(h.dir, "other.pem"), ""))
	added := string(orig) + fmt.Sprintf(`
[[apps]]
name = "other"
topic = "com.example.other"
  [apps.production]
  cert_file = "other.pem"
  endpoint = %q
  ca_file = "ca.pem"
`, h.production.URL)
	must(t, os.WriteFile(h.cfgPath, []byte(added), 0o644))
	m := c.do(`{"op":"reload"}`)
	if m["ok"] != true || !strings.Contains(fmt.Sprint(m["reloaded"]), `app "other" added`) {
		t.Fatalf("reload: %v", m)
	}
	if m := c.do(`{"token":"aa","alert":"x","app":"other"}`); m["ok"] != true {
		t.Fatalf("send to the added app: %v", m)
	}
	if m := c.do(`{"token":"aa","alert":"x"}`); m["error"] != ipc.CodeUnknownApp {
		t.Errorf("with two apps, a send without app must name one: %v", m)
	}
	if m := c.do(`{"token":"aa","alert":"x","app":"app"}`); m["ok"] != true {
		t.Fatalf("send to the first app: %v", m)
	}
	sandboxConns := h.sandbox.Connections() // the first app's connection is up now
	// An invalid config is refused; the running one stays.
	must(t, os.WriteFile(h.cfgPath, []byte(added+"\nqueue_sise = 1\n"), 0o644))
	m = c.do(`{"op":"reload"}`)
	wantErr(t, m, ipc.CodeReloadFailed)
	if !strings.Contains(m["message"].(string), "queue_sise") {
		t.Errorf("reload error does not name the key: %v", m)
	}
	if st := h.d.Status(); st.LastReloadError == "" {
		t.Error("status does not show the failed config reload")
	}
	if m := c.do(`{"token":"aa","alert":"x","app":"other"}`); m["ok"] != true {
		t.Fatalf("send after a refused reload: %v", m)
	}
	// A config whose new app has a broken credential is refused whole.
	broken := added + `
[[apps]]
name = "broken"
topic = "com.example.broken"
  [apps.production]
  cert_file = "missing.pem"
`
	must(t, os.WriteFile(h.cfgPath, []byte(broken), 0o644))
	m = c.do(`{"op":"reload"}`)
	wantErr(t, m, ipc.CodeReloadFailed)
	// Remove the added app again.
	must(t, os.WriteFile(h.cfgPath, orig, 0o644))
	if m := c.do(`{"op":"reload"}`); m["ok"] != true || !strings.Contains(fmt.Sprint(m["reloaded"]), `app "other" removed`) {
		t.Fatalf("reload: %v", m)
	}
	if m := c.do(`{"token":"aa","alert":"x","app":"other"}`); m["error"] != ipc.CodeUnknownApp {
		t.Errorf("removed app still answers: %v", m)
	}
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Errorf("unchanged app: %v", m)
	}
	if st := h.d.Status(); st.LastReloadError != "" {
		t.Errorf("status still shows an old reload error: %s", st.LastReloadError)
	}
	if h.sandbox.Connections() != sandboxConns {
		t.Errorf("an unchanged app reconnected on reload (%d -> %d connections)", sandboxConns, h.sandbox.Connections())
	}
}

func TestTokenAuthEndToEnd(t *testing.T) {
	dir := shortTempDir(t)
	key, p8, err := pki.NewP8Key()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "k.p8"), p8, 0o600))
	srv, err := apnstest.New(apnstest.Options{TokenKeys: tokenKeys("ABCDE12345", key)})
	must(t, err)
	t.Cleanup(srv.Close)
	d, sock := startTokenDaemon(t, dir, srv, Options{watch: fastWatch})
	cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	r, err := cn.Do(context.Background(), map[string]any{"token": "aa", "alert": "x"})
	must(t, err)
	if !r.OK {
		t.Fatalf("token-auth send: %+v", r)
	}
	req := srv.Requests()[0]
	if !strings.HasPrefix(req.Header.Get("authorization"), "bearer ") || req.Header.Get("apns-topic") != "com.example.tok" {
		t.Errorf("headers: %v", req.Header)
	}
	st := d.Status().Apps[0].Envs[0]
	if st.Auth != "token" || st.KeyID != "ABCDE12345" || st.TeamID != "TEAM123456" {
		t.Errorf("status: %+v", st)
	}
	// A new .p8 is picked up by the watcher; the stand-in only trusts the
	// new key from now on.
	key2, p82, err := pki.NewP8Key()
	must(t, err)
	srv.Close()
	srv2, err := apnstest.New(apnstest.Options{Addr: srv.Addr(), CA: srv.CA, TokenKeys: tokenKeys("ABCDE12345", key2)})
	must(t, err)
	t.Cleanup(srv2.Close)
	writeAtomic(t, filepath.Join(dir, "k.p8"), p82)
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := cn.Do(context.Background(), map[string]any{"token": "aa", "alert": "x"})
		must(t, err)
		if r.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never sent with the new key: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// On 403 ExpiredProviderToken the token is refreshed (when Apple's
// 20-minute rule allows) and the notification retried once; a token younger
// than 20 minutes is not refreshed and the 403 is passed back.
func TestExpiredProviderTokenRefreshAndRetry(t *testing.T) {
	dir := shortTempDir(t)
	key, p8, err := pki.NewP8Key()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "k.p8"), p8, 0o600))
	var (
		mu     sync.Mutex
		tokens []string
		expire = map[string]bool{} // tokens the stand-in calls expired
	)
	verify := apnstest.ES256Verifier(tokenKeys("ABCDE12345", key))
	srv, err := apnstest.New(apnstest.Options{VerifyToken: func(jwt string) string {
		mu.Lock()
		defer mu.Unlock()
		tokens = append(tokens, jwt)
		if expire[jwt] {
			return "ExpiredProviderToken"
		}
		return verify(jwt)
	}})
	must(t, err)
	t.Cleanup(srv.Close)
	var clock atomic.Int64
	// The stand-in checks iat against the real clock: start in the past.
	clock.Store(time.Now().Add(-30 * time.Minute).UnixNano())
	_, sock := startTokenDaemon(t, dir, srv, Options{tokenClock: func() time.Time { return time.Unix(0, clock.Load()) }})
	cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	send := func() *ipc.Response {
		r, err := cn.Do(context.Background(), map[string]any{"token": "aa", "alert": "x"})
		must(t, err)
		return r
	}
	if r := send(); !r.OK {
		t.Fatalf("first send: %+v", r)
	}
	mu.Lock()
	first := tokens[0]
	expire[first] = true
	mu.Unlock()
	// 5 minutes later APNs calls the token expired: too young to replace.
	clock.Add(int64(5 * time.Minute))
	if r := send(); r.OK || r.Status != 403 || r.Reason != "ExpiredProviderToken" {
		t.Fatalf("young token: %+v, want the 403 passed back", r)
	}
	// 25 minutes later: refreshed and retried once, same request succeeds.
	clock.Add(int64(20 * time.Minute))
	if r := send(); !r.OK {
		t.Fatalf("after 25 minutes: %+v, want a refresh and a successful retry", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := tokens[len(tokens)-1]; last == first {
		t.Error("the retry carried the expired token")
	}
	distinct := map[string]bool{}
	for _, tk := range tokens {
		distinct[tk] = true
	}
	if len(distinct) != 2 {
		t.Errorf("%d distinct tokens minted, want 2", len(distinct))
	}
}

func TestReloadRefusesCertificateForAnotherTopic(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	other, err := h.sandboxCA.PushCert(pki.PushCertOptions{Topic: "com.example.someone-else"})
	must(t, err)
	must(t, other.WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	m := c.do(`{"op":"reload"}`)
	wantErr(t, m, ipc.CodeReloadFailed)
	if !strings.Contains(m["message"].(string), "com.example.someone-else") {
		t.Errorf("message does not say whose certificate it is: %v", m)
	}
	h.waitPresents(c, h.sandboxCert.Cert)
}

// startTokenDaemon runs a daemon with one token-auth app ("tok", key id
// ABCDE12345, key file k.p8 in dir) sending to srv, and returns it and its
// socket.
func startTokenDaemon(t *testing.T, dir string, srv *apnstest.Server, o Options) (*Daemon, string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(dir, "ca.pem"), srv.CACertPEM(), 0o644))
	cfgPath := filepath.Join(dir, "apnsd.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`state_dir = %q
[socket]
path = %q
[[apps]]
name = "tok"
topic = "com.example.tok"
  [apps.token]
  key_file = "k.p8"
  key_id = "ABCDE12345"
  team_id = "TEAM123456"
  [apps.production]
  endpoint = %q
  ca_file = "ca.pem"
`, filepath.Join(dir, "state"), filepath.Join(dir, "s.sock"), srv.URL)), 0o644))
	cfg, err := config.Load(cfgPath)
	must(t, err)
	return startDaemon(t, cfg, o), cfg.Socket.Path
}

// A development certificate configured for Apple's production host is
// refused at start (New does not connect anywhere).
func TestWrongEnvironmentCertificateRefused(t *testing.T) {
	dir := shortTempDir(t)
	ca, err := pki.NewCA("push CA")
	must(t, err)
	dev, err := ca.PushCert(pki.PushCertOptions{Topic: "com.example.app"}) // development
	must(t, err)
	must(t, dev.WriteFiles(filepath.Join(dir, "dev.pem"), ""))
	cfgPath := filepath.Join(dir, "apnsd.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
[socket]
path = %q
[[apps]]
name = "app"
topic = "com.example.app"
  [apps.production]
  cert_file = "dev.pem"
`, filepath.Join(dir, "s.sock"))), 0o644))
	cfg, err := config.Load(cfgPath)
	must(t, err)
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "BadCertificateEnvironment") || !strings.Contains(err.Error(), "dev.pem") {
		t.Fatalf("New: %v, want a refusal naming the file and BadCertificateEnvironment", err)
	}
}

// A wrong .p8 replaced by the right one and then reloaded by hand (the
// reload op, or SIGHUP, which calls the same Reload) before the watcher
// acts: the daemon stays up, the reload reports the new key, and sends go
// out with it. (This crashed apnsd 0.1: the reload report read a
// certificate that a token sender does not have.)
func TestManualReloadOfTokenKey(t *testing.T) {
	dir := shortTempDir(t)
	_, wrongP8, err := pki.NewP8Key()
	must(t, err)
	right, rightP8, err := pki.NewP8Key()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "k.p8"), wrongP8, 0o600))
	srv, err := apnstest.New(apnstest.Options{TokenKeys: tokenKeys("ABCDE12345", right)})
	must(t, err)
	t.Cleanup(srv.Close)
	// A watcher that never acts by itself: only the manual triggers reload.
	idle := watchOptions{Debounce: time.Hour, Poll: time.Hour, Settle: time.Hour, Retry: time.Hour}
	d, sock := startTokenDaemon(t, dir, srv, Options{watch: idle})
	cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	send := func() *ipc.Response {
		t.Helper()
		r, err := cn.Do(context.Background(), map[string]any{"token": "aa", "alert": "x"})
		must(t, err)
		return r
	}
	if r := send(); r.OK || r.Reason != "InvalidProviderToken" {
		t.Fatalf("send with the wrong key: %+v, want 403 InvalidProviderToken", r)
	}
	for i, trigger := range []string{"reload op", "Reload (SIGHUP)"} {
		if i == 0 {
			writeAtomic(t, filepath.Join(dir, "k.p8"), rightP8)
			r, err := cn.Do(context.Background(), map[string]any{"op": "reload"})
			must(t, err)
			if !r.OK || r.ReloadReport == nil || len(r.Reloaded) != 1 || !strings.Contains(r.Reloaded[0], "token key ABCDE12345") {
				t.Fatalf("%s: %+v, want ok with the new token key reported", trigger, r)
			}
		} else {
			// Nothing changed since: a second reload is a no-op, not a crash.
			rep, err := d.Reload(context.Background(), nil)
			must(t, err)
			if len(rep.Reloaded) != 0 {
				t.Errorf("%s with nothing changed reported %v", trigger, rep.Reloaded)
			}
		}
		if r := send(); !r.OK {
			t.Fatalf("after %s: %+v, want the new key in use", trigger, r)
		}
	}
}

// The watcher and the manual triggers share one reload step per
// environment (reloadEnv): what one of them loaded, the other does not load
// again, and each sees the other's result.
func TestOneReloadStepForEveryTrigger(t *testing.T) {
	// A watcher that never acts by itself: the test drives its check.
	idle := watchOptions{Debounce: time.Hour, Poll: time.Hour, Settle: time.Hour, Retry: time.Hour}
	h := newHarness(t, harnessOpts{watch: idle})
	sandbox := func() *envSender { return h.d.current().apps["app"].envs["sandbox"] }
	write := func() {
		must(t, h.newSandboxCert().WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	}

	// A manual reload loads the new certificate...
	write()
	rep, err := h.d.Reload(context.Background(), nil)
	must(t, err)
	if len(rep.Reloaded) != 1 || !strings.HasPrefix(rep.Reloaded[0], "app/sandbox: new certificate") {
		t.Fatalf("manual reload reported %v, want the new sandbox certificate", rep.Reloaded)
	}
	loaded := sandbox().cred.cur.Load()
	// ...and the watcher knows those bytes are done with.
	if es := sandbox(); es.watch.contents != contentHash(es.files()) {
		t.Error("a manual reload did not record the files it loaded for the watcher")
	}
	if settling := h.d.checkCredentials(time.Hour); settling || sandbox().cred.cur.Load() != loaded {
		t.Errorf("the watcher acted again on files a manual reload had loaded (settling %v)", settling)
	}

	// The watcher loads the next one, and a manual reload then has nothing to do.
	write()
	if h.d.checkCredentials(time.Hour) {
		t.Fatal("a good new certificate is still settling")
	}
	next := sandbox().cred.cur.Load()
	if next == loaded {
		t.Fatal("the watcher did not load the new certificate")
	}
	rep, err = h.d.Reload(context.Background(), nil)
	must(t, err)
	if len(rep.Reloaded) != 0 || sandbox().cred.cur.Load() != next {
		t.Errorf("manual reload after the watcher's: reported %v, swapped %v", rep.Reloaded, sandbox().cred.cur.Load() != next)
	}

	// A manual reload that fails is reported at once; the next good files,
	// loaded by the watcher, clear the error for both.
	must(t, os.WriteFile(filepath.Join(h.dir, "sb.crt"), []byte("not a certificate"), 0o600))
	if _, err := h.d.Reload(context.Background(), nil); err == nil {
		t.Fatal("manual reload of a broken certificate succeeded")
	}
	if e := envStatus(h.dial(), "sandbox"); e.LastReloadError == "" {
		t.Error("status does not show the failed manual reload")
	}
	write()
	h.d.checkCredentials(time.Hour)
	if e := envStatus(h.dial(), "sandbox"); e.LastReloadError != "" {
		t.Errorf("status still shows %q after the watcher loaded good files", e.LastReloadError)
	}
	if m := h.dial().do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Errorf("send after the reloads: %v", m)
	}
}

// A config reload that changes an app but not its token key (here: the
// number of connections) rebuilds the app's senders but keeps its token
// source: the stand-in sees the same bearer token before and after, and no
// new JWT is minted (a new one within 20 minutes risks 429
// TooManyProviderTokenUpdates).
func TestConfigReloadKeepsTokenOfUnchangedKey(t *testing.T) {
	dir := shortTempDir(t)
	key, p8, err := pki.NewP8Key()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "k.p8"), p8, 0o600))
	srv, err := apnstest.New(apnstest.Options{TokenKeys: tokenKeys("ABCDE12345", key)})
	must(t, err)
	t.Cleanup(srv.Close)
	d, sock := startTokenDaemon(t, dir, srv, Options{})
	cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	send := func() string {
		t.Helper()
		before := srv.Count()
		r, err := cn.Do(context.Background(), map[string]any{"token": "aa", "alert": "x"})
		must(t, err)
		if !r.OK {
			t.Fatalf("send: %+v", r)
		}
		return srv.Requests()[before].Header.Get("authorization")
	}
	first := send()
	oldApp := d.current().apps["tok"]
	cfgPath := filepath.Join(dir, "apnsd.toml")
	data, err := os.ReadFile(cfgPath)
	must(t, err)
	must(t, os.WriteFile(cfgPath, []byte(strings.Replace(string(data), `ca_file = "ca.pem"`, "ca_file = \"ca.pem\"\n  connections = 2", 1)), 0o644))
	rep, err := d.Reload(context.Background(), nil)
	must(t, err)
	if newApp := d.current().apps["tok"]; newApp == oldApp || !strings.Contains(strings.Join(rep.Reloaded, "\n"), `app "tok" changed`) {
		t.Fatalf("the config change did not rebuild the app: %v", rep.Reloaded)
	}
	if second := send(); second != first {
		t.Errorf("a new JWT after a config reload that kept the key:\n  before %.40s…\n  after  %.40s…", first, second)
	}
	if m := d.current().apps["tok"].token.Info().Mints; m != 1 {
		t.Errorf("token minted %d times, want 1", m)
	}
}
