package daemon

import (
	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/ipc"
)

// submitMulticast accepts a send with tokens: each good token is submitted
// as a single send of its own (Submit, so every rule, counter, retry and
// the queue bound apply per token exactly as for "token"), and one goroutine
// per batch, not per token, collects the answers in order into the one
// answer line. A malformed token fails its own entry; so does a token
// refused at submission (queue_full when the queue fills mid-batch, ...).
// The batch is refused as a whole only for what would refuse every token
// alike, checked once up front: the payload and headers, the app and
// environment, shutdown, and a queue too full for the whole batch.
//
// With "wait":false the answer is {"ok":true,"queued":N} once every good
// token is in the spool (durable), as a single send's acknowledgement.
func (d *Daemon) submitMulticast(p *ipc.Peer, s *ipc.Send) (_ chan *ipc.Response, e *ipc.Error) {
	defer func() { d.metrics.refusedSend(e) }() // a batch refused whole counts once
	good := 0
	probe := *s
	probe.Tokens, probe.TokenErrs = nil, nil
	for i, t := range s.Tokens {
		if s.TokenErrs == nil || s.TokenErrs[i] == nil {
			if good == 0 {
				probe.Token = t
			}
			good++
		}
	}
	if good == 0 {
		probe.Token = "00" // every token is malformed: still check the rest
	}
	n, e := NewNotification(&probe)
	if e != nil {
		return nil, e
	}
	if e = d.precheck(p, s, &n, good); e != nil {
		d.refused.Add(1)
		return nil, e
	}
	results := make([]ipc.TokenResult, len(s.Tokens))
	chans := make([]chan *ipc.Response, len(s.Tokens))
	for i, t := range s.Tokens {
		if s.TokenErrs != nil && s.TokenErrs[i] != nil {
			results[i] = ipc.TokenResultFrom(t, ipc.ErrorResponse(s.TokenErrs[i]))
			continue
		}
		one := probe
		one.Token = t
		ch, e := d.Submit(p, &one)
		if e != nil {
			results[i] = ipc.TokenResultFrom(t, ipc.ErrorResponse(e))
			continue
		}
		chans[i] = ch
	}
	out := ipc.NewAnswer()
	// s is the socket server's again once Submit returns: the goroutine
	// takes copies.
	tokens, wait := s.Tokens, s.Wait
	go func() {
		// wait:true: each channel delivers APNs' answer. wait:false: each
		// delivers the acknowledgement once the notification is in the
		// spool ({"ok":true,"queued":true}), or a refusal.
		queued := 0
		for i, ch := range chans {
			if ch == nil {
				continue
			}
			r := <-ch
			ipc.ReleaseAnswer(ch)
			if !wait && r.OK && r.Queued != nil {
				results[i] = ipc.TokenResult{Token: tokens[i], OK: true, Queued: true}
				queued++
				continue
			}
			results[i] = ipc.TokenResultFrom(tokens[i], r)
			r.Release()
		}
		if !wait {
			out <- queuedAnswer(results, queued)
			return
		}
		out <- multicastAnswer(results)
	}()
	return out, nil
}

// precheck refuses, before any token is submitted, what Submit would
// refuse for every token of a batch of count: shutdown, an unknown app or
// environment, a peer or topic the access rules refuse (checkSend, with n
// the batch's notification), and a queue without room for count more.
func (d *Daemon) precheck(p *ipc.Peer, s *ipc.Send, n *apns.Notification, count int) *ipc.Error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	st := d.current()
	if d.shutting {
		return ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down; send again once it is back")
	}
	if !s.Wait && d.spool == nil {
		return ipc.Errorf(ipc.CodeBadRequest, "\"wait\":false needs the spool, and this apnsd has none (state_dir = \"\" in its config): send with \"wait\":true, or set state_dir")
	}
	app, e := pickApp(st.apps, s.App)
	if e == nil {
		e = d.access.checkSend(p, app.cfg, n.Topic, n.PushType)
	}
	if e != nil {
		return e
	}
	envName := s.Env
	if envName == "" {
		envName = app.cfg.DefaultEnv
	}
	if app.envs[envName] == nil {
		return ipc.Errorf(ipc.CodeBadRequest, "app %q has no %s environment configured", app.cfg.Name, envName)
	}
	if room := int64(st.cfg.QueueSize) - d.pending.Load(); int64(count) > room {
		return ipc.Errorf(ipc.CodeQueueFull, "queue is full: %d notifications do not fit (%d free of queue_size %d); retry later, or in smaller batches", count, max(room, 0), st.cfg.QueueSize)
	}
	return nil
}

// multicastAnswer counts results into the one answer line: ok only when
// every token was delivered.
func multicastAnswer(results []ipc.TokenResult) *ipc.Response {
	rep := &ipc.MulticastReport{Results: results}
	for i := range results {
		if results[i].OK {
			rep.Sent++
		} else {
			rep.Failed++
		}
	}
	return &ipc.Response{OK: rep.Failed == 0, MulticastReport: rep}
}

// queuedAnswer is a "wait":false multicast's answer: {"ok":true,
// "queued":N} when every token was accepted; otherwise ok:false with the
// count queued and one entry per token (queued, or its refusal), so that
// no token is dropped silently.
func queuedAnswer(results []ipc.TokenResult, queued int) *ipc.Response {
	if queued == len(results) {
		return &ipc.Response{OK: true, Queued: queued}
	}
	return &ipc.Response{OK: false, Queued: queued, MulticastReport: &ipc.MulticastReport{Failed: len(results) - queued, Results: results}}
}
