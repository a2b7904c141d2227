package apns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/pki"
	"golang.org/x/net/http2"
)

// sinkPeer accepts connections, allows 100 streams and never answers.
func sinkPeer(pc *peerConn) {
	if pc.handshake(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}) != nil {
		return
	}
	r := pc.reader(serveOpts{})
	for {
		if _, err := r.next(); err != nil {
			return
		}
	}
}

func realisticNotification(i int) *Notification {
	return &Notification{
		DeviceToken: fmt.Sprintf("%064x", i), Topic: "com.example.app", PushType: PushTypeAlert,
		ApnsID: NewUUID(), Priority: 10,
		Payload: []byte(`{"aps":{"alert":{"title":"Hello","body":"You have a new message"},"badge":1}}`),
	}
}

// TestQueueMemory: 100000 notifications queued against a server that does
// not answer; the heap grows by at most maxPerQueued bytes each.
func TestQueueMemory(t *testing.T) {
	const n = 100000
	const maxPerQueued = 2048 // the stated target: <= 2 KiB per queued notification
	p := newPeer(t, sinkPeer)
	c := p.client(t, func(o *ClientOptions) { o.QueueSize = n })
	// Prove the connection is up before measuring.
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Connections == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var answered atomic.Int64
	var errs sync.Map
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	far := time.Now().Add(time.Hour)
	for i := range n {
		// A per-request closure, as a real caller has.
		err := c.Enqueue(realisticNotification(i).Request(), far, func(_ *Response, err error) {
			answered.Add(1)
			if !errors.Is(err, ErrClosed) {
				errs.Store(i, err)
			}
		})
		if err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if err := c.Enqueue(testReq("ff"), far, func(*Response, error) {}); !errors.Is(err, ErrQueueFull) {
		// Up to 100 left the queue for streams, so a few more fit; fill it.
		for i := 0; err == nil && i < 200; i++ {
			err = c.Enqueue(testReq("ff"), far, func(*Response, error) { answered.Add(1) })
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Errorf("beyond QueueSize: got %v, want ErrQueueFull", err)
		}
	}
	// The connection takes the server's limit of 100 once its warm-up
	// (one stream until an answer, which never comes, or warmUp) is over;
	// on a loaded machine the writer may get there after the enqueues.
	st := c.Status()
	for deadline := time.Now().Add(20 * time.Second); st.InFlight < 100 && time.Now().Before(deadline); st = c.Status() {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	st = c.Status()
	per := (int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc)) / n
	t.Logf("%d notifications queued (%d queued, %d in flight): heap %+d bytes, %d bytes per queued notification (bound %d)",
		n, st.Queued, st.InFlight, int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc), per, maxPerQueued)
	if per > maxPerQueued {
		t.Errorf("%d bytes per queued notification, want <= %d", per, maxPerQueued)
	}
	if st.InFlight != 100 {
		t.Errorf("in flight %d, want the server's limit 100", st.InFlight)
	}
	c.Close()
	if got := answered.Load(); got < n {
		t.Errorf("after Close %d of %d callbacks ran", got, n)
	}
	errs.Range(func(k, v any) bool {
		if _, ok := v.(*ConnError); !ok {
			t.Errorf("request %v: %v, want ErrClosed or a *ConnError", k, v)
			return false
		}
		return true
	})
}

// TestNoGoroutineLeftAfterClose: with requests queued and in flight.
func TestNoGoroutineLeftAfterClose(t *testing.T) {
	checkNoLeak(t)
	p := newPeer(t, sinkPeer)
	c := p.client(t, func(o *ClientOptions) { o.Connections = 3 })
	rs := newResults(t, 500)
	for i := range 500 {
		c.Enqueue(testReq("abcd"), time.Time{}, rs.done(i))
	}
	time.Sleep(200 * time.Millisecond)
	c.Close()
	for i, r := range rs.wait(5 * time.Second) {
		var ce *ConnError
		if !errors.Is(r.err, ErrClosed) && !errors.As(r.err, &ce) {
			t.Errorf("request %d: %v", i, r.err)
		}
	}
	if err := c.Enqueue(testReq("abcd"), time.Time{}, func(*Response, error) { t.Error("callback after a refused Enqueue") }); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: %v", err)
	}
}

