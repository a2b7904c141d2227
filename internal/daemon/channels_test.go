package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apnsd/apnsd/internal/apnstest"
	"github.com/apnsd/apnsd/internal/config"
	"github.com/apnsd/apnsd/internal/ipc"
	"github.com/apnsd/apnsd/internal/pki"
)

// channelRig is a daemon with one token-auth app whose sandbox talks to a
// push+broadcast stand-in and a separate management stand-in, as Apple
// splits them.
type channelRig struct {
	push, manage *apnstest.Server
	d            *Daemon
	sock         string
}

func newChannelRig(t *testing.T, o apnstest.Options) *channelRig {
	t.Helper()
	dir := shortTempDir(t)
	key, p8, err := pki.NewP8Key()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "k.p8"), p8, 0o600))
	o.TokenKeys = tokenKeys("ABCDE12345", key)
	o.APIs = apnstest.APIPush | apnstest.APIBroadcast
	push, err := apnstest.New(o)
	must(t, err)
	t.Cleanup(push.Close)
	manage, err := apnstest.NewManagement(push)
	must(t, err)
	t.Cleanup(manage.Close)
	must(t, os.WriteFile(filepath.Join(dir, "ca.pem"), push.CACertPEM(), 0o644))
	cfgPath := filepath.Join(dir, "apnsd.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
request_timeout = "10s"
[socket]
path = %q
[[apps]]
name = "live"
topic = "com.example.live"
  [apps.token]
  key_file = "k.p8"
  key_id = "ABCDE12345"
  team_id = "TEAM123456"
  [apps.sandbox]
  endpoint = %q
  manage_endpoint = %q
  ca_file = "ca.pem"
`, filepath.Join(dir, "s.sock"), push.URL, manage.URL)), 0o644))
	cfg, err := config.Load(cfgPath)
	must(t, err)
	return &channelRig{push: push, manage: manage, d: startDaemon(t, cfg, Options{}), sock: cfg.Socket.Path}
}

func (r *channelRig) dial(t *testing.T) *conn {
	t.Helper()
	cn, err := (&ipc.Client{Socket: r.sock}).Connect(context.Background())
	must(t, err)
	cn.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { cn.Close() })
	return &conn{t: t, cn: cn}
}

// Channel ops and broadcast sends through the real socket against the
// stand-in's management and broadcast APIs.
func TestChannelsAndBroadcast(t *testing.T) {
	r := newChannelRig(t, apnstest.Options{})
	c := r.dial(t)
	if st := r.d.Status().Apps[0].Envs[0]; st.Channels != nil || st.ManageState != "idle" {
		t.Errorf("before any channel op: channels %v, manage state %q (want unknown, idle: no connection to the management host)", st.Channels, st.ManageState)
	}
	if r.manage.Connections() != 0 {
		t.Error("the management endpoint was contacted before any channel op")
	}
	m := c.do(`{"id":1,"op":"channel_list"}`)
	if m["ok"] != true || fmt.Sprint(m["channels"]) != "[]" || m["id"] != float64(1) {
		t.Fatalf("empty list: %v", m)
	}
	m = c.do(`{"op":"channel_create","storage":"latest"}`)
	id, _ := m["channel_id"].(string)
	if m["ok"] != true || id == "" || m["apns_request_id"] == nil {
		t.Fatalf("create: %v", m)
	}
	m = c.do(`{"op":"channel_create","storage":"none","env":"sandbox","app":"live"}`)
	id2, _ := m["channel_id"].(string)
	if m["ok"] != true || id2 == "" || id2 == id {
		t.Fatalf("second create: %v", m)
	}
	m = c.do(fmt.Sprintf(`{"op":"channel_get","channel_id":%q}`, id))
	if m["ok"] != true || m["storage"] != "latest" || !strings.EqualFold(m["push_type"].(string), "liveactivity") || m["channel_id"] != id {
		t.Errorf("get: %v", m)
	}
	m = c.do(`{"op":"channel_list"}`)
	if list, _ := m["channels"].([]any); m["ok"] != true || len(list) != 2 {
		t.Errorf("list: %v", m)
	}
	if st := r.d.Status().Apps[0].Envs[0]; st.Channels == nil || *st.Channels != 2 || st.ManageEndpoint != r.manage.URL {
		t.Errorf("status after list: channels %v, manage endpoint %q", st.Channels, st.ManageEndpoint)
	}

	now := time.Now().Unix()
	update := fmt.Sprintf(`{"aps":{"event":"update","timestamp":%d,"content-state":{"score":"1-0"}}}`, now)
	m = c.do(fmt.Sprintf(`{"channel_id":%q,"payload":%s,"expiration":%d,"priority":5}`, id, update, now+3600))
	if m["ok"] != true || m["status"] != float64(200) || len(m["apns_id"].(string)) != 36 {
		t.Fatalf("broadcast: %v", m)
	}
	var got *apnstest.Request
	for _, rq := range r.push.Requests() {
		if rq.API == apnstest.APIBroadcast {
			got = &rq
		}
	}
	if got == nil || got.Path != "/4/broadcasts/apps/com.example.live" || got.ChannelID != id ||
		got.Header.Get("apns-push-type") != "liveactivity" || got.Header.Get("apns-priority") != "5" || got.Header.Get("apns-topic") != "" {
		t.Fatalf("broadcast request at the stand-in: %+v", got)
	}
	// A nonzero expiration on a "none" channel: Apple's 400 BadExpirationDate passed back.
	m = c.do(fmt.Sprintf(`{"channel_id":%q,"payload":%s,"expiration":%d}`, id2, update, now+60))
	if m["ok"] != false || m["status"] != float64(400) || m["reason"] != "BadExpirationDate" || m["retryable"] != false {
		t.Errorf("expiration on a none channel: %v", m)
	}
	for _, tc := range []struct{ line, code, want string }{
		{fmt.Sprintf(`{"channel_id":%q,"payload":{"aps":{"event":"start","timestamp":%d,"content-state":{},"attributes-type":"T","attributes":{},"alert":"x"}}}`, id, now), ipc.CodeBadRequest, "cannot be sent on a broadcast channel"},
		{fmt.Sprintf(`{"channel_id":%q,"payload":%s,"push_type":"alert"}`, id, update), ipc.CodeBadRequest, "push type"},
		{fmt.Sprintf(`{"channel_id":%q,"payload":%s,"collapse_id":"x"}`, id, update), ipc.CodeBadRequest, "collapse_id"},
		{fmt.Sprintf(`{"channel_id":%q,"payload":%s,"topic":"com.other"}`, id, update), ipc.CodeForbidden, "com.other"},
		{fmt.Sprintf(`{"channel_id":"not base64!","payload":%s}`, update), ipc.CodeBadRequest, "not base64"},
		{fmt.Sprintf(`{"channel_id":%q,"token":"aa","payload":%s}`, id, update), ipc.CodeBadRequest, "not several"},
		{`{"op":"channel_create"}`, ipc.CodeBadRequest, "needs \"storage\""},
		{`{"op":"channel_create","storage":"forever"}`, ipc.CodeBadRequest, "not a storage policy"},
		{`{"op":"channel_get"}`, ipc.CodeBadRequest, "needs \"channel_id\""},
		{`{"op":"channel_list","channel_id":"AAAA"}`, ipc.CodeBadRequest, "takes no \"channel_id\""},
		{`{"op":"channel_list","alert":"x"}`, ipc.CodeBadRequest, "send field"},
		{`{"op":"channel_list","app":"nope"}`, ipc.CodeUnknownApp, "nope"},
		{`{"op":"channel_list","env":"production"}`, ipc.CodeBadRequest, "no production environment"},
	} {
		m := c.do(tc.line)
		wantErr(t, m, tc.code)
		if msg, _ := m["message"].(string); !strings.Contains(msg, tc.want) {
			t.Errorf("%.70s: message %q lacks %q", tc.line, msg, tc.want)
		}
	}
	m = c.do(fmt.Sprintf(`{"op":"channel_delete","channel_id":%q}`, id))
	if m["ok"] != true {
		t.Fatalf("delete: %v", m)
	}
	if st := r.d.Status().Apps[0].Envs[0]; st.Channels == nil || *st.Channels != 1 {
		t.Errorf("status after delete: channels %v, want 1", st.Channels)
	}
	m = c.do(fmt.Sprintf(`{"op":"channel_get","channel_id":%q}`, id))
	if m["ok"] != false || m["status"] == nil || m["reason"] == "" {
		t.Errorf("get of a deleted channel: %v, want Apple's refusal", m)
	}
	m = c.do(fmt.Sprintf(`{"channel_id":%q,"payload":%s}`, id, update))
	if m["ok"] != false || m["status"] != float64(400) || m["reason"] != "ChannelNotRegistered" {
		t.Errorf("broadcast to a deleted channel: %v", m)
	}
	if n := r.manage.Connections(); n != 1 {
		t.Errorf("management connections %d, want 1 persistent connection", n)
	}
}

// The stand-in's 10,000-channel limit comes back as Apple's refusal.
func TestChannelLimit(t *testing.T) {
	r := newChannelRig(t, apnstest.Options{MaxChannels: 2})
	c := r.dial(t)
	for i := range 2 {
		if m := c.do(`{"op":"channel_create","storage":"none"}`); m["ok"] != true {
			t.Fatalf("create %d: %v", i, m)
		}
	}
	m := c.do(`{"op":"channel_create","storage":"none"}`)
	if m["ok"] != false || m["status"] != float64(400) || m["reason"] != "CannotCreateChannelConfig" || m["retryable"] != false {
		t.Errorf("over the limit: %v", m)
	}
}
