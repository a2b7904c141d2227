package daemon

import (
	"fmt"
	"sync"
	"testing"

	"github.com/apnsd/apnsd/internal/apnstest"
)

// TestJobsRecycled: every job goes back to the pool exactly once, and only
// after its answer was written (a job recycled early would lose or mix up
// the answer its Response still carries). Through the real socket, with
// pipelined wait:true sends of mixed outcomes, wait:false sends,
// multicasts, and a client that hangs up without reading its answers.
func TestJobsRecycled(t *testing.T) {
	var mu sync.Mutex
	out := map[*job]int{} // issued minus recycled, per job
	issued, recycled := 0, 0
	jobIssued = func(j *job) {
		mu.Lock()
		out[j]++
		issued++
		mu.Unlock()
	}
	jobRecycled = func(j *job) {
		mu.Lock()
		if out[j]--; out[j] < 0 {
			t.Errorf("job %p recycled more often than handed out", j)
		}
		recycled++
		mu.Unlock()
	}
	// Cleared after the harness has shut the daemon down (cleanups run
	// last-registered first).
	t.Cleanup(func() { jobIssued, jobRecycled = nil, nil })

	h := newHarness(t, harnessOpts{})
	h.sandbox.SetResponder(apnstest.DemoResponder)
	c := h.dial()
	const n = 300
	want := func(i int) (token string, status float64) {
		switch i % 3 {
		case 1:
			return fmt.Sprintf("0410%04x", i), 410
		case 2:
			return fmt.Sprintf("0400%04x", i), 400
		}
		return fmt.Sprintf("aa%04x", i), 200
	}
	for i := range n {
		tok, _ := want(i)
		c.send(fmt.Sprintf(`{"id":%d,"token":"%s","alert":"x"}`, i, tok))
	}
	for i := range n {
		m := c.read()
		_, st := want(i)
		if m["id"] != float64(i) || m["status"] != st || (st == 200) != (m["ok"] == true) {
			t.Fatalf("answer %d: %v, want status %v", i, m, st)
		}
		if id, _ := m["apns_id"].(string); st == 200 && len(id) != 36 {
			t.Fatalf("answer %d: %v, want its apns_id", i, m)
		}
	}
	for i := range 20 {
		if m := c.do(fmt.Sprintf(`{"token":"bb%04x","alert":"x","wait":false}`, i)); m["queued"] != true {
			t.Fatalf("wait:false %d: %v", i, m)
		}
		if m := c.do(`{"tokens":["01","0410aa","02"],"alert":"x"}`); m["sent"] != float64(2) || m["failed"] != float64(1) {
			t.Fatalf("multicast %d: %v", i, m)
		}
	}
	gone := h.dial()
	for i := range 50 {
		gone.send(fmt.Sprintf(`{"id":%d,"token":"cc%04x","alert":"x"}`, i, i))
	}
	gone.cn.Close()

	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return h.d.pending.Load() == 0 && recycled == issued && issued >= n+20+3*20
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d jobs handed out, %d recycled, %d distinct", issued, recycled, len(out))
}
