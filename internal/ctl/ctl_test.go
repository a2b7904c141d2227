package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apnsdcli "github.com/apnsd/apnsd/cmd/apnsd/cli"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/daemon"
	"github.com/apnsd/apnsd/internal/demo"
)

// startDemo runs a real daemon on the demo setup (stand-ins answering by
// token prefix) and returns its socket and config path.
func startDemo(t *testing.T) (sock, cfgPath string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "apnsctl-t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dm, err := demo.New(filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dm.Close)
	cfg, err := config.Load(dm.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Options{})
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
	return cfg.Socket.Path, dm.ConfigPath
}

func run(stdin string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Main(args, strings.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

func TestExitCodes(t *testing.T) {
	sock, _ := startDemo(t)
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"delivered", []string{"send", "-token", "<a1b2 c3d4>", "-alert", "hi"}, ExitOK, "delivered apns-id=", ""},
		{"queued", []string{"send", "-token", "a1b2", "-badge", "0", "-no-wait"}, ExitOK, "queued", ""},
		{"apns refused", []string{"send", "-token", "0410aa", "-alert", "hi", "-env", "production"}, ExitAPNsRefused, "", "410 Unregistered"},
		{"apnsd refused", []string{"send", "-token", "xyz", "-alert", "hi"}, ExitRefused, "", "invalid_token"},
		{"unknown app", []string{"send", "-token", "aa", "-alert", "hi", "-app", "nope"}, ExitRefused, "", "unknown_app"},
		{"payload file", []string{"send", "-token", "aa", "-payload", "@/nonexistent"}, ExitUsage, "", "-payload"},
		{"nothing to send", []string{"send", "-token", "aa"}, ExitUsage, "", "nothing to send"},
		{"flags without token", []string{"send", "-alert", "x"}, ExitUsage, "", "-token is required"},
		{"unknown command", []string{"frob"}, ExitUsage, "", "unknown command"},
		{"ping", []string{"ping"}, ExitOK, "pong from apnsd", ""},
		{"reload", []string{"reload"}, ExitOK, "nothing changed", ""},
		{"json", []string{"send", "-json", "-token", "0400aa", "-alert", "x"}, ExitAPNsRefused, `"reason":"BadDeviceToken"`, ""},
	}
	for _, c := range cases {
		code, out, errOut := run("", append([]string{"-socket", sock}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.stdout) || !strings.Contains(errOut, c.stderr) {
			t.Errorf("%s: code %d stdout %q stderr %q; want code %d, stdout ~%q, stderr ~%q", c.name, code, out, errOut, c.code, c.stdout, c.stderr)
		}
	}
	code, _, errOut := run("", "-socket", filepath.Join(t.TempDir(), "none.sock"), "ping")
	if code != ExitUnreachable || !strings.Contains(errOut, "not reachable") {
		t.Errorf("unreachable: code %d stderr %q", code, errOut)
	}
}

func TestBulkPipelined(t *testing.T) {
	sock, _ := startDemo(t)
	var in strings.Builder
	const n = 500
	for i := range n {
		tok := "a1b2"
		if i == 250 {
			tok = "0410aa"
		}
		in.WriteString(`{"id":` + itoa(i) + `,"token":"` + tok + `","alert":"x"}` + "\n")
		if i%100 == 0 {
			in.WriteString("\n   \n") // blank lines get no answer
		}
	}
	code, out, errOut := run(in.String(), "-socket", sock, "send")
	if code != ExitAPNsRefused {
		t.Errorf("code %d (stderr %q), want %d for one 410 in the batch", code, errOut, ExitAPNsRefused)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("%d answer lines for %d requests", len(lines), n)
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["id"] != float64(i) {
			t.Fatalf("answer %d: %q", i, l)
		}
	}
	// A bad line in the batch: apnsd's refusal is the most severe code.
	code, out, _ = run("{\"token\":\"aa\",\"alert\":\"x\"}\nnot json\n", "-socket", sock, "send")
	if code != ExitRefused || strings.Count(out, "\n") != 2 {
		t.Errorf("bad line in batch: code %d, out %q", code, out)
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestStatusOutput(t *testing.T) {
	sock, _ := startDemo(t)
	run("", "-socket", sock, "send", "-token", "aa", "-alert", "x")
	code, out, _ := run("", "-socket", sock, "status")
	if code != ExitOK {
		t.Fatalf("status code %d", code)
	}
	for _, want := range []string{"APP", "demo", "sandbox*", "production", "certificate", "1/1", "com.example.demo"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = run("", "-socket", sock, "status", "-json")
	var m map[string]any
	if code != ExitOK || json.Unmarshal([]byte(out), &m) != nil || m["apps"] == nil {
		t.Errorf("status -json: code %d, %q", code, out)
	}
}

// TestMain lets the test binary play apnsd for apnsctl check (which runs
// apnsd -check): with APNSCTL_TEST_AS_APNSD=1 it is apnsd's Main.
func TestMain(m *testing.M) {
	if os.Getenv("APNSCTL_TEST_AS_APNSD") == "1" {
		os.Exit(apnsdcli.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func TestCheck(t *testing.T) {
	_, cfgPath := startDemo(t)
	t.Setenv("APNSCTL_TEST_AS_APNSD", "1")
	apnsd := os.Args[0]
	if code, out, errOut := run("", "check", "-apnsd", apnsd, "-config", cfgPath); code != ExitOK || !strings.Contains(out, "OK") {
		t.Errorf("valid config: code %d out %q err %q", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("request_timeout = \"1s\"\nqueue_sise = 3\n"), 0o644)
	code, _, errOut := run("", "check", "-apnsd", apnsd, "-config", bad)
	if code != ExitRefused || !strings.Contains(errOut, "queue_sise") || !strings.Contains(errOut, "bad.toml") {
		t.Errorf("invalid config: code %d stderr %q", code, errOut)
	}
	code, _, errOut = run("", "check", "-apnsd", filepath.Join(t.TempDir(), "no-apnsd"), "-config", cfgPath)
	if code != ExitRefused || !strings.Contains(errOut, "no-apnsd") {
		t.Errorf("without apnsd: code %d stderr %q", code, errOut)
	}
}

func TestUnregisteredCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "u.jsonl")
	os.WriteFile(file, []byte(`{"time":"2026-11-01T10:00:00Z","app":"shop","env":"production","token":"aabb","reason":"Unregistered","timestamp":1761991200000}
{"time":"`+time.Now().UTC().Format(time.RFC3339)+`","app":"other","env":"sandbox","token":"ccdd","reason":"ExpiredToken"}
not json
`), 0o644)
	code, out, errOut := run("", "unregistered", "-file", file)
	if code != ExitOK || !strings.Contains(out, "aabb") || !strings.Contains(out, "ccdd") || !strings.Contains(out, "2025-11-01T10:00:00Z") || !strings.Contains(errOut, ":3: not a record") {
		t.Errorf("code %d out %q err %q", code, out, errOut)
	}
	code, out, _ = run("", "unregistered", "-file", file, "-since", "24h", "-json")
	if code != ExitOK || strings.Contains(out, "aabb") || !strings.Contains(out, `"token":"ccdd"`) {
		t.Errorf("-since: code %d out %q", code, out)
	}
	sock, _ := startDemo(t)
	code, _, errOut = run("", "-socket", sock, "unregistered")
	if code != ExitRefused || !strings.Contains(errOut, "no unregistered_file") {
		t.Errorf("without a file configured: code %d err %q", code, errOut)
	}
}

// apnsctl send -tokens-file, send -channel and channel create|get|list|delete
// against a real daemon on the demo setup.
func TestMulticastAndChannelCommands(t *testing.T) {
	sock, _ := startDemo(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.txt")
	var lines []string
	lines = append(lines, "# a comment", "<a1b2 c3d4>", "0410aabb", "", "xyz")
	for i := range 1500 {
		lines = append(lines, fmt.Sprintf("%064x", i+1))
	}
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run("", "-socket", sock, "send", "-tokens-file", tokens, "-alert", "hi")
	outLines := strings.Split(strings.TrimSpace(out), "\n")
	if code != ExitRefused || len(outLines) != 1503 || !strings.Contains(errOut, "1503 tokens: 1501 delivered, 2 failed") {
		t.Fatalf("tokens-file: code %d, %d lines, stderr %q", code, len(outLines), errOut)
	}
	for i, want := range []string{"a1b2c3d4 ", "0410aabb ", "xyz "} {
		if !strings.HasPrefix(outLines[i], want) {
			t.Errorf("line %d %q, want it to start with %q", i, outLines[i], want)
		}
	}
	if !strings.Contains(outLines[1], "410 Unregistered") || !strings.Contains(outLines[2], "invalid_token") || !strings.Contains(outLines[1502], "delivered") {
		t.Errorf("per-token lines: %q / %q / %q", outLines[1], outLines[2], outLines[1502])
	}
	code, out, _ = run("a1\nb2\n", "-socket", sock, "send", "-tokens-file", "-", "-alert", "hi", "-no-wait")
	if code != ExitOK || strings.Count(out, "queued") != 2 {
		t.Errorf("tokens from stdin, no wait: code %d, %q", code, out)
	}
	code, id, errOut := run("", "-socket", sock, "channel", "create", "-storage", "latest")
	id = strings.TrimSpace(id)
	if code != ExitOK || id == "" {
		t.Fatalf("channel create: code %d, %q, %q", code, id, errOut)
	}
	if code, out, _ := run("", "-socket", sock, "channel", "get", "-id", id); code != ExitOK || !strings.Contains(out, "storage latest") {
		t.Errorf("channel get: %d %q", code, out)
	}
	if code, out, _ := run("", "-socket", sock, "channel", "list"); code != ExitOK || strings.TrimSpace(out) != id {
		t.Errorf("channel list: %d %q", code, out)
	}
	payload := fmt.Sprintf(`{"aps":{"event":"update","timestamp":%d,"content-state":{"n":1}}}`, time.Now().Unix())
	if code, out, errOut := run("", "-socket", sock, "send", "-channel", id, "-payload", payload); code != ExitOK || !strings.Contains(out, "delivered") {
		t.Errorf("send -channel: %d %q %q", code, out, errOut)
	}
	if code, out, _ := run("", "-socket", sock, "status"); code != ExitOK || !strings.Contains(out, "CHANNELS") || !strings.Contains(out, "channel management") {
		t.Errorf("status: %d\n%s", code, out)
	}
	if code, out, _ := run("", "-socket", sock, "channel", "delete", "-id", id); code != ExitOK || !strings.Contains(out, "deleted") {
		t.Errorf("channel delete: %d %q", code, out)
	}
	if code, _, errOut := run("", "-socket", sock, "channel", "get", "-id", id); code != ExitAPNsRefused || !strings.Contains(errOut, "refused by APNs") {
		t.Errorf("get after delete: %d %q", code, errOut)
	}
	for _, args := range [][]string{
		{"channel"}, {"channel", "frob"}, {"channel", "get"}, {"channel", "create"},
		{"send", "-token", "aa", "-channel", "x", "-alert", "x"}, {"send", "-tokens-file", filepath.Join(dir, "none"), "-alert", "x"},
	} {
		if code, _, _ := run("", append([]string{"-socket", sock}, args...)...); code != ExitUsage {
			t.Errorf("%v: code %d, want usage", args, code)
		}
	}
}

// fakeApnsd serves a Unix socket with a script: answer(conn, n, line)
// returns the answer line for the n-th request line overall, or "" to
// close the connection without answering.
func fakeApnsd(t *testing.T, answer func(n int, line map[string]any) string) (sock string, lines func() []map[string]any) {
	t.Helper()
	dir, err := os.MkdirTemp("", "apnsctl-f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "f.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var seen []map[string]any
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					b, err := br.ReadBytes('\n')
					if err != nil {
						return
					}
					var m map[string]any
					json.Unmarshal(b, &m)
					mu.Lock()
					seen = append(seen, m)
					n := len(seen)
					mu.Unlock()
					a := answer(n, m)
					if a == "" {
						return
					}
					c.Write([]byte(a + "\n"))
				}
			}()
		}
	}()
	return sock, func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return append([]map[string]any(nil), seen...)
	}
}

// apnsctl send sets "deadline" from -timeout, resends after a connection
// closed without an answer, sends shutting_down again at once on a fresh
// connection and queue_full/unavailable again after a backoff, and reports
// the final answer.
func TestSendRetriesAndResends(t *testing.T) {
	sock, seen := fakeApnsd(t, func(n int, m map[string]any) string {
		switch n {
		case 1:
			return "" // EOF: written, never answered
		case 2:
			return `{"ok":false,"error":"shutting_down","message":"x","retryable":true}`
		case 3:
			return `{"ok":false,"error":"queue_full","message":"x","retryable":true}`
		case 4:
			return `{"ok":false,"error":"unavailable","message":"x","retryable":true}`
		}
		return `{"ok":true,"status":200,"apns_id":"00000000-0000-4000-8000-000000000001"}`
	})
	start := time.Now()
	code, out, errOut := run("", "-socket", sock, "-timeout", "20s", "send", "-token", "a1b2", "-alert", "x")
	if code != ExitOK || !strings.Contains(out, "delivered") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	got := seen()
	if len(got) != 5 {
		t.Fatalf("apnsd saw %d lines, want 5: %v", len(got), got)
	}
	dl, _ := got[0]["deadline"].(float64)
	want := start.Add(20 * time.Second).UnixMilli()
	if dl < float64(want-2000) || dl > float64(want+2000) {
		t.Errorf("deadline %v, want about %d (start + -timeout)", got[0]["deadline"], want)
	}
	for i, m := range got {
		if m["deadline"] != got[0]["deadline"] || m["token"] != "a1b2" {
			t.Errorf("line %d: %v, want the same request and deadline each time", i, m)
		}
	}
}

// A non-retryable refusal is not sent again; a retryable one is not sent
// again past -timeout.
func TestSendDoesNotRetryFinalOrPastTimeout(t *testing.T) {
	sock, seen := fakeApnsd(t, func(n int, m map[string]any) string {
		if m["token"] == "bad1" {
			return `{"ok":false,"error":"expired","message":"x","retryable":false}`
		}
		return `{"ok":false,"error":"queue_full","message":"x","retryable":true}`
	})
	if code, _, _ := run("", "-socket", sock, "send", "-token", "bad1", "-alert", "x"); code != ExitRefused || len(seen()) != 1 {
		t.Errorf("expired: exit %d after %d lines, want 2 after 1", code, len(seen()))
	}
	start := time.Now()
	code, _, _ := run("", "-socket", sock, "-timeout", "700ms", "send", "-token", "full", "-alert", "x")
	if code == ExitOK || time.Since(start) > 10*time.Second || len(seen()) < 3 {
		t.Errorf("queue_full until the timeout: exit %d after %s and %d lines", code, time.Since(start), len(seen()))
	}
}

// Bulk mode: every line gets the deadline, answers come out in input order
// even when some lines are sent again, and a connection that ends with
// answers owed is reopened and the unanswered lines written again.
func TestBulkResendsInOrder(t *testing.T) {
	var once sync.Once
	sock, seen := fakeApnsd(t, func(n int, m map[string]any) string {
		tok, _ := m["token"].(string)
		if tok == "0003" {
			cut := false
			once.Do(func() { cut = true })
			if cut {
				return "" // the connection ends; 0003 and what follows are resent
			}
		}
		if tok == "0005" && n < 12 {
			return fmt.Sprintf(`{"id":%q,"ok":false,"error":"queue_full","message":"x","retryable":true}`, tok)
		}
		return fmt.Sprintf(`{"id":%q,"ok":true,"status":200}`, tok)
	})
	var in strings.Builder
	for i := range 8 {
		fmt.Fprintf(&in, `{"token":"%04d","alert":"x"}`+"\n", i)
	}
	code, out, errOut := run(in.String(), "-socket", sock, "send")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 8 {
		t.Fatalf("%d answers, want 8: %q", len(lines), out)
	}
	for i, l := range lines {
		if !strings.Contains(l, fmt.Sprintf(`"id":"%04d"`, i)) || !strings.Contains(l, `"ok":true`) {
			t.Errorf("answer %d: %s", i, l)
		}
	}
	for _, m := range seen() {
		if _, ok := m["deadline"]; !ok {
			t.Errorf("line without a deadline: %v", m)
		}
	}
}

// A failed reload prints each error once (the answer's message quotes the
// first of the report's errors).
func TestReloadFailurePrintedOnce(t *testing.T) {
	sock, cfgPath := startDemo(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var certs []string
	for _, a := range cfg.Apps {
		for _, e := range []*config.EnvConfig{a.Sandbox, a.Production} {
			if e != nil && e.Cert.CertFile != "" {
				certs = append(certs, e.Cert.CertFile)
			}
		}
	}
	if len(certs) == 0 {
		t.Fatal("the demo has no certificate files")
	}
	for _, f := range certs {
		if err := os.WriteFile(f, []byte("garbage\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, _, errOut := run("", "-socket", sock, "reload")
	if code != ExitRefused {
		t.Errorf("reload with broken certificates: exit %d, want %d", code, ExitRefused)
	}
	for _, f := range certs {
		if n := strings.Count(errOut, f+":"); n != 1 {
			t.Errorf("%s named %d times, want once:\n%s", f, n, errOut)
		}
	}
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append(data, "\nbogus_key = 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, errOut = run("", "-socket", sock, "reload"); strings.Count(errOut, "bogus_key") != 1 {
		t.Errorf("config error printed %d times, want once:\n%s", strings.Count(errOut, "bogus_key"), errOut)
	}
}
