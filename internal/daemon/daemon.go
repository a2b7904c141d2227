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
	"reflect"
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

	serveErr chan error
	reloadMu sync.Mutex // serialises reloads
	stopOnce sync.Once
	stopErr  error

	watchOpts  watchOptions
	onReload   func(begin bool)
	tokenClock func() time.Time
	stopWatch  chan struct{}
	watchDone  <-chan struct{}
}

// Options are the parts of a daemon that do not come from the config file.
type Options struct {
	Logger *slog.Logger
	// Listener, if set, is used instead of creating cfg.Socket.Path (socket
	// activation, tests). It is not unlinked on exit.
	Listener net.Listener
	// Now is the clock for certificate checks (default time.Now).
	Now func() time.Time
	// OnReload, if set, is called with true when a reload (SIGHUP or the
	// reload op) begins and with false when it has ended (systemd's
	// RELOADING=1 / READY=1).
	OnReload func(begin bool)
	// watch tunes the credential file watcher (tests).
	watch watchOptions
	// tokenClock drives the JWT schedule (tests; nil: time.Now).
	tokenClock func() time.Time
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
	apps, err := buildApps(cfg, log, now(), o.tokenClock)
	if err != nil {
		return nil, err
	}
	be := newBackend(cfg, log.With("component", "daemon"))
	be.apps.Store(&apps)
	if be.unregistered, err = openUnregistered(cfg.UnregisteredFile); err != nil {
		for _, st := range apps {
			st.close()
		}
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, be: be, listener: o.Listener, inherited: o.Listener != nil, watchOpts: o.watch, onReload: o.OnReload, tokenClock: o.tokenClock}
	be.reload = func(ctx context.Context) (*ipc.ReloadReport, error) { return d.Reload(ctx) }
	d.srv = &ipc.Server{
		Backend:      be,
		Version:      Version,
		MaxLineBytes: cfg.Socket.MaxLineBytes,
		MaxPending:   cfg.Socket.MaxPendingPerConn,
		Authorize:    peerAuthorizer(cfg.Socket.AllowUIDs, cfg.Socket.AllowGIDs, log.With("component", "ipc")),
		Logger:       log.With("component", "ipc"),
	}
	return d, nil
}

