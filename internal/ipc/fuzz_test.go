package ipc

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/apnsd/apnsd/internal/apns"
)

// FuzzDecodeRequest: any line either decodes into a send that APNs would
// accept in form, or is refused with a protocol error code; it never panics.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"token":"aa","alert":"hi"}`,
		`{"id":"x","op":"ping"}`,
		`{"token":"<a1b2 c3d4>","payload":{"aps":{"alert":"x"}},"badge":1}`,
		`{"token":"aa","payload":{"aps":{"content-available":1}}}`,
		`{"token":"aa","alert":"x","push_type":"voip","priority":5,"expiration":0,"collapse_id":"c","apns_id":"123e4567-e89b-12d3-a456-426614174000"}`,
		`{`, `null`, `[]`, `{"id":{}}`,
	} {
		f.Add([]byte(s))
	}
	codes := map[string]bool{CodeBadJSON: true, CodeBadRequest: true, CodeInvalidToken: true, CodePayloadTooLarge: true}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, e := DecodeRequest(line)
		if e != nil {
			if !codes[e.Code] {
				t.Fatalf("decode error code %q", e.Code)
			}
			return
		}
		if req.Op != "" && req.Op != "send" {
			return
		}
		sr, e := req.SendRequest()
		if e != nil {
			if !codes[e.Code] {
				t.Fatalf("send error code %q", e.Code)
			}
			return
		}
		n := sr.Notification
		n.Topic = "com.example.app"
		if err := n.Validate(); err != nil {
			t.Fatalf("accepted a notification that fails validation: %v", err)
		}
		if !json.Valid(n.Payload) || len(n.Payload) > apns.MaxPayloadVoIP {
			t.Fatalf("bad payload accepted: %q", n.Payload)
		}
	})
}

// FuzzCleanToken: a cleaned token is always non-empty, even-length,
// lowercase hex, and cleaning is idempotent.
func FuzzCleanToken(f *testing.F) {
	for _, s := range []string{"a1b2", "<A1B2 c3d4>", "", "abc", "zz", " \t<>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := CleanToken(s)
		if err != nil {
			return
		}
		if tok == "" || len(tok)%2 != 0 || strings.ToLower(tok) != tok {
			t.Fatalf("CleanToken(%q) = %q", s, tok)
		}
		if _, err := hex.DecodeString(tok); err != nil {
			t.Fatalf("CleanToken(%q) = %q, not hex", s, tok)
		}
		again, err := CleanToken(tok)
		if err != nil || again != tok {
			t.Fatalf("not idempotent: %q -> %q, %v", tok, again, err)
		}
	})
}

// FuzzFraming: whatever bytes arrive, readLine yields each line (or a
// too-long marker) once, never more than max bytes, and the concatenation of
// short lines matches the input's lines.
func FuzzFraming(f *testing.F) {
	f.Add([]byte("a\nb\r\n\nccc"), 4)
	f.Add([]byte(strings.Repeat("x", 100)+"\nshort\n"), 10)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 1 || max > 1<<16 {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		var got [][]byte
		for {
			line, tooLong, err := readLine(br, max)
			if tooLong {
				got = append(got, nil)
			} else if len(line) > max {
				t.Fatalf("line of %d bytes > max %d", len(line), max)
			} else {
				got = append(got, line)
			}
			if err != nil {
				break
			}
		}
		want := bytes.Split(data, []byte("\n"))
		if len(got) != len(want) {
			t.Fatalf("%d lines read, input has %d", len(got), len(want))
		}
		for i, w := range want {
			w = bytes.TrimSuffix(w, []byte("\r"))
			if len(w) > max {
				if got[i] != nil {
					t.Fatalf("line %d: long line not flagged", i)
				}
				continue
			}
			if !bytes.Equal(got[i], w) {
				t.Fatalf("line %d: got %q want %q", i, got[i], w)
			}
		}
	})
}
