package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCleanToken(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"a1b2c3d4", "a1b2c3d4", true},
		{"A1B2C3D4", "a1b2c3d4", true},
		{"<a1b2c3d4 e5f60718>", "a1b2c3d4e5f60718", true},
		{" <A1B2 c3d4>\t", "a1b2c3d4", true},
		{"a1b2\u00a0c3d4\v", "a1b2c3d4", true},
		{strings.Repeat("ab", 100), strings.Repeat("ab", 100), true}, // 100-byte tokens announced
		{"", "", false},
		{"<>", "", false},
		{"abc", "", false},
		{"zz", "", false},
		{"a1-b2", "", false},
		{"0x12", "", false},
		{"a1b2\u00e9", "", false},
	}
	for _, c := range cases {
		got, err := CleanToken(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("CleanToken(%q) = %q, %v; want %q ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestDecodeAndSend(t *testing.T) {
	cases := []struct {
		line string
		code string // "" = valid
		want func(*Send) string
	}{
		{`{"token":"<AA bb>","alert":"hi","app":"shop","env":"production"}`, "", func(s *Send) string {
			if string(s.Payload) != `{"aps":{"alert":"hi"}}` || !s.Wait || s.Token != "aabb" || s.App != "shop" || s.Env != "production" || s.PushType != "" || s.Priority != nil {
				return fmt.Sprintf("%+v", s)
			}
			return ""
		}},
		{`{"token":"aa","payload":{ "aps" : {"alert":"x"}, "k":[1, 2] },"wait":false,"priority":5,"expiration":0,"push_type":"voip","topic":"t","collapse_id":"c","apns_id":"i"}`, "", func(s *Send) string {
			if string(s.Payload) != `{"aps":{"alert":"x"},"k":[1,2]}` || s.Wait || *s.Priority != 5 || *s.Expiration != 0 || s.PushType != "voip" || s.Topic != "t" || s.CollapseID != "c" || s.ApnsID != "i" {
				return fmt.Sprintf("%+v", s)
			}
			return ""
		}},
		{`{"token":"aa","alert":"x","deadline":1764000000123}`, "", func(s *Send) string {
			if !s.Deadline.Equal(time.UnixMilli(1764000000123)) {
				return fmt.Sprintf("deadline %v", s.Deadline)
			}
			return ""
		}},
		{`{"token":"aa","alert":"x"}`, "", func(s *Send) string {
			if !s.Deadline.IsZero() {
				return fmt.Sprintf("deadline %v, want none", s.Deadline)
			}
			return ""
		}},
		{`{"token":"aa","alert":"x","deadline":1764000000}`, CodeBadRequest, nil}, // seconds by mistake
		{`{"token":"aa","alert":"x","deadline":-1}`, CodeBadRequest, nil},
		{`{"token":"aa","alert":"x","deadline":"soon"}`, CodeBadRequest, nil},
		{`{"token":"aa","alert":"x","env":"staging"}`, CodeBadRequest, nil},
		{`{"token":"aa"}`, CodeBadRequest, nil},
		{`{"token":"aa","payload":{"aps":{"badge":1}},"badge":2}`, CodeBadRequest, nil},
		{`{"token":"a","alert":"x"}`, CodeInvalidToken, nil},
	}
	for _, c := range cases {
		req, e := DecodeRequest([]byte(c.line))
		var s *Send
		if e == nil {
			s, e = req.Send()
		}
		switch {
		case c.code == "" && e != nil:
			t.Errorf("%s: unexpected %v", c.line, e)
		case c.code != "" && (e == nil || e.Code != c.code):
			t.Errorf("%s: got %v, want %s", c.line, e, c.code)
		case c.code == "" && c.want != nil:
			if msg := c.want(s); msg != "" {
				t.Errorf("%s: %s", c.line, msg)
			}
		}
	}
}

func TestReadLine(t *testing.T) {
	in := "short\r\n" + strings.Repeat("x", 100) + "\n\nexact" + strings.Repeat("y", 15) + "\nlast"
	br := bufio.NewReaderSize(strings.NewReader(in), 16)
	type got struct {
		line    string
		tooLong bool
	}
	var lines []got
	for {
		l, tl, err := readLine(br, 20)
		if len(l) > 0 || tl {
			lines = append(lines, got{string(l), tl})
		}
		if err != nil {
			break
		}
	}
	want := []got{{"short", false}, {"", true}, {"exact" + strings.Repeat("y", 15), false}, {"last", false}}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", lines, want)
	}
}

// fakeBackend answers sends after a delay taken from the token, so answers
// finish out of order.
type fakeBackend struct {
	mu       sync.Mutex
	accepted int
}

func (f *fakeBackend) Submit(_ *Peer, r *Send) (chan *Response, *Error) {
	if r.App == "full" {
		return nil, Errorf(CodeQueueFull, "full")
	}
	f.mu.Lock()
	f.accepted++
	f.mu.Unlock()
	ch := make(chan *Response, 1)
	var d int
	fmt.Sscanf(r.Token, "%x", &d)
	token := r.Token // r is the server's again once Submit returns
	go func() {
		time.Sleep(time.Duration(d%5) * time.Millisecond)
		ch <- &Response{OK: true, Status: 200, ApnsID: token}
	}()
	return ch, nil
}
func (f *fakeBackend) Status() *StatusReport { return &StatusReport{Socket: "x"} }
func (f *fakeBackend) Reload(context.Context, *Peer) (*ReloadReport, error) {
	return &ReloadReport{Reloaded: []string{"a"}}, nil
}

func startServer(t *testing.T, s *Server) *Client {
	t.Helper()
	dir := t.TempDir()
	_ = dir
	l, err := net.Listen("tcp", "127.0.0.1:0") // framing does not depend on the transport
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.CloseConns(ctx)
	})
	return &Client{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", l.Addr().String())
	}}
}

