package ipc

import (
	"fmt"
	"net"
	"sync"
)

// Peer is who is at the other end of a connection, as the kernel says
// (SO_PEERCRED on Linux). It is read once when the connection is accepted
// and handed to Server.Authorize, Server.Permit and every handler. Safe for
// concurrent use.
type Peer struct {
	UID, GID, PID int
	// Err is set when the identity is unknown: not a Unix socket, or an OS
	// where apnsd cannot read it. UID, GID and PID are then -1.
	Err error

	groupsOnce sync.Once
	groups     []int
	// fromKernel is set when groups came with the connection
	// (SO_PEERGROUPS); otherwise Groups reads /proc.
	fromKernel bool
}

// Known reports whether the peer's identity could be read.
func (p *Peer) Known() bool { return p.Err == nil }

// Groups returns the peer's supplementary groups as the kernel recorded
// them when it connected (SO_PEERGROUPS; on kernels without it, read from
// /proc/PID/status the first time it is called, which fails under
// ProtectProc=invisible). nil when they cannot be read.
func (p *Peer) Groups() []int {
	p.groupsOnce.Do(func() {
		if p.Err == nil && !p.fromKernel {
			p.groups = supplementaryGroups(p.PID)
		}
	})
	return p.groups
}

func (p *Peer) String() string {
	if p.Err != nil {
		return "unknown peer (" + p.Err.Error() + ")"
	}
	return fmt.Sprintf("uid %d gid %d pid %d", p.UID, p.GID, p.PID)
}

// ReadPeer reads the identity of the process at the other end of c.
func ReadPeer(c net.Conn) *Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return unknownPeer(fmt.Errorf("not a Unix socket connection (%T)", c))
	}
	uid, gid, pid, groups, groupsErr, err := peerCred(uc)
	if err != nil {
		return unknownPeer(err)
	}
	return &Peer{UID: uid, GID: gid, PID: pid, groups: groups, fromKernel: groupsErr == nil}
}

func unknownPeer(err error) *Peer { return &Peer{UID: -1, GID: -1, PID: -1, Err: err} }
