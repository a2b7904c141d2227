package apns

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
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
	// ("bearer <jwt>") for token auth. It is called for every request, by
	// the connection's writer goroutine as the request is encoded, so it
	// must be fast (return a cached token) and must not block.
	Authorization func() (string, error)
	// Connections is how many HTTP/2 connections to keep open (default 1).
	Connections int
	// PingInterval: a connection that has received nothing for this long
	// is sent an HTTP/2 PING (default 60s). PingTimeout: how long to wait for
	// the PING's answer before the connection is declared dead (default 15s).
	PingInterval, PingTimeout time.Duration
	// DialTimeout bounds TCP connect, TLS handshake and the server's
	// SETTINGS (default 10s).
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed connection
	// attempts (defaults 500ms and 10s); the wait doubles, with jitter. The
	// cap is low so that recovery after an APNs outage is quick; besides,
	// a request waiting with no connection up cuts the wait short (a new
	// attempt once the last one is a second old).
	MinBackoff, MaxBackoff time.Duration
	// UnavailableWait is how long a request waits while no connection is
	// up before it fails with ErrUnavailable (default 3s), instead of
	// waiting for its whole deadline: during an APNs outage callers learn
	// it in seconds.
	UnavailableWait time.Duration
	// QueueSize bounds the requests waiting for a stream; Enqueue returns
	// ErrQueueFull beyond it (default 131072).
	QueueSize int
	// RetryRefusedStream makes the client send a request again by itself
	// (at the front of the queue, up to 5 times) when APNs resets its
	// stream with REFUSED_STREAM, which means it was not processed.
	// Otherwise the request completes with a *ConnError wrapping
	// ErrRefusedStream and the caller decides (the daemon's retry loop,
	// which counts and paces retries, does). Requests above a GOAWAY's
	// last stream id are always sent again by the client.
	RetryRefusedStream bool
	// DialContext, when set, replaces the TCP dialer (tests).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger

	// streamIDLimit, when set, is the last stream id a connection uses
	// before it is replaced (tests; the default is 2^31-1).
	streamIDLimit uint32
}

// ErrUnavailable is returned by Send (and given to Enqueue's callback) when
// no usable connection to APNs came up within ClientOptions.UnavailableWait
// or the request's deadline. The error wraps the last connection error.
var ErrUnavailable = errors.New("no working connection to APNs")

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("apns client closed")

// ErrRefusedStream is wrapped in the *ConnError of a request APNs reset
// with REFUSED_STREAM: it was not processed, so sending it again is safe.
var ErrRefusedStream = errors.New("APNs refused the stream unprocessed (REFUSED_STREAM); safe to send again")

// ErrQueueFull is returned by Enqueue when QueueSize requests are waiting.
var ErrQueueFull = errors.New("apns client queue full")

// ConnError is a failure of the connection carrying a request, before APNs
// answered it. APNs may or may not have received the notification.
type ConnError struct{ Err error }

func (e *ConnError) Error() string { return "connection to APNs failed: " + e.Err.Error() }
func (e *ConnError) Unwrap() error { return e.Err }

