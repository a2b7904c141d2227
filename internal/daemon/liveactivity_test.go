package daemon

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// Live Activity start, update and end through the socket: validated by the
// daemon, sent with the .push-type.liveactivity topic.
func TestLiveActivityThroughSocket(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.dial()
	now := time.Now().Unix()
	for _, p := range []string{
		fmt.Sprintf(`{"aps":{"event":"start","timestamp":%d,"content-state":{"score":"0-0"},"attributes-type":"MatchAttributes","attributes":{"home":"A","away":"B"},"alert":{"title":"Kick-off","body":"A v B"},"input-push-token":1}}`, now),
		fmt.Sprintf(`{"aps":{"event":"update","timestamp":%d,"content-state":{"score":"1-0"},"stale-date":%d,"relevance-score":50}}`, now, now+3600),
		fmt.Sprintf(`{"aps":{"event":"end","timestamp":%d,"content-state":{"score":"2-1"},"dismissal-date":%d}}`, now, now+600),
	} {
		m := c.do(`{"token":"aa01","push_type":"liveactivity","payload":` + p + `}`)
		if m["ok"] != true {
			t.Errorf("%s: %v", p, m)
		}
	}
	reqs := h.sandbox.Requests()
	if len(reqs) != 3 {
		t.Fatalf("stand-in got %d requests, want 3", len(reqs))
	}
	for _, r := range reqs {
		if r.Topic != "com.example.app.push-type.liveactivity" || r.Header.Get("apns-push-type") != "liveactivity" {
			t.Errorf("topic %q, push type %q", r.Topic, r.Header.Get("apns-push-type"))
		}
	}
	for _, tc := range []struct{ aps, want string }{
		{`{"timestamp":1,"content-state":{}}`, "payload.aps.event: is required"},
		{fmt.Sprintf(`{"event":"begin","timestamp":%d,"content-state":{}}`, now), `"begin" must be one of update, end, start`},
		{`{"event":"update","content-state":{}}`, "payload.aps.timestamp"},
		{fmt.Sprintf(`{"event":"update","timestamp":%d,"content-state":{}}`, now*1000), "milliseconds"},
		{fmt.Sprintf(`{"event":"update","timestamp":%d}`, now), "payload.aps.content-state: is required"},
		{fmt.Sprintf(`{"event":"start","timestamp":%d,"content-state":{},"attributes":{},"alert":"x"}`, now), "payload.aps.attributes-type: is required"},
		{fmt.Sprintf(`{"event":"start","timestamp":%d,"content-state":{},"attributes-type":"T","alert":"x"}`, now), "payload.aps.attributes: is required"},
		{fmt.Sprintf(`{"event":"update","timestamp":%d,"content-state":{},"attributes-type":"T"}`, now), `only for event "start"`},
		{fmt.Sprintf(`{"event":"end","timestamp":%d,"dismissal-date":"tomorrow"}`, now), "payload.aps.dismissal-date"},
		{fmt.Sprintf(`{"event":"update","timestamp":%d,"content-state":{},"stale-date":%d}`, now, now*1000), "payload.aps.stale-date"},
	} {
		m := c.do(`{"token":"aa01","push_type":"liveactivity","payload":{"aps":` + tc.aps + `}}`)
		wantErr(t, m, ipc.CodeBadRequest)
		if msg, _ := m["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: message %q lacks %q", tc.aps, msg, tc.want)
		}
	}
	if n := h.sandbox.Count(); n != 3 {
		t.Errorf("stand-in got %d requests; refused Live Activities must not be sent", n)
	}
}
