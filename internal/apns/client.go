package apns

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// ClientOptions configures a Client: one APNs endpoint, one credential.
type ClientOptions struct {
	// Endpoint is the base URL, e.g. "https://api.push.apple.com:443".
	Endpoint string
	// RootCAs verifies the endpoint's certificate; nil means the system roots.
	RootCAs *x509.CertPool
	// GetClientCertificate supplies the TLS client certificate for
	// certificate auth. It is called on every new connection, so a
	// credential swap takes effect on the next connection (see Rotate).
	// Nil for token auth.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// Authorization, when set, returns the value of the authorization header
	// ("bearer <jwt>") for token auth. It is called for every request.
	Authorization func() (string, error)
	// Connections is how many HTTP/2 connections to keep open (default 1).
	Connections int
	// PingInterval: a connection that has received nothing for this long
	// is sent an HTTP/2 PING (default 60s). PingTimeout: how long to wait for
	// the PING's answer before the connection is declared dead (default 15s).
	PingInterval, PingTimeout time.Duration
	// DialTimeout bounds TCP connect plus TLS handshake (default 10s).
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed connection
	// attempts (defaults 500ms and 60s); the wait doubles, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// DialContext, when set, replaces the TCP dialer (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// ErrUnavailable is returned by Send when no usable connection to APNs came
// up before the request's deadline. The error wraps the last connection error.
var ErrUnavailable = errors.New("no working connection to APNs")

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("apns client closed")

// ConnError is a failure of the connection carrying a request, before APNs
// answered it. APNs may or may not have received the notification.
type ConnError struct{ Err error }

func (e *ConnError) Error() string { return "connection to APNs failed: " + e.Err.Error() }
func (e *ConnError) Unwrap() error { return e.Err }

// Client sends notifications to one APNs endpoint over a fixed number of
// persistent HTTP/2 connections. Connections are opened by Start and kept
// open; a connection that dies is replaced after a backoff. A request only
// goes out on a connection with a free stream under the server's
// SETTINGS_MAX_CONCURRENT_STREAMS; otherwise it waits for one, up to its
// context's deadline.
//
// All methods are safe for concurrent use.
type Client struct {
	o         ClientOptions
	base      string // scheme://host:port, no trailing slash
	addr      string // host:port
	transport *http.Transport
	log       *slog.Logger

	mu sync.Mutex
	// mu guards the fields that follow.
	conns    []*conn // usable connections, one per slot at most
	draining []*conn // connections retired by Rotate, closed once idle
	lastErr  error   // last connection error, for ErrUnavailable and Status
	lastErrT time.Time
	closed   bool

	// wakeMu guards wake, which is closed and replaced whenever capacity may
	// have appeared. It is separate from mu because the connection's state
	// hook (which broadcasts) runs synchronously inside Reserve.
	wakeMu sync.Mutex
	wake   chan struct{}
	// gate admits one waiter for capacity at a time (see reserve).
	gate chan struct{}

	next     atomic.Uint64 // round-robin start
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	rotateCh []chan struct{}
	dials    atomic.Uint64
}

type conn struct {
	cc      *http.ClientConn
	id      uint64
	since   time.Time
	dead    chan struct{}
	deadOne sync.Once
	// answered is set once any HTTP response arrived on the connection: its
	// SETTINGS have been applied, and the handshake and credentials are
	// good, so backoff can reset.
	answered atomic.Bool
}

func (c *conn) markDead() { c.deadOne.Do(func() { close(c.dead) }) }

// NewClient checks the options and prepares a client. Call Start to open
// its connections.
func NewClient(o ClientOptions) (*Client, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", o.Endpoint, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: must be https://host[:port]", o.Endpoint)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("endpoint %q: must not have a path", o.Endpoint)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	if o.Connections <= 0 {
		o.Connections = 1
	}
	setDefault(&o.PingInterval, 60*time.Second)
	setDefault(&o.PingTimeout, 15*time.Second)
	setDefault(&o.DialTimeout, 10*time.Second)
	setDefault(&o.MinBackoff, 500*time.Millisecond)
	setDefault(&o.MaxBackoff, 60*time.Second)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("endpoint", u.Host)

	tlsConf := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              o.RootCAs,
		GetClientCertificate: o.GetClientCertificate,
	}
	dialer := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: o.DialTimeout,
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: o.PingInterval,
			PingTimeout:     o.PingTimeout,
		},
		Protocols: new(http.Protocols),
	}
	if o.DialContext != nil {
		t.DialContext = o.DialContext
	}
	t.Protocols.SetHTTP2(true)
	c := &Client{
		o:         o,
		base:      "https://" + u.Host,
		addr:      addr,
		transport: t,
		log:       log,
		wake:      make(chan struct{}),
		gate:      make(chan struct{}, 1),
	}
	return c, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Start opens the client's connections in the background and keeps them
