package daemon

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/defaults"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/spool"
)

// Daemon is one running apnsd: the socket server, the apps with their APNs
// clients, the queue bound and the counters. It is the one owner of the
// runtime state, and answers every accepted notification exactly once. Make
// it with New, then Start, then Shutdown.
type Daemon struct {
	root   *slog.Logger // as given; components derive theirs from it
	log    *slog.Logger // component=daemon
	srv    *ipc.Server
	access *access // the peer checks and their refusal log

	// state is the current configuration and the apps built from it. It is
	// replaced whole, never changed in place: a config reload stores a new
	// one (holding reloadMu, and mu for writing so that no notification is
	// accepted by a sender being retired); everything else loads it once
	// per use and so sees one consistent pair.
	state atomic.Pointer[state]

	started      time.Time
	unregistered *unregisteredLog // nil when unregistered_file is off
	// metrics is nil without [metrics] listen (metrics.go); set in New.
	metrics *metrics
	// spool keeps accepted wait:false notifications until their outcome is
	// final (spooled.go); nil with state_dir = "". recovered is what Open
	// found, replayed by Start (then nil).
	spool     *spool.Spool
	recovered *spool.Recovery

	listener net.Listener
	// inherited is set when the listener came from outside (systemd socket
	// activation, tests): apnsd must not unlink its socket file.
	inherited bool
	serveErr  chan error

	pending atomic.Int64 // accepted, not yet answered
	retries atomic.Uint64
	sent    atomic.Uint64
	failed  atomic.Uint64
	refused atomic.Uint64

	// mu guards the fields that follow, and the Add side of wg and of each
	// envSender's active: Submit holds it for reading, shutdown and the
	// state swap of a reload for writing.
	// Lock order: reloadMu, then mu, then an envSender's cred.mu.
	mu       sync.RWMutex
	shutting bool
	// lastReload and lastReloadErr describe the last config reload.
	lastReload    time.Time
	lastReloadErr error
	wg            sync.WaitGroup // one per accepted notification

	// drainCtx is cancelled when the shutdown deadline passes: every
	// notification still waiting is then answered shutting_down.
	drainCtx    context.Context
	drainCancel context.CancelFunc

	// retiring holds the *appState a config reload replaced whose senders
	// still have notifications to settle (see retire).
	retiring sync.Map

	reloadMu sync.Mutex // serialises reloads (every trigger) and the watcher's checks
	stopOnce sync.Once

	watchOpts  watchOptions
	onReload   func(begin bool)
	tokenClock func() time.Time
	// tuneRuntime: Options.TuneRuntime (runtime.go).
	tuneRuntime bool
	stopWatch   chan struct{}
	watchDone   <-chan struct{}
}

// state is one consistent view: a configuration and the apps built from it.
type state struct {
	cfg  *config.Config
	apps map[string]*appState
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
	// TuneRuntime applies the config's gc_percent and gives memory back
	// after busy spells (runtime.go): for the apnsd process itself, not for
	// a program that embeds a Daemon.
	TuneRuntime bool
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
	unregistered, err := openUnregistered(cfg.UnregisteredFile, log.With("component", "daemon"))
	if err != nil {
		for _, st := range apps {
			st.close()
		}
		return nil, err
	}
	sp, rec, err := openSpool(cfg, log.With("component", "spool"))
	if err != nil {
		for _, st := range apps {
			st.close()
		}
		unregistered.close()
		return nil, err
	}
	d := &Daemon{
		root:         log,
		log:          log.With("component", "daemon"),
		started:      time.Now(),
		unregistered: unregistered,
		spool:        sp,
		recovered:    rec,
		listener:     o.Listener,
		inherited:    o.Listener != nil,
		watchOpts:    o.watch,
		onReload:     o.OnReload,
		tokenClock:   o.tokenClock,
		tuneRuntime:  o.TuneRuntime,
	}
	d.state.Store(&state{cfg: cfg, apps: apps})
	if d.tuneRuntime {
		applyRuntime(cfg, d.log)
	}
	if cfg.Metrics.Listen != "" {
		d.metrics = newMetrics(d)
	}
	d.drainCtx, d.drainCancel = context.WithCancel(context.Background())
	ipcLog := log.With("component", "ipc")
	d.access = newAccess(ipcLog)
	maxConns, perUID := connLimits(cfg, ipcLog)
	d.srv = &ipc.Server{
		Backend:        d,
		Version:        defaults.Version,
		MaxLineBytes:   cfg.Socket.MaxLineBytes,
		MaxPending:     cfg.Socket.MaxPendingPerConn,
		MaxConns:       maxConns,
		MaxConnsPerUID: perUID,
		IdleTimeout:    cfg.Socket.IdleTimeout,
		LineTimeout:    cfg.Socket.LineTimeout,
		Authorize:      d.access.peerAuthorizer(cfg.Socket.AllowUIDs, cfg.Socket.AllowGIDs),
		Permit:         d.access.permitter(cfg.Socket.AdminUIDs, cfg.Socket.AdminGIDs),
		Logger:         ipcLog,
	}
	return d, nil
}

// current is the state in use now.
func (d *Daemon) current() *state { return d.state.Load() }

