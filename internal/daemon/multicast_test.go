package daemon

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/ipc"
)

// A multicast through the real socket: mixed answers from the stand-in and a
// malformed token, one answer line with an entry per token in order.
func TestMulticastMixedResultsInOrder(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.sandbox.SetResponder(apnstest.DemoResponder)
	c := h.dial()
	m := c.do(`{"id":"m1","tokens":["<AAAA 0001>","0410aa","0400aa","xyz","00ff"],"alert":"hi"}`)
	if m["id"] != "m1" || m["ok"] != false || m["sent"] != float64(2) || m["failed"] != float64(3) {
		t.Fatalf("answer %v: want ok:false, sent 2, failed 3", m)
	}
	res, _ := m["results"].([]any)
	if len(res) != 5 {
		t.Fatalf("results %v: want 5 entries", m["results"])
	}
	e := func(i int) map[string]any { return res[i].(map[string]any) }
	if e(0)["token"] != "aaaa0001" || e(0)["ok"] != true || e(0)["status"] != float64(200) || len(e(0)["apns_id"].(string)) != 36 {
		t.Errorf("entry 0: %v", e(0))
	}
	if e(1)["token"] != "0410aa" || e(1)["status"] != float64(410) || e(1)["reason"] != "Unregistered" || e(1)["timestamp"] == nil {
		t.Errorf("entry 1: %v", e(1))
	}
	if e(2)["token"] != "0400aa" || e(2)["status"] != float64(400) || e(2)["reason"] != "BadDeviceToken" || e(2)["retryable"] != false {
		t.Errorf("entry 2: %v", e(2))
	}
	if e(3)["token"] != "xyz" || e(3)["error"] != ipc.CodeInvalidToken || !strings.Contains(e(3)["message"].(string), "tokens[3]") || e(3)["retryable"] != false {
		t.Errorf("entry 3: %v", e(3))
	}
	if e(4)["token"] != "00ff" || e(4)["ok"] != true {
		t.Errorf("entry 4: %v", e(4))
	}
	if got := h.sandbox.Count(); got != 4 {
		t.Errorf("stand-in got %d requests, want 4 (the malformed token is never sent)", got)
	}
	ids := map[string]bool{}
	for _, r := range h.sandbox.Requests() {
		if ids[r.ApnsID] {
			t.Errorf("apns-id %s used twice", r.ApnsID)
		}
		ids[r.ApnsID] = true
	}
	// The connection stays usable, and all-good multicasts are ok.
	m = c.do(`{"tokens":["01","02"],"alert":"x"}`)
	if m["ok"] != true || m["sent"] != float64(2) || m["failed"] != float64(0) {
		t.Errorf("all good: %v", m)
	}
}

func TestMulticastRefusals(t *testing.T) {
	h := newHarness(t, harnessOpts{top: "queue_size = 5"})
	c := h.dial()
	many := make([]string, ipc.MaxMulticastTokens+1)
	for i := range many {
		many[i] = fmt.Sprintf("%04x", i)
	}
	b, _ := json.Marshal(many)
	for _, tc := range []struct{ line, code, msg string }{
		{`{"tokens":[],"alert":"x"}`, ipc.CodeBadRequest, "1 to 1000"},
		{`{"tokens":` + string(b) + `,"alert":"x"}`, ipc.CodeBadRequest, "got 1001"},
		{`{"tokens":["01"],"token":"02","alert":"x"}`, ipc.CodeBadRequest, "not several"},
		{`{"tokens":["01"],"apns_id":"6f1a2b3c-0000-4000-8000-000000000000","alert":"x"}`, ipc.CodeBadRequest, "own apns-id"},
		{`{"tokens":["01"]}`, ipc.CodeBadRequest, "nothing to send"},
		{`{"tokens":["01"],"app":"nope","alert":"x"}`, ipc.CodeUnknownApp, "nope"},
		{`{"tokens":["01","02","03","04","05","06"],"alert":"x"}`, ipc.CodeQueueFull, "6 notifications do not fit"},
		{`{"tokens":["01"],"payload":{"aps":{"alert":"` + strings.Repeat("x", 4100) + `"}}}`, ipc.CodePayloadTooLarge, "4096"},
	} {
		m := c.do(tc.line)
		wantErr(t, m, tc.code)
		if msg, _ := m["message"].(string); !strings.Contains(msg, tc.msg) {
			t.Errorf("%.60s: message %q lacks %q", tc.line, msg, tc.msg)
		}
		if _, has := m["results"]; has {
			t.Errorf("%.60s: a refused batch has results: %v", tc.line, m)
		}
	}
	if n := h.sandbox.Count(); n != 0 {
		t.Errorf("stand-in got %d requests from refused batches", n)
	}
	// Every token malformed: answered at once, nothing sent.
	m := c.do(`{"tokens":["q","0"],"alert":"x"}`)
	if m["ok"] != false || m["sent"] != float64(0) || m["failed"] != float64(2) {
		t.Errorf("all malformed: %v", m)
	}
}

