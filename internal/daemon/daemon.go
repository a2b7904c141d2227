package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// Version is apnsd's version, reported by ping and status.
var Version = "0.1.0"

// Daemon is one running apnsd: the socket server, the backend and its APNs
// clients. Make it with New, then Start, then Shutdown (or use Run).
type Daemon struct {
	cfg *config.Config
	log *slog.Logger
	be  *backend
	srv *ipc.Server

	listener net.Listener
	// inherited is set when the listener came from outside (systemd socket
	// activation, tests): apnsd must not unlink its socket file.
	inherited bool

	serveErr  chan error
	reloadMu  sync.Mutex // serialises reloads
	stopOnce  sync.Once
	stopErr   error
}

// Options are the parts of a daemon that do not come from the config file.
type Options struct {
	Logger *slog.Logger
	// Listener, if set, is used instead of creating cfg.Socket.Path (socket
	// activation, tests). It is not unlinked on exit.
	Listener net.Listener
	// Now is the clock for certificate checks (default time.Now).
	Now func() time.Time
}

// New loads every credential and prepares the APNs clients. It opens no
// connection and no socket yet.
func New(cfg *config.Config, o Options) (*Daemon, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	apps, err := buildApps(cfg, log, now())
	if err != nil {
		return nil, err
	}
	be := newBackend(cfg, log.With("component", "daemon"))
	be.apps.Store(&apps)
	d := &Daemon{cfg: cfg, log: log, be: be, listener: o.Listener, inherited: o.Listener != nil}
	be.reload = func(ctx context.Context) (*ipc.ReloadReport, error) { return d.Reload(ctx) }
	d.srv = &ipc.Server{
		Backend:      be,
		Version:      Version,
		MaxLineBytes: cfg.Socket.MaxLineBytes,
		MaxPending:   cfg.Socket.MaxPendingPerConn,
		Logger:       log.With("component", "ipc"),
	}
	return d, nil
}

// Start connects to APNs, opens the socket and starts serving. It returns
// once the socket accepts connections.
func (d *Daemon) Start() error {
	for _, app := range d.be.appMap() {
		for _, es := range app.envs {
			es.client.Start()
		}
	}
	if d.listener == nil {
		l, err := ListenUnix(d.cfg.Socket.Path, d.cfg.Socket.Mode, d.cfg.Socket.Group)
		if err != nil {
			d.closeClients()
			return err
		}
		d.listener = l
	}
	d.be.socket = d.SocketPath()
	d.serveErr = make(chan error, 1)
	go func() { d.serveErr <- d.srv.Serve(d.listener) }()
	d.log.Info("apnsd ready", "version", Version, "socket", d.SocketPath(), "apps", len(d.be.appMap()))
	return nil
}

// SocketPath is the path of the listening socket.
func (d *Daemon) SocketPath() string {
	if d.listener == nil {
		return d.cfg.Socket.Path
	}
	return d.listener.Addr().String()
}

// Status reports the daemon's state, as the status op does.
func (d *Daemon) Status() *ipc.StatusReport { return d.be.Status() }

// ServeErr delivers an error if the socket server stops on its own.
func (d *Daemon) ServeErr() <-chan error { return d.serveErr }

// Reload re-reads credentials. It is safe to call concurrently; reloads run
// one at a time.
func (d *Daemon) Reload(ctx context.Context) (*ipc.ReloadReport, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	rep := d.be.reloadCredentials(time.Now())
	if len(rep.Errors) > 0 {
		return rep, ipc.Errorf(ipc.CodeReloadFailed, false, "%d credential(s) failed to reload; the previous ones stay in use: %s", len(rep.Errors), rep.Errors[0])
	}
	return rep, nil
}

// Shutdown stops gracefully: it stops accepting connections and
// notifications, waits for accepted notifications to be answered until ctx
// ends (the rest are answered shutting_down), writes every answer owed,
// then closes the APNs connections. It is idempotent.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.stopOnce.Do(func() {
		d.log.Info("shutting down: draining accepted notifications")
		d.srv.StopAccepting()
		abandoned := d.be.drain(ctx)
		if abandoned > 0 {
			d.log.Warn("shutdown deadline passed; answered the rest shutting_down", "count", abandoned)
		}
		// Answers are all decided now; give connections a moment to take them.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.srv.CloseConns(flushCtx)
		d.closeClients()
		if !d.inherited {
			if l, ok := d.listener.(*net.UnixListener); ok {
				l.Close() // unlinks the socket file
			}
		}
		d.log.Info("apnsd stopped")
	})
	return d.stopErr
}

func (d *Daemon) closeClients() {
	for _, app := range d.be.appMap() {
		for _, es := range app.envs {
			es.client.Close()
		}
	}
}

// ListenUnix creates the socket at path with the given mode and group. It
// refuses when another process answers on path, and removes a stale socket
// file left by a crashed apnsd. The socket is created under a restrictive
// umask, so it is never more open than mode, even for an instant.
func ListenUnix(path string, mode os.FileMode, group string) (*net.UnixListener, error) {
	if path == "" {
		return nil, errors.New("socket path is empty")
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another process (another apnsd?) is already listening there", path)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: a file that is not a socket is in the way", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("socket %s: removing stale socket: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("socket %s: group %q: %w", path, group, err)
		}
		gid = g
	}
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("socket %s: setting group %q: %w", path, group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: setting mode %#o: %w", path, mode, err)
	}
	return l, nil
}

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}