// Start connects to APNs, opens the socket, sends again what the spool kept
// from the previous run, and starts serving. It returns once the socket
// accepts connections.
func (d *Daemon) Start() error {
	st := d.current()
	for _, app := range st.apps {
		app.start()
	}
	if d.listener == nil {
		l, err := ListenUnix(st.cfg.Socket.Path, st.cfg.Socket.Mode, st.cfg.Socket.Group)
		if err != nil {
			d.closeClients()
			if d.spool != nil {
				d.spool.Close()
			}
			return err
		}
		d.listener = l
	}
	if d.metrics != nil {
		if err := d.metrics.serve(st.cfg.Metrics, d.root.With("component", "metrics")); err != nil {
			d.closeClients()
			return err
		}
	}
	d.replay(d.recovered)
	d.recovered = nil
	d.serveErr = make(chan error, 1)
	go func() { d.serveErr <- d.srv.Serve(d.listener) }()
	d.stopWatch = make(chan struct{})
	d.watchDone = d.startWatcher(d.stopWatch, d.watchOpts)
	if d.tuneRuntime {
		go d.releaseWhenQuiet(d.stopWatch)
	}
	d.warnExpiry(time.Now())
	d.log.Info("apnsd ready", "version", defaults.Version, "socket", d.SocketPath(), "apps", len(st.apps))
	return nil
}

// SocketPath is the path of the listening socket.
func (d *Daemon) SocketPath() string {
	if d.listener == nil {
		return d.current().cfg.Socket.Path
	}
	return d.listener.Addr().String()
}

// ShutdownTimeout is how long Shutdown should be given to answer what was
// accepted (shutdown_timeout; it is read at start, not on reload).
func (d *Daemon) ShutdownTimeout() time.Duration { return d.current().cfg.ShutdownTimeout }

// ServeErr delivers an error if the socket server stops on its own.
func (d *Daemon) ServeErr() <-chan error { return d.serveErr }

// Shutdown stops gracefully: it stops accepting connections and
// notifications, waits for accepted notifications to be answered until ctx
// ends (the rest are answered shutting_down), writes every answer owed,
// then closes the APNs connections. It is idempotent and always returns nil
// (there is nothing a caller could do about a failure at this point; each
// is logged).
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.stopOnce.Do(func() {
		d.log.Info("shutting down: draining accepted notifications")
		d.srv.StopAccepting()
		if d.stopWatch != nil {
			close(d.stopWatch)
			<-d.watchDone
		}
		abandoned := d.drain(ctx)
		if abandoned > 0 {
			d.log.Warn("shutdown deadline passed; answered the rest shutting_down (wait:false ones stay in the spool for the next start)", "count", abandoned)
		}
		if d.spool != nil {
			// Runs the durability callbacks still owed (their answers are
			// flushed below); records not done stay for the next start.
			left := d.spool.Stats().PendingRecords
			if err := d.spool.Close(); err != nil {
				d.log.Error("spool closed with an error", "err", err)
			}
			if left > 0 {
				d.log.Info("notifications left in the spool for the next start", "count", left, "state_dir", d.current().cfg.StateDir)
			}
		}
		// Answers are all decided now; give connections a moment to take them.
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.srv.CloseConns(flushCtx)
		d.closeClients()
		d.metrics.close()
		d.unregistered.close()
		if !d.inherited {
			d.listener.Close() // unlinks the socket file if it is still ours
		}
		d.log.Info("apnsd stopped")
	})
	return nil
}

// drain refuses new notifications, then waits for every accepted one to be
// answered. When ctx ends first, the ones still waiting are answered
// shutting_down.
func (d *Daemon) drain(ctx context.Context) (abandoned int64) {
	d.mu.Lock()
	d.shutting = true
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
		abandoned = d.pending.Load()
		d.drainCancel()
		// Every attempt still queued or in flight ends at once (ErrClosed):
		// wait:true ones are answered shutting_down, wait:false ones stay
		// in the spool.
		d.closeClients()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			d.log.Error("notifications still unanswered 5s after the shutdown deadline; exiting anyway", "count", d.pending.Load())
		}
		return abandoned
	}
}

// closeClients closes the connections of the current apps and of those a
// reload is retiring. Client.Close is idempotent.
func (d *Daemon) closeClients() {
	for _, app := range d.current().apps {
		app.close()
	}
	d.retiring.Range(func(k, _ any) bool {
		k.(*appState).close()
		return true
	})
}

// retire closes st's connections once the notifications its senders
// accepted are settled; until then closeClients can still reach it.
func (d *Daemon) retire(st *appState) {
	d.retiring.Store(st, struct{}{})
	go func() {
		for _, es := range st.envs {
			es.active.Wait()
		}
		st.close()
		d.retiring.Delete(st)
	}()
}

// expiryWarnDays: certificates closer to expiry than this are warned about
// at start and daily.
const expiryWarnDays = 30

// warnExpiry logs a warning for each certificate expiring within
// expiryWarnDays. It is called at start and daily by the watcher.
func (d *Daemon) warnExpiry(now time.Time) {
	for _, es := range d.current().senders() {
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
