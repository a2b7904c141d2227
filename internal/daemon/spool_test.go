package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// TestStateDirProblems: a state_dir apnsd cannot use stops New with an
// error naming the key; state_dir = "" starts, refuses wait:false with a
// message saying why, and still sends wait:true.
func TestStateDirProblems(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	load := func(stateDir string) *config.Config {
		t.Helper()
		cfg, err := config.Load(h.cfgPath)
		must(t, err)
		cfg.StateDir = stateDir
		cfg.Socket.Path = filepath.Join(h.dir, "other.sock")
		return cfg
	}
	notDir := filepath.Join(h.dir, "a-file")
	must(t, os.WriteFile(notDir, []byte("x"), 0o600))
	for _, c := range []struct {
		name, dir string
		want      []string
	}{
		{"under a file", filepath.Join(notDir, "state"), []string{"state_dir " + filepath.Join(notDir, "state"), "make it a directory apnsd's user can write"}},
		{"in use by the running daemon", filepath.Join(h.dir, "state"), []string{"state_dir", "another apnsd uses it"}},
	} {
		d, err := New(load(c.dir), Options{})
		if err == nil {
			d.Shutdown(context.Background())
			t.Errorf("%s: New succeeded", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.name, err, w)
			}
		}
	}

	// state_dir = "": no spool.
	cfg := load("")
	d := startDaemon(t, cfg, Options{})
	cn, err := (&ipc.Client{Socket: d.SocketPath()}).Connect(context.Background())
	must(t, err)
	defer cn.Close()
	c := &conn{t: t, cn: cn}
	m := c.do(`{"token":"aa","alert":"x","wait":false}`)
	wantErr(t, m, ipc.CodeBadRequest)
	if msg, _ := m["message"].(string); !strings.Contains(msg, "state_dir") || !strings.Contains(msg, `"wait":true`) {
		t.Errorf("message %q should name state_dir and wait:true", msg)
	}
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Errorf("wait:true without a spool: %v", m)
	}
}

// TestSpoolLeftAtDrainDeadlineThenReplayed: wait:false notifications APNs
// holds past the shutdown deadline stay in the spool; the next daemon on
// the same state_dir sends them (same apns-id) before it serves its socket.
func TestSpoolLeftAtDrainDeadlineThenReplayed(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	hold := make(chan struct{})
	h.sandbox.SetResponder(func(*apnstest.Request) apnstest.Reply {
		<-hold
		return apnstest.Reply{}
	})
	defer close(hold)
	c := h.dial()
	const n = 50
	for i := range n {
		c.send(fmt.Sprintf(`{"id":%d,"token":"aa%04x","alert":"x","wait":false,"apns_id":"00000000-0000-4000-8000-%012x"}`, i, i, i))
	}
	for i := range n {
		if m := c.read(); m["ok"] != true || m["queued"] != true || m["id"] != float64(i) {
			t.Fatalf("answer %d: %v, want queued:true", i, m)
		}
	}
	if sp := h.d.Status().Queue.Spool; sp == nil || sp.Pending != n || sp.Appends != n {
		t.Fatalf("status spool %+v, want %d pending", sp, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	h.d.Shutdown(ctx)
	cancel()

	// The next start: APNs answers at once now.
	got := map[string]string{}
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply { return apnstest.Reply{} })
	before := h.sandbox.Count()
	cfg, err := config.Load(h.cfgPath)
	must(t, err)
	d2 := startDaemon(t, cfg, Options{})
	waitFor(t, func() bool { return h.sandbox.Accepted() >= n })
	for _, r := range h.sandbox.Requests()[before:] {
		got[r.DeviceToken] = r.ApnsID
	}
	for i := range n {
		tok := fmt.Sprintf("aa%04x", i)
		if want := fmt.Sprintf("00000000-0000-4000-8000-%012x", i); got[tok] != want {
			t.Errorf("token %s: replayed with apns-id %q, want %q", tok, got[tok], want)
		}
	}
	waitFor(t, func() bool { return d2.spool.Stats().PendingRecords == 0 })
}

// TestSpoolFull: beyond spool_max_bytes, wait:false sends are refused
// queue_full (retryable) and nothing of theirs is sent; wait:true still
// goes through.
func TestSpoolFull(t *testing.T) {
	h := newHarness(t, harnessOpts{top: "spool_max_bytes = 1048576"})
	hold := make(chan struct{})
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		if strings.HasPrefix(r.DeviceToken, "bb") {
			return apnstest.Reply{}
		}
		<-hold
		return apnstest.Reply{}
	})
	defer close(hold)
	c := h.dial()
	big := strings.Repeat("x", 3900)
	const n = 400 // 400 * ~4 KiB > 1 MiB
	for i := range n {
		c.send(fmt.Sprintf(`{"id":%d,"token":"aa%04x","alert":%q,"wait":false}`, i, i, big))
	}
	queued, full := 0, 0
	for i := range n {
		m := c.read()
		switch {
		case m["queued"] == true:
			queued++
		case m["error"] == ipc.CodeQueueFull && m["retryable"] == true:
			full++
		default:
			t.Fatalf("answer %d: %v", i, m)
		}
	}
	if full == 0 || queued == 0 || queued*4000 > 1<<20 {
		t.Errorf("queued %d, queue_full %d: want the spool bound (1 MiB) to refuse the rest", queued, full)
	}
	if m := c.do(`{"token":"bb01","alert":"x"}`); m["ok"] != true {
		t.Errorf("wait:true with the spool full: %v", m)
	}
	t.Logf("queued %d, refused queue_full %d", queued, full)
}

// TestDeadline: a send read after its deadline is answered expired and
// never sent; one still unanswered at its deadline is answered timeout
// then, well before request_timeout.
func TestDeadline(t *testing.T) {
	h := newHarness(t, harnessOpts{top: `request_timeout = "20s"`})
	h.sandbox.SetResponder(func(r *apnstest.Request) apnstest.Reply {
		if strings.HasPrefix(r.DeviceToken, "cc") {
			return apnstest.Reply{Delay: 10 * time.Second}
		}
		return apnstest.Reply{}
	})
	c := h.dial()
	past := time.Now().Add(-time.Second).UnixMilli()
	for _, wait := range []bool{true, false} {
		m := c.do(fmt.Sprintf(`{"token":"dd01","alert":"x","deadline":%d,"wait":%v}`, past, wait))
		wantErr(t, m, ipc.CodeExpired)
		if m["retryable"] != false {
			t.Errorf("expired must not be retryable: %v", m)
		}
	}
	start := time.Now()
	m := c.do(fmt.Sprintf(`{"token":"cc01","alert":"x","deadline":%d}`, time.Now().Add(500*time.Millisecond).UnixMilli()))
	wantErr(t, m, ipc.CodeTimeout)
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("timeout answered after %s: the deadline did not bound it", took)
	}
	if msg, _ := m["message"].(string); !strings.Contains(msg, "deadline") {
		t.Errorf("timeout message %q should say it was the deadline", msg)
	}
	if m := c.do(fmt.Sprintf(`{"token":"ee01","alert":"x","deadline":%d}`, time.Now().Add(time.Minute).UnixMilli())); m["ok"] != true {
		t.Errorf("a send within its deadline: %v", m)
	}
	for _, r := range h.sandbox.Requests() {
		if strings.HasPrefix(r.DeviceToken, "dd") {
			t.Errorf("an expired send reached APNs: %+v", r.DeviceToken)
		}
	}
}