// open until Close. It returns at once; Send waits for a connection.
func (c *Client) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil || c.closed {
		return
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.conns = make([]*conn, c.o.Connections)
	for i := range c.o.Connections {
		ch := make(chan struct{}, 1)
		c.rotateCh = append(c.rotateCh, ch)
		c.wg.Add(1)
		go c.keepConnected(i, ch)
	}
}

// keepConnected owns slot i: it dials, installs the connection, waits for it
// to die (or for Rotate), and dials again with backoff.
func (c *Client) keepConnected(slot int, rotate <-chan struct{}) {
	defer c.wg.Done()
	backoff := c.o.MinBackoff
	// fail sleeps the backoff (cut short by Rotate: new credentials deserve
	// an immediate try) and doubles it. It reports whether to go on.
	fail := func() bool {
		alive, rotated := c.pause(jitter(backoff), rotate)
		if rotated {
			backoff = c.o.MinBackoff
		} else {
			backoff = min(backoff*2, c.o.MaxBackoff)
		}
		return alive
	}
	var cur *conn // the slot's connection, while it works
	for c.ctx.Err() == nil {
		cn, err := c.dial()
		if err != nil {
			c.setErr(err)
			c.log.Warn("connecting to APNs failed", "slot", slot, "err", err, "retry_in", backoff.Round(time.Millisecond))
			// (During a rotation the old connection, cur, keeps serving.)
			if !fail() {
				return
			}
			continue
		}
		c.log.Debug("connected to APNs", "slot", slot, "conn", cn.id)
		if cur != nil {
			// Make before break: install puts the new connection in
			// service and keeps the old one until the new one has proven
			// itself; then the old one closes once drained.
			c.log.Info("replacing connection for new credentials", "slot", slot, "old", cur.id, "new", cn.id)
			cur = nil
		}
		c.install(slot, cn)
		rotated := c.watch(cn, rotate)
		if c.ctx.Err() != nil {
			return
		}
		if rotated {
			cur = cn
			backoff = c.o.MinBackoff
			continue
		}
		c.remove(slot, cn)
		lived := time.Since(cn.since)
		switch {
		case lived > time.Minute:
			backoff = c.o.MinBackoff
		case cn.answered.Load():
			// It worked, but not for long (a GOAWAY after an error, say):
			// pause a little anyway, so reconnects never track the
			// request rate.
			backoff = c.o.MinBackoff
			if !fail() {
				return
			}
		default:
			// Died young without answering anything: typically a
			// refused client certificate (TLS 1.3 reports it after the
			// handshake). Do not hammer APNs.
			c.log.Warn("connection to APNs closed before any answer", "slot", slot, "conn", cn.id, "retry_in", backoff.Round(time.Millisecond))
			if !fail() {
				return
			}
		}
	}
}

// pause waits for d, or less if Rotate asks for a new connection (rotated)
// or the client closes (alive is false).
func (c *Client) pause(d time.Duration, rotate <-chan struct{}) (alive, rotated bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true, false
	case <-rotate:
		return true, true
	case <-c.ctx.Done():
		return false, false
	}
}

