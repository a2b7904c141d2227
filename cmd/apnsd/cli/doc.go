// Package cli is apnsd's command line: flags, the demo, -check, socket
// activation, the signal loop and shutdown, and apnsd's side of systemd
// (readiness, reload and stop notifications, the watchdog). It turns the
// process into calls on internal/daemon, which knows nothing of flags,
// signals or systemd. cmd/apnsd's main only calls Main.
package cli
