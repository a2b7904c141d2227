package h2test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/apnsd/apnsd/internal/pki"
)

// Options configures a [Server]. The zero value is a well-behaved h2 server
// that answers every request 200.
type Options struct {
	// CA issues the server's certificate; nil makes a fresh one.
	CA *pki.CA
	// Settings are sent in the server's first SETTINGS frame. Unset
	// parameters keep RFC 9113's defaults, except MAX_CONCURRENT_STREAMS,
	// which is 100 unless given here (0 is allowed: no streams at all).
	Settings []http2.Setting
	// Handler is called for every complete request on the connection's
	// reader goroutine (see the package doc); nil answers 200 at once.
	Handler func(*Request)
	// NoH2 makes an HTTP/1.1-only server: no ALPN at all (the TLS
	// handshake completes with no protocol negotiated, as with many
	// HTTP/1.1 servers), and every connection is answered with an
	// HTTP/1.1 505 and closed. Set ALPN too to offer protocols anyway.
	NoH2 bool
	// ALPN, when set, replaces the protocols offered in ALPN (default
	// ["h2"], or none with NoH2). A client offering only "h2" to a server
	// offering only "http/1.1" gets a TLS no_application_protocol alert.
	ALPN []string
	// EndlessLimit bounds an endless body (Reply.EndlessBody) per stream,
	// so a client that never stops reading cannot keep a test running
	// forever; 0 means 64 MiB.
	EndlessLimit int64
}

// Stats are the server's counters; see the package doc for what they
// prove about the client.
type Stats struct {
	Conns             int64 // TCP connections accepted
	H2Conns           int64 // of those, that completed TLS with ALPN h2 and sent the preface
	NonH2Conns        int64 // that completed TLS without ALPN h2 (answered 505 when NoH2)
	ClientCerts       int64 // h2 connections on which the client presented a certificate
	Requests          int64 // complete requests handed to the handler
	BadRequests       int64 // of those, not APNs-shaped (method, :path, :scheme)
	Responses         int64 // response HEADERS written (any status)
	ResetsSent        int64 // RST_STREAM written
	ResetsRecv        int64 // RST_STREAM received from the client
	GoAwaysSent       int64
	GoAwaysRecv       int64
	PingsSent         int64 // PINGs written (not ACKs)
	PingAcksRecv      int64 // ACKs of those received
	PingsRecv         int64 // PINGs from the client (each ACKed)
	SettingsSent      int64 // non-ACK SETTINGS written, the first one included
	SettingsAcks      int64 // ACKs of those received
	WindowUpdatesRecv int64
	DataBytesRecv     int64 // flow-controlled DATA bytes received
	EndlessBytes      int64 // DATA bytes written for endless bodies

	MaxOpenStreams        int64 // most streams open at once on one connection
	StreamLimitViolations int64
	FlowViolations        int64
	FrameSizeViolations   int64
	StreamsAfterGoAway    int64
	ProtocolErrors        int64
	// LastProtocolError and LastFlowViolation say what the last
	// ProtocolErrors and FlowViolations counts were for.
	LastProtocolError, LastFlowViolation string
}

// Server is a running hostile HTTP/2 server. Make it with [New]; Close it.
type Server struct {
	o    Options
	ca   *pki.CA
	ln   net.Listener
	tlsc *tls.Config

	mu        sync.Mutex // guards conns, closed, nextID, lastProto
	conns     map[*Conn]struct{}
	lastProto string
	lastFlow  string
	closed    bool
	nextID    uint64

	wg sync.WaitGroup // accept loop and connection goroutines

	st struct {
		conns, h2Conns, nonH2, clientCerts, requests, badRequests, responses             atomic.Int64
		resetsSent, resetsRecv, goAwaysSent, goAwaysRecv, pingsSent, pingAcks, pingsRecv atomic.Int64
		settingsSent, settingsAcks, wuRecv, dataRecv, endless                            atomic.Int64
		maxOpen, limitViol, flowViol, frameViol, afterGoAway, protoErr                   atomic.Int64
	}
}