// watch blocks until cn is dead or unusable (GOAWAY), the client closes, or
// Rotate asks for a new connection. It reports whether Rotate asked.
func (c *Client) watch(cn *conn, rotate <-chan struct{}) bool {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return false
		case <-cn.dead:
			return false
		case <-rotate:
			return true
		case <-tick.C:
			if cn.cc.Err() != nil {
				return false
			}
			// After GOAWAY a connection takes no new streams but stays
			// open while its streams finish: with no stream in flight
			// and none available, it is unusable. Replace it now.
			if cn.cc.Available() == 0 && cn.cc.InFlight() == 0 {
				c.log.Info("connection no longer takes requests (GOAWAY); replacing it", "conn", cn.id)
				return false
			}
		}
	}
}

func (c *Client) dial() (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.o.DialTimeout)
	defer cancel()
	cc, err := c.transport.NewClientConn(ctx, "https", c.addr)
	if err != nil {
		return nil, err
	}
	cn := &conn{cc: cc, id: c.dials.Add(1), since: time.Now(), dead: make(chan struct{})}
	cc.SetStateHook(func(cc *http.ClientConn) {
		if cc.Err() != nil {
			cn.markDead()
		}
		c.broadcast()
	})
	return cn, nil
}

// warmUp bounds the one-stream-at-a-time start of a new connection.
const warmUp = 500 * time.Millisecond

// install puts cn in service in slot. A connection already there (the
// previous one, during a rotation) stops taking new requests but is only
// retired once cn has proven itself (see keepUntilProven).
func (c *Client) install(slot int, cn *conn) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.cc.Close()
		return
	}
	prev := c.conns[slot]
	c.conns[slot] = cn
	c.lastErr = nil
	if prev != nil {
		c.draining = append(c.draining, prev) // Close closes it too
	}
	c.mu.Unlock()
	c.broadcast()
	time.AfterFunc(warmUp, c.broadcast) // waiters may use the whole connection now
	if prev != nil {
		c.wg.Add(1)
		go c.keepUntilProven(slot, prev, cn)
	}
}

// proofTime is how long a new connection must live, if it has not answered,
// before the connection it replaced is let go.
const proofTime = 5 * time.Second

// keepUntilProven holds prev (the connection cn replaced) in reserve until
// cn has answered a request or lived proofTime, then closes prev once idle.
// If cn dies first without answering — typically APNs refusing new
// credentials at the TLS level, which TLS 1.3 reports only after the
// handshake — prev goes back into service, so a credential APNs rejects
// does not take the environment down while the old connection lives.
func (c *Client) keepUntilProven(slot int, prev, cn *conn) {
	defer c.wg.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(proofTime)
	for !cn.answered.Load() && time.Now().Before(deadline) {
		select {
		case <-c.ctx.Done():
			return // Close closes prev (it is in draining)
		case <-prev.dead:
			c.closeDrained(prev)
			return
		case <-cn.dead:
			if cn.answered.Load() || prev.cc.Err() != nil {
				c.closeWhenIdle(prev)
				return
			}
			c.mu.Lock()
			back := !c.closed && (c.conns[slot] == nil || c.conns[slot] == cn)
			if back {
				c.conns[slot] = prev
				c.dropDraining(prev)
			}
			c.mu.Unlock()
			if back {
				c.log.Error("the new connection closed before APNs answered anything (new credentials refused?); the previous connection serves again",
					"slot", slot, "previous", prev.id, "new", cn.id)
				c.broadcast()
				// Whatever replaces it later gets the same treatment.
				return
			}
			c.closeWhenIdle(prev)
			return
		case <-tick.C:
		}
	}
	c.closeWhenIdle(prev)
}

func (c *Client) remove(slot int, cn *conn) {
	c.mu.Lock()
	if c.conns[slot] == cn {
		c.conns[slot] = nil
	}
	c.mu.Unlock()
	cn.cc.Close()
	c.broadcast()
}

// closeWhenIdle closes cn (already in draining) once no request is in
// flight on it, and forgets it.
func (c *Client) closeWhenIdle(cn *conn) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for cn.cc.InFlight() > 0 && cn.cc.Err() == nil && c.ctx.Err() == nil {
		select {
		case <-tick.C:
		case <-cn.dead:
		case <-c.ctx.Done():
		}
	}
	c.closeDrained(cn)
}

