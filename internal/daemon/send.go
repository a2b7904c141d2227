package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/spool"
)

// Submit implements ipc.Backend: it turns the send into a notification
// (NewNotification), picks the app and environment from the current state
// and hands the notification to deliver, which answers it exactly once. It
// does not block. A send read after its caller's deadline is refused
// expired. For "wait":false the notification is appended to the spool and
// the channel delivers {"ok":true,"queued":true} only once it is durable;
// the send to APNs starts at once, in parallel with the write. peer must be
// allowed to send as the app (checkSend).
func (d *Daemon) Submit(peer *ipc.Peer, s *ipc.Send) (_ chan *ipc.Response, e *ipc.Error) {
	if s.Tokens != nil {
		return d.submitMulticast(peer, s) // multicast.go: one Submit per token
	}
	defer func() { d.metrics.refusedSend(e) }() // metrics.go
	if s.ChannelID != "" {
		return d.submitBroadcast(peer, s) // channels.go
	}
	n, e := NewNotification(s)
	if e != nil {
		return nil, e
	}
	if !s.Deadline.IsZero() {
		if late := time.Since(s.Deadline); late >= 0 {
			d.refused.Add(1)
			return nil, ipc.Errorf(ipc.CodeExpired, "read %s after its deadline (%s); not sent", late.Round(time.Millisecond), s.Deadline.UTC().Format(time.RFC3339Nano))
		}
	}
	if !s.Wait && d.spool == nil {
		d.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeBadRequest, "\"wait\":false needs the spool, and this apnsd has none (state_dir = \"\" in its config): send with \"wait\":true, or set state_dir")
	}
	j, e := d.accept(peer, s, n)
	if e != nil {
		return nil, e
	}
	// Outside d.mu: the first attempt is queued on the client right here,
	// on the caller's goroutine (no goroutine per notification), and an
	// attempt that fails at once may answer (and take locks) before
	// deliver returns, and the job may then be recycled already: ch is
	// taken first.
	ch := j.ch
	d.deliver(j, s.ReadAt)
	return ch, nil
}

// accept does Submit's checks that need the current state and, when they
// pass, takes the notification's queue slot and makes its job (and spools
// it for wait:false). d.mu is held for reading throughout, so that no job
// is accepted by a sender being retired or after shutdown began.
func (d *Daemon) accept(peer *ipc.Peer, s *ipc.Send, n apns.Notification) (*job, *ipc.Error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	st := d.current()
	if d.shutting {
		d.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down; send again once it is back")
	}
	app, e := pickApp(st.apps, s.App)
	if e == nil {
		e = d.access.checkSend(peer, app.cfg, n.Topic, n.PushType) // issue 12: who may send as app, and its topic
	}
	if e != nil {
		d.refused.Add(1)
		return nil, e
	}
	envName := s.Env
	if envName == "" {
		envName = app.cfg.DefaultEnv
	}
	es := app.envs[envName]
	if es == nil {
		d.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeBadRequest, "app %q has no %s environment configured", app.cfg.Name, envName)
	}
	if n.Topic == "" {
		n.Topic = apns.Topic(app.cfg.Topic, n.PushType)
	}
	var path string
	if n.ApnsID == "" {
		// Fixed here so that a retry (and a replay) carries the same apns-id.
		n.ApnsID, path = apns.NewUUIDAndPath(n.DeviceToken)
	}
	if queueCap := int64(st.cfg.QueueSize); d.pending.Add(1) > queueCap {
		d.pending.Add(-1)
		d.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeQueueFull, "queue is full (%d notifications waiting); retry later", queueCap)
	}
	j := newJob()
	j.d, j.es, j.n, j.wait, j.deadline, j.timeout = d, es, n, s.Wait, s.Deadline, time.Duration(st.cfg.RequestTimeout)
	j.ch = ipc.NewAnswer()
	j.push.KeepPath(path)
	if !s.Wait {
		if e := d.spoolAppend(j, app.cfg.Name, envName); e != nil {
			d.pending.Add(-1)
			d.refused.Add(1)
			return nil, e
		}
	}
	d.wg.Add(1)
	es.active.Add(1)
	return j, nil
}