func TestMulticastNoWait(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	m := c.do(`{"tokens":["01","02","03"],"alert":"x","wait":false}`)
	if m["ok"] != true || m["queued"] != float64(3) {
		t.Errorf("wait:false: %v, want {ok:true, queued:3}", m)
	}
	waitFor(t, func() bool { return h.sandbox.Accepted() == 3 })
	m = c.do(`{"tokens":["01","zz"],"alert":"x","wait":false}`)
	res, _ := m["results"].([]any)
	if m["ok"] != false || m["queued"] != float64(1) || m["failed"] != float64(1) || len(res) != 2 ||
		res[0].(map[string]any)["queued"] != true || res[1].(map[string]any)["error"] != ipc.CodeInvalidToken {
		t.Errorf("wait:false with a malformed token: %v", m)
	}
	waitFor(t, func() bool { return h.sandbox.Accepted() == 4 })
	// Single sends still answer queued:true.
	if m := c.do(`{"token":"01","alert":"x","wait":false}`); m["queued"] != true {
		t.Errorf("single wait:false: %v", m)
	}
}

// 1000 tokens of 64 hex digits fit the default line limit.
func TestMulticastFullBatchFitsDefaultLine(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	tokens := make([]string, ipc.MaxMulticastTokens)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("%064x", i+1)
	}
	b, _ := json.Marshal(map[string]any{"tokens": tokens, "alert": "x"})
	c := h.dial()
	m := c.do(string(b))
	if m["ok"] != true || m["sent"] != float64(1000) {
		t.Fatalf("1000 tokens (%d bytes): ok=%v sent=%v error=%v", len(b), m["ok"], m["sent"], m["message"])
	}
	res := m["results"].([]any)
	for i, r := range res {
		if r.(map[string]any)["token"] != tokens[i] {
			t.Fatalf("result %d is for %v, want %s", i, r.(map[string]any)["token"], tokens[i])
		}
	}
	if st := h.d.Status(); st.Queue.Depth != 0 || st.Queue.InFlight != 0 || st.Queue.Sent != 1000 {
		t.Errorf("status after the batch: %+v", st.Queue)
	}
}

// Without a spool (state_dir = ""), a wait:false multicast is refused as a
// whole, as a single wait:false send is; a broadcast never takes wait:false.
func TestMulticastNoWaitNeedsSpool(t *testing.T) {
	h := newHarness(t, harnessOpts{top: `state_dir = ""`})
	c := h.dial()
	m := c.do(`{"tokens":["01","02"],"alert":"x","wait":false}`)
	wantErr(t, m, ipc.CodeBadRequest)
	if _, has := m["results"]; has || !strings.Contains(m["message"].(string), "state_dir") {
		t.Errorf("no spool: %v", m)
	}
	m = c.do(`{"channel_id":"AAAA","payload":{"aps":{"event":"update","timestamp":1764000000,"content-state":{}}},"wait":false}`)
	wantErr(t, m, ipc.CodeBadRequest)
	if h.sandbox.Count() != 0 {
		t.Error("a refused request reached APNs")
	}
}
