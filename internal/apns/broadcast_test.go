package apns

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

const (
	testBundle  = "com.example.app"
	testChannel = "dHN0LXNyY2gtY2hubA==" // Apple's example id
	testReqID   = "2288cf3f-70d8-46a6-97d7-dd5d00867127"
	updateBody  = `{"aps":{"timestamp":1685952000,"event":"update","content-state":{"a":1}}}`
)

func TestStoragePolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		want StoragePolicy
	}{{"none", StorageNone}, {"latest", StorageLatest}} {
		got, err := ParseStoragePolicy(tc.name)
		if err != nil || got != tc.want {
			t.Errorf("ParseStoragePolicy(%q) = %v, %v", tc.name, got, err)
		}
		if got.String() != tc.name || !got.Valid() {
			t.Errorf("%d: String() = %q, Valid() = %v", int(got), got.String(), got.Valid())
		}
	}
	if int(StorageNone) != 0 || int(StorageLatest) != 1 {
		t.Fatal("storage policies must be Apple's 0 and 1")
	}
	for _, bad := range []string{"", "0", "1", "None", "most-recent", "latest "} {
		_, err := ParseStoragePolicy(bad)
		checkValidation(t, err, "storage", `use "none"`)
	}
	if StoragePolicy(2).Valid() || StoragePolicy(-1).Valid() {
		t.Error("2 and -1 must not be valid")
	}
	if err := StorageNone.CheckExpiration(0); err != nil {
		t.Error(err)
	}
	checkValidation(t, StorageNone.CheckExpiration(1700000000), "expiration", "only expiration 0")
	if err := StorageLatest.CheckExpiration(1700000000); err != nil {
		t.Error(err)
	}
}

func TestValidateChannelID(t *testing.T) {
	for _, tc := range []struct {
		id  string
		msg string // "" = valid
	}{
		{testChannel, ""},
		{"dHN0LXNyY2gtY2hubA", ""}, // unpadded
		{"AAAA", ""},
		{"ab+/", ""},
		{"", "empty"},
		{"dHN0 LXNy", "not base64"},
		{"ab-_", "not base64"}, // URL-safe alphabet
		{"a", "not base64"},
		{"dHN0LXNyY2gtY2hubA===", "not base64"},
		{strings.Repeat("A", MaxChannelIDLen+4), "at most"},
	} {
		err := ValidateChannelID(tc.id)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("ValidateChannelID(%q): %v", tc.id, err)
			}
			continue
		}
		checkValidation(t, err, "channel_id", tc.msg)
	}
	b, err := ChannelIDBytes(testChannel)
	if err != nil || string(b) != "tst-srch-chnl" {
		t.Errorf("ChannelIDBytes = %q, %v", b, err)
	}
}

func TestValidateBundleID(t *testing.T) {
	for _, tc := range []struct {
		id, msg string
	}{
		{testBundle, ""},
		{"com.example.MyApp", ""},
		{"", "empty"},
		{"com.example/app", "cannot go in a URL path"},
		{"com.example app", "cannot go in a URL path"},
		{"com.example?x", "cannot go in a URL path"},
		{"com.example.app.push-type.liveactivity", "push type suffix"},
		{"com.example.app.voip", "push type suffix"},
	} {
		err := ValidateBundleID(tc.id)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("ValidateBundleID(%q): %v", tc.id, err)
			}
			continue
		}
		checkValidation(t, err, "bundle_id", tc.msg)
	}
}

