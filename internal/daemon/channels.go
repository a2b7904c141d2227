package daemon

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
)

// Broadcast channels (Apple's broadcast push, iOS 18; see docs/apple.md).
//
// Each environment has a second APNs client for Apple's channel management
// API (envSender.manage, manage_endpoint), with the same credential as its
// push client. It connects on the first channel op and then stays
// connected like the push client (an app that never manages channels never
// connects to the management host). Broadcast sends ("channel_id" instead
// of "token") go over the push client to POST /4/broadcasts/apps/<bundle
// id>. Nothing here waits per request: each is queued on a client
// (Client.Enqueue) and answered from its callback.

// channelTally is what apnsd knows of an environment's broadcast channel
// count: set by every channel_list, moved by creates and deletes made
// through apnsd. Unknown until the first list (apnsd does not list channels
// by itself: that is a request to Apple nobody asked for). Safe for
// concurrent use.
type channelTally struct {
	known atomic.Bool
	n     atomic.Int64
}

// set records a count learnt from a channel_list.
func (c *channelTally) set(n int) {
	c.n.Store(int64(n))
	c.known.Store(true)
}

// add moves a known count by delta (a create or delete through apnsd).
func (c *channelTally) add(delta int64) {
	if c.known.Load() {
		if v := c.n.Add(delta); v < 0 {
			c.n.Store(0)
		}
	}
}

// channelCount is the environment's channel count, if known.
func (es *envSender) channelCount() (int, bool) {
	if !es.channels.known.Load() {
		return 0, false
	}
	return int(es.channels.n.Load()), true
}

// admission is a request accepted for one app and environment. Holding one
// means count queue slots (0 for a channel op, which is not a
// notification), one d.wg and one es.active are taken: release them with
// release, exactly once.
type admission struct {
	st    *state
	es    *envSender
	count int64
}

// admit picks the app and environment from the current state and takes
// what an admission holds, refusing as Submit does: shutting down, unknown
// app, what check (the access rules, access.go) refuses, missing
// environment, and (count > 0) a full queue. It does not block.
func (d *Daemon) admit(appName, env string, count int, check func(*config.AppConfig) *ipc.Error) (*admission, *ipc.Error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	st := d.current()
	if d.shutting {
		return nil, ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down; send again once it is back")
	}
	app, e := pickApp(st.apps, appName)
	if e == nil {
		e = check(app.cfg)
	}
	if e != nil {
		return nil, e
	}
	if env == "" {
		env = app.cfg.DefaultEnv
	}
	es := app.envs[env]
	if es == nil {
		return nil, ipc.Errorf(ipc.CodeBadRequest, "app %q has no %s environment configured", app.cfg.Name, env)
	}
	n := int64(count)
	if queueCap := int64(st.cfg.QueueSize); n > 0 && d.pending.Add(n) > queueCap {
		d.pending.Add(-n)
		return nil, ipc.Errorf(ipc.CodeQueueFull, "queue is full (%d notifications waiting); retry later", queueCap)
	}
	d.wg.Add(1)
	es.active.Add(1)
	return &admission{st: st, es: es, count: n}, nil
}

// release gives back what admit took.
func (d *Daemon) release(a *admission) {
	d.pending.Add(-a.count)
	a.es.active.Done()
	d.wg.Done()
}

// toRequest turns an apns.APIRequest into the transport's request
// (headers sorted by name, so that requests are reproducible).
func toRequest(r *apns.APIRequest) *apns.Request {
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	h := make([]apns.Header, 0, len(names)+1)
	for _, k := range names {
		h = append(h, apns.Header{Name: strings.ToLower(k), Value: r.Header[k]})
	}
	if r.Body != nil {
		h = append(h, apns.Header{Name: "content-type", Value: "application/json"})
	}
	return &apns.Request{Method: r.Method, Path: r.Path, Header: h, Body: r.Body}
}

// httpHeader is a response's header fields as an http.Header.
func httpHeader(res *apns.Response) http.Header {
	h := http.Header{}
	for _, f := range res.Header {
		h.Add(f.Name, f.Value)
	}
	return h
}

