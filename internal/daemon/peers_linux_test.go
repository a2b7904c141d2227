package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/pki"
)

// Other users are played by testdata/peerclient run through setpriv, so
// these tests need root (as the daemon has in production).

const (
	nobody  = 65534
	otherID = 65533
)

var (
	peerOnce sync.Once
	peerPath string
	peerErr  error
)

// peerClient builds testdata/peerclient where every user can run it.
func peerClient(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests play other users with setpriv and need root (run them as root, as scripts/test.sh does)")
	}
	peerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "apnsd-peer")
		if err != nil {
			peerErr = err
			return
		}
		os.Chmod(dir, 0o755)
		peerPath = filepath.Join(dir, "peerclient")
		out, err := exec.Command("go", "build", "-o", peerPath, "./testdata/peerclient").CombinedOutput()
		if err != nil {
			peerErr = fmt.Errorf("building testdata/peerclient: %w\n%s", err, out)
		}
	})
	if peerErr != nil {
		t.Fatal(peerErr)
	}
	return peerPath
}

// asUser is a command running peerclient args as uid/gid with groups.
func asUser(t *testing.T, uid, gid int, groups []int, args ...string) *exec.Cmd {
	t.Helper()
	bin := peerClient(t)
	g := "--clear-groups"
	if len(groups) > 0 {
		s := make([]string, len(groups))
		for i, x := range groups {
			s[i] = strconv.Itoa(x)
		}
		g = "--groups=" + strings.Join(s, ",")
	}
	return exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), g, "--", bin}, args...)...)
}

// peerDo runs one connection as uid/gid, sending lines, and returns the
// answers.
func peerDo(t *testing.T, sock string, uid, gid int, groups []int, lines ...string) []map[string]any {
	t.Helper()
	out, err := asUser(t, uid, gid, groups, append([]string{"do", sock}, lines...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("peerclient as uid %d: %v\n%s", uid, err, out)
	}
	var ms []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("peerclient as uid %d: %q is not an answer (%s)", uid, l, out)
		}
		ms = append(ms, m)
	}
	return ms
}

// openHarness is a harness whose socket every user may reach (mode 0666 in
// a 0755 directory), so that the daemon's own checks are what decides.
func openHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	o.socket = "mode = \"0666\"\n" + o.socket
	h := newHarness(t, o)
	must(t, os.Chmod(h.dir, 0o755))
	return h
}

func TestAllowListRefusesOthers(t *testing.T) {
	h := openHarness(t, harnessOpts{socket: "allow_uids = [4242]\nallow_gids = [4243]"})
	ping := `{"op":"ping"}`
	// Another uid, not in the lists: refused at connect, the uid named.
	out, _ := asUser(t, nobody, nobody, nil, "do", h.sock, ping).CombinedOutput()
	var r ipc.Response
	if err := json.Unmarshal([]byte(strings.SplitN(string(out), "\n", 2)[0]), &r); err != nil || r.Error != ipc.CodeForbidden || !strings.Contains(r.Message, "uid 65534") {
		t.Fatalf("got %q, want one forbidden line naming the uid", out)
	}
	if h.sandbox.Count() != 0 {
		t.Error("a refused peer reached APNs")
	}
	// The same uid with 4243 as a supplementary group (usermod -aG):
	// allowed, from the kernel's record (SO_PEERGROUPS), not /proc.
	if m := peerDo(t, h.sock, nobody, nobody, []int{100, 4243}, ping)[0]; m["pong"] != true {
		t.Errorf("supplementary group 4243: %v, want pong", m)
	}
	// Its uid in allow_uids.
	if m := peerDo(t, h.sock, 4242, nobody, nil, ping)[0]; m["pong"] != true {
		t.Errorf("uid 4242: %v, want pong", m)
	}
	// Root and apnsd's own uid pass although they are not listed
	// (systemctl reload runs apnsctl reload as apnsd's user).
	if m := peerDo(t, h.sock, 0, 0, nil, ping)[0]; m["pong"] != true {
		t.Errorf("root: %v, want pong", m)
	}
	// In-process (the daemon's own pid) is let through.
	if m := h.dial().do(ping); m["pong"] != true {
		t.Errorf("own probe refused: %v", m)
	}
	if !peerAllowed(&ipc.Peer{UID: 5, GID: 4243}, []int{4242}, []int{4243}) || peerAllowed(&ipc.Peer{UID: 5, GID: 5}, []int{4242}, nil) || !peerAllowed(&ipc.Peer{UID: 5}, nil, nil) {
		t.Error("peerAllowed rules")
	}
}