// Client sends requests to one APNs endpoint over a fixed number of
// persistent HTTP/2 connections (see the package documentation for the
// design). Requests wait in one bounded FIFO queue that the connections
// drain, each up to the server's SETTINGS_MAX_CONCURRENT_STREAMS.
// Connections are opened by Start and kept open; a connection that dies is
// replaced after a backoff.
//
// All methods are safe for concurrent use.
type Client struct {
	o           ClientOptions
	base        string // scheme://host:port, no trailing slash
	addr        string // host:port
	authority   string
	tlsConf     *tls.Config
	dialer      func(ctx context.Context, network, addr string) (net.Conn, error)
	log         *slog.Logger
	maxStreamID uint32
	healthTick  time.Duration

	mu sync.Mutex
	// mu guards the fields that follow.
	conns    []*conn // connections in service, one per slot at most
	draining []*conn // connections being replaced, closed once idle
	lastErr  error   // last connection error, for ErrUnavailable and Status
	lastErrT time.Time
	closed   bool

	// live is a snapshot of conns (non-nil entries) for lock-free wake-ups.
	live atomic.Pointer[[]*conn]

	qmu sync.Mutex
	// qmu guards q and qclosed. Lock order: mu, then conn.mu, then qmu;
	// nothing else is locked under qmu.
	q       ring
	qclosed bool

	queued    atomic.Int64 // calls in q
	pending   atomic.Int64 // calls not yet finished (queued or in flight)
	downSince atomic.Int64 // unix nanos since when no connection is up; 0 while one is
	reapWake  chan struct{}
	dialKick  []chan struct{}

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	rotateCh []chan struct{}
	dials    atomic.Uint64
}

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
	if o.QueueSize <= 0 {
		o.QueueSize = 1 << 17
	}
	setDefault(&o.PingInterval, 60*time.Second)
	setDefault(&o.PingTimeout, 15*time.Second)
	setDefault(&o.DialTimeout, 10*time.Second)
	setDefault(&o.MinBackoff, 500*time.Millisecond)
	setDefault(&o.MaxBackoff, 10*time.Second)
	setDefault(&o.UnavailableWait, 3*time.Second)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("endpoint", u.Host)
	c := &Client{
		o:         o,
		base:      "https://" + u.Host,
		addr:      addr,
		authority: u.Host,
		tlsConf: &tls.Config{
			MinVersion:           tls.VersionTLS12,
			RootCAs:              o.RootCAs,
			GetClientCertificate: o.GetClientCertificate,
			ServerName:           u.Hostname(),
			NextProtos:           []string{"h2"},
		},
		log:         log,
		maxStreamID: maxStreamIDDefault,
		healthTick:  max(min(o.PingInterval, o.PingTimeout)/4, 5*time.Millisecond),
		reapWake:    make(chan struct{}, 1),
	}
	if o.streamIDLimit > 0 {
		c.maxStreamID = o.streamIDLimit
	}
	c.dialer = o.DialContext
	if c.dialer == nil {
		d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
		c.dialer = d.DialContext
	}
	c.downSince.Store(time.Now().UnixNano())
	return c, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Start opens the client's connections in the background and keeps them
// open until Close. It returns at once; queued requests wait for a
// connection (see UnavailableWait).
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
		c.dialKick = append(c.dialKick, make(chan struct{}, 1))
		c.wg.Add(1)
		go c.keepConnected(i, ch, c.dialKick[i])
	}
	c.wg.Add(1)
	go c.reaper()
}

// Request states (call.state).
const (
	stateQueued int32 = iota
	stateSent
	stateDone
)

// call is one request from Enqueue until its callback ran. It is in
// exactly one place at a time: the client's queue, one connection's
// stream table, or the local list of the goroutine about to complete it.
type call struct {
	req      *Request
	deadline time.Time // zero: none
	enq      int64     // unix nanos when the reaper first saw it queued (0: not yet); qmu
	done     Completer
	auth     string // authorization sent (set by the writer)
	state    atomic.Int32
	canceled atomic.Bool
	cancelE  error // set before canceled
	tries    uint8 // times sent back to the queue (REFUSED_STREAM, GOAWAY)
	// lent: the Response is read only while done completes (EnqueueTo),
	// so its stream may be reused after.
	lent bool
}

// cancel asks for k to be completed with err without being sent, or reset
// if it is in flight; the reaper acts on it within reapEvery.
func (k *call) cancel(err error) {
	k.cancelE = err
	k.canceled.Store(true)
}

