package daemon

// Real-binary fault tests for issue 9's delivery guarantees: what was
// answered {"ok":true,"queued":true} reaches APNs even across kill -9 and a
// shutdown that runs out of time, and a request read after its deadline is
// never sent. Each runs cmd/apnsd as a child process against the harness's
// stand-ins, with its own socket and state_dir.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/ctl"
	"github.com/apnsd/apnsd/internal/ipc"
)

// apnsdProc is one apnsd child process.
type apnsdProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	log     *syncBuffer
	exited  chan struct{}
	waitErr error
}

// procConfig is a config for a child apnsd using the harness's stand-ins
// and credentials (sandbox only), with its own socket and state_dir; top is
// extra top-level TOML (request_timeout defaults to 10s), socket extra
// [socket] TOML.
func (h *harness) procConfig(name, sock, stateDir, top, socket string) string {
	if !strings.Contains(top, "request_timeout") {
		top += "\nrequest_timeout = \"10s\""
	}
	cfg := fmt.Sprintf(`state_dir = %q
%s
[socket]
path = %q
%s
[[apps]]
name = "app"
topic = "com.example.app"
default_env = "sandbox"
  [apps.sandbox]
  cert_file = "sb.crt"
  key_file = "sb.key"
  endpoint = %q
  ca_file = "ca.pem"
`, stateDir, top, sock, socket, h.sandbox.URL)
	path := filepath.Join(h.dir, name)
	must(h.t, os.WriteFile(path, []byte(cfg), 0o644))
	return path
}