// closeDrained closes cn and removes it from draining.
func (c *Client) closeDrained(cn *conn) {
	cn.cc.Close()
	c.mu.Lock()
	c.dropDraining(cn)
	c.mu.Unlock()
}

// dropDraining removes cn from draining; c.mu must be held.
func (c *Client) dropDraining(cn *conn) {
	for i, d := range c.draining {
		if d == cn {
			c.draining = append(c.draining[:i], c.draining[i+1:]...)
			return
		}
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.lastErrT = time.Now()
	c.mu.Unlock()
}

// broadcast wakes every Send waiting for capacity.
func (c *Client) broadcast() {
	c.wakeMu.Lock()
	close(c.wake)
	c.wake = make(chan struct{})
	c.wakeMu.Unlock()
}

// wakeChan returns the channel the next broadcast closes. Take it before
// looking for capacity, so that no broadcast in between is missed.
func (c *Client) wakeChan() <-chan struct{} {
	c.wakeMu.Lock()
	defer c.wakeMu.Unlock()
	return c.wake
}

// Rotate moves new requests onto fresh connections: each slot dials a new
// connection (which fetches the client certificate again), and the old one
// is closed once its in-flight requests finish. Use it after swapping
// credentials.
func (c *Client) Rotate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.rotateCh {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// tryReserve reserves a stream on some connection, round robin. It also
// reports how many connections are up and the last connection error.
func (c *Client) tryReserve() (picked *conn, up int, lastErr error, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, nil, ErrClosed
	}
	n := uint64(len(c.conns))
	start := c.next.Add(1)
	for i := range n {
		cn := c.conns[(start+i)%n]
		if cn == nil || cn.cc.Err() != nil {
			continue
		}
		up++
		if picked != nil {
			continue
		}
		// A new connection carries one stream at a time until it has
		// answered once or warmUp has passed: the server's SETTINGS (its
		// real stream limit) are surely applied by then, and with token
		// auth APNs allows one stream until a valid token went through.
		// The time bound keeps one slow first request from holding up
		// the rest.
		if !cn.answered.Load() && time.Since(cn.since) < warmUp && cn.cc.InFlight() > 0 {
			continue
		}
		if cn.cc.Reserve() == nil {
			picked = cn
		}
	}
	return picked, up, c.lastErr, nil
}

// reserve finds a connection with a free stream and reserves it, waiting
// for one until ctx ends. Waiters queue in FIFO order behind gate, and only
// the one at the head wakes on each capacity change: a backlog of thousands
// costs one wake-up per freed stream, not thousands, and the oldest request
// goes first.
func (c *Client) reserve(ctx context.Context) (*conn, error) {
	if len(c.gate) == 0 { // nobody is waiting: no queue to respect
		if cn, _, _, err := c.tryReserve(); cn != nil || err != nil {
			return cn, err
		}
	}
	select {
	case c.gate <- struct{}{}:
	case <-ctx.Done():
		up, lastErr := c.upAndErr()
		return nil, waitErr(ctx, up, lastErr)
	}
	defer func() { <-c.gate }()
	repoll := time.NewTimer(reserveRepoll)
	defer repoll.Stop()
	for {
		wake := c.wakeChan()
		cn, up, lastErr, err := c.tryReserve()
		if cn != nil || err != nil {
			return cn, err
		}
		repoll.Reset(reserveRepoll)
		select {
		case <-wake:
		case <-repoll.C:
		case <-ctx.Done():
			return nil, waitErr(ctx, up, lastErr)
		}
	}
}

// upAndErr counts the connections in service and returns the last
// connection error.
func (c *Client) upAndErr() (up int, lastErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cn := range c.conns {
		if cn != nil && cn.cc.Err() == nil {
			up++
		}
	}
	return up, c.lastErr
}

// reserveRepoll bounds how long the waiter at the head of the queue can miss
// freed capacity: net/http's ClientConn state hook compares snapshots, so a
// stream that opens and finishes while an earlier hook call runs is never
// reported. Only one goroutine (the head) polls.
const reserveRepoll = 50 * time.Millisecond

// waitErr is the error for a wait for a stream that ended with ctx: with no
// connection up, ErrUnavailable (wrapping why); else ctx's error.
func waitErr(ctx context.Context, up int, lastErr error) error {
	if up > 0 {
		return ctx.Err()
	}
	if lastErr != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
	}
	return fmt.Errorf("%w: still connecting", ErrUnavailable)
}

