package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected pair of the network's sockets: the dialed end
// and the accepted end.
func pair(t *testing.T, network string) (dialed, accepted net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	d, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, ok := <-ch
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d, a
}

func wrapped(t *testing.T, c net.Conn) *Conn {
	t.Helper()
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap it", c)
	}
	return w
}

func TestWrapOnlySockets(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe) = %T, want the pipe itself", got)
	}
	d, _ := pair(t, "tcp")
	wrapped(t, d)
}

// A descriptor without O_NONBLOCK is left to the net package: a raw read
// on it would hold the P until data came.
func TestWrapSkipsBlockingDescriptor(t *testing.T) {
	d, _ := pair(t, "unix")
	rc, err := d.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), false) })
	if got := Wrap(d); got != d {
		t.Fatalf("Wrap of a blocking socket = %T, want it unwrapped", got)
	}
	rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), true) })
	wrapped(t, d)
}

// Data both ways, a write far larger than the socket buffer (the EAGAIN
// path: Write waits in the poller and goes on where it stopped), a read
// that waits for data, and EOF after the peer closes.
func TestReadWrite(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			d, a := pair(t, network)
			w, r := wrapped(t, d), wrapped(t, a)

			big := make([]byte, 8<<20)
			for i := range big {
				big[i] = byte(i * 7)
			}
			errc := make(chan error, 1)
			go func() {
				n, err := w.Write(big)
				if err == nil && n != len(big) {
					err = errors.New("short write")
				}
				errc <- err
			}()
			got := make([]byte, 0, len(big))
			buf := make([]byte, 3000)
			for len(got) < len(big) {
				time.Sleep(time.Microsecond) // let the writer fill the buffer
				n, err := r.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:n]...)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, big) {
				t.Fatal("bytes read differ from bytes written")
			}

			// A read that has to wait for data.
			go func() {
				time.Sleep(20 * time.Millisecond)
				r.Write([]byte("pong"))
			}()
			n, err := w.Read(buf)
			if err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("read %q, %v; want pong", buf[:n], err)
			}
			if n, err := w.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v", n, err)
			}

			r.Close()
			if n, err := w.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
				t.Fatalf("read after the peer closed = %d, %v; want 0, io.EOF", n, err)
			}
		})
	}
}

// Deadlines, Close from another goroutine and a peer that is gone give
// the errors net's own Read and Write give, so callers' checks hold.
func TestErrorsAsNet(t *testing.T) {
	d, a := pair(t, "unix")
	w, r := wrapped(t, d), wrapped(t, a)

	r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := r.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read past its deadline: %#v; want a *net.OpError with Op read", err)
	}
	r.SetReadDeadline(time.Time{})

	// A write that cannot finish (nobody reads) times out, and says how
	// much it wrote (the kernel may take none of it at once).
	w.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := w.Write(make([]byte, 16<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n < 0 || n >= 16<<20 {
		t.Fatalf("blocked write = %d, %v; want part written and a timeout", n, err)
	}
	w.SetWriteDeadline(time.Time{})

	done := make(chan error, 1)
	d2, a2 := pair(t, "tcp")
	w2 := wrapped(t, d2)
	go func() {
		_, err := w2.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	w2.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a waiting Read")
	}

	// The peer is gone: writes fail with EPIPE or ECONNRESET, not a
	// signal.
	a2.Close()
	r.Close()
	var werr error
	for range 100 {
		if _, werr = w.Write([]byte("x")); werr != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Fatalf("write to a closed peer: %v; want EPIPE or ECONNRESET", werr)
	}
	if !errors.As(werr, &oe) || oe.Op != "write" {
		t.Fatalf("write to a closed peer: %#v; want a *net.OpError with Op write", werr)
	}
}

func TestCloseWriteRead(t *testing.T) {
	d, a := pair(t, "unix")
	w, r := wrapped(t, d), wrapped(t, a)
	w.Write([]byte("last"))
	if err := w.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "last" {
		t.Fatalf("read %q, %v after CloseWrite; want last then EOF", b, err)
	}
	if err := r.CloseRead(); err != nil {
		t.Fatal(err)
	}
}