// job is one accepted notification, from Submit (or the replay at start)
// to its final outcome.
type job struct {
	d  *Daemon
	es *envSender
	n  apns.Notification
	// wait is the client's "wait": true answers APNs' outcome on ch;
	// false answered the acknowledgement on ch (nil for a replayed job) and
	// keeps the notification in the spool until its outcome is final.
	wait bool
	// ch is from ipc.NewAnswer: buffered (1), so its one send never blocks;
	// the reader of that answer puts it back for another job, so nothing
	// touches ch after its send.
	ch chan *ipc.Response
	// spoolID is the record's id in the spool (wait:false only).
	spoolID uint64
	// deadline is the caller's ("deadline"), zero for none.
	deadline time.Time
	// timeout is the request_timeout in force when the job was accepted:
	// it bounds one round of attempts.
	timeout time.Duration

	// The state of the attempts, touched by one goroutine at a time (the
	// one running try, onResult, roundDone or a timer of later: each hands
	// over to the next through the client or a timer).
	req          *apns.Request // built once (in push): every attempt sends the same
	push         apns.PushRequest
	slot         apns.Slot     // the client's record of the current attempt
	roundDL      time.Time     // deadline of the current round
	attempt      int           // attempts in the current round
	backoff      time.Duration // before the next retry in the round
	tokenRetried bool          // the round already retried a 403 ExpiredProviderToken
	roundBackoff time.Duration // before the next round (wait:false)
	// since is when deliver began (acceptance), tryAt when the current
	// attempt was queued; both only with metrics on (metrics.go).
	since, tryAt time.Time
	// resp is the answer to a wait:true job when APNs answered (answer):
	// kept here to save an allocation per notification, and lent to the
	// answer's reader (resp.Owner).
	resp ipc.Response
	// refs counts who still uses the job: one from newJob until finish,
	// one more while resp is lent. The last one out recycles the job.
	refs atomic.Int32
}

// jobs recycles jobs (newJob, job.unref): a job is the largest allocation
// of a notification (about 1 KiB), half of the bytes the send path
// allocates.
var jobs = sync.Pool{New: func() any { return new(job) }}

// jobIssued and jobRecycled, when set (tests), see every job newJob hands
// out and every job put back for reuse.
var jobIssued, jobRecycled func(*job)

// newJob returns an empty job holding one reference (see finish).
func newJob() *job {
	j := jobs.Get().(*job)
	j.refs.Store(1)
	if jobIssued != nil {
		jobIssued(j)
	}
	return j
}

// unref drops one reference; the last one puts j back for another
// notification, after which nothing may touch it.
func (j *job) unref() {
	switch n := j.refs.Add(-1); {
	case n == 0:
		if jobRecycled != nil {
			jobRecycled(j)
		}
		*j = job{}
		jobs.Put(j)
	case n < 0:
		panic("apnsd: a job released more often than it was held")
	}
}

// ResponseDone is the reader of the lent j.resp giving it back
// (ipc.ResponseOwner).
func (j *job) ResponseDone(*ipc.Response) { j.unref() }

// Complete is an attempt's outcome (apns.Completer): see onResult.
func (j *job) Complete(res *apns.Response, err error) { j.d.onResult(j, res, err) }

// spoolAppend appends j to the spool; the durability callback answers the
// acknowledgement on j.ch. A refusal is returned and nothing is sent.
func (d *Daemon) spoolAppend(j *job, app, env string) *ipc.Error {
	data, err := encodeRecord(app, env, &j.n, j.deadline)
	if err != nil {
		return ipc.Errorf(ipc.CodeInternal, "encoding the notification for the spool: %v", err)
	}
	ch := j.ch
	id, err := d.spool.Append(data, func(_ uint64, err error) {
		// On the spool's commit goroutine: must not block (ch is buffered
		// and this is its only send).
		if err != nil {
			d.log.Error("spool write failed: wait:false notifications are refused until apnsd restarts", "err", err)
			ch <- ipc.ErrorResponse(ipc.Errorf(ipc.CodeInternal, "the notification could not be stored durably (%v); it may still be delivered", err))
			return
		}
		ch <- &ipc.Response{OK: true, Queued: true}
	})
	switch {
	case err == nil:
		j.spoolID = id
		return nil
	case errors.Is(err, spool.ErrFull):
		st := d.spool.Stats()
		return ipc.Errorf(ipc.CodeQueueFull, "the spool is full (%d notifications, %d bytes waiting for APNs; spool_max_bytes); retry later", st.PendingRecords, st.PendingBytes)
	case errors.Is(err, spool.ErrClosed):
		return ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down; send again once it is back")
	default:
		return ipc.Errorf(ipc.CodeInternal, "spool: %v", err)
	}
}

