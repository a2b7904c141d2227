package daemon

import (
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// Status implements ipc.Backend (and the status op): it reports the
// daemon's state from one snapshot of config and apps. Safe to call
// concurrently.
func (d *Daemon) Status() *ipc.StatusReport {
	now := time.Now()
	st := d.current()
	rep := &ipc.StatusReport{
		Started:       d.started,
		UptimeSeconds: int64(now.Sub(d.started).Seconds()),
		Socket:        d.SocketPath(),
		Config:        st.cfg.Path,
		Unregistered:  st.cfg.UnregisteredFile,
	}
	d.mu.RLock()
	rep.LastReloadAt = d.lastReload
	if d.lastReloadErr != nil {
		rep.LastReloadError = d.lastReloadErr.Error()
		rep.LastReloadErrorAt = d.lastReload
	}
	d.mu.RUnlock()
	inFlight := 0
	apps := st.apps
	for _, name := range appNames(apps) {
		app := apps[name]
		as := ipc.AppStatus{Name: name, Topic: app.cfg.Topic, DefaultEnv: app.cfg.DefaultEnv}
		for _, envName := range envOrder {
			es := app.envs[envName]
			if es == nil {
				continue
			}
			cs := es.client.Status()
			inFlight += cs.InFlight
			st := ipc.EnvStatus{
				Env: envName, Endpoint: cs.Endpoint, State: cs.State(),
				Connections: cs.Connections, Target: cs.Target, InFlight: cs.InFlight,
				LastConnErr: cs.LastError, Auth: es.cfg.AuthKind(),
				Sent: es.sent.Load(), Failed: es.failed.Load(),
				Files: es.files(),
			}
			ms := es.manage.Status()
			st.ManageEndpoint, st.ManageState = ms.Endpoint, ms.State()
			if ms.Dials == 0 {
				st.ManageState = "idle"
			}
			if n, ok := es.channelCount(); ok {
				st.Channels = &n
			}
			if es.token != nil {
				ti := es.token.Info()
				st.KeyID, st.TeamID, st.LoadedAt = ti.KeyID, ti.TeamID, ti.KeyLoadedAt
			}
			if cert := es.cred.cur.Load(); cert != nil {
				st.CertSubject = cert.Subject
				st.NotAfter = cert.NotAfter
				days := int(cert.NotAfter.Sub(now).Hours() / 24)
				st.DaysLeft = &days
				st.LoadedAt = cert.LoadedAt
			}
			es.cred.mu.Lock()
			if es.cred.lastErr != nil {
				st.LastReloadError = es.cred.lastErr.Error()
				st.LastReloadErrorAt = es.cred.lastErrAt
			}
			es.cred.mu.Unlock()
			as.Envs = append(as.Envs, st)
		}
		rep.Apps = append(rep.Apps, as)
	}
	pending := int(d.pending.Load())
	rep.Queue = ipc.QueueStatus{
		Depth:    max(pending-inFlight, 0),
		InFlight: inFlight,
		Capacity: st.cfg.QueueSize,
		Retries:  d.retries.Load(),
		Sent:     d.sent.Load(),
		Failed:   d.failed.Load(),
		Refused:  d.refused.Load(),
	}
	if d.spool != nil {
		ss := d.spool.Stats()
		rep.Queue.Spool = &ipc.SpoolStatus{
			Dir: st.cfg.StateDir, Pending: ss.PendingRecords, Bytes: ss.PendingBytes, MaxBytes: st.cfg.SpoolMaxBytes,
			DiskBytes: ss.DiskBytes, Syncs: ss.Syncs, Appends: ss.Appends,
		}
	}
	return rep
}