func TestBroadcastRequest(t *testing.T) {
	b := Broadcast{BundleID: testBundle, ChannelID: testChannel, Payload: []byte(updateBody)}
	r, err := b.Request()
	if err != nil {
		t.Fatal(err)
	}
	want := &APIRequest{
		Method: "POST",
		Path:   "/4/broadcasts/apps/com.example.app",
		Header: map[string]string{
			"apns-channel-id": testChannel,
			"apns-push-type":  "liveactivity",
			"apns-priority":   "10",
			"apns-expiration": "0",
		},
		Body: []byte(updateBody),
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if _, ok := r.Header["apns-topic"]; ok {
		t.Error("a broadcast carries no apns-topic")
	}

	b.Priority, b.Expiration, b.RequestID = 5, 1700000000, testReqID
	r, err = b.Request()
	if err != nil {
		t.Fatal(err)
	}
	if r.Header["apns-priority"] != "5" || r.Header["apns-expiration"] != "1700000000" || r.Header["apns-request-id"] != testReqID {
		t.Errorf("headers: %v", r.Header)
	}
}

func TestBroadcastValidate(t *testing.T) {
	ok := func() Broadcast {
		return Broadcast{BundleID: testBundle, ChannelID: testChannel, Payload: []byte(updateBody)}
	}
	tests := []struct {
		name   string
		mod    func(*Broadcast)
		field  string
		msg    string
		tooBig bool
	}{
		{"valid", func(*Broadcast) {}, "", "", false},
		{"no bundle", func(b *Broadcast) { b.BundleID = "" }, "bundle_id", "empty", false},
		{"suffixed bundle", func(b *Broadcast) { b.BundleID += ".push-type.liveactivity" }, "bundle_id", "suffix", false},
		{"no channel", func(b *Broadcast) { b.ChannelID = "" }, "channel_id", "empty", false},
		{"bad channel", func(b *Broadcast) { b.ChannelID = "%%%" }, "channel_id", "not base64", false},
		{"priority 1", func(b *Broadcast) { b.Priority = 1 }, "priority", "10 or 5", false},
		{"priority 7", func(b *Broadcast) { b.Priority = 7 }, "priority", "10 or 5", false},
		{"negative expiration", func(b *Broadcast) { b.Expiration = -1 }, "expiration", "0 or more", false},
		{"request id upper", func(b *Broadcast) { b.RequestID = strings.ToUpper(testReqID) }, "request_id", "lowercase UUID", false},
		{"empty payload", func(b *Broadcast) { b.Payload = nil }, "payload", "empty", false},
		{"payload too large", func(b *Broadcast) {
			b.Payload = []byte(`{"aps":{"event":"update","timestamp":1,"content-state":{"x":"` + strings.Repeat("a", MaxPayloadBroadcast) + `"}}}`)
		}, "payload", "at most 5120", true},
		{"start", func(b *Broadcast) {
			b.Payload = []byte(`{"aps":{"event":"start","timestamp":1,"content-state":{},"attributes-type":"A","attributes":{},"alert":"x"}}`)
		}, "payload.aps.event", "broadcast", false},
		{"not live activity", func(b *Broadcast) { b.Payload = []byte(`{"aps":{"alert":"hi"}}`) }, "payload.aps.event", "required", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := ok()
			tc.mod(&b)
			err := b.Validate()
			checkValidation(t, err, tc.field, tc.msg)
			var ve *ValidationError
			if errors.As(err, &ve) && ve.TooLarge != tc.tooBig {
				t.Errorf("TooLarge = %v", ve.TooLarge)
			}
			if _, rerr := b.Request(); (rerr == nil) != (err == nil) {
				t.Errorf("Request() error %v disagrees with Validate() %v", rerr, err)
			}
		})
	}
	// Exactly at the limit is fine.
	b := ok()
	pad := MaxPayloadBroadcast - len(`{"aps":{"event":"update","timestamp":1,"content-state":{"x":""}}}`)
	b.Payload = []byte(`{"aps":{"event":"update","timestamp":1,"content-state":{"x":"` + strings.Repeat("a", pad) + `"}}}`)
	if len(b.Payload) != MaxPayloadBroadcast {
		t.Fatalf("test payload is %d bytes", len(b.Payload))
	}
	if err := b.Validate(); err != nil {
		t.Errorf("5120 bytes: %v", err)
	}
}

