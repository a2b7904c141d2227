package ipc

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// The fast request decoder. DecodeRequest's encoding/json path is the
// reference: decodeFast either leaves in req exactly what that path's
// Decoder (DisallowUnknownFields, one value, nothing after it) would, or it
// reports false and the reference path decodes the line from scratch.
// decodeFast never produces an error of its own: every refusal, and every
// message, comes from the reference path. It says false for anything it is
// not sure of:
//   - a key that is not exactly one of fastFields' names (an unknown field, a
//     key in other letter case, which encoding/json would match, a key with
//     an escape), or a key given twice;
//   - a value of another JSON type than its field's, or a number that is not
//     an integer its field holds;
//   - a backslash in a string field, or in any string a \u escape of a
//     UTF-16 surrogate (paired or not);
//   - invalid UTF-8 anywhere; bytes outside JSON's grammar; nesting deeper
//     than fastMaxDepth; anything after the object.
// FuzzFastDecode checks the equivalence on arbitrary lines.

// fastKind is how a field's JSON value is decoded.
type fastKind uint8

const (
	kindString fastKind = iota // string: a JSON string without escapes, or null (no change)
	kindRaw                    // json.RawMessage: any JSON value, copied as written
	kindInt                    // *int: an integer, or null (stays nil)
	kindInt64                  // *int64: an integer, or null (stays nil)
	kindBool                   // *bool: true or false, or null (stays nil)
)

// fastField is one Request field decodeFast fills.
type fastField struct {
	name string // the JSON key, exactly as Request's tag spells it
	kind fastKind
}

// fastFields are the Request fields decodeFast knows, by index. A field of
// Request not listed here is decoded by the reference path only (a line
// naming it falls back); TestFastFieldsMatchRequest checks each entry
// against Request's tags and types. At most 64 entries (the seen mask).
var fastFields = [...]fastField{
	fID:         {"id", kindRaw},
	fOp:         {"op", kindString},
	fToken:      {"token", kindString},
	fApp:        {"app", kindString},
	fEnv:        {"env", kindString},
	fPayload:    {"payload", kindRaw},
	fAlert:      {"alert", kindRaw},
	fBadge:      {"badge", kindRaw},
	fSound:      {"sound", kindRaw},
	fTopic:      {"topic", kindString},
	fPushType:   {"push_type", kindString},
	fPriority:   {"priority", kindInt},
	fExpiration: {"expiration", kindInt64},
	fCollapseID: {"collapse_id", kindString},
	fApnsID:     {"apns_id", kindString},
	fWait:       {"wait", kindBool},
	fDeadline:   {"deadline", kindInt64},
}

// Indexes into fastFields; fillRequest sets the field of each.
const (
	fID = iota
	fOp
	fToken
	fApp
	fEnv
	fPayload
	fAlert
	fBadge
	fSound
	fTopic
	fPushType
	fPriority
	fExpiration
	fCollapseID
	fApnsID
	fWait
	fDeadline
)

// fastMaxDepth bounds the nesting decodeFast follows inside a raw value
// (encoding/json's own limit is 10000; deeper lines fall back).
const fastMaxDepth = 64

// fastSpan is a field's value as found in the line: b[start:end], or for
// kindInt/kindInt64/kindBool the parsed value in n (bool: 0 or 1).
type fastSpan struct {
	field      int
	start, end int
	n          int64
	null       bool
}

// decodeFast decodes line, a request line without surrounding white space
// that starts with '{', into req (a zero Request). It reports whether it
// did; on false req is unspecified and the caller decodes with
// encoding/json. The strings and raw values in req do not alias line.
func decodeFast(line []byte, req *Request) bool {
	var spans [len(fastFields)]fastSpan
	n := 0
	var seen uint64
	i := skipWS(line, 1)
	if i < len(line) && line[i] == '}' {
		return i+1 == len(line)
	}
	for {
		// A key: exactly a known name, no escapes.
		if i >= len(line) || line[i] != '"' {
			return false
		}
		end := i + 1
		for end < len(line) && line[end] != '"' && line[end] != '\\' && line[end] >= 0x20 && line[end] < 0x80 {
			end++
		}
		if end >= len(line) || line[end] != '"' {
			return false
		}
		f := fastFieldIndex(line[i+1 : end])
		if f < 0 || seen&(1<<f) != 0 {
			return false
		}
		seen |= 1 << f
		i = skipWS(line, end+1)
		if i >= len(line) || line[i] != ':' {
			return false
		}
		i = skipWS(line, i+1)
		sp := fastSpan{field: f, start: i}
		var ok bool
		if i, ok = fastValue(line, i, fastFields[f].kind, &sp); !ok {
			return false
		}
		sp.end = i
		spans[n] = sp
		n++
		i = skipWS(line, i)
		if i >= len(line) {
			return false
		}
		switch line[i] {
		case ',':
			i = skipWS(line, i+1)
			continue
		case '}':
			if i+1 != len(line) {
				return false // something after the object
			}
		default:
			return false
		}
		break
	}
	fillRequest(line, spans[:n], req)
	return true
}

