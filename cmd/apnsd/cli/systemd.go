package cli

// This file is apnsd's side of systemd: readiness and state notifications
// (sd_notify), the watchdog, and socket activation. Everything here is a
// no-op when apnsd does not run under systemd (no NOTIFY_SOCKET, no
// LISTEN_FDS), so the same binary works standalone.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/apnsd/apnsd/internal/daemon"
	"github.com/apnsd/apnsd/internal/ipc"
)

// SocketName is the name apnsd looks for among the sockets systemd passes
// (LISTEN_FDNAMES). systemd names a socket after its unit unless the unit
// sets FileDescriptorName=.
const SocketName = "apnsd.socket"

// systemdListenFiles returns the sockets systemd passed (LISTEN_FDS) and
// clears the LISTEN_* variables, so it finds them only on its first call.
func systemdListenFiles() []*os.File { return activation.Files(true) }

// inheritedListener picks apnsd's listener among the files systemd passed:
// the one named SocketName, or else the only one. It returns nil, nil when
// files is empty (apnsd then creates its own socket). It is an error to
// pass several sockets of which none or more than one is named SocketName,
// or a socket that is not a listening Unix stream socket: serving the wrong
// socket, or a TCP one, would be worse than not starting. The files are
// closed; the listener holds its own descriptor and never unlinks the
// socket file (it belongs to whoever created it: the socket unit).
// configured is the config's socket.path; when it differs from the
// inherited socket's path, apnsd logs which one it uses.
func inheritedListener(files []*os.File, configured string, log *slog.Logger) (net.Listener, error) {
	if len(files) == 0 {
		return nil, nil
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var named []*os.File
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
		if f.Name() == SocketName {
			named = append(named, f)
		}
	}
	var pick *os.File
	switch {
	case len(named) == 1:
		pick = named[0]
	case len(named) > 1:
		return nil, fmt.Errorf("socket activation: %d sockets are named %s; want exactly one", len(named), SocketName)
	case len(files) == 1:
		pick = files[0]
	default:
		return nil, fmt.Errorf("socket activation: got %d sockets (%s) and none is named %s; pass one socket, or name apnsd's with FileDescriptorName=%s",
			len(files), strings.Join(names, ", "), SocketName, SocketName)
	}
	l, err := net.FileListener(pick)
	if err != nil {
		return nil, fmt.Errorf("socket activation: inherited socket %s (fd %d) is not a listening stream socket: %w", pick.Name(), pick.Fd(), err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok || l.Addr().Network() != "unix" {
		l.Close()
		return nil, fmt.Errorf("socket activation: inherited socket %s is %s %s; apnsd only serves a Unix stream socket (ListenStream=/run/apnsd/apnsd.sock)",
			pick.Name(), l.Addr().Network(), l.Addr())
	}
	if err := checkListening(ul); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket activation: inherited socket %s: %w", pick.Name(), err)
	}
	ul.SetUnlinkOnClose(false)
	path := ul.Addr().String()
	if len(files) > 1 {
		log.Warn("socket activation: ignoring the other sockets systemd passed", "using", pick.Name(), "passed", strings.Join(names, ", "))
	}
	if configured != "" && configured != path {
		log.Info("socket activation: using the socket systemd passed; the configured socket.path is not used (nor socket.mode and socket.group: the socket unit sets those)",
			"socket", path, "configured_path", configured)
	} else {
		log.Info("socket activation: using the socket systemd passed", "socket", path)
	}
	return ul, nil
}

// checkListening returns an error unless l's socket listens: systemd passes
// connected sockets instead when the socket unit says Accept=yes.
func checkListening(l *net.UnixListener) error {
	rc, err := l.SyscallConn()
	if err != nil {
		return err
	}
	var accepting int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		accepting, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("checking that it listens: %w", serr)
	}
	if accepting == 0 {
		return errors.New("it is not a listening socket (the socket unit must have Accept=no)")
	}
	return nil
}

