package daemon

// Fault tests (issue 5): "nothing lost" under APNs faults, under load.
//
// Each test pipelines hundreds of requests over several socket connections
// against the harness's stand-ins while a fault is injected, and checks the
// same invariants:
//
//   - exactly one answer per request line, in request order per connection
//     (a ping written after the last request must be the very next answer, so
//     nothing was answered twice and nothing extra was written);
//   - every answer is well formed: ok with status 200 and an apns-id, an APNs
//     refusal whose "retryable" is Apple's guidance (5xx and 429
//     TooManyRequests), or a protocol error code with "retryable" set as the
//     contract says (timeout, unavailable, shutting_down: true);
//   - the stand-in's view agrees with the daemon's: every retry of a
//     notification carried the same apns-id, permanent refusals were sent
//     once, and Accepted() (200s actually written by the stand-in) matches
//     the daemon's ok answers. Where a fault can lose a written 200 on its way
//     back (ActionCloseConn) the match is a bound, not an equality; see
//     TestFaultConnectionClosedMidStream.
//
// Requests are identified on the stand-in by their device token, which is
// unique per request line: "<4 hex digits of kind><conn><index>".

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/ipc"
)

// faultLine is one send request of a load run.
type faultLine struct {
	kind string // 4 hex digits, the start of the token: selects the fault
	env  string // "" = the app's default (sandbox)
	// filled in by pipeline:
	id, token string
}

// faultLoad describes a load run: conns connections, perConn send lines on
// each, written without waiting for answers.
type faultLoad struct {
	conns, perConn int
	// pace, if set, is a pause after each line written (to spread a run
	// over time so that faults land mid-stream).
	pace time.Duration
	// mk returns the kind and env of line i of connection ci.
	mk func(ci, i int) faultLine
	// midAt and mid: once midAt answers have arrived in total, mid runs
	// (in its own goroutine, concurrently with the rest of the run).
	midAt int
	mid   func()
}

// faultRun is what a load run wrote and read.
type faultRun struct {
	lines   [][]faultLine
	answers [][]map[string]any
	wrote   [][]time.Time // when each line was written
	got     [][]time.Time // when each answer was read
	midDone chan struct{}
}

func (r *faultRun) each(f func(l faultLine, m map[string]any, wrote, got time.Time)) {
	for ci := range r.lines {
		for i, l := range r.lines[ci] {
			if i < len(r.answers[ci]) {
				f(l, r.answers[ci][i], r.wrote[ci][i], r.got[ci][i])
			}
		}
	}
}

func faultToken(kind string, ci, i int) string { return fmt.Sprintf("%s%02x%04x", kind, ci, i) }

// pipeline runs ld against the harness's daemon and checks framing: one
// answer per line, ids in request order, then the trailing ping. Failures
// are reported with t.Errorf; the run carries whatever was read.
func (h *harness) pipeline(ld faultLoad) *faultRun {
	t := h.t
	t.Helper()
	r := &faultRun{
		lines:   make([][]faultLine, ld.conns),
		answers: make([][]map[string]any, ld.conns),
		wrote:   make([][]time.Time, ld.conns),
		got:     make([][]time.Time, ld.conns),
		midDone: make(chan struct{}),
	}
	conns := make([]*conn, ld.conns)
	for ci := range ld.conns {
		conns[ci] = h.dial()
		r.lines[ci] = make([]faultLine, ld.perConn)
		r.wrote[ci] = make([]time.Time, ld.perConn)
		r.got[ci] = make([]time.Time, ld.perConn)
		for i := range ld.perConn {
			l := ld.mk(ci, i)
			l.id = fmt.Sprintf("%d-%d", ci, i)
			l.token = faultToken(l.kind, ci, i)
			r.lines[ci][i] = l
		}
	}
	var total atomic.Int64
	var midOnce sync.Once
	if ld.mid == nil {
		close(r.midDone)
	}
	var wg sync.WaitGroup
	for ci, c := range conns {
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			for i, l := range r.lines[ci] {
				line := fmt.Sprintf(`{"id":%q,"token":%q,"alert":"x"`, l.id, l.token)
				if l.env != "" {
					line += fmt.Sprintf(`,"env":%q`, l.env)
				}
				r.wrote[ci][i] = time.Now()
				if err := c.cn.WriteLine([]byte(line + "}")); err != nil {
					t.Errorf("conn %d: writing line %d: %v", ci, i, err)
					return
				}
				if ld.pace > 0 {
					time.Sleep(ld.pace)
				}
			}
			if err := c.cn.WriteLine(fmt.Appendf(nil, `{"id":"end-%d","op":"ping"}`, ci)); err != nil {
				t.Errorf("conn %d: writing the final ping: %v", ci, err)
			}
		}()
		go func() { // reader
			defer wg.Done()
			for i := range ld.perConn {
				m, err := readAnswer(c)
				if err != nil {
					t.Errorf("conn %d: answer %d of %d: %v", ci, i, ld.perConn, err)
					return
				}
				r.got[ci][i] = time.Now()
				if want := r.lines[ci][i].id; m["id"] != want {
					t.Errorf("conn %d: answer %d has id %v, want %s (lost, duplicated or out of order): %v", ci, i, m["id"], want, m)
					return
				}
				r.answers[ci] = append(r.answers[ci], m)
				if n := total.Add(1); ld.mid != nil && n >= int64(ld.midAt) {
					midOnce.Do(func() { go func() { defer close(r.midDone); ld.mid() }() })
				}
			}
			m, err := readAnswer(c)
			if err != nil {
				t.Errorf("conn %d: reading the final ping's answer: %v", ci, err)
				return
			}
			if m["id"] != fmt.Sprintf("end-%d", ci) || m["pong"] != true {
				t.Errorf("conn %d: after %d answers, got %v instead of the final pong (an extra answer?)", ci, ld.perConn, m)
			}
		}()
	}
	wg.Wait()
	if ld.mid != nil {
		midOnce.Do(func() {
			t.Errorf("the load ended before %d answers: the mid-stream fault was never injected", ld.midAt)
			close(r.midDone)
		})
		<-r.midDone
	}
	return r
}

