package daemon

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// Reload re-reads the config file (when the daemon has one) and every
// credential. Apps added, removed or changed in the config take effect: new
// ones connect, removed or replaced ones close once the notifications they
// accepted are answered, unchanged ones keep their connections. An invalid
// config, or a new or changed app whose credentials do not load, fails the
// whole reload and the running config stays in use. Socket settings need a
// restart. The unregistered_file is reopened (log rotation). peer is who
// asked (the reload op's peer; nil for SIGHUP), logged with the reload.
// Reload is safe to call concurrently; reloads run one at a time.
func (d *Daemon) Reload(ctx context.Context, peer *ipc.Peer) (*ipc.ReloadReport, error) {
	d.logReload(peer)
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.mu.RLock()
	shutting := d.shutting
	d.mu.RUnlock()
	if shutting {
		return nil, ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down; not reloading")
	}
	if d.onReload != nil {
		d.onReload(true)
		defer d.onReload(false)
	}
	rep := &ipc.ReloadReport{}
	now := time.Now()
	d.reopenUnregistered()
	if path := d.current().cfg.Path; path != "" {
		changes, err := d.reloadConfig(now)
		d.metrics.reloaded("config", err)
		d.mu.Lock()
		d.lastReload = now
		d.lastReloadErr = err
		d.mu.Unlock()
		if err != nil {
			d.log.Error("config reload failed; the running config stays in use", "config", path, "err", err)
			rep.Errors = append(rep.Errors, err.Error())
			return rep, ipc.Errorf(ipc.CodeReloadFailed, "config not reloaded, the running one stays in use: %v", err)
		}
		rep.Reloaded = append(rep.Reloaded, changes...)
	}
	creds := d.reloadCredentials(now)
	rep.Reloaded = append(rep.Reloaded, creds.Reloaded...)
	rep.Errors = append(rep.Errors, creds.Errors...)
	if len(rep.Errors) > 0 {
		return rep, ipc.Errorf(ipc.CodeReloadFailed, "%d credential(s) failed to reload; the previous ones stay in use: %s", len(rep.Errors), rep.Errors[0])
	}
	return rep, nil
}

// reloadConfig loads the config file again and applies the app changes: it
// builds the new and changed apps, then swaps in one new state. Unchanged
// apps carry over with their connections; replaced and removed ones retire.
// Call with reloadMu held.
func (d *Daemon) reloadConfig(now time.Time) ([]string, error) {
	cur := d.current()
	old := cur.cfg
	cfg, err := config.Load(old.Path)
	if err != nil {
		return nil, err
	}
	var changes []string
	if !reflect.DeepEqual(cfg.Socket, old.Socket) {
		changes = append(changes, "socket settings changed; they take effect at the next restart")
		cfg.Socket = old.Socket
	}
	// These are read once at start; say so rather than ignore them.
	for _, c := range []struct {
		name     string
		old, new any
	}{
		{"shutdown_timeout", old.ShutdownTimeout, cfg.ShutdownTimeout},
		{"log_level", old.LogLevel, cfg.LogLevel},
		{"log_format", old.LogFormat, cfg.LogFormat},
		{"unregistered_file", old.UnregisteredFile, cfg.UnregisteredFile},
		{"metrics.listen", old.Metrics.Listen, cfg.Metrics.Listen},
		{"state_dir", old.StateDir, cfg.StateDir},
		{"spool_max_bytes", old.SpoolMaxBytes, cfg.SpoolMaxBytes},
	} {
		if c.old != c.new {
			changes = append(changes, c.name+" changed; it takes effect at the next restart")
		}
	}
	cfg.ShutdownTimeout, cfg.LogLevel, cfg.LogFormat, cfg.UnregisteredFile = old.ShutdownTimeout, old.LogLevel, old.LogFormat, old.UnregisteredFile
	cfg.Metrics = old.Metrics
	cfg.StateDir, cfg.SpoolMaxBytes = old.StateDir, old.SpoolMaxBytes
	prevApps := cur.apps
	next := map[string]*appState{}
	var built []*appState
	for i := range cfg.Apps {
		ac := &cfg.Apps[i]
		if prev := prevApps[ac.Name]; prev != nil && reflect.DeepEqual(*prev.cfg, *ac) {
			next[ac.Name] = prev
			continue
		}
		st, err := buildApp(ac, prevApps[ac.Name], d.root, now, d.tokenClock)
		if err != nil {
			for _, b := range built {
				b.close()
			}
			return nil, err
		}
		built = append(built, st)
		next[ac.Name] = st
		if prevApps[ac.Name] == nil {
			changes = append(changes, fmt.Sprintf("app %q added", ac.Name))
		} else {
			changes = append(changes, fmt.Sprintf("app %q changed", ac.Name))
		}
	}
	for name := range prevApps {
		if next[name] == nil {
			changes = append(changes, fmt.Sprintf("app %q removed", name))
		}
	}
	for _, st := range built {
		st.start()
	}
	// Under mu, so that no notification is accepted by a sender of the
	// old state once its retirement below has begun waiting.
	d.mu.Lock()
	d.state.Store(&state{cfg: cfg, apps: next})
	d.mu.Unlock()
	if d.tuneRuntime {
		applyRuntime(cfg, d.log)
	}
	for name, st := range prevApps {
		if next[name] != st {
			d.retire(st)
		}
	}
	for _, c := range changes {
		d.log.Info("config reloaded: " + c)
	}
	return changes, nil
}

