package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

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
	// Tokens (multicast) and ChannelID (broadcast) replace Token.
	Tokens    []string `json:"tokens,omitempty"`
	ChannelID string   `json:"channel_id,omitempty"`
	// Storage is channel_create's message storage policy.
	Storage string `json:"storage,omitempty"`
	// Deadline is Unix time in milliseconds (PROTOCOL.md "deadline").
	Deadline *int64 `json:"deadline,omitempty"`
	// readAt is when the server read the line (see Send.ReadAt).
	readAt time.Time `json:"-"`
	// send is the Send the server's opSend fills (fillSend).
	send Send `json:"-"`
}

// The environments a send may name ("env"); empty means the app's default.
const (
	EnvSandbox    = "sandbox"
	EnvProduction = "production"
)

// Send is a validated "send" in the protocol's own terms: a clean device
// token, the final payload (shorthand merged into payload.aps, compacted)
// and the APNs fields as the client gave them. It holds no APNs rule: the
// daemon turns it into an APNs notification, applying APNs' defaults (push
// type, priority) and limits (payload size, header formats) there.
type Send struct {
	App  string
	Env  string // "", EnvSandbox or EnvProduction; "" means the app's default
	Wait bool
	// Token is lowercase hex, non-empty, of even length (CleanToken). It is
	// "" for a multicast (Tokens) and a broadcast (ChannelID).
	Token string
	// Tokens is set for a multicast: 1 to MaxMulticastTokens entries in the
	// order given, each cleaned (CleanToken) or, when malformed, as given
	// with its refusal at the same index of TokenErrs.
	Tokens    []string
	TokenErrs []*Error
	// ChannelID is set for a broadcast send (Apple's channel id, as given).
	ChannelID string
	// Payload is a compact JSON object.
	Payload    []byte
	Topic      string // "" means the app's topic
	PushType   string // "" means the daemon picks one from the payload
	Priority   *int
	Expiration *int64
	CollapseID string
	ApnsID     string
	// Deadline is the caller's deadline ("deadline"), zero for none: a send
	// read after it is answered expired and never sent, one unanswered at it
	// is answered timeout.
	Deadline time.Time
	// ReadAt is when the server's Read that completed the line returned,
	// zero for a Send not read from a socket. The daemon starts the
	// notification's request_timeout from it, which spares a clock read
	// per notification (and is, if anything, early by the decoding time).
	ReadAt time.Time
}

// requests recycles decoded requests: the server's send path puts its
// Request back once Submit has returned (releaseRequest); every other
// Request is left to the collector.
var requests = sync.Pool{New: func() any { return new(Request) }}

// releaseRequest zeroes r and puts it back for the next decodeRequest.
// Only for a request nothing refers to any more: the Request struct
// itself, its Send included (the strings and byte slices it points to are
// copies of the line of their own and stay valid).
func releaseRequest(r *Request) {
	*r = Request{}
	requests.Put(r)
}

// DecodeRequest parses one line. On failure it returns the *Error to answer
// with and whatever id could be recovered, so the answer can still echo it.
func DecodeRequest(line []byte) (*Request, *Error) { return decodeRequest(line, true) }

