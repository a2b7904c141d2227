package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// peerCred reads the uid, gid and pid of the process at the other end of a
// Unix socket connection (SO_PEERCRED).
func peerCred(c net.Conn) (*syscall.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a Unix socket connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}

// peerAllowed reports whether a peer passes the allow-lists: its uid is in
// uids, or its primary gid or one of its supplementary groups (read from
// /proc/PID/status, as `usermod -aG` gives them) is in gids. Empty lists
// allow everyone.
func peerAllowed(cred *syscall.Ucred, uids, gids []int) bool {
	if len(uids) == 0 && len(gids) == 0 {
		return true
	}
	if slices.Contains(uids, int(cred.Uid)) || slices.Contains(gids, int(cred.Gid)) {
		return true
	}
	if len(gids) == 0 {
		return false
	}
	for _, g := range supplementaryGroups(int(cred.Pid)) {
		if slices.Contains(gids, g) {
			return true
		}
	}
	return false
}

// supplementaryGroups reads the "Groups:" line of /proc/PID/status.
func supplementaryGroups(pid int) []int {
	if pid <= 0 {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		var groups []int
		for _, f := range strings.Fields(rest) {
			if g, err := strconv.Atoi(f); err == nil {
				groups = append(groups, g)
			}
		}
		return groups
	}
	return nil
}

// peerAuthorizer returns an ipc.Server.Authorize function enforcing the
// socket's allow-lists, or nil when there are none (the socket's mode and
// group are then the only gate). A refused peer gets a "forbidden" line
// and is logged with its uid, gid and pid.
func peerAuthorizer(uids, gids []int, log *slog.Logger) func(net.Conn) *ipc.Error {
	if len(uids) == 0 && len(gids) == 0 {
		return nil
	}
	return func(c net.Conn) *ipc.Error {
		cred, err := peerCred(c)
		if err != nil {
			log.Warn("refused a client: cannot read its credentials", "err", err)
			return ipc.Errorf(ipc.CodeForbidden, false, "apnsd cannot check who you are: %v", err)
		}
		// apnsd's own probes (the systemd watchdog's ping) always pass.
		if int(cred.Pid) != os.Getpid() && !peerAllowed(cred, uids, gids) {
			log.Warn("refused a client not in socket.allow_uids/allow_gids", "uid", cred.Uid, "gid", cred.Gid, "pid", cred.Pid)
			return ipc.Errorf(ipc.CodeForbidden, false, "uid %d / gid %d is not allowed to use apnsd (socket.allow_uids, socket.allow_gids)", cred.Uid, cred.Gid)
		}
		return nil
	}
}

// UnregisteredRecord is one line of the unregistered file: a device token
// APNs answered 410 for. Apps read it to prune their token tables (it
// replaces the feedback service of Apple's old binary protocol).
type UnregisteredRecord struct {
	Time   time.Time `json:"time"` // when apnsd got the answer
	App    string    `json:"app"`
	Env    string    `json:"env"`
	Token  string    `json:"token"`
	Reason string    `json:"reason"`
	// Timestamp is APNs' "timestamp": milliseconds since the epoch at which
	// the token stopped being valid.
	Timestamp int64  `json:"timestamp,omitempty"`
	ApnsID    string `json:"apns_id,omitempty"`
}

// unregisteredLog appends records to the unregistered file. Safe for
// concurrent use.
type unregisteredLog struct {
	mu sync.Mutex
	f  *os.File
}

func openUnregistered(path string) (*unregisteredLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("unregistered_file: %w", err)
	}
	return &unregisteredLog{f: f}, nil
}

func (u *unregisteredLog) add(r UnregisteredRecord) error {
	if u == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	_, err = u.f.Write(append(b, '\n'))
	return err
}

func (u *unregisteredLog) close() {
	if u != nil {
		u.f.Close()
	}
}