// notifier sends sd_notify messages to the service manager (NOTIFY_SOCKET).
// Without NOTIFY_SOCKET every method does nothing. It is safe to call
// concurrently; each message is one datagram.
type notifier struct {
	log    *slog.Logger
	warned sync.Once
}

// enabled reports whether a service manager listens (NOTIFY_SOCKET is set).
func (n *notifier) enabled() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// send sends the assignments (such as "READY=1") as one message. A failure
// is logged once: systemd would then time the start out or restart apnsd
// for a missing watchdog ping, so it must be visible, but not on every tick.
func (n *notifier) send(assignments ...string) {
	if _, err := sddaemon.SdNotify(false, strings.Join(assignments, "\n")); err != nil {
		n.warned.Do(func() {
			n.log.Warn("cannot notify systemd (NOTIFY_SOCKET)", "err", err)
		})
	}
}

// ready says apnsd serves: the socket listens and credentials are loaded.
// It also ends a reload.
func (n *notifier) ready(status string) {
	n.send(sddaemon.SdNotifyReady, statusAssignment(status))
}

// reloading says a reload starts; ready ends it. MONOTONIC_USEC lets
// systemd (Type=notify-reload) match it to the SIGHUP it sent.
func (n *notifier) reloading(status string) {
	msg := []string{sddaemon.SdNotifyReloading}
	if m := strings.TrimSpace(sddaemon.SdNotifyMonotonicUsec()); m != "" {
		msg = append(msg, m)
	}
	n.send(append(msg, statusAssignment(status))...)
}

// stopping says apnsd is shutting down.
func (n *notifier) stopping(status string) {
	n.send(sddaemon.SdNotifyStopping, statusAssignment(status))
}

// status updates the one-line state shown by systemctl status.
func (n *notifier) status(status string) { n.send(statusAssignment(status)) }

// statusAssignment is STATUS=s, on one line.
func statusAssignment(s string) string {
	return "STATUS=" + strings.Join(strings.Fields(s), " ")
}

// maxStatusEnvs bounds how many app environments the STATUS line lists.
const maxStatusEnvs = 6

// statusLine renders rep as the one line systemctl status shows, e.g.
// "shop/production up 2/2, shop/sandbox down 0/1; sent 12, failed 1,
// refused 0; queue 0/10000".
func statusLine(rep *ipc.StatusReport) string {
	q := rep.Queue
	return fmt.Sprintf("%s; sent %d, failed %d, refused %d; queue %d/%d",
		statusEnvs(rep), q.Sent, q.Failed, q.Refused, q.Depth+q.InFlight, q.Capacity)
}

// statusEnvs is the connection part of statusLine: it changes when a
// connection comes up or goes down, and not with the counters.
func statusEnvs(rep *ipc.StatusReport) string {
	var envs []string
	total := 0
	for _, a := range rep.Apps {
		for _, e := range a.Envs {
			total++
			if len(envs) == maxStatusEnvs {
				continue
			}
			s := fmt.Sprintf("%s/%s %s %d/%d", a.Name, e.Env, e.State, e.Connections, e.Target)
			if e.LastReloadError != "" {
				s += " (reload failed)"
			}
			envs = append(envs, s)
		}
	}
	if total > len(envs) {
		envs = append(envs, fmt.Sprintf("+%d more", total-len(envs)))
	}
	if len(envs) == 0 {
		envs = append(envs, "no app configured")
	}
	return strings.Join(envs, ", ")
}

// supervisor runs beside the main loop while the daemon serves. It pings the
// systemd watchdog every half WatchdogSec, but only while healthy says the
// daemon works, so that a hung apnsd is restarted; and it keeps STATUS=
// current.
type supervisor struct {
	n   *notifier
	log *slog.Logger
	// watchdog is WatchdogSec (WATCHDOG_USEC); 0 disables the pings.
	watchdog time.Duration
	// statusEvery is how often STATUS= is refreshed when there is no
	// watchdog tick to piggyback on.
	statusEvery time.Duration
	// healthy returns nil when the daemon works. It must return by ctx's
	// deadline.
	healthy func(ctx context.Context) error
	// status is the current STATUS= line.
	status func() string
	// connections, polled every stateEvery, is the connection part of the
	// STATUS= line: when it changes, STATUS= is sent at once (so a
	// connection coming up shows within about a second, not at the next
	// refresh), at most once per stateEvery.
	connections func() string
	stateEvery  time.Duration
}

