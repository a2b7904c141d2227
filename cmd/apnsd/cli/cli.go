package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/daemon"
	"github.com/apnsd/apnsd/internal/defaults"
	"github.com/apnsd/apnsd/internal/demo"
)

// Exit codes of apnsd.
const (
	ExitOK     = 0 // clean shutdown, or -check found no problem
	ExitFailed = 1 // could not start, or stopped on an error
	ExitUsage  = 2 // bad flags
	ExitConfig = 3 // the config (or a credential it names) is invalid
)

const usage = `apnsd: a local daemon that sends Apple push notifications (APNs) for the
programs on this host. They write one JSON line per notification to its Unix
socket and read back Apple's verdict.

Usage:
  apnsd [-config FILE]          run the daemon
  apnsd -check [-config FILE]   validate the config and every credential it names, then exit
  apnsd -demo [-socket PATH]    run against a built-in local APNs stand-in with throwaway
                                credentials (no Apple account needed)
  apnsd -version

Flags:
`

// Main runs apnsd with args (without the program name) and returns its
// exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	stop := startProfiles(stderr)
	defer stop()
	return run(args, stdout, stderr, processEnv())
}

// runEnv is what run takes from the process: signals and the sockets
// systemd passed. Tests substitute their own.
type runEnv struct {
	// signals starts delivering SIGTERM, SIGINT and SIGHUP, and returns a
	// function that stops it.
	signals func() (<-chan os.Signal, func())
	// listenFiles returns the sockets passed by socket activation. It is
	// called once.
	listenFiles func() []*os.File
	// statusEvery is how often STATUS= is refreshed without a watchdog.
	statusEvery time.Duration
}

func processEnv() runEnv {
	return runEnv{
		signals: func() (<-chan os.Signal, func()) {
			ch := make(chan os.Signal, 4)
			signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
			return ch, func() { signal.Stop(ch) }
		},
		listenFiles: systemdListenFiles,
		statusEvery: 10 * time.Second,
	}
}

// flags are apnsd's command line options.
type flags struct {
	configPath, socket, logFormat, logLevel string
	check, demo, version                    bool
}

// run is apnsd from flags to exit: each step below either hands the next
// its result or returns the exit code.
func run(args []string, stdout, stderr io.Writer, env runEnv) int {
	f, code, done := parseFlags(args, stderr)
	if done {
		return code
	}
	if f.version {
		fmt.Fprintln(stdout, "apnsd", defaults.Version)
		return ExitOK
	}
	if f.check {
		cfg, cleanup, code := loadConfig(f, stdout, stderr)
		if cfg == nil {
			return code
		}
		defer cleanup()
		return check(cfg, stdout, stderr)
	}
	// Until the config says how to log, log as it would by default (the
	// journal's priorities under systemd) and tell systemd why a start
	// fails.
	fallback, err := daemon.NewLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "apnsd: %v\n", err)
		return ExitUsage
	}
	cfg, cleanup, code := loadConfig(f, stdout, &startErrors{log: fallback, sd: &notifier{log: fallback}})
	if cfg == nil {
		return code
	}
	defer cleanup()
	if f.logFormat != "" {
		cfg.LogFormat = f.logFormat
	}
	if f.logLevel != "" {
		cfg.LogLevel = f.logLevel
	}
	log, err := daemon.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		(&startErrors{log: fallback, sd: &notifier{log: fallback}}).Write([]byte("apnsd: " + err.Error()))
		return ExitConfig
	}
	p := &process{log: log, sd: &notifier{log: log}, env: env}
	if code, ok := p.start(cfg); !ok {
		return code
	}
	defer p.stopSignals()
	settled, stopSettle := context.WithCancel(context.Background())
	defer stopSettle()
	go releaseStartupMemory(settled, p.d.Status, freeOSMemory, startupSettle, startupPoll) // memory.go
	code = p.serve()
	stopSettle()
	p.shutdown()
	return code
}

// parseFlags parses args. done is set when run should return code at once
// (-h, a bad flag, a stray argument).
func parseFlags(args []string, stderr io.Writer) (f flags, code int, done bool) {
	fs := flag.NewFlagSet("apnsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.configPath, "config", defaults.ConfigPath, "config file")
	fs.BoolVar(&f.check, "check", false, "validate the config and credentials, then exit")
	fs.BoolVar(&f.demo, "demo", false, "run against a built-in APNs stand-in with throwaway credentials")
	fs.StringVar(&f.socket, "socket", "", "socket path (overrides the config's socket.path)")
	fs.StringVar(&f.logFormat, "log-format", "", "auto, text, json or journal (overrides the config's log_format)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (overrides the config's log_level)")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, ExitOK, true
		}
		return f, ExitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apnsd: unexpected argument %q (see apnsd -h)\n", fs.Arg(0))
		return f, ExitUsage, true
	}
	return f, ExitOK, false
}

// loadConfig loads the config file, or sets up the demo and loads its. On
// failure cfg is nil and code is the exit code; cleanup (never nil on
// success) stops the demo.
func loadConfig(f flags, stdout, stderr io.Writer) (cfg *config.Config, cleanup func(), code int) {
	if f.demo {
		d, err := demo.New(f.socket)
		if err != nil {
			fmt.Fprintf(stderr, "apnsd: demo: %v\n", err)
			return nil, nil, ExitFailed
		}
		cfg, err := config.Load(d.ConfigPath)
		if err != nil {
			d.Close()
			fmt.Fprintf(stderr, "apnsd: demo: %v\n", err)
			return nil, nil, ExitFailed
		}
		d.WriteInstructions(stdout, cfg.Socket.Path)
		return cfg, d.Close, ExitOK
	}
	cfg, err := config.Load(f.configPath)
	if err != nil {
		fmt.Fprintf(stderr, "apnsd: %v\n", err)
		return nil, nil, ExitConfig
	}
	if f.socket != "" {
		cfg.Socket.Path = f.socket
	}
	return cfg, func() {}, ExitOK
}

