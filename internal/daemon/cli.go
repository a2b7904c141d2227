package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/config"
)

// Exit codes of apnsd.
const (
	ExitOK     = 0 // clean shutdown, or -check found no problem
	ExitFailed = 1 // could not start, or stopped on an error
	ExitUsage  = 2 // bad flags
	ExitConfig = 3 // the config (or a credential it names) is invalid
)

// DefaultConfigPath is where apnsd looks for its config file.
const DefaultConfigPath = "/etc/apnsd/apnsd.toml"

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

func run(args []string, stdout, stderr io.Writer, env runEnv) int {
	fs := flag.NewFlagSet("apnsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", DefaultConfigPath, "config file")
	check := fs.Bool("check", false, "validate the config and credentials, then exit")
	demo := fs.Bool("demo", false, "run against a built-in APNs stand-in with throwaway credentials")
	socket := fs.String("socket", "", "socket path (overrides the config's socket.path)")
	logFormat := fs.String("log-format", "", "auto, text, json or journal (overrides the config's log_format)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides the config's log_level)")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apnsd: unexpected argument %q (see apnsd -h)\n", fs.Arg(0))
		return ExitUsage
	}
	if *version {
		fmt.Fprintln(stdout, "apnsd", Version)
		return ExitOK
	}

	var cfg *config.Config
	var cleanup func()
	if *demo {
		var err error
		cfg, cleanup, err = demoConfig(*socket, stdout)
		if err != nil {
			fmt.Fprintf(stderr, "apnsd: demo: %v\n", err)
			return ExitFailed
		}
		defer cleanup()
	} else {
		c, err := config.Load(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "apnsd: %v\n", err)
			return ExitConfig
		}
		cfg = c
		if *socket != "" {
			cfg.Socket.Path = *socket
		}
	}
	if *check {
		if err := cfg.CheckFiles(time.Now()); err != nil {
			fmt.Fprintf(stderr, "apnsd: %v\n", err)
			return ExitConfig
		}
		fmt.Fprintf(stdout, "%s: OK (%d app(s))\n", cfg.Path, len(cfg.Apps))
		return ExitOK
	}
	if *logFormat != "" {
		cfg.LogFormat = *logFormat
	}
	if *logLevel != "" {
		cfg.LogLevel = *logLevel
	}
	log, err := NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "apnsd: %v\n", err)
		return ExitConfig
	}
	sd := &notifier{log: log}
	inherited, err := inheritedListener(env.listenFiles(), cfg.Socket.Path, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		sd.status("cannot start: " + err.Error())
		return ExitFailed
	}
	var d *Daemon
	onReload := func(begin bool) { // RELOADING=1 … READY=1 around every reload (SIGHUP or the reload op)
		if begin {
			sd.reloading("reloading config and credentials")
		} else {
			sd.ready(statusLine(d.Status()))
		}
	}
	d, err = New(cfg, Options{Logger: log, Listener: inherited, OnReload: onReload})
	if err != nil {
		if inherited != nil {
			inherited.Close() // our copy; the socket unit keeps its own
		}
		log.Error("cannot start", "err", err)
		fmt.Fprintf(stderr, "apnsd: %v\n", err)
		sd.status("cannot start: " + err.Error())
		return ExitConfig
	}
	// Signals are caught from here on: one arriving during Start is handled
	// once the loop below runs.
	sigs, stopSignals := env.signals()
	defer stopSignals()
	if err := d.Start(); err != nil {
		log.Error("cannot start", "err", err)
		sd.status("cannot start: " + err.Error())
		return ExitFailed
	}
	// Credentials were loaded by New and the socket listens: tell systemd.
	sd.ready(statusLine(d.Status()))

	// The supervisor pings the watchdog while the main loop and the socket
	// answer, and keeps STATUS= current.
	loopProbes := make(chan chan struct{})
	supCtx, stopSupervisor := context.WithCancel(context.Background())
	supDone := make(chan struct{})
	go func() {
		defer close(supDone)
		if !sd.enabled() {
			return
		}
		sup := &supervisor{
			n:           sd,
			log:         log.With("component", "systemd"),
			watchdog:    watchdogInterval(log),
			statusEvery: env.statusEvery,
			healthy:     daemonHealth(d, loopProbes),
			status:      func() string { return statusLine(d.Status()) },
		}
		sup.run(supCtx)
	}()

	code := ExitOK
loop:
	for {
		select {
		case ack := <-loopProbes:
			close(ack)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				log.Info("SIGHUP: reloading")
				rep, err := d.Reload(context.Background())
				if err != nil {
					log.Error("reload failed", "err", err)
				} else if len(rep.Reloaded) == 0 {
					log.Info("reload: nothing changed")
				}
				continue
			}
			log.Info("signal received", "signal", sig.String())
			break loop
		case err := <-d.ServeErr():
			if err != nil {
				log.Error("socket server stopped", "err", err)
				code = ExitFailed
			}
			break loop
		}
	}
	stopSupervisor()
	<-supDone
	q := d.Status().Queue
	sd.stopping(fmt.Sprintf("stopping: answering %d accepted notification(s)", q.Depth+q.InFlight))
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	go func() {
		// A second signal means "now".
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig != syscall.SIGHUP {
					log.Warn("second signal: stopping at once")
					cancel()
					return
				}
			}
		}
	}()
	d.Shutdown(ctx)
	return code
}
