package apnstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/pki"
)

// Options configures a [Server]. The zero value is a certificate-less
// (token-mode) server on a random loopback port that accepts any bearer
// token and answers the push, broadcast and channel management APIs.
type Options struct {
	// CA issues the server's TLS certificate (for localhost, 127.0.0.1 and
	// ::1). nil: New makes a fresh CA.
	CA *pki.CA
	// ClientCAs, when set, makes the server require a client certificate
	// that chains to one of these CAs (certificate-based authentication, as
	// with Apple push certificates). nil: no client certificate is asked for
	// and every request must carry a provider token (token-based
	// authentication).
	ClientCAs *x509.CertPool
	// MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS the server
	// advertises (and enforces) on each connection. 0 means 1000.
	MaxConcurrentStreams uint32
	// Addr is the address to listen on; default "127.0.0.1:0".
	Addr string
	// Logger receives one debug line per request and errors; nil discards.
	Logger *slog.Logger

	// VerifyToken, in token mode, checks the JWT taken from the
	// "authorization: bearer <jwt>" header. It returns "" to accept the
	// token or an APNs reason (such as apns.ReasonInvalidProviderToken or
	// apns.ReasonExpiredProviderToken) to refuse the request; the status is
	// the one Apple sends with that reason (403 if the reason is unknown).
	// nil: if TokenKeys is set, tokens are verified against it with
	// [ES256Verifier]; otherwise any non-empty token is accepted.
	VerifyToken func(jwt string) (reason string)
	// TokenKeys maps key ids ("kid") to the public halves of .p8 keys; used
	// only when VerifyToken is nil. See [ES256Verifier].
	TokenKeys map[string]*ecdsa.PublicKey

	// APIs selects which of Apple's APIs this server answers (see [API]);
	// a request for another is answered 404 BadPath. 0 means all three on
	// one listener: push, broadcast and channel management.
	APIs API
	// Channels is the channel store the broadcast and management APIs use.
	// nil: a store of the server's own (see [ChannelStore]); give two
	// servers the same store to split push and management over two
	// listeners as Apple does ([NewManagement] does that).
	Channels *ChannelStore
	// MaxChannels is the per-app channel limit of the store New makes; 0
	// means Apple's 10,000 (apns.MaxChannelsPerApp). Ignored when Channels
	// is set.
	MaxChannels int
	// BundleIDs, in token mode, are the bundle ids the provider token's
	// team owns: a broadcast or management request for any other is
	// refused with 403 TopicMismatch. nil: every bundle id is the team's.
	// (In certificate mode the certificate decides: its subject UID and
	// the topics in its topics extension.)
	BundleIDs []string
	// BroadcastDisabled lists bundle ids whose App ID has no broadcast
	// capability: their broadcast and management requests are refused
	// with 400 FeatureNotEnabled.
	BroadcastDisabled []string
}

// Responder decides the answer to a request that passed validation. It is
// called concurrently from many goroutines.
type Responder func(r *Request) Reply

// Request is one request as the server received it.
type Request struct {
	Method, Path, DeviceToken string
	// Topic is the effective topic: the apns-topic header, or the client
	// certificate's bundle id (subject UID) when the header was left out.
	Topic  string
	Header http.Header
	Body   []byte
	// ClientCert is the leaf certificate presented on the TLS connection;
	// nil in token mode.
	ClientCert *x509.Certificate
	// ConnID identifies the TLS connection that carried the request: 1, 2,
	// 3… in the order connections became ready for HTTP/2 (TLS handshake and
	// HTTP/2 preface done). IDs are never reused, not even after Reset.
	ConnID uint64
	// ApnsID is the apns-id answered: the request's own if it sent a valid
	// one, otherwise one the server made up.
	ApnsID   string
	Received time.Time

	// API is the API the request was for. For APIBroadcast and
	// APIManagement, ApnsID is the apns-request-id answered (the request's
	// own if valid, else a fresh UUID), DeviceToken and Topic are empty,
	// and BundleID is the bundle id from the path.
	API      API
	BundleID string
	// ChannelID is the apns-channel-id of a broadcast, get or delete.
	ChannelID string
	// ChannelOp is the management operation (0 for push and broadcast).
	ChannelOp apns.ChannelOp
}