// expired reports the error k must end with now, if any.
func (k *call) expired(now time.Time) error {
	if k.canceled.Load() {
		return k.cancelE
	}
	if !k.deadline.IsZero() && !now.Before(k.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// maxRequeue bounds how often one request is sent back to the queue.
const maxRequeue = 5

// Enqueue queues r for sending and returns at once. When it returns nil,
// done is called exactly once with APNs' answer or an error: ErrUnavailable
// (no connection came up in time), context.DeadlineExceeded (deadline
// passed; if that happened while queued the request was never sent), a
// *ConnError (the connection failed before APNs answered), or ErrClosed.
// When Enqueue returns an error (ErrClosed, ErrQueueFull) done is never
// called.
//
// A zero deadline means none. done runs on one of the client's goroutines
// (a connection's reader or writer, the reaper, or the goroutine calling
// Close) with no lock held. It must not block: it delays the other answers
// on that connection. It may call Enqueue (a retry). r must not be
// modified until done has run.
//
// Requests go out in FIFO order (a request refused with REFUSED_STREAM or
// above a GOAWAY's last stream goes back to the front). Call Start first.
func (c *Client) Enqueue(r *Request, deadline time.Time, done func(*Response, error)) error {
	_, err := c.enqueue(nil, r, deadline, CompleterFunc(done), false)
	return err
}

// Completer receives the outcome of a request queued with EnqueueTo, under
// the same rules as Enqueue's done function.
type Completer interface {
	Complete(*Response, error)
}

// CompleterFunc is a function used as a Completer.
type CompleterFunc func(*Response, error)

// Complete calls f.
func (f CompleterFunc) Complete(res *Response, err error) { f(res, err) }

// EnqueueTo is Enqueue with the outcome going to done's Complete method:
// a caller that keeps a record per request can pass the record itself and
// save building a closure per request.
//
// The *Response is lent: it, its Header and its Body are valid only until
// Complete returns (the connection reuses their memory for a later
// answer); a caller that needs any of it later copies it.
func (c *Client) EnqueueTo(r *Request, deadline time.Time, done Completer) error {
	_, err := c.enqueue(nil, r, deadline, done, true)
	return err
}

// Slot holds the client's record of one request, for EnqueueIn: a caller
// that keeps a record per notification embeds a Slot in it and saves an
// allocation per attempt.
type Slot struct{ k call }

// EnqueueIn is EnqueueTo with the client's record of the request kept in
// slot. The caller must not reuse slot (for its next attempt) before done
// has been called, and may from within done.
func (c *Client) EnqueueIn(slot *Slot, r *Request, deadline time.Time, done Completer) error {
	_, err := c.enqueue(&slot.k, r, deadline, done, true)
	return err
}

// enqueue queues r in k (nil: a new call).
func (c *Client) enqueue(k *call, r *Request, deadline time.Time, done Completer, lent bool) (*call, error) {
	if k == nil {
		k = new(call)
	}
	*k = call{req: r, deadline: deadline, done: done, lent: lent}
	c.qmu.Lock()
	if c.qclosed {
		c.qmu.Unlock()
		return nil, ErrClosed
	}
	if c.q.n >= c.o.QueueSize {
		c.qmu.Unlock()
		return nil, ErrQueueFull
	}
	c.q.pushBack(k)
	c.queued.Add(1)
	c.pending.Add(1)
	c.qmu.Unlock()
	c.poke()
	select {
	case c.reapWake <- struct{}{}:
	default:
	}
	return k, nil
}

// poke wakes the writers of the connections in service; with none up it
// asks the slot keepers for a connection (see keepConnected).
func (c *Client) poke() {
	up := false
	if p := c.live.Load(); p != nil {
		for _, cn := range *p {
			cn.kick()
			if !cn.unusable() {
				up = true
			}
		}
	}
	if !up {
		for _, ch := range c.dialKick {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// anyUp reports whether some connection in service takes requests.
func (c *Client) anyUp() bool {
	if p := c.live.Load(); p != nil {
		for _, cn := range *p {
			if !cn.unusable() {
				return true
			}
		}
	}
	return false
}

// take pops up to n calls to send; calls that must not be sent (cancelled,
// expired, requeued too often) go to done. qmu is taken here; the caller
// holds its conn.mu.
func (c *Client) take(n int, done []doneItem) ([]*call, []doneItem) {
	now := time.Now()
	var batch []*call
	c.qmu.Lock()
	for len(batch) < n && c.q.n > 0 {
		k := c.q.popFront()
		c.queued.Add(-1)
		if err := k.expired(now); err != nil {
			done = append(done, doneItem{k: k, err: err})
			continue
		}
		if k.tries > maxRequeue {
			done = append(done, doneItem{k: k, err: &ConnError{Err: fmt.Errorf("refused by APNs %d times (REFUSED_STREAM or GOAWAY)", k.tries)}})
			continue
		}
		if batch == nil {
			batch = make([]*call, 0, min(n, c.q.n+1))
		}
		batch = append(batch, k)
	}
	c.qmu.Unlock()
	return batch, done
}

// requeue puts ks back at the front of the queue (not sent, or refused
// unprocessed), in order; it wakes the connections. Calls it cannot queue
// (the client closed) are appended to done.
func (c *Client) requeue(ks []*call, done []doneItem) []doneItem {
	if len(ks) == 0 {
		return done
	}
	c.qmu.Lock()
	if c.qclosed {
		c.qmu.Unlock()
		for _, k := range ks {
			done = append(done, doneItem{k: k, err: ErrClosed})
		}
		return done
	}
	for i := len(ks) - 1; i >= 0; i-- {
		k := ks[i]
		k.tries++
		k.state.Store(stateQueued)
		c.q.pushFront(k)
	}
	c.queued.Add(int64(len(ks)))
	c.qmu.Unlock()
	c.poke()
	return done
}

// finish completes k: exactly once (a second completion is a bug and is
// dropped), with no lock held.
func (c *Client) finish(k *call, res *Response, err error) {
	if k.state.Swap(stateDone) == stateDone {
		c.log.Error("internal error: a request was completed twice; the second answer is dropped")
		return
	}
	c.pending.Add(-1)
	if res != nil {
		finishResponse(res)
	}
	k.done.Complete(res, err)
}

// reapEvery is how often the reaper looks for requests past their deadline
// (while any request is pending).
const reapEvery = 25 * time.Millisecond

// reaper completes queued requests past their deadline or past
// UnavailableWait with no connection up, and resets streams past their
// deadline. It sleeps while nothing is pending.
func (c *Client) reaper() {
	defer c.wg.Done()
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		if c.pending.Load() == 0 {
			select {
			case <-c.reapWake:
			case <-c.ctx.Done():
				return
			}
			continue
		}
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return
		}
		c.reap(time.Now())
	}
}

func (c *Client) reap(now time.Time) {
	up := c.anyUp()
	var down int64
	if up {
		c.downSince.Store(0)
	} else if down = c.downSince.Load(); down == 0 {
		down = now.UnixNano()
		c.downSince.Store(down)
	}
	var done []doneItem
	var unavail error
	if !up {
		unavail = c.unavailable() // before qmu: c.mu is never taken under qmu
	}
	c.qmu.Lock()
	if c.q.n > 0 {
		done = c.q.filter(func(k *call) error {
			if k.enq == 0 {
				k.enq = now.UnixNano() // within reapEvery of Enqueue
			}
			err := k.expired(now)
			if up {
				return err
			}
			if err == nil && now.UnixNano()-max(k.enq, down) >= int64(c.o.UnavailableWait) {
				err = context.DeadlineExceeded
			}
			if errors.Is(err, context.DeadlineExceeded) {
				err = unavail
			}
			return err
		}, done)
		c.queued.Add(-int64(len(done)))
	}
	c.qmu.Unlock()
	c.mu.Lock()
	conns := append(append([]*conn(nil), c.conns...), c.draining...)
	c.mu.Unlock()
	for _, cn := range conns {
		if cn != nil {
			done = cn.expire(now, done)
		}
	}
	for _, d := range done {
		c.finish(d.k, d.res, d.err)
	}
}

// unavailable is ErrUnavailable wrapping the last connection error.
func (c *Client) unavailable() error {
	c.mu.Lock()
	lastErr := c.lastErr
	c.mu.Unlock()
	if lastErr != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
	}
	return fmt.Errorf("%w: still connecting", ErrUnavailable)
}

type sendResult struct {
	res *Response
	err error
}

// Send delivers n and returns APNs' answer; it is Enqueue with ctx's
// deadline, waiting for the callback. An error means there is no answer:
// ErrUnavailable (no connection came up in time), a *ConnError (the
// connection failed mid-request), ctx's error, or ErrClosed. Send does not
// validate n; call n.Validate first.
func (c *Client) Send(ctx context.Context, n *Notification) (*Response, error) {
	return c.Do(ctx, n.Request())
}

// Do sends r and waits for APNs' answer, like Send.
func (c *Client) Do(ctx context.Context, r *Request) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	ch := make(chan sendResult, 1)
	k, err := c.enqueue(nil, r, dl, CompleterFunc(func(res *Response, err error) { ch <- sendResult{res, err} }), false)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.err != nil && errors.Is(r.err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return r.res, r.err
	case <-ctx.Done():
		wasQueued := k.state.Load() == stateQueued
		k.cancel(ctx.Err())
		select {
		case r := <-ch:
			if r.err == nil || errors.Is(r.err, ErrUnavailable) {
				return r.res, r.err
			}
		default:
		}
		if wasQueued && !c.anyUp() {
			return nil, c.unavailable()
		}
		return nil, ctx.Err()
	}
}

// keepConnected owns slot i: it dials, installs the connection, waits for it
// to die, retire (GOAWAY, stream ids used up) or for Rotate, and dials
// again with backoff.
func (c *Client) keepConnected(slot int, rotate, kick <-chan struct{}) {
	defer c.wg.Done()
	backoff := c.o.MinBackoff
	var lastAttempt time.Time
	// fail sleeps the backoff (cut short by Rotate, and by a waiting
	// request once the last attempt is a second old) and doubles it. It
	// reports whether to go on.
	fail := func() bool {
		alive, rotated := c.pause(jitter(backoff), rotate, kick, lastAttempt)
		if rotated {
			backoff = c.o.MinBackoff
		} else {
			backoff = min(backoff*2, c.o.MaxBackoff)
		}
		return alive
	}
	var cur *conn // the slot's connection, while it works
	for c.ctx.Err() == nil {
		lastAttempt = time.Now()
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
		select { // a request that asked for this connection has it
		case <-kick:
		default:
		}
		why := c.watch(cn, rotate)
		if c.ctx.Err() != nil {
			return
		}
		if why == watchRotated {
			cur = cn
			backoff = c.o.MinBackoff
			continue
		}
		if why == watchRetired {
			c.retire(slot, cn)
		} else {
			c.remove(slot, cn)
		}
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
			c.log.Warn("connection to APNs closed before any answer", "slot", slot, "conn", cn.id, "err", cn.cause(), "retry_in", backoff.Round(time.Millisecond))
			if !fail() {
				return
			}
		}
	}
}

