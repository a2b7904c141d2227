// Package ctl implements apnsctl, the command-line tool with which operators
// and scripts talk to a running apnsd: send notifications (one, or many as
// JSON lines), check health and status, trigger a reload, and validate a
// config file offline (by running apnsd -check). It speaks only the socket
// protocol (internal/ipc) and does not link the APNs code.
package ctl