func readAnswer(c *conn) (map[string]any, error) {
	line, err := c.cn.ReadLine()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("answer %q is not JSON: %w", line, err)
	}
	return m, nil
}

// faultErrRetryable is the "retryable" each protocol error code that a send
// may legitimately end with under faults must carry.
var faultErrRetryable = map[string]bool{
	ipc.CodeTimeout:      true,
	ipc.CodeUnavailable:  true,
	ipc.CodeShuttingDown: true,
	ipc.CodeQueueFull:    true,
}

// classify checks that m is a well-formed answer and names it: "ok", an
// APNs refusal "503 ServiceUnavailable", or a protocol error code.
func classify(t *testing.T, where string, m map[string]any) string {
	t.Helper()
	switch {
	case m["ok"] == true:
		id, _ := m["apns_id"].(string)
		if m["status"] != float64(200) || !apns.ValidUUID(id) || m["error"] != nil {
			t.Errorf("%s: malformed ok answer %v", where, m)
		}
		return "ok"
	case m["ok"] == false && m["status"] != nil:
		status, _ := m["status"].(float64)
		reason, _ := m["reason"].(string)
		id, _ := m["apns_id"].(string)
		if reason == "" || !apns.ValidUUID(id) {
			t.Errorf("%s: APNs refusal without reason or apns_id: %v", where, m)
		}
		if want := apns.Retryable(int(status), reason); m["retryable"] != want {
			t.Errorf("%s: %v: retryable = %v, want %v", where, m, m["retryable"], want)
		}
		if _, has := m["timestamp"]; has != (status == 410) {
			t.Errorf("%s: timestamp present = %v for status %v: %v", where, has, status, m)
		}
		return fmt.Sprintf("%d %s", int(status), reason)
	case m["ok"] == false && m["error"] != nil:
		code, _ := m["error"].(string)
		want, known := faultErrRetryable[code]
		if !known {
			t.Errorf("%s: unexpected error code: %v", where, m)
		} else if m["retryable"] != want {
			t.Errorf("%s: %s must carry retryable:%v: %v", where, code, want, m)
		}
		if msg, _ := m["message"].(string); msg == "" {
			t.Errorf("%s: error without a message: %v", where, m)
		}
		return code
	}
	t.Errorf("%s: neither ok, an APNs refusal nor an error: %v", where, m)
	return "?"
}

// faultAttempt is one attempt of a notification as a stand-in saw it.
type faultAttempt struct {
	apnstest.Request
	env string // the stand-in that received it
}

// attempts groups the valid requests both stand-ins received by token, in
// arrival order.
func (h *harness) attempts() map[string][]faultAttempt {
	out := map[string][]faultAttempt{}
	for env, s := range map[string]*apnstest.Server{"sandbox": h.sandbox, "production": h.production} {
		for _, r := range s.Requests() {
			out[r.DeviceToken] = append(out[r.DeviceToken], faultAttempt{r, env})
		}
	}
	for _, rs := range out {
		slices.SortStableFunc(rs, func(a, b faultAttempt) int { return a.Received.Compare(b.Received) })
	}
	return out
}

// sameApnsID checks that every attempt of one notification carried the
// same apns-id, the one the answer reports, and went to env (the default
// environment when env is "").
func sameApnsID(t *testing.T, l faultLine, rs []faultAttempt, m map[string]any) {
	t.Helper()
	env := cmp.Or(l.env, "sandbox")
	for _, r := range rs {
		if r.ApnsID != rs[0].ApnsID {
			t.Errorf("%s: retried with a different apns-id: %s then %s", l.id, rs[0].ApnsID, r.ApnsID)
			return
		}
		if r.env != env {
			t.Errorf("%s: an attempt went to %s, want %s", l.id, r.env, env)
			return
		}
	}
	if id, ok := m["apns_id"]; ok && len(rs) > 0 && id != rs[0].ApnsID {
		t.Errorf("%s: answer has apns_id %v, the stand-in saw %s", l.id, id, rs[0].ApnsID)
	}
}

// firstSeen reports, safely for concurrent Responders, how many times a
// token has been seen (1 on the first attempt).
type firstSeen struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *firstSeen) attempt(token string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[token]++
	return f.n[token]
}

func (h *harness) setResponders(f apnstest.Responder) {
	h.sandbox.SetResponder(f)
	h.production.SetResponder(f)
}

// warmUp sends one notification to each environment, so that both have a
// connection that has answered, and returns the stand-ins' Accepted total.
func (h *harness) warmUp() int {
	h.t.Helper()
	c := h.dial()
	for _, env := range []string{"sandbox", "production"} {
		if m := c.do(fmt.Sprintf(`{"token":"aa","alert":"x","env":%q}`, env)); m["ok"] != true {
			h.t.Fatalf("warm-up %s: %v", env, m)
		}
	}
	return h.accepted()
}

func (h *harness) accepted() int { return h.sandbox.Accepted() + h.production.Accepted() }

// envStatus returns the status of one environment as the status op reports it.
func envStatus(c *conn, env string) ipc.EnvStatus {
	c.t.Helper()
	m := c.do(`{"op":"status"}`)
	b, _ := json.Marshal(m)
	var r ipc.Response
	if err := json.Unmarshal(b, &r); err != nil || r.StatusReport == nil {
		c.t.Fatalf("status answer %v: %v", m, err)
	}
	for _, a := range r.Apps {
		for _, e := range a.Envs {
			if e.Env == env {
				return e
			}
		}
	}
	c.t.Fatalf("status has no env %q: %v", env, m)
	return ipc.EnvStatus{}
}

