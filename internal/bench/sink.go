package bench

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/pki"
)

// Sink kinds.
const (
	SinkStandin = "standin"
	SinkNghttpd = "nghttpd"
)

// sink is the HTTP/2 server both paths send to.
type sink struct {
	kind string
	url  string
	port int
	desc string

	// standin only
	standin  *apnstest.Server
	answered atomic.Int64 // requests the stand-in's responder saw
	stopGC   chan struct{}

	// nghttpd only
	cmd *exec.Cmd
	log *bytes.Buffer
}

// material is the throwaway PKI of one run, written to dir.
type material struct {
	dir        string
	serverCA   *pki.CA
	clientCA   *pki.CA
	push       *pki.Issued
	pushTLS    tls.Certificate
	caFile     string // server CA, PEM
	certFile   string // push certificate
	keyFile    string // its key
	srvCert    string // server certificate (nghttpd)
	srvKey     string
	htdocs     string // nghttpd document root
	bodyFile   string // the payload, for h2load -d
	roots      *x509.CertPool
	deviceFile string
}

func newMaterial(dir string, payload []byte) (*material, error) {
	m := &material{dir: dir}
	var err error
	if m.serverCA, err = pki.NewCA("apnsbench server CA"); err != nil {
		return nil, err
	}
	if m.clientCA, err = pki.NewCA("apnsbench push certificate CA"); err != nil {
		return nil, err
	}
	if m.push, err = m.clientCA.PushCert(pki.PushCertOptions{Topic: Topic}); err != nil {
		return nil, err
	}
	m.pushTLS = m.push.TLSCertificate()
	m.roots = m.serverCA.Pool()
	m.caFile = filepath.Join(dir, "server-ca.pem")
	m.certFile = filepath.Join(dir, "push-cert.pem")
	m.keyFile = filepath.Join(dir, "push-key.pem")
	if err := os.WriteFile(m.caFile, m.serverCA.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := m.push.WriteFiles(m.certFile, m.keyFile); err != nil {
		return nil, err
	}
	srv, err := m.serverCA.ServerCert()
	if err != nil {
		return nil, err
	}
	m.srvCert = filepath.Join(dir, "server-cert.pem")
	m.srvKey = filepath.Join(dir, "server-key.pem")
	if err := srv.WriteFiles(m.srvCert, m.srvKey); err != nil {
		return nil, err
	}
	// nghttpd answers a POST to a path that names a file with 200 and the
	// file's content: an empty file per device token makes it answer as
	// APNs does (200, empty body).
	m.htdocs = filepath.Join(dir, "htdocs")
	devDir := filepath.Join(m.htdocs, "3", "device")
	if err := os.MkdirAll(devDir, 0o755); err != nil {
		return nil, err
	}
	m.deviceFile = filepath.Join(devDir, Token)
	if err := os.WriteFile(m.deviceFile, nil, 0o644); err != nil {
		return nil, err
	}
	m.bodyFile = filepath.Join(dir, "payload.json")
	if err := os.WriteFile(m.bodyFile, payload, 0o644); err != nil {
		return nil, err
	}
	return m, nil
}

func startStandin(m *material, maxStreams int) (*sink, error) {
	s, err := apnstest.New(apnstest.Options{
		CA:                   m.serverCA,
		ClientCAs:            m.clientCA.Pool(), // client-certificate verification on
		MaxConcurrentStreams: uint32(maxStreams),
	})
	if err != nil {
		return nil, err
	}
	k := &sink{kind: SinkStandin, url: s.URL, standin: s, stopGC: make(chan struct{})}
	k.port, _ = strconv.Atoi(s.Addr()[len("127.0.0.1:"):])
	k.desc = fmt.Sprintf("in-process apnstest stand-in at %s (client certificate required and verified, max streams %d)", s.URL, maxStreams)
	s.SetResponder(func(*apnstest.Request) apnstest.Reply {
		k.answered.Add(1)
		return apnstest.Reply{Status: 200}
	})
	// The stand-in records every request (headers and body) for tests;
	// under a benchmark that is tens of MB of garbage in this process.
	// Clear the record often so it does not inflate the RSS figures.
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-k.stopGC:
				return
			case <-t.C:
				s.Reset()
			}
		}
	}()
	return k, nil
}

// freePort finds a loopback TCP port that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startNghttpd runs nghttpd on a loopback port. verifyClient adds
// --verify-client (nghttpd 1.52 then requires a client certificate but
// does not check its chain).
func startNghttpd(path string, m *material, maxStreams int, verifyClient bool) (*sink, []string, error) {
	if path == "" {
		path = "nghttpd"
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	args := []string{"-a", "127.0.0.1", "-d", m.htdocs, "-m", strconv.Itoa(maxStreams)}
	if verifyClient {
		args = append(args, "--verify-client")
	}
	args = append(args, strconv.Itoa(port), m.srvKey, m.srvCert)
	cmd := exec.Command(path, args...)
	var log bytes.Buffer
	cmd.Stdout = &log
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s: %w", path, err)
	}
	k := &sink{kind: SinkNghttpd, url: fmt.Sprintf("https://127.0.0.1:%d", port), port: port, cmd: cmd, log: &log}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			k.close()
			return nil, nil, fmt.Errorf("nghttpd did not listen on port %d within 5s: %s", port, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	k.desc = fmt.Sprintf("nghttpd (pid %d): %s %s", cmd.Process.Pid, path, joinArgs(args))
	return k, append([]string{path}, args...), nil
}

func joinArgs(a []string) string {
	var b bytes.Buffer
	for i, s := range a {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	return b.String()
}

// pid returns the sink's process id, or 0 when it runs in this process.
func (k *sink) pid() int {
	if k.cmd != nil && k.cmd.Process != nil {
		return k.cmd.Process.Pid
	}
	return 0
}

func (k *sink) close() {
	if k.standin != nil {
		close(k.stopGC)
		k.standin.Close()
	}
	if k.cmd != nil && k.cmd.Process != nil {
		k.cmd.Process.Kill()
		k.cmd.Wait()
	}
}
