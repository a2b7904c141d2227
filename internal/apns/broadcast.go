package apns

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Broadcast push (iOS 18): one notification sent on a channel reaches every
// device subscribed to it. Apple documents it in "Sending broadcast push
// notification requests to APNs" (the send, on the push hosts) and "Sending
// channel management requests to APNs" (creating, reading, listing and
// deleting channels, on hosts of their own). docs/apple.md records what was
// read and what was unclear.

// Default channel management endpoints (Apple: management lives on its own
// hosts and ports, one pair per environment). Broadcast sends go to the
// usual push endpoints ([SandboxURL], [ProductionURL]).
const (
	ManageSandboxURL    = "https://api-manage-broadcast.sandbox.push.apple.com:2195"
	ManageProductionURL = "https://api-manage-broadcast.push.apple.com:2196"
)

// Broadcast limits Apple documents.
const (
	// MaxChannelsPerApp is how many channels an app may have in each
	// environment; creating one more is refused with
	// 400 CannotCreateChannelConfig.
	MaxChannelsPerApp = 10000
	// MaxPayloadBroadcast is the largest broadcast payload (5 KB).
	MaxPayloadBroadcast = 5120
	// MaxChannelIDLen bounds a channel id this package accepts. Apple says
	// not to assume a size and documents none; this bound is apnsd's, far
	// above the ids Apple hands out, only to keep header values sane.
	MaxChannelIDLen = 1024
)

// Push type spellings. Apple's pages use three ("LiveActivity",
// "Liveactivity", "liveactivity"); apnsd sends the lowercase header value
// that the push API documents for apns-push-type and that Apple's own
// request dumps show, and the body value the channel pages document.
const (
	// BroadcastPushType is the apns-push-type header of a broadcast send.
	BroadcastPushType = PushTypeLiveActivity
	// ChannelPushType is the "push-type" of a channel in the management
	// API's JSON bodies.
	ChannelPushType = "LiveActivity"
)

// Reasons of the broadcast and channel management APIs ("Handling error
// responses from Apple Push Notification service", the broadcast edition)
// that the push API does not have. The others they share (BadPriority,
// BadExpirationDate, PayloadTooLarge, ...) are in reasons.go.
const (
	ReasonFeatureNotEnabled         Reason = "FeatureNotEnabled"
	ReasonMissingChannelID          Reason = "MissingChannelId"
	ReasonBadChannelID              Reason = "BadChannelId"
	ReasonChannelNotRegistered      Reason = "ChannelNotRegistered"
	ReasonBadRequestParams          Reason = "BadRequestParams"
	ReasonBadRequestPayload         Reason = "BadRequestPayload"
	ReasonMissingPushType           Reason = "MissingPushType"
	ReasonCannotCreateChannelConfig Reason = "CannotCreateChannelConfig"
	ReasonTopicMismatch             Reason = "TopicMismatch"
)

// ChannelReasonStatus maps each reason above to the status Apple sends it
// with. (Apple's table lists them all as 400 except TopicMismatch, 403.)
var ChannelReasonStatus = map[Reason]int{
	ReasonFeatureNotEnabled: 400, ReasonMissingChannelID: 400, ReasonBadChannelID: 400,
	ReasonChannelNotRegistered: 400, ReasonBadRequestParams: 400, ReasonBadRequestPayload: 400,
	ReasonMissingPushType: 400, ReasonCannotCreateChannelConfig: 400,
	ReasonTopicMismatch: 403,
}

// StatusForReason returns the HTTP status Apple sends with reason, from
// [ReasonStatus] or [ChannelReasonStatus].
func StatusForReason(reason Reason) (int, bool) {
	if st, ok := ReasonStatus[reason]; ok {
		return st, true
	}
	st, ok := ChannelReasonStatus[reason]
	return st, ok
}

// StoragePolicy is a channel's message storage policy, fixed when the
// channel is created: whether APNs keeps the most recent message for
// devices that are offline.
type StoragePolicy int