// Reply is the answer to give to a request.
type Reply struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Reason is sent as {"reason": ...} in the JSON body of a non-200 answer.
	Reason string
	// Timestamp, if not 0, is sent as "timestamp" (milliseconds since the
	// epoch) in the JSON body, as Apple does with 410.
	Timestamp int64
	// Delay is how long to wait before answering (or before Action). If
	// the request is cancelled (the client resets the stream or the
	// connection goes away) the wait ends and nothing is answered: the
	// stream is reset if it is still open, and the request counts in
	// [Server.Unanswered].
	Delay time.Duration
	// Action, if not ActionNone, injects a fault: close the connection,
	// send GOAWAY, or refuse the stream. See [Action].
	Action Action
}

// Always returns a Responder that answers every valid request with status
// and reason. A 410 answer gets Timestamp = the time of the request (ms since
// the epoch), as Apple always sends one with 410.
func Always(status int, reason string) Responder {
	return func(r *Request) Reply {
		rep := Reply{Status: status, Reason: reason}
		if status == http.StatusGone {
			rep.Timestamp = r.Received.UnixMilli()
		}
		return rep
	}
}

// DemoResponder answers by the device token's first four hex digits; see the
// table in the package documentation.
func DemoResponder(r *Request) Reply {
	p := r.DeviceToken
	if len(p) > 4 {
		p = p[:4]
	}
	switch p {
	case "0410":
		return Reply{Status: 410, Reason: "Unregistered", Timestamp: time.Now().UnixMilli()}
	case "0400":
		return Reply{Status: 400, Reason: "BadDeviceToken"}
	case "0403":
		return Reply{Status: 403, Reason: "Forbidden"}
	case "0413":
		return Reply{Status: 413, Reason: "PayloadTooLarge"}
	case "0429":
		return Reply{Status: 429, Reason: "TooManyRequests"}
	case "0500":
		return Reply{Status: 500, Reason: "InternalServerError"}
	case "0503":
		return Reply{Status: 503, Reason: "ServiceUnavailable"}
	}
	return Reply{Status: 200}
}

type connKey struct{}

// Server is a running APNs stand-in. Create it with [New]; all methods are
// safe for concurrent use.
type Server struct {
	// URL is the base URL to send to, "https://127.0.0.1:PORT".
	URL string
	// CA issued the server's certificate (Options.CA, or the one New made).
	CA *pki.CA

	opts      Options
	tlsCfg    *tls.Config
	ln        net.Listener
	log       *slog.Logger
	errLog    *log.Logger
	verify    func(string) string
	channels  *ChannelStore
	responder atomic.Pointer[Responder]
	baseCtx   context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // the accept loop and every connection

	refuseHandshakes atomic.Bool
	maxStreams       atomic.Uint32

	mu                sync.Mutex
	closed            bool
	conns             map[net.Conn]*connInfo // by TCP connection
	nextConnID        uint64
	connections       int
	requests          []Request
	count             int
	accepted          int
	unanswered        int
	refusedHandshakes int
	maxConcurrent     int
}

// New starts a server; it is listening and serving when New returns.
func New(o Options) (*Server, error) {
	ca := o.CA
	if ca == nil {
		var err error
		if ca, err = pki.NewCA("apnstest CA"); err != nil {
			return nil, fmt.Errorf("apnstest: making a CA: %w", err)
		}
	}
	issued, err := ca.ServerCert()
	if err != nil {
		return nil, fmt.Errorf("apnstest: issuing the server certificate: %w", err)
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 1000
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		CA:     ca,
		opts:   o,
		log:    lg,
		errLog: slog.NewLogLogger(lg.Handler(), slog.LevelDebug),
		conns:  map[net.Conn]*connInfo{},
		verify: o.VerifyToken,
	}
	s.maxStreams.Store(o.MaxConcurrentStreams)
	s.channels = o.Channels
	if s.channels == nil {
		s.channels = NewChannelStore(o.MaxChannels)
	}
	if s.verify == nil && o.TokenKeys != nil {
		s.verify = ES256Verifier(o.TokenKeys)
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())

	s.tlsCfg = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{issued.TLSCertificate()},
		NextProtos:   []string{alpnH2}, // HTTP/2 only, like APNs
	}
	if o.ClientCAs != nil {
		s.tlsCfg.ClientCAs = o.ClientCAs
		s.tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	s.tlsCfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if s.refuseHandshakes.Load() {
			return nil, errHandshakeRefused
		}
		return nil, nil
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("apnstest: %w", err)
	}
	s.ln = ln
	s.URL = "https://" + ln.Addr().String()
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Debug("apnstest: listening", "url", s.URL, "cert_auth", o.ClientCAs != nil,
		"max_concurrent_streams", o.MaxConcurrentStreams)
	return s, nil
}

