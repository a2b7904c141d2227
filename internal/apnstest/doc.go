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
package apnstest