// startProc starts bin with args; extra, if set, adjusts the command first.
// It is killed at the end of the test if still running.
func startProc(t *testing.T, bin string, extra func(*exec.Cmd), args ...string) *apnsdProc {
	t.Helper()
	p := &apnsdProc{t: t, cmd: exec.Command(bin, args...), log: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if extra != nil {
		extra(p.cmd)
	}
	must(t, p.cmd.Start())
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// waitReady waits until apnsd answers ping on sock.
func (p *apnsdProc) waitReady(sock string) {
	p.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"op": "ping"})
		cancel()
		if err == nil && r.OK {
			return
		}
		select {
		case <-p.exited:
			p.t.Fatalf("apnsd exited before answering: %v\n%s", p.waitErr, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("apnsd did not answer on %s: %v\n%s", sock, err, p.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the process to exit within d.
func (p *apnsdProc) wait(d time.Duration) {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("apnsd still running after %s\n%s", d, p.log.String())
	}
}

// delivered records the tokens the stand-in answered 200 without delay,
// with how often.
type delivered struct {
	mu sync.Mutex
	n  map[string]int
}

func (dv *delivered) add(token string) {
	dv.mu.Lock()
	dv.n[token]++
	dv.mu.Unlock()
}

// missing returns the tokens of want not delivered yet, and the number of
// duplicate deliveries among want.
func (dv *delivered) missing(want map[string]bool) (missing []string, dups int) {
	dv.mu.Lock()
	defer dv.mu.Unlock()
	for tok := range want {
		switch c := dv.n[tok]; {
		case c == 0:
			missing = append(missing, tok)
		case c > 1:
			dups += c - 1
		}
	}
	return missing, dups
}

// waitDelivered waits until every token in want was delivered.
func (dv *delivered) waitDelivered(t *testing.T, want map[string]bool, within time.Duration, log *syncBuffer) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing, dups := dv.missing(want)
		if len(missing) == 0 {
			return dups
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d notifications answered queued:true never reached APNs (e.g. %v)\n%s", len(missing), len(want), missing[:min(5, len(missing))], tail(log.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// TestCrashKill9KeepsQueued: 4 connections × 64 pipelined wait:false sends
// against an APNs that holds two of three notifications; kill -9 after
// about 2 s; a restart on the same state_dir sends every notification that
// was answered queued:true (counted by device token, which is unique per
// request). Duplicates are allowed (at least once) and reported.
func TestCrashKill9KeepsQueued(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	dv := &delivered{n: map[string]int{}}
	var holding sync.WaitGroup
	release := make(chan struct{})
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		if r.DeviceToken[len(r.DeviceToken)-1]%3 != 0 {
			holding.Add(1)
			defer holding.Done()
			<-release // held until the process is gone: never answered
			return apnstest.Reply{Status: 503, Reason: "ServiceUnavailable"}
		}
		dv.add(r.DeviceToken)
		return apnstest.Reply{}
	})
	sock := filepath.Join(h.dir, "k.sock")
	state := filepath.Join(h.dir, "k-state")
	cfg := h.procConfig("k.toml", sock, state, "queue_size = 1000000", "")
	p := startProc(t, bin, nil, "-config", cfg, "-log-format", "text")
	p.waitReady(sock)

	const conns, window = 4, 64
	var mu sync.Mutex
	acked := map[string]bool{}
	refused := map[string]int{}
	var wg sync.WaitGroup
	for ci := range conns {
		nc, err := net.Dial("unix", sock)
		must(t, err)
		defer nc.Close()
		slots := make(chan struct{}, window)
		tokens := make(chan string, window)
		dead := make(chan struct{})
		wg.Add(2)
		go func() { // writer: at most window unanswered
			defer wg.Done()
			defer close(tokens)
			for i := 0; i < 1<<16; i++ {
				select {
				case slots <- struct{}{}:
				case <-dead:
					return
				}
				tok := faultToken("9a00", ci, i)
				tokens <- tok
				if _, err := fmt.Fprintf(nc, `{"token":%q,"alert":"x","wait":false}`+"\n", tok); err != nil {
					return
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			defer close(dead)
			br := bufio.NewReader(nc)
			for tok := range tokens {
				line, err := br.ReadBytes('\n')
				if err != nil {
					return // killed
				}
				var m map[string]any
				must(t, json.Unmarshal(line, &m))
				mu.Lock()
				if m["queued"] == true {
					acked[tok] = true
				} else {
					refused[fmt.Sprint(m["error"])]++
				}
				mu.Unlock()
				<-slots
			}
		}()
	}
	time.Sleep(2 * time.Second)
	must(t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.wait(10 * time.Second)
	wg.Wait() // the readers end at EOF, and with them the writers
	close(release)
	holding.Wait()
	mu.Lock()
	want := make(map[string]bool, len(acked))
	for tok := range acked {
		want[tok] = true
	}
	mu.Unlock()
	missingBefore, _ := dv.missing(want)
	if len(want) < 1000 || len(missingBefore) == 0 {
		t.Fatalf("%d acknowledged, %d of them undelivered at the kill: the test needs many of both (refused: %v)\n%s", len(want), len(missingBefore), refused, tail(p.log.String(), 2000))
	}

	// Restart on the same state_dir; APNs answers everything now.
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		dv.add(r.DeviceToken)
		return apnstest.Reply{}
	})
	p2 := startProc(t, bin, nil, "-config", cfg, "-log-format", "text")
	p2.waitReady(sock)
	dups := dv.waitDelivered(t, want, 60*time.Second, p2.log)
	t.Logf("%d answered queued:true before kill -9 (refused: %v), %d of them undelivered at the kill; all delivered after the restart, %d duplicates",
		len(want), refused, len(missingBefore), dups)
	must(t, p2.cmd.Process.Signal(syscall.SIGTERM))
	p2.wait(20 * time.Second)
}

// TestShutdownDeadlineKeepsQueued: SIGTERM while APNs holds every
// notification longer than shutdown_timeout: apnsd exits at the deadline,
// and the next start sends each notification that was answered
// queued:true.
func TestShutdownDeadlineKeepsQueued(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	dv := &delivered{n: map[string]int{}}
	release := make(chan struct{})
	var holding sync.WaitGroup
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		holding.Add(1)
		defer holding.Done()
		<-release
		return apnstest.Reply{Status: 503, Reason: "ServiceUnavailable"}
	})
	sock := filepath.Join(h.dir, "t.sock")
	cfg := h.procConfig("t.toml", sock, filepath.Join(h.dir, "t-state"), `shutdown_timeout = "1s"`, "")
	p := startProc(t, bin, nil, "-config", cfg, "-log-format", "text")
	p.waitReady(sock)
	c := &conn{t: t}
	cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
	must(t, err)
	c.cn = cn
	defer cn.Close()
	const n = 3000
	want := map[string]bool{}
	go func() {
		for i := range n {
			c.cn.WriteLine(fmt.Appendf(nil, `{"token":%q,"alert":"x","wait":false}`, faultToken("9b00", 0, i)))
		}
	}()
	for i := range n {
		if m := c.read(); m["queued"] != true {
			t.Fatalf("answer %d: %v", i, m)
		}
		want[faultToken("9b00", 0, i)] = true
	}
	sig := time.Now()
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.wait(15 * time.Second)
	if p.waitErr != nil {
		t.Errorf("apnsd exited with %v, want 0", p.waitErr)
	}
	exitedIn := time.Since(sig)
	if !strings.Contains(p.log.String(), "left in the spool") {
		t.Errorf("no log line about notifications left in the spool:\n%s", tail(p.log.String(), 2000))
	}
	close(release)
	holding.Wait()
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		dv.add(r.DeviceToken)
		return apnstest.Reply{}
	})
	p2 := startProc(t, bin, nil, "-config", cfg, "-log-format", "text")
	p2.waitReady(sock)
	dups := dv.waitDelivered(t, want, 60*time.Second, p2.log)
	t.Logf("%d answered queued:true, none delivered before SIGTERM; exited %s after it; all %d delivered by the next start, %d duplicates",
		n, exitedIn.Round(time.Millisecond), len(want), dups)
}

