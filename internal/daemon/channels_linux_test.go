package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/ipc"
)

// Who may manage channels and broadcast, played by other users: every
// channel op and broadcast needs the app's allow-lists (as a send);
// channel_create and channel_delete are admin ops on top; a multicast from
// a peer the app refuses is refused as a whole.
func TestChannelAndMulticastPermissions(t *testing.T) {
	h := openHarness(t, harnessOpts{})
	data, err := os.ReadFile(h.cfgPath)
	must(t, err)
	cfg := strings.Replace(string(data), "default_env = \"sandbox\"\n", fmt.Sprintf("default_env = \"sandbox\"\nallow_uids = [%d]\n", otherID), 1)
	cfg = strings.Replace(cfg, fmt.Sprintf("endpoint = %q\n", h.sandbox.URL), fmt.Sprintf("endpoint = %q\n  manage_endpoint = %q\n", h.sandbox.URL, h.sandbox.URL), 1)
	must(t, os.WriteFile(h.cfgPath, []byte(cfg), 0o644))
	if _, err := h.d.Reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	// Root creates a channel.
	m := peerDo(t, h.sock, 0, 0, nil, `{"op":"channel_create","storage":"none"}`)[0]
	id, _ := m["channel_id"].(string)
	if m["ok"] != true || id == "" {
		t.Fatalf("create as root: %v", m)
	}
	update := fmt.Sprintf(`{"aps":{"event":"update","timestamp":%d,"content-state":{}}}`, time.Now().Unix())
	lines := []string{
		`{"op":"channel_list"}`,
		fmt.Sprintf(`{"op":"channel_get","channel_id":%q}`, id),
		fmt.Sprintf(`{"channel_id":%q,"payload":%s}`, id, update),
		`{"op":"channel_create","storage":"none"}`,
		fmt.Sprintf(`{"op":"channel_delete","channel_id":%q}`, id),
		`{"tokens":["aa01","aa02"],"alert":"x"}`,
	}
	// In the app's allow-list, not an admin: reads and broadcasts, no
	// create or delete.
	ms := peerDo(t, h.sock, otherID, otherID, nil, lines...)
	for i, want := range []string{"", "", "", ipc.CodeForbidden, ipc.CodeForbidden, ""} {
		if want == "" {
			if ms[i]["ok"] != true {
				t.Errorf("allowed uid, line %d: %v, want ok", i, ms[i])
			}
			continue
		}
		wantErr(t, ms[i], want)
	}
	// Not in the app's allow-list: everything refused, the multicast as a
	// whole (no per-token results).
	ms = peerDo(t, h.sock, nobody, nobody, nil, lines...)
	for i := range lines {
		wantErr(t, ms[i], ipc.CodeForbidden)
	}
	if _, has := ms[5]["results"]; has {
		t.Errorf("refused multicast has results: %v", ms[5])
	}
	if m := peerDo(t, h.sock, 0, 0, nil, lines[4])[0]; m["ok"] != true {
		t.Errorf("delete as root: %v", m)
	}
}
