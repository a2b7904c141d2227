package apns

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Request is one HTTP/2 request to APNs, general enough for every API
// Apple runs on the same connections: a push (POST /3/device/<token>),
// broadcast channel management (POST/GET/DELETE /1/apps/<bundle>/channels)
// and broadcast pushes (POST /4/broadcasts/apps/<bundle>).
//
// A Request handed to Client.Enqueue must not be modified until its done
// callback has run. The client adds :scheme, :authority and, with token
// auth, authorization; the caller adds everything else.
type Request struct {
	// Method is "POST" when empty.
	Method string
	// Path is the :path, e.g. "/3/device/<token>".
	Path string
	// Header holds the request headers in the order they are sent. Names
	// must be lowercase (HTTP/2).
	Header []Header
	// Body is sent as the request's DATA; nil or empty sends none.
	Body []byte
}

// Header is one header field. NeverIndex sends it as an HPACK
// never-indexed literal: right for values that change on every request
// (apns-id, a device token) and would only churn the compression table,
// and for values no intermediary should remember. Some names are never
// indexed whatever NeverIndex says (see neverIndexed).
type Header struct {
	Name, Value string
	NeverIndex  bool
}

// neverIndexed reports whether a header is always sent as a never-indexed
// literal: values that differ per request (indexing them would evict the
// stable entries, apns-topic and authorization, from the HPACK table).
func neverIndexed(name string) bool {
	switch name {
	case "apns-id", "apns-request-id", "apns-expiration", "apns-collapse-id", "content-length":
		return true
	}
	return false
}

// pathNeverIndexed: a device token is per request (and not for
// intermediaries to keep); the broadcast paths are per app and indexed.
func pathNeverIndexed(path string) bool { return strings.HasPrefix(path, devicePrefix) }

// Request returns the HTTP/2 request that delivers n: POST
// /3/device/<token> with n's apns-* headers and payload. It shares n's
// payload bytes.
func (n *Notification) Request() *Request { return new(PushRequest).Set(n) }

// PushRequest is a Request with room for a notification's headers, so that
// a caller that keeps one per notification (embedded in its own record)
// builds the request without further allocations.
type PushRequest struct {
	Request
	hdr [7]Header
	// path is a DevicePath kept by KeepPath, used by Set when it is the
	// notification's.
	path string
}

// devicePrefix starts the path of a notification to one device.
const devicePrefix = "/3/device/"

// DevicePath is the request path of a notification to token.
func DevicePath(token string) string { return devicePrefix + token }

// KeepPath gives p the DevicePath of the notification it will Set (from
// NewUUIDAndPath), so that Set does not build it again. A path that is not
// the notification's is ignored.
func (p *PushRequest) KeepPath(path string) { p.path = path }

// Set makes p the request that delivers n (see Notification.Request) and
// returns it. It shares n's payload bytes.
func (p *PushRequest) Set(n *Notification) *Request {
	h := p.hdr[:0]
	h = append(h, Header{Name: "apns-topic", Value: n.Topic})
	if n.PushType != "" {
		h = append(h, Header{Name: "apns-push-type", Value: n.PushType})
	}
	if n.Priority != 0 {
		h = append(h, Header{Name: "apns-priority", Value: strconv.Itoa(n.Priority)})
	}
	if n.HasExpiration {
		h = append(h, Header{Name: "apns-expiration", Value: strconv.FormatInt(n.Expiration, 10), NeverIndex: true})
	}
	if n.CollapseID != "" {
		h = append(h, Header{Name: "apns-collapse-id", Value: n.CollapseID, NeverIndex: true})
	}
	if n.ApnsID != "" {
		h = append(h, Header{Name: "apns-id", Value: n.ApnsID, NeverIndex: true})
	}
	h = append(h, Header{Name: "content-type", Value: "application/json"})
	path := p.path
	if len(path) != len(devicePrefix)+len(n.DeviceToken) || !strings.HasPrefix(path, devicePrefix) || !strings.HasSuffix(path, n.DeviceToken) {
		path = DevicePath(n.DeviceToken)
	}
	p.Request = Request{Method: "POST", Path: path, Header: h, Body: n.Payload}
	return &p.Request
}

// Get returns the value of the first response header called name
// (lowercase), or "".
func (r *Response) Get(name string) string {
	for _, h := range r.Header {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

// Response limits: a server that sends more is cut off (the stream is
// reset and the request fails) rather than buffered without bound.
const (
	// maxResponseHeaderBytes is the MAX_HEADER_LIST_SIZE we advertise and
	// enforce (HPACK-decoded size: name + value + 32 per field).
	maxResponseHeaderBytes = 16 << 10
	// maxResponseBody bounds a response body. APNs' largest documented
	// answers (channel lists) are far below it.
	maxResponseBody = 64 << 10
)

// finishResponse fills the fields derived from headers and body: apns-id,
// and for an error status Apple's JSON reason and timestamp.
func finishResponse(r *Response) {
	r.ApnsID = r.Get("apns-id")
	if r.StatusCode != 200 && len(r.Body) > 0 {
		var eb struct {
			Reason    string          `json:"reason"`
			Timestamp json.RawMessage `json:"timestamp"`
		}
		if err := json.Unmarshal(r.Body, &eb); err == nil {
			r.Reason = eb.Reason
			r.Timestamp = parseTimestamp(eb.Timestamp)
		}
	}
}

// parseTimestamp reads APNs' "timestamp", a number of milliseconds; it has
// been seen as both a JSON number and a string.
func parseTimestamp(raw json.RawMessage) int64 {
	if len(raw) == 0 {
		return 0
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(bytes.Trim(raw, `"`)))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		return 0
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	if f, err := n.Float64(); err == nil {
		return int64(f)
	}
	return 0
}