// Send delivers n and returns APNs' answer. An error means there is no
// answer: ErrUnavailable (no connection came up before ctx's deadline),
// a *ConnError (the connection failed mid-request), ctx's error, or
// ErrClosed. Send does not validate n; call n.Validate first.
func (c *Client) Send(ctx context.Context, n *Notification) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/3/device/"+n.DeviceToken, bytes.NewReader(n.Payload))
	if err != nil {
		return nil, err
	}
	for k, v := range n.Headers() {
		req.Header[k] = []string{v}
	}
	req.Header["content-type"] = []string{"application/json"}
	var auth string
	if c.o.Authorization != nil {
		if auth, err = c.o.Authorization(); err != nil {
			return nil, err
		}
		req.Header["authorization"] = []string{auth}
	}
	cn, err := c.reserve(ctx)
	if err != nil {
		return nil, err
	}
	res, err := cn.cc.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &ConnError{Err: err}
	}
	defer res.Body.Close()
	if !cn.answered.Swap(true) {
		c.broadcast() // the warm-up is over: waiters may use the connection
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &ConnError{Err: err}
	}
	r := &Response{StatusCode: res.StatusCode, ApnsID: res.Header.Get("apns-id"), Authorization: auth}
	if res.StatusCode != http.StatusOK && len(body) > 0 {
		var eb struct {
			Reason    string          `json:"reason"`
			Timestamp json.RawMessage `json:"timestamp"`
		}
		if err := json.Unmarshal(body, &eb); err == nil {
			r.Reason = eb.Reason
			r.Timestamp = parseTimestamp(eb.Timestamp)
		}
	}
	return r, nil
}

// parseTimestamp reads APNs' "timestamp", a number of milliseconds; it has
// been seen as both a JSON number and a string.
func parseTimestamp(raw json.RawMessage) int64 {
	if len(raw) == 0 {
		return 0
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(bytes.Trim(raw, `"`)))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		return 0
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	if f, err := n.Float64(); err == nil {
		return int64(f)
	}
	return 0
}

// ClientStatus is a snapshot of a client's connections.
type ClientStatus struct {
	Endpoint    string    `json:"endpoint"`
	Connections int       `json:"connections"` // up and taking requests
	Target      int       `json:"target"`
	Draining    int       `json:"draining,omitempty"`
	InFlight    int       `json:"in_flight"`
	Dials       uint64    `json:"dials"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// State summarises Connections/Target as "up", "degraded" or "down".
func (s ClientStatus) State() string {
	switch {
	case s.Connections == 0:
		return "down"
	case s.Connections < s.Target:
		return "degraded"
	}
	return "up"
}

// Status reports the client's connection state.
func (c *Client) Status() ClientStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ClientStatus{Endpoint: c.base, Target: c.o.Connections, Draining: len(c.draining), Dials: c.dials.Load()}
	for _, cn := range c.conns {
		if cn != nil && cn.cc.Err() == nil {
			s.Connections++
			s.InFlight += cn.cc.InFlight()
		}
	}
	for _, cn := range c.draining {
		s.InFlight += cn.cc.InFlight()
	}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
		s.LastErrorAt = c.lastErrT
	}
	return s
}

// Close closes every connection at once; requests in flight fail. Callers
// that want a graceful end wait for their Sends to return first.
func (c *Client) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	conns := append(append([]*conn{}, c.conns...), c.draining...)
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	for _, cn := range conns {
		if cn != nil {
			cn.cc.Close()
		}
	}
	c.broadcast()
	c.wg.Wait()
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