func TestChannelRequests(t *testing.T) {
	tests := []struct {
		name string
		make func() (*APIRequest, error)
		want *APIRequest
	}{
		{"create latest", func() (*APIRequest, error) { return CreateChannelRequest(testBundle, StorageLatest, testReqID) },
			&APIRequest{Method: "POST", Path: "/1/apps/com.example.app/channels",
				Header: map[string]string{"apns-request-id": testReqID},
				Body:   []byte(`{"message-storage-policy":1,"push-type":"LiveActivity"}`)}},
		{"create none", func() (*APIRequest, error) { return CreateChannelRequest(testBundle, StorageNone, "") },
			&APIRequest{Method: "POST", Path: "/1/apps/com.example.app/channels", Header: map[string]string{},
				Body: []byte(`{"message-storage-policy":0,"push-type":"LiveActivity"}`)}},
		{"get", func() (*APIRequest, error) { return GetChannelRequest(testBundle, testChannel, testReqID) },
			&APIRequest{Method: "GET", Path: "/1/apps/com.example.app/channels",
				Header: map[string]string{"apns-request-id": testReqID, "apns-channel-id": testChannel}}},
		{"delete", func() (*APIRequest, error) { return DeleteChannelRequest(testBundle, testChannel, "") },
			&APIRequest{Method: "DELETE", Path: "/1/apps/com.example.app/channels",
				Header: map[string]string{"apns-channel-id": testChannel}}},
		{"list", func() (*APIRequest, error) { return ListChannelsRequest(testBundle, "") },
			&APIRequest{Method: "GET", Path: "/1/apps/com.example.app/all-channels", Header: map[string]string{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.make()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v %s\nwant %+v %s", got, got.Body, tc.want, tc.want.Body)
			}
		})
	}

	bad := []struct {
		name  string
		err   error
		field string
	}{
		{"create bad policy", second(CreateChannelRequest(testBundle, StoragePolicy(2), "")), "storage"},
		{"create bad bundle", second(CreateChannelRequest("a/b", StorageNone, "")), "bundle_id"},
		{"create bad request id", second(CreateChannelRequest(testBundle, StorageNone, "nope")), "request_id"},
		{"get no channel", second(GetChannelRequest(testBundle, "", "")), "channel_id"},
		{"delete bad channel", second(DeleteChannelRequest(testBundle, "***", "")), "channel_id"},
		{"list suffixed bundle", second(ListChannelsRequest(testBundle+".voip", "")), "bundle_id"},
	}
	for _, tc := range bad {
		var ve *ValidationError
		if !errors.As(tc.err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: got %v, want a ValidationError on %s", tc.name, tc.err, tc.field)
		}
	}
}

func second(_ *APIRequest, err error) error { return err }