const (
	// StorageNone (0, "No Message Stored"): nothing is kept; sends on such
	// a channel must use apns-expiration 0. Apple recommends it for
	// frequent updates (it allows a higher publishing budget).
	StorageNone StoragePolicy = 0
	// StorageLatest (1, "Most Recent Message Stored"): the latest message
	// is kept for up to 8 hours (less with an earlier apns-expiration).
	StorageLatest StoragePolicy = 1
)

// Valid reports whether p is one of Apple's two policies.
func (p StoragePolicy) Valid() bool { return p == StorageNone || p == StorageLatest }

// String returns the name the socket protocol uses: "none" or "latest".
func (p StoragePolicy) String() string {
	switch p {
	case StorageNone:
		return "none"
	case StorageLatest:
		return "latest"
	}
	return "StoragePolicy(" + strconv.Itoa(int(p)) + ")"
}

// ParseStoragePolicy maps the socket protocol's names to Apple's values:
// "none" is 0 (No Message Stored), "latest" is 1 (Most Recent Message
// Stored).
func ParseStoragePolicy(s string) (StoragePolicy, error) {
	switch s {
	case "none":
		return StorageNone, nil
	case "latest":
		return StorageLatest, nil
	}
	return 0, &ValidationError{Field: "storage", Message: fmt.Sprintf("%q is not a storage policy: use \"none\" (Apple's 0, No Message Stored) or \"latest\" (1, Most Recent Message Stored)", s)}
}

// CheckExpiration reports the mistake Apple refuses with 400
// BadExpirationDate: a nonzero apns-expiration on a channel that stores no
// message.
func (p StoragePolicy) CheckExpiration(expiration int64) error {
	if p == StorageNone && expiration != 0 {
		return &ValidationError{Field: "expiration", Message: fmt.Sprintf("is %d, but the channel stores no messages (storage \"none\"): Apple accepts only expiration 0 there", expiration)}
	}
	return nil
}

// ValidateChannelID checks a channel id the way Apple describes it: a
// base64-encoded string (standard alphabet; "=" padding optional) of no
// assumed size. It must not be empty, and is bounded by [MaxChannelIDLen].
func ValidateChannelID(id string) error {
	const f = "channel_id"
	switch {
	case id == "":
		return &ValidationError{Field: f, Message: "channel id is empty"}
	case len(id) > MaxChannelIDLen:
		return &ValidationError{Field: f, Message: fmt.Sprintf("channel id is %d characters; apnsd accepts at most %d", len(id), MaxChannelIDLen)}
	}
	if _, err := decodeChannelID(id); err != nil {
		return &ValidationError{Field: f, Message: fmt.Sprintf("channel id %q is not base64 (Apple's channel ids are base64 strings such as \"dHN0LXNyY2gtY2hubA==\")", id)}
	}
	return nil
}

// decodeChannelID decodes a standard-alphabet base64 string, padded or not.
func decodeChannelID(id string) ([]byte, error) {
	if strings.HasSuffix(id, "=") || len(id)%4 == 0 {
		return base64.StdEncoding.DecodeString(id)
	}
	return base64.RawStdEncoding.DecodeString(id)
}

// ChannelIDBytes returns the decoded bytes of a valid channel id.
func ChannelIDBytes(id string) ([]byte, error) {
	if err := ValidateChannelID(id); err != nil {
		return nil, err
	}
	return decodeChannelID(id)
}

// ValidateBundleID checks a bundle id used in a broadcast or channel
// management path: not empty, no '/', '?', '#', space or control character,
// and no push type suffix (Apple: "Ensure that no push type suffix is added
// to the bundle ID"; the path takes the bare bundle id).
func ValidateBundleID(bundleID string) error {
	const f = "bundle_id"
	if bundleID == "" {
		return &ValidationError{Field: f, Message: "bundle id is empty"}
	}
	for i := 0; i < len(bundleID); i++ {
		c := bundleID[i]
		if c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '%' {
			return &ValidationError{Field: f, Message: fmt.Sprintf("bundle id %q has a character that cannot go in a URL path (space, control, '/', '?', '#' or '%%')", bundleID)}
		}
	}
	for _, s := range TopicSuffixes {
		if strings.HasSuffix(bundleID, s) {
			return &ValidationError{Field: f, Message: fmt.Sprintf("bundle id %q ends with the push type suffix %q; broadcast and channel requests take the bare bundle id", bundleID, s)}
		}
	}
	return nil
}

