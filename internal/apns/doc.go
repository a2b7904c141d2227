// Package apns speaks Apple's HTTP/2 provider API: it builds and validates
// notification requests, loads provider credentials, and keeps a small set of
// long-lived HTTP/2 connections per endpoint over which requests are sent
// and Apple's answers are read back.
//
// # Transport
//
// The HTTP/2 client is the package's own, built on golang.org/x/net/http2's
// Framer and hpack; net/http's client is not used. A Client keeps
// ClientOptions.Connections connections and one bounded FIFO queue of
// requests (QueueSize) that all its connections drain.
//
// Each connection owns exactly two goroutines. The writer wakes when a
// request is queued, a stream finishes, window opens or a control frame is
// due; it takes as many queued requests as the server's
// SETTINGS_MAX_CONCURRENT_STREAMS leaves room for, encodes HEADERS (split
// into CONTINUATION at SETTINGS_MAX_FRAME_SIZE) and DATA (within the
// connection and stream send windows) for all of them into one buffer, and
// hands it to TLS in one write; it loops until nothing more is ready, then
// sleeps. The reader decodes frames and completes streams by id from a
// table; there is no goroutine per stream and none per queued request. A
// third goroutine per Client, the reaper, runs only while requests are
// pending and completes those past their deadline (a request that expires
// while queued is never sent) or waiting with no connection up.
//
// Memory per queued request is the call record plus the caller's Request
// (about 700 bytes for a typical notification, measured by TestQueueMemory;
// the stated bound is 2 KiB).
//
// # HTTP/2 rules
//
//   - Client preface and SETTINGS (ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 64 KiB,
//     MAX_HEADER_LIST_SIZE 16 KiB) in the first write, plus a connection
//     WINDOW_UPDATE to 1 MiB; requests wait for the server's SETTINGS.
//   - Server SETTINGS are applied whenever they come and ACKed:
//     MAX_CONCURRENT_STREAMS lowered below what is in flight opens nothing
//     new until under it; INITIAL_WINDOW_SIZE changes adjust open streams;
//     HEADER_TABLE_SIZE bounds the HPACK encoder; MAX_FRAME_SIZE bounds
//     frames; MAX_HEADER_LIST_SIZE refuses a too-large request locally.
//   - Flow control both ways: DATA never exceeds the windows; credit is
//     returned for received DATA (a quarter window at a time).
//   - HPACK on purpose: apns-id, apns-request-id, apns-expiration,
//     apns-collapse-id, content-length and a /3/device/<token> :path are
//     never-indexed literals (per-request values would evict the stable
//     entries); apns-topic, apns-push-type, authorization and the other
//     stable fields are indexed.
//   - PING after PingInterval of silence; no answer within PingTimeout ends
//     the connection.
//   - GOAWAY: streams at or below last-stream-id finish; those above go back
//     to the front of the queue and are sent on another connection; the
//     connection is replaced at once and closed when its streams end.
//   - RST_STREAM: REFUSED_STREAM completes with a *ConnError wrapping
//     ErrRefusedStream (or is re-queued with RetryRefusedStream); any other
//     code completes the request with a *ConnError.
//   - Stream ids: a connection is replaced before its ids run out (2^31).
//   - Response limits: headers beyond 16 KiB reset the stream (far beyond:
//     the connection ends with a protocol error); a body beyond 64 KiB is
//     reset.
//   - TLS 1.2 or later and ALPN h2 are required; a server that does not
//     negotiate h2 fails the dial with an error saying so.
//
// # Connections
//
// A new connection carries one stream until it has answered once (Apple's
// rule for token auth) or warmUp has passed. Rotate replaces every
// connection make-before-break: the old one stops taking requests, and is
// closed once idle after the new one answered or lived proofTime; if the new
// one dies first without answering (refused credentials) the old one serves
// again. A dead connection is redialled with jittered exponential backoff
// between MinBackoff and MaxBackoff (default cap 10 s).
//
// During an outage a request waiting with no connection up fails with
// ErrUnavailable after UnavailableWait (default 3 s) instead of its whole
// deadline, and prompts a dial as soon as the last attempt is a second old,
// so a request made a second after APNs returns is delivered within about
// a second.
package apns
