package ipc

import (
	"encoding/json"
	"testing"
)

// TestFastEncodeKnowsResponse: appendResponseFast is written for Response
// as it is; a change to Response must be made there too (until then every
// answer goes through json.Marshal).
func TestFastEncodeKnowsResponse(t *testing.T) {
	if d := responseLayoutDiff(); d != "" {
		t.Fatalf("update appendResponseFast and responseFields: %s", d)
	}
}

// fastEncodeCases are responses for the table test and the fuzz corpus;
// fast tells whether appendResponseFast must encode it itself.
var fastEncodeCases = []struct {
	r    Response
	fast bool
}{
	{Response{ID: json.RawMessage(`1`), OK: true, Status: 200, ApnsID: "6f2a3b1c-0000-4000-8000-000000000001"}, true},
	{Response{ID: json.RawMessage(`"req-7"`), Status: 410, Reason: "Unregistered", ApnsID: "x", Timestamp: 1733000000000}, true},
	{Response{ID: json.RawMessage(`-1.5e3`), OK: true, Queued: true}, true},
	{Response{ID: json.RawMessage(`7`), OK: true, Queued: 1000}, true},
	{*ErrorResponse(Errorf(CodeUnknownOp, "unknown op %q (known: %s)", "x<y>&\t\n\r\b\f\x01\\", opNames())), true},
	{*ErrorResponse(Errorf(CodeQueueFull, "queue full")), true},
	{Response{OK: true, Pong: true, Version: "1.2.3"}, true},
	{Response{OK: true, Version: "1.2.3", Health: "degraded"}, true},
	{Response{}, true},
	{Response{Status: -5, Timestamp: -1}, true},
	{Response{ID: json.RawMessage(`"caf` + "\u00e9" + `"`)}, false},
	{Response{ID: json.RawMessage(`"a<b"`)}, false},
	{Response{ID: json.RawMessage(`"a\"b"`)}, false},
	{Response{ID: json.RawMessage(`{"a":1}`)}, false},
	{Response{ID: json.RawMessage(` 1`)}, false},
	{Response{ID: json.RawMessage(`01`)}, false},
	{Response{ID: json.RawMessage(`"`)}, false},
	{Response{Message: "caf\u00e9"}, false},
	{Response{Message: "\u2028"}, false},
	{Response{Reason: "bad \xff"}, false},
	{Response{OK: true, StatusReport: &StatusReport{}}, false},
	{Response{OK: true, ReloadReport: &ReloadReport{}}, false},
}

// TestFastEncode: appendResponse writes json.Marshal's bytes and a newline;
// the fast encoder takes the responses it should.
func TestFastEncode(t *testing.T) {
	for _, c := range fastEncodeCases {
		r := c.r
		if _, ok := appendResponseFast(nil, &r); ok != c.fast {
			t.Errorf("%+v: fast encoder took it: %v, want %v", r, ok, c.fast)
		}
		checkSameEncode(t, &r)
	}
}

// checkSameEncode fails t if appendResponse differs from json.Marshal.
func checkSameEncode(t *testing.T, r *Response) {
	t.Helper()
	want, err := json.Marshal(r)
	if err != nil {
		want, _ = json.Marshal(ErrorResponse(Errorf(CodeInternal, "encoding response: %v", err)))
	}
	want = append(want, '\n')
	prefix := []byte("prefix")
	got := appendResponse(prefix, r)
	if string(got) != "prefix"+string(want) {
		t.Fatalf("%+v:\n got  %s\n want %s", r, got[len(prefix):], want)
	}
}

// FuzzFastEncode: for any field values of the common answers, appendResponse
// writes what json.Marshal does.
func FuzzFastEncode(f *testing.F) {
	for _, c := range fastEncodeCases {
		r := c.r
		var retry, hasRetry bool
		if r.Retryable != nil {
			hasRetry, retry = true, *r.Retryable
		}
		// Queued as (kind, n): 0 nil, 1 a bool (n odd), 2 a count n.
		var qKind uint8
		var qN int
		switch q := r.Queued.(type) {
		case bool:
			qKind = 1
			if q {
				qN = 1
			}
		case int:
			qKind, qN = 2, q
		}
		f.Add([]byte(r.ID), r.OK, r.Status, r.Reason, r.ApnsID, r.Timestamp, qKind, qN, r.Error, r.Message, hasRetry, retry, r.Pong, r.Version+r.Health)
	}
	f.Fuzz(func(t *testing.T, id []byte, ok bool, status int, reason, apnsID string, ts int64, qKind uint8, qN int, code, msg string, hasRetry, retry, pong bool, version string) {
		var queued any
		switch qKind % 3 {
		case 1:
			queued = qN%2 != 0
		case 2:
			queued = qN
		}
		r := &Response{ID: id, OK: ok, Status: status, Reason: reason, ApnsID: apnsID, Timestamp: ts, Queued: queued, Error: code, Message: msg, Pong: pong, Version: version, Health: version}
		if hasRetry {
			r.Retryable = &retry
		}
		checkSameEncode(t, r)
	})
}
