package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/daemon"
	"github.com/apnsd/apnsd/internal/demo"
	"github.com/apnsd/apnsd/internal/ipc"
)

// sdTempDir is a short temporary directory: Unix socket paths are limited
// to 108 bytes, and t.TempDir can be longer.
func sdTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "apnsd-sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// notifySocket plays the service manager: it receives sd_notify datagrams.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	n := &notifySocket{path: path, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n
}

// next returns the next message, failing after timeout.
func (n *notifySocket) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case m, ok := <-n.msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no sd_notify message within %v", timeout)
	}
	return ""
}

// waitFor returns the first message that has every assignment in want,
// skipping the others (watchdog pings, status refreshes).
func (n *notifySocket) waitFor(t *testing.T, timeout time.Duration, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var seen []string
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no sd_notify message with %q within %v; got %q", want, timeout, seen)
		}
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed; got %q", seen)
			}
			if hasAll(m, want) {
				return m
			}
			seen = append(seen, m)
		case <-time.After(left):
		}
	}
}

func hasAll(msg string, want []string) bool {
	lines := strings.Split(msg, "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			if l == w || strings.HasSuffix(w, "=") && strings.HasPrefix(l, w) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// assignment returns the value of key in msg.
func assignment(msg, key string) (string, bool) {
	for _, l := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// syncBuffer is a bytes.Buffer for concurrent log writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mainRun is run (apnsd's Main) in a goroutine, with a signal channel the
// test controls.
type mainRun struct {
	sigs   chan os.Signal
	done   chan int
	stderr *syncBuffer
}

func startRun(t *testing.T, args []string, files func() []*os.File) *mainRun {
	t.Helper()
	if files == nil {
		files = func() []*os.File { return nil }
	}
	r := &mainRun{sigs: make(chan os.Signal, 4), done: make(chan int, 1), stderr: &syncBuffer{}}
	env := runEnv{
		signals:     func() (<-chan os.Signal, func()) { return r.sigs, func() {} },
		listenFiles: files,
		statusEvery: 100 * time.Millisecond,
	}
	go func() { r.done <- run(args, io.Discard, r.stderr, env) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.sigs <- syscall.SIGTERM
			select {
			case <-r.done:
			case <-time.After(15 * time.Second):
				t.Error("apnsd did not stop")
			}
		}
	})
	return r
}

func (r *mainRun) stop(t *testing.T) int {
	t.Helper()
	r.sigs <- syscall.SIGTERM
	select {
	case code := <-r.done:
		r.done <- code // for Cleanup
		return code
	case <-time.After(15 * time.Second):
		t.Fatalf("apnsd did not stop; log:\n%s", r.stderr)
	}
	return 0
}

func ping(t *testing.T, sock string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"op": "ping"})
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if !r.OK {
		t.Fatalf("ping: %+v", r)
	}
}

// statusRE is the STATUS= line of the demo config.
var statusRE = regexp.MustCompile(`^demo/sandbox (up|degraded|down) \d/1, demo/production (up|degraded|down) \d/1; sent (\d+), failed (\d+), refused (\d+); queue \d+/10000$`)