// nghttpd starts Debian's nghttpd (package nghttp2-server) on loopback
// with a throwaway certificate; it serves dir.
func nghttpd(t testing.TB, dir string) (url string, ca *pki.CA) {
	t.Helper()
	bin, err := exec.LookPath("nghttpd")
	if err != nil {
		t.Skip("nghttpd not installed (scripts/deps.sh installs nghttp2-server)")
	}
	ca, err = pki.NewCA("nghttpd CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.ServerCert()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	certF, keyF := filepath.Join(tmp, "cert.pem"), filepath.Join(tmp, "key.pem")
	if err := sc.WriteFiles(certF, keyF); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-d", dir, strconv.Itoa(port), keyF, certF)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := net.Dial("tcp", addr)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nghttpd did not start: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "https://" + addr, ca
}

func TestAgainstNghttpd(t *testing.T) {
	checkNoLeak(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hello from nghttpd\n"), 0o644)
	url, ca := nghttpd(t, dir)
	c, err := NewClient(ClientOptions{Endpoint: url, RootCAs: ca.Pool(), Connections: 2})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer c.Close()
	res, err := c.Do(ctxFor(t, 10*time.Second), &Request{Method: "GET", Path: "/hello"})
	if err != nil || res.StatusCode != 200 || string(res.Body) != "hello from nghttpd\n" {
		t.Fatalf("GET /hello: %+v %v", res, err)
	}
	const n = 5000
	rs := newResults(t, n)
	for i := range n {
		if err := c.Enqueue(realisticNotification(i).Request(), time.Now().Add(30*time.Second), rs.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range rs.wait(30 * time.Second) {
		if r.err != nil || r.res.StatusCode != 404 {
			t.Fatalf("request %d: %+v %v (nghttpd answers 404 for /3/device/...)", i, r.res, r.err)
		}
	}
	c.Close()
}

// cpuNanos is this process's user+system CPU time.
func cpuNanos() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchSend drives b.N notifications through Enqueue with inFlight
// outstanding and reports CPU per request (this process: the client, plus
// the server when it is in-process).
func benchSend(b *testing.B, c *Client, inFlight int) {
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Connections == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res, err := c.Send(context.Background(), realisticNotification(0)); err != nil || res.StatusCode != 200 {
		b.Fatal(res, err)
	}
	time.Sleep(warmUp)
	reqs := make([]*Request, 1024)
	for i := range reqs {
		reqs[i] = realisticNotification(i).Request()
	}
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(_ *Response, err error) {
		if err != nil {
			failed.Add(1)
		}
		<-sem
		wg.Done()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuNanos()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		if err := c.Enqueue(reqs[i%len(reqs)], time.Time{}, done); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(cpuNanos()-cpu0)/float64(b.N), "cpu-ns/req")
	if failed.Load() > 0 {
		b.Fatalf("%d requests failed", failed.Load())
	}
}

// BenchmarkSendNghttpd: the client alone (nghttpd is another process).
// nghttpd answers like APNs: 200, no body (an empty file per token).
func BenchmarkSendNghttpd(b *testing.B) {
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "3", "device"), 0o755)
	for i := range 1024 {
		os.WriteFile(filepath.Join(dir, "3", "device", realisticNotification(i).DeviceToken), nil, 0o644)
	}
	url, ca := nghttpd(b, dir)
	c, err := NewClient(ClientOptions{Endpoint: url, RootCAs: ca.Pool()})
	if err != nil {
		b.Fatal(err)
	}
	c.Start()
	defer c.Close()
	benchSend(b, c, 256)
}