// check is apnsd -check: every credential the config names must load.
func check(cfg *config.Config, stdout, stderr io.Writer) int {
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "apnsd: warning: %s\n", w)
	}
	if err := cfg.CheckFiles(time.Now()); err != nil {
		fmt.Fprintf(stderr, "apnsd: %v\n", err)
		return ExitConfig
	}
	fmt.Fprintf(stdout, "%s: OK (%d app(s))\n", cfg.Path, len(cfg.Apps))
	return ExitOK
}

// process is one running apnsd: the daemon, the signals it reacts to and
// its conversation with systemd.
type process struct {
	log *slog.Logger
	sd  *notifier
	env runEnv
	d   *daemon.Daemon

	sigs        <-chan os.Signal
	stopSignals func()
}

// start takes the socket systemd passed (if any), builds the daemon, starts
// catching signals, starts the daemon and tells systemd it is ready. On
// failure, said in the log and to systemd, ok is false and code is the exit
// code.
func (p *process) start(cfg *config.Config) (code int, ok bool) {
	fail := func(code int, err error) (int, bool) {
		p.log.Error("cannot start", "err", err)
		p.sd.status("cannot start: " + err.Error())
		return code, false
	}
	inherited, err := inheritedListener(p.env.listenFiles(), cfg.Socket.Path, p.log)
	if err != nil {
		return fail(ExitFailed, err)
	}
	onReload := func(begin bool) { // RELOADING=1 … READY=1 around every reload (SIGHUP or the reload op)
		if begin {
			p.sd.reloading("reloading config and credentials")
		} else {
			p.sd.ready(statusLine(p.d.Status()))
		}
	}
	p.d, err = daemon.New(cfg, daemon.Options{Logger: p.log, Listener: inherited, OnReload: onReload, TuneRuntime: true})
	if err != nil {
		if inherited != nil {
			inherited.Close() // our copy; the socket unit keeps its own
		}
		return fail(ExitConfig, err)
	}
	// Signals are caught from here on: one arriving during Start is handled
	// once serve runs.
	p.sigs, p.stopSignals = p.env.signals()
	if err := p.d.Start(); err != nil {
		p.stopSignals()
		return fail(ExitFailed, err)
	}
	// Credentials were loaded by New and the socket listens: tell systemd.
	p.sd.ready(statusLine(p.d.Status()))
	return ExitOK, true
}

// serve runs the signal loop until a stop signal or the socket server's
// end, with the systemd supervisor (watchdog, STATUS=) beside it. SIGHUP
// reloads. It returns the exit code.
func (p *process) serve() int {
	// The supervisor pings the watchdog while the main loop and the socket
	// answer, and keeps STATUS= current.
	loopProbes := make(chan chan struct{})
	supCtx, stopSupervisor := context.WithCancel(context.Background())
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		if !p.sd.enabled() {
			return
		}
		sup := &supervisor{
			n:           p.sd,
			log:         p.log.With("component", "systemd"),
			watchdog:    watchdogInterval(p.log),
			statusEvery: p.env.statusEvery,
			healthy:     daemonHealth(p.d, loopProbes),
			status:      func() string { return statusLine(p.d.Status()) },
			connections: func() string { return statusEnvs(p.d.Status()) },
			stateEvery:  time.Second,
		}
		sup.run(supCtx)
	}()
	defer func() {
		stopSupervisor()
		<-supDone
	}()
	for {
		select {
		case ack := <-loopProbes:
			close(ack)
		case sig := <-p.sigs:
			if sig == syscall.SIGHUP {
				p.reload()
				continue
			}
			p.log.Info("signal received", "signal", sig.String())
			return ExitOK
		case err := <-p.d.ServeErr():
			if err != nil {
				p.log.Error("socket server stopped", "err", err)
				return ExitFailed
			}
			return ExitOK
		}
	}
}

// reload is SIGHUP's reload.
func (p *process) reload() {
	p.log.Info("SIGHUP: reloading")
	rep, err := p.d.Reload(context.Background(), nil)
	if err != nil {
		p.log.Error("reload failed", "err", err)
	} else if len(rep.Reloaded) == 0 {
		p.log.Info("reload: nothing changed")
	}
}

// shutdown tells systemd apnsd stops and shuts the daemon down within
// shutdown_timeout; a second stop signal cuts the wait short.
func (p *process) shutdown() {
	q := p.d.Status().Queue
	p.sd.stopping(fmt.Sprintf("stopping: answering %d accepted notification(s)", q.Depth+q.InFlight))
	ctx, cancel := context.WithTimeout(context.Background(), p.d.ShutdownTimeout())
	defer cancel()
	go func() {
		// A second signal means "now".
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-p.sigs:
				if sig != syscall.SIGHUP {
					p.log.Warn("second signal: stopping at once")
					cancel()
					return
				}
			}
		}
	}()
	p.d.Shutdown(ctx)
}

// startErrors takes what loadConfig writes about a failure before the
// daemon's own logger exists ("apnsd: <error>\n") and logs it as the
// daemon would, at error priority, and says it in STATUS= to systemd.
type startErrors struct {
	log *slog.Logger
	sd  *notifier
}

func (w *startErrors) Write(b []byte) (int, error) {
	msg := strings.TrimSpace(strings.TrimPrefix(string(b), "apnsd: "))
	w.log.Error("cannot start", "err", msg)
	if w.sd.enabled() {
		w.sd.status("cannot start: " + msg)
	}
	return len(b), nil
}
