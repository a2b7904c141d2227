package ipc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerCred reads SO_PEERCRED and the peer's supplementary groups from the
// kernel (SO_PEERGROUPS, Linux 4.13+: unlike /proc it works under
// ProtectProc=invisible and cannot be raced by a peer that exits). groups
// is nil with groupsErr set when they cannot be read that way.
func peerCred(uc *net.UnixConn) (uid, gid, pid int, groups []int, groupsErr error, err error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, 0, nil, nil, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if credErr == nil {
			groups, groupsErr = peerGroups(int(fd))
		}
	}); err != nil {
		return 0, 0, 0, nil, nil, err
	}
	if credErr != nil {
		return 0, 0, 0, nil, nil, credErr
	}
	return int(cred.Uid), int(cred.Gid), int(cred.Pid), groups, groupsErr, nil
}

// peerGroups reads SO_PEERGROUPS, growing the buffer when the kernel says
// it is too small (ERANGE, with the size needed).
func peerGroups(fd int) ([]int, error) {
	buf := make([]uint32, 32)
	for range 4 {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			n := int(size / 4)
			groups := make([]int, n)
			for i := range n {
				groups[i] = int(buf[i])
			}
			return groups, nil
		case unix.ERANGE:
			buf = make([]uint32, size/4+1)
			continue
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
	return nil, errors.New("SO_PEERGROUPS: group list keeps growing")
}

// supplementaryGroups reads the "Groups:" line of /proc/PID/status: the
// fallback for kernels without SO_PEERGROUPS. It fails under
// ProtectProc=invisible.
func supplementaryGroups(pid int) []int {
	if pid <= 0 {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for line := range strings.SplitSeq(string(data), "\n") {
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