// 1. APNs error answers on a fraction of requests, under load. Transient ones
// (500, 503, 429 TooManyRequests, RST_STREAM(REFUSED_STREAM), on the first
// one or two attempts) are
// retried with the same apns-id and end ok; a transient error that never
// clears ends, after the policy's maxAttempts, as that error with
// retryable:true; permanent ones (400, 403, 410, 413, and a 429 whose reason
// is not TooManyRequests) are answered at once and sent exactly once.
func TestFaultAPNsErrorsRetriedOrFinal(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	type kind struct {
		status int
		reason string
		fails  int // attempts answered with the error; -1: every attempt
		action apnstest.Action
	}
	kinds := map[string]kind{
		"0000": {200, "", 0, 0},
		"0500": {500, "InternalServerError", 1, 0},
		"0503": {503, "ServiceUnavailable", 1, 0},
		"0429": {429, "TooManyRequests", 1, 0},
		"5032": {503, "ServiceUnavailable", 2, 0},
		// RST_STREAM(REFUSED_STREAM): "not processed, safe to retry".
		"0e57": {0, "", 1, apnstest.ActionResetStream},
		"503f": {503, "ServiceUnavailable", -1, 0},
		"0400": {400, "BadDeviceToken", -1, 0},
		"0403": {403, "Forbidden", -1, 0},
		"0410": {410, "Unregistered", -1, 0},
		"0413": {413, "PayloadTooLarge", -1, 0},
		"4291": {429, apns.ReasonTooManyProviderTokenUpdates, -1, 0},
	}
	names := slices.Sorted(maps.Keys(kinds))
	var seen firstSeen
	h.setResponders(func(r *apnstest.Request) apnstest.Reply {
		k := kinds[r.DeviceToken[:4]]
		n := seen.attempt(r.DeviceToken)
		if k.fails < 0 || n <= k.fails {
			rep := apnstest.Reply{Status: k.status, Reason: k.reason, Delay: time.Millisecond, Action: k.action}
			if k.status == 410 {
				rep.Timestamp = r.Received.UnixMilli()
			}
			return rep
		}
		return apnstest.Reply{Delay: time.Millisecond}
	})
	run := h.pipeline(faultLoad{conns: 4, perConn: 200, mk: func(ci, i int) faultLine {
		l := faultLine{kind: names[(i+ci)%len(names)]}
		if i%4 == 0 {
			l.env = "production"
		}
		return l
	}})

	att := h.attempts()
	ok, failed, wantRetries := 0, 0, 0
	counts := map[string]int{}
	run.each(func(l faultLine, m map[string]any, _, _ time.Time) {
		k := kinds[l.kind]
		got := classify(t, l.id, m)
		counts[l.kind+" "+got]++
		rs := att[l.token]
		sameApnsID(t, l, rs, m)
		switch {
		case k.fails >= 0: // transient or none: must end ok
			ok++
			wantRetries += k.fails
			if got != "ok" {
				t.Errorf("%s (%d %s on %d attempt(s)): got %v, want ok after a retry", l.id, k.status, k.reason, k.fails, m)
			}
			if len(rs) != k.fails+1 {
				t.Errorf("%s: the stand-in saw %d attempts, want %d", l.id, len(rs), k.fails+1)
			}
		case apns.Retryable(k.status, k.reason): // transient that never clears
			failed++
			wantRetries += maxAttempts - 1
			if got != fmt.Sprintf("%d %s", k.status, k.reason) || m["retryable"] != true {
				t.Errorf("%s: got %v, want %d %s retryable:true", l.id, m, k.status, k.reason)
			}
			if len(rs) != maxAttempts {
				t.Errorf("%s: the stand-in saw %d attempts, want maxAttempts = %d", l.id, len(rs), maxAttempts)
			}
		default: // permanent
			failed++
			if got != fmt.Sprintf("%d %s", k.status, k.reason) || m["retryable"] != false {
				t.Errorf("%s: got %v, want %d %s retryable:false", l.id, m, k.status, k.reason)
			}
			if len(rs) != 1 {
				t.Errorf("%s: permanent error %d %s: the stand-in saw it %d times, want once (never retried)", l.id, k.status, k.reason, len(rs))
			}
		}
	})
	if got := h.accepted(); got != ok {
		t.Errorf("stand-ins accepted %d, the daemon answered ok %d times", got, ok)
	}
	q := h.d.Status().Queue
	if q.Retries != uint64(wantRetries) || q.Sent != uint64(ok) || q.Failed != uint64(failed) {
		t.Errorf("counters: retries %d sent %d failed %d, want %d %d %d", q.Retries, q.Sent, q.Failed, wantRetries, ok, failed)
	}
	t.Logf("answers by kind: %v", counts)
}

