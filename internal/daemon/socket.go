package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// ListenUnix creates the socket at path with the given mode and group. It
// refuses when another process answers on path, and replaces a stale
// socket file left by a crashed apnsd.
//
// The socket never exists at path with another mode or group, and nothing
// is changed by path (a symlink raced into a world-writable directory
// cannot redirect a chmod or chown): it is bound in a private directory
// (0700, made next to path) under umask 0177, given its group and mode
// there through a descriptor of that directory, then renamed onto path. The
// returned listener's Close removes path only if it is still this socket.
func ListenUnix(path string, mode os.FileMode, group string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("socket path is empty")
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another process (another apnsd?) is already listening there", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("socket %s: a file that is not a socket is in the way (%s)", path, fi.Mode().Type())
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("socket %s: group %q: %w", path, group, err)
		}
		gid = g
	}
	priv, err := os.MkdirTemp(dir, ".apnsd-")
	if err != nil {
		return nil, fmt.Errorf("socket %s: making a private directory beside it: %w", path, err)
	}
	defer os.Remove(priv) // empty by then, or holding a socket nobody listens on
	dfd, err := unix.Open(priv, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: opening %s: %w", path, priv, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return nil, fmt.Errorf("socket %s: private directory %s is not apnsd's own 0700 directory", path, priv)
	}
	const name = "s"
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(priv, name), Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(format string, args ...any) (net.Listener, error) {
		l.Close()
		unix.Unlinkat(dfd, name, 0)
		return nil, fmt.Errorf("socket %s: "+format, append([]any{path}, args...)...)
	}
	// The directory is ours and 0700: nobody else can swap the entry.
	if gid >= 0 {
		if err := unix.Fchownat(dfd, name, -1, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail("setting group %q: %v", group, err)
		}
	}
	if err := unix.Fchmodat(dfd, name, uint32(mode.Perm()), 0); err != nil {
		return fail("setting mode %#o: %v", mode, err)
	}
	// The socket must be in the directory the descriptor holds (a private
	// directory renamed away by someone else would not have it).
	var sst unix.Stat_t
	if err := unix.Fstatat(dfd, name, &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil || sst.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fail("the socket is not in the private directory %s it was bound in: %v", priv, err)
	}
	if err := unix.Renameat(dfd, name, unix.AT_FDCWD, path); err != nil {
		return fail("moving it into place: %v", err)
	}
	return &socketListener{UnixListener: l, path: path, dev: uint64(sst.Dev), ino: sst.Ino}, nil
}

// socketListener is a listener made by ListenUnix: its address is the
// socket's path, and Close unlinks that path if it still is this socket
// (not one a newer apnsd put there). Close is idempotent.
type socketListener struct {
	*net.UnixListener
	path     string
	dev, ino uint64
	once     sync.Once
	err      error
}

func (s *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: s.path, Net: "unix"} }

func (s *socketListener) Close() error {
	s.once.Do(func() {
		s.err = s.UnixListener.Close()
		var st unix.Stat_t
		if unix.Lstat(s.path, &st) == nil && uint64(st.Dev) == s.dev && st.Ino == s.ino {
			os.Remove(s.path)
		}
	})
	return s.err
}

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// fdReserve is how many descriptors connLimits keeps free of client
// connections: for APNs dials (per configured connection, with room for a
// redial while the old one closes), credential and config files, the
// watcher, the unregistered_file and the runtime's own.
func fdReserve(cfg *config.Config) int {
	n := 64 + ipc.PrivilegedReserve
	for _, a := range cfg.Apps {
		for _, e := range []*config.EnvConfig{a.Sandbox, a.Production} {
			if e != nil {
				n += 2 * e.Connections
			}
		}
	}
	return n
}

// connLimits is socket.max_connections and max_connections_per_uid, lowered
// when the process's file descriptor limit (RLIMIT_NOFILE, which the Go
// runtime has already raised to its hard limit) would not leave fdReserve
// descriptors beside them.
func connLimits(cfg *config.Config, log *slog.Logger) (maxConns, perUID int) {
	maxConns, perUID = cfg.Socket.MaxConnections, cfg.Socket.MaxConnectionsPerUID
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return maxConns, perUID
	}
	reserve := fdReserve(cfg)
	room := int(min(rl.Cur, 1<<30)) - reserve
	if room < 1 {
		room = 1
	}
	if room < maxConns {
		log.Warn("socket.max_connections lowered to keep file descriptors for APNs connections and files",
			"max_connections", room, "configured", maxConns, "rlimit_nofile", rl.Cur, "reserved", reserve)
		maxConns = room
	}
	return maxConns, min(perUID, maxConns)
}