// TestExpiredInHeldSocket: a socket held open while apnsd is not running
// (as systemd's .socket unit holds it): a request written then, whose
// deadline passes before apnsd starts, is answered expired and never sent;
// one without a deadline, written alongside, is sent. Then a request APNs
// holds past its deadline is answered timeout at the deadline.
func TestExpiredInHeldSocket(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	sock := filepath.Join(h.dir, "held.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	must(t, err)
	l.SetUnlinkOnClose(true)
	defer l.Close()
	lf, err := l.File()
	must(t, err)
	defer lf.Close()

	// apnsd is not running: the kernel queues the connection and the lines.
	nc, err := net.Dial("unix", sock)
	must(t, err)
	defer nc.Close()
	dl := time.Now().Add(500 * time.Millisecond).UnixMilli()
	fmt.Fprintf(nc, `{"id":"late","token":"9c0001","alert":"x","deadline":%d}`+"\n", dl)
	fmt.Fprintf(nc, `{"id":"late-nowait","token":"9c0002","alert":"x","deadline":%d,"wait":false}`+"\n", dl)
	fmt.Fprintf(nc, `{"id":"plain","token":"9c0003","alert":"x"}`+"\n")
	time.Sleep(time.Until(time.UnixMilli(dl)) + 500*time.Millisecond)

	cfg := h.procConfig("held.toml", sock, filepath.Join(h.dir, "held-state"), "", "")
	// LISTEN_PID must be apnsd's own pid: the shell's $$ survives exec.
	p := startProc(t, "/bin/sh", func(cmd *exec.Cmd) {
		cmd.ExtraFiles = []*os.File{lf}
		cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "APNSD_BIN="+bin, "APNSD_CFG="+cfg)
	}, "-c", `LISTEN_PID=$$ exec "$APNSD_BIN" -config "$APNSD_CFG" -log-format text`)
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	answers := map[string]map[string]any{}
	for range 3 {
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("reading answers: %v\n%s", err, p.log.String())
		}
		var m map[string]any
		must(t, json.Unmarshal(line, &m))
		answers[fmt.Sprint(m["id"])] = m
	}
	for _, id := range []string{"late", "late-nowait"} {
		if m := answers[id]; m["error"] != ipc.CodeExpired || m["retryable"] != false {
			t.Errorf("%s: %v, want expired, not retryable", id, m)
		}
	}
	if m := answers["plain"]; m["ok"] != true {
		t.Errorf("plain: %v, want ok", m)
	}
	for _, r := range h.sandbox.Requests() {
		if r.DeviceToken == "9c0001" || r.DeviceToken == "9c0002" {
			t.Errorf("expired request %s reached APNs", r.DeviceToken)
		}
	}
	// Still unanswered at its deadline (APNs holds it): answered timeout
	// then, long before request_timeout (10s).
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		if r.DeviceToken == "9c0004" {
			return apnstest.Reply{Delay: 8 * time.Second}
		}
		return apnstest.Reply{}
	})
	sent := time.Now()
	fmt.Fprintf(nc, `{"id":"slow","token":"9c0004","alert":"x","deadline":%d}`+"\n", sent.Add(700*time.Millisecond).UnixMilli())
	line, err := br.ReadBytes('\n')
	must(t, err)
	var m map[string]any
	must(t, json.Unmarshal(line, &m))
	if m["error"] != ipc.CodeTimeout || m["retryable"] != true || time.Since(sent) > 6*time.Second {
		t.Errorf("slow: %v after %s, want timeout at its deadline", m, time.Since(sent))
	}
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.wait(20 * time.Second)
}

