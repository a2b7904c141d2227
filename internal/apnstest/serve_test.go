package apnstest

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// serverFrames are the functions of the goroutines that serve one
// connection: the stand-in's own, and net/http's behind it.
var serverFrames = []string{
	"apnstest.(*Server).serveConn",
	"apnstest.(*connListener).Accept",
	"net/http.(*Server).Serve(",
	"net/http.(*conn).serve(",
	"net/http.(*http2serverConn).serve(",
}

// servingGoroutines returns the stacks of goroutines running one of
// serverFrames.
func servingGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		for _, f := range serverFrames {
			if strings.Contains(g, f) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// TestServingGoroutinesEnd checks that each connection's net/http Server
// and its one-connection listener go away with the connection: after a
// GOAWAY (the Server is shut down, the connection drains) and after Close
// (open connections are cut). Close waits for serveConn, which waits for
// net/http, so nothing may be left once it returns (handlers aside; none
// is running here).
func TestServingGoroutinesEnd(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Client()
	defer c.CloseIdleConnections()
	url := s.URL + "/3/device/" + devToken
	post(t, c, "POST", url, tokenHdr, []byte(`{}`)) // conn 1
	s.GoAway("")
	deadline := time.Now().Add(20 * time.Second)
	for s.OpenConnections() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.OpenConnections(); n != 0 {
		t.Fatalf("%d connections open after GOAWAY drained", n)
	}
	post(t, c, "POST", url, tokenHdr, []byte(`{}`)) // conn 2, left open
	if n := s.Connections(); n != 2 {
		t.Fatalf("Connections = %d, want 2", n)
	}
	s.Close()
	var left []string
	for time.Now().Before(deadline) {
		if left = servingGoroutines(); len(left) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d serving goroutines left after Close:\n%s", len(left), strings.Join(left, "\n\n"))
}