func TestNotifyLifecycle(t *testing.T) {
	dir := sdTempDir(t)
	ns := newNotifySocket(t, dir)
	t.Setenv("NOTIFY_SOCKET", ns.path)
	const wd = 600 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(wd/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	sock := filepath.Join(dir, "apnsd.sock")
	r := startRun(t, []string{"-demo", "-socket", sock, "-log-format", "text"}, nil)

	// READY=1 comes once the socket answers and credentials are loaded.
	first := ns.next(t, 20*time.Second)
	if !hasAll(first, []string{"READY=1", "STATUS="}) {
		t.Fatalf("first message = %q, want READY=1 with STATUS=", first)
	}
	ping(t, sock)
	st, _ := assignment(first, "STATUS")
	if !statusRE.MatchString(st) {
		t.Errorf("STATUS=%q does not match %v", st, statusRE)
	}

	t.Run("watchdog cadence", func(t *testing.T) {
		var at []time.Time
		for len(at) < 5 {
			ns.waitFor(t, 2*wd, "WATCHDOG=1")
			at = append(at, time.Now())
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < wd/4 || gap > wd {
				t.Errorf("watchdog ping %d came %v after the previous; want about %v (half of WatchdogSec)", i, gap, wd/2)
			}
		}
	})

	t.Run("status follows counters", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"token": "a1b2c3d4e5f60718", "alert": "hi"})
		if err != nil || !res.OK {
			t.Fatalf("send: %+v %v", res, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			m := ns.waitFor(t, 5*time.Second, "STATUS=")
			st, _ := assignment(m, "STATUS")
			if sm := statusRE.FindStringSubmatch(st); sm != nil && sm[3] == "1" {
				if sm[1] != "up" {
					t.Errorf("STATUS=%q: sandbox should be up after a delivered notification", st)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("STATUS never showed the sent notification; last %q", st)
			}
		}
	})

	t.Run("reload", func(t *testing.T) {
		before, _ := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(sddaemon.SdNotifyMonotonicUsec()), "MONOTONIC_USEC="), 10, 64)
		r.sigs <- syscall.SIGHUP
		m := ns.waitFor(t, 5*time.Second, "RELOADING=1")
		v, ok := assignment(m, "MONOTONIC_USEC")
		usec, err := strconv.ParseUint(v, 10, 64)
		after, _ := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(sddaemon.SdNotifyMonotonicUsec()), "MONOTONIC_USEC="), 10, 64)
		if !ok || err != nil || usec < before || usec > after {
			t.Errorf("RELOADING=1 message %q: want MONOTONIC_USEC between %d and %d", m, before, after)
		}
		m = ns.waitFor(t, 5*time.Second, "READY=1")
		if st, _ := assignment(m, "STATUS"); !statusRE.MatchString(st) {
			t.Errorf("after reload STATUS=%q", st)
		}
		ping(t, sock)
	})

	r.sigs <- syscall.SIGTERM
	ns.waitFor(t, 5*time.Second, "STOPPING=1", "STATUS=")
	select {
	case code := <-r.done:
		r.done <- code
		if code != ExitOK {
			t.Errorf("exit code %d, want 0; log:\n%s", code, r.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("apnsd did not stop")
	}
	// Nothing after STOPPING=1: no watchdog ping from a stopping daemon.
	select {
	case m := <-ns.msgs:
		t.Errorf("message after the daemon stopped: %q", m)
	case <-time.After(wd):
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("standalone apnsd should remove the socket it created: %v", err)
	}
}

func TestNoNotifySocketIsQuiet(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	sock := filepath.Join(sdTempDir(t), "apnsd.sock")
	r := startRun(t, []string{"-demo", "-socket", sock}, nil)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket never listened; log:\n%s", r.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ping(t, sock)
	if code := r.stop(t); code != ExitOK {
		t.Errorf("exit code %d; log:\n%s", code, r.stderr)
	}
	if strings.Contains(r.stderr.String(), "NOTIFY_SOCKET") {
		t.Errorf("log mentions NOTIFY_SOCKET although it is not set:\n%s", r.stderr)
	}
}

// listenerFile returns a duplicate of l's descriptor named name, as
// activation.Files names what systemd passes.
func listenerFile(t *testing.T, l interface{ File() (*os.File, error) }, name string) *os.File {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), name)
}