func TestAdminOps(t *testing.T) {
	h := openHarness(t, harnessOpts{socket: fmt.Sprintf("admin_uids = [%d]\nadmin_gids = [4250]", otherID)})
	status, reload := `{"op":"status","id":1}`, `{"op":"reload","id":2}`
	// Anyone: ping, and status in its health form only; reload refused.
	ms := peerDo(t, h.sock, nobody, nobody, nil, `{"op":"ping"}`, status, reload)
	if ms[0]["pong"] != true {
		t.Errorf("ping: %v", ms[0])
	}
	if ms[1]["ok"] != true || ms[1]["health"] == nil || ms[1]["apps"] != nil || ms[1]["config"] != nil {
		t.Errorf("status as nobody: %v, want ok with health only", ms[1])
	}
	wantErr(t, ms[2], ipc.CodeForbidden)
	// 300 refused reloads cost one log line a minute, not 300 (checked in
	// TestRefusalsAggregated); here: they did not reload.
	// An admin uid, and a member of an admin group: the full status, reload.
	for _, who := range []struct {
		uid    int
		groups []int
	}{{otherID, nil}, {nobody, []int{4250}}, {0, nil}} {
		ms := peerDo(t, h.sock, who.uid, nobody, who.groups, status, reload)
		if ms[0]["ok"] != true || ms[0]["apps"] == nil || ms[0]["config"] == nil {
			t.Errorf("status as uid %d groups %v: %v, want the full status", who.uid, who.groups, ms[0])
		}
		if ms[1]["ok"] != true {
			t.Errorf("reload as uid %d groups %v: %v", who.uid, who.groups, ms[1])
		}
	}
}

func TestAppAuthorization(t *testing.T) {
	h := openHarness(t, harnessOpts{})
	// The harness's one app, restricted to otherID and group 4251 by a
	// config reload.
	data, err := os.ReadFile(h.cfgPath)
	must(t, err)
	data = []byte(strings.Replace(string(data), "default_env = \"sandbox\"\n", fmt.Sprintf("default_env = \"sandbox\"\nallow_uids = [%d]\nallow_gids = [4251]\n", otherID), 1))
	must(t, os.WriteFile(h.cfgPath, data, 0o644))
	if _, err := h.d.Reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	send := func(extra string) string {
		return `{"token":"aabbccdd","alert":"x","app":"app"` + extra + `}`
	}
	ms := peerDo(t, h.sock, nobody, nobody, nil, send(""))
	wantErr(t, ms[0], ipc.CodeForbidden)
	if !strings.Contains(ms[0]["message"].(string), `app "app"`) {
		t.Errorf("message %q does not name the app", ms[0]["message"])
	}
	for _, who := range []struct {
		uid    int
		groups []int
	}{{otherID, nil}, {nobody, []int{4251}}, {0, nil}} {
		ms := peerDo(t, h.sock, who.uid, nobody, who.groups,
			send(""),
			send(`,"topic":"com.example.app"`),
			send(`,"topic":"com.example.app.voip","push_type":"voip"`),
			send(`,"topic":"com.example.other"`),
			send(`,"topic":"com.example.app.voip"`), // suffix of another push type
			send(`,"topic":"com.example.app.complication","push_type":"voip"`),
		)
		for i, want := range []string{"", "", "", ipc.CodeForbidden, ipc.CodeForbidden, ipc.CodeForbidden} {
			if want == "" {
				if ms[i]["ok"] != true {
					t.Errorf("uid %d groups %v, send %d: %v, want ok", who.uid, who.groups, i, ms[i])
				}
				continue
			}
			wantErr(t, ms[i], want)
		}
	}
	for _, r := range h.sandbox.Requests() {
		if r.Topic != "com.example.app" && r.Topic != "com.example.app.voip" {
			t.Errorf("a foreign topic reached APNs: %q", r.Topic)
		}
	}
}

