package daemon

// The reload matrix (issue 9): every credential form × every trigger × the
// replacement styles of TestHotReloadReplacementStyles, under a concurrent
// send load. One daemon per trigger serves one app per (form, style), so
// the cases of a trigger share a daemon; each app has its own files and its
// own device-token prefix, by which the stand-ins tell its requests apart.
// The daemon must stay up, every send of the load must succeed, and the
// stand-in must see each app's new credential.

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/pki"
	"software.sslmate.com/src/go-pkcs12"
)

// credForm is a credential form: the files it consists of and the config
// lines naming them.
type credForm struct {
	name  string
	token bool
	// files returns the files of generation gen (file name → content).
	files func(m *matrix, a *matrixApp, gen int) map[string][]byte
	// toml names the files; path maps a file name to its configured path.
	toml func(path func(string) string) string
}

// replStyle is a way of replacing files (TestHotReloadReplacementStyles).
type replStyle struct {
	name string
	// path is the configured path of file name, relative to the app's dir.
	path func(name string) string
	// install lays out generation gen's files in dir (gen 0: the first).
	install func(t *testing.T, dir string, files map[string][]byte, gen int)
}

const matrixP12Password = "matrix pass"

var matrixForms = []credForm{
	{name: "pair", files: func(m *matrix, a *matrixApp, gen int) map[string][]byte {
		c := m.newCert(a)
		return map[string][]byte{"c.crt": c.CertPEM, "c.key": c.KeyPEM}
	}, toml: func(p func(string) string) string {
		return fmt.Sprintf("cert_file = %q\n  key_file = %q", p("c.crt"), p("c.key"))
	}},
	{name: "combined", files: func(m *matrix, a *matrixApp, gen int) map[string][]byte {
		c := m.newCert(a)
		return map[string][]byte{"c.pem": append(append([]byte{}, c.KeyPEM...), c.CertPEM...)}
	}, toml: func(p func(string) string) string { return fmt.Sprintf("cert_file = %q", p("c.pem")) }},
	{name: "p12", files: func(m *matrix, a *matrixApp, gen int) map[string][]byte {
		c := m.newCert(a)
		data, err := pkcs12.Modern.Encode(c.Key, c.Cert, nil, matrixP12Password)
		must(m.t, err)
		return map[string][]byte{"c.p12": data}
	}, toml: func(p func(string) string) string {
		return fmt.Sprintf("p12_file = %q\n  p12_password_file = \"p12pass\"", p("c.p12"))
	}},
	{name: "token", token: true, files: func(m *matrix, a *matrixApp, gen int) map[string][]byte {
		key, p8, err := pki.NewP8Key()
		must(m.t, err)
		m.trust(a, key)
		return map[string][]byte{"k.p8": p8}
	}, toml: func(p func(string) string) string { return p("k.p8") }},
}