func unixListener(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestInheritedListener(t *testing.T) {
	dir := sdTempDir(t)
	a := unixListener(t, filepath.Join(dir, "a.sock"))
	b := unixListener(t, filepath.Join(dir, "b.sock"))
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	gram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "g.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer gram.Close()
	conn, err := net.DialUnix("unix", nil, a.Addr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	tests := []struct {
		name    string
		files   func() []*os.File
		want    string // the listener's path, "" for none
		wantErr string
		wantLog string
	}{
		{name: "none", files: func() []*os.File { return nil }},
		{name: "only one, unnamed", want: a.Addr().String(),
			files: func() []*os.File { return []*os.File{listenerFile(t, a, "LISTEN_FD_3")} }},
		{name: "named among others", want: b.Addr().String(), wantLog: "ignoring the other sockets",
			files: func() []*os.File {
				return []*os.File{listenerFile(t, a, "other.socket"), listenerFile(t, b, SocketName)}
			}},
		{name: "two unnamed", wantErr: "none is named apnsd.socket",
			files: func() []*os.File {
				return []*os.File{listenerFile(t, a, "LISTEN_FD_3"), listenerFile(t, b, "LISTEN_FD_4")}
			}},
		{name: "two named", wantErr: "2 sockets are named apnsd.socket",
			files: func() []*os.File {
				return []*os.File{listenerFile(t, a, SocketName), listenerFile(t, b, SocketName)}
			}},
		{name: "tcp", wantErr: "only serves a Unix stream socket",
			files: func() []*os.File { return []*os.File{listenerFile(t, tcp, SocketName)} }},
		{name: "datagram", wantErr: "only serves a Unix stream socket",
			files: func() []*os.File { return []*os.File{listenerFile(t, gram, SocketName)} }},
		{name: "connected (Accept=yes)", wantErr: "not a listening socket",
			files: func() []*os.File { return []*os.File{listenerFile(t, conn, SocketName)} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			l, err := inheritedListener(tc.files(), a.Addr().String(), log)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if l != nil {
					t.Fatalf("got listener %v, want none", l.Addr())
				}
				return
			}
			if got := l.Addr().String(); got != tc.want {
				t.Errorf("listener on %q, want %q", got, tc.want)
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log %q lacks %q", logs.String(), tc.wantLog)
			}
			l.Close()
			if _, err := os.Lstat(tc.want); err != nil {
				t.Errorf("closing an inherited listener removed its socket file: %v", err)
			}
		})
	}
}

// TestSocketActivationInProcess plays systemd: the test holds the socket,
// passes a copy to apnsd, stops apnsd, lets a client connect and write
// while no apnsd runs, and starts a new apnsd, which answers the request
// that waited in the backlog. apnsd never removes the socket file.
func TestSocketActivationInProcess(t *testing.T) {
	dir := sdTempDir(t)
	ns := newNotifySocket(t, dir)
	t.Setenv("NOTIFY_SOCKET", ns.path)
	t.Setenv("WATCHDOG_USEC", "")
	sock := filepath.Join(dir, "activated.sock")
	held := unixListener(t, sock) // systemd's copy
	files := func() []*os.File { return []*os.File{listenerFile(t, held, SocketName)} }
	args := []string{"-demo", "-socket", filepath.Join(dir, "configured.sock"), "-log-format", "text"}

	r1 := startRun(t, args, files)
	ns.waitFor(t, 20*time.Second, "READY=1")
	ping(t, sock)
	if _, err := os.Lstat(filepath.Join(dir, "configured.sock")); !os.IsNotExist(err) {
		t.Errorf("apnsd created the configured socket although it inherited one: %v", err)
	}
	if code := r1.stop(t); code != ExitOK {
		t.Fatalf("exit code %d; log:\n%s", code, r1.stderr)
	}
	if !strings.Contains(r1.stderr.String(), "using the socket systemd passed") || !strings.Contains(r1.stderr.String(), sock) {
		t.Errorf("log does not say which socket is used:\n%s", r1.stderr)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("apnsd removed the inherited socket file: %v", err)
	}

	// apnsd is down; the socket still accepts into its backlog.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("connecting while apnsd is stopped: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(`{"id":7,"op":"ping"}` + "\n")); err != nil {
		t.Fatal(err)
	}

	r2 := startRun(t, args, files)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"pong":true`) || !strings.Contains(line, `"id":7`) {
		t.Fatalf("request written during the restart: answer %q, %v; log:\n%s", line, err, r2.stderr)
	}
	if code := r2.stop(t); code != ExitOK {
		t.Fatalf("exit code %d; log:\n%s", code, r2.stderr)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("apnsd removed the inherited socket file: %v", err)
	}
}

func TestBadInheritedSocketFailsStart(t *testing.T) {
	dir := sdTempDir(t)
	ns := newNotifySocket(t, dir)
	t.Setenv("NOTIFY_SOCKET", ns.path)
	a := unixListener(t, filepath.Join(dir, "a.sock"))
	b := unixListener(t, filepath.Join(dir, "b.sock"))
	r := startRun(t, []string{"-demo", "-socket", filepath.Join(dir, "c.sock")}, func() []*os.File {
		return []*os.File{listenerFile(t, a, "x"), listenerFile(t, b, "y")}
	})
	select {
	case code := <-r.done:
		r.done <- code
		if code != ExitFailed {
			t.Errorf("exit code %d, want %d", code, ExitFailed)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("apnsd started with two unnamed sockets")
	}
	m := ns.next(t, time.Second)
	if !strings.HasPrefix(m, "STATUS=cannot start: socket activation") || strings.Contains(m, "READY=1") {
		t.Errorf("notify message %q, want a STATUS saying why it cannot start, and no READY", m)
	}
}

// demoDaemon starts a Daemon on the demo config, listening on sock, which
// the test creates and may close (it is passed as the daemon's listener).
// allowUIDs, if any, is the socket's allow-list.
func demoDaemon(t *testing.T, sock string, allowUIDs ...int) (*daemon.Daemon, *net.UnixListener) {
	t.Helper()
	dm, err := demo.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dm.Close)
	cfg, err := config.Load(dm.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Socket.AllowUIDs = allowUIDs
	l := unixListener(t, sock)
	d, err := daemon.New(cfg, daemon.Options{Listener: l})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Shutdown(ctx)
	})
	return d, l
}

func TestHealthCheck(t *testing.T) {
	d, l := demoDaemon(t, filepath.Join(sdTempDir(t), "apnsd.sock"))
	loop := make(chan chan struct{})
	stopLoop := make(chan struct{})
	go func() {
		for {
			select {
			case ack := <-loop:
				close(ack)
			case <-stopLoop:
				return
			}
		}
	}()
	healthy := daemonHealth(d, loop)
	check := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return healthy(ctx)
	}
	if err := check(5 * time.Second); err != nil {
		t.Fatalf("a running daemon is unhealthy: %v", err)
	}
	// A stuck main loop.
	close(stopLoop)
	if err := check(200 * time.Millisecond); !errors.Is(err, errLoopStuck) {
		t.Errorf("with the main loop stuck: %v, want %v", err, errLoopStuck)
	}
	// A dead accept loop, main loop fine.
	go func() {
		for ack := range loop {
			close(ack)
		}
	}()
	l.SetUnlinkOnClose(false) // the socket file stays, nothing accepts on it
	l.Close()
	if err := check(5 * time.Second); err == nil {
		t.Error("healthy although the socket no longer accepts")
	}
}

// A daemon whose allow-list leaves out its own uid refuses the probe, but
// the refusal is an answer: apnsd is alive and must not be restarted.
func TestProbeRefusedIsHealthy(t *testing.T) {
	d, _ := demoDaemon(t, filepath.Join(sdTempDir(t), "apnsd.sock"), os.Getuid()+1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := probeSocket(ctx, d.SocketPath()); err != nil {
		t.Errorf("probe of a daemon that refuses this uid: %v, want healthy", err)
	}
	// Something that is not apnsd answers: unhealthy.
	l := unixListener(t, filepath.Join(sdTempDir(t), "other.sock"))
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("HTTP/1.0 400 Bad Request\n"))
			c.Close()
		}
	}()
	if err := probeSocket(ctx, l.Addr().String()); err == nil {
		t.Error("probe accepted a non-apnsd answer")
	}
}

func TestSupervisorPingsOnlyWhenHealthy(t *testing.T) {
	ns := newNotifySocket(t, sdTempDir(t))
	t.Setenv("NOTIFY_SOCKET", ns.path)
	var mu sync.Mutex
	var healthErr error
	status := "one"
	var logs syncBuffer
	s := &supervisor{
		n:        &notifier{log: slog.New(slog.DiscardHandler)},
		log:      slog.New(slog.NewTextHandler(&logs, nil)),
		watchdog: 100 * time.Millisecond,
		healthy: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			return healthErr
		},
		status: func() string {
			mu.Lock()
			defer mu.Unlock()
			return status
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	defer func() { cancel(); <-done }()

	if m := ns.next(t, time.Second); m != "WATCHDOG=1\nSTATUS=one" {
		t.Errorf("first tick sent %q, want the ping and the status", m)
	}
	if m := ns.next(t, time.Second); m != "WATCHDOG=1" {
		t.Errorf("second tick sent %q, want only the ping (status unchanged)", m)
	}
	mu.Lock()
	healthErr = errors.New("stuck")
	status = "two"
	mu.Unlock()
	// Unhealthy: no more pings, but the status still changes.
	deadline := time.After(400 * time.Millisecond)
	sawStatus := false
	for pass := false; !pass; {
		select {
		case m := <-ns.msgs:
			if strings.Contains(m, "WATCHDOG=1") && sawStatus {
				t.Fatalf("ping while unhealthy: %q", m)
			}
			if strings.Contains(m, "STATUS=two") {
				sawStatus = true
				if strings.Contains(m, "WATCHDOG") {
					t.Fatalf("ping while unhealthy: %q", m)
				}
			}
		case <-deadline:
			pass = true
		}
	}
	if !sawStatus {
		t.Error("status not refreshed while unhealthy")
	}
	if !strings.Contains(logs.String(), "not healthy") || !strings.Contains(logs.String(), "stuck") {
		t.Errorf("unhealthy state not logged: %s", logs.String())
	}
	mu.Lock()
	healthErr = nil
	mu.Unlock()
	ns.waitFor(t, time.Second, "WATCHDOG=1")
}

func TestStatusLine(t *testing.T) {
	env := func(name, state string, conns, target int) ipc.EnvStatus {
		return ipc.EnvStatus{Env: name, State: state, Connections: conns, Target: target}
	}
	many := ipc.AppStatus{Name: "m"}
	for i := range 8 {
		many.Envs = append(many.Envs, env(fmt.Sprint(i), "up", 1, 1))
	}
	broken := env("production", "up", 2, 2)
	broken.LastReloadError = "expired"
	tests := []struct {
		name string
		rep  ipc.StatusReport
		want string
	}{
		{"empty", ipc.StatusReport{Queue: ipc.QueueStatus{Capacity: 10}}, "no app configured; sent 0, failed 0, refused 0; queue 0/10"},
		{"two envs", ipc.StatusReport{
			Apps:  []ipc.AppStatus{{Name: "shop", Envs: []ipc.EnvStatus{env("sandbox", "down", 0, 1), broken}}},
			Queue: ipc.QueueStatus{Depth: 2, InFlight: 3, Capacity: 100, Sent: 12, Failed: 1, Refused: 4},
		}, "shop/sandbox down 0/1, shop/production up 2/2 (reload failed); sent 12, failed 1, refused 4; queue 5/100"},
		{"capped", ipc.StatusReport{Apps: []ipc.AppStatus{many}, Queue: ipc.QueueStatus{Capacity: 1}},
			"m/0 up 1/1, m/1 up 1/1, m/2 up 1/1, m/3 up 1/1, m/4 up 1/1, m/5 up 1/1, +2 more; sent 0, failed 0, refused 0; queue 0/1"},
	}
	for _, tc := range tests {
		if got := statusLine(&tc.rep); got != tc.want {
			t.Errorf("%s: statusLine = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := statusAssignment("a\nb  c"); got != "STATUS=a b c" {
		t.Errorf("statusAssignment = %q, want one line", got)
	}
}

// TestHelperApnsd is not a test: TestSystemdSocketActivate runs the test
// binary through systemd-socket-activate with APNSD_TEST_HELPER=1, and this
// function then runs apnsd's Main with the arguments after "--".
func TestHelperApnsd(t *testing.T) {
	if os.Getenv("APNSD_TEST_HELPER") != "1" {
		return
	}
	os.Exit(Main(flag.Args(), os.Stdout, os.Stderr))
}

// TestSystemdSocketActivate runs apnsd under systemd-socket-activate (from
// Debian's systemd package), a real sender of LISTEN_FDS: it binds the
// socket, waits for a first connection, then execs apnsd with the socket as
// fd 3. The client's request waits in the backlog while apnsd starts.
func TestSystemdSocketActivate(t *testing.T) {
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatalf("systemd-socket-activate is needed for this test (apt-get install systemd): %v", err)
	}
	dir := sdTempDir(t)
	ns := newNotifySocket(t, dir)
	sock := filepath.Join(dir, "apnsd.sock")
	cmd := exec.Command(ssa, "-l", sock, "--fdname="+SocketName,
		"-E", "APNSD_TEST_HELPER=1",
		"-E", "NOTIFY_SOCKET="+ns.path,
		"-E", "WATCHDOG_USEC=1000000",
		"-E", "TMPDIR="+dir,
		os.Args[0], "-test.run=^TestHelperApnsd$", "--",
		"-demo", "-socket", filepath.Join(dir, "not-this.sock"), "-log-format", "journal")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate never listened: %v\n%s", err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	// Written before apnsd runs: the connection triggers its start.
	if _, err := c.Write([]byte(`{"id":"early","op":"ping"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	m := ns.waitFor(t, 30*time.Second, "READY=1")
	if st, _ := assignment(m, "STATUS"); !statusRE.MatchString(st) {
		t.Errorf("STATUS=%q", st)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(line, `"pong":true`) {
		t.Fatalf("early request: answer %q, %v\n%s", line, err, out.String())
	}
	ns.waitFor(t, 3*time.Second, "WATCHDOG=1")

	// systemd-socket-activate exec'd apnsd in its own process.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ns.waitFor(t, 5*time.Second, "STOPPING=1")
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("apnsd exited with %v\n%s", waitErr, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("apnsd did not stop\n%s", out.String())
	}
	log := out.String()
	for _, want := range []string{"<6>", "using the socket systemd passed", "socket=" + sock} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("apnsd removed the socket file it inherited: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "not-this.sock")); !os.IsNotExist(err) {
		t.Errorf("apnsd created the configured socket although it inherited one: %v", err)
	}
}

// A connection coming up is shown at once (within stateEvery), not at the
// next regular refresh; counters alone wait for the refresh.
func TestSupervisorStatusOnConnectionChange(t *testing.T) {
	ns := newNotifySocket(t, sdTempDir(t))
	t.Setenv("NOTIFY_SOCKET", ns.path)
	var mu sync.Mutex
	conns, counters := "app/sandbox down 0/1", "sent 0"
	s := &supervisor{
		n:           &notifier{log: slog.New(slog.DiscardHandler)},
		log:         slog.New(slog.DiscardHandler),
		statusEvery: time.Hour,
		stateEvery:  50 * time.Millisecond,
		status: func() string {
			mu.Lock()
			defer mu.Unlock()
			return conns + "; " + counters
		},
		connections: func() string {
			mu.Lock()
			defer mu.Unlock()
			return conns
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(150 * time.Millisecond)
	mu.Lock()
	counters = "sent 5" // not a connection change: no message
	mu.Unlock()
	time.Sleep(150 * time.Millisecond)
	mu.Lock()
	conns = "app/sandbox up 1/1"
	mu.Unlock()
	if m := ns.next(t, 2*time.Second); m != "STATUS=app/sandbox up 1/1; sent 5" {
		t.Errorf("after the connection came up: %q, want the new STATUS at once", m)
	}
	select {
	case m := <-ns.msgs:
		t.Errorf("unexpected message %q", m)
	case <-time.After(300 * time.Millisecond):
	}
}

// A start that fails logs its error once, at error priority, and says it
// in STATUS=, whether the config file or a credential is the problem.
func TestStartErrorLoggedOnce(t *testing.T) {
	dir := sdTempDir(t)
	ns := newNotifySocket(t, dir)
	t.Setenv("NOTIFY_SOCKET", ns.path)
	t.Setenv("JOURNAL_STREAM", "8:1234")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "bad.pem"), []byte("garbage\n"), 0o600))
	good := fmt.Sprintf("[socket]\npath = %q\n[[apps]]\nname = \"a\"\ntopic = \"com.example.a\"\n  [apps.sandbox]\n  cert_file = \"bad.pem\"\n", filepath.Join(dir, "s.sock"))
	for _, tc := range []struct {
		name, config, want string
	}{
		{"config", good + "bogus_key = 1\n", "bogus_key"},
		{"credential", good, "no CERTIFICATE PEM block"},
	} {
		path := filepath.Join(dir, tc.name+".toml")
		must(os.WriteFile(path, []byte(tc.config), 0o644))
		var stderr syncBuffer
		env := runEnv{
			signals:     func() (<-chan os.Signal, func()) { return make(chan os.Signal), func() {} },
			listenFiles: func() []*os.File { return nil },
			statusEvery: time.Second,
		}
		if code := run([]string{"-config", path}, io.Discard, &stderr, env); code != ExitConfig {
			t.Errorf("%s: exit %d, want %d", tc.name, code, ExitConfig)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		var with []string
		for _, l := range lines {
			if strings.Contains(l, tc.want) {
				with = append(with, l)
			}
		}
		if len(with) != 1 || !strings.HasPrefix(with[0], "<3>") {
			t.Errorf("%s: lines with the error %q, want one at priority 3 (<3>):\n%s", tc.name, with, stderr.String())
		}
		if m := ns.next(t, 2*time.Second); !strings.HasPrefix(m, "STATUS=cannot start: ") || !strings.Contains(m, tc.want) {
			t.Errorf("%s: STATUS %q does not say why", tc.name, m)
		}
	}
}
