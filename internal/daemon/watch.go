package daemon

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Credential hot reload.
//
// The watcher watches the directory of every credential file (and that
// directory's parent, so that an `ln -sfn` swap of a symlinked directory is
// seen), never the files themselves: editors, `mv`, Kubernetes' "..data"
// symlink swap and certbot's live/ links all replace directory entries,
// which a watch on the old file would miss. An event for a credential file,
// or for a symlink on the way to one (Kubernetes' "..data", certbot's
// live/ links, `ln -sfn` of a directory), starts a debounce; every other
// event in a watched directory is ignored, unlogged (a log file beside the
// keys must not feed the watcher); when events have been quiet for the debounce
// time, each environment whose files' contents changed is reloaded. A change
// that does not load yet (a certificate whose new key has not arrived, a
// half-written file) is retried every second until it loads or the settle
// time passes; only then is the failure reported (log, status). A slow poll
// of the contents backs the watcher up, and recovers by itself when good
// material appears after a failure.

// watchState is the watcher's per-environment memory.
type watchState struct {
	// contents is the hash of the credential files' bytes last acted on.
	contents string
	// failingSince is when the current unloadable change was first seen.
	failingSince time.Time
	// reported is set once the current failure was reported.
	reported bool
}

// watchOptions tune the watcher; zero values take the defaults.
type watchOptions struct {
	Debounce time.Duration // quiet time after the last event (default 300ms)
	Settle   time.Duration // how long an inconsistent change may take to settle (default 10s)
	Poll     time.Duration // content poll interval, a safety net (default 30s)
	Retry    time.Duration // retry interval while settling (default 1s)
}

func (o *watchOptions) defaults() {
	o.Debounce = cmp.Or(o.Debounce, 300*time.Millisecond)
	o.Settle = cmp.Or(o.Settle, 10*time.Second)
	o.Poll = cmp.Or(o.Poll, 30*time.Second)
	o.Retry = cmp.Or(o.Retry, time.Second)
}

// contentHash hashes the bytes of files (following symlinks); a missing
// file hashes as its absence, so it is a change too.
func contentHash(files []string) string {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f))
		b, err := os.ReadFile(f)
		if err != nil {
			h.Write([]byte{0})
			h.Write([]byte(err.Error()))
			continue
		}
		h.Write([]byte{1})
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// watchDirs lists the directories to watch for files: each file's
// directory, and for every symlinked directory on the way to it (as after
// `ln -sfn v2 current`), the directory holding that symlink, where its swap
// shows up.
func watchDirs(files []string) []string {
	set := map[string]bool{}
	for _, f := range files {
		dir := filepath.Dir(f)
		set[dir] = true
		for p := dir; ; {
			parent := filepath.Dir(p)
			if parent == p {
				break
			}
			if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				set[parent] = true
			}
			p = parent
		}
	}
	dirs := make([]string, 0, len(set))
	for d := range set {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	return dirs
}

// credWatcher is the running watcher.
type credWatcher struct {
	d       *Daemon
	o       watchOptions
	w       *fsnotify.Watcher // nil: polling only
	watched map[string]bool
	// relevant are the paths whose events matter (relevantNames); set
	// by sync, read by the loop (same goroutine after start).
	relevant map[string]bool
}

// relevantNames lists the paths whose events can change what files holds:
// each file, and every symlink on the way to it (a symlinked directory
// above it, or the file itself and where it points, followed a few hops).
func relevantNames(files []string) map[string]bool {
	set := map[string]bool{}
	var add func(p string, depth int)
	add = func(p string, depth int) {
		p = filepath.Clean(p)
		if set[p] || depth > 8 {
			return
		}
		set[p] = true
		for q := filepath.Dir(p); q != filepath.Dir(q); q = filepath.Dir(q) {
			if fi, err := os.Lstat(q); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				set[q] = true
				if t, err := os.Readlink(q); err == nil {
					if !filepath.IsAbs(t) {
						t = filepath.Join(filepath.Dir(q), t)
					}
					set[filepath.Clean(t)] = true
				}
			}
		}
		if t, err := os.Readlink(p); err == nil {
			if !filepath.IsAbs(t) {
				t = filepath.Join(filepath.Dir(p), t)
			}
			add(t, depth+1)
		}
	}
	for _, f := range files {
		add(f, 0)
	}
	return set
}