func pickApp(apps map[string]*appState, name string) (*appState, *ipc.Error) {
	if name == "" {
		if len(apps) == 1 {
			for _, a := range apps {
				return a, nil
			}
		}
		return nil, ipc.Errorf(ipc.CodeUnknownApp, "\"app\" is required: %d apps are configured (%s)", len(apps), strings.Join(appNames(apps), ", "))
	}
	app := apps[name]
	if app == nil {
		return nil, ipc.Errorf(ipc.CodeUnknownApp, "no app named %q is configured (configured: %s)", name, strings.Join(appNames(apps), ", "))
	}
	return app, nil
}

// deliver starts j's first round of attempts. Nothing waits per
// notification: each attempt is queued on the environment's client
// (Client.Enqueue) and continues from its callback (onResult), and a retry
// or a new round is a timer (later). j is settled exactly once (finish):
//
//   - a wait:true job gets one round: attempts with backoff (see the retry
//     policy below) within its timeout and caller deadline, and its outcome
//     is answered on j.ch;
//   - a wait:false job (already acknowledged) gets rounds until its outcome
//     is final (job.settled): delivered, refused for good by APNs, or past
//     its caller deadline or apns-expiration; then its spool record is done.
//     A round that ends without a final outcome (no connection, timeout, a
//     retryable status after every retry) is followed by another after a
//     backoff.
//
// At the shutdown deadline (drainCtx) the clients are closed, so every
// attempt ends at once: wait:true jobs are answered shutting_down,
// wait:false ones stop and stay in the spool for the next start.
func (d *Daemon) deliver(j *job, readAt time.Time) {
	if d.metrics != nil {
		j.since = time.Now()
	}
	j.roundBackoff = roundBackoff
	d.startRound(j, readAt)
}

// startRound begins a round of attempts with a fresh deadline: from start,
// or from now if start is zero.
func (d *Daemon) startRound(j *job, start time.Time) {
	if start.IsZero() {
		start = time.Now()
	}
	j.roundDL = start.Add(j.timeout)
	if !j.deadline.IsZero() && j.deadline.Before(j.roundDL) {
		j.roundDL = j.deadline
	}
	j.attempt, j.backoff, j.tokenRetried = 0, retryBackoff, false
	d.try(j)
}

// try queues one attempt of j on its client.
func (d *Daemon) try(j *job) {
	if d.drainCtx.Err() != nil {
		d.roundDone(j, nil, apns.ErrClosed)
		return
	}
	j.attempt++
	if d.metrics != nil {
		j.tryAt = time.Now()
	}
	if j.req == nil {
		j.req = j.push.Set(&j.n)
	}
	if err := j.es.client.EnqueueIn(&j.slot, j.req, j.roundDL, j); err != nil {
		d.roundDone(j, nil, err)
	}
}

// Retry policy. Transient failures are sent again with exponential backoff
// and jitter, within the round's deadline and keeping the same apns-id: a
// connection that failed before APNs answered, 500, 503, and 429
// TooManyRequests. Everything else APNs says is final, and so are no
// connection within the client's UnavailableWait (unavailable), the
// deadline, and a closed client. When the deadline leaves no room for
// another try, the last answer from APNs is the round's outcome.
const (
	maxAttempts  = 5
	retryBackoff = 100 * time.Millisecond
	retryMax     = 5 * time.Second
)

// onResult is an attempt's outcome, on one of the client's goroutines: it
// must not block, so a retry is queued at once or by a timer.
func (d *Daemon) onResult(j *job, res *apns.Response, err error) {
	es := j.es
	d.metrics.apnsAnswered(es, res, j.tryAt)
	switch {
	case err == nil && res.StatusCode == 403 && res.Reason == apns.ReasonExpiredProviderToken && es.token != nil && !j.tokenRetried:
		// Refresh the token (only if Apple's 20-minute rule allows)
		// and try once more at once.
		j.tokenRetried = true
		if !es.token.Expired(res.Authorization) {
			// Logged once per token, not per notification.
			if es.app.clockWarned.Swap(res.Authorization) != res.Authorization {
				d.log.Error("APNs says the provider token expired, but it is younger than 20 minutes, so Apple forbids a new one yet: is this host's clock right?", "app", es.app.cfg.Name, "env", es.cfg.Name)
			}
			d.roundDone(j, res, nil)
			return
		}
		d.retries.Add(1)
		d.metrics.retried(es)
		d.try(j)
		return
	case err == nil && !apns.Retryable(res.StatusCode, res.Reason):
		d.roundDone(j, res, nil)
		return
	case err != nil && !isConnError(err):
		d.roundDone(j, nil, err) // no connection, deadline, or closed: nothing to retry
		return
	}
	if j.attempt >= maxAttempts || d.drainCtx.Err() != nil {
		d.roundDone(j, res, err)
		return
	}
	wait := j.backoff/2 + rand.N(j.backoff/2+1)
	if time.Until(j.roundDL) < wait+50*time.Millisecond {
		d.roundDone(j, res, err)
		return
	}
	d.retries.Add(1)
	d.metrics.retried(es)
	d.log.Debug("retrying notification", "app", es.app.cfg.Name, "env", es.cfg.Name, "attempt", j.attempt+1, "apns_id", j.n.ApnsID, "after", describe(res, err))
	j.backoff = min(j.backoff*2, retryMax)
	d.later(wait, func() { d.try(j) })
}