// TestApnsctlAcrossRestarts: apnsctl in bulk mode on one connection, fed a
// line every few milliseconds, while apnsd restarts three times behind a
// listening socket the test holds (as systemd's .socket unit does): every
// line is answered ok, none fails (apnsctl sends shutting_down again on a
// fresh connection, and resends what a closed connection left unanswered).
func TestApnsctlAcrossRestarts(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	h.sandbox.SetResponder(func(*apnstest.Request) apnstest.Reply { return apnstest.Reply{Delay: 20 * time.Millisecond} })
	sock := filepath.Join(h.dir, "r.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	must(t, err)
	l.SetUnlinkOnClose(true)
	defer l.Close()
	lf, err := l.File()
	must(t, err)
	defer lf.Close()
	cfg := h.procConfig("r.toml", sock, filepath.Join(h.dir, "r-state"), `shutdown_timeout = "5s"`, "")
	start := func() *apnsdProc {
		return startProc(t, "/bin/sh", func(cmd *exec.Cmd) {
			cmd.ExtraFiles = []*os.File{lf}
			cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "APNSD_BIN="+bin, "APNSD_CFG="+cfg)
		}, "-c", `LISTEN_PID=$$ exec "$APNSD_BIN" -config "$APNSD_CFG" -log-format text`)
	}
	p := start()
	p.waitReady(sock)

	pr, pw := io.Pipe()
	var out, errOut syncBuffer
	code := make(chan int, 1)
	go func() { code <- ctl.Main([]string{"-socket", sock, "-timeout", "2m", "send"}, pr, &out, &errOut) }()
	stopWriting := make(chan struct{})
	written := make(chan int, 1)
	go func() {
		n := 0
		defer func() { pw.Close(); written <- n }()
		for {
			select {
			case <-stopWriting:
				return
			default:
			}
			fmt.Fprintf(pw, `{"id":%d,"token":%q,"alert":"x"}`+"\n", n, faultToken("9d00", 0, n))
			n++
			time.Sleep(3 * time.Millisecond)
		}
	}()
	for range 3 {
		time.Sleep(700 * time.Millisecond)
		must(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.wait(20 * time.Second)
		if p.waitErr != nil {
			t.Fatalf("apnsd exited with %v\n%s", p.waitErr, tail(p.log.String(), 2000))
		}
		time.Sleep(200 * time.Millisecond) // lines wait in the held socket meanwhile
		p = start()
	}
	time.Sleep(700 * time.Millisecond)
	close(stopWriting)
	n := <-written
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("apnsctl exited %d: %s", c, errOut.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("apnsctl did not finish\n%s", errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	failed := 0
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["ok"] != true || m["id"] != float64(i) {
			failed++
			if failed < 5 {
				t.Errorf("answer %d: %s", i, l)
			}
		}
	}
	if len(lines) != n || failed > 0 {
		t.Errorf("%d lines written, %d answers, %d not ok", n, len(lines), failed)
	}
	t.Logf("%d sends over 3 restarts behind a held socket, %d not ok; the stand-in received %d (duplicates from resends: %d)",
		n, failed, h.sandbox.Count(), h.sandbox.Count()-n)
	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.wait(20 * time.Second)
}