// startWatcher sets up the watches before returning, then compares the
// files with what was loaded (a change between loading and watching is not
// missed), and runs the watch loop until stop is closed.
func (d *Daemon) startWatcher(stop <-chan struct{}, o watchOptions) (done <-chan struct{}) {
	o.defaults()
	cw := &credWatcher{d: d, o: o, watched: map[string]bool{}, relevant: map[string]bool{}}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		d.root.Warn("cannot watch credential files; falling back to polling", "component", "watch", "err", err, "interval", o.Poll)
	} else {
		cw.w = w
	}
	cw.sync()
	settling := d.checkCredentials(o.Settle)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		cw.loop(stop, settling)
	}()
	return ch
}

// sync (re)adds a watch on every directory that matters now. Every
// directory is added again: after a symlink swap, a path may lead to
// another directory than the one watched.
func (cw *credWatcher) sync() {
	if cw.w == nil {
		return
	}
	cw.relevant = relevantNames(cw.d.current().credentialFiles())
	for dir := range cw.watched {
		cw.w.Remove(dir)
		delete(cw.watched, dir)
	}
	for _, dir := range watchDirs(cw.d.current().credentialFiles()) {
		if err := cw.w.Add(dir); err != nil {
			cw.d.root.Debug("cannot watch directory", "component", "watch", "dir", dir, "err", err)
			continue
		}
		cw.watched[dir] = true
	}
}

func (cw *credWatcher) loop(stop <-chan struct{}, settling bool) {
	d, o := cw.d, cw.o
	log := d.root.With("component", "watch")
	var events <-chan fsnotify.Event
	var errs <-chan error
	if cw.w != nil {
		defer cw.w.Close()
		events, errs = cw.w.Events, cw.w.Errors
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	poll := time.NewTicker(o.Poll)
	defer poll.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	if settling {
		retry.Reset(o.Retry)
	}
	daily := time.NewTicker(24 * time.Hour)
	defer daily.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-daily.C:
			d.warnExpiry(now)
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !cw.relevant[filepath.Clean(ev.Name)] {
				continue // not a credential file: not even logged
			}
			log.Debug("credential file event", "name", ev.Name, "op", ev.Op.String())
			debounce.Reset(o.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			log.Warn("file watcher error", "err", err)
		case <-debounce.C:
			if d.checkCredentials(o.Settle) {
				retry.Reset(o.Retry)
			}
			cw.sync()
		case <-retry.C:
			if d.checkCredentials(o.Settle) {
				retry.Reset(o.Retry)
			}
		case <-poll.C:
			if d.checkCredentials(o.Settle) {
				retry.Reset(o.Retry)
			}
			cw.sync()
		}
	}
}

// checkCredentials runs reloadEnv for every environment whose credential
// files' contents changed since last time. A change that does not load is
// given settle to become consistent before it is reported (log, status). It
// reports whether a change is still settling (and so wants a retry soon).
func (d *Daemon) checkCredentials(settle time.Duration) (settling bool) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	now := time.Now()
	for _, es := range d.current().senders() {
		files := es.files()
		if len(files) == 0 {
			continue
		}
		ws := &es.watch
		h := contentHash(files)
		if h == ws.contents && ws.failingSince.IsZero() {
			continue
		}
		_, err := d.reloadEnv(es, now, "files changed")
		if err == nil {
			continue
		}
		if h != ws.contents {
			// A new change: give it time to settle before complaining.
			ws.contents, ws.failingSince, ws.reported = h, now, false
		}
		if now.Sub(ws.failingSince) < settle {
			settling = true
			continue
		}
		if !ws.reported {
			ws.reported = true
			es.setReloadErr(err, now)
			d.log.Error("new credential files are not usable; keeping the current credential", "app", es.app.cfg.Name, "env", es.cfg.Name, "err", err)
		}
	}
	return settling
}