// 2. The stand-in closes connections abruptly (ActionCloseConn, no GOAWAY)
// while many requests are in flight on them, on both environments. Every
// request caught on a dying connection is retried, with its apns-id, on
// another connection, and every request ends ok.
//
// The at-least-once edge: when a connection dies, a 200 that the stand-in
// already wrote to the socket may never reach the daemon (the TCP close can
// discard it). The daemon cannot tell such a request from one APNs never
// saw, so it sends it again with the same apns-id and APNs accepts it twice.
// Accepted() (200s written) can therefore exceed the daemon's ok count, but
// only by duplicate deliveries: ok <= Accepted <= ok + (attempts beyond the
// first). Losing a notification would break the lower bound; a retry that
// was not needed shows up in the upper one.
func TestFaultConnectionClosedMidStream(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// At most 3 closes per stand-in, each of a different connection: a
	// request is then caught on at most 3 dying connections, within the
	// policy's 5 attempts, so all must succeed.
	const closesPerEnv = 3
	var sbBudget, prodBudget atomic.Int32
	sbBudget.Store(closesPerEnv)
	prodBudget.Store(closesPerEnv)
	var seen firstSeen
	var mu sync.Mutex
	doomed := map[*apnstest.Server]map[uint64]bool{h.sandbox: {}, h.production: {}}
	responder := func(s *apnstest.Server, budget *atomic.Int32) apnstest.Responder {
		return func(r *apnstest.Request) apnstest.Reply {
			// 3..12 ms: dozens of requests are in flight on each connection.
			d := time.Duration(3+int(r.ApnsID[0])%10) * time.Millisecond
			first := seen.attempt(r.DeviceToken) == 1
			if strings.HasPrefix(r.DeviceToken, "dead") && first {
				mu.Lock()
				defer mu.Unlock()
				if !doomed[s][r.ConnID] && budget.Load() > 0 {
					budget.Add(-1)
					doomed[s][r.ConnID] = true
					return apnstest.Reply{Delay: d, Action: apnstest.ActionCloseConn}
				}
			}
			return apnstest.Reply{Delay: d}
		}
	}
	h.sandbox.SetResponder(responder(h.sandbox, &sbBudget))
	h.production.SetResponder(responder(h.production, &prodBudget))
	run := h.pipeline(faultLoad{conns: 4, perConn: 200, pace: 500 * time.Microsecond, mk: func(ci, i int) faultLine {
		l := faultLine{kind: "0000"}
		if i%3 == 0 {
			l.env = "production"
		}
		if i%20 == 10 { // the killers: waves spread over the run
			l.kind = "dead"
			l.env = []string{"sandbox", "production"}[(i/20)%2]
		}
		return l
	}})

	att := h.attempts()
	ok, retried := 0, 0
	run.each(func(l faultLine, m map[string]any, _, _ time.Time) {
		if got := classify(t, l.id, m); got != "ok" {
			t.Errorf("%s: got %v, want ok (retried on a new connection)", l.id, m)
			return
		}
		ok++
		rs := att[l.token]
		if len(rs) == 0 {
			t.Errorf("%s: answered ok but the stand-in never saw it", l.id)
			return
		}
		sameApnsID(t, l, rs, m)
		if len(rs) > 1 {
			retried++
		}
		for k := 1; k < len(rs); k++ {
			if rs[k].ConnID == rs[k-1].ConnID {
				t.Errorf("%s: attempt %d went out on connection %d again, which had failed it", l.id, k+1, rs[k].ConnID)
			}
		}
	})
	for _, s := range []struct {
		name    string
		srv     *apnstest.Server
		budget  *atomic.Int32
		initial int
	}{{"sandbox", h.sandbox, &sbBudget, 1}, {"production", h.production, &prodBudget, 2}} {
		closes := closesPerEnv - int(s.budget.Load())
		if closes != closesPerEnv {
			t.Errorf("%s: only %d connection closes injected, want %d", s.name, closes, closesPerEnv)
		}
		if s.srv.Unanswered() < closes {
			t.Errorf("%s: %d unanswered requests, want at least the %d that closed their connection", s.name, s.srv.Unanswered(), closes)
		}
		if s.srv.Connections() < s.initial+closes {
			t.Errorf("%s: %d connections in all, want at least %d (each close replaced)", s.name, s.srv.Connections(), s.initial+closes)
		}
	}
	extra := 0
	for _, rs := range att {
		extra += len(rs) - 1
	}
	if acc := h.accepted(); acc < ok || acc > ok+extra {
		t.Errorf("stand-ins accepted %d, daemon answered ok %d, attempts beyond the first %d: want ok <= accepted <= ok+extra", acc, ok, extra)
	}
	if retried == 0 {
		t.Error("no request was caught on a closing connection: the test tested nothing")
	}
	// The pool is whole again.
	c := h.dial()
	waitFor(t, func() bool {
		return envStatus(c, "sandbox").State == "up" && envStatus(c, "production").State == "up"
	})
	t.Logf("%d ok, %d retried after a connection close (%d extra attempts), accepted %d; connections: sandbox %d, production %d",
		ok, retried, extra, h.accepted(), h.sandbox.Connections(), h.production.Connections())
}

// 3. GOAWAY, both per request (ActionGoAway, answered 200 itself) and on every
// connection at once (Server.GoAway) mid-stream. Streams the stand-in took
// are finished; streams opened after it are retried by the daemon; the pool
// replaces the connections. Zero failures, and no duplicate: GOAWAY is
// graceful, so Accepted() equals the ok count exactly.
func TestFaultGoAway(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// At most 2 per stand-in, each on a different connection.
	const goAwaysPerEnv = 2
	var sbBudget, prodBudget atomic.Int32
	sbBudget.Store(goAwaysPerEnv)
	prodBudget.Store(goAwaysPerEnv)
	var seen firstSeen
	var mu sync.Mutex
	hit := map[*apnstest.Server]map[uint64]bool{h.sandbox: {}, h.production: {}}
	responder := func(s *apnstest.Server, budget *atomic.Int32) apnstest.Responder {
		return func(r *apnstest.Request) apnstest.Reply {
			d := time.Duration(2+int(r.ApnsID[0])%5) * time.Millisecond
			if strings.HasPrefix(r.DeviceToken, "60a0") && seen.attempt(r.DeviceToken) == 1 {
				mu.Lock()
				defer mu.Unlock()
				if !hit[s][r.ConnID] && budget.Load() > 0 {
					budget.Add(-1)
					hit[s][r.ConnID] = true
					return apnstest.Reply{Delay: d, Action: apnstest.ActionGoAway, Reason: "Maintenance"}
				}
			}
			return apnstest.Reply{Delay: d}
		}
	}
	h.sandbox.SetResponder(responder(h.sandbox, &sbBudget))
	h.production.SetResponder(responder(h.production, &prodBudget))
	var sbBefore, prodBefore int
	var goAwayAt time.Time
	run := h.pipeline(faultLoad{conns: 4, perConn: 200, pace: 500 * time.Microsecond,
		mk: func(ci, i int) faultLine {
			l := faultLine{kind: "0000"}
			if i%3 == 0 {
				l.env = "production"
			}
			if i%20 == 10 { // waves spread over the run
				l.kind = "60a0"
				l.env = []string{"sandbox", "production"}[(i/20)%2]
			}
			return l
		},
		midAt: 400,
		mid: func() {
			sbBefore, prodBefore = h.sandbox.Connections(), h.production.Connections()
			goAwayAt = time.Now()
			h.sandbox.GoAway("")
			h.production.GoAway("")
		},
	})
	ok := 0
	var slowest time.Duration
	att := h.attempts()
	run.each(func(l faultLine, m map[string]any, wrote, got time.Time) {
		if c := classify(t, l.id, m); c != "ok" {
			t.Errorf("%s: got %v, want ok", l.id, m)
			return
		}
		ok++
		sameApnsID(t, l, att[l.token], m)
		slowest = max(slowest, got.Sub(wrote))
	})
	if acc := h.accepted(); acc != ok {
		t.Errorf("stand-ins accepted %d, daemon answered ok %d: a GOAWAY lost or duplicated a notification", acc, ok)
	}
	if n := 2*goAwaysPerEnv - int(sbBudget.Load()) - int(prodBudget.Load()); n != 2*goAwaysPerEnv {
		t.Errorf("only %d ActionGoAway injected, want %d", n, 2*goAwaysPerEnv)
	}
	if h.sandbox.Connections() < 1+goAwaysPerEnv || h.production.Connections() < 2+goAwaysPerEnv {
		t.Errorf("connections: sandbox %d (want >= %d), production %d (want >= %d): GOAWAY'd connections not replaced",
			h.sandbox.Connections(), 1+goAwaysPerEnv, h.production.Connections(), 2+goAwaysPerEnv)
	}
	// After Server.GoAway, new sends go out on connections opened after it.
	after := h.pipeline(faultLoad{conns: 2, perConn: 30, mk: func(ci, i int) faultLine {
		return faultLine{kind: "a000", env: []string{"sandbox", "production"}[i%2]}
	}})
	att = h.attempts()
	after.each(func(l faultLine, m map[string]any, _, _ time.Time) {
		if classify(t, l.id, m) != "ok" {
			t.Errorf("after GOAWAY, %s: %v", l.id, m)
			return
		}
		before := sbBefore
		if l.env == "production" {
			before = prodBefore
		}
		for _, r := range att[l.token] {
			if r.ConnID <= uint64(before) {
				t.Errorf("after GOAWAY, %s went out on connection %d, which had been sent GOAWAY (ids <= %d)", l.id, r.ConnID, before)
			}
		}
	})
	t.Logf("%d ok; GOAWAY at %s; slowest answer %s; connections: sandbox %d, production %d",
		ok, goAwayAt.Format("15:04:05.000"), slowest.Round(time.Millisecond), h.sandbox.Connections(), h.production.Connections())
}