// isConnError reports whether err is (or wraps) an *apns.ConnError. A
// function of its own so that the target of errors.As is only allocated
// when there is an error.
func isConnError(err error) bool {
	var ce *apns.ConnError
	return errors.As(err, &ce)
}

// roundDone takes a round's outcome: answered for wait:true, settled or
// tried again later for wait:false.
func (d *Daemon) roundDone(j *job, res *apns.Response, err error) {
	es := j.es
	if j.wait {
		r := d.answer(es, &j.n, res, err, j)
		d.metrics.answered(es, r, j.since)
		if r == &j.resp {
			j.refs.Add(1) // lent with the answer, until its reader releases it
			r.Owner = j
		}
		d.finish(j, r)
		return
	}
	apnsFinal := err == nil && !apns.Retryable(res.StatusCode, res.Reason)
	if d.drainCtx.Err() != nil && !apnsFinal {
		d.finish(j, nil) // cut by the shutdown deadline: stays in the spool
		return
	}
	if final, why := j.settled(res, err, time.Now()); final {
		d.metrics.answered(es, d.answer(es, &j.n, res, err, j), j.since) // counters, unregistered_file, logs
		if why != "" {
			d.log.Warn("wait:false notification given up: "+why, "app", es.app.cfg.Name, "env", es.cfg.Name,
				"token", TruncateToken(j.n.DeviceToken), "apns_id", j.n.ApnsID)
		}
		d.spool.Done(j.spoolID)
		d.finish(j, nil)
		return
	}
	d.retries.Add(1)
	wait := j.roundBackoff/2 + rand.N(j.roundBackoff/2+1)
	d.log.Debug("wait:false notification not delivered yet; trying again", "app", es.app.cfg.Name, "env", es.cfg.Name,
		"apns_id", j.n.ApnsID, "after", describe(res, err), "in", wait)
	j.roundBackoff = min(j.roundBackoff*2, roundBackoffMax)
	d.later(wait, func() {
		if d.drainCtx.Err() != nil {
			d.finish(j, nil) // stays in the spool
			return
		}
		d.startRound(j, time.Time{})
	})
}

// finish releases what Submit (or replay) took for j, and sends answer
// (wait:true; nil otherwise) on j.ch once the queue slot is free: a client
// that got an answer may send again at once, and must not meet queue_full
// for its own finished notification.
func (d *Daemon) finish(j *job, answer *ipc.Response) {
	d.pending.Add(-1)
	if answer != nil {
		j.ch <- answer
	}
	j.es.active.Done()
	d.wg.Done()
	j.unref()
}

// later runs f once after wait, or at once when the shutdown deadline
// passes first (so that a job waiting to retry ends with the drain).
func (d *Daemon) later(wait time.Duration, f func()) {
	var once sync.Once
	stop := context.AfterFunc(d.drainCtx, func() { once.Do(f) })
	time.AfterFunc(wait, func() {
		stop()
		once.Do(f)
	})
}

// Backoff between rounds of attempts for a wait:false notification whose
// round ended without a final outcome.
const (
	roundBackoff    = time.Second
	roundBackoffMax = 30 * time.Second
)

// settled reports whether a wait:false job's outcome is final (then the
// spool record is done): an answer from APNs other than a retryable one, or
// the caller's deadline or the notification's apns-expiration has passed
// (why says which).
func (j *job) settled(res *apns.Response, err error, now time.Time) (final bool, why string) {
	if err == nil && !apns.Retryable(res.StatusCode, res.Reason) {
		return true, ""
	}
	if !j.deadline.IsZero() && !now.Before(j.deadline) {
		return true, "its deadline passed before APNs accepted it (" + describe(res, err) + ")"
	}
	if j.n.HasExpiration && j.n.Expiration > 0 && now.Unix() >= j.n.Expiration {
		return true, "its apns-expiration passed before APNs accepted it (" + describe(res, err) + ")"
	}
	return false, ""
}

