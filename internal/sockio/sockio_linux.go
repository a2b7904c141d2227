package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Conn is a net.Conn whose Read and Write are raw system calls. Every
// other method (deadlines, Close, addresses) is the wrapped connection's.
type Conn struct {
	net.Conn
	rc syscall.RawConn
}

// Wrap returns c with raw-syscall Read and Write when c is a socket the
// runtime polls (a *net.TCPConn or *net.UnixConn on a non-blocking
// descriptor); any other net.Conn (a net.Pipe in a test, a wrapper) is
// returned as it is.
func Wrap(c net.Conn) net.Conn {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return c
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil || !nonBlocking(rc) {
		return c
	}
	return &Conn{Conn: c, rc: rc}
}

// nonBlocking reports whether the descriptor has O_NONBLOCK, as every
// socket the net package made or adopted has: a raw read on a blocking
// descriptor would hold its P (and thread) until data came.
func nonBlocking(rc syscall.RawConn) bool {
	var flags uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		flags, _, errno = syscall.RawSyscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	}); err != nil || errno != 0 {
		return false
	}
	return flags&syscall.O_NONBLOCK != 0
}

// Read reads up to len(p) bytes: io.EOF when the peer has closed its end.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, e := sysRead(fd, p)
			switch e {
			case 0:
				n = r
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait in the poller
			default:
				errno = e
				return true
			}
		}
	})
	if err != nil {
		return 0, c.opError("read", err)
	}
	if errno != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting in the poller while the socket's send
// buffer is full, as net.Conn's Write does.
func (c *Conn) Write(p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			r, e := sysWrite(fd, p[n:])
			switch e {
			case 0:
				n += r
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait in the poller, then go on from n
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, c.opError("write", err)
	}
	if errno != 0 {
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError shapes err as net's own Read and Write errors are, so callers'
// errors.Is(err, net.ErrClosed), os.ErrDeadlineExceeded, syscall.EPIPE and
// net.Error's Timeout keep working. syscall.RawConn already returns an
// *net.OpError (op "raw-read" or "raw-write") for a deadline or a closed
// connection; it is renamed to the operation the caller made.
func (c *Conn) opError(op string, err error) error {
	// RawConn returns the *net.OpError itself, never wrapped.
	if oe := (*net.OpError)(nil); errors.As(err, &oe) {
		e := *oe
		e.Op = op
		return &e
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// CloseWrite and CloseRead shut down one direction when the wrapped
// connection can (TCP and Unix sockets can).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// CloseRead: see CloseWrite.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return nil
}
