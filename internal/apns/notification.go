package apns

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Push types APNs accepts in the apns-push-type header.
const (
	PushTypeAlert        = "alert"
	PushTypeBackground   = "background"
	PushTypeLocation     = "location"
	PushTypeVoIP         = "voip"
	PushTypeComplication = "complication"
	PushTypeFileProvider = "fileprovider"
	PushTypeMDM          = "mdm"
	PushTypeLiveActivity = "liveactivity"
	PushTypePushToTalk   = "pushtotalk"
	PushTypeControls     = "controls"
	PushTypeWidgets      = "widgets"
)

// PushTypes lists every push type APNs documents.
var PushTypes = []string{
	PushTypeAlert, PushTypeBackground, PushTypeLocation, PushTypeVoIP,
	PushTypeComplication, PushTypeFileProvider, PushTypeMDM, PushTypeLiveActivity,
	PushTypePushToTalk, PushTypeControls, PushTypeWidgets,
}

// Payload size limits APNs enforces.
const (
	MaxPayload     = 4096
	MaxPayloadVoIP = 5120
	MaxCollapseID  = 64
)

// Priorities APNs accepts.
const (
	PriorityImmediate = 10
	PriorityConserve  = 5
	PriorityLow       = 1
)

// Environment names.
const (
	Sandbox    = "sandbox"
	Production = "production"
)

// Default endpoints.
const (
	SandboxURL    = "https://api.sandbox.push.apple.com:443"
	ProductionURL = "https://api.push.apple.com:443"
)

// A Notification is one push request. DeviceToken and Topic are required;
// the zero value of every other field means "leave the header out".
type Notification struct {
	DeviceToken string // lowercase hex
	Topic       string
	PushType    string
	Priority    int   // 0: not sent (APNs defaults to 10)
	Expiration  int64 // UNIX seconds; only sent when HasExpiration
	// HasExpiration distinguishes apns-expiration: 0 ("deliver once or not
	// at all") from no header.
	HasExpiration bool
	CollapseID    string
	ApnsID        string // canonical lowercase UUID
	Payload       []byte // the JSON payload, sent verbatim
}

// Response is APNs' answer to one notification.
type Response struct {
	StatusCode int
	Reason     Reason // empty on 200
	ApnsID     string
	// Timestamp is the "timestamp" APNs gives with 410 (milliseconds since
	// the epoch at which the token stopped being valid); 0 if absent.
	Timestamp int64
	// Authorization is the authorization header the request carried (token
	// auth), so a caller can tell which token APNs judged. Never logged.
	Authorization string
	// Header holds the response's apns-* header fields, e.g. apns-id,
	// apns-unique-id, apns-channel-id, apns-request-id (see Get); other
	// fields are not kept.
	Header []Header
	// Body is the response body (Apple's JSON), nil when empty.
	Body []byte
}

// OK reports whether APNs accepted the notification.
func (r *Response) OK() bool { return r.StatusCode == 200 }