// kickGap is the least time between connection attempts that a waiting
// request can bring forward.
const kickGap = time.Second

// pause waits for d, or less if Rotate asks for a new connection (rotated),
// a request waits with no connection up (then until last+kickGap), or the
// client closes (alive is false).
func (c *Client) pause(d time.Duration, rotate, kick <-chan struct{}, last time.Time) (alive, rotated bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	end := time.Now().Add(d)
	for {
		select {
		case <-t.C:
			return true, false
		case <-kick:
			if at := last.Add(kickGap); at.Before(end) {
				end = at
				t.Reset(time.Until(at))
			}
		case <-rotate:
			return true, true
		case <-c.ctx.Done():
			return false, false
		}
	}
}

type watchResult int

const (
	watchDied watchResult = iota
	watchRetired
	watchRotated
)

// watch blocks until cn dies or retires, the client closes, or Rotate asks
// for a new connection.
func (c *Client) watch(cn *conn, rotate <-chan struct{}) watchResult {
	select {
	case <-c.ctx.Done():
		return watchDied
	case <-cn.dead:
		return watchDied
	case <-cn.retired:
		select {
		case <-cn.dead:
			return watchDied
		default:
		}
		return watchRetired
	case <-rotate:
		return watchRotated
	}
}

func (c *Client) dial() (*conn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.o.DialTimeout)
	defer cancel()
	return c.dialConn(ctx)
}

