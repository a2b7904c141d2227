package demo

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/pki"
)

// App and Topic name the app the demo configures.
const (
	App   = "demo"
	Topic = "com.example.demo"
)

// Demo is a self-contained setup for trying apnsd without an Apple account:
// two local APNs stand-ins (sandbox and production, each answering pushes
// and broadcasts) with a channel management stand-in each, as Apple splits
// them, throwaway credentials for each environment, and a config file
// pointing at them, all in a temporary directory.
type Demo struct {
	Dir        string
	ConfigPath string
	Sandbox    *apnstest.Server
	Production *apnstest.Server
	// SandboxManage and ProductionManage are the channel management
	// stand-ins (they share their push stand-in's channels).
	SandboxManage    *apnstest.Server
	ProductionManage *apnstest.Server
}

// New builds the demo setup. socket is the socket path to configure
// ("" = apnsd.sock in the demo directory).
func New(socket string) (*Demo, error) {
	dir, err := os.MkdirTemp("", "apnsd-demo-")
	if err != nil {
		return nil, err
	}
	d := &Demo{Dir: dir}
	if err := d.setup(socket); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Demo) setup(socket string) error {
	// Apple's servers and Apple's push certificates chain to different
	// authorities; the demo mirrors that.
	serverCA, err := pki.NewCA("apnsd demo server CA")
	if err != nil {
		return err
	}
	clientCA, err := pki.NewCA("apnsd demo push certificate CA")
	if err != nil {
		return err
	}
	for _, prod := range []bool{false, true} {
		s, err := apnstest.New(apnstest.Options{CA: serverCA, ClientCAs: clientCA.Pool(), APIs: apnstest.APIPush | apnstest.APIBroadcast})
		if err != nil {
			return err
		}
		s.SetResponder(apnstest.DemoResponder)
		m, err := apnstest.NewManagement(s)
		if err != nil {
			s.Close()
			return err
		}
		if prod {
			d.ProductionManage = m
		} else {
			d.SandboxManage = m
		}
		cert, err := clientCA.PushCert(pki.PushCertOptions{Topic: Topic, Production: prod})
		if err != nil {
			return err
		}
		if prod {
			d.Production = s
			// The combined form: certificate and key in one PEM file.
			err = cert.WriteFiles(filepath.Join(d.Dir, "production.pem"), "")
		} else {
			d.Sandbox = s
			// The form Keychain export + openssl gives: two files.
			err = cert.WriteFiles(filepath.Join(d.Dir, "sandbox-cert.pem"), filepath.Join(d.Dir, "sandbox-key.pem"))
		}
		if err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "stand-in-ca.pem"), serverCA.CertPEM, 0o644); err != nil {
		return err
	}
	if socket == "" {
		socket = filepath.Join(d.Dir, "apnsd.sock")
	}
	d.ConfigPath = filepath.Join(d.Dir, "apnsd.toml")
	conf := fmt.Sprintf(`# Written by apnsd -demo: throwaway credentials and local APNs stand-ins.
request_timeout = "10s"
shutdown_timeout = "5s"
# Accepted "wait":false notifications, until APNs has answered them.
state_dir = %q

[socket]
path = %q
mode = "0600"

[[apps]]
name = %q
topic = %q
default_env = "sandbox"

  [apps.sandbox]
  cert_file = "sandbox-cert.pem"
  key_file = "sandbox-key.pem"
  endpoint = %q
  manage_endpoint = %q
  ca_file = "stand-in-ca.pem"

  [apps.production]
  cert_file = "production.pem"
  endpoint = %q
  manage_endpoint = %q
  ca_file = "stand-in-ca.pem"
`, filepath.Join(d.Dir, "state"), socket, App, Topic, d.Sandbox.URL, d.SandboxManage.URL, d.Production.URL, d.ProductionManage.URL)
	return os.WriteFile(d.ConfigPath, []byte(conf), 0o644)
}

// Close stops the stand-ins and removes the demo directory.
func (d *Demo) Close() {
	if d.Sandbox != nil {
		d.Sandbox.Close()
	}
	if d.Production != nil {
		d.Production.Close()
	}
	for _, m := range []*apnstest.Server{d.SandboxManage, d.ProductionManage} {
		if m != nil {
			m.Close()
		}
	}
	os.RemoveAll(d.Dir)
}

// WriteInstructions prints how to use the demo running on socket.
func (d *Demo) WriteInstructions(out io.Writer, sock string) {
	fmt.Fprintf(out, `apnsd demo: two local APNs stand-ins with throwaway credentials (no Apple account used)
  sandbox stand-in:    %s (channel management: %s)
  production stand-in: %s (channel management: %s)
  config:              %s
  socket:              %s

Try, from another terminal in this repository:
  go run ./cmd/apnsctl -socket %s send -token a1b2c3d4e5f60718 -alert 'Hello from apnsd'
  go run ./cmd/apnsctl -socket %s send -env production -token 0410aabbccdd -alert 'gone?'
  go run ./cmd/apnsctl -socket %s status
Many devices at once (multicast, one token a line):
  printf 'a1b2c3d4\n0410aabb\n0400ccdd\n' | go run ./cmd/apnsctl -socket %s send -tokens-file - -alert 'Hello, all'
Broadcast channels (Live Activities, iOS 18):
  id=$(go run ./cmd/apnsctl -socket %s channel create -storage latest)
  go run ./cmd/apnsctl -socket %s send -channel "$id" -payload '{"aps":{"event":"update","timestamp":'$(date +%%s)',"content-state":{"score":"1-0"}}}'
  go run ./cmd/apnsctl -socket %s channel list
  go run ./cmd/apnsctl -socket %s channel delete -id "$id"
or with socat:
  echo '{"id":1,"token":"<a1b2c3d4 e5f60718>","alert":"hi"}' | socat - UNIX-CONNECT:%s

The stand-ins answer by the token's first 4 hex digits: 0410 → 410 Unregistered,
0400 → 400 BadDeviceToken, 0403 → 403 Forbidden, 0413 → 413, 0429 → 429,
0500 → 500, 0503 → 503; any other token → 200. Ctrl-C stops.

`, d.Sandbox.URL, d.SandboxManage.URL, d.Production.URL, d.ProductionManage.URL, d.ConfigPath, sock, sock, sock, sock, sock, sock, sock, sock, sock, sock)
}
