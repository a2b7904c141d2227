package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/apnsd/apnsd/internal/apns"
)

// Error codes of the protocol (PROTOCOL.md, "Responses").
const (
	CodeBadJSON         = "bad_json"
	CodeLineTooLong     = "line_too_long"
	CodeBadRequest      = "bad_request"
	CodeUnknownOp       = "unknown_op"
	CodeInvalidToken    = "invalid_token"
	CodeUnknownApp      = "unknown_app"
	CodePayloadTooLarge = "payload_too_large"
	CodeQueueFull       = "queue_full"
	CodeTimeout         = "timeout"
	CodeUnavailable     = "unavailable"
	CodeShuttingDown    = "shutting_down"
	CodeReloadFailed    = "reload_failed"
	CodeForbidden       = "forbidden"
	CodeInternal        = "internal"
)

// Error is a refusal by apnsd itself (as opposed to an answer from APNs).
type Error struct {
	Code      string
	Message   string
	Retryable bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf makes an *Error.
func Errorf(code string, retryable bool, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: retryable}
}

// Response is one line apnsd writes back. Exactly one is written per
// request line, in request order.
type Response struct {
	ID json.RawMessage `json:"id,omitempty"`
	OK bool            `json:"ok"`

	// Answers from APNs.
	Status    int    `json:"status,omitempty"`
	Reason    string `json:"reason,omitempty"`
	ApnsID    string `json:"apns_id,omitempty"`
	Timestamp int64  `json:"timestamp,omitempty"`
	// Queued is set for a send with "wait":false that was accepted.
	Queued bool `json:"queued,omitempty"`

	// Refusals by apnsd.
	Error     string `json:"error,omitempty"`
	Message   string `json:"message,omitempty"`
	Retryable *bool  `json:"retryable,omitempty"`

	// Other ops.
	Pong    bool   `json:"pong,omitempty"`
	Version string `json:"version,omitempty"`
	*StatusReport
	*ReloadReport
}

// ErrorResponse turns err into a response. A non-*Error becomes "internal".
func ErrorResponse(err error) *Response {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	r := e.Retryable
	return &Response{Error: e.Code, Message: e.Message, Retryable: &r}
}

// Err rebuilds the *Error from a refusal response, or returns nil.
func (r *Response) Err() *Error {
	if r.Error == "" {
		return nil
	}
	e := &Error{Code: r.Error, Message: r.Message}
	if r.Retryable != nil {
		e.Retryable = *r.Retryable
	}
	return e
}