// APIRequest is one request to the broadcast or channel management API,
// ready to send: Method and Path (":method", ":path"), the request headers
// other than authorization (lowercase names), and the body (nil when there
// is none). It is a plain value: build it with [Broadcast.Request] or the
// Channel*Request functions, send it over any HTTP/2 connection.
type APIRequest struct {
	Method string
	Path   string
	Header map[string]string
	Body   []byte
}

// HTTPRequest makes an *http.Request for r against baseURL (such as
// [ManageSandboxURL], without a trailing slash). The caller adds
// authorization for token auth.
func (r *APIRequest) HTTPRequest(ctx context.Context, baseURL string) (*http.Request, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimSuffix(baseURL, "/")+r.Path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range r.Header {
		req.Header.Set(k, v)
	}
	if r.Body != nil {
		req.Header.Set("content-type", "application/json")
	}
	return req, nil
}

// Broadcast is one notification sent on a channel. BundleID, ChannelID and
// Payload are required; Priority 0 means 10; Expiration is always sent
// (Apple marks apns-expiration required), 0 meaning "deliver once, store
// nothing", the only value a StorageNone channel accepts.
type Broadcast struct {
	BundleID   string // bare bundle id, no push type suffix
	ChannelID  string // base64, as APNs returned it
	Priority   int    // 10 or 5 (Apple: Live Activities use 5 or 10); 0 means 10
	Expiration int64  // UNIX seconds; 0 = deliver once, never store
	RequestID  string // optional apns-request-id, a canonical lowercase UUID
	Payload    []byte // a Live Activity payload: update or end, never start
}

// Validate checks b against Apple's rules, so that a broadcast APNs would
// refuse is refused without contacting it. The error is a *ValidationError
// (TooLarge set for an over-size payload).
func (b *Broadcast) Validate() error {
	if err := ValidateBundleID(b.BundleID); err != nil {
		return err
	}
	if err := ValidateChannelID(b.ChannelID); err != nil {
		return err
	}
	switch b.Priority {
	case 0, PriorityImmediate, PriorityConserve:
	default:
		return &ValidationError{Field: "priority", Message: fmt.Sprintf("priority must be 10 or 5 for a Live Activity broadcast, not %d", b.Priority)}
	}
	if b.Expiration < 0 {
		return &ValidationError{Field: "expiration", Message: "expiration must be UNIX seconds, 0 or more"}
	}
	if b.RequestID != "" && !ValidUUID(b.RequestID) {
		return &ValidationError{Field: "request_id", Message: "apns-request-id must be a canonical lowercase UUID (8-4-4-4-12 hex digits)"}
	}
	if len(b.Payload) == 0 {
		return &ValidationError{Field: "payload", Message: "payload is empty"}
	}
	if len(b.Payload) > MaxPayloadBroadcast {
		return &ValidationError{Field: "payload", TooLarge: true, Message: fmt.Sprintf("payload is %d bytes; APNs accepts at most %d for a broadcast", len(b.Payload), MaxPayloadBroadcast)}
	}
	return ValidateBroadcastLiveActivity(b.Payload)
}

// BroadcastPath returns "/4/broadcasts/apps/<bundle id>".
func BroadcastPath(bundleID string) string { return "/4/broadcasts/apps/" + bundleID }

// Request validates b and returns the send: POST /4/broadcasts/apps/<bundle
// id> with apns-channel-id, apns-push-type liveactivity, apns-priority,
// apns-expiration and (if set) apns-request-id. There is no apns-topic: the
// bundle id is in the path.
func (b *Broadcast) Request() (*APIRequest, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	prio := b.Priority
	if prio == 0 {
		prio = PriorityImmediate
	}
	h := map[string]string{
		"apns-channel-id": b.ChannelID,
		"apns-push-type":  BroadcastPushType,
		"apns-priority":   strconv.Itoa(prio),
		"apns-expiration": strconv.FormatInt(b.Expiration, 10),
	}
	if b.RequestID != "" {
		h["apns-request-id"] = b.RequestID
	}
	return &APIRequest{Method: http.MethodPost, Path: BroadcastPath(b.BundleID), Header: h, Body: b.Payload}, nil
}

