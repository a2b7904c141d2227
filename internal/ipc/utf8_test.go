package ipc

import "testing"

func TestInvalidUTF8IsBadJSON(t *testing.T) {
	for _, line := range []string{
		"{\"token\":\"aa\",\"alert\":\"caf\xe9\"}",                    // Latin-1 é inside a string
		"{\"token\":\"aa\",\"alert\":\"x\",\"k\xff\":1}",              // in a key
		"{\"token\":\"aa\",\"alert\":\"x\"}\xc3",                      // a truncated sequence after the object
		`{"token":"aa","alert":"\ud800"}`,                             // lone high surrogate
		`{"token":"aa","alert":"\udc00x"}`,                            // lone low surrogate
		`{"token":"aa","alert":"\ud800\u0041"}`,                       // high surrogate, then no low one
		`{"token":"aa","payload":{"aps":{"alert":"x"},"k":"\uDBFF"}}`, // upper case, in a payload
	} {
		_, e := DecodeRequest([]byte(line))
		if e == nil || e.Code != CodeBadJSON {
			t.Errorf("%q: got %v, want bad_json", line, e)
		}
	}
	for _, line := range []string{
		`{"token":"aa","alert":"caf` + "\u00e9" + `"}`, // UTF-8 é
		`{"token":"aa","alert":"\ud83d\ude00"}`,        // a surrogate pair (😀)
		`{"token":"aa","alert":"\\ud800"}`,             // an escaped backslash, then text
	} {
		req, e := DecodeRequest([]byte(line))
		if e == nil {
			_, e = req.Send()
		}
		if e != nil {
			t.Errorf("%q: got %v, want it accepted", line, e)
		}
	}
}

func TestLoneSurrogateOffsets(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{`{"a":"\ud800"}`, 6},
		{`{"a":"\\","b":"\udfff"}`, 15},
		{`{"a":"\ud83d\ude00","b":"x"}`, -1},
		{`{"a":"\u12"}`, -1}, // a bad escape: the JSON decoder's to report
		{`{"a":"x"}`, -1},
	} {
		if got := loneSurrogate([]byte(c.in)); got != c.want {
			t.Errorf("loneSurrogate(%s) = %d, want %d", c.in, got, c.want)
		}
	}
}