// 4. A window of 503s. Shorter than request_timeout (but longer than one
// retry): every request ends ok, those that met the window after several
// attempts with the same apns-id. Longer than request_timeout: every request
// ends with the 503 (retryable:true), or timeout if its deadline fell during
// a send (a retry), with the same apns-id on every attempt; none is lost;
// after the window sends succeed again.
func TestFaultServiceUnavailableWindow(t *testing.T) {
	unavailable := apnstest.Reply{Status: 503, Reason: "ServiceUnavailable"}
	quick := func(*apnstest.Request) apnstest.Reply { return apnstest.Reply{Delay: time.Millisecond} }

	t.Run("shorter", func(t *testing.T) {
		h := newHarness(t, harnessOpts{top: `request_timeout = "4s"`})
		base := h.warmUp()
		// The window opens when the first request of the load arrives, so
		// that it is met whatever the start-up took.
		const span = 500 * time.Millisecond
		var once sync.Once
		var from time.Time
		var win apnstest.Responder
		h.setResponders(func(r *apnstest.Request) apnstest.Reply {
			once.Do(func() { from = r.Received; win = apnstest.Window(from, from.Add(span), unavailable, quick) })
			return win(r)
		})
		run := h.pipeline(faultLoad{conns: 4, perConn: 100, mk: func(ci, i int) faultLine {
			return faultLine{kind: "0000", env: []string{"sandbox", "production"}[i%2]}
		}})
		once.Do(func() { t.Fatal("no request reached the stand-ins") })
		to := from.Add(span)
		att := h.attempts()
		ok, hit, most := 0, 0, 0
		run.each(func(l faultLine, m map[string]any, _, _ time.Time) {
			if classify(t, l.id, m) != "ok" {
				t.Errorf("%s: got %v, want ok once the window closed", l.id, m)
				return
			}
			ok++
			rs := att[l.token]
			sameApnsID(t, l, rs, m)
			if len(rs) > 0 && !rs[0].Received.Before(from) && rs[0].Received.Before(to) {
				hit++
				if len(rs) < 2 || rs[len(rs)-1].Received.Before(to) {
					t.Errorf("%s: first sent in the window, %d attempt(s), last at %s (window ends %s)", l.id, len(rs), rs[len(rs)-1].Received.Sub(from), to.Sub(from))
				}
			}
			most = max(most, len(rs))
		})
		if hit == 0 {
			t.Fatal("no request met the window: the test tested nothing")
		}
		if most < 3 {
			t.Errorf("at most %d attempts per request: the window should outlast one retry", most)
		}
		if most > maxAttempts {
			t.Errorf("%d attempts for one request, more than maxAttempts %d", most, maxAttempts)
		}
		if acc := h.accepted() - base; acc != ok {
			t.Errorf("stand-ins accepted %d, daemon answered ok %d", acc, ok)
		}
		t.Logf("%d ok, %d met the window, up to %d attempts, retries %d", ok, hit, most, h.d.Status().Queue.Retries)
	})

	t.Run("longer", func(t *testing.T) {
		// Every request must reach the stand-in before its deadline and
		// every attempt fall inside the window: on a loaded 2-core machine
		// a request can wait a few hundred milliseconds in the client's
		// queue, so the deadline leaves room for that and the window for
		// the slowest deadline.
		const timeout = 1200 * time.Millisecond
		h := newHarness(t, harnessOpts{top: fmt.Sprintf("request_timeout = %q", timeout)})
		base := h.warmUp()
		from := time.Now()
		to := from.Add(4 * time.Second)
		h.setResponders(apnstest.Window(from, to, unavailable, quick))
		run := h.pipeline(faultLoad{conns: 4, perConn: 60, mk: func(ci, i int) faultLine {
			return faultLine{kind: "0000", env: []string{"sandbox", "production"}[i%2]}
		}})
		att := h.attempts()
		counts := map[string]int{}
		single := 0
		run.each(func(l faultLine, m map[string]any, _, _ time.Time) {
			c := classify(t, l.id, m)
			counts[c]++
			if c != "503 ServiceUnavailable" && c != ipc.CodeTimeout {
				t.Errorf("%s: got %v, want the 503 (or timeout), retryable", l.id, m)
			}
			if m["retryable"] != true {
				t.Errorf("%s: not retryable: %v", l.id, m)
			}
			rs := att[l.token]
			sameApnsID(t, l, rs, m)
			if len(rs) < 1 || len(rs) > maxAttempts {
				t.Errorf("%s: %d attempts, want 1..%d", l.id, len(rs), maxAttempts)
			}
			if len(rs) == 1 {
				// Retrying needs room before the deadline; on a starved
				// machine the retry itself can be what the deadline cuts.
				single++
			}
			if len(rs) > 0 && !rs[len(rs)-1].Received.Before(to) {
				t.Fatalf("%s: an attempt fell after the window: the run was too slow for this test", l.id)
			}
		})
		if r := h.d.Status().Queue.Retries; r == 0 || single == len(att)-1 {
			t.Errorf("%d retries, %d of %d notifications sent once: the 503s were not retried", r, single, len(att)-1)
		}
		if counts["503 ServiceUnavailable"] == 0 {
			t.Errorf("no answer carried the 503: %v", counts)
		}
		if n := h.accepted() - base; n != 0 {
			t.Errorf("stand-ins accepted %d during an outage", n)
		}
		// The window is a span of wall-clock time: wait it out, then
		// sending works again.
		time.Sleep(time.Until(to))
		h.relax()
		after := h.pipeline(faultLoad{conns: 2, perConn: 20, mk: func(ci, i int) faultLine {
			return faultLine{kind: "a000", env: []string{"sandbox", "production"}[i%2]}
		}})
		ok := 0
		after.each(func(l faultLine, m map[string]any, _, _ time.Time) {
			if classify(t, l.id, m) == "ok" {
				ok++
			} else {
				t.Errorf("after the outage, %s: %v", l.id, m)
			}
		})
		if acc := h.accepted() - base; acc != ok {
			t.Errorf("stand-ins accepted %d, daemon answered ok %d", acc, ok)
		}
		t.Logf("during the outage: %v, %d sent only once; sandbox stand-in: %d received, %d valid, %d connections; production: %d received, %d valid, %d connections",
			counts, single, h.sandbox.Count(), len(h.sandbox.Requests()), h.sandbox.Connections(), h.production.Count(), len(h.production.Requests()), h.production.Connections())
	})
}

