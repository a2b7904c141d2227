package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/defaults"
)

// ErrUnreachable wraps every failure to connect to the daemon's socket.
var ErrUnreachable = errors.New("apnsd is not reachable")

// Client connects to apnsd. Its zero value uses defaults.Socket.
type Client struct {
	Socket string
	// Dial, when set, replaces dialing the Unix socket (tests).
	Dial func(ctx context.Context) (net.Conn, error)
}

// Conn is one connection to apnsd. Requests may be pipelined: Write many,
// then Read as many; answers come in request order. A Conn is not safe for
// concurrent Writes or concurrent Reads, but one writer and one reader may
// run at the same time.
type Conn struct {
	nc net.Conn
	br *bufio.Reader
}

// Connect opens a connection. The error wraps ErrUnreachable and says why
// (no socket, refused, permission denied).
func (c *Client) Connect(ctx context.Context) (*Conn, error) {
	path := c.Socket
	if path == "" {
		path = defaults.Socket
	}
	var nc net.Conn
	var err error
	if c.Dial != nil {
		nc, err = c.Dial(ctx)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "unix", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %s", ErrUnreachable, path, explainDialError(err))
	}
	return &Conn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10)}, nil
}

func explainDialError(err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "no such socket (is apnsd running? check `systemctl status apnsd`)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (the socket file exists but nothing listens: apnsd is not running)"
	case errors.Is(err, os.ErrPermission):
		return "permission denied (add this user to the socket's group, e.g. `usermod -aG apnsd $USER`, and log in again)"
	}
	return err.Error()
}

// Close closes the connection.
func (cn *Conn) Close() error { return cn.nc.Close() }

// CloseWrite tells apnsd no more requests follow; answers still arrive.
func (cn *Conn) CloseWrite() error {
	if cw, ok := cn.nc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetDeadline bounds the following reads and writes.
func (cn *Conn) SetDeadline(t time.Time) error { return cn.nc.SetDeadline(t) }

// WriteLine sends one raw request line; a trailing newline is added.
func (cn *Conn) WriteLine(line []byte) error {
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	_, err := cn.nc.Write(buf)
	return err
}

// Write sends one request (marshalled to JSON).
func (cn *Conn) Write(req any) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return cn.WriteLine(b)
}

// ReadLine returns the next raw answer line, without its newline.
func (cn *Conn) ReadLine() ([]byte, error) {
	line, err := cn.br.ReadBytes('\n')
	if err != nil {
		if len(line) > 0 {
			return nil, fmt.Errorf("connection ended mid-answer: %w", err)
		}
		return nil, err
	}
	return line[:len(line)-1], nil
}

// Read returns the next answer, decoded.
func (cn *Conn) Read() (*Response, error) {
	line, err := cn.ReadLine()
	if err != nil {
		return nil, err
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("apnsd sent a line that is not a valid answer: %w", err)
	}
	return &r, nil
}

// Do sends one request and reads its answer, within ctx's deadline.
func (cn *Conn) Do(ctx context.Context, req any) (*Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		cn.nc.SetDeadline(dl)
		defer cn.nc.SetDeadline(time.Time{})
	}
	if err := cn.Write(req); err != nil {
		return nil, err
	}
	return cn.Read()
}

// Do connects, sends one request, reads its answer and disconnects.
func (c *Client) Do(ctx context.Context, req any) (*Response, error) {
	cn, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer cn.Close()
	return cn.Do(ctx, req)
}
