package daemon

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/apnsd/apnsd/internal/apns"
	"github.com/apnsd/apnsd/internal/ipc"
)

// sendRequest is what the daemon builds from a send line: the protocol's
// Send and the APNs notification made from it.
type sendRequest struct {
	Wait         bool
	Notification apns.Notification
}

// TestDecodeAndSendRequest runs a line through the whole path a send takes
// before Submit: ipc's decoding and validation, then NewNotification.
func TestDecodeAndSendRequest(t *testing.T) {
	cases := []struct {
		line string
		code string // "" = valid
		want func(*sendRequest) string
	}{
		{`{"token":"aa","alert":"hi"}`, "", func(s *sendRequest) string {
			if string(s.Notification.Payload) != `{"aps":{"alert":"hi"}}` || !s.Wait || s.Notification.PushType != "alert" {
				return fmt.Sprintf("%s wait=%v type=%s", s.Notification.Payload, s.Wait, s.Notification.PushType)
			}
			return ""
		}},
		{`{"token":"aa","payload":{ "aps" : {"alert":"x"}, "k":[1, 2] }}`, "", func(s *sendRequest) string {
			if string(s.Notification.Payload) != `{"aps":{"alert":"x"},"k":[1,2]}` {
				return string(s.Notification.Payload)
			}
			return ""
		}},
		{`{"token":"aa","alert":{"title":"t","body":"b"},"badge":0,"wait":false,"expiration":0,"priority":1}`, "", func(s *sendRequest) string {
			n := s.Notification
			if s.Wait || !n.HasExpiration || n.Expiration != 0 || n.Priority != 1 {
				return fmt.Sprintf("%+v", s)
			}
			return ""
		}},
		{`{"token":"aa","payload":{"aps":{"content-available":1}},"priority":1}`, "", func(s *sendRequest) string {
			if s.Notification.PushType != "background" || s.Notification.Priority != 1 {
				return fmt.Sprintf("%+v", s.Notification)
			}
			return ""
		}},
		{`{"token":"aa","alert":5}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","badge":-1}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","badge":"3"}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","sound":1}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","payload":[1]}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","payload":{"aps":5},"alert":"x"}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","payload":{"aps":{"badge":1}},"badge":2}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","alert":"x","push_type":"background","priority":10}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","alert":"x","expiration":-5}`, ipc.CodeBadRequest, nil},
		{`{"id":{"x":1},"op":"ping"}`, ipc.CodeBadRequest, nil},
		{`{"token":"a","alert":"x"}`, ipc.CodeInvalidToken, nil},
		{`{"token":"` + strings.Repeat("ab", 513) + `","alert":"x"}`, ipc.CodeInvalidToken, nil},
		{`{"token":"aa","alert":"x","topic":"com.example\nx"}`, ipc.CodeBadRequest, nil},
		{`{"token":"aa","alert":"x","collapse_id":"a\u0000b"}`, ipc.CodeBadRequest, nil},
		{`{"id":null,"token":"aa","alert":"x"}`, "", func(s *sendRequest) string { return "" }},
		{`{"alert":"x"}`, ipc.CodeInvalidToken, nil},
		{`{"token":"aa","payload":{"a":"` + strings.Repeat("x", 4100) + `"}}`, ipc.CodePayloadTooLarge, nil},
		{`{"token":"aa"`, ipc.CodeBadJSON, nil},
		{`"just a string"`, ipc.CodeBadJSON, nil},
		{`{"token":"aa","alert":"x"} {"second":1}`, ipc.CodeBadJSON, nil},
	}
	for _, c := range cases {
		req, e := ipc.DecodeRequest([]byte(c.line))
		var sr *sendRequest
		if e == nil {
			var s *ipc.Send
			if s, e = req.Send(); e == nil {
				var n apns.Notification
				if n, e = NewNotification(s); e == nil {
					sr = &sendRequest{Wait: s.Wait, Notification: n}
				}
			}
		}
		switch {
		case c.code == "" && e != nil:
			t.Errorf("%s: unexpected %v", c.line, e)
		case c.code != "" && (e == nil || e.Code != c.code):
			t.Errorf("%s: got %v, want %s", c.line, e, c.code)
		case c.code == "" && c.want != nil:
			if msg := c.want(sr); msg != "" {
				t.Errorf("%s: %s", c.line, msg)
			}
		}
	}
}

// FuzzDecodeRequest: any line either decodes into a send that APNs would
// accept in form, or is refused with a protocol error code; it never panics.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"token":"aa","alert":"hi"}`,
		`{"id":"x","op":"ping"}`,
		`{"token":"<a1b2 c3d4>","payload":{"aps":{"alert":"x"}},"badge":1}`,
		`{"token":"aa","payload":{"aps":{"content-available":1}}}`,
		`{"token":"aa","alert":"x","push_type":"voip","priority":5,"expiration":0,"collapse_id":"c","apns_id":"123e4567-e89b-12d3-a456-426614174000"}`,
		`{`, `null`, `[]`, `{"id":{}}`,
		`{"token":"aa","alert":"\ud800"}`, "{\"token\":\"aa\",\"alert\":\"caf\xe9\"}",
	} {
		f.Add([]byte(s))
	}
	codes := map[string]bool{ipc.CodeBadJSON: true, ipc.CodeBadRequest: true, ipc.CodeInvalidToken: true, ipc.CodePayloadTooLarge: true}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, e := ipc.DecodeRequest(line)
		if e != nil {
			if !codes[e.Code] {
				t.Fatalf("decode error code %q", e.Code)
			}
			return
		}
		if req.Op != "" && req.Op != "send" {
			return
		}
		s, e := req.Send()
		if e != nil {
			if !codes[e.Code] {
				t.Fatalf("send error code %q", e.Code)
			}
			return
		}
		n, e := NewNotification(s)
		if e != nil {
			if !codes[e.Code] {
				t.Fatalf("send error code %q", e.Code)
			}
			return
		}
		n.Topic = "com.example.app"
		if err := n.Validate(); err != nil {
			t.Fatalf("accepted a notification that fails validation: %v", err)
		}
		if !json.Valid(n.Payload) || !utf8.Valid(n.Payload) || len(n.Payload) > apns.MaxPayloadVoIP {
			t.Fatalf("bad payload accepted: %q", n.Payload)
		}
	})
}

// The protocol's environment names are APNs'.
func TestEnvNamesMatch(t *testing.T) {
	if ipc.EnvSandbox != apns.Sandbox || ipc.EnvProduction != apns.Production {
		t.Errorf("ipc env names %q, %q; apns has %q, %q", ipc.EnvSandbox, ipc.EnvProduction, apns.Sandbox, apns.Production)
	}
}