// relax rewrites the config's request_timeout to 10s and reloads it: the
// phase of a test after an injected fault checks that sending works again,
// and must not depend on a short deadline being met on a loaded machine.
func (h *harness) relax() {
	h.t.Helper()
	b, err := os.ReadFile(h.cfgPath)
	must(h.t, err)
	cfg := regexp.MustCompile(`(?m)^request_timeout = ".*"$`).ReplaceAll(b, []byte(`request_timeout = "10s"`))
	must(h.t, os.WriteFile(h.cfgPath, cfg, 0o644))
	if _, err := h.d.Reload(context.Background(), nil); err != nil {
		h.t.Fatalf("reload with a longer request_timeout: %v", err)
	}
}

// 5. The stand-in refuses TLS handshakes and its connections are dropped: the
// sandbox environment is down. Requests for it wait for a connection until
// their deadline and then get unavailable (or timeout), retryable, never
// earlier; production keeps working meanwhile; no sandbox request reaches
// APNs. When handshakes are allowed again the pool reconnects by itself,
// status shows sandbox down and then up, and sends succeed.
func TestFaultHandshakeRefusal(t *testing.T) {
	const timeout = 400 * time.Millisecond
	h := newHarness(t, harnessOpts{top: fmt.Sprintf("request_timeout = %q", timeout)})
	c := h.dial()
	if m := c.do(`{"token":"aa","alert":"x"}`); m["ok"] != true {
		t.Fatalf("warm-up: %v", m)
	}
	waitFor(t, func() bool { return envStatus(c, "sandbox").State == "up" })

	h.sandbox.SetRefuseHandshakes(true)
	h.sandbox.DropConnections()
	// Down, and status names the TLS refusal (recorded once the dial that
	// the stand-in refused has returned).
	waitFor(t, func() bool {
		st := envStatus(c, "sandbox")
		return st.State == "down" && strings.Contains(st.LastConnErr, "tls") && h.sandbox.RefusedHandshakes() > 0
	})
	sbCount := h.sandbox.Count()
	prodAccepted := h.production.Accepted()
	run := h.pipeline(faultLoad{conns: 4, perConn: 50, mk: func(ci, i int) faultLine {
		if i%5 == 0 {
			return faultLine{kind: "0000", env: "production"}
		}
		return faultLine{kind: "0000", env: "sandbox"}
	}})
	prodOK := 0
	counts := map[string]int{}
	run.each(func(l faultLine, m map[string]any, wrote, got time.Time) {
		c := classify(t, l.id, m)
		if l.env == "production" {
			if c != "ok" {
				t.Errorf("%s: production must not be affected: %v", l.id, m)
			}
			prodOK++
			return
		}
		counts[c]++
		if c != ipc.CodeUnavailable && c != ipc.CodeTimeout {
			t.Errorf("%s: got %v, want unavailable or timeout", l.id, m)
		}
		if waited := got.Sub(wrote); waited < timeout {
			t.Errorf("%s: answered %s after it was written, before its %s deadline", l.id, waited, timeout)
		}
	})
	if n := h.sandbox.Count(); n != sbCount {
		t.Errorf("the sandbox stand-in received %d requests while refusing handshakes", n-sbCount)
	}
	if got := h.production.Accepted() - prodAccepted; got != prodOK {
		t.Errorf("production accepted %d, daemon answered ok %d", got, prodOK)
	}
	if st := envStatus(c, "sandbox"); st.State != "down" {
		t.Errorf("sandbox state %q during the refusal, want down", st.State)
	}

	h.sandbox.SetRefuseHandshakes(false)
	waitFor(t, func() bool { return envStatus(c, "sandbox").State == "up" })
	h.relax()
	sbAccepted := h.sandbox.Accepted()
	after := h.pipeline(faultLoad{conns: 2, perConn: 50, mk: func(ci, i int) faultLine {
		return faultLine{kind: "a000", env: "sandbox"}
	}})
	ok := 0
	after.each(func(l faultLine, m map[string]any, _, _ time.Time) {
		if classify(t, l.id, m) != "ok" {
			t.Errorf("after the refusal ended, %s: %v", l.id, m)
			return
		}
		ok++
	})
	if got := h.sandbox.Accepted() - sbAccepted; got != ok {
		t.Errorf("sandbox accepted %d after recovery, daemon answered ok %d", got, ok)
	}
	t.Logf("during the refusal: %v (%d handshakes refused); production ok %d; after: %d ok", counts, h.sandbox.RefusedHandshakes(), prodOK, ok)
}

