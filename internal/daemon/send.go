package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/ipc"
)

// Submit implements ipc.Backend: it turns the send into a notification
// (NewNotification), picks the app and environment from the current state
// and hands the notification to a goroutine that answers it exactly once.
// It does not block. peer must be allowed to send as the app (checkSend).
func (d *Daemon) Submit(peer *ipc.Peer, s *ipc.Send) (_ <-chan *ipc.Response, e *ipc.Error) {
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
	if queueCap := int64(st.cfg.QueueSize); d.pending.Add(1) > queueCap {
		d.pending.Add(-1)
		d.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeQueueFull, "queue is full (%d notifications waiting); retry later", queueCap)
	}
	d.wg.Add(1)
	es.active.Add(1)

	if n.Topic == "" {
		n.Topic = apns.Topic(app.cfg.Topic, n.PushType)
	}
	if n.ApnsID == "" {
		// Fixed here so that a retry carries the same apns-id.
		n.ApnsID = apns.NewUUID()
	}
	ch := make(chan *ipc.Response, 1)
	go d.deliver(es, &n, time.Duration(st.cfg.RequestTimeout), ch)
	return ch, nil
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

// deliver sends n and puts exactly one answer on ch, within timeout
// (the request_timeout in force when n was accepted). It retries what
// Apple's guidance allows (see sendWithRetry) within the request timeout.
func (d *Daemon) deliver(es *envSender, n *apns.Notification, timeout time.Duration, ch chan<- *ipc.Response) {
	defer d.wg.Done()
	defer es.active.Done()
	defer d.pending.Add(-1)
	since := time.Now()
	ctx, cancel := context.WithTimeout(d.drainCtx, timeout)
	defer cancel()
	res, err := d.sendWithRetry(ctx, es, n)
	r := d.answer(es, n, res, err, timeout)
	d.metrics.answered(es, r, since)
	ch <- r
}

// Retry policy. Transient failures are sent again with exponential backoff
// and jitter, within the request's deadline and keeping the same apns-id:
// a connection that failed before APNs answered, 500, 503, and 429
// TooManyRequests. Everything else APNs says is final. When the deadline
// leaves no room for another try, the last answer from APNs is returned.
const (
	maxAttempts  = 5
	retryBackoff = 100 * time.Millisecond
	retryMax     = 5 * time.Second
)

func (d *Daemon) sendWithRetry(ctx context.Context, es *envSender, n *apns.Notification) (*apns.Response, error) {
	backoff := retryBackoff
	tokenRetried := false
	for attempt := 1; ; attempt++ {
		start := time.Now()
		res, err := es.client.Send(ctx, n)
		d.metrics.apnsAnswered(es, res, start)
		var ce *apns.ConnError
		switch {
		case err == nil && res.StatusCode == 403 && res.Reason == apns.ReasonExpiredProviderToken && es.token != nil && !tokenRetried:
			// Refresh the token (only if Apple's 20-minute rule allows)
			// and try once more at once.
			tokenRetried = true
			if !es.token.Expired(res.Authorization) {
				// Logged once per token, not per notification.
				if es.app.clockWarned.Swap(res.Authorization) != res.Authorization {
					d.log.Error("APNs says the provider token expired, but it is younger than 20 minutes, so Apple forbids a new one yet: is this host's clock right?", "app", es.app.cfg.Name, "env", es.cfg.Name)
				}
				return res, nil
			}
			d.retries.Add(1)
			d.metrics.retried(es)
			continue
		case err == nil && !apns.Retryable(res.StatusCode, res.Reason):
			return res, nil
		case err != nil && !errors.As(err, &ce):
			return nil, err // no connection, deadline, or closed: nothing to retry
		}
		if attempt >= maxAttempts {
			return res, err
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait+50*time.Millisecond {
			return res, err
		}
		d.retries.Add(1)
		d.metrics.retried(es)
		d.log.Debug("retrying notification", "app", es.app.cfg.Name, "env", es.cfg.Name, "attempt", attempt+1, "apns_id", n.ApnsID, "after", describe(res, err))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, err
		}
		backoff = min(backoff*2, retryMax)
	}
}

func describe(res *apns.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", res.StatusCode, res.Reason)
}

func (d *Daemon) answer(es *envSender, n *apns.Notification, res *apns.Response, err error, timeout time.Duration) *ipc.Response {
	log := func() *slog.Logger { // only built on the paths that log
		return d.log.With("app", es.app.cfg.Name, "env", es.cfg.Name, "token", TruncateToken(n.DeviceToken))
	}
	if err == nil {
		r := &ipc.Response{OK: res.OK(), Status: res.StatusCode, Reason: res.Reason, ApnsID: res.ApnsID}
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
	case errors.Is(err, apns.ErrUnavailable):
		e = ipc.Errorf(ipc.CodeUnavailable, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		e = ipc.Errorf(ipc.CodeTimeout, "no answer from APNs within %s (if it was already sent, APNs may or may not have received it)", timeout)
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