// maxProbe bounds one health check.
const maxProbe = 5 * time.Second

// run pings and refreshes until ctx ends.
func (s *supervisor) run(ctx context.Context) {
	every := s.statusEvery
	if s.watchdog > 0 {
		every = s.watchdog / 2
	}
	if every <= 0 {
		return
	}
	// A probe must end before the next tick.
	probe := min(every*4/5, maxProbe)
	t := time.NewTicker(every)
	defer t.Stop()
	var stateTick <-chan time.Time
	lastConns := ""
	if s.connections != nil && s.stateEvery > 0 {
		st := time.NewTicker(s.stateEvery)
		defer st.Stop()
		stateTick = st.C
		lastConns = s.connections()
	}
	last := ""
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-stateTick:
			if c := s.connections(); c != lastConns {
				lastConns = c
				if st := s.status(); st != last {
					s.n.send(statusAssignment(st))
					last = st
				}
			}
			continue
		case <-t.C:
		}
		var msg []string
		if s.watchdog > 0 {
			pctx, cancel := context.WithTimeout(ctx, probe)
			err := s.healthy(pctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			switch {
			case err != nil:
				s.log.Error("watchdog: apnsd is not healthy; not pinging systemd, which restarts apnsd if this lasts WatchdogSec", "err", err, "watchdog_sec", s.watchdog)
				failing = true
			case failing:
				s.log.Info("watchdog: apnsd is healthy again")
				failing = false
				fallthrough
			default:
				msg = append(msg, sddaemon.SdNotifyWatchdog)
			}
		}
		if st := s.status(); st != last {
			msg = append(msg, statusAssignment(st))
			last = st
		}
		if len(msg) > 0 {
			s.n.send(msg...)
		}
	}
}

// probeSocket connects to the daemon's socket at path and sends a ping. The
// answer proves that the accept loop and a connection's reader and writer
// run; a refusal (socket.allow_uids without apnsd's own uid) at least proves
// the accept loop, and counts too. It says nothing of APNs: an APNs
// outage must not get apnsd restarted.
func probeSocket(ctx context.Context, path string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(`{"id":"watchdog","op":"ping"}` + "\n")); err != nil {
		return fmt.Errorf("socket %s: writing ping: %w", path, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("socket %s: no answer to ping: %w", path, err)
	}
	// The ping's answer echoes the id; a refusal (allow_uids) comes before
	// the request is read and has none, but is an answer all the same.
	var r struct {
		ID    string `json:"id"`
		OK    *bool  `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(line, &r); err != nil || r.OK == nil || r.ID != "watchdog" && r.Error == "" {
		return fmt.Errorf("socket %s: unexpected answer to ping: %.200q", path, line)
	}
	return nil
}

// errLoopStuck is returned by loopProbe when the main loop does not answer.
var errLoopStuck = errors.New("main loop (signals, reloads) does not respond")

// loopProbe asks the main loop, through ch, to show it is alive.
func loopProbe(ctx context.Context, ch chan<- chan struct{}) error {
	ack := make(chan struct{})
	select {
	case ch <- ack:
	case <-ctx.Done():
		return errLoopStuck
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return errLoopStuck
	}
}

// daemonHealth is the watchdog's health check for d: the main loop answers
// through loop, and the socket answers a ping.
func daemonHealth(d *daemon.Daemon, loop chan<- chan struct{}) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := loopProbe(ctx, loop); err != nil {
			return err
		}
		return probeSocket(ctx, d.SocketPath())
	}
}

// watchdogInterval returns WatchdogSec when systemd asked this process for
// watchdog pings, else 0.
func watchdogInterval(log *slog.Logger) time.Duration {
	wd, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring the systemd watchdog settings", "err", err)
		return 0
	}
	return wd
}