// 7. SETTINGS_MAX_CONCURRENT_STREAMS = 1 (what APNs lowers it to after an
// error): heavy pipelined load still completes, in order, all ok, and never
// more than one stream is open on a connection. In the second case the limit
// is lowered while the daemon runs: the connections are replaced (GOAWAY)
// and the new ones advertise 1.
func TestStreamLimitOneUnderLoad(t *testing.T) {
	check := func(t *testing.T, h *harness, run *faultRun) {
		ok := 0
		run.each(func(l faultLine, m map[string]any, _, _ time.Time) {
			if classify(t, l.id, m) != "ok" {
				t.Errorf("%s: %v", l.id, m)
				return
			}
			ok++
		})
		if acc := h.accepted(); acc != ok {
			t.Errorf("stand-ins accepted %d, daemon answered ok %d", acc, ok)
		}
		// A stream over the limit would be refused by the stand-in (and
		// never counted in MaxConcurrent): it would show as a retry.
		if r := h.d.Status().Queue.Retries; r != 0 {
			t.Errorf("%d retries: the daemon opened streams over the limit", r)
		}
		if a, b := h.sandbox.MaxConcurrent(), h.production.MaxConcurrent(); a != 1 || b != 1 {
			t.Errorf("most streams at once on one connection: sandbox %d, production %d; want 1", a, b)
		}
	}
	load := faultLoad{conns: 4, perConn: 150, mk: func(ci, i int) faultLine {
		return faultLine{kind: "0000", env: []string{"sandbox", "production"}[i%2]}
	}}
	delay := func(r *apnstest.Request) apnstest.Reply {
		return apnstest.Reply{Delay: time.Duration(r.ApnsID[0]%2) * time.Millisecond}
	}

	t.Run("from the start", func(t *testing.T) {
		h := newHarness(t, harnessOpts{maxStreams: 1})
		h.setResponders(delay)
		check(t, h, h.pipeline(load))
	})

	t.Run("lowered", func(t *testing.T) {
		h := newHarness(t, harnessOpts{maxStreams: 100})
		h.setResponders(delay)
		h.pipeline(load)
		if h.sandbox.MaxConcurrent() < 2 {
			t.Errorf("with a limit of 100, at most %d streams at once: the load does not pipeline", h.sandbox.MaxConcurrent())
		}
		sb, prod := h.sandbox.Connections(), h.production.Connections()
		for _, s := range []*apnstest.Server{h.sandbox, h.production} {
			s.SetMaxConcurrentStreams(1)
			s.GoAway("")
		}
		// Wait until only connections opened after the GOAWAY are open,
		// then count afresh.
		waitFor(t, func() bool {
			return h.sandbox.Connections() > sb && h.production.Connections() >= prod+2 &&
				h.sandbox.OpenConnections() == 1 && h.production.OpenConnections() == 2
		})
		h.sandbox.Reset()
		h.production.Reset()
		check(t, h, h.pipeline(load))
	})
}