// decodeRequest is DecodeRequest; with fast false it never takes
// decodeFast's short cut (the reference, for FuzzFastDecode).
func decodeRequest(line []byte, fast bool) (*Request, *Error) {
	trimmed := bytes.TrimSpace(line)
	if !utf8.Valid(trimmed) {
		return nil, Errorf(CodeBadJSON, "line is not valid UTF-8 (at byte %d); send JSON as UTF-8", invalidUTF8At(trimmed))
	}
	if at := loneSurrogate(trimmed); at >= 0 {
		return nil, Errorf(CodeBadJSON, "line has a lone UTF-16 surrogate escape at byte %d (\\ud800-\\udfff must come in pairs)", at)
	}
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return nil, Errorf(CodeBadJSON, "line is not valid JSON")
		}
		return nil, Errorf(CodeBadJSON, "a request must be a JSON object")
	}
	req := requests.Get().(*Request)      // zero: see releaseRequest
	if fast && decodeFast(trimmed, req) { // fastdecode.go: what the decoder below would give, without it
		return checkID(req)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	err := dec.Decode(req)
	if err == nil && len(bytes.TrimSpace(trimmed[dec.InputOffset():])) > 0 {
		return nil, Errorf(CodeBadJSON, "line is not valid JSON: more than one value")
	}
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, Errorf(CodeBadJSON, "line is not valid JSON")
		}
		if !json.Valid(trimmed) { // e.g. invalid UTF-8 the decoder did not flag first
			return nil, Errorf(CodeBadJSON, "line is not valid JSON")
		}
		// Recover the id so the error can echo it.
		var idOnly struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(trimmed, &idOnly)
		req.ID = idOnly.ID
		return req, Errorf(CodeBadRequest, "%s", describeDecodeError(err))
	}
	return checkID(req)
}

// checkID ends DecodeRequest for a decoded line: "id": null is no id, and
// an id must be a string or a number.
func checkID(req *Request) (*Request, *Error) {
	if string(req.ID) == "null" {
		req.ID = nil // "id": null is the same as no id
	}
	if len(req.ID) > 0 && !validID(req.ID) {
		return req, Errorf(CodeBadRequest, "id must be a string or a number")
	}
	return req, nil
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

// Send validates a "send" as the protocol defines it: token clean-up, env
// name, shorthand merged into payload.aps. APNs' own rules are checked by
// the daemon (see daemon.NewNotification).
func (r *Request) Send() (*Send, *Error) {
	s := new(Send)
	if e := r.fillSend(s); e != nil {
		return nil, e
	}
	return s, nil
}

// fillSend is Send into s (the server's own path gives r's send field, one
// allocation less per notification).
func (r *Request) fillSend(s *Send) *Error {
	var token string
	var tokens []string
	var tokenErrs []*Error
	switch {
	case r.Tokens != nil || r.ChannelID != "":
		if e := r.checkTargets(); e != nil {
			return e
		}
		if r.Tokens != nil {
			tokens, tokenErrs = cleanTokens(r.Tokens)
		}
	default:
		t, err := CleanToken(r.Token)
		if err != nil {
			return Errorf(CodeInvalidToken, "%v", err)
		}
		token = t
	}
	switch r.Env {
	case "", EnvSandbox, EnvProduction:
	default:
		return Errorf(CodeBadRequest, "env must be %q or %q, not %q", EnvSandbox, EnvProduction, r.Env)
	}
	payload, perr := r.buildPayload()
	if perr != nil {
		return perr
	}
	var deadline time.Time
	if r.Deadline != nil {
		ms := *r.Deadline
		if ms < minDeadlineMs {
			return Errorf(CodeBadRequest, "deadline must be a Unix time in milliseconds (13 digits today), got %d: seconds by mistake?", ms)
		}
		deadline = time.UnixMilli(ms)
	}
	wait := true
	if r.Wait != nil {
		wait = *r.Wait
	}
	*s = Send{
		App: r.App, Env: r.Env, Wait: wait,
		Token: token, Tokens: tokens, TokenErrs: tokenErrs, ChannelID: r.ChannelID, Payload: payload,
		Topic: r.Topic, PushType: r.PushType, Priority: r.Priority, Expiration: r.Expiration,
		CollapseID: r.CollapseID, ApnsID: r.ApnsID, Deadline: deadline, ReadAt: r.readAt,
	}
	return nil
}

// minDeadlineMs is the smallest "deadline" accepted (2001-09-09 in
// milliseconds): anything smaller is a deadline in seconds by mistake, which
// would expire every request.
const minDeadlineMs = 1_000_000_000_000

// buildPayload merges alert/badge/sound into payload.aps and compacts it.
func (r *Request) buildPayload() ([]byte, *Error) {
	if p, ok := r.payloadAsIs(); ok { // fastdecode.go
		return p, nil
	}
	short := map[string]json.RawMessage{}
	for k, v := range map[string]json.RawMessage{"alert": r.Alert, "badge": r.Badge, "sound": r.Sound} {
		if len(v) > 0 && string(v) != "null" {
			short[k] = v
		}
	}
	if len(r.Payload) == 0 || string(r.Payload) == "null" {
		if len(short) == 0 {
			return nil, Errorf(CodeBadRequest, "nothing to send: give \"payload\" or at least one of \"alert\", \"badge\", \"sound\"")
		}
		if err := checkShorthand(short); err != nil {
			return nil, err
		}
		b, err := json.Marshal(map[string]any{"aps": short})
		if err != nil {
			return nil, Errorf(CodeBadRequest, "payload: %v", err)
		}
		return b, nil
	}
	if r.Payload[0] != '{' {
		return nil, Errorf(CodeBadRequest, "payload must be a JSON object")
	}
	if len(short) == 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, r.Payload); err != nil {
			return nil, Errorf(CodeBadRequest, "payload: %v", err)
		}
		return buf.Bytes(), nil
	}
	if err := checkShorthand(short); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.Payload, &top); err != nil {
		return nil, Errorf(CodeBadRequest, "payload must be a JSON object")
	}
	aps := map[string]json.RawMessage{}
	if raw, ok := top["aps"]; ok {
		if err := json.Unmarshal(raw, &aps); err != nil || aps == nil {
			return nil, Errorf(CodeBadRequest, "payload.aps must be a JSON object")
		}
	}
	for k, v := range short {
		if _, dup := aps[k]; dup {
			return nil, Errorf(CodeBadRequest, "%q is given both as a field and in payload.aps; give it once", k)
		}
		aps[k] = v
	}
	apsJSON, err := json.Marshal(aps)
	if err != nil {
		return nil, Errorf(CodeBadRequest, "payload.aps: %v", err)
	}
	top["aps"] = apsJSON
	b, err := json.Marshal(top)
	if err != nil {
		return nil, Errorf(CodeBadRequest, "payload: %v", err)
	}
	return b, nil
}