// transportError is the refusal for a request APNs did not answer (err
// from the client); timeout is the request's.
func (d *Daemon) transportError(err error, timeout time.Duration) *ipc.Error {
	var ce *apns.ConnError
	switch {
	case d.drainCtx.Err() != nil:
		return ipc.Errorf(ipc.CodeShuttingDown, "apnsd shut down before APNs answered; the request may or may not have been carried out")
	case errors.Is(err, apns.ErrQueueFull):
		return ipc.Errorf(ipc.CodeQueueFull, "too many requests waiting for APNs; retry later")
	case errors.Is(err, apns.ErrUnavailable):
		return ipc.Errorf(ipc.CodeUnavailable, "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return ipc.Errorf(ipc.CodeTimeout, "no answer from APNs within %s (if it was already sent, APNs may or may not have carried it out)", timeout)
	case errors.As(err, &ce):
		return ipc.Errorf(ipc.CodeUnavailable, "%v (APNs may or may not have received it)", err)
	case errors.Is(err, apns.ErrClosed):
		return ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down")
	}
	return ipc.Errorf(ipc.CodeInternal, "%v", err)
}

// apnsOp maps the socket's op names to Apple's operations.
var apnsOp = map[string]apns.ChannelOp{
	ipc.ChannelCreate: apns.ChannelCreate, ipc.ChannelGet: apns.ChannelGet,
	ipc.ChannelList: apns.ChannelList, ipc.ChannelDelete: apns.ChannelDelete,
}

// Channel implements ipc.ChannelBackend: one channel management request to
// the environment's management endpoint, answered from the client's
// callback. Channel ops are not retried: a create that APNs may have
// carried out is not repeated (it would make a second channel); the
// answer says whether to retry.
func (d *Daemon) Channel(peer *ipc.Peer, r *ipc.ChannelRequest) <-chan *ipc.Response {
	ch := make(chan *ipc.Response, 1)
	a, e := d.admit(r.App, r.Env, 0, func(app *config.AppConfig) *ipc.Error { return d.access.checkApp(peer, app) })
	if e != nil {
		d.refused.Add(1)
		ch <- ipc.ErrorResponse(e)
		return ch
	}
	es := a.es
	bundle := es.app.cfg.Topic
	var req *apns.APIRequest
	var err error
	switch r.Op {
	case ipc.ChannelCreate:
		var policy apns.StoragePolicy
		if policy, err = apns.ParseStoragePolicy(r.Storage); err == nil {
			req, err = apns.CreateChannelRequest(bundle, policy, apns.NewUUID())
		}
	case ipc.ChannelGet:
		req, err = apns.GetChannelRequest(bundle, r.ChannelID, apns.NewUUID())
	case ipc.ChannelDelete:
		req, err = apns.DeleteChannelRequest(bundle, r.ChannelID, apns.NewUUID())
	case ipc.ChannelList:
		req, err = apns.ListChannelsRequest(bundle, apns.NewUUID())
	default:
		d.release(a)
		ch <- ipc.ErrorResponse(ipc.Errorf(ipc.CodeUnknownOp, "unknown channel op %q", r.Op))
		return ch
	}
	if err != nil {
		d.release(a)
		ch <- ipc.ErrorResponse(ipc.Errorf(ipc.CodeBadRequest, "channel_%s: %v", r.Op, err))
		return ch
	}
	timeout := time.Duration(a.st.cfg.RequestTimeout)
	op := apnsOp[r.Op]
	done := func(res *apns.Response, err error) {
		resp := d.channelAnswer(es, op, res, err, timeout)
		if op == apns.ChannelGet && resp.ChannelReport != nil && resp.OK {
			resp.ChannelID = r.ChannelID // the answer names the channel it describes
		}
		d.metrics.channelOp(es, r.Op, outcome(resp))
		d.release(a)
		ch <- resp
	}
	es.manage.Start() // the first channel op connects; later ones find it up
	if err := es.manage.Enqueue(toRequest(req), time.Now().Add(timeout), done); err != nil {
		done(nil, err)
	}
	return ch
}

// channelAnswer turns APNs' answer to a channel op into the socket's.
func (d *Daemon) channelAnswer(es *envSender, op apns.ChannelOp, res *apns.Response, err error, timeout time.Duration) *ipc.Response {
	if err != nil {
		e := d.transportError(err, timeout)
		d.log.Warn("channel request not answered by APNs", "app", es.app.cfg.Name, "env", es.cfg.Name, "op", op.String(), "error", e.Code, "detail", e.Message)
		return ipc.ErrorResponse(e)
	}
	cr, perr := apns.ParseChannelResponse(op, res.StatusCode, httpHeader(res), res.Body)
	if perr != nil {
		d.log.Error("APNs answered a channel request in a shape Apple does not document", "app", es.app.cfg.Name, "env", es.cfg.Name, "err", perr)
		return ipc.ErrorResponse(ipc.Errorf(ipc.CodeInternal, "%v", perr))
	}
	rep := &ipc.ChannelReport{RequestID: cr.RequestID}
	if !cr.OK() {
		retry := apns.Retryable(cr.StatusCode, cr.Reason)
		d.log.Info("APNs refused channel request", "app", es.app.cfg.Name, "env", es.cfg.Name, "op", op.String(), "status", cr.StatusCode, "reason", cr.Reason)
		return &ipc.Response{Status: cr.StatusCode, Reason: string(cr.Reason), Retryable: &retry, ChannelReport: rep}
	}
	switch op {
	case apns.ChannelCreate:
		rep.ChannelID = cr.ChannelID
		es.channels.add(1)
		d.log.Info("broadcast channel created", "app", es.app.cfg.Name, "env", es.cfg.Name, "channel_id", cr.ChannelID)
	case apns.ChannelGet:
		rep.Storage = cr.Config.StoragePolicy.String()
		rep.PushType = cr.Config.PushType
	case apns.ChannelList:
		list := cr.Channels
		if list == nil {
			list = []string{}
		}
		rep.Channels = &list
		es.channels.set(len(list))
	case apns.ChannelDelete:
		es.channels.add(-1)
		d.log.Info("broadcast channel deleted", "app", es.app.cfg.Name, "env", es.cfg.Name)
	}
	return &ipc.Response{OK: true, Status: cr.StatusCode, ChannelReport: rep}
}

// broadcast is one accepted broadcast send, from submitBroadcast to its
// answer. Its fields are touched by one goroutine at a time (the one in
// the client's callback or a retry timer).
type broadcast struct {
	a        *admission
	req      *apns.Request
	id       string // apns-request-id
	since    time.Time
	deadline time.Time
	timeout  time.Duration
	attempt  int
	backoff  time.Duration
	ch       chan *ipc.Response
}

// submitBroadcast accepts a send with "channel_id": a Live Activity update
// or end to every device subscribed to the channel. It is validated as
// Apple documents broadcasts (push type liveactivity, no start, 5 KB, no
// topic or collapse id, priority 10 or 5, expiration 0 unless the channel
// stores messages), counted as one notification, retried like a send
// (connection failures, 429, 500, 503) within request_timeout, keeping its
// apns-request-id.
func (d *Daemon) submitBroadcast(peer *ipc.Peer, s *ipc.Send) (_ chan *ipc.Response, e *ipc.Error) {
	defer func() {
		if e != nil {
			d.refused.Add(1)
		}
	}()
	if !s.Wait {
		return nil, ipc.Errorf(ipc.CodeBadRequest, "a broadcast (channel_id) is not spooled: send it with \"wait\":true (channels that store messages keep the latest one for devices that were offline)")
	}
	switch s.PushType {
	case "", apns.PushTypeLiveActivity:
	default:
		return nil, ipc.Errorf(ipc.CodeBadRequest, "a broadcast (channel_id) is push type %q; push_type %q is not possible on a channel", apns.PushTypeLiveActivity, s.PushType)
	}
	if s.CollapseID != "" {
		return nil, ipc.Errorf(ipc.CodeBadRequest, "a broadcast (channel_id) takes no collapse_id: Apple's broadcast API has no apns-collapse-id")
	}
	b := apns.Broadcast{ChannelID: s.ChannelID, RequestID: s.ApnsID, Payload: s.Payload}
	if s.Priority != nil {
		b.Priority = *s.Priority
	}
	if s.Expiration != nil {
		b.Expiration = *s.Expiration
	}
	if b.RequestID == "" {
		b.RequestID = apns.NewUUID()
	}
	// The peer must be allowed to send as the app; a topic, if given, must
	// be the app's (a broadcast goes to the app's bundle id and needs none).
	a, e := d.admit(s.App, s.Env, 1, func(app *config.AppConfig) *ipc.Error {
		return d.access.checkSend(peer, app, s.Topic, apns.PushTypeLiveActivity)
	})
	if e != nil {
		return nil, e
	}
	bundle := a.es.app.cfg.Topic
	b.BundleID = bundle
	areq, err := b.Request()
	if err != nil {
		d.release(a)
		var ve *apns.ValidationError
		if errors.As(err, &ve) && ve.TooLarge {
			return nil, ipc.Errorf(ipc.CodePayloadTooLarge, "%s", ve.Message)
		}
		return nil, ipc.Errorf(ipc.CodeBadRequest, "broadcast: %v", err)
	}
	timeout := time.Duration(a.st.cfg.RequestTimeout)
	bc := &broadcast{a: a, req: toRequest(areq), id: b.RequestID, since: time.Now(), timeout: timeout,
		backoff: retryBackoff, ch: ipc.NewAnswer()}
	bc.deadline = bc.since.Add(timeout)
	d.tryBroadcast(bc)
	return bc.ch, nil
}

// tryBroadcast queues one attempt of bc.
func (d *Daemon) tryBroadcast(bc *broadcast) {
	bc.attempt++
	if err := bc.a.es.client.Enqueue(bc.req, bc.deadline, func(res *apns.Response, err error) { d.broadcastResult(bc, res, err) }); err != nil {
		d.broadcastDone(bc, nil, err)
	}
}

// broadcastResult takes an attempt's outcome (on a client goroutine: it
// must not block) and retries what the retry policy of sends allows.
func (d *Daemon) broadcastResult(bc *broadcast, res *apns.Response, err error) {
	var ce *apns.ConnError
	retryable := (err == nil && apns.Retryable(res.StatusCode, res.Reason)) || (err != nil && errors.As(err, &ce))
	wait := bc.backoff/2 + rand.N(bc.backoff/2+1)
	if !retryable || bc.attempt >= maxAttempts || d.drainCtx.Err() != nil || time.Until(bc.deadline) < wait+50*time.Millisecond {
		d.broadcastDone(bc, res, err)
		return
	}
	d.retries.Add(1)
	d.metrics.retried(bc.a.es)
	bc.backoff = min(bc.backoff*2, retryMax)
	time.AfterFunc(wait, func() { d.tryBroadcast(bc) })
}

// broadcastDone answers bc and releases its admission.
func (d *Daemon) broadcastDone(bc *broadcast, res *apns.Response, err error) {
	es := bc.a.es
	var r *ipc.Response
	if err != nil {
		e := d.transportError(err, bc.timeout)
		es.logUndelivered(d.log.With("app", es.app.cfg.Name, "env", es.cfg.Name, "broadcast", true), e)
		r = ipc.ErrorResponse(e)
	} else {
		cr := apns.ParseBroadcastResponse(res.StatusCode, httpHeader(res), res.Body)
		id := cr.RequestID
		if id == "" {
			id = bc.id
		}
		r = &ipc.Response{OK: cr.OK(), Status: cr.StatusCode, Reason: string(cr.Reason), ApnsID: id}
		if !r.OK {
			retry := apns.Retryable(cr.StatusCode, cr.Reason)
			r.Retryable = &retry
			d.log.Info("APNs refused broadcast", "app", es.app.cfg.Name, "env", es.cfg.Name, "status", cr.StatusCode, "reason", cr.Reason, "apns_request_id", id)
		}
	}
	if r.OK {
		d.sent.Add(1)
		es.sent.Add(1)
	} else {
		d.failed.Add(1)
		es.failed.Add(1)
	}
	d.metrics.answered(es, r, bc.since)
	d.release(bc.a)
	bc.ch <- r
}
