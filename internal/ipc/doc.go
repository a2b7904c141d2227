// Package ipc implements apnsd's local socket protocol (version 1): one JSON
// request per line in, one JSON answer per line out, in request order per
// connection. It owns framing, request decoding and validation, the table of
// operations, and a client for apnsctl and tests; the daemon plugs in as a
// Backend.
package ipc
