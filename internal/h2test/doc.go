// Package h2test is a hostile HTTP/2 test server for APNs clients: it answers
// APNs-shaped requests and, scripted per test, breaks the HTTP/2 rules a
// client must survive.
//
// It is written on golang.org/x/net/http2's [http2.Framer] and
// golang.org/x/net/http2/hpack, not on x/net's server, so that every frame
// it sends is the test's choice: SETTINGS at any moment, GOAWAY with any
// last-stream-id, RST_STREAM with any code, PINGs by the thousand, headers
// split over CONTINUATION, 1 MB header blocks, endless bodies, DATA on closed
// streams, garbage and half-written frames.
//
// # Serving
//
// [New] listens on 127.0.0.1 with TLS (a throwaway certificate from a
// [pki.CA]; trust [Server.Pool]) and ALPN "h2". With [Options.NoH2] it is
// an HTTP/1.1-only server: no ALPN (the handshake completes with nothing
// negotiated) and an HTTP/1.1 505 for whatever the client sends, so a
// client's "server does not speak h2" error can be tested;
// [Options.ALPN] = ["http/1.1"] makes Go's TLS refuse an h2-only client
// with a no_application_protocol alert instead. A client certificate is
// asked for but not required.
//
// Each connection has one reader goroutine that decodes frames and tracks
// streams. A request is complete once its END_STREAM arrived; the
// [Options.Handler] is then called with it, on that reader goroutine, so a
// handler sees requests in order and must not block: it answers at once
// ([Request.Respond]), or keeps the request and answers later from any
// goroutine ([Conn.Respond]), or does something hostile through [Conn].
// Without a handler every request is answered 200 with its apns-id (the
// request's own, or a fresh one).
//
// SETTINGS the server sends bind the client as RFC 9113 says: a value that
// allows the client more is in force as soon as it is sent, a value that
// allows less only once the client has ACKed it (and no larger value is
// still unacknowledged).
//
// The server keeps the HTTP/2 rules on its own side unless told otherwise:
// it sends its SETTINGS first, ACKs the client's, applies the client's
// SETTINGS_INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE and HEADER_TABLE_SIZE to what
// it sends, never sends DATA beyond the client's window, ACKs PINGs, and
// returns flow-control credit for every DATA byte it receives (so with
// SETTINGS_INITIAL_WINDOW_SIZE = 1 the client gets its window back one byte
// at a time).
//
// # Checking the client
//
// The server holds the client to the rules and counts what it saw in
// [Stats] (all counters are cumulative over the server's life; read them
// with [Server.Stats]): a new stream opened while the client already had
// as many open as the last SETTINGS_MAX_CONCURRENT_STREAMS it ACKed
// (StreamLimitViolations; the stream is refused with REFUSED_STREAM), DATA
// beyond the window the client was given (FlowViolations), a frame larger
// than the ACKed SETTINGS_MAX_FRAME_SIZE (FrameSizeViolations), a stream
// opened above the last-stream-id of a GOAWAY the server sent
// (StreamsAfterGoAway; ignored with its DATA, as RFC 9113 6.8 says: no
// RST_STREAM, and the GOAWAY is on the wire before anything the server
// writes after deciding to ignore it), an HPACK or framing error
// (ProtocolErrors; the connection is closed with GOAWAY), DATA on a stream
// the client had already ended (ProtocolErrors; reset with STREAM_CLOSED).
// DATA on a stream the server refused is ignored (RFC 9113 5.1). Stats.Requests
// counts complete requests handed to the handler, Stats.Responses the
// response HEADERS the server wrote: a client that reports exactly
// Responses answers, and an error for every other request, answered each
// request once.
//
// # Concurrency
//
// All methods of [Server] and [Conn] are safe for concurrent use. Writes to
// a connection are serialised under one lock, which also guards the HPACK
// encoder, so header blocks always reach the wire in the order they were
// encoded.
package h2test