// 6. Graceful shutdown of the real binary by a real SIGTERM, mid-stream, with
// several connections pipelining. Every request line that was written gets
// exactly one answer, in order: ok, or shutting_down (retryable). Requests in
// flight at the signal finish (their 300 ms is well within shutdown_timeout);
// those APNs holds beyond it are answered shutting_down at the deadline;
// those written after the signal are refused shutting_down. The process exits
// 0 within shutdown_timeout + 2 s and removes its socket.
//
// "Written" means the write(2) succeeded: once apnsd has drained, it shuts
// its sockets for reading. On a Unix stream socket, lines already queued are
// still read (and answered shutting_down) and any later write fails with
// EPIPE, so the client knows exactly which lines it must be answered.
func TestShutdownSIGTERMUnderLoad(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	bin := buildApnsd(t)
	const shutdownTimeout = 2 * time.Second
	sock := filepath.Join(h.dir, "p.sock")
	cfg := fmt.Sprintf(`request_timeout = "30s"
shutdown_timeout = %q
state_dir = %q
[socket]
path = %q
[[apps]]
name = "app"
topic = "com.example.app"
default_env = "sandbox"
  [apps.sandbox]
  cert_file = "sb.crt"
  key_file = "sb.key"
  endpoint = %q
  ca_file = "ca.pem"
  [apps.production]
  cert_file = "prod.pem"
  endpoint = %q
  ca_file = "ca.pem"
  connections = 2
`, shutdownTimeout, filepath.Join(h.dir, "proc-state"), sock, h.sandbox.URL, h.production.URL)
	cfgPath := filepath.Join(h.dir, "proc.toml")
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	const slowKind = "5100"
	h.setResponders(func(r *apnstest.Request) apnstest.Reply {
		if strings.HasPrefix(r.DeviceToken, slowKind) {
			return apnstest.Reply{Delay: time.Minute} // outlasts the shutdown deadline
		}
		return apnstest.Reply{Delay: 300 * time.Millisecond}
	})

	var logBuf syncBuffer
	cmd := exec.Command(bin, "-config", cfgPath, "-log-format", "text")
	cmd.Stderr = &logBuf
	cmd.Stdout = &logBuf
	must(t, cmd.Start())
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := (&ipc.Client{Socket: sock}).Do(ctx, map[string]any{"op": "ping"})
		cancel()
		if err == nil && r.OK {
			break
		}
		select {
		case <-exited:
			t.Fatalf("apnsd exited before answering: %v\n%s", waitErr, logBuf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("apnsd did not answer on %s: %v\n%s", sock, err, logBuf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Each writer writes a line every 3 ms until apnsd stops reading (EPIPE),
	// well past the signal and the 2 s drain; perConn only bounds it.
	const conns, perConn = 5, 2000
	type connRun struct {
		written  int // lines whose write succeeded
		writeErr error
		answers  []map[string]any
		readErr  error
	}
	runs := make([]*connRun, conns)
	var wg sync.WaitGroup
	for ci := range conns {
		nc, err := net.Dial("unix", sock)
		must(t, err)
		t.Cleanup(func() { nc.Close() })
		nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		cr := &connRun{}
		runs[ci] = cr
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range perConn {
				kind := "0000"
				if i%15 == 7 {
					kind = slowKind
				}
				line := fmt.Sprintf(`{"id":"%d-%d","token":%q,"alert":"x"}`+"\n", ci, i, faultToken(kind, ci, i))
				if _, err := nc.Write([]byte(line)); err != nil {
					cr.writeErr = err
					return
				}
				cr.written++
				time.Sleep(3 * time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			br := bufio.NewReader(nc)
			for {
				line, err := br.ReadBytes('\n')
				if err != nil {
					if len(line) > 0 || !errors.Is(err, io.EOF) {
						cr.readErr = fmt.Errorf("%w (partial line %q)", err, line)
					}
					return
				}
				var m map[string]any
				if err := json.Unmarshal(line, &m); err != nil {
					cr.readErr = fmt.Errorf("answer %q: %w", line, err)
					return
				}
				cr.answers = append(cr.answers, m)
			}
		}()
	}
	// Mid-stream: once APNs has accepted 100 (answers wait in order behind
	// the slow ones), while the writers keep writing.
	waitFor(t, func() bool { return h.sandbox.Accepted() >= 100 })
	sigAt := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(time.Until(sigAt.Add(shutdownTimeout + 2*time.Second))):
		t.Errorf("apnsd still running %s after SIGTERM\n%s", shutdownTimeout+2*time.Second, logBuf.String())
		cmd.Process.Kill() // ends the readers
		<-exited
		wg.Wait()
		t.FailNow()
	}
	exitedIn := time.Since(sigAt)
	wg.Wait()
	if waitErr != nil {
		t.Errorf("apnsd exited with %v, want status 0\n%s", waitErr, logBuf.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}

	byToken := map[string]map[string]any{}
	counts := map[string]int{}
	okCount, written := 0, 0
	for ci, cr := range runs {
		written += cr.written
		if cr.readErr != nil {
			t.Errorf("conn %d: %v", ci, cr.readErr)
		}
		if len(cr.answers) != cr.written {
			t.Errorf("conn %d: %d lines written, %d answers (write stopped by: %v)", ci, cr.written, len(cr.answers), cr.writeErr)
		}
		if cr.written == perConn || cr.writeErr == nil {
			t.Errorf("conn %d: all %d lines were written: apnsd never stopped reading", ci, cr.written)
		}
		for i, m := range cr.answers {
			where := fmt.Sprintf("%d-%d", ci, i)
			if m["id"] != where {
				t.Errorf("conn %d: answer %d has id %v (lost, duplicated or out of order)", ci, i, m["id"])
				break
			}
			c := classify(t, where, m)
			counts[c]++
			switch c {
			case "ok":
				okCount++
			case ipc.CodeShuttingDown:
			default:
				t.Errorf("%s: got %v, want ok or shutting_down", where, m)
			}
			kind := slowKind
			if i%15 != 7 {
				kind = "0000"
			}
			byToken[faultToken(kind, ci, i)] = m
		}
	}
	// What reached APNs: in flight at the signal. Those with a 300 ms answer
	// finished; those held beyond the deadline were answered shutting_down.
	inFlight := 0
	for _, r := range h.sandbox.Requests() {
		m := byToken[r.DeviceToken]
		if m == nil {
			t.Errorf("token %s reached APNs but its request was never answered", r.DeviceToken)
			continue
		}
		if strings.HasPrefix(r.DeviceToken, slowKind) {
			if m["error"] != ipc.CodeShuttingDown {
				t.Errorf("token %s, held by APNs past the deadline: %v, want shutting_down", r.DeviceToken, m)
			}
			inFlight++
		} else if m["ok"] != true {
			t.Errorf("token %s was in flight and finished within the deadline: %v, want ok", r.DeviceToken, m)
		}
	}
	if inFlight == 0 || counts[ipc.CodeShuttingDown] <= inFlight {
		t.Errorf("want requests cut at the deadline and requests refused after the signal: %v, %d cut", counts, inFlight)
	}
	if acc := h.accepted(); acc != okCount {
		t.Errorf("stand-ins accepted %d, apnsd answered ok %d", acc, okCount)
	}
	t.Logf("%d lines written and answered: %v; %d held by APNs cut at the deadline; exited %s after SIGTERM",
		written, counts, inFlight, exitedIn.Round(time.Millisecond))
}

// buildApnsd builds cmd/apnsd into a temporary directory.
func buildApnsd(t *testing.T) string {
	t.Helper()
	// go test puts its own go first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build apnsd: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "apnsd")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/apnsd/apnsd/cmd/apnsd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/apnsd: %v\n%s", err, out)
	}
	return bin
}
