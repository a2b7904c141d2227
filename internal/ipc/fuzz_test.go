package ipc

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

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
				got = append(got, bytes.Clone(line)) // line is valid until the next read
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