// fastValue scans the value at line[i] for a field of kind k, recording it
// in sp, and returns the index after it.
func fastValue(line []byte, i int, k fastKind, sp *fastSpan) (int, bool) {
	if i >= len(line) {
		return i, false
	}
	if line[i] == 'n' {
		if !hasLiteral(line, i, "null") {
			return i, false
		}
		sp.null = true
		return i + 4, true
	}
	switch k {
	case kindString:
		if line[i] != '"' {
			return i, false
		}
		return scanString(line, i, false)
	case kindRaw:
		return scanValue(line, i, 0)
	case kindInt, kindInt64:
		end, ok := scanNumber(line, i)
		if !ok {
			return i, false
		}
		for _, c := range line[i:end] {
			if c == '.' || c == 'e' || c == 'E' {
				return i, false // not an integer: the reference path says so
			}
		}
		bits := 64
		if k == kindInt {
			bits = strconv.IntSize
		}
		v, err := strconv.ParseInt(string(line[i:end]), 10, bits)
		if err != nil {
			return i, false
		}
		sp.n = v
		return end, true
	case kindBool:
		switch {
		case hasLiteral(line, i, "true"):
			sp.n = 1
			return i + 4, true
		case hasLiteral(line, i, "false"):
			return i + 5, true
		}
	}
	return i, false
}

// fillRequest sets req's fields from spans. The string values and the raw
// values are copied, back to back, into one allocation (the strings'
// region first, the raw values' after): one allocation per line, no more
// than the values it keeps. The string region is never handed out as
// bytes, so it is as immutable as any string; each raw value is capped, so
// that an append to one cannot reach the next.
func fillRequest(line []byte, spans []fastSpan, req *Request) {
	strLen, rawLen := 0, 0
	for _, sp := range spans {
		switch fastFields[sp.field].kind {
		case kindString:
			if !sp.null {
				strLen += sp.end - sp.start - 2 // without the quotes
			}
		case kindRaw:
			rawLen += sp.end - sp.start
		}
	}
	var buf []byte
	var str string
	if strLen+rawLen > 0 {
		buf = make([]byte, strLen+rawLen)
		str = unsafe.String(unsafe.SliceData(buf), strLen)
	}
	raw := buf[strLen:]
	so, ro := 0, 0 // where the next string and raw value go
	for _, sp := range spans {
		k := fastFields[sp.field].kind
		if sp.null && k != kindRaw {
			continue // null leaves a string unchanged and a pointer nil
		}
		switch k {
		case kindString:
			n := copy(buf[so:strLen], line[sp.start+1:sp.end-1])
			s := str[so : so+n]
			so += n
			switch sp.field {
			case fOp:
				req.Op = s
			case fToken:
				req.Token = s
			case fApp:
				req.App = s
			case fEnv:
				req.Env = s
			case fTopic:
				req.Topic = s
			case fPushType:
				req.PushType = s
			case fCollapseID:
				req.CollapseID = s
			case fApnsID:
				req.ApnsID = s
			}
		case kindRaw:
			n := copy(raw[ro:], line[sp.start:sp.end])
			v := raw[ro : ro+n : ro+n]
			ro += n
			switch sp.field {
			case fID:
				req.ID = v
			case fPayload:
				req.Payload = v
			case fAlert:
				req.Alert = v
			case fBadge:
				req.Badge = v
			case fSound:
				req.Sound = v
			}
		case kindInt:
			v := int(sp.n)
			req.Priority = &v
		case kindInt64:
			v := sp.n
			if sp.field == fDeadline {
				req.Deadline = &v
			} else {
				req.Expiration = &v
			}
		case kindBool:
			v := sp.n == 1
			req.Wait = &v
		}
	}
}