// Request is one decoded request line. Field names follow PROTOCOL.md.
type Request struct {
	ID         json.RawMessage `json:"id,omitempty"`
	Op         string          `json:"op,omitempty"`
	Token      string          `json:"token,omitempty"`
	App        string          `json:"app,omitempty"`
	Env        string          `json:"env,omitempty"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	Alert      json.RawMessage `json:"alert,omitempty"`
	Badge      json.RawMessage `json:"badge,omitempty"`
	Sound      json.RawMessage `json:"sound,omitempty"`
	Topic      string          `json:"topic,omitempty"`
	PushType   string          `json:"push_type,omitempty"`
	Priority   *int            `json:"priority,omitempty"`
	Expiration *int64          `json:"expiration,omitempty"`
	CollapseID string          `json:"collapse_id,omitempty"`
	ApnsID     string          `json:"apns_id,omitempty"`
	Wait       *bool           `json:"wait,omitempty"`
}

// SendRequest is a validated "send": the notification is complete except
// for the topic, which the backend fills in from the app when empty.
type SendRequest struct {
	App  string
	Env  string // "" means the app's default
	Wait bool
	// Notification has a cleaned token, the final payload, and push type
	// and priority defaults applied.
	Notification apns.Notification
}

// DecodeRequest parses one line. On failure it returns the *Error to answer
// with and whatever id could be recovered, so the answer can still echo it.
func DecodeRequest(line []byte) (*Request, *Error) {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return nil, Errorf(CodeBadJSON, false, "line is not valid JSON")
		}
		return nil, Errorf(CodeBadJSON, false, "a request must be a JSON object")
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && len(bytes.TrimSpace(trimmed[dec.InputOffset():])) > 0 {
		return nil, Errorf(CodeBadJSON, false, "line is not valid JSON: more than one value")
	}
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, Errorf(CodeBadJSON, false, "line is not valid JSON")
		}
		if !json.Valid(trimmed) { // e.g. invalid UTF-8 the decoder did not flag first
			return nil, Errorf(CodeBadJSON, false, "line is not valid JSON")
		}
		// Recover the id so the error can echo it.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(trimmed, &idOnly)
		req.ID = idOnly.ID
		return &req, Errorf(CodeBadRequest, false, "%s", describeDecodeError(err))
	}
	if string(req.ID) == "null" {
		req.ID = nil // "id": null is the same as no id
	}
	if len(req.ID) > 0 && !validID(req.ID) {
		return &req, Errorf(CodeBadRequest, false, "id must be a string or a number")
	}
	return &req, nil
}

// validID reports whether a (valid JSON) id is a string or a number.
func validID(raw json.RawMessage) bool {
	switch c := raw[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return true
	}
	return false
}

func describeDecodeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: expected %s, got JSON %s", te.Field, te.Type, te.Value)
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return "unknown field " + rest
	}
	return strings.TrimPrefix(msg, "json: ")
}

// SendRequest validates a "send" and builds the notification: token
// clean-up, shorthand merged into payload.aps, push type and priority
// defaults, and APNs' own limits (payload size, header formats).
func (r *Request) SendRequest() (*SendRequest, *Error) {
	token, err := CleanToken(r.Token)
	if err != nil {
		return nil, Errorf(CodeInvalidToken, false, "%v", err)
	}
	switch r.Env {
	case "", apns.Sandbox, apns.Production:
	default:
		return nil, Errorf(CodeBadRequest, false, "env must be %q or %q, not %q", apns.Sandbox, apns.Production, r.Env)
	}
	payload, perr := r.buildPayload()
	if perr != nil {
		return nil, perr
	}
	n := apns.Notification{
		DeviceToken: token,
		Topic:       r.Topic,
		PushType:    r.PushType,
		CollapseID:  r.CollapseID,
		ApnsID:      r.ApnsID,
		Payload:     payload,
	}
	if r.Priority != nil {
		n.Priority = *r.Priority
	}
	if r.Expiration != nil {
		n.Expiration, n.HasExpiration = *r.Expiration, true
	}
	if n.PushType == "" {
		n.PushType = defaultPushType(payload)
	}
	if n.PushType == apns.PushTypeBackground && r.Priority == nil {
		n.Priority = apns.PriorityConserve // APNs refuses background pushes at priority 10
	}
	// The topic is filled in by the backend; validate with a stand-in so
	// that every other rule is checked here.
	check := n
	if check.Topic == "" {
		check.Topic = "-"
	}
	if err := check.Validate(); err != nil {
		var ve *apns.ValidationError
		if errors.As(err, &ve) && ve.TooLarge {
			return nil, Errorf(CodePayloadTooLarge, false, "%s", ve.Message)
		}
		return nil, Errorf(CodeBadRequest, false, "%v", err)
	}
	wait := true
	if r.Wait != nil {
		wait = *r.Wait
	}
	return &SendRequest{App: r.App, Env: r.Env, Wait: wait, Notification: n}, nil
}

// buildPayload merges alert/badge/sound into payload.aps and compacts it.
func (r *Request) buildPayload() ([]byte, *Error) {
	short := map[string]json.RawMessage{}
	for k, v := range map[string]json.RawMessage{"alert": r.Alert, "badge": r.Badge, "sound": r.Sound} {
		if len(v) > 0 && string(v) != "null" {
			short[k] = v
		}
	}
	if len(r.Payload) == 0 || string(r.Payload) == "null" {
		if len(short) == 0 {
			return nil, Errorf(CodeBadRequest, false, "nothing to send: give \"payload\" or at least one of \"alert\", \"badge\", \"sound\"")
		}
		if err := checkShorthand(short); err != nil {
			return nil, err
		}
		b, err := json.Marshal(map[string]any{"aps": short})
		if err != nil {
			return nil, Errorf(CodeBadRequest, false, "payload: %v", err)
		}
		return b, nil
	}
	if r.Payload[0] != '{' {
		return nil, Errorf(CodeBadRequest, false, "payload must be a JSON object")
	}
	if len(short) == 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, r.Payload); err != nil {
			return nil, Errorf(CodeBadRequest, false, "payload: %v", err)
		}
		return buf.Bytes(), nil
	}
	if err := checkShorthand(short); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.Payload, &top); err != nil {
		return nil, Errorf(CodeBadRequest, false, "payload must be a JSON object")
	}
	aps := map[string]json.RawMessage{}
	if raw, ok := top["aps"]; ok {
		if err := json.Unmarshal(raw, &aps); err != nil || aps == nil {
			return nil, Errorf(CodeBadRequest, false, "payload.aps must be a JSON object")
		}
	}
	for k, v := range short {
		if _, dup := aps[k]; dup {
			return nil, Errorf(CodeBadRequest, false, "%q is given both as a field and in payload.aps; give it once", k)
		}
		aps[k] = v
	}
	apsJSON, err := json.Marshal(aps)
	if err != nil {
		return nil, Errorf(CodeBadRequest, false, "payload.aps: %v", err)
	}
	top["aps"] = apsJSON
	b, err := json.Marshal(top)
	if err != nil {
		return nil, Errorf(CodeBadRequest, false, "payload: %v", err)
	}
	return b, nil
}

func checkShorthand(short map[string]json.RawMessage) *Error {
	if v, ok := short["alert"]; ok && v[0] != '"' && v[0] != '{' {
		return Errorf(CodeBadRequest, false, "alert must be a string or an object")
	}
	if v, ok := short["badge"]; ok {
		var n int
		if err := json.Unmarshal(v, &n); err != nil || n < 0 {
			return Errorf(CodeBadRequest, false, "badge must be a whole number, 0 or more")
		}
	}
	if v, ok := short["sound"]; ok && v[0] != '"' && v[0] != '{' {
		return Errorf(CodeBadRequest, false, "sound must be a string or an object")
	}
	return nil
}

// defaultPushType is "background" for a payload whose aps only says
// content-available (a silent push), else "alert".
func defaultPushType(payload []byte) string {
	if !bytes.Contains(payload, []byte("content-available")) {
		return apns.PushTypeAlert
	}
	var p struct {
		APS map[string]json.RawMessage `json:"aps"`
	}
	if json.Unmarshal(payload, &p) != nil {
		return apns.PushTypeAlert
	}
	if _, ok := p.APS["content-available"]; !ok {
		return apns.PushTypeAlert
	}
	for _, k := range []string{"alert", "badge", "sound"} {
		if _, ok := p.APS[k]; ok {
			return apns.PushTypeAlert
		}
	}
	return apns.PushTypeBackground
}

// MaxTokenHex bounds a device token's length: Apple's tokens are 32 bytes
// and 100 bytes has been announced; this leaves ample room without letting
// a huge string reach APNs' header limits.
const MaxTokenHex = 1024

// CleanToken accepts a device token the way apps log it: "<a1b2c3d4 e5f6...>"
// or plain hex in either case. It strips '<', '>' and whitespace, lowercases,
// and requires a non-empty, even number of hex digits. Apple says token length
// may change, so no length is assumed.
func CleanToken(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '<' || r == '>' || unicode.IsSpace(r):
		case r >= '0' && r <= '9', r >= 'a' && r <= 'f':
			b.WriteRune(r)
		case r >= 'A' && r <= 'F':
			b.WriteRune(r + ('a' - 'A'))
		default:
			return "", fmt.Errorf("device token has %q, which is not a hex digit", r)
		}
	}
	t := b.String()
	if t == "" {
		return "", errors.New("device token is missing or empty")
	}
	if len(t)%2 != 0 {
		return "", fmt.Errorf("device token has %d hex digits; it must have an even number", len(t))
	}
	if len(t) > MaxTokenHex {
		return "", fmt.Errorf("device token has %d hex digits; apnsd accepts at most %d", len(t), MaxTokenHex)
	}
	return t, nil
}