// Start connects to APNs, opens the socket and starts serving. It returns
// once the socket accepts connections.
func (d *Daemon) Start() error {
	for _, app := range d.be.appMap() {
		app.start()
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
	d.stopWatch = make(chan struct{})
	d.watchDone = d.startWatcher(d.stopWatch, d.watchOpts)
	d.warnExpiry(time.Now())
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

// Reload re-reads the config file (when the daemon has one) and every
// credential. Apps added, removed or changed in the config take effect: new
// ones connect, removed or replaced ones close once the notifications they
// accepted are answered, unchanged ones keep their connections. An invalid
// config, or a new or changed app whose credentials do not load, fails the
// whole reload and the running config stays in use. Socket settings need a
// restart. Reload is safe to call concurrently; reloads run one at a time.
func (d *Daemon) Reload(ctx context.Context) (*ipc.ReloadReport, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.be.mu.RLock()
	shutting := d.be.shutting
	d.be.mu.RUnlock()
	if shutting {
		return nil, ipc.Errorf(ipc.CodeShuttingDown, true, "apnsd is shutting down; not reloading")
	}
	if d.onReload != nil {
		d.onReload(true)
		defer d.onReload(false)
	}
	rep := &ipc.ReloadReport{}
	now := time.Now()
	if d.cfg.Path != "" {
		changes, err := d.reloadConfig(now)
		d.be.mu.Lock()
		d.be.lastReload = now
		d.be.lastReloadErr = err
		d.be.mu.Unlock()
		if err != nil {
			d.log.Error("config reload failed; the running config stays in use", "config", d.cfg.Path, "err", err)
			rep.Errors = append(rep.Errors, err.Error())
			return rep, ipc.Errorf(ipc.CodeReloadFailed, false, "config not reloaded, the running one stays in use: %v", err)
		}
		rep.Reloaded = append(rep.Reloaded, changes...)
	}
	creds := d.be.reloadCredentials(now)
	rep.Reloaded = append(rep.Reloaded, creds.Reloaded...)
	rep.Errors = append(rep.Errors, creds.Errors...)
	if len(rep.Errors) > 0 {
		return rep, ipc.Errorf(ipc.CodeReloadFailed, false, "%d credential(s) failed to reload; the previous ones stay in use: %s", len(rep.Errors), rep.Errors[0])
	}
	return rep, nil
}

// reloadConfig loads the config file again and applies the app changes.
func (d *Daemon) reloadConfig(now time.Time) ([]string, error) {
	cfg, err := config.Load(d.cfg.Path)
	if err != nil {
		return nil, err
	}
	var changes []string
	if !reflect.DeepEqual(cfg.Socket, d.cfg.Socket) {
		changes = append(changes, "socket settings changed; they take effect at the next restart")
		cfg.Socket = d.cfg.Socket
	}
	// These are read once at start; say so rather than ignore them.
	for _, c := range []struct {
		name     string
		old, new any
	}{
		{"shutdown_timeout", d.cfg.ShutdownTimeout, cfg.ShutdownTimeout},
		{"log_level", d.cfg.LogLevel, cfg.LogLevel},
		{"log_format", d.cfg.LogFormat, cfg.LogFormat},
		{"unregistered_file", d.cfg.UnregisteredFile, cfg.UnregisteredFile},
	} {
		if c.old != c.new {
			changes = append(changes, c.name+" changed; it takes effect at the next restart")
		}
	}
	cfg.ShutdownTimeout, cfg.LogLevel, cfg.LogFormat, cfg.UnregisteredFile = d.cfg.ShutdownTimeout, d.cfg.LogLevel, d.cfg.LogFormat, d.cfg.UnregisteredFile
	old := d.be.appMap()
	next := map[string]*appState{}
	var built []*appState
	for i := range cfg.Apps {
		ac := &cfg.Apps[i]
		if prev := old[ac.Name]; prev != nil && reflect.DeepEqual(*prev.cfg, *ac) {
			next[ac.Name] = prev
			continue
		}
		st, err := buildApp(ac, d.log, now, d.tokenClock)
		if err != nil {
			for _, b := range built {
				b.close()
			}
			return nil, err
		}
		built = append(built, st)
		next[ac.Name] = st
		if old[ac.Name] == nil {
			changes = append(changes, fmt.Sprintf("app %q added", ac.Name))
		} else {
			changes = append(changes, fmt.Sprintf("app %q changed", ac.Name))
		}
	}
	for name := range old {
		if next[name] == nil {
			changes = append(changes, fmt.Sprintf("app %q removed", name))
		}
	}
	for _, st := range built {
		st.start()
	}
	d.be.mu.Lock()
	d.be.apps.Store(&next)
	d.be.requestTimeout.Store(int64(cfg.RequestTimeout))
	d.be.queueCap.Store(int64(cfg.QueueSize))
	d.be.mu.Unlock()
	for name, st := range old {
		if next[name] != st {
			st.retire()
		}
	}
	d.cfg = cfg
	for _, c := range changes {
		d.log.Info("config reloaded: " + c)
	}
	return changes, nil
}

// Shutdown stops gracefully: it stops accepting connections and
// notifications, waits for accepted notifications to be answered until ctx
// ends (the rest are answered shutting_down), writes every answer owed,
// then closes the APNs connections. It is idempotent.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.stopOnce.Do(func() {
		d.log.Info("shutting down: draining accepted notifications")
		d.srv.StopAccepting()
		if d.stopWatch != nil {
			close(d.stopWatch)
			<-d.watchDone
		}
		abandoned := d.be.drain(ctx)
		if abandoned > 0 {
			d.log.Warn("shutdown deadline passed; answered the rest shutting_down", "count", abandoned)
		}
		// Answers are all decided now; give connections a moment to take them.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.srv.CloseConns(flushCtx)
		d.closeClients()
		d.be.unregistered.close()
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
		app.close()
	}
}

// expiryWarnDays: certificates closer to expiry than this are warned about
// at start and daily.
const expiryWarnDays = 30

// warnExpiry logs a warning for each certificate expiring within
// expiryWarnDays. It is called at start and daily by the watcher.
func (d *Daemon) warnExpiry(now time.Time) {
	for _, es := range d.be.senders() {
		cert := es.cred.cur.Load()
		if cert == nil {
			continue
		}
		if left := cert.NotAfter.Sub(now); left < expiryWarnDays*24*time.Hour {
			d.log.Warn("push certificate expires soon; renew it at developer.apple.com and replace the files (apnsd reloads them by itself)",
				"app", es.app.cfg.Name, "env", es.cfg.Name, "not_after", cert.NotAfter.Format(time.RFC3339), "days_left", int(left.Hours()/24), "files", es.files())
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
