package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchLine is the request apnsbench sends.
var benchLine = []byte(`{"id":123456,"token":"` + "a1b2c3d4e5f60718a1b2c3d4e5f60718a1b2c3d4e5f60718a1b2c3d4e5f60718" + `","payload":{"aps":{"alert":"apnsbench"}}}`)

// BenchmarkDecode: one request line, with the fast decoder and with
// encoding/json alone (the reference).
func BenchmarkDecode(b *testing.B) {
	for _, c := range []struct {
		name string
		fast bool
	}{{"fast", true}, {"encoding-json", false}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, e := decodeRequest(benchLine, c.fast); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}

// BenchmarkEncode: the answer to a delivered send, with appendResponse and
// with json.Marshal.
func BenchmarkEncode(b *testing.B) {
	r := &Response{ID: json.RawMessage(`123456`), OK: true, Status: 200, ApnsID: "6f2a3b1c-0000-4000-8000-000000000001"}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf = appendResponse(buf[:0], r)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecodeSendEncode: what the socket side does per notification
// apart from the backend: decode, Send (validation, payload), encode.
func BenchmarkDecodeSendEncode(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	for b.Loop() {
		req, e := DecodeRequest(benchLine)
		if e != nil {
			b.Fatal(e)
		}
		if _, e := req.Send(); e != nil {
			b.Fatal(e)
		}
		r := &Response{ID: req.ID, OK: true, Status: 200, ApnsID: "6f2a3b1c-0000-4000-8000-000000000001"}
		buf = appendResponse(buf[:0], r)
	}
}

// instantBackend answers every send at once.
type instantBackend struct{}

func (instantBackend) Submit(_ *Peer, s *Send) (chan *Response, *Error) {
	ch := make(chan *Response, 1)
	ch <- &Response{OK: true, Status: 200, ApnsID: "6f2a3b1c-0000-4000-8000-000000000001"}
	return ch, nil
}
func (instantBackend) Status() *StatusReport { return &StatusReport{} }
func (instantBackend) Reload(context.Context, *Peer) (*ReloadReport, error) {
	return &ReloadReport{}, nil
}

// BenchmarkServerLoop: the server's reader and writer on a Unix socket, a
// client pipelining 64 requests at a time, answered at once by the backend;
// per request, both ends included.
func BenchmarkServerLoop(b *testing.B) {
	path := filepath.Join(b.TempDir(), "s")
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Backend: instantBackend{}}
	go s.Serve(l)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.CloseConns(ctx)
	}()
	nc, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	const window = 64
	var batch []byte
	for i := range window {
		line := append([]byte(nil), benchLine...)
		line = append(line[:len(`{"id":`)], strconv.Itoa(100000+i)...)
		line = append(line, benchLine[len(`{"id":123456`):]...)
		batch = append(append(batch, line...), '\n')
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += window {
		if _, err := nc.Write(batch); err != nil {
			b.Fatal(err)
		}
		for range window {
			if _, err := br.ReadSlice('\n'); err != nil {
				b.Fatal(err)
			}
		}
	}
}
