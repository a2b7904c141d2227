// Package daemon is apnsd as a library: it owns the runtime state (one
// snapshot of the configuration and the apps built from it, swapped
// atomically by a reload), answers the socket protocol's sends, status and
// reloads as an ipc.Backend, sends through one long-lived APNs client per
// app and environment with Apple's retry policy, and reloads credentials and
// config on every trigger through one step per environment. The command
// line, signals and systemd live in cmd/apnsd/cli.
package daemon
