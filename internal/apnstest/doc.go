// Package apnstest is a local stand-in for Apple's HTTP/2 push provider API
// (with its broadcast and channel management APIs) that checks requests the
// way Apple documents and answers whatever status and reason it is told to.
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
// # Broadcast push and channel management
//
// Besides the push API (POST /3/device/<token>) the server answers Apple's
// broadcast API (POST /4/broadcasts/apps/<bundle id>, on the push hosts)
// and its channel management API (/1/apps/<bundle id>/channels with POST
// create → 201 and apns-channel-id, GET read → 200 and
// {"message-storage-policy":0|1,"push-type":"LiveActivity"}, DELETE → 204;
// GET /1/apps/<bundle id>/all-channels → 200 and {"channels":[...]}), as
// "Sending broadcast push notification requests to APNs" and "Sending
// channel management requests to APNs" describe them. Both answer
// apns-request-id (the request's if valid, else a fresh UUID) instead of
// apns-id, and check credentials as the push API does. docs/apple.md says
// what was read and which choices were made where Apple is unclear.
//
// Channels live in a [ChannelStore]: per app (bundle id), per server (a
// server is one environment), at most Options.MaxChannels per app (Apple's
// 10,000 by default; one more is 400 CannotCreateChannelConfig). A channel
// created with storage policy 0 takes only apns-expiration 0 (else 400
// BadExpirationDate). Tests can fill or inspect the store directly
// ([Server.Channels]). The documented refusals are all there:
// MissingChannelId, BadChannelId, ChannelNotRegistered, BadRequestParams,
// BadRequestPayload, MissingPushType, InvalidPushType, TopicDisallowed (a
// push type suffix on the path's bundle id), TopicMismatch (403: a bundle
// id the certificate, or Options.BundleIDs in token mode, does not cover),
// FeatureNotEnabled (Options.BroadcastDisabled). Payloads of broadcasts and
// of liveactivity pushes must follow Apple's Live Activity rules
// (apns.ValidateLiveActivity); a payload that does not is refused with 400
// [ReasonInvalidLiveActivity], the stand-in's own reason (APNs itself does
// not document checking the aps dictionary).
//
// The checks, the first failure deciding the answer. Both APIs: method
// (405 MethodNotAllowed) and path (404 BadPath); no apns-* header twice
// (400 DuplicateHeaders); credentials, as for a push (403 ...);
// apns-request-id, if any, a lowercase UUID (400 BadMessageId); the bundle
// id without push type suffix (400 TopicDisallowed), covered by the
// credentials (403 TopicMismatch), with broadcast enabled (400
// FeatureNotEnabled). Then a broadcast: apns-push-type present (400
// MissingPushType) and liveactivity in any case, since Apple spells it
// three ways (400 InvalidPushType); apns-channel-id present (400
// MissingChannelId), base64 of at most 64 bytes (400 BadChannelId), a
// channel of this app (400 ChannelNotRegistered); apns-priority present
// and 10, 5 or 1 (400 BadPriority); apns-expiration present and digits,
// and 0 on a storage-policy-0 channel (400 BadExpirationDate); the body
// not empty (400 PayloadEmpty), at most 5120 bytes (413 PayloadTooLarge),
// JSON (400 PayloadNotJSON), a Live Activity update or end (400
// InvalidLiveActivityPayload). apns-topic is not looked at. A read or
// delete: apns-channel-id as for a broadcast. A create: a JSON object (400
// BadRequestPayload) with no keys but message-storage-policy, the number 0
// or 1 (else 400 BadRequestParams), and push-type, present (400
// MissingPushType) and LiveActivity in any case (400 InvalidPushType);
// fewer channels than the limit (400 CannotCreateChannelConfig).
//
// The Responder decides broadcasts and management requests too (Request.API
// tells them apart; BundleID, ChannelID and ChannelOp describe them). For
// a management request a 200 (or zero) Reply means "carry the operation
// out"; any fault (status, Delay, Action) applies as for a push, and a
// refused create creates nothing.
//
// One listener or two. Apple serves management on hosts and ports of its
// own (api-manage-broadcast[.sandbox].push.apple.com:2196/2195). By default
// (Options.APIs == 0) one server answers all three APIs by path, which is
// what the -demo mode needs: point both the push and the management
// endpoint of an environment at the same URL. For the faithful split, give
// the push server Options.APIs = APIPush|APIBroadcast and start the
// management server with [NewManagement], which listens on a port of its
// own with the same CA, credential checks and channel store; each then
// answers 404 BadPath to the other's paths:
//
//	push, _ := apnstest.New(apnstest.Options{APIs: apnstest.APIPush | apnstest.APIBroadcast})
//	manage, _ := apnstest.NewManagement(push)
//	// endpoint = push.URL, management endpoint = manage.URL
//
// [Server.Accepted] counts every 200 written, so channel reads and lists
// count too; a create (201) or delete (204) does not.
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
// handshake (ALPN "h2" only) and is then served by a net/http Server of its
// own (Server.Serve on a one-connection listener; HTTP2Config sets the
// SETTINGS_MAX_CONCURRENT_STREAMS it advertises and enforces). One server
// per connection is what lets a single connection be sent a GOAWAY (that
// Server's Shutdown). The stand-in terminates TLS itself and gives net/http
// the decrypted stream as prior-knowledge HTTP/2 (Protocols: unencrypted
// HTTP/2 only), so that it sees every frame net/http writes: that is how
// Accepted counts only answers on the wire, how a GOAWAY gets Apple's debug
// data and how a refused stream gets REFUSED_STREAM. Clients see plain
// HTTP/2 over TLS.
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
// accepted afterwards (open connections keep theirs: net/http's HTTP/2
// server cannot send new SETTINGS on a live connection).
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