// holdAs starts peerclient hold as uid and returns how many connections it
// holds; they stay open until the test ends.
func holdAs(t *testing.T, sock string, uid, n int) int {
	t.Helper()
	cmd := asUser(t, uid, uid, nil, "hold", sock, strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	must(t, err)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("hold as uid %d: %v", uid, err)
	}
	var held int
	if _, err := fmt.Sscanf(line, "held %d", &held); err != nil {
		t.Fatalf("hold as uid %d: %q", uid, line)
	}
	return held
}

func TestConnectionLimits(t *testing.T) {
	h := openHarness(t, harnessOpts{socket: "max_connections = 60\nmax_connections_per_uid = 25"})
	if got := holdAs(t, h.sock, nobody, 100); got != 25 {
		t.Errorf("uid %d holds %d connections, want the per-uid cap 25", nobody, got)
	}
	// A well-behaved client of another uid is answered at once.
	start := time.Now()
	if m := peerDo(t, h.sock, otherID, otherID, nil, `{"op":"ping"}`)[0]; m["pong"] != true {
		t.Errorf("uid %d while uid %d holds its maximum: %v", otherID, nobody, m)
	}
	t.Logf("another uid answered in %s while uid %d holds 25 connections", time.Since(start).Round(time.Millisecond), nobody)
	// Two more users fill the global cap: 25 + 25 + 10.
	holdAs(t, h.sock, 65532, 100)
	if got := holdAs(t, h.sock, 65531, 100); got != 10 {
		t.Errorf("third uid holds %d, want the 10 left under max_connections 60", got)
	}
	out, _ := asUser(t, 65530, 65530, nil, "do", h.sock, `{"op":"ping"}`).CombinedOutput()
	if !strings.Contains(string(out), `"error":"unavailable"`) || !strings.Contains(string(out), "max_connections") {
		t.Errorf("a connection beyond max_connections got %q, want unavailable naming the setting", out)
	}
	// APNs connections are not client connections: they still redial.
	h.sandbox.DropConnections()
	c := h.dial() // the daemon's own process is exempt from the caps
	if m := c.do(`{"token":"aabbccdd","alert":"after redial"}`); m["ok"] != true {
		t.Errorf("send after the APNs connection dropped, with every client slot taken: %v", m)
	}
}

func TestConnLimitsKeepFDsForAPNs(t *testing.T) {
	h := openHarness(t, harnessOpts{})
	cfg := h.d.current().cfg
	var old syscall.Rlimit
	must(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old))
	low := old
	low.Cur = 200
	must(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	var buf strings.Builder
	maxConns, perUID := connLimits(cfg, slog.New(slog.NewTextHandler(&buf, nil)))
	must(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old))
	if want := 200 - fdReserve(cfg); maxConns != want || perUID != min(cfg.Socket.MaxConnectionsPerUID, want) {
		t.Errorf("with RLIMIT_NOFILE 200: limits %d/%d, want %d (reserve %d)", maxConns, perUID, want, fdReserve(cfg))
	}
	if !strings.Contains(buf.String(), "max_connections lowered") {
		t.Errorf("no log line about the lowered limit: %q", buf.String())
	}
	if maxConns, _ := connLimits(cfg, slog.New(slog.DiscardHandler)); maxConns != cfg.Socket.MaxConnections {
		t.Errorf("with RLIMIT_NOFILE %d: max_connections %d, want the configured %d", old.Cur, maxConns, cfg.Socket.MaxConnections)
	}
}