// reloadCredentials runs reloadEnv for every environment of the current
// apps, for a manual reload (SIGHUP, the reload op): a failure is reported
// at once. Call with reloadMu held.
func (d *Daemon) reloadCredentials(now time.Time) *ipc.ReloadReport {
	rep := &ipc.ReloadReport{}
	for _, es := range d.current().senders() {
		where := es.app.cfg.Name + "/" + es.cfg.Name
		changed, err := d.reloadEnv(es, now, "reload")
		switch {
		case err != nil:
			es.setReloadErr(err, now)
			rep.Errors = append(rep.Errors, where+": "+err.Error())
			d.log.Error("credential reload failed; keeping the current credential", "app", es.app.cfg.Name, "env", es.cfg.Name, "err", err)
		case changed:
			rep.Reloaded = append(rep.Reloaded, where+": "+es.describeCredential())
		}
	}
	return rep
}

// reloadEnv is the one reload step of an environment, used by every
// trigger: the watcher (file events and its poll), SIGHUP, the reload op,
// and a config reload (which runs it for every app it kept or built). It
// re-reads the environment's credential files, certificate or token key. A
// credential that loads, fits the app and differs from the current one is
// swapped in, the environment moves to new connections (requests in flight
// finish on the old ones) and this is logged; success also clears the
// environment's reload error and tells the watcher these bytes are done
// with. A failure keeps the current credential and is returned, for the
// caller to report: at once for a manual reload, once the change had time
// to settle for the watcher. why names the trigger in the log. Call with
// reloadMu held.
func (d *Daemon) reloadEnv(es *envSender, now time.Time, why string) (changed bool, err error) {
	h := contentHash(es.files())
	if es.token != nil {
		changed, err = es.reloadTokenKey(now)
	} else {
		changed, err = es.reloadCertificate(now)
	}
	if err != nil {
		d.metrics.reloaded("credential", err)
		return false, err
	}
	if changed {
		d.metrics.reloaded("credential", nil)
	}
	es.setReloadErr(nil, now)
	es.watch = watchState{contents: h}
	if changed {
		d.log.Info("credential reloaded; moving to new connections", "app", es.app.cfg.Name, "env", es.cfg.Name,
			"credential", es.describeCredential(), "trigger", why, "files", es.files())
	}
	return changed, nil
}

// reloadCertificate loads the certificate again and swaps it in if it
// differs from the current one.
func (es *envSender) reloadCertificate(now time.Time) (changed bool, err error) {
	cert, err := apns.LoadCertificate(es.cfg.Cert, now)
	if err != nil {
		return false, err
	}
	if err := apns.CheckCertificateFit(cert, es.app.cfg.Topic, es.cfg.Endpoint); err != nil {
		return false, err
	}
	es.cred.mu.Lock()
	defer es.cred.mu.Unlock()
	old := es.cred.cur.Load()
	if old != nil && old.Fingerprint == cert.Fingerprint {
		return false, nil
	}
	es.cred.cur.Store(cert)
	es.client.Rotate()
	es.manage.Rotate()
	return true, nil
}

// reloadTokenKey re-reads the environment's .p8 key (its own
// [apps.<env>.token] or the app's [apps.token]). A different key is handed
// to the environment's token source (which mints with it at once; the
// app's source is shared with the other environment when both use it) and
// this environment moves to new connections.
func (es *envSender) reloadTokenKey(now time.Time) (changed bool, err error) {
	tc := es.tokenConfig()
	key, err := apns.LoadTokenKey(tc.KeyFile, tc.KeyID, tc.TeamID, now)
	if err != nil {
		return false, err
	}
	es.cred.mu.Lock()
	defer es.cred.mu.Unlock()
	if key.Fingerprint == es.tokenFP {
		return false, nil
	}
	if es.token.Info().KeyFingerprint != key.Fingerprint {
		es.token.SetKey(key)
	}
	es.tokenFP = key.Fingerprint
	es.client.Rotate()
	es.manage.Rotate()
	return true, nil
}