// warmUp bounds the one-stream-at-a-time start of a new connection.
const warmUp = 500 * time.Millisecond

// publishLocked refreshes the lock-free snapshot of conns; c.mu held.
func (c *Client) publishLocked() {
	live := make([]*conn, 0, len(c.conns))
	for _, cn := range c.conns {
		if cn != nil {
			live = append(live, cn)
		}
	}
	c.live.Store(&live)
}

// install puts cn in service in slot. A connection already there (the
// previous one, during a rotation) stops taking new requests but is only
// retired once cn has proven itself (see keepUntilProven).
func (c *Client) install(slot int, cn *conn) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.fail(ErrClosed)
		return
	}
	prev := c.conns[slot]
	c.conns[slot] = cn
	c.lastErr = nil
	if prev != nil {
		prev.setAccepting(false)
		c.draining = append(c.draining, prev) // Close closes it too
	}
	c.publishLocked()
	c.mu.Unlock()
	c.downSince.Store(0)
	cn.kick()
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
			if cn.answered.Load() || !prev.usable() {
				c.closeWhenIdle(prev)
				return
			}
			c.mu.Lock()
			back := !c.closed && (c.conns[slot] == nil || c.conns[slot] == cn)
			if back {
				c.conns[slot] = prev
				c.dropDraining(prev)
				c.publishLocked()
			}
			c.mu.Unlock()
			if back {
				prev.setAccepting(true)
				c.log.Error("the new connection closed before APNs answered anything (new credentials refused?); the previous connection serves again",
					"slot", slot, "previous", prev.id, "new", cn.id)
				c.poke()
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

// remove takes the dead cn out of slot.
func (c *Client) remove(slot int, cn *conn) {
	c.mu.Lock()
	if c.conns[slot] == cn {
		c.conns[slot] = nil
		c.publishLocked()
	}
	c.mu.Unlock()
	cn.fail(errors.New("connection removed"))
	c.poke()
}

// retire takes cn (GOAWAY, or out of stream ids) out of slot; its streams
// finish and then it closes (in the background).
func (c *Client) retire(slot int, cn *conn) {
	c.mu.Lock()
	if c.conns[slot] == cn {
		c.conns[slot] = nil
		c.publishLocked()
	}
	if c.closed {
		c.mu.Unlock()
		return
	}
	cn.setAccepting(false)
	c.draining = append(c.draining, cn)
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		c.closeWhenIdle(cn)
	}()
	c.poke()
}

