// Package ipc implements apnsd's local socket protocol (version 1,
// docs/protocol.md): one JSON request per line in, one JSON answer per line
// out, in request order per connection. It owns framing, request decoding
// and the protocol's own validation, the table of operations with a
// permission each, the peer's identity, the error codes (and which are
// retryable), and a client for apnsctl and tests. It knows nothing of APNs:
// the daemon plugs in as a Backend and turns a Send into a notification.
package ipc
