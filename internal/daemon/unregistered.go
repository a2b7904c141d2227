package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/lograte"
)

// unregisteredMode is the unregistered_file's mode whatever the umask (the
// unit's UMask=0077 included): the apps' users read it through its group.
const unregisteredMode = 0o640

// unregisteredLog appends records (ipc.UnregisteredRecord) to the
// unregistered file, one JSON line each, so that the file stays valid JSON
// Lines: each record goes out in one write, and a write that fails part way
// (ENOSPC, EFBIG) is rolled back by truncating the file to its size before
// it. reopen opens the path again (after logrotate moved or removed it).
// Failures are logged, aggregated per interval. A nil *unregisteredLog (no
// unregistered_file) drops everything. Safe for concurrent use.
type unregisteredLog struct {
	path string
	rl   *lograte.Limiter

	mu sync.Mutex
	// mu guards f and serialises appends, so that the size read before a
	// write is the one to roll back to.
	f *os.File
}

func openUnregistered(path string, log *slog.Logger) (*unregisteredLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := openUnregisteredFile(path)
	if err != nil {
		return nil, fmt.Errorf("unregistered_file: %w", err)
	}
	return &unregisteredLog{path: path, f: f, rl: lograte.New(log, 0)}, nil
}

func openUnregisteredFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, unregisteredMode)
	if err != nil {
		return nil, err
	}
	// O_CREATE's mode went through the umask; set it on the open file (not
	// by path) when the file is apnsd's own. A file someone else made
	// keeps its owner's choice.
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&unregisteredMode != unregisteredMode && ownedBySelf(fi) {
		f.Chmod(unregisteredMode)
	}
	return f, nil
}

// add appends r as one line. A failure is logged (aggregated) and leaves
// the file as it was before.
func (u *unregisteredLog) add(r ipc.UnregisteredRecord) {
	if u == nil {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		u.rl.Log(slog.LevelError, "encode", "cannot encode an unregistered_file record", "err", err)
		return
	}
	b = append(b, '\n')
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.f == nil {
		u.rl.Log(slog.LevelError, "closed", "cannot append to unregistered_file: it could not be reopened", "file", u.path)
		return
	}
	before, serr := u.f.Seek(0, 2)
	n, err := u.f.Write(b)
	if err == nil {
		return
	}
	msg := "cannot append to unregistered_file; the record is lost"
	if n > 0 && serr == nil {
		if terr := u.f.Truncate(before); terr != nil {
			msg = "cannot append to unregistered_file, nor remove the partial record"
			err = fmt.Errorf("%w; truncating back to %d bytes: %w", err, before, terr)
		}
	}
	u.rl.Log(slog.LevelError, "write", msg, "file", u.path, "err", err)
}

// reopen opens the path again and closes the old file, so that records go
// to a new file after logrotate moved the old one. On failure the old file
// stays in use.
func (u *unregisteredLog) reopen() error {
	if u == nil {
		return nil
	}
	f, err := openUnregisteredFile(u.path)
	if err != nil {
		return fmt.Errorf("unregistered_file: reopening: %w", err)
	}
	u.mu.Lock()
	old := u.f
	u.f = f
	u.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// reopenUnregistered is the reopen of every reload (SIGHUP, reload op).
func (d *Daemon) reopenUnregistered() {
	if err := d.unregistered.reopen(); err != nil {
		d.log.Error("cannot reopen unregistered_file; still appending to the file opened before", "err", err)
	}
}

func (u *unregisteredLog) close() {
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	u.rl.Stop()
}

// ownedBySelf reports whether fi (from Stat) is owned by apnsd's uid.
func ownedBySelf(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}
