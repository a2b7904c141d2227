// Package apnstest is a local stand-in for Apple's HTTP/2 push provider API
// that checks requests the way Apple documents and answers whatever status
// and reason it is told to.
//
// It is a normal (non-test) package: the integration tests, the benchmark and
// the daemon's -demo mode all run against it. It never talks to Apple.
//
// A [Server] listens on loopback with a TLS certificate from a throwaway
// [pki.CA], speaks HTTP/2 only, and validates every request (method, path,
// device token, apns-* headers, topic against the client certificate,
// provider token, payload) before asking its [Responder] what to answer.
// See [Server.ServeHTTP]'s documentation for the exact order of the checks.
//
// # DemoResponder
//
// [DemoResponder] picks the answer from the first four hex digits of the
// device token, so that a demo or a test can provoke every kind of answer:
//
//	token prefix  status  reason
//	0410…         410     Unregistered (timestamp = now, in ms)
//	0400…         400     BadDeviceToken
//	0403…         403     Forbidden
//	0413…         413     PayloadTooLarge
//	0429…         429     TooManyRequests
//	0500…         500     InternalServerError
//	0503…         503     ServiceUnavailable
//	anything else 200     (accepted)
//
// # Serving
//
// The server runs its own accept loop: each TCP connection gets a TLS
// handshake (ALPN "h2" only) and is then served by an x/net http2.Server of
// its own (http2.Server.ServeConn), which advertises and enforces
// SETTINGS_MAX_CONCURRENT_STREAMS. One server per connection is what lets a
// single connection be sent a GOAWAY.
//
// # Fault injection
//
// Faults come from the Responder's [Reply], so they can be chosen per
// request (by device token, by count, by time) or for every request:
//
//   - Status/Reason: any error answer, e.g. 500 InternalServerError,
//     503 ServiceUnavailable, 429 TooManyRequests.
//   - Delay: a slow answer. If the client gives up (or the connection
//     dies) first, nothing is answered.
//   - Action [ActionCloseConn]: the TCP connection carrying the request is
//     closed (after Delay) without an answer, GOAWAY or TLS close_notify.
//     Every other stream on that connection dies too. A Go client sees
//     "unexpected EOF" on each of them; net/http does not retry (POST).
//   - Action [ActionGoAway]: the connection receives GOAWAY (NO_ERROR,
//     last-stream-id = highest stream received, debug data
//     {"reason":"<Reason or Shutdown>"}) before the request's own answer
//     (Status/Reason, 200 if Status is 0). Streams already received are
//     finished; streams the client opens after the GOAWAY are ignored
//     (never handled or counted: a Go client retries them by itself on a
//     new connection); the connection closes once drained (the server
//     closes it about 1 s after the last stream, if the client has not).
//   - Action [ActionResetStream]: the stream is reset with
//     RST_STREAM(REFUSED_STREAM) ("not processed, safe to retry"); the
//     connection stays. Go's HTTP/2 client (net/http) retries a refused
//     stream by itself, up to 6 times: at once, then after about 1, 2, 4,
//     8, 16 and 32 s. Refusing every request therefore stalls such a client
//     for a minute; refuse a few (for instance the first attempt of each).
//
// For a span of time, [Window] wraps a Responder: requests received in
// [from, to) get the fault, the others the wrapped answer.
//
// Connection-level faults are methods of [Server]:
// [Server.SetRefuseHandshakes] makes new TLS handshakes fail (TLS alert
// internal_error; "remote error: tls: internal error" for a Go client) while
// leaving open connections alone; [Server.GoAway] sends GOAWAY on every open
// connection; [Server.DropConnections] closes them all abruptly;
// [Server.SetMaxConcurrentStreams] changes the stream limit of connections
// accepted afterwards (open connections keep theirs: x/net's server cannot
// send new SETTINGS on a live connection).
//
// The counters stay exact under faults: [Server.Count] counts every request
// received (valid or not), [Server.Requests] every valid one (faulted or
// not), [Server.Accepted] the 200 answers actually written to a connection
// (it watches the outgoing HEADERS frames), [Server.Unanswered] the valid
// requests that got no answer (ActionCloseConn, ActionResetStream, a Delay
// cut short). A valid request whose answer was decided but lost with its
// connection before it could be written (another stream's ActionCloseConn,
// DropConnections) counts in neither Accepted nor Unanswered.
package apnstest
