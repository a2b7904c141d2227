package daemon

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/ipc"
)

// multicastWorkers bounds how many notifications of one multicast are in
// the APNs client at once. A multicast is one goroutine that feeds at most
// this many workers, not one goroutine per token; the client's own queue
// and stream limits pace them, so a batch runs at the transport's rate.
const multicastWorkers = 128

// admission is a send accepted for one app and environment: the state it
// was picked from and the sender. Holding one means count slots of the
// queue, one d.wg and one es.active are taken; release them with done.
type admission struct {
	st    *state
	es    *envSender
	count int64
}

// admit picks the app and environment of s from the current state and
// reserves count queue slots, exactly as Submit does for a single send
// (shutting down, unknown app, missing environment and a full queue are
// refused the same way). count must be at least 1. It does not block.
func (d *Daemon) admit(s *ipc.Send, count int) (*admission, *ipc.Error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	st := d.current()
	if d.shutting {
		d.refused.Add(1)
		return nil, ipc.Errorf(ipc.CodeShuttingDown, "apnsd is shutting down; send again once it is back")
	}
	app, e := pickApp(st.apps, s.App)
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
	n := int64(count)
	if queueCap := int64(st.cfg.QueueSize); d.pending.Add(n) > queueCap {
		d.pending.Add(-n)
		d.refused.Add(1)
		if n > 1 {
			return nil, ipc.Errorf(ipc.CodeQueueFull, "queue is full: %d notifications do not fit (queue_size %d); retry later, or in smaller batches", n, queueCap)
		}
		return nil, ipc.Errorf(ipc.CodeQueueFull, "queue is full (%d notifications waiting); retry later", queueCap)
	}
	d.wg.Add(1)
	es.active.Add(1)
	return &admission{st: st, es: es, count: n}, nil
}

// release gives back what admit took, less the queue slots already given
// back one by one (answered).
func (d *Daemon) release(a *admission, answered int64) {
	d.pending.Add(-(a.count - answered))
	a.es.active.Done()
	d.wg.Done()
}

// submitMulticast accepts a send with tokens: one notification per good
// token, all built from the same request, answered together on the
// returned channel once every one has its answer (or refusal). Malformed
// tokens fail their own entry only. The batch is refused as a whole only
// for what would refuse every token alike (payload, app, queue, shutdown).
func (d *Daemon) submitMulticast(s *ipc.Send) (<-chan *ipc.Response, *ipc.Error) {
	good := 0
	probe := *s
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
	tmpl, e := NewNotification(&probe)
	if e != nil {
		return nil, e
	}
	ch := make(chan *ipc.Response, 1)
	if good == 0 {
		ch <- multicastAnswer(s, make([]ipc.TokenResult, len(s.Tokens)))
		return ch, nil
	}
	a, e := d.admit(s, good)
	if e != nil {
		return nil, e
	}
	if tmpl.Topic == "" {
		tmpl.Topic = apns.Topic(a.es.app.cfg.Topic, tmpl.PushType)
	}
	go d.deliverMulticast(a, tmpl, s, time.Duration(a.st.cfg.RequestTimeout), ch)
	return ch, nil
}

// deliverMulticast sends one notification per good token of s (tmpl with
// the token and a fresh apns-id), through at most multicastWorkers workers,
// and puts the one answer on ch. Every token is answered within timeout,
// counted and logged exactly as a single send (d.answer).
func (d *Daemon) deliverMulticast(a *admission, tmpl apns.Notification, s *ipc.Send, timeout time.Duration, ch chan<- *ipc.Response) {
	since := time.Now()
	var answered atomic.Int64
	defer func() { d.release(a, answered.Load()) }()
	ctx, cancel := context.WithTimeout(d.drainCtx, timeout)
	defer cancel()
	results := make([]ipc.TokenResult, len(s.Tokens))
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(s.Tokens) {
				return
			}
			if s.TokenErrs != nil && s.TokenErrs[i] != nil {
				continue // filled in by multicastAnswer
			}
			n := tmpl
			n.DeviceToken = s.Tokens[i]
			n.ApnsID = apns.NewUUID()
			res, err := d.sendWithRetry(ctx, a.es, &n)
			r := d.answer(a.es, &n, res, err, timeout)
			d.metrics.answered(a.es, r, since)
			results[i] = ipc.TokenResultFrom(n.DeviceToken, r)
			d.pending.Add(-1)
			answered.Add(1)
		}
	}
	workers := min(int(a.count), multicastWorkers)
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work() // this goroutine is one of the workers
	wg.Wait()
	ch <- multicastAnswer(s, results)
}

// multicastAnswer completes results (the malformed tokens' refusals) and
// counts them into the one answer line: ok only when every token was
// delivered.
func multicastAnswer(s *ipc.Send, results []ipc.TokenResult) *ipc.Response {
	rep := &ipc.MulticastReport{Results: results}
	for i := range results {
		if s.TokenErrs != nil && s.TokenErrs[i] != nil {
			results[i] = ipc.TokenResultFrom(s.Tokens[i], ipc.ErrorResponse(s.TokenErrs[i]))
		}
		if results[i].OK {
			rep.Sent++
		} else {
			rep.Failed++
		}
	}
	return &ipc.Response{OK: rep.Failed == 0, MulticastReport: rep}
}