// New starts a server on a random loopback port.
func New(o Options) (*Server, error) {
	ca := o.CA
	if ca == nil {
		var err error
		if ca, err = pki.NewCA("h2test CA"); err != nil {
			return nil, err
		}
	}
	cert, err := ca.ServerCert()
	if err != nil {
		return nil, err
	}
	protos := []string{"h2"}
	if o.NoH2 {
		protos = nil
	}
	if o.ALPN != nil {
		protos = o.ALPN
	}
	if o.EndlessLimit <= 0 {
		o.EndlessLimit = 64 << 20
	}
	s := &Server{
		o:  o,
		ca: ca,
		tlsc: &tls.Config{
			Certificates: []tls.Certificate{cert.TLSCertificate()},
			NextProtos:   protos,
			ClientAuth:   tls.RequestClientCert,
			MinVersion:   tls.VersionTLS12,
		},
		conns: map[*Conn]struct{}{},
	}
	if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// URL is the base URL to give a client: https://127.0.0.1:PORT.
func (s *Server) URL() string { return "https://" + s.ln.Addr().String() }

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Pool trusts the server's certificate.
func (s *Server) Pool() *x509.CertPool { return s.ca.Pool() }

// CA is the authority that issued the server's certificate.
func (s *Server) CA() *pki.CA { return s.ca }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	t := &s.st
	return Stats{
		Conns: t.conns.Load(), H2Conns: t.h2Conns.Load(), NonH2Conns: t.nonH2.Load(), ClientCerts: t.clientCerts.Load(),
		Requests: t.requests.Load(), BadRequests: t.badRequests.Load(), Responses: t.responses.Load(),
		ResetsSent: t.resetsSent.Load(), ResetsRecv: t.resetsRecv.Load(),
		GoAwaysSent: t.goAwaysSent.Load(), GoAwaysRecv: t.goAwaysRecv.Load(),
		PingsSent: t.pingsSent.Load(), PingAcksRecv: t.pingAcks.Load(), PingsRecv: t.pingsRecv.Load(),
		SettingsSent: t.settingsSent.Load(), SettingsAcks: t.settingsAcks.Load(),
		WindowUpdatesRecv: t.wuRecv.Load(), DataBytesRecv: t.dataRecv.Load(), EndlessBytes: t.endless.Load(),
		MaxOpenStreams: t.maxOpen.Load(), StreamLimitViolations: t.limitViol.Load(),
		FlowViolations: t.flowViol.Load(), FrameSizeViolations: t.frameViol.Load(),
		StreamsAfterGoAway: t.afterGoAway.Load(), ProtocolErrors: t.protoErr.Load(),
		LastProtocolError: s.lastProtocolError(),
		LastFlowViolation: s.lastFlowViolation(),
	}
}

func (s *Server) lastProtocolError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastProto
}

func (s *Server) lastFlowViolation() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastFlow
}

// flowViolation records what the last flow-control violation was.
func (s *Server) flowViolation(msg string) {
	s.mu.Lock()
	s.lastFlow = msg
	s.mu.Unlock()
}

// protocolError counts a rule the client broke.
func (s *Server) protocolError(msg string) {
	s.st.protoErr.Add(1)
	s.mu.Lock()
	s.lastProto = msg
	s.mu.Unlock()
}

// Conns returns the open h2 connections, oldest first.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	out := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// WaitPending waits until the open connections together hold at least n
// requests not yet answered (see [Conn.Pending]), for at most d. It
// reports whether they did.
func (s *Server) WaitPending(n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		total := 0
		for _, c := range s.Conns() {
			total += len(c.Pending())
		}
		if total >= n {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Close stops accepting, closes every connection abruptly and waits for the
// server's goroutines (endless bodies included) to end.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.st.conns.Add(1)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.nextID++
		id := s.nextID
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(nc, id)
	}
}

// http1Reply is what a NoH2 server (or any non-h2 connection) answers.
const http1Reply = "HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 25\r\n\r\nthis server speaks HTTP/1"

func (s *Server) serve(nc net.Conn, id uint64) {
	defer s.wg.Done()
	tc := tls.Server(nc, s.tlsc)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != "h2" || s.o.NoH2 {
		s.st.nonH2.Add(1)
		// Read what the client sends first (an HTTP/1 request or an
		// HTTP/2 preface), then answer as an HTTP/1.1 server would.
		buf := make([]byte, 4096)
		tc.SetReadDeadline(time.Now().Add(2 * time.Second))
		tc.Read(buf)
		io.WriteString(tc, http1Reply)
		tc.Close()
		return
	}
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(tc, preface); err != nil || string(preface) != http2.ClientPreface {
		s.protocolError(fmt.Sprintf("bad client preface %q (%v)", preface, err))
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	if len(cs.PeerCertificates) > 0 {
		s.st.clientCerts.Add(1)
	}
	s.st.h2Conns.Add(1)
	c := newConn(s, tc, id)
	if err := c.writeInitialSettings(); err != nil {
		tc.Close()
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		tc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	c.run()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// bufferedReader keeps the Framer's reads off the TLS record boundaries.
func bufferedReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }
