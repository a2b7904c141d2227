package ipc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestEveryCodeHasRetryable(t *testing.T) {
	all := []string{CodeBadJSON, CodeLineTooLong, CodeBadRequest, CodeUnknownOp, CodeInvalidToken, CodeUnknownApp,
		CodePayloadTooLarge, CodeQueueFull, CodeTimeout, CodeUnavailable, CodeShuttingDown, CodeReloadFailed, CodeForbidden, CodeExpired, CodeInternal}
	for _, c := range all {
		if _, ok := retryable[c]; !ok {
			t.Errorf("code %q has no entry in the retryable table", c)
		}
	}
	if len(retryable) != len(all) {
		t.Errorf("retryable table has %d codes, the protocol %d", len(retryable), len(all))
	}
	for _, c := range []string{CodeQueueFull, CodeTimeout, CodeUnavailable, CodeShuttingDown} {
		if !Errorf(c, "x").Retryable || !*ErrorResponse(Errorf(c, "x")).Retryable {
			t.Errorf("%s: not retryable", c)
		}
	}
	if Errorf(CodeBadRequest, "x").Retryable || Errorf(CodeExpired, "x").Retryable || Retryable("no_such_code") {
		t.Error("bad_request or an unknown code is retryable")
	}
}

// unixServer serves s on a Unix socket, so the peer's identity is known.
func unixServer(t *testing.T, s *Server) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "ipc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.CloseConns(context.Background()) })
	return &Client{Socket: path}
}

func TestOpsTableAndPermit(t *testing.T) {
	var seen []*Peer
	s := &Server{Backend: &fakeBackend{}, Permit: func(p *Peer, op *Op) *Error {
		seen = append(seen, p) // the reader goroutine calls Permit, one at a time per connection
		if op.Perm == Admin {
			return Errorf(CodeForbidden, "%s is for administrators", op.Name)
		}
		return nil
	}}
	c := unixServer(t, s)
	cn, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		req  map[string]any
		code string
	}{
		{map[string]any{"op": "ping"}, ""},
		{map[string]any{"token": "aa", "alert": "x"}, ""},
		{map[string]any{"op": "send", "token": "aa", "alert": "x"}, ""},
		{map[string]any{"op": "status"}, ""}, // the limited form: health only
		{map[string]any{"op": "reload"}, CodeForbidden},
		{map[string]any{"op": "frobnicate"}, CodeUnknownOp},
	} {
		r, err := cn.Do(ctx, tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if r.Error != tc.code {
			t.Errorf("%v: got %+v, want error %q", tc.req, r, tc.code)
		}
		if tc.req["op"] == "status" && (r.Health == "" || r.StatusReport != nil) {
			t.Errorf("status for a non-admin: got %+v, want the health answer only", r)
		}
		if tc.code == CodeUnknownOp && !strings.Contains(r.Message, "(known: send, ping, status, reload, channel_create, channel_get, channel_list, channel_delete)") {
			t.Errorf("unknown op message %q does not list the table", r.Message)
		}
	}
	if len(seen) != 5 {
		t.Fatalf("Permit called %d times, want 5 (not for an unknown op)", len(seen))
	}
	p := seen[0]
	if runtime.GOOS == "linux" {
		if !p.Known() || p.UID != os.Getuid() || p.GID != os.Getgid() || p.PID != os.Getpid() {
			t.Errorf("peer %v, want uid %d gid %d pid %d", p, os.Getuid(), os.Getgid(), os.Getpid())
		}
		want, _ := os.Getgroups()
		if fmt.Sprint(p.Groups()) != fmt.Sprint(want) && (len(want) != 0 || len(p.Groups()) != 0) {
			t.Errorf("peer groups %v, want %v", p.Groups(), want)
		}
		// From the kernel (SO_PEERGROUPS), not /proc, which
		// ProtectProc=invisible hides.
		if !p.fromKernel {
			t.Error("the peer's groups did not come from SO_PEERGROUPS")
		}
	} else if p.Known() {
		t.Errorf("peer %v known on %s", p, runtime.GOOS)
	}
}

func TestPeerOverTCPIsUnknown(t *testing.T) {
	var got *Peer
	c := startServer(t, &Server{Backend: &fakeBackend{}, Authorize: func(p *Peer) *Error { got = p; return nil }})
	if _, err := c.Do(context.Background(), map[string]any{"op": "ping"}); err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Known() || got.UID != -1 || !strings.Contains(got.Err.Error(), "not a Unix socket") {
		t.Errorf("peer over TCP: %v", got)
	}
}