func describe(res *apns.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", res.StatusCode, res.Reason)
}

func (d *Daemon) answer(es *envSender, n *apns.Notification, res *apns.Response, err error, j *job) *ipc.Response {
	log := func() *slog.Logger { // only built on the paths that log
		return d.log.With("app", es.app.cfg.Name, "env", es.cfg.Name, "token", TruncateToken(n.DeviceToken))
	}
	if err == nil {
		r := &j.resp
		*r = ipc.Response{OK: res.OK(), Status: res.StatusCode, Reason: res.Reason, ApnsID: res.ApnsID}
		if res.StatusCode == 410 {
			r.Timestamp = res.Timestamp
			d.unregistered.add(ipc.UnregisteredRecord{ // logs its own failures, aggregated
				Time: time.Now().UTC(), App: es.app.cfg.Name, Env: es.cfg.Name, Token: n.DeviceToken,
				Reason: res.Reason, Timestamp: res.Timestamp, ApnsID: res.ApnsID,
			})
		}
		if r.OK {
			d.sent.Add(1)
			es.sent.Add(1)
		} else {
			retry := apns.Retryable(res.StatusCode, res.Reason)
			r.Retryable = &retry
			d.failed.Add(1)
			es.failed.Add(1)
			log().Info("APNs refused notification", "status", res.StatusCode, "reason", res.Reason, "apns_id", res.ApnsID)
		}
		return r
	}
	d.failed.Add(1)
	es.failed.Add(1)
	var e *ipc.Error
	var ce *apns.ConnError
	switch {
	case d.drainCtx.Err() != nil:
		e = ipc.Errorf(ipc.CodeShuttingDown, "apnsd shut down before APNs answered; the notification may or may not have been delivered")
	case errors.Is(err, apns.ErrQueueFull):
		e = ipc.Errorf(ipc.CodeQueueFull, "the APNs client's queue is full; retry later")
	case errors.Is(err, apns.ErrUnavailable):
		e = ipc.Errorf(ipc.CodeUnavailable, "%v", err)
	case errors.Is(err, context.DeadlineExceeded) && !j.deadline.IsZero() && !time.Now().Add(time.Millisecond).Before(j.deadline):
		e = ipc.Errorf(ipc.CodeTimeout, "no answer from APNs by the request's deadline (if it was already sent, APNs may or may not have received it)")
	case errors.Is(err, context.DeadlineExceeded):
		e = ipc.Errorf(ipc.CodeTimeout, "no answer from APNs within %s (if it was already sent, APNs may or may not have received it)", j.timeout)
	case errors.As(err, &ce):
		e = ipc.Errorf(ipc.CodeUnavailable, "%v (APNs may or may not have received it)", err)
	case errors.Is(err, apns.ErrClosed):
		e = ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down")
	default:
		e = ipc.Errorf(ipc.CodeInternal, "%v", err)
	}
	es.logUndelivered(log(), e)
	return ipc.ErrorResponse(e)
}

// TruncateToken shortens a device token for logs: enough to recognise it,
// not enough to use it.
func TruncateToken(t string) string {
	if len(t) <= 12 {
		return t
	}
	return t[:8] + "…" + t[len(t)-4:]
}

// undeliveredEvery is how often, at most, an environment logs a warning for
// notifications it could not deliver; the ones in between are counted in
// the next warning (and logged at debug level).
const undeliveredEvery = 10 * time.Second

// logUndelivered logs a notification that could not be delivered. During
// an outage every notification fails the same way, and one line per
// notification would flood the journal: at most one warning per
// environment every undeliveredEvery, counting the ones in between.
func (es *envSender) logUndelivered(log *slog.Logger, e *ipc.Error) {
	es.undeliveredMu.Lock()
	now := time.Now()
	es.undeliveredN++
	if !es.undeliveredSince.IsZero() && now.Sub(es.undeliveredSince) < undeliveredEvery {
		es.undeliveredMu.Unlock()
		log.Debug("notification not delivered", "error", e.Code, "detail", e.Message)
		return
	}
	n := es.undeliveredN
	es.undeliveredSince, es.undeliveredN = now, 0
	es.undeliveredMu.Unlock()
	log.Warn("notification not delivered", "error", e.Code, "detail", e.Message, "count_since_last_warning", n)
}