// ValidationError is a notification that APNs would refuse, found before
// sending. Field names the offending field.
type ValidationError struct {
	Field   string
	Message string
	// TooLarge is set for an over-size payload.
	TooLarge bool
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// ValidUUID reports whether s is a canonical lowercase UUID, as apns-id must
// be: exactly ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$
// (hand-written so that apnsd does not link regexp; names_test.go checks it
// against that regexp).
func ValidUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// ValidPushType reports whether t is a push type APNs documents.
func ValidPushType(t string) bool {
	for _, p := range PushTypes {
		if p == t {
			return true
		}
	}
	return false
}

// MaxPayloadFor returns the payload size limit for a push type.
func MaxPayloadFor(pushType string) int {
	if pushType == PushTypeVoIP {
		return MaxPayloadVoIP
	}
	return MaxPayload
}

// Validate checks n against the rules APNs documents, so that a request APNs
// would refuse is refused without contacting it.
func (n *Notification) Validate() error {
	if err := n.ValidateWithJSONPayload(); err != nil {
		return err
	}
	if !json.Valid(n.Payload) {
		return &ValidationError{Field: "payload", Message: "payload is not valid JSON"}
	}
	return nil
}

// ValidateWithJSONPayload is Validate for a caller that has already parsed
// the payload as JSON (apnsd's socket decoder does): every rule but the
// payload's JSON syntax, which costs a second scan of it.
func (n *Notification) ValidateWithJSONPayload() error {
	if n.DeviceToken == "" {
		return &ValidationError{Field: "token", Message: "device token is empty"}
	}
	if len(n.DeviceToken)%2 != 0 {
		return &ValidationError{Field: "token", Message: "device token must be an even number of hex digits"}
	}
	if !isHex(n.DeviceToken) {
		return &ValidationError{Field: "token", Message: "device token is not hex"}
	}
	if n.Topic == "" {
		return &ValidationError{Field: "topic", Message: "topic is required"}
	}
	if !validHeaderValue(n.Topic) {
		return &ValidationError{Field: "topic", Message: "topic has a control character or a space"}
	}
	if !validHeaderValue(n.CollapseID) {
		return &ValidationError{Field: "collapse_id", Message: "collapse id has a control character or a space at either end; it must be a valid HTTP header value"}
	}
	if n.PushType != "" && !ValidPushType(n.PushType) {
		return &ValidationError{Field: "push_type", Message: fmt.Sprintf("unknown push type %q", n.PushType)}
	}
	switch n.Priority {
	case 0, PriorityImmediate, PriorityConserve, PriorityLow:
	default:
		return &ValidationError{Field: "priority", Message: fmt.Sprintf("priority must be 10, 5 or 1, not %d", n.Priority)}
	}
	if n.PushType == PushTypeBackground && n.Priority == PriorityImmediate {
		return &ValidationError{Field: "priority", Message: "background pushes must use priority 5 (or 1)"}
	}
	if n.HasExpiration && n.Expiration < 0 {
		return &ValidationError{Field: "expiration", Message: "expiration must be UNIX seconds, 0 or more"}
	}
	if len(n.CollapseID) > MaxCollapseID {
		return &ValidationError{Field: "collapse_id", Message: fmt.Sprintf("collapse id is %d bytes; APNs allows at most %d", len(n.CollapseID), MaxCollapseID)}
	}
	if n.ApnsID != "" && !ValidUUID(n.ApnsID) {
		return &ValidationError{Field: "apns_id", Message: "apns-id must be a canonical lowercase UUID (8-4-4-4-12 hex digits)"}
	}
	if len(n.Payload) == 0 {
		return &ValidationError{Field: "payload", Message: "payload is empty"}
	}
	if max := MaxPayloadFor(n.PushType); len(n.Payload) > max {
		return &ValidationError{Field: "payload", TooLarge: true, Message: fmt.Sprintf("payload is %d bytes; APNs accepts at most %d for push type %q", len(n.Payload), max, pushTypeOrAlert(n.PushType))}
	}
	return nil
}

func pushTypeOrAlert(t string) string {
	if t == "" {
		return PushTypeAlert
	}
	return t
}

// Headers returns the apns-* request headers for n (without authorization).
func (n *Notification) Headers() map[string]string {
	h := map[string]string{"apns-topic": n.Topic}
	if n.PushType != "" {
		h["apns-push-type"] = n.PushType
	}
	if n.Priority != 0 {
		h["apns-priority"] = strconv.Itoa(n.Priority)
	}
	if n.HasExpiration {
		h["apns-expiration"] = strconv.FormatInt(n.Expiration, 10)
	}
	if n.CollapseID != "" {
		h["apns-collapse-id"] = n.CollapseID
	}
	if n.ApnsID != "" {
		h["apns-id"] = n.ApnsID
	}
	return h
}

// isHex reports whether s is made of hex digits only (either case).
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// NewUUID returns a random (version 4) UUID in the canonical lowercase form
// APNs wants for apns-id. An apns-id must be unique, not secret: the bits
// come from math/rand/v2's generator (ChaCha8, seeded by the runtime from
// the system's entropy), which costs no system call per notification as
// crypto/rand may.
func NewUUID() string {
	var out [36]byte
	putUUID(&out)
	return string(out[:])
}

// NewUUIDAndPath is NewUUID and DevicePath(token) in one allocation: a
// caller that gives each notification an apns-id keeps the path for
// PushRequest.KeepPath.
func NewUUIDAndPath(token string) (id, path string) {
	var b strings.Builder
	b.Grow(len(devicePrefix) + len(token) + 36)
	b.WriteString(devicePrefix)
	b.WriteString(token)
	var out [36]byte
	putUUID(&out)
	b.Write(out[:])
	s := b.String() // the builder's bytes, not a copy
	n := len(devicePrefix) + len(token)
	return s[n:], s[:n]
}

// putUUID writes a random version 4 UUID (see NewUUID) into out.
func putUUID(out *[36]byte) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexdigits = "0123456789abcdef"
	j := 0
	for i, v := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexdigits[v>>4], hexdigits[v&0x0f]
		j += 2
	}
}

// validHeaderValue reports whether v can be sent as an HTTP/2 header value
// as is: no control characters (tab included) and no leading or trailing
// space, which HTTP would strip.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return len(v) == 0 || (v[0] != ' ' && v[len(v)-1] != ' ')
}