// ChannelOp is a channel management operation.
type ChannelOp int

const (
	ChannelCreate ChannelOp = iota + 1 // POST   /1/apps/<bundle id>/channels      -> 201
	ChannelGet                         // GET    /1/apps/<bundle id>/channels      -> 200
	ChannelDelete                      // DELETE /1/apps/<bundle id>/channels      -> 204
	ChannelList                        // GET    /1/apps/<bundle id>/all-channels  -> 200
)

func (op ChannelOp) String() string {
	switch op {
	case ChannelCreate:
		return "create"
	case ChannelGet:
		return "get"
	case ChannelDelete:
		return "delete"
	case ChannelList:
		return "list"
	}
	return "ChannelOp(" + strconv.Itoa(int(op)) + ")"
}

// SuccessStatus is the status Apple answers a successful op with.
func (op ChannelOp) SuccessStatus() int {
	switch op {
	case ChannelCreate:
		return http.StatusCreated
	case ChannelDelete:
		return http.StatusNoContent
	}
	return http.StatusOK
}

// ChannelsPath returns "/1/apps/<bundle id>/channels" (create, get, delete).
func ChannelsPath(bundleID string) string { return "/1/apps/" + bundleID + "/channels" }

// AllChannelsPath returns "/1/apps/<bundle id>/all-channels" (list).
func AllChannelsPath(bundleID string) string { return "/1/apps/" + bundleID + "/all-channels" }

// ChannelConfig is the JSON body of a create request and of a get answer.
type ChannelConfig struct {
	StoragePolicy StoragePolicy `json:"message-storage-policy"`
	PushType      string        `json:"push-type"`
}

func channelHeader(requestID string) (map[string]string, error) {
	h := map[string]string{}
	if requestID != "" {
		if !ValidUUID(requestID) {
			return nil, &ValidationError{Field: "request_id", Message: "apns-request-id must be a canonical lowercase UUID (8-4-4-4-12 hex digits)"}
		}
		h["apns-request-id"] = requestID
	}
	return h, nil
}

// CreateChannelRequest returns POST /1/apps/<bundle id>/channels with the
// body {"message-storage-policy":0|1,"push-type":"LiveActivity"}. requestID
// ("" for none) becomes apns-request-id.
func CreateChannelRequest(bundleID string, policy StoragePolicy, requestID string) (*APIRequest, error) {
	if err := ValidateBundleID(bundleID); err != nil {
		return nil, err
	}
	if !policy.Valid() {
		return nil, &ValidationError{Field: "storage", Message: fmt.Sprintf("message storage policy must be 0 (none) or 1 (latest), not %d", int(policy))}
	}
	h, err := channelHeader(requestID)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(ChannelConfig{StoragePolicy: policy, PushType: ChannelPushType})
	return &APIRequest{Method: http.MethodPost, Path: ChannelsPath(bundleID), Header: h, Body: body}, nil
}

// GetChannelRequest returns GET /1/apps/<bundle id>/channels with the
// channel in apns-channel-id.
func GetChannelRequest(bundleID, channelID, requestID string) (*APIRequest, error) {
	return channelIDRequest(http.MethodGet, bundleID, channelID, requestID)
}

// DeleteChannelRequest returns DELETE /1/apps/<bundle id>/channels with the
// channel in apns-channel-id. Deleting is irreversible.
func DeleteChannelRequest(bundleID, channelID, requestID string) (*APIRequest, error) {
	return channelIDRequest(http.MethodDelete, bundleID, channelID, requestID)
}

func channelIDRequest(method, bundleID, channelID, requestID string) (*APIRequest, error) {
	if err := ValidateBundleID(bundleID); err != nil {
		return nil, err
	}
	if err := ValidateChannelID(channelID); err != nil {
		return nil, err
	}
	h, err := channelHeader(requestID)
	if err != nil {
		return nil, err
	}
	h["apns-channel-id"] = channelID
	return &APIRequest{Method: method, Path: ChannelsPath(bundleID), Header: h}, nil
}

