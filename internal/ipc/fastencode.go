package ipc

import (
	"encoding/json"
	"reflect"
	"strconv"
)

// The fast response encoder. json.Marshal(Response) is the reference:
// appendResponse writes the same bytes for the answers of the send path
// (ok, status, reason, apns_id, timestamp, queued; apnsd's refusals with
// message and retryable; ping's pong and version) and calls json.Marshal
// for the rest: a status or reload report, a string with a byte outside
// printable ASCII, an id that is not a plain number or string.
// FuzzFastEncode checks the equivalence.

// responseFields is Response's layout as appendResponseFast writes it:
// each field's name, JSON tag and type, in order. If Response changes,
// fastResponseOK turns false (every answer then goes through json.Marshal)
// and TestFastEncodeKnowsResponse fails until appendResponseFast is updated.
var responseFields = []struct {
	name, tag string
	typ       reflect.Type
}{
	{"ID", "id,omitempty", reflect.TypeFor[json.RawMessage]()},
	{"OK", "ok", reflect.TypeFor[bool]()},
	{"Status", "status,omitempty", reflect.TypeFor[int]()},
	{"Reason", "reason,omitempty", reflect.TypeFor[string]()},
	{"ApnsID", "apns_id,omitempty", reflect.TypeFor[string]()},
	{"Timestamp", "timestamp,omitempty", reflect.TypeFor[int64]()},
	{"Queued", "queued,omitempty", reflect.TypeFor[any]()},
	{"Error", "error,omitempty", reflect.TypeFor[string]()},
	{"Message", "message,omitempty", reflect.TypeFor[string]()},
	{"Retryable", "retryable,omitempty", reflect.TypeFor[*bool]()},
	{"Pong", "pong,omitempty", reflect.TypeFor[bool]()},
	{"Version", "version,omitempty", reflect.TypeFor[string]()},
	{"Health", "health,omitempty", reflect.TypeFor[string]()},
	{"StatusReport", "", reflect.TypeFor[*StatusReport]()},
	{"ReloadReport", "", reflect.TypeFor[*ReloadReport]()},
	{"MulticastReport", "", reflect.TypeFor[*MulticastReport]()},
	{"ChannelReport", "", reflect.TypeFor[*ChannelReport]()},
	{"Owner", "-", reflect.TypeFor[ResponseOwner]()}, // not encoded
}

// fastResponseOK is whether Response is laid out as responseFields says.
var fastResponseOK = responseLayoutDiff() == ""

// responseLayoutDiff describes how Response differs from responseFields,
// or is "".
func responseLayoutDiff() string {
	rt := reflect.TypeFor[Response]()
	if rt.NumField() != len(responseFields) {
		return "Response has " + strconv.Itoa(rt.NumField()) + " fields, appendResponseFast knows " + strconv.Itoa(len(responseFields))
	}
	for i, want := range responseFields {
		f := rt.Field(i)
		if f.Name != want.name || string(f.Tag.Get("json")) != want.tag || f.Type != want.typ {
			return "Response field " + strconv.Itoa(i) + " is " + f.Name + " " + f.Type.String() + " `json:\"" + f.Tag.Get("json") + "\"`, appendResponseFast expects " + want.name + " " + want.typ.String() + " `json:\"" + want.tag + "\"`"
		}
	}
	return ""
}

// appendResponse appends r as json.Marshal encodes it, then '\n'. A
// response json.Marshal cannot encode becomes an "internal" refusal.
func appendResponse(b []byte, r *Response) []byte {
	if out, ok := appendResponseFast(b, r); ok {
		return append(out, '\n')
	}
	m, err := json.Marshal(r)
	if err != nil {
		m, _ = json.Marshal(ErrorResponse(Errorf(CodeInternal, "encoding response: %v", err)))
	}
	b = append(b, m...)
	return append(b, '\n')
}

// appendResponseFast appends json.Marshal(r) to b, or returns false (and
// b's contents beyond len(b) are then unspecified) for a response it
// leaves to json.Marshal.
func appendResponseFast(b []byte, r *Response) ([]byte, bool) {
	if !fastResponseOK || r.StatusReport != nil || r.ReloadReport != nil || r.MulticastReport != nil || r.ChannelReport != nil {
		return b, false
	}
	var ok bool
	b = append(b, '{')
	if len(r.ID) > 0 {
		if !plainID(r.ID) {
			return b, false
		}
		b = append(b, `"id":`...)
		b = append(b, r.ID...)
		b = append(b, ',')
	}
	if r.OK {
		b = append(b, `"ok":true`...)
	} else {
		b = append(b, `"ok":false`...)
	}
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	if b, ok = appendStringField(b, `,"reason":`, r.Reason); !ok {
		return b, false
	}
	if b, ok = appendStringField(b, `,"apns_id":`, r.ApnsID); !ok {
		return b, false
	}
	if r.Timestamp != 0 {
		b = append(b, `,"timestamp":`...)
		b = strconv.AppendInt(b, r.Timestamp, 10)
	}
	// Queued: nil or false (omitted), true, or a multicast's count; any
	// other value is left to json.Marshal.
	switch q := r.Queued.(type) {
	case nil:
	case bool:
		if q {
			b = append(b, `,"queued":true`...)
		} else {
			b = append(b, `,"queued":false`...)
		}
	case int:
		b = append(b, `,"queued":`...)
		b = strconv.AppendInt(b, int64(q), 10)
	default:
		return b, false
	}
	if b, ok = appendStringField(b, `,"error":`, r.Error); !ok {
		return b, false
	}
	if b, ok = appendStringField(b, `,"message":`, r.Message); !ok {
		return b, false
	}
	if r.Retryable != nil {
		if *r.Retryable {
			b = append(b, `,"retryable":true`...)
		} else {
			b = append(b, `,"retryable":false`...)
		}
	}
	if r.Pong {
		b = append(b, `,"pong":true`...)
	}
	if b, ok = appendStringField(b, `,"version":`, r.Version); !ok {
		return b, false
	}
	if b, ok = appendStringField(b, `,"health":`, r.Health); !ok {
		return b, false
	}
	return append(b, '}'), true
}

// appendStringField appends key and s as a JSON string, nothing for an
// empty s (omitempty); false for a byte json.Marshal would treat in a way
// appendStringField does not (outside ASCII).
func appendStringField(b []byte, key, s string) ([]byte, bool) {
	if s == "" {
		return b, true
	}
	b = append(b, key...)
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x80 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			continue
		}
		if c >= 0x80 {
			return b, false
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default: // other control characters, and <, >, & as json.Marshal's HTML escaping does
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"'), true
}

// plainID reports whether id is a JSON number, or a JSON string of
// printable ASCII without escapes and without <, > and & (which
// json.Marshal would escape): what json.Marshal copies unchanged.
func plainID(id []byte) bool {
	if id[0] == '"' {
		if len(id) < 2 || id[len(id)-1] != '"' {
			return false
		}
		for _, c := range id[1 : len(id)-1] {
			if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return false
			}
		}
		return true
	}
	end, ok := scanNumber(id, 0)
	return ok && end == len(id)
}
