package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// TestOutageFailsFastAndRecoversBinary: the real apnsd (request_timeout
// 30s, unavailable_wait 5s) while APNs is down for at least 8 s (the
// stand-in refuses TLS handshakes and its connections are dropped). A send
// during the outage is answered unavailable, retryable, after about
// unavailable_wait: not before 5 s (longer than the transport's 3 s
// default, so the key is shown to reach it) and far less than
// request_timeout, and it never reaches APNs. APNs comes back just after
// one of apnsd's connection attempts was refused, when the reconnect
// backoff has reached its cap (the next attempt is 5-10 s away); a send
// made 1 s later finds the environment still down, prompts a dial, and is
// answered ok within 4 s (the target is 3 s; measured: tens of ms).
func TestOutageFailsFastAndRecoversBinary(t *testing.T) {
	const (
		requestTimeout  = 30 * time.Second
		unavailableWait = 5 * time.Second
		outage          = 8 * time.Second
	)
	// The in-process daemon the harness starts gets a dead sandbox
	// endpoint, so that every handshake the stand-in refuses is apnsd's.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	dead := "https://" + l.Addr().String()
	l.Close()
	h := newHarness(t, harnessOpts{sandboxURL: dead})
	bin := buildApnsd(t)
	sock := filepath.Join(h.dir, "outage.sock")
	cfg := h.procConfig("outage.toml", sock, filepath.Join(h.dir, "outage-state"),
		fmt.Sprintf("request_timeout = %q\nunavailable_wait = %q", requestTimeout, unavailableWait), "")
	p := startProc(t, bin, nil, "-config", cfg, "-log-format", "text")
	p.waitReady(sock)

	cn, err := (&ipc.Client{Socket: sock}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(2 * time.Minute))
	c := &conn{t: t, cn: cn}
	if m := c.do(`{"id":"warm","token":"0a0001","alert":"x"}`); m["ok"] != true {
		t.Fatalf("warm-up: %v\n%s", m, p.log.String())
	}

	// APNs goes down.
	h.sandbox.SetRefuseHandshakes(true)
	down := time.Now()
	h.sandbox.DropConnections()
	waitFor(t, func() bool { return envStatus(c, "sandbox").State == "down" })
	before := h.sandbox.Count()
	sent := time.Now()
	m := c.do(`{"id":"during","token":"0a0002","alert":"x"}`)
	failedIn := time.Since(sent)
	if m["error"] != ipc.CodeUnavailable || m["retryable"] != true {
		t.Errorf("send during the outage: %v, want unavailable, retryable", m)
	}
	if failedIn < unavailableWait-100*time.Millisecond || failedIn >= 10*time.Second {
		t.Errorf("send during the outage answered after %s, want about unavailable_wait (%s), well below request_timeout (%s)", failedIn, unavailableWait, requestTimeout)
	}
	if n := h.sandbox.Count(); n != before {
		t.Errorf("the stand-in received %d requests while refusing handshakes", n-before)
	}
	for _, r := range h.sandbox.Requests() {
		if r.DeviceToken == "0a0002" {
			t.Errorf("the send answered unavailable reached APNs")
		}
	}
	refused := h.sandbox.RefusedHandshakes()
	if refused == 0 {
		t.Errorf("apnsd made no connection attempt during the send's %s wait", failedIn)
	}

	// APNs comes back once the outage has lasted its length, right after
	// an attempt apnsd logged as failed with the backoff at its 10 s cap:
	// its next attempt is then due in 5-10 s (jittered), so a send answered
	// in less than 4 s from 1 s after the return shows that the waiting
	// send brought the dial forward.
	const failed = "connecting to APNs failed"
	time.Sleep(time.Until(down.Add(outage)))
	for limit := time.Now().Add(time.Minute); ; {
		seen := strings.Count(p.log.String(), failed)
		for strings.Count(p.log.String(), failed) == seen {
			if time.Now().After(limit) {
				t.Fatalf("apnsd made no connection attempt with a 10 s backoff in a minute of outage\n%s", tail(p.log.String(), 3000))
			}
			time.Sleep(time.Millisecond)
		}
		if lastRetryIn(p.log.String()) == "10s" {
			break
		}
	}
	h.sandbox.SetRefuseHandshakes(false)
	back := time.Now()
	refused = h.sandbox.RefusedHandshakes()
	time.Sleep(time.Second)
	if st := envStatus(c, "sandbox"); st.State != "down" {
		t.Fatalf("sandbox %q 1 s after APNs came back, before any send; want down (the next attempt is 5-10 s after the last)", st.State)
	}
	sent = time.Now()
	m = c.do(`{"id":"after","token":"0a0003","alert":"x"}`)
	okIn := time.Since(sent)
	if m["ok"] != true {
		t.Fatalf("send 1 s after APNs came back: %v\n%s", m, tail(p.log.String(), 3000))
	}
	if okIn >= 4*time.Second {
		t.Errorf("send 1 s after APNs came back answered ok after %s, want within 3 s (bound 4 s: without the send's prompt the dial is at least 4 s away)", okIn)
	}
	t.Logf("unavailable after %s (unavailable_wait %s, request_timeout %s); APNs back after %s down and %d refused handshakes "+
		"(last backoff 10s); a send 1 s later answered ok in %s (%s after APNs returned)",
		failedIn.Round(time.Millisecond), unavailableWait, requestTimeout, back.Sub(down).Round(time.Millisecond), refused,
		okIn.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))

	must(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.wait(20 * time.Second)
}