func TestAPIRequestHTTPRequest(t *testing.T) {
	r, _ := CreateChannelRequest(testBundle, StorageLatest, testReqID)
	hr, err := r.HTTPRequest(context.Background(), ManageSandboxURL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if hr.Method != "POST" || hr.URL.String() != "https://api-manage-broadcast.sandbox.push.apple.com:2195/1/apps/com.example.app/channels" {
		t.Errorf("%s %s", hr.Method, hr.URL)
	}
	if hr.Header.Get("apns-request-id") != testReqID || hr.Header.Get("content-type") != "application/json" {
		t.Errorf("header %v", hr.Header)
	}
	body, _ := io.ReadAll(hr.Body)
	if string(body) != string(r.Body) {
		t.Errorf("body %s", body)
	}
	g, _ := GetChannelRequest(testBundle, testChannel, "")
	hr, err = g.HTTPRequest(context.Background(), ManageProductionURL)
	if err != nil {
		t.Fatal(err)
	}
	if hr.Body != nil || hr.Header.Get("apns-channel-id") != testChannel || hr.Header.Get("content-type") != "" {
		t.Errorf("get: body %v header %v", hr.Body, hr.Header)
	}
}

func TestParseChannelResponse(t *testing.T) {
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		op     ChannelOp
		status int
		h      http.Header
		body   string
		want   *ChannelResponse
		perr   string // substring of a ProtocolError
	}{
		{"create", ChannelCreate, 201, hdr("apns-request-id", testReqID, "apns-channel-id", testChannel), "",
			&ChannelResponse{StatusCode: 201, RequestID: testReqID, ChannelID: testChannel}, ""},
		{"create no id", ChannelCreate, 201, hdr("apns-request-id", testReqID), "", nil, "no apns-channel-id"},
		{"create junk id", ChannelCreate, 201, hdr("apns-channel-id", "!!"), "", nil, "not base64"},
		{"create limit", ChannelCreate, 400, hdr("apns-request-id", testReqID), `{"reason":"CannotCreateChannelConfig"}`,
			&ChannelResponse{StatusCode: 400, RequestID: testReqID, Reason: ReasonCannotCreateChannelConfig}, ""},
		{"get", ChannelGet, 200, hdr(), `{"message-storage-policy":1,"push-type":"LiveActivity"}`,
			&ChannelResponse{StatusCode: 200, Config: ChannelConfig{StoragePolicy: StorageLatest, PushType: "LiveActivity"}}, ""},
		{"get policy 0", ChannelGet, 200, hdr(), `{"message-storage-policy":0,"push-type":"LiveActivity"}`,
			&ChannelResponse{StatusCode: 200, Config: ChannelConfig{StoragePolicy: StorageNone, PushType: "LiveActivity"}}, ""},
		{"get no policy", ChannelGet, 200, hdr(), `{"push-type":"LiveActivity"}`, nil, "no message-storage-policy"},
		{"get policy 7", ChannelGet, 200, hdr(), `{"message-storage-policy":7}`, nil, "not 0 or 1"},
		{"get empty body", ChannelGet, 200, hdr(), ``, nil, "not the JSON object"},
		{"get unknown channel", ChannelGet, 400, hdr(), `{"reason":"ChannelNotRegistered"}`,
			&ChannelResponse{StatusCode: 400, Reason: ReasonChannelNotRegistered}, ""},
		{"delete", ChannelDelete, 204, hdr("apns-request-id", testReqID), "", &ChannelResponse{StatusCode: 204, RequestID: testReqID}, ""},
		{"delete missing id", ChannelDelete, 400, hdr(), `{"reason":"MissingChannelId"}`,
			&ChannelResponse{StatusCode: 400, Reason: ReasonMissingChannelID}, ""},
		{"list", ChannelList, 200, hdr(), `{"channels":["` + testChannel + `","eCN0LXNyY2gtY2hubA=="]}`,
			&ChannelResponse{StatusCode: 200, Channels: []string{testChannel, "eCN0LXNyY2gtY2hubA=="}}, ""},
		{"list empty", ChannelList, 200, hdr(), `{"channels":[]}`, &ChannelResponse{StatusCode: 200, Channels: []string{}}, ""},
		{"list no key", ChannelList, 200, hdr(), `{}`, nil, `no "channels"`},
		{"server error no body", ChannelList, 500, hdr(), ``, &ChannelResponse{StatusCode: 500}, ""},
		{"error not json", ChannelCreate, 503, hdr(), `oops`, &ChannelResponse{StatusCode: 503}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChannelResponse(tc.op, tc.status, tc.h, []byte(tc.body))
			if tc.perr != "" {
				var pe *ProtocolError
				if !errors.As(err, &pe) || !strings.Contains(pe.Msg, tc.perr) {
					t.Fatalf("got %v, %v; want a ProtocolError with %q", got, err, tc.perr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if got.OK() != (tc.status < 300) {
				t.Errorf("OK() = %v", got.OK())
			}
		})
	}
}

func TestParseBroadcastResponse(t *testing.T) {
	h := http.Header{}
	h.Set("apns-request-id", testReqID)
	if r := ParseBroadcastResponse(200, h, nil); !r.OK() || r.RequestID != testReqID {
		t.Errorf("200: %+v", r)
	}
	r := ParseBroadcastResponse(400, h, []byte(`{"reason":"BadExpirationDate"}`))
	if r.OK() || r.Reason != ReasonBadExpirationDate || r.StatusCode != 400 {
		t.Errorf("400: %+v", r)
	}
}

func TestChannelOps(t *testing.T) {
	want := map[ChannelOp][2]any{
		ChannelCreate: {"create", 201}, ChannelGet: {"get", 200},
		ChannelDelete: {"delete", 204}, ChannelList: {"list", 200},
	}
	for op, w := range want {
		if op.String() != w[0] || op.SuccessStatus() != w[1] {
			t.Errorf("%d: %s %d", op, op, op.SuccessStatus())
		}
	}
}

func TestReasonStatuses(t *testing.T) {
	for r, st := range ChannelReasonStatus {
		if _, dup := ReasonStatus[r]; dup {
			t.Errorf("%s is already in ReasonStatus", r)
		}
		got, ok := StatusForReason(r)
		if !ok || got != st {
			t.Errorf("StatusForReason(%s) = %d, %v", r, got, ok)
		}
	}
	if st, _ := StatusForReason(ReasonTopicMismatch); st != 403 {
		t.Errorf("TopicMismatch is %d, Apple says 403", st)
	}
	if st, ok := StatusForReason(ReasonBadPath); !ok || st != 404 {
		t.Errorf("BadPath: %d %v", st, ok)
	}
	if _, ok := StatusForReason("Nope"); ok {
		t.Error("unknown reason found")
	}
	// The create body is the JSON Apple documents, field for field.
	var m map[string]any
	r, _ := CreateChannelRequest(testBundle, StorageNone, "")
	if err := json.Unmarshal(r.Body, &m); err != nil || len(m) != 2 || m["message-storage-policy"] != 0.0 || m["push-type"] != "LiveActivity" {
		t.Errorf("create body %s", r.Body)
	}
}
