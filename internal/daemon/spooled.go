package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/spool"
)

// The spool (internal/spool, docs/spool.md) keeps every "wait":false
// notification from before its queued:true answer until its final outcome
// (see job.settled). This file is the daemon's side of it: the record
// format, opening the state directory, and the replay at start.

// recordVersion is the first byte of every spool record; a record with
// another first byte is reported and dropped at replay.
const recordVersion = 1

// spoolRecord is one spooled notification, after the daemon's defaults
// (topic, push type, priority, apns-id) were applied: a replay sends exactly
// what the first attempt sent. It is stored as recordVersion followed by
// its JSON.
type spoolRecord struct {
	App        string          `json:"app"`
	Env        string          `json:"env"`
	Token      string          `json:"token"`
	Topic      string          `json:"topic"`
	PushType   string          `json:"push_type,omitempty"`
	Priority   int             `json:"priority,omitempty"`
	Expiration *int64          `json:"expiration,omitempty"`
	CollapseID string          `json:"collapse_id,omitempty"`
	ApnsID     string          `json:"apns_id"`
	Payload    json.RawMessage `json:"payload"`
	// Deadline is the caller's deadline in Unix milliseconds, 0 for none.
	Deadline int64 `json:"deadline,omitempty"`
}

func encodeRecord(app, env string, n *apns.Notification, deadline time.Time) ([]byte, error) {
	r := spoolRecord{
		App: app, Env: env, Token: n.DeviceToken, Topic: n.Topic, PushType: n.PushType,
		Priority: n.Priority, CollapseID: n.CollapseID, ApnsID: n.ApnsID, Payload: n.Payload,
	}
	if n.HasExpiration {
		r.Expiration = &n.Expiration
	}
	if !deadline.IsZero() {
		r.Deadline = deadline.UnixMilli()
	}
	b, err := json.Marshal(&r)
	if err != nil {
		return nil, err
	}
	return append([]byte{recordVersion}, b...), nil
}

func decodeRecord(data []byte) (*spoolRecord, apns.Notification, time.Time, error) {
	if len(data) == 0 || data[0] != recordVersion {
		return nil, apns.Notification{}, time.Time{}, errors.New("unknown record version")
	}
	var r spoolRecord
	if err := json.Unmarshal(data[1:], &r); err != nil {
		return nil, apns.Notification{}, time.Time{}, err
	}
	n := apns.Notification{
		DeviceToken: r.Token, Topic: r.Topic, PushType: r.PushType, Priority: r.Priority,
		CollapseID: r.CollapseID, ApnsID: r.ApnsID, Payload: r.Payload,
	}
	if r.Expiration != nil {
		n.Expiration, n.HasExpiration = *r.Expiration, true
	}
	var deadline time.Time
	if r.Deadline != 0 {
		deadline = time.UnixMilli(r.Deadline)
	}
	return &r, n, deadline, nil
}

// openSpool opens cfg's state directory; with state_dir = "" there is no
// spool (nil, nil). An error names the key and says what to do.
func openSpool(cfg *config.Config, log *slog.Logger) (*spool.Spool, *spool.Recovery, error) {
	if cfg.StateDir == "" {
		log.Warn(`state_dir is "": no spool, so "wait":false sends are refused`)
		return nil, nil, nil
	}
	sp, rec, err := spool.Open(spool.Options{Dir: cfg.StateDir, MaxBytes: cfg.SpoolMaxBytes, Logger: log})
	if errors.Is(err, spool.ErrLocked) {
		return nil, nil, fmt.Errorf("state_dir %s: %w: another apnsd uses it (give each apnsd its own state_dir)", cfg.StateDir, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("state_dir %s: %w (apnsd keeps accepted \"wait\":false notifications there: make it a directory apnsd's user can write, or set state_dir to one)", cfg.StateDir, err)
	}
	return sp, rec, nil
}

// replay resubmits the notifications the spool kept from earlier runs, in
// the order they were accepted, as wait:false jobs with no client to
// answer. They are already accepted: they take queue slots without the
// queue_size check (new sends get queue_full meanwhile). One whose app or
// environment is no longer configured, or whose deadline or apns-expiration
// has passed, is logged and marked done. Called by Start before the socket
// is served.
func (d *Daemon) replay(rec *spool.Recovery) {
	if rec == nil || len(rec.Records) == 0 {
		return
	}
	st := d.current()
	now := time.Now()
	var resent, dropped int
	for _, r := range rec.Records {
		sr, n, deadline, err := decodeRecord(r.Data)
		var es *envSender
		why := ""
		switch {
		case err != nil:
			why = "unreadable record: " + err.Error()
		case st.apps[sr.App] == nil:
			why = fmt.Sprintf("app %q is no longer configured", sr.App)
		default:
			if es = st.apps[sr.App].envs[sr.Env]; es == nil {
				why = fmt.Sprintf("app %q has no %s environment any more", sr.App, sr.Env)
			}
		}
		j := newJob()
		j.d, j.es, j.n, j.deadline, j.spoolID, j.timeout = d, es, n, deadline, r.ID, st.cfg.RequestTimeout
		if why == "" {
			if final, w := j.settled(nil, errReplayCheck, now); final {
				why = w
			}
		}
		if why != "" {
			dropped++
			d.log.Warn("spooled notification not sent again: "+why, "spool_id", r.ID, "apns_id", n.ApnsID)
			d.spool.Done(r.ID)
			continue
		}
		resent++
		d.pending.Add(1)
		d.wg.Add(1)
		es.active.Add(1)
		go d.deliver(j, time.Time{})
	}
	d.log.Info("sending again the notifications spooled by the previous run", "count", resent, "dropped", dropped, "state_dir", st.cfg.StateDir)
}

// errReplayCheck stands for "no outcome yet" when replay asks job.settled
// whether a record is already past its deadline or expiration.
var errReplayCheck = errors.New("not sent yet")