func TestServerOrderAndBackpressure(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, &Server{Backend: fb, MaxPending: 4, MaxLineBytes: 8192})
	cn, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	const n = 300
	go func() {
		for i := range n {
			line := fmt.Sprintf(`{"id":%d,"token":"%04x","alert":"x"}`, i, i)
			switch i % 37 {
			case 5:
				line = `{"id":` + fmt.Sprint(i) + `,"op":"status"}`
			case 6:
				line = "garbage"
			case 7:
				line = `{"id":` + fmt.Sprint(i) + `,"op":"reload"}`
			case 8:
				line = `{"id":` + fmt.Sprint(i) + `,"token":"aa","alert":"x","app":"full"}`
			}
			cn.WriteLine([]byte(line))
		}
	}()
	for i := range n {
		r, err := cn.Read()
		if err != nil {
			t.Fatal(err)
		}
		switch i % 37 {
		case 6:
			if r.Error != CodeBadJSON {
				t.Fatalf("answer %d: %+v", i, r)
			}
			continue
		case 8:
			if r.Error != CodeQueueFull || r.Retryable == nil || !*r.Retryable {
				t.Fatalf("answer %d: %+v", i, r)
			}
		}
		var id int
		json.Unmarshal(r.ID, &id)
		if id != i {
			t.Fatalf("answer %d has id %s", i, r.ID)
		}
	}
}

func TestAuthorizeRefusal(t *testing.T) {
	c := startServer(t, &Server{Backend: &fakeBackend{}, Authorize: func(*Peer) *Error {
		return Errorf(CodeForbidden, "uid 1000 is not allowed")
	}})
	cn, err := c.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r, err := cn.Read()
	if err != nil || r.Error != CodeForbidden {
		t.Fatalf("got %+v, %v", r, err)
	}
	if _, err := cn.ReadLine(); err == nil {
		t.Error("connection not closed after refusal")
	}
}

func TestClientUnreachable(t *testing.T) {
	_, err := (&Client{Socket: t.TempDir() + "/none.sock"}).Connect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no such socket") {
		t.Errorf("got %v", err)
	}
}