// fastFieldIndex is the index in fastFields of the key spelled exactly
// name, or -1.
func fastFieldIndex(name []byte) int {
	for i := range fastFields {
		if fastFields[i].name == string(name) {
			return i
		}
	}
	return -1
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func hasLiteral(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// scanValue scans one JSON value at b[i] and returns the index after it;
// false for anything outside the grammar or outside what decodeFast
// handles (see the file comment).
func scanValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return scanString(b, i, true)
	case c == '{':
		if depth >= fastMaxDepth {
			return i, false
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			var ok bool
			if i, ok = scanString(b, i, true); !ok {
				return i, false
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = scanValue(b, skipWS(b, i+1), depth+1); !ok {
				return i, false
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			if b[i] == '}' {
				return i + 1, true
			}
			if b[i] != ',' {
				return i, false
			}
			i = skipWS(b, i+1)
		}
	case c == '[':
		if depth >= fastMaxDepth {
			return i, false
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = scanValue(b, i, depth+1); !ok {
				return i, false
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			if b[i] == ']' {
				return i + 1, true
			}
			if b[i] != ',' {
				return i, false
			}
			i = skipWS(b, i+1)
		}
	case c == '-' || c >= '0' && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return i + 4, hasLiteral(b, i, "true")
	case c == 'f':
		return i + 5, hasLiteral(b, i, "false")
	case c == 'n':
		return i + 4, hasLiteral(b, i, "null")
	}
	return i, false
}

// scanString scans the JSON string starting at b[i] == '"' and returns the
// index after its closing quote. Escapes are accepted only if escapes is
// set, and then not a \u escape of a surrogate. Non-ASCII bytes must be
// valid UTF-8.
func scanString(b []byte, i int, escapes bool) (int, bool) {
	i++
	ascii := true
	start := i
	for i < len(b) {
		// Eight plain bytes at a time (most of a token or an alert).
		for i+8 <= len(b) && plain8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(b[start:i]) {
				return i, false
			}
			return i + 1, true
		case c < 0x20:
			return i, false
		case c >= 0x80:
			ascii = false
			i++
		case c == '\\':
			if !escapes || i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(b, i+2)
				if !ok || r >= 0xD800 && r < 0xE000 {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		default:
			i++
		}
	}
	return i, false
}

// plain8 reports whether none of the eight bytes of x needs a look in a
// JSON string: no '"', no '\\', no control byte (< 0x20), no non-ASCII byte.
// Each test is the exact "some byte is zero / less than n" word trick.
func plain8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	ctl := (x - 0x20*ones) & ^x & highs
	return ctl|hasZero(x^('"'*ones))|hasZero(x^('\\'*ones))|x&highs == 0
}

// scanNumber scans a JSON number at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	digits := func(i int) (int, bool) {
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j, j > i
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return i, false
	}
	var ok bool
	if b[i] == '0' {
		i++
	} else if i, ok = digits(i); !ok {
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		if i, ok = digits(i + 1); !ok {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i, ok = digits(i); !ok {
			return i, false
		}
	}
	return i, true
}

// alreadyCompact reports whether raw is one JSON value (as scanValue takes
// it) without white space outside its strings: json.Compact would return it
// unchanged.
func alreadyCompact(raw []byte) bool {
	end, ok := scanValue(raw, 0, 0)
	if !ok || end != len(raw) {
		return false
	}
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}

// alreadyClean reports whether s is a device token as CleanToken returns
// it (non-empty, even length, at most MaxTokenHex, lowercase hex), so that
// CleanToken(s) is s.
func alreadyClean(s string) bool {
	if s == "" || len(s)%2 != 0 || len(s) > MaxTokenHex {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// payloadAsIs returns r.Payload when buildPayload would return it
// unchanged: no shorthand (alert, badge, sound absent or null) and a
// payload that is a JSON object already compact. It saves buildPayload's
// maps and copy on the common path.
func (r *Request) payloadAsIs() ([]byte, bool) {
	for _, v := range [...]json.RawMessage{r.Alert, r.Badge, r.Sound} {
		if len(v) > 0 && string(v) != "null" {
			return nil, false
		}
	}
	if len(r.Payload) == 0 || r.Payload[0] != '{' || !alreadyCompact(r.Payload) {
		return nil, false
	}
	return r.Payload, true
}
