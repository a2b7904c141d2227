package ipc

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// TestFastFieldsMatchRequest: every field decodeFast fills is a Request
// field with that JSON name and a type of its kind, so that the two decoders
// cannot drift apart when Request changes.
func TestFastFieldsMatchRequest(t *testing.T) {
	want := map[fastKind]reflect.Type{
		kindString: reflect.TypeFor[string](),
		kindRaw:    reflect.TypeFor[json.RawMessage](),
		kindInt:    reflect.TypeFor[*int](),
		kindInt64:  reflect.TypeFor[*int64](),
		kindBool:   reflect.TypeFor[*bool](),
	}
	byName := map[string]reflect.StructField{}
	rt := reflect.TypeFor[Request]()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if strings.Contains(opts, "string") {
			continue // ",string" decodes differently: never in fastFields
		}
		byName[name] = f
	}
	for i, ff := range fastFields {
		f, ok := byName[ff.name]
		if !ok {
			t.Errorf("fastFields[%d] %q: no such Request field (tag without \",string\")", i, ff.name)
			continue
		}
		if f.Type != want[ff.kind] {
			t.Errorf("fastFields[%d] %q: Request.%s is %s, the fast decoder fills a %s", i, ff.name, f.Name, f.Type, want[ff.kind])
		}
		// fillRequest sets the field by index: check it sets this one.
		line := `{"` + ff.name + `":` + map[fastKind]string{kindString: `"x"`, kindRaw: `"x"`, kindInt: `7`, kindInt64: `7`, kindBool: `true`}[ff.kind] + `}`
		var req Request
		if !decodeFast([]byte(line), &req) {
			t.Errorf("%s: fast decoder declined", line)
			continue
		}
		v := reflect.ValueOf(req)
		for j := 0; j < rt.NumField(); j++ {
			if set := !v.Field(j).IsZero(); set != (j == f.Index[0]) {
				t.Errorf("%s: Request.%s set=%v", line, rt.Field(j).Name, set)
			}
		}
	}
	if len(fastFields) > 64 {
		t.Fatalf("%d fastFields; the seen mask holds 64", len(fastFields))
	}
}