func checkShorthand(short map[string]json.RawMessage) *Error {
	if v, ok := short["alert"]; ok && v[0] != '"' && v[0] != '{' {
		return Errorf(CodeBadRequest, "alert must be a string or an object")
	}
	if v, ok := short["badge"]; ok {
		var n int
		if err := json.Unmarshal(v, &n); err != nil || n < 0 {
			return Errorf(CodeBadRequest, "badge must be a whole number, 0 or more")
		}
	}
	if v, ok := short["sound"]; ok && v[0] != '"' && v[0] != '{' {
		return Errorf(CodeBadRequest, "sound must be a string or an object")
	}
	return nil
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
	if alreadyClean(s) { // fastdecode.go
		return s, nil
	}
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

// invalidUTF8At is the offset of the first byte of b that is not valid
// UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// loneSurrogate returns the offset of the first \u escape inside a JSON
// string of b that is a UTF-16 surrogate without its pair (encoding/json
// would turn it into U+FFFD silently), or -1. b need not be valid JSON.
func loneSurrogate(b []byte) int {
	if !bytes.Contains(b, []byte(`\u`)) {
		return -1
	}
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 < len(b) && b[i+1] == 'u' {
				r, ok := hex4(b, i+2)
				if !ok {
					i++ // invalid escape: the decoder reports it
					continue
				}
				switch {
				case r >= 0xD800 && r < 0xDC00:
					if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
						if lo, ok := hex4(b, i+8); ok && lo >= 0xDC00 && lo < 0xE000 {
							i += 11
							continue
						}
					}
					return i
				case r >= 0xDC00 && r < 0xE000:
					return i
				}
				i += 5
				continue
			}
			i++
		}
	}
	return -1
}

// hex4 reads the four hex digits at b[at:at+4] (a \u escape's).
func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}