var matrixStyles = []replStyle{
	{name: "in place", path: func(n string) string { return n }, install: func(t *testing.T, dir string, files map[string][]byte, gen int) {
		// Truncate and write, one file after the other (cert before key:
		// in between the pair does not match and must not be used).
		for _, n := range sortedNames(files) {
			must(t, os.WriteFile(filepath.Join(dir, n), files[n], 0o600))
			if len(files) > 1 {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}},
	{name: "rename", path: func(n string) string { return n }, install: func(t *testing.T, dir string, files map[string][]byte, gen int) {
		for _, n := range sortedNames(files) {
			writeAtomic(t, filepath.Join(dir, n), files[n])
		}
	}},
	{name: "k8s", path: func(n string) string { return "secret/" + n }, install: func(t *testing.T, dir string, files map[string][]byte, gen int) {
		sec := filepath.Join(dir, "secret")
		v := fmt.Sprintf("..v%d", gen)
		must(t, os.MkdirAll(filepath.Join(sec, v), 0o700))
		for n, b := range files {
			must(t, os.WriteFile(filepath.Join(sec, v, n), b, 0o600))
		}
		if gen == 0 {
			must(t, os.Symlink(v, filepath.Join(sec, "..data")))
			for n := range files {
				must(t, os.Symlink("..data/"+n, filepath.Join(sec, n)))
			}
			return
		}
		symlinkAtomic(t, v, filepath.Join(sec, "..data"))
	}},
	{name: "certbot", path: func(n string) string { return "live/" + n }, install: func(t *testing.T, dir string, files map[string][]byte, gen int) {
		must(t, os.MkdirAll(filepath.Join(dir, "archive"), 0o700))
		must(t, os.MkdirAll(filepath.Join(dir, "live"), 0o700))
		for _, n := range sortedNames(files) {
			a := fmt.Sprintf("%s%d", n, gen)
			must(t, os.WriteFile(filepath.Join(dir, "archive", a), files[n], 0o600))
			symlinkAtomic(t, "../archive/"+a, filepath.Join(dir, "live", n))
		}
	}},
	{name: "ln -sfn", path: func(n string) string { return "current/" + n }, install: func(t *testing.T, dir string, files map[string][]byte, gen int) {
		v := fmt.Sprintf("v%d", gen)
		must(t, os.MkdirAll(filepath.Join(dir, v), 0o700))
		for n, b := range files {
			must(t, os.WriteFile(filepath.Join(dir, v, n), b, 0o600))
		}
		symlinkAtomic(t, v, filepath.Join(dir, "current"))
	}},
}

// sortedNames lists the file names, certificates before keys.
func sortedNames(files map[string][]byte) []string {
	var out []string
	for _, n := range []string{"c.crt", "c.key", "c.pem", "c.p12", "k.p8"} {
		if _, ok := files[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// matrix is one trigger's daemon setup: its apps, their files and the
// stand-ins' view of what each app presented last.
type matrix struct {
	t      *testing.T
	h      *harness
	tokSrv *apnstest.Server
	dir    string
	apps   []*matrixApp

	mu      sync.Mutex
	trusted map[string][]*ecdsa.PublicKey // kid → every key ever installed
	last    map[string]string             // token prefix → credential identity last presented
}

type matrixApp struct {
	idx    int
	name   string
	form   credForm
	style  replStyle
	dir    string
	kid    string
	prefix string // device-token prefix, 2 hex digits
	want   string // identity of the credential the stand-in must see
}

// keyIdentity names a token key by its public half.
func keyIdentity(k *ecdsa.PublicKey) string {
	b, err := k.Bytes()
	if err != nil {
		return "bad key"
	}
	return "key:" + credID(b)
}

func credID(b []byte) string { s := sha256.Sum256(b); return fmt.Sprintf("%x", s[:8]) }

func (m *matrix) newCert(a *matrixApp) *pki.Issued {
	c, err := m.h.sandboxCA.PushCert(pki.PushCertOptions{Topic: "com.example.app"})
	must(m.t, err)
	a.want = credID(c.Cert.Raw)
	return c
}

func (m *matrix) trust(a *matrixApp, key *ecdsa.PrivateKey) {
	m.mu.Lock()
	m.trusted[a.kid] = append(m.trusted[a.kid], &key.PublicKey)
	m.mu.Unlock()
	a.want = keyIdentity(&key.PublicKey)
}

// verify accepts a JWT signed with any key ever installed under its kid
// (a rotation must not fail sends signed with the old key still in flight).
func (m *matrix) verify(jwt string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	const reason = "InvalidProviderToken"
	for kid, keys := range m.trusted {
		for _, k := range keys {
			if apnstest.ES256Verifier(map[string]*ecdsa.PublicKey{kid: k})(jwt) == "" {
				return ""
			}
		}
	}
	return reason
}

// identity says which credential a request presented: its certificate, or
// the key that verifies its token.
func (m *matrix) identity(r *apnstest.Request) string {
	if r.ClientCert != nil {
		return credID(r.ClientCert.Raw)
	}
	jwt := strings.TrimPrefix(r.Header.Get("authorization"), "bearer ")
	m.mu.Lock()
	defer m.mu.Unlock()
	for kid, keys := range m.trusted {
		for _, k := range keys {
			if apnstest.ES256Verifier(map[string]*ecdsa.PublicKey{kid: k})(jwt) == "" {
				return keyIdentity(k)
			}
		}
	}
	return "unknown"
}

func (m *matrix) record(r *apnstest.Request) apnstest.Reply {
	id := m.identity(r)
	m.mu.Lock()
	m.last[r.DeviceToken[:2]] = id
	m.mu.Unlock()
	return apnstest.Reply{}
}

// newMatrix lays out generation 0 of every (form, style) app and writes a
// config for them; its path is returned.
func newMatrix(t *testing.T, name string, h *harness, tokSrv *apnstest.Server) (*matrix, string) {
	m := &matrix{t: t, h: h, tokSrv: tokSrv, dir: filepath.Join(h.dir, name), trusted: map[string][]*ecdsa.PublicKey{}, last: map[string]string{}}
	must(t, os.MkdirAll(m.dir, 0o700))
	must(t, os.WriteFile(filepath.Join(m.dir, "p12pass"), []byte(matrixP12Password+"\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(m.dir, "tokca.pem"), tokSrv.CACertPEM(), 0o644))
	for _, f := range matrixForms {
		for _, st := range matrixStyles {
			a := &matrixApp{idx: len(m.apps), form: f, style: st}
			a.name = fmt.Sprintf("%s-%s", f.name, strings.ReplaceAll(strings.ReplaceAll(st.name, " ", ""), "-", ""))
			a.dir = filepath.Join(m.dir, a.name)
			a.kid = fmt.Sprintf("KID%07d", a.idx)
			a.prefix = fmt.Sprintf("%02x", 0x10+a.idx)
			must(t, os.MkdirAll(a.dir, 0o700))
			st.install(t, a.dir, f.files(m, a, 0), 0)
			m.apps = append(m.apps, a)
		}
	}
	path := filepath.Join(m.dir, "apnsd.toml")
	m.writeConfig(path, func(a *matrixApp, n string) string { return filepath.Join(a.name, a.style.path(n)) })
	return m, path
}

// writeConfig writes the config of m's apps; file names the configured
// path of an app's file n.
func (m *matrix) writeConfig(path string, file func(a *matrixApp, n string) string) {
	var apps strings.Builder
	for _, a := range m.apps {
		p := func(n string) string { return file(a, n) }
		if a.form.token {
			fmt.Fprintf(&apps, `
[[apps]]
name = %q
topic = "com.example.tok"
  [apps.token]
  key_file = %q
  key_id = %q
  team_id = "TEAM123456"
  [apps.sandbox]
  endpoint = %q
  ca_file = "tokca.pem"
`, a.name, a.form.toml(p), a.kid, m.tokSrv.URL)
			continue
		}
		fmt.Fprintf(&apps, `
[[apps]]
name = %q
topic = "com.example.app"
  [apps.sandbox]
  %s
  endpoint = %q
  ca_file = "../ca.pem"
`, a.name, a.form.toml(p), m.h.sandbox.URL)
	}
	cfg := fmt.Sprintf("state_dir = %q\nrequest_timeout = \"20s\"\n[socket]\npath = %q\n%s",
		filepath.Join(m.dir, "state"), filepath.Join(m.dir, "s.sock"), apps.String())
	must(m.t, os.WriteFile(path, []byte(cfg), 0o644))
}

// swap installs the next generation of a's credential.
func (m *matrix) swap(a *matrixApp, gen int) {
	a.style.install(m.t, a.dir, a.form.files(m, a, gen), gen)
}

// load sends to every app round robin on two connections until stop, and
// counts failures (every send must succeed).
func (m *matrix) load(sock string, stop <-chan struct{}) (wait func() (ok, failed int64)) {
	var okN, bad atomic.Int64
	var wg sync.WaitGroup
	for ci := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
			if err != nil {
				m.t.Errorf("load: %v", err)
				return
			}
			defer cn.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := m.apps[(i+ci)%len(m.apps)]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r, err := cn.Do(ctx, map[string]any{"app": a.name, "token": fmt.Sprintf("%s%06x", a.prefix, i), "alert": "x"})
				cancel()
				if err != nil {
					m.t.Errorf("load: %s: %v", a.name, err)
					bad.Add(1)
					return
				}
				if !r.OK {
					m.t.Errorf("load: %s: %+v", a.name, r)
					bad.Add(1)
					continue
				}
				okN.Add(1)
			}
		}()
	}
	return func() (int64, int64) { wg.Wait(); return okN.Load(), bad.Load() }
}

// waitPresent waits until the stand-ins saw each app's wanted credential.
func (m *matrix) waitPresent(apps []*matrixApp, within time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var missing []string
		m.mu.Lock()
		for _, a := range apps {
			if m.last[a.prefix] != a.want {
				missing = append(missing, a.name)
			}
		}
		m.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("the stand-ins never saw the new credential of %v", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadMatrix(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	var cur *matrix
	var curMu sync.Mutex
	rec := func(r *apnstest.Request) apnstest.Reply {
		curMu.Lock()
		m := cur
		curMu.Unlock()
		return m.record(r)
	}
	tokSrv, err := apnstest.New(apnstest.Options{VerifyToken: func(jwt string) string {
		curMu.Lock()
		m := cur
		curMu.Unlock()
		return m.verify(jwt)
	}})
	must(t, err)
	t.Cleanup(tokSrv.Close)
	h.sandbox.SetResponder(rec)
	tokSrv.SetResponder(rec)
	use := func(m *matrix) { curMu.Lock(); cur = m; curMu.Unlock() }

	// run starts the load on sock, replaces every app's credential with
	// trigger, checks the stand-ins see them all and that no send failed.
	run := func(m *matrix, sock, name string, trigger func(a *matrixApp)) {
		t.Helper()
		stop := make(chan struct{})
		wait := m.load(sock, stop)
		start := time.Now()
		for _, a := range m.apps {
			trigger(a)
		}
		m.waitPresent(m.apps, 30*time.Second)
		close(stop)
		ok, bad := wait()
		if bad != 0 || ok == 0 {
			t.Errorf("%s: %d sends ok, %d failed during the reloads", name, ok, bad)
		}
		t.Logf("%s: %d apps (%d forms × %d styles) reloaded in %s under load, %d sends ok, 0 failed",
			name, len(m.apps), len(matrixForms), len(matrixStyles), time.Since(start).Round(time.Millisecond), ok)
	}

	t.Run("watcher", func(t *testing.T) {
		m, cfgPath := newMatrix(t, "w", h, tokSrv)
		use(m)
		cfg, err := config.Load(cfgPath)
		must(t, err)
		d := startDaemon(t, cfg, Options{watch: fastWatch})
		run(m, d.SocketPath(), "watcher", func(a *matrixApp) { m.swap(a, 1) })
		for _, e := range d.Status().Apps {
			if e.Envs[0].LastReloadError != "" {
				t.Errorf("%s: reload error after good swaps: %s", e.Name, e.Envs[0].LastReloadError)
			}
		}
	})

	t.Run("reload op and config change", func(t *testing.T) {
		m, cfgPath := newMatrix(t, "o", h, tokSrv)
		use(m)
		cfg, err := config.Load(cfgPath)
		must(t, err)
		idle := watchOptions{Debounce: time.Hour, Poll: time.Hour, Settle: time.Hour, Retry: time.Hour}
		d := startDaemon(t, cfg, Options{watch: idle})
		cn, err := (&ipc.Client{Socket: d.SocketPath()}).Connect(context.Background())
		must(t, err)
		defer cn.Close()
		reload := func(a *matrixApp) {
			r, err := cn.Do(context.Background(), map[string]any{"op": "reload"})
			must(t, err)
			if !r.OK || !strings.Contains(strings.Join(r.Reloaded, "\n"), a.name+"/sandbox") {
				t.Fatalf("reload op after replacing %s: %+v", a.name, r)
			}
		}
		run(m, d.SocketPath(), "reload op", func(a *matrixApp) {
			m.swap(a, 1)
			reload(a)
		})
		// A config change: each app's credential moves to new files under
		// a new directory, and the config names them.
		for _, a := range m.apps {
			moved := filepath.Join(m.dir, a.name+"-moved")
			must(t, os.MkdirAll(moved, 0o700))
			for n, b := range a.form.files(m, a, 2) {
				must(t, os.WriteFile(filepath.Join(moved, n), b, 0o600))
			}
		}
		m.writeConfig(cfgPath, func(a *matrixApp, n string) string { return filepath.Join(a.name+"-moved", n) })
		run(m, d.SocketPath(), "config change", func(a *matrixApp) {
			if a.idx != 0 {
				return
			}
			r, err := cn.Do(context.Background(), map[string]any{"op": "reload"})
			must(t, err)
			if !r.OK || strings.Count(strings.Join(r.Reloaded, "\n"), "changed") != len(m.apps) {
				t.Fatalf("config reload: %+v", r)
			}
		})
	})

	t.Run("SIGHUP to apnsd", func(t *testing.T) {
		bin := buildApnsd(t)
		m, cfgPath := newMatrix(t, "s", h, tokSrv)
		use(m)
		p := startProc(t, bin, nil, "-config", cfgPath, "-log-format", "text", "-log-level", "info")
		sock := filepath.Join(m.dir, "s.sock")
		p.waitReady(sock)
		run(m, sock, "SIGHUP", func(a *matrixApp) {
			// SIGHUP goes at once, well within the watcher's 300ms
			// debounce, so the reload the log shows is SIGHUP's
			// (trigger=reload). On a starved machine the watcher can still
			// win that race; then the next generation goes in and SIGHUP is
			// tried again (a few times), so a SIGHUP reload is always seen.
			re := regexp.MustCompile(`credential reloaded.*app=` + regexp.QuoteMeta(a.name) + ` .*trigger=("[^"]*"|\w+)`)
			seen := len(re.FindAllStringSubmatch(p.log.String(), -1))
			for gen := 1; ; gen++ {
				m.swap(a, gen)
				must(t, p.cmd.Process.Signal(syscall.SIGHUP))
				var trig string
				for deadline := time.Now().Add(10 * time.Second); trig == ""; time.Sleep(10 * time.Millisecond) {
					if all := re.FindAllStringSubmatch(p.log.String(), -1); len(all) > seen {
						trig = strings.Trim(all[seen][1], `"`)
						seen = len(all)
					} else if time.Now().After(deadline) {
						t.Fatalf("%s: SIGHUP did not reload it\n%s", a.name, tail(p.log.String(), 3000))
					}
				}
				if trig == "reload" {
					return
				}
				if gen == 4 {
					t.Fatalf("%s: reloaded by %q %d times, never by SIGHUP", a.name, trig, gen)
				}
				t.Logf("%s: the watcher (%q) beat SIGHUP to generation %d; again", a.name, trig, gen)
			}
		})
		logs := p.log.String()
		select {
		case <-p.exited:
			t.Fatalf("apnsd exited: %v\n%s", p.waitErr, tail(logs, 3000))
		default:
		}
		must(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.wait(20 * time.Second)
		if p.waitErr != nil {
			t.Errorf("apnsd exited with %v", p.waitErr)
		}
	})
}