// fastDecodeCases are lines for the table test and the fuzz corpus; fast
// tells whether decodeFast must take the line itself (true) or leave it to
// encoding/json.
var fastDecodeCases = []struct {
	line string
	fast bool
}{
	{`{"id":1,"token":"aabb","payload":{"aps":{"alert":"apnsbench"}}}`, true},
	{`{"id":"x-1","token":"<AA bb>","alert":"hi","app":"shop","env":"production"}`, true},
	{`{"token":"aa","payload":{ "aps" : {"alert":"x"}, "k":[1, 2.5e-3, -0, true, false, null, {}, []] },"wait":false,"priority":5,"expiration":0,"push_type":"voip","topic":"t","collapse_id":"c","apns_id":"i"}`, true},
	{` { "id" : 7 , "op" : "ping" } `, true},
	{`{}`, true},
	{`{"op":"ping","id":null}`, true},
	{`{"token":null,"wait":null,"priority":null,"expiration":null,"payload":null}`, true},
	{`{"id":3,"token":"aa","alert":"x","deadline":1764612345678}`, true},
	{`{"token":"aa","alert":"x","deadline":null}`, true},
	{`{"token":"aa","alert":"x","deadline":1.5}`, false},
	{`{"token":"aa","alert":"caf` + "\u00e9 \U0001F600" + `"}`, true},
	{`{"token":"aa","alert":"tab\t\u0041\n\"q\"\\\/"}`, true},
	{`{"id":{"a":1},"op":"ping"}`, true}, // decoded; checkID refuses it
	{`{"id":[1],"op":"ping"}`, true},
	{`{"priority":9223372036854775807,"expiration":-9223372036854775808}`, true},
	{`{"badge":1.5,"sound":{"critical":1}}`, true},

	{`{"Token":"aa"}`, false},      // encoding/json matches case-insensitively
	{`{"tok\u0065n":"aa"}`, false}, // an escape in a key
	{`{"token":"a\u0061"}`, false}, // an escape in a string field
	{`{"token":"aa","token":"bb"}`, false},
	{`{"unknown":1}`, false},
	{`{"priority":1.0}`, false},
	{`{"priority":1e2}`, false},
	{`{"priority":"5"}`, false},
	{`{"priority":9223372036854775808}`, false},
	{`{"wait":1}`, false},
	{`{"token":5}`, false},
	{`{"token":"aa",}`, false},
	{`{"token":"aa"} {}`, false},
	{`{"token":"aa"}x`, false},
	{`{"token":"aa"`, false},
	{`{"alert":"\ud83d\ude00"}`, false}, // surrogates: the reference path's business
	{`{"alert":"\ud800"}`, false},
	{"{\"alert\":\"caf\xe9\"}", false}, // invalid UTF-8
	{"{\"token\":\"caf\xe9\"}", false},
	{"{\"alert\":\"a\x01\"}", false}, // a control character
	{`{"payload":{"a":01}}`, false},
	{`{"payload":{"a":.5}}`, false},
	{`{"payload":{"a":-}}`, false},
	{`{"payload":{"a" 1}}`, false},
	{`{"payload":[1,]}`, false},
	{`{"payload":tru}`, false},
	{`{"payload":"\x"}`, false},
	{`{"payload":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, false},
}

// TestFastDecode: decodeFast takes the lines it should, and DecodeRequest
// gives the same Request and error with and without it.
func TestFastDecode(t *testing.T) {
	for _, c := range fastDecodeCases {
		var req Request
		if got := decodeFast([]byte(strings.TrimSpace(c.line)), &req); got != c.fast {
			t.Errorf("%s: decodeFast took it: %v, want %v", c.line, got, c.fast)
		}
		checkSameDecode(t, []byte(c.line))
	}
}

// checkSameDecode fails t if DecodeRequest's answer for line depends on
// whether decodeFast is used.
func checkSameDecode(t *testing.T, line []byte) {
	t.Helper()
	in := append([]byte(nil), line...)
	fastReq, fastErr := decodeRequest(line, true)
	refReq, refErr := decodeRequest(line, false)
	if !reflect.DeepEqual(fastReq, refReq) || !reflect.DeepEqual(fastErr, refErr) {
		t.Fatalf("%q:\n fast %+v, %v\n ref  %+v, %v", line, fastReq, fastErr, refReq, refErr)
	}
	if string(in) != string(line) {
		t.Fatalf("%q: the line was modified", in)
	}
	// The result must not alias the line (the reference copies too).
	if fastReq != nil && len(line) > 0 {
		for i := range line {
			line[i] = '#'
		}
		again, _ := decodeRequest(in, false)
		if !reflect.DeepEqual(fastReq, again) || !reflect.DeepEqual(refReq, again) {
			t.Fatalf("%q: the decoded request changed with the line's buffer", in)
		}
		copy(line, in)
	}
	// The short cuts of Send: a payload used as it is, a clean token.
	if fastReq != nil && fastErr == nil {
		if p, ok := fastReq.payloadAsIs(); ok {
			var buf bytes.Buffer
			if err := json.Compact(&buf, fastReq.Payload); err != nil || buf.String() != string(p) {
				t.Fatalf("%q: payload used as is, but json.Compact gives %q, %v", line, buf.Bytes(), err)
			}
		}
	}
	if alreadyCompact(line) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, line); err != nil || buf.String() != string(line) {
			t.Fatalf("%q: alreadyCompact, but json.Compact gives %q, %v", line, buf.Bytes(), err)
		}
	}
	if s := string(line); alreadyClean(s) {
		if tok, err := cleanTokenSlow(s); err != nil || tok != s {
			t.Fatalf("%q: alreadyClean, but CleanToken gives %q, %v", s, tok, err)
		}
	}
}

// cleanTokenSlow is CleanToken without its short cut.
func cleanTokenSlow(s string) (string, error) {
	return CleanToken(s + " ") // a trailing space is never clean, and CleanToken drops it
}

// FuzzFastDecode: for any line, DecodeRequest answers the same with the fast
// decoder as with encoding/json alone.
func FuzzFastDecode(f *testing.F) {
	for _, c := range fastDecodeCases {
		f.Add([]byte(c.line))
	}
	for _, s := range []string{`{"aps":{"alert":"x"}}`, `{"a": 1}`, `["a\\\" b"]`, "a1b2", "A1B2", "abc"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		checkSameDecode(t, line)
	})
}

// TestPlain8: the word test agrees with a byte-by-byte look: for every
// byte value at every position of a plain word, and for random words.
func TestPlain8(t *testing.T) {
	plain := func(b []byte) bool {
		for _, c := range b {
			if c == '"' || c == '\\' || c < 0x20 || c >= 0x80 {
				return false
			}
		}
		return true
	}
	check := func(w []byte) {
		if got, want := plain8(binary.LittleEndian.Uint64(w)), plain(w); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", w, got, want)
		}
	}
	for pos := range 8 {
		for v := range 256 {
			w := []byte("abcdefgh")
			w[pos] = byte(v)
			check(w)
			w2 := []byte{0x21, 0x7f, 0x5b, 0x5d, 0x23, 0x20, 0x7e, 0x30} // neighbours of the special bytes
			w2[pos] = byte(v)
			check(w2)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]byte, 8)
	for range 200000 {
		for i := range w {
			w[i] = byte(rng.UintN(256))
			if rng.UintN(2) == 0 {
				w[i] = byte(0x20 + rng.UintN(0x60)) // mostly printable
			}
		}
		check(w)
	}
}