// ListChannelsRequest returns GET /1/apps/<bundle id>/all-channels.
func ListChannelsRequest(bundleID, requestID string) (*APIRequest, error) {
	if err := ValidateBundleID(bundleID); err != nil {
		return nil, err
	}
	h, err := channelHeader(requestID)
	if err != nil {
		return nil, err
	}
	return &APIRequest{Method: http.MethodGet, Path: AllChannelsPath(bundleID), Header: h}, nil
}

// ChannelResponse is APNs' answer to a channel management request or a
// broadcast send.
type ChannelResponse struct {
	StatusCode int
	Reason     Reason // empty on success
	RequestID  string // apns-request-id of the answer
	// ChannelID is the new channel (create: the apns-channel-id header).
	ChannelID string
	// Config is the channel's configuration (get).
	Config ChannelConfig
	// Channels are the app's channel ids (list).
	Channels []string
}

// OK reports whether the request succeeded.
func (r *ChannelResponse) OK() bool {
	return r.Reason == "" && r.StatusCode >= 200 && r.StatusCode < 300
}

// ProtocolError is an answer that does not have the shape Apple documents
// (a 201 without apns-channel-id, a list body that is not JSON, ...).
type ProtocolError struct {
	Op     string
	Status int
	Msg    string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("apns: %s answer (status %d) is malformed: %s", e.Op, e.Status, e.Msg)
}

// ParseChannelResponse reads the answer to op. A success status other than
// op's documented one (201 create, 204 delete, 200 get and list) is
// accepted as long as the data op needs is there. On error (4xx, 5xx) the
// reason comes from the JSON body; a body that is missing or not JSON
// leaves Reason empty and is not an error. The error is a *ProtocolError
// when a success answer lacks what Apple documents.
func ParseChannelResponse(op ChannelOp, status int, header http.Header, body []byte) (*ChannelResponse, error) {
	r := &ChannelResponse{StatusCode: status, RequestID: header.Get("apns-request-id")}
	if status < 200 || status >= 300 {
		r.Reason = errorReason(body)
		return r, nil
	}
	perr := func(format string, args ...any) error {
		return &ProtocolError{Op: "channel " + op.String(), Status: status, Msg: fmt.Sprintf(format, args...)}
	}
	switch op {
	case ChannelCreate:
		r.ChannelID = header.Get("apns-channel-id")
		if r.ChannelID == "" {
			return nil, perr("no apns-channel-id header")
		}
		if err := ValidateChannelID(r.ChannelID); err != nil {
			return nil, perr("apns-channel-id %q is not base64", r.ChannelID)
		}
	case ChannelGet:
		var raw struct {
			Policy   *int   `json:"message-storage-policy"`
			PushType string `json:"push-type"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, perr("body is not the JSON object Apple documents: %v", err)
		}
		if raw.Policy == nil {
			return nil, perr("body has no message-storage-policy")
		}
		r.Config = ChannelConfig{StoragePolicy: StoragePolicy(*raw.Policy), PushType: raw.PushType}
		if !r.Config.StoragePolicy.Valid() {
			return nil, perr("message-storage-policy is %d, not 0 or 1", *raw.Policy)
		}
	case ChannelList:
		var raw struct {
			Channels *[]string `json:"channels"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, perr("body is not the JSON object Apple documents: %v", err)
		}
		if raw.Channels == nil {
			return nil, perr("body has no \"channels\" list")
		}
		r.Channels = *raw.Channels
	case ChannelDelete:
	default:
		return nil, perr("unknown operation")
	}
	return r, nil
}

// ParseBroadcastResponse reads the answer to a broadcast send: 200 with an
// empty body, or an error status with {"reason": ...}.
func ParseBroadcastResponse(status int, header http.Header, body []byte) *ChannelResponse {
	r := &ChannelResponse{StatusCode: status, RequestID: header.Get("apns-request-id")}
	if status != http.StatusOK {
		r.Reason = errorReason(body)
	}
	return r
}

func errorReason(body []byte) Reason {
	var e struct {
		Reason string `json:"reason"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	return e.Reason
}