func TestIdleAndLineTimeouts(t *testing.T) {
	h := openHarness(t, harnessOpts{socket: "idle_timeout = \"1s\"\nline_timeout = \"500ms\""})
	closedWithin := func(c net.Conn, within time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(within))
		_, err := io.Copy(io.Discard, c)
		return err == nil // EOF: apnsd closed it
	}
	dial := func() net.Conn {
		c, err := net.Dial("unix", h.sock)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	// Idle: closed after about a second.
	start := time.Now()
	if !closedWithin(dial(), 15*time.Second) {
		t.Error("an idle connection was not closed")
	}
	t.Logf("idle connection closed after %s (idle_timeout 1s)", time.Since(start).Round(time.Millisecond))
	// A partial line: closed after the line timeout although bytes keep
	// trickling in (one every 100 ms; the idle timeout alone would never
	// fire).
	slow := dial()
	go func() {
		for range 200 {
			if _, err := slow.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	start = time.Now()
	if !closedWithin(slow, 15*time.Second) {
		t.Error("a connection trickling a line was not closed")
	}
	t.Logf("trickling connection closed after %s (line_timeout 500ms)", time.Since(start).Round(time.Millisecond))
	// An answer owed keeps the connection open past the idle timeout.
	h.setResponders(func(*apnstest.Request) apnstest.Reply { return apnstest.Reply{Delay: 3 * time.Second} })
	busy := h.dial()
	start = time.Now()
	if m := busy.do(`{"token":"aabbccdd","alert":"slow"}`); m["ok"] != true {
		t.Errorf("a send answered after 3s on a connection with a 1s idle timeout: %v", m)
	}
	if time.Since(start) < 2*time.Second {
		t.Errorf("the stand-in answered in %s, the test needs 3s", time.Since(start))
	}
	// Lines keep a connection alive: one ping every 300 ms for 2 s.
	live := h.dial()
	for range 7 {
		if m := live.do(`{"op":"ping"}`); m["pong"] != true {
			t.Fatalf("ping: %v", m)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// runBinary starts the real apnsd (built from cmd/apnsd) for h's stand-ins
// with extra [socket] TOML, through prefix (e.g. prlimit), and waits until
// it answers. It is killed when the test ends.
func runBinary(t *testing.T, h *harness, socket string, prefix ...string) (sock string, pid int, logs *syncBuffer) {
	t.Helper()
	bin := buildApnsd(t)
	sock = filepath.Join(h.dir, "b.sock")
	cfgPath := h.procConfig("bin.toml", sock, filepath.Join(h.dir, "bin-state"), `request_timeout = "30s"`, "mode = \"0666\"\n"+socket)
	logs = &syncBuffer{}
	args := append(append([]string(nil), prefix...), bin, "-config", cfgPath, "-log-format", "text")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr, cmd.Stdout = logs, logs
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"op": "ping"})
		cancel()
		if err == nil && r.OK {
			break
		}
		select {
		case <-exited:
			t.Fatalf("apnsd exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("apnsd did not answer: %v\n%s", err, logs.String())
		}
	}
	return sock, cmd.Process.Pid, logs
}

// TestStarvationRealBinary is the attack of issue 12 against the real
// binary with its default limits and an fd limit of 1024: another user
// opens 2,000 connections; root's send is still answered at once, and an
// APNs connection that drops is redialed.
func TestStarvationRealBinary(t *testing.T) {
	h := openHarness(t, harnessOpts{})
	sock, _, logs := runBinary(t, h, "", "prlimit", "--nofile=1024:1024", "--")
	held := holdAs(t, sock, nobody, 2000)
	if held != 128 {
		t.Errorf("uid %d holds %d connections, want the default per-uid cap 128", nobody, held)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"token": "aabbccdd", "alert": "root"})
	if err != nil || !r.OK {
		t.Fatalf("root's send while uid %d holds %d connections: %v %+v", nobody, held, err, r)
	}
	t.Logf("root's send answered in %s while uid %d holds %d connections", time.Since(start).Round(time.Millisecond), nobody, held)
	for i := range 3 {
		h.sandbox.DropConnections()
		r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"token": "aabbccdd", "alert": "after drop"})
		if err != nil || !r.OK {
			t.Fatalf("send %d after the APNs connection dropped: %v %+v\n%s", i, err, r, logs.String())
		}
	}
	// Four more users fill max_connections (512): root still gets in (the
	// privileged reserve), and APNs connections still redial (the fd
	// reserve).
	total := held
	for _, uid := range []int{65533, 65532, 65531, 65530} {
		total += holdAs(t, sock, uid, 200)
	}
	if total != 512 {
		t.Errorf("%d connections held by five users, want max_connections 512", total)
	}
	out, _ := asUser(t, 65529, 65529, nil, "do", sock, `{"op":"ping"}`).CombinedOutput()
	if !strings.Contains(string(out), "max_connections") {
		t.Errorf("a sixth user got %q, want unavailable (max_connections)", out)
	}
	for i := range 3 {
		h.sandbox.DropConnections()
		start := time.Now()
		r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"token": "aabbccdd", "alert": "full socket"})
		if err != nil || !r.OK {
			t.Fatalf("root's send %d with the socket full and the APNs connection dropped: %v %+v\n%s", i, err, r, logs.String())
		}
		t.Logf("root's send with 512 connections held and APNs redialed: %s", time.Since(start).Round(time.Millisecond))
	}
	if n := strings.Count(logs.String(), "connection limit reached"); n > 12 {
		t.Errorf("%d log lines for refused connections, want them aggregated:\n%s", n, logs.String())
	}
}