var errHandshakeRefused = errors.New("apnstest: handshakes refused (SetRefuseHandshakes)")

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 10 * time.Second

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Such as EMFILE under load: wait a little, as net/http does.
			s.log.Error("apnstest: accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		ci := s.newConnInfo(c)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = ci
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(ci)
	}
}

// serveConn does the TLS handshake and serves HTTP/2 on one connection with
// a net/http Server of its own, so that the connection can be sent a GOAWAY
// of its own (see connInfo.goAway). It returns once that connection is
// closed and its Server has stopped.
//
// The stand-in terminates TLS itself and hands net/http the decrypted
// stream (a wireConn) as prior-knowledge HTTP/2 (Protocols: unencrypted
// HTTP/2 only): net/http's HTTP/2 server then reads and writes frames
// through the wireConn, which is what lets the stand-in watch and rewrite
// them (exact Accepted, GOAWAY debug data, REFUSED_STREAM). To the client
// this is ordinary HTTP/2 over TLS with ALPN h2. The TLS state reaches the
// handler through the connection's context (connInfo.tls), not r.TLS.
func (s *Server) serveConn(ci *connInfo) {
	defer s.wg.Done()
	defer func() {
		ci.conn.Close()
		s.mu.Lock()
		delete(s.conns, ci.conn)
		s.mu.Unlock()
	}()
	tc := ci.wire.tc
	ctx, cancel := context.WithTimeout(s.baseCtx, handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if s.refuseHandshakes.Load() {
			s.mu.Lock()
			s.refusedHandshakes++
			s.mu.Unlock()
		}
		s.log.Debug("apnstest: TLS handshake failed", "remote", ci.conn.RemoteAddr(), "err", err)
		return
	}
	st := tc.ConnectionState()
	if st.NegotiatedProtocol != alpnH2 {
		s.log.Debug("apnstest: client did not negotiate h2", "remote", ci.conn.RemoteAddr(), "alpn", st.NegotiatedProtocol)
		return
	}
	ci.tls = &st
	ln := newConnListener(ci.wire)
	served := make(chan error, 1)
	go func() { served <- ci.h1.Serve(ln) }()
	select {
	case <-ci.closed:
	case err := <-served:
		// Serve returns when its listener closes (Shutdown, for a
		// GOAWAY) or at once if it cannot start; the connection, if
		// handed out, is served on by a goroutine of its own.
		if !ln.handedOut() {
			s.log.Error("apnstest: serving HTTP/2", "remote", ci.conn.RemoteAddr(), "err", err)
			return
		}
		<-ci.closed
		ln.Close()
		return
	}
	ln.Close()
	<-served
}

// alpnH2 is HTTP/2's ALPN protocol id (RFC 9113, section 3.2).
const alpnH2 = "h2"

// newConnInfo prepares serving c: a TLS server connection wrapped in a
// wireConn, and a net/http Server of its own, serving HTTP/2 only, whose
// Shutdown makes it send GOAWAY on this one connection.
func (s *Server) newConnInfo(c net.Conn) *connInfo {
	ci := &connInfo{conn: c, goAwaySent: make(chan struct{}), closed: make(chan struct{})}
	ci.wire = &wireConn{tc: tls.Server(c, s.tlsCfg), s: s, ci: ci}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true) // prior knowledge over our own TLS; see serveConn
	ci.h1 = &http.Server{
		Handler:   s,
		ErrorLog:  s.errLog,
		ConnState: s.connState,
		Protocols: &protos,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: int(s.maxStreams.Load())},
		// Bounds the wait for the client's preface (net/http reads it
		// before handing the connection to its HTTP/2 server, which then
		// clears the deadline), as x/net's ServeConn did with 10 s.
		ReadHeaderTimeout: handshakeTimeout,
		BaseContext:       func(net.Listener) context.Context { return context.WithValue(s.baseCtx, connKey{}, ci) },
	}
	return ci
}

