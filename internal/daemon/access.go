package daemon

import (
	"log/slog"
	"os"
	"slices"

	"github.com/apnsd/apnsd/internal/ipc"
)

// peerAllowed reports whether a peer passes the allow-lists: its uid is in
// uids, or its primary gid or one of its supplementary groups is in gids.
// Empty lists allow everyone.
func peerAllowed(p *ipc.Peer, uids, gids []int) bool {
	if len(uids) == 0 && len(gids) == 0 {
		return true
	}
	if slices.Contains(uids, p.UID) || slices.Contains(gids, p.GID) {
		return true
	}
	if len(gids) == 0 {
		return false
	}
	for _, g := range p.Groups() {
		if slices.Contains(gids, g) {
			return true
		}
	}
	return false
}

// peerAuthorizer returns an ipc.Server.Authorize function enforcing the
// socket's allow-lists, or nil when there are none (the socket's mode and
// group are then the only gate). A refused peer gets a "forbidden" line
// and is logged with its uid, gid and pid.
func peerAuthorizer(uids, gids []int, log *slog.Logger) func(*ipc.Peer) *ipc.Error {
	if len(uids) == 0 && len(gids) == 0 {
		return nil
	}
	return func(p *ipc.Peer) *ipc.Error {
		if !p.Known() {
			log.Warn("refused a client: cannot read its credentials", "err", p.Err)
			return ipc.Errorf(ipc.CodeForbidden, "apnsd cannot check who you are: %v", p.Err)
		}
		// apnsd's own probes (the systemd watchdog's ping) always pass.
		if p.PID != os.Getpid() && !peerAllowed(p, uids, gids) {
			log.Warn("refused a client not in socket.allow_uids/allow_gids", "uid", p.UID, "gid", p.GID, "pid", p.PID)
			return ipc.Errorf(ipc.CodeForbidden, "uid %d / gid %d is not allowed to use apnsd (socket.allow_uids, socket.allow_gids)", p.UID, p.GID)
		}
		return nil
	}
}
