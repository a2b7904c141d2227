package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/lograte"
)

// The access checks, in the order a request meets them:
//   - the socket (peerAuthorizer, per connection): socket.allow_uids /
//     allow_gids; root and apnsd's own uid always pass;
//   - the op (permitter, per request): admin ops only for root, apnsd's own
//     uid and socket.admin_uids / admin_gids; status gives others a
//     minimal health answer;
//   - the app (checkSend, per send): the app's allow_uids / allow_gids
//     (root always passes), and its topic.
// Every refusal is logged with the check that failed, aggregated per
// interval per peer uid and check (lograte), so a refused peer that
// retries in a loop costs one line a minute.

// matchIDs reports whether a peer is in the lists: its uid is in uids, or
// its primary gid or one of its supplementary groups (from the kernel) is
// in gids.
func matchIDs(p *ipc.Peer, uids, gids []int) bool {
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

// peerAllowed reports whether a peer passes allow-lists that may be empty
// (empty lists allow everyone).
func peerAllowed(p *ipc.Peer, uids, gids []int) bool {
	return len(uids) == 0 && len(gids) == 0 || matchIDs(p, uids, gids)
}

// privileged reports whether a known peer is root or apnsd's own uid.
func privileged(p *ipc.Peer) bool {
	return p.Known() && (p.UID == 0 || p.UID == os.Geteuid())
}

// access holds the refusal log shared by the checks.
type access struct {
	rl *lograte.Limiter
}

func newAccess(log *slog.Logger) *access { return &access{rl: lograte.New(log, 0)} }

func (a *access) refused(p *ipc.Peer, check, msg string, args ...any) {
	key := fmt.Sprintf("%s uid %d", check, p.UID)
	a.rl.Log(slog.LevelWarn, key, msg, append([]any{"check", check, "uid", p.UID, "gid", p.GID, "pid", p.PID}, args...)...)
}

// peerAuthorizer returns an ipc.Server.Authorize function enforcing the
// socket's allow-lists, or nil when there are none (the socket's mode and
// group are then the only gate). Root and apnsd's own uid always pass (so
// `systemctl reload`, which runs `apnsctl reload` as apnsd's user, works).
// A refused peer gets a "forbidden" line.
func (a *access) peerAuthorizer(uids, gids []int) func(*ipc.Peer) *ipc.Error {
	if len(uids) == 0 && len(gids) == 0 {
		return nil
	}
	return func(p *ipc.Peer) *ipc.Error {
		if !p.Known() {
			a.rl.Log(slog.LevelWarn, "unknown peer", "refused a client: cannot read its credentials", "check", "socket", "err", p.Err)
			return ipc.Errorf(ipc.CodeForbidden, "apnsd cannot check who you are: %v", p.Err)
		}
		if privileged(p) || p.PID == os.Getpid() || matchIDs(p, uids, gids) {
			return nil
		}
		a.refused(p, "socket.allow_uids/allow_gids", "refused a client connection: its uid, gid and groups are not in socket.allow_uids/allow_gids", "groups", p.Groups())
		return ipc.Errorf(ipc.CodeForbidden, "uid %d / gid %d is not allowed to use apnsd (socket.allow_uids, socket.allow_gids)", p.UID, p.GID)
	}
}

// permitter returns the ipc.Server.Permit function: public ops for every
// peer, admin ops for root, apnsd's own uid and the admin lists.
func (a *access) permitter(adminUIDs, adminGIDs []int) func(*ipc.Peer, *ipc.Op) *ipc.Error {
	return func(p *ipc.Peer, op *ipc.Op) *ipc.Error {
		if op.Perm != ipc.Admin {
			return nil
		}
		if privileged(p) || p.Known() && (p.PID == os.Getpid() || matchIDs(p, adminUIDs, adminGIDs)) {
			return nil
		}
		if op.Name != "status" { // status answers the others with its health form: not a refusal worth a line
			a.refused(p, "socket.admin_uids/admin_gids", "refused an admin op: the peer is not root, apnsd's user or in socket.admin_uids/admin_gids", "op", op.Name)
		}
		return ipc.Errorf(ipc.CodeForbidden, "op %q is for administrators: root, apnsd's own user and socket.admin_uids/admin_gids (uid %d is none of them)", op.Name, p.UID)
	}
}

// checkApp vets any request made as app (a send; also the channel ops of
// broadcast push): the peer must be in the app's allow-lists when it has
// any; root always passes.
func (a *access) checkApp(p *ipc.Peer, app *config.AppConfig) *ipc.Error {
	restricted := len(app.AllowUIDs) > 0 || len(app.AllowGIDs) > 0
	allowed := p.Known() && (p.UID == 0 || matchIDs(p, app.AllowUIDs, app.AllowGIDs))
	if restricted && !allowed {
		a.refused(p, "apps.allow_uids/allow_gids", "refused a request: the peer may not act as this app (its allow_uids/allow_gids)", "app", app.Name)
		return ipc.Errorf(ipc.CodeForbidden, "uid %d may not send as app %q (its allow_uids, allow_gids)", p.UID, app.Name)
	}
	return nil
}

// checkSend vets a send as app (checkApp), and its topic: the peer must be in the app's allow-lists
// (when it has any; root always passes), and topic, when given, must be the
// app's topic or the app's topic with the suffix Apple documents for
// pushType. Anything else is forbidden.
func (a *access) checkSend(p *ipc.Peer, app *config.AppConfig, topic, pushType string) *ipc.Error {
	if e := a.checkApp(p, app); e != nil {
		return e
	}
	if topic == "" || topic == app.Topic || topic == apns.Topic(app.Topic, pushType) {
		return nil
	}
	a.refused(p, "apps.topic", "refused a send: its topic is not the app's", "app", app.Name, "topic", topic)
	want := app.Topic
	if t := apns.Topic(app.Topic, pushType); t != want {
		want += " or " + t
	}
	return ipc.Errorf(ipc.CodeForbidden, "topic %q is not app %q's: for push_type %q use %s (or leave topic out)", topic, app.Name, pushType, want)
}

// logReload logs who asked for a reload: the reload op's peer, or SIGHUP
// (nil; a signal's sender is not known to apnsd).
func (d *Daemon) logReload(p *ipc.Peer) {
	if p == nil {
		d.log.Info("reload requested", "by", "SIGHUP")
		return
	}
	d.log.Info("reload requested", "by", "reload op", "uid", p.UID, "gid", p.GID, "pid", p.PID)
}