// connState numbers a connection when it first leaves StateNew: for
// HTTP/2 that happens once the TLS handshake succeeded and the client's
// preface was read, before any request on it is handled.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	w, ok := c.(*wireConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive, http.StateIdle:
		s.mu.Lock()
		s.numberLocked(w.ci)
		s.mu.Unlock()
	case http.StateClosed:
		w.ci.closeOnce.Do(func() { close(w.ci.closed) })
	}
}

func (s *Server) numberLocked(ci *connInfo) {
	if ci.id == 0 {
		s.nextConnID++
		ci.id = s.nextConnID
		s.connections++
	}
}

// RootCAs returns the pool a client must trust to accept the server's
// certificate.
func (s *Server) RootCAs() *x509.CertPool { return s.CA.Pool() }

// CACertPEM returns the CA certificate (PEM) a client must trust.
func (s *Server) CACertPEM() []byte { return append([]byte(nil), s.CA.CertPEM...) }

// Addr returns the address the server listens on ("127.0.0.1:PORT").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetResponder sets what valid requests are answered; nil restores the
// default (200 for everything valid).
func (s *Server) SetResponder(f Responder) {
	if f == nil {
		s.responder.Store(nil)
		return
	}
	s.responder.Store(&f)
}

// Requests returns a copy of every request that passed validation, in the
// order they arrived.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// Count returns how many requests were received, valid or not.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Accepted returns how many requests were answered 200. An answer counts
// once its HEADERS frame has been written to the connection: a request whose
// Reply carried a fault (ActionCloseConn, ActionResetStream), a request whose
// answer was lost with its connection, and a request the client opened after
// a GOAWAY's last-stream-id are never counted.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Connections returns how many connections were accepted so far (counting
// only those whose TLS handshake and HTTP/2 preface succeeded).
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connections
}

// OpenConnections returns how many connections are open right now.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ci := range s.conns {
		if ci.id != 0 {
			n++
		}
	}
	return n
}

// MaxConcurrent returns the highest number of requests seen in flight at
// once on any one connection.
func (s *Server) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConcurrent
}

// Reset clears the recorded requests and every counter. Connection IDs keep
// counting up.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
	s.count, s.accepted, s.connections, s.maxConcurrent = 0, 0, 0, 0
	s.unanswered, s.refusedHandshakes = 0, 0
}

// DropConnections closes every open connection abruptly (no GOAWAY, no TLS
// close_notify: the TCP connections are closed), as a network failure would.
// The server keeps listening.
func (s *Server) DropConnections() {
	s.mu.Lock()
	cis := make([]*connInfo, 0, len(s.conns))
	for _, ci := range s.conns {
		cis = append(cis, ci)
	}
	s.mu.Unlock()
	for _, ci := range cis {
		ci.closeAbruptly()
	}
}

// Close stops the server: it stops listening, closes every connection and
// cancels requests being delayed. It waits for the connections' serving
// goroutines (not for handlers still running).
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.ln.Close()
		s.DropConnections()
		s.cancel()
		s.wg.Wait()
	})
}

// Client returns an HTTP/2-only client that trusts the server and presents
// certs (if any) as its client certificate. It is a convenience for tests.
func (s *Server) Client(certs ...tls.Certificate) *http.Client {
	var protos http.Protocols
	protos.SetHTTP2(true)
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				RootCAs:      s.RootCAs(),
				Certificates: certs,
				MinVersion:   tls.VersionTLS12,
			},
			Protocols:         &protos,
			ForceAttemptHTTP2: true,
		},
		Timeout: 30 * time.Second,
	}
}

// newUUID returns a random (version 4) UUID in canonical lowercase form.
func newUUID() string {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