func rssKB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(rest)[0])
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestMemoryPerConnection: 500 connections that write requests and never
// read their answers. Memory grows by a bounded amount per connection, the
// connections are cut once they have not read for idle_timeout, and the
// memory is returned after they close. The numbers are printed.
func TestMemoryPerConnection(t *testing.T) {
	h := openHarness(t, harnessOpts{})
	sock, pid, _ := runBinary(t, h, "max_connections = 600\nmax_connections_per_uid = 600\nidle_timeout = \"5s\"")
	before := rssKB(t, pid)
	for _, line := range []string{`{"op":"ping","id":"a-long-enough-request-id-to-count"}`, `{"token":"aa","alert":"x","wait":false,"app":"nope"}`} {
		cmd := asUser(t, nobody, nobody, nil, "flood", sock, "500", line)
		stdin, err := cmd.StdinPipe()
		must(t, err)
		stdout, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		if l, _ := bufio.NewReader(stdout).ReadString('\n'); !strings.HasPrefix(l, "flooding") {
			t.Fatalf("flood: %q", l)
		}
		peak := 0
		for range 8 {
			time.Sleep(500 * time.Millisecond)
			peak = max(peak, rssKB(t, pid))
		}
		stdin.Close()
		cmd.Wait()
		// Closed by the clients; give the runtime time to return memory.
		after := 0
		for range 40 {
			time.Sleep(500 * time.Millisecond)
			if after = rssKB(t, pid); after < before+(peak-before)/3 {
				break
			}
		}
		perConn := (peak - before) / 500
		t.Logf("%s: RSS before %d MB, during 500 non-reading connections %d MB (%d KB per connection), after they closed %d MB",
			line[:20], before>>10, peak>>10, perConn, after>>10)
		if perConn > 256 {
			t.Errorf("%d KB per connection: want at most 256", perConn)
		}
		if after > before+(peak-before)/2+8<<10 {
			t.Errorf("RSS %d MB after the connections closed (before %d MB, peak %d MB): not returned", after>>10, before>>10, peak>>10)
		}
	}
}

// TestListenUnixRace: in a world-writable directory, an attacker swaps the
// socket path for a symlink to a root-owned 0600 file as fast as it can
// while apnsd starts again and again. The file's mode and group never
// change, and every start gives a socket with the wanted mode.
func TestListenUnixRace(t *testing.T) {
	dir := shortTempDir(t)
	must(t, os.Chmod(dir, 0o777)) // world-writable, no sticky bit
	target := filepath.Join(shortTempDir(t), "secret")
	must(t, os.WriteFile(target, []byte("x"), 0o600))
	path := filepath.Join(dir, "apnsd.sock")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the attacker
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// As soon as a socket shows up: swap it for a symlink.
			if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
				os.Remove(path)
				os.Symlink(target, path)
			}
		}
	}()
	starts := 0
	for range 60 {
		os.Remove(path) // what the attacker left
		l, err := ListenUnix(path, 0o666, "100")
		if err != nil {
			continue // the attacker's symlink was in the way: refused, fine
		}
		starts++
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 && fi.Mode().Perm() != 0o666 {
			t.Errorf("socket mode %v, want 0666", fi.Mode().Perm())
		}
		l.Close()
	}
	close(stop)
	wg.Wait()
	fi, err := os.Stat(target)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o600 || st.Gid != 0 {
		t.Errorf("the attacker's target is now %v gid %d, want 0600 gid 0", fi.Mode().Perm(), st.Gid)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".apnsd-") {
			t.Errorf("private directory %s left behind", e.Name())
		}
	}
	t.Logf("%d of 60 starts got their socket while the attacker raced", starts)
	// Without the attacker: the socket has the mode and group, and Close
	// removes it.
	os.Remove(path)
	l, err := ListenUnix(path, 0o660, "100")
	must(t, err)
	fi, err = os.Lstat(path)
	must(t, err)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 100 {
		t.Errorf("socket %v gid %d, want a 0660 socket of group 100", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	if got := l.Addr().String(); got != path {
		t.Errorf("listener address %q, want %q", got, path)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket not removed by Close: %v", err)
	}
}

// lazyFile is an io.Writer appending to a file named once the harness
// directory exists.
type lazyFile struct {
	mu sync.Mutex
	f  *os.File
}

func (l *lazyFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return len(p), nil
	}
	return l.f.Write(p)
}

