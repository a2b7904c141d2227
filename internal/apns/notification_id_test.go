package apns

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// NewUUIDAndPath gives a fresh apns-id and the token's path; Set uses a
// kept path only when it is the notification's own.
func TestNewUUIDAndPath(t *testing.T) {
	const token = "a1b2c3d4"
	id, path := NewUUIDAndPath(token)
	if !ValidUUID(id) {
		t.Errorf("apns-id %q is not a canonical UUID", id)
	}
	if path != "/3/device/"+token {
		t.Errorf("path %q", path)
	}
	if id2, _ := NewUUIDAndPath(token); id2 == id {
		t.Errorf("two calls gave the same apns-id %q", id)
	}
	var p PushRequest
	p.KeepPath(path)
	if r := p.Set(&Notification{DeviceToken: token, Topic: "t", Payload: []byte("{}")}); r.Path != path {
		t.Errorf("Set with the kept path: %q", r.Path)
	}
	for _, other := range []string{"b1b2c3d4", "a1b2c3d", "a1b2c3d4e5"} {
		if r := p.Set(&Notification{DeviceToken: other, Topic: "t", Payload: []byte("{}")}); r.Path != "/3/device/"+other {
			t.Errorf("token %q, kept path %q: Set gave %q", other, path, r.Path)
		}
	}
	var q PushRequest
	q.KeepPath("/3/devicX/" + token) // same length, same token, not a device path
	if r := q.Set(&Notification{DeviceToken: token, Topic: "t"}); !strings.HasPrefix(r.Path, "/3/device/") {
		t.Errorf("a kept path that is not a device path was used: %q", r.Path)
	}
}

// TestUUIDText: every apns-id is the canonical 8-4-4-4-12 lowercase text
// of its own 16 bytes, version 4, RFC 4122 variant.
func TestUUIDText(t *testing.T) {
	seen := map[string]bool{}
	for range 20000 {
		id := NewUUID()
		b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
		if err != nil || len(b) != 16 {
			t.Fatalf("%q: not 16 hex bytes with dashes: %v", id, err)
		}
		if want := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]); id != want {
			t.Fatalf("%q is not the canonical text of its bytes (%q)", id, want)
		}
		if b[6]>>4 != 4 || b[8]>>6 != 2 {
			t.Fatalf("%q: version %d, variant bits %b", id, b[6]>>4, b[8]>>6)
		}
		if seen[id] {
			t.Fatalf("%q twice", id)
		}
		seen[id] = true
	}
}