// lastRetryIn returns the retry_in of the last "connecting to APNs failed"
// line in a text log, or "?".
func lastRetryIn(log string) string {
	i := strings.LastIndex(log, "connecting to APNs failed")
	if i < 0 {
		return "?"
	}
	line, _, _ := strings.Cut(log[i:], "\n")
	_, v, ok := strings.Cut(line, "retry_in=")
	if !ok {
		return "?"
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// TestConfigReloadUnavailableWait: a config reload that changes
// unavailable_wait rebuilds the apps, whose environments then carry the
// new wait (the value their clients are built with).
func TestConfigReloadUnavailableWait(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	wait := func() map[string]time.Duration {
		got := map[string]time.Duration{}
		for _, es := range h.d.current().senders() {
			got[es.cfg.Name] = es.cfg.UnavailableWait
		}
		return got
	}
	for env, w := range wait() {
		if w != config.DefaultUnavailableWait {
			t.Errorf("%s: unavailable_wait %s at start, want the default %s", env, w, config.DefaultUnavailableWait)
		}
	}
	orig, err := os.ReadFile(h.cfgPath)
	must(t, err)
	must(t, os.WriteFile(h.cfgPath, append([]byte("unavailable_wait = \"1500ms\"\n"), orig...), 0o644))
	if m := c.do(`{"op":"reload"}`); m["ok"] != true || !strings.Contains(fmt.Sprint(m["reloaded"]), `app "app" changed`) {
		t.Fatalf("reload: %v", m)
	}
	for env, w := range wait() {
		if w != 1500*time.Millisecond {
			t.Errorf("%s: unavailable_wait %s after the reload, want 1.5s", env, w)
		}
	}
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Errorf("send after the reload: %v", m)
	}
	// A wait longer than request_timeout (10s here) is refused; the
	// running configuration stays.
	must(t, os.WriteFile(h.cfgPath, append([]byte("unavailable_wait = \"11s\"\n"), orig...), 0o644))
	m := c.do(`{"op":"reload"}`)
	wantErr(t, m, ipc.CodeReloadFailed)
	if msg := fmt.Sprint(m["message"]); !strings.Contains(msg, "unavailable_wait: must be at most request_timeout (10s), got 11s") {
		t.Errorf("reload error %q does not say what is wrong with unavailable_wait", msg)
	}
	for env, w := range wait() {
		if w != 1500*time.Millisecond {
			t.Errorf("%s: unavailable_wait %s after a refused reload, want 1.5s kept", env, w)
		}
	}
}