// TestWatcherIgnoresItsOwnLog: with log_level debug and the log file in a
// watched credential directory, the watcher does not feed on its own log;
// a real credential change is still picked up.
func TestWatcherIgnoresItsOwnLog(t *testing.T) {
	lf := &lazyFile{}
	var logPath string
	log := slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHarnessWithInit(t, harnessOpts{watch: fastWatch, logger: log}, func(h *harness, _ *pki.Issued) {
		logPath = filepath.Join(h.dir, "apnsd.log")
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		must(h.t, err)
		h.t.Cleanup(func() { f.Close() })
		lf.mu.Lock()
		lf.f = f
		lf.mu.Unlock()
	})
	// Something else in the directory changes too.
	must(t, os.WriteFile(filepath.Join(h.dir, "unrelated.txt"), []byte("x"), 0o644))
	time.Sleep(2 * time.Second)
	data, err := os.ReadFile(logPath)
	must(t, err)
	if n := strings.Count(string(data), "\n"); n > 30 {
		t.Fatalf("%d log lines in 2 s of an idle daemon: the watcher feeds on its log:\n%.2000s", n, data)
	}
	if strings.Contains(string(data), "unrelated.txt") || strings.Contains(string(data), "apnsd.log") {
		t.Errorf("events for files that are not credentials were logged:\n%s", data)
	}
	next := h.newSandboxCert()
	must(t, next.WriteFiles(filepath.Join(h.dir, "sb.crt"), filepath.Join(h.dir, "sb.key")))
	h.waitPresents(h.dial(), next.Cert)
}

// Environments never used: a shutdown logs no warning about their
// connections.
func TestShutdownWithoutWarnings(t *testing.T) {
	var logs syncBuffer
	h := newHarness(t, harnessOpts{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitFor(t, func() bool {
		st := h.d.Status()
		return st.Apps[0].Envs[0].State == "up" && st.Apps[0].Envs[1].State == "up"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.d.Shutdown(ctx)
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a shutdown of an unused daemon warned:\n%s", logs.String())
	}
}

// TestRefusalsAggregated: 300 refused reloads from one user cost one log
// line (plus one with the count when the interval ends), not 300; an
// admin's reload is logged with who asked.
func TestRefusalsAggregated(t *testing.T) {
	var logs syncBuffer
	h := openHarness(t, harnessOpts{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	lines := make([]string, 300)
	for i := range lines {
		lines[i] = `{"op":"reload"}`
	}
	for _, m := range peerDo(t, h.sock, nobody, nobody, nil, lines...) {
		wantErr(t, m, ipc.CodeForbidden)
	}
	if n := strings.Count(logs.String(), "refused an admin op"); n != 1 {
		t.Errorf("%d log lines for 300 refused reloads, want 1 now:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "check=socket.admin_uids/admin_gids") || !strings.Contains(logs.String(), "uid=65534") {
		t.Errorf("the refusal does not say which check failed and who:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "reload requested") {
		t.Errorf("a refused reload was run:\n%s", logs.String())
	}
	peerDo(t, h.sock, 0, 0, nil, `{"op":"reload"}`)
	if !strings.Contains(logs.String(), `msg="reload requested" component=daemon by="reload op" uid=0`) || !strings.Contains(logs.String(), " pid=") {
		t.Errorf("an admin's reload is not logged with who asked:\n%s", logs.String())
	}
}