// closeWhenIdle closes cn (already in draining) once no request is in
// flight on it, and forgets it.
func (c *Client) closeWhenIdle(cn *conn) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for cn.inFlight() > 0 && cn.alive() && c.ctx.Err() == nil {
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
	cn.closeGracefully()
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

// ClientStatus is a snapshot of a client's connections.
type ClientStatus struct {
	Endpoint    string    `json:"endpoint"`
	Connections int       `json:"connections"` // up and taking requests
	Target      int       `json:"target"`
	Draining    int       `json:"draining,omitempty"`
	InFlight    int       `json:"in_flight"`
	Queued      int       `json:"queued"`
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
	s := ClientStatus{Endpoint: c.base, Target: c.o.Connections, Draining: len(c.draining), Dials: c.dials.Load(), Queued: int(c.queued.Load())}
	for _, cn := range c.conns {
		if cn != nil && cn.alive() {
			s.Connections++
			s.InFlight += cn.inFlight()
		}
	}
	for _, cn := range c.draining {
		s.InFlight += cn.inFlight()
	}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
		s.LastErrorAt = c.lastErrT
	}
	return s
}

// Close closes every connection at once: queued requests complete with
// ErrClosed, requests in flight with a *ConnError wrapping ErrClosed (all
// callbacks run before Close returns, some on Close's goroutine). Callers
// that want a graceful end wait for their answers first. Close waits for
// every goroutine of the client to end.
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
	c.qmu.Lock()
	c.qclosed = true
	var queued []*call
	for c.q.n > 0 {
		queued = append(queued, c.q.popFront())
	}
	c.queued.Store(0)
	c.qmu.Unlock()
	for _, k := range queued {
		c.finish(k, nil, ErrClosed)
	}
	for _, cn := range conns {
		if cn != nil {
			cn.fail(ErrClosed)
		}
	}
	c.wg.Wait()
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// ring is a FIFO of calls with push-front (retries), grown on demand.
type ring struct {
	buf     []*call // len is 0 or a power of two
	head, n int
}

func (r *ring) grow() {
	size := max(16, 2*len(r.buf))
	nb := make([]*call, size)
	for i := range r.n {
		nb[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = nb, 0
}

func (r *ring) pushBack(k *call) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = k
	r.n++
}

func (r *ring) pushFront(k *call) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = k
	r.n++
}

func (r *ring) popFront() *call {
	k := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if r.n == 0 && len(r.buf) > 4096 {
		r.buf, r.head = nil, 0 // give a burst's memory back
	}
	return k
}

// filter removes the calls for which drop returns an error, keeping the
// order of the rest, and appends them with their errors to done.
func (r *ring) filter(drop func(*call) error, done []doneItem) []doneItem {
	mask := len(r.buf) - 1
	kept := 0
	for i := range r.n {
		k := r.buf[(r.head+i)&mask]
		if err := drop(k); err != nil {
			done = append(done, doneItem{k: k, err: err})
			continue
		}
		r.buf[(r.head+kept)&mask] = k
		kept++
	}
	for i := kept; i < r.n; i++ {
		r.buf[(r.head+i)&mask] = nil
	}
	r.n = kept
	return done
}
