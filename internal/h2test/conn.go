package h2test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Request is one complete request (headers and body, END_STREAM received).
type Request struct {
	Conn     *Conn
	StreamID uint32
	// Method, Path, Scheme and Authority are the pseudo-headers.
	Method, Path, Scheme, Authority string
	// DeviceToken is the last element of a /3/device/<token> path.
	DeviceToken string
	// Header holds the regular header fields, lowercase names, last value
	// kept.
	Header map[string]string
	Body   []byte
	// ApnsID is the request's apns-id header ("" when it sent none).
	ApnsID string
}

// Respond answers the request; see [Conn.Respond].
func (r *Request) Respond(rep Reply) error { return r.Conn.Respond(r.StreamID, rep) }

// Reply is an answer to a request.
type Reply struct {
	// Status is the :status; 0 means 200.
	Status int
	// Reason, when set, is sent as the JSON body {"reason":...} (with
	// "timestamp" when Timestamp is not 0), as APNs answers errors.
	Reason    string
	Timestamp int64
	// ApnsID is the apns-id header; "" echoes the request's, or makes one
	// up when the request had none.
	ApnsID string
	// Fragment, when > 0, splits the header block into pieces of at most
	// this many bytes: one HEADERS frame followed by CONTINUATION frames.
	Fragment int
	// PadHeaders adds about this many bytes of extra header fields
	// (x-pad-N, 4 KiB values, never indexed), split over CONTINUATION
	// frames as needed: an oversized response header block.
	PadHeaders int
	// EndlessBody sends DATA after the headers, within the client's
	// flow-control window, until the client resets the stream, the
	// connection closes or Options.EndlessLimit bytes were sent (then the
	// stream is reset with CANCEL).
	EndlessBody bool
}

// Conn is the server's side of one HTTP/2 connection.
type Conn struct {
	s  *Server
	id uint64
	nc *tls.Conn
	fr *http2.Framer // ReadFrame on the reader goroutine only; writes under wmu
	// hdec decodes request header blocks; reader goroutine only. The
	// reader also assembles HEADERS + CONTINUATION itself (not the
	// Framer's ReadMetaHeaders), so a HEADER_TABLE_SIZE change is applied
	// to the decoder between two blocks, never late.
	hdec      *hpack.Decoder
	hdrStream uint32 // stream of the header block being assembled (0: none)
	hdrEnded  bool   // its HEADERS had END_STREAM
	hdrBlock  []byte

	wmu  sync.Mutex // serialises writes; guards henc and hbuf. Lock order: wmu, then mu.
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu           sync.Mutex // guards the fields below
	cond         *sync.Cond // on mu: windows grew, a stream closed, the connection closed
	closed       bool
	streams      map[uint32]*stream
	open         int    // streams counted against the client's limit
	lastClientID uint32 // highest stream id the client opened
	goAwaySent   bool
	goAwayID     uint32
	pending      [][]http2.Setting // sent, not yet ACKed, oldest first
	acked        map[http2.SettingID]uint32
	limit        uint32 // SETTINGS_MAX_CONCURRENT_STREAMS in force
	recvInitWin  int64  // SETTINGS_INITIAL_WINDOW_SIZE in force (what the client may send)
	maxFrame     uint32 // SETTINGS_MAX_FRAME_SIZE in force (what the client may send)
	tableAllowed uint32 // HEADER_TABLE_SIZE for the decoder, applied before the next block
	tableDirty   bool
	connRecvWin  int64 // what the client may still send on the connection
	peerInitWin  int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame uint32
	connSendWin  int64
	pings        map[uint64]bool // PING payloads sent, not yet ACKed

	wg sync.WaitGroup // body writers
}

type stream struct {
	id                              uint32
	method, path, scheme, authority string
	header                          map[string]string
	body                            []byte
	complete                        bool  // END_STREAM received
	done                            bool  // answered (END_STREAM sent) or reset either way
	counted                         bool  // counts in Conn.open
	recvWin, sendWin                int64 // stream flow-control windows
	// discard: the server never took the stream (opened above a GOAWAY's
	// last-stream-id, or refused with REFUSED_STREAM). Its frames are
	// ignored (RFC 9113 5.1, 6.8): DATA only counts against the
	// connection window, whose credit is returned; nothing is sent on it.
	discard bool
}

func newConn(s *Server, nc *tls.Conn, id uint64) *Conn {
	c := &Conn{
		s: s, id: id, nc: nc,
		streams:      map[uint32]*stream{},
		limit:        1<<32 - 1,
		recvInitWin:  65535,
		maxFrame:     16384,
		connRecvWin:  65535,
		peerInitWin:  65535,
		peerMaxFrame: 16384,
		connSendWin:  65535,
		pings:        map[uint64]bool{},
		acked:        map[http2.SettingID]uint32{},
		tableAllowed: 4096,
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(nc, bufferedReader(nc))
	c.fr.SetMaxReadFrameSize(1<<24 - 1) // checked against maxFrame by hand
	c.hdec = hpack.NewDecoder(4096, nil)
	c.hdec.SetMaxStringLength(1 << 20)
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// ID numbers the server's connections 1, 2, 3… in the order they were
// accepted.
func (c *Conn) ID() uint64 { return c.id }

// writeInitialSettings sends the server's connection preface: its first
// SETTINGS frame.
func (c *Conn) writeInitialSettings() error {
	settings := c.s.o.Settings
	hasMCS := false
	for _, st := range settings {
		hasMCS = hasMCS || st.ID == http2.SettingMaxConcurrentStreams
	}
	if !hasMCS {
		settings = append([]http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 100}}, settings...)
	}
	// The first SETTINGS is in force from the start as far as raising
	// goes (see WriteSettings); lowering below the defaults waits for the
	// ACK, as for any SETTINGS.
	return c.WriteSettings(settings...)
}

func (c *Conn) run() {
	defer func() {
		c.markClosed()
		c.nc.Close()
		c.wg.Wait()
	}()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				c.s.protocolError(err.Error())
				c.Reset(se.StreamID, se.Code)
				continue
			case errors.As(err, &ce):
				c.s.protocolError(err.Error())
				c.mu.Lock()
				last := c.lastClientID
				c.mu.Unlock()
				c.GoAway(last, http2.ErrCode(ce), []byte(err.Error()))
			}
			return
		}
		c.mu.Lock()
		if f.Header().Length > c.maxFrame {
			c.s.st.frameViol.Add(1)
		}
		c.mu.Unlock()
		if !c.handle(f) {
			return
		}
	}
}

// applyTable gives the HPACK decoder a HEADER_TABLE_SIZE that an ACK put
// in force; the decoder belongs to the reader goroutine.
func (c *Conn) applyTable() {
	c.mu.Lock()
	dirty, v := c.tableDirty, c.tableAllowed
	c.tableDirty = false
	c.mu.Unlock()
	if dirty {
		c.hdec.SetAllowedMaxDynamicTableSize(v)
	}
}

// onHeaderFrame assembles a header block from HEADERS and CONTINUATION
// frames and decodes it once complete; false ends the connection.
func (c *Conn) onHeaderFrame(f http2.Frame) bool {
	var end bool
	switch f := f.(type) {
	case *http2.HeadersFrame:
		if c.hdrStream != 0 {
			return c.connError(http2.ErrCodeProtocol, "HEADERS while a header block is open")
		}
		c.hdrStream, c.hdrEnded = f.StreamID, f.StreamEnded()
		c.hdrBlock = append(c.hdrBlock[:0], f.HeaderBlockFragment()...)
		end = f.HeadersEnded()
	case *http2.ContinuationFrame:
		if c.hdrStream == 0 || f.StreamID != c.hdrStream {
			return c.connError(http2.ErrCodeProtocol, "CONTINUATION without an open header block")
		}
		c.hdrBlock = append(c.hdrBlock, f.HeaderBlockFragment()...)
		end = f.HeadersEnded()
	}
	if len(c.hdrBlock) > 1<<20 {
		return c.connError(http2.ErrCodeEnhanceYourCalm, "request header block over 1 MiB")
	}
	if !end {
		return true
	}
	c.applyTable()
	fields, err := c.hdec.DecodeFull(c.hdrBlock)
	id, ended := c.hdrStream, c.hdrEnded
	c.hdrStream = 0
	if err != nil {
		return c.connError(http2.ErrCodeCompression, "HPACK: "+err.Error())
	}
	return c.onHeaders(id, fields, ended)
}

// connError counts a connection-level error of the client's, sends GOAWAY
// and reports false (end the connection).
func (c *Conn) connError(code http2.ErrCode, msg string) bool {
	c.s.protocolError(msg)
	c.GoAway(c.lastID(), code, []byte(msg))
	return false
}

// handle processes one frame on the reader goroutine; false ends the
// connection.
func (c *Conn) handle(f http2.Frame) bool {
	st := &c.s.st
	if _, ok := f.(*http2.ContinuationFrame); c.hdrStream != 0 && !ok {
		return c.connError(http2.ErrCodeProtocol, fmt.Sprintf("%v frame inside a header block", f.Header().Type))
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			st.settingsAcks.Add(1)
			c.settingsAcked()
			return true
		}
		var err error
		table, hasTable := uint32(0), false
		c.mu.Lock()
		f.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - c.peerInitWin
				c.peerInitWin = int64(s.Val)
				for _, s := range c.streams {
					s.sendWin += delta
				}
			case http2.SettingMaxFrameSize:
				c.peerMaxFrame = s.Val
			case http2.SettingHeaderTableSize:
				table, hasTable = s.Val, true
			}
			return nil
		})
		c.cond.Broadcast()
		c.mu.Unlock()
		err = c.write(func() error {
			if hasTable {
				c.henc.SetMaxDynamicTableSizeLimit(table)
			}
			return c.fr.WriteSettingsAck()
		})
		return err == nil
	case *http2.HeadersFrame, *http2.ContinuationFrame:
		return c.onHeaderFrame(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		st.wuRecv.Add(1)
		c.mu.Lock()
		if f.StreamID == 0 {
			c.connSendWin += int64(f.Increment)
		} else if s := c.streams[f.StreamID]; s != nil {
			s.sendWin += int64(f.Increment)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	case *http2.PingFrame:
		if f.IsAck() {
			k := binary.BigEndian.Uint64(f.Data[:])
			c.mu.Lock()
			if c.pings[k] {
				delete(c.pings, k)
				st.pingAcks.Add(1)
			}
			c.mu.Unlock()
			return true
		}
		st.pingsRecv.Add(1)
		return c.write(func() error { return c.fr.WritePing(true, f.Data) }) == nil
	case *http2.RSTStreamFrame:
		st.resetsRecv.Add(1)
		c.mu.Lock()
		if s := c.streams[f.StreamID]; s != nil {
			c.finish(s)
		}
		c.mu.Unlock()
	case *http2.GoAwayFrame:
		st.goAwaysRecv.Add(1)
	}
	return true
}

// settingsAcked puts the oldest unacknowledged SETTINGS in force.
func (c *Conn) settingsAcked() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		c.s.protocolError("SETTINGS ACK with no SETTINGS outstanding")
		return
	}
	set := c.pending[0]
	c.pending = c.pending[1:]
	for _, x := range set {
		c.acked[x.ID] = x.Val
	}
	for _, x := range set {
		c.applyOwn(x.ID)
	}
}

// applyOwn puts the server's own setting id in force as the most the
// client may be using: the larger of the last ACKed value and every value
// sent but not yet ACKed (the client may already have applied those; a
// lower value binds only once ACKed, with nothing larger outstanding).
// c.mu is held.
func (c *Conn) applyOwn(id http2.SettingID) {
	v, ok := c.acked[id]
	if !ok {
		switch id {
		case http2.SettingMaxConcurrentStreams:
			v = 1<<32 - 1 // no limit until one is set
		case http2.SettingInitialWindowSize:
			v = 65535
		case http2.SettingMaxFrameSize:
			v = 16384
		case http2.SettingHeaderTableSize:
			v = 4096
		}
	}
	for _, set := range c.pending {
		for _, x := range set {
			if x.ID == id && x.Val > v {
				v = x.Val
			}
		}
	}
	switch id {
	case http2.SettingMaxConcurrentStreams:
		c.limit = v
	case http2.SettingInitialWindowSize:
		delta := int64(v) - c.recvInitWin
		c.recvInitWin = int64(v)
		for _, st := range c.streams {
			st.recvWin += delta
		}
	case http2.SettingMaxFrameSize:
		c.maxFrame = v
	case http2.SettingHeaderTableSize:
		if v != c.tableAllowed {
			c.tableAllowed, c.tableDirty = v, true
		}
	}
}

func (c *Conn) onHeaders(id uint32, fieldList []hpack.HeaderField, ended bool) bool {
	st := &c.s.st
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		// Trailers; a request has none, but take END_STREAM from them.
		c.mu.Unlock()
		if ended {
			c.complete(id)
		}
		return true
	}
	if id%2 == 0 || id <= c.lastClientID {
		last := c.lastClientID
		c.mu.Unlock()
		return c.connError(http2.ErrCodeProtocol, fmt.Sprintf("HEADERS opening stream %d after %d", id, last))
	}
	c.lastClientID = id
	if c.goAwaySent && id > c.goAwayID {
		// RFC 9113 6.8: ignore it, and its DATA (no RST_STREAM either: the
		// client learns from the GOAWAY, which GoAway put on the wire
		// before this frame could be acted on, that it was not processed).
		c.streams[id] = &stream{id: id, discard: true, done: true}
		c.mu.Unlock()
		st.afterGoAway.Add(1)
		return true
	}
	if uint32(c.open) >= c.limit {
		// Refused: DATA that follows (sent before the client read the
		// RST_STREAM) is ignored, not answered with STREAM_CLOSED.
		c.streams[id] = &stream{id: id, discard: true, done: true}
		c.mu.Unlock()
		st.limitViol.Add(1)
		c.Reset(id, http2.ErrCodeRefusedStream)
		return true
	}
	s := &stream{id: id, header: map[string]string{}, counted: true, recvWin: c.recvInitWin, sendWin: c.peerInitWin}
	for _, hf := range fieldList {
		switch hf.Name {
		case ":method":
			s.method = hf.Value
		case ":path":
			s.path = hf.Value
		case ":scheme":
			s.scheme = hf.Value
		case ":authority":
			s.authority = hf.Value
		default:
			s.header[hf.Name] = hf.Value
		}
	}
	c.streams[id] = s
	c.open++
	for {
		m := st.maxOpen.Load()
		if int64(c.open) <= m || st.maxOpen.CompareAndSwap(m, int64(c.open)) {
			break
		}
	}
	c.mu.Unlock()
	if ended {
		c.complete(id)
	}
	return true
}

func (c *Conn) onData(f *http2.DataFrame) bool {
	st := &c.s.st
	n := int64(f.Header().Length)
	st.dataRecv.Add(n)
	c.mu.Lock()
	c.connRecvWin -= n
	if c.connRecvWin < 0 {
		st.flowViol.Add(1)
		c.s.flowViolation(fmt.Sprintf("connection: %d bytes of DATA on stream %d, %d over the window", n, f.StreamID, -c.connRecvWin))
	}
	s := c.streams[f.StreamID]
	if s != nil && s.discard {
		// A stream the server ignores (above GOAWAY, or refused): the
		// bytes count against the connection window only (RFC 9113 6.8,
		// 6.9), and that credit is returned.
		c.mu.Unlock()
		return c.refill(0, n)
	}
	if s == nil || s.complete {
		c.mu.Unlock()
		// DATA on a stream the client never opened or already ended.
		if f.StreamID > c.lastID() {
			return c.connError(http2.ErrCodeProtocol, fmt.Sprintf("DATA on idle stream %d", f.StreamID))
		}
		c.s.protocolError(fmt.Sprintf("DATA on closed stream %d (the client had ended it, or never opened it)", f.StreamID))
		c.Reset(f.StreamID, http2.ErrCodeStreamClosed)
		return c.refill(0, n)
	}
	s.recvWin -= n
	if s.recvWin < 0 {
		st.flowViol.Add(1)
		c.s.flowViolation(fmt.Sprintf("stream %d: %d bytes of DATA, %d over the window (initial window in force %d, %d SETTINGS unacknowledged)",
			f.StreamID, n, -s.recvWin, c.recvInitWin, len(c.pending)))
	}
	if len(s.body) < 1<<20 {
		s.body = append(s.body, f.Data()...)
	}
	ended := f.StreamEnded()
	c.mu.Unlock()
	if !c.refill(f.StreamID, n) {
		return false
	}
	if ended {
		c.complete(f.StreamID)
	}
	return true
}

// refill gives back n bytes of flow-control credit on the connection and,
// when id is not 0 and the stream is still receiving, on the stream.
func (c *Conn) refill(id uint32, n int64) bool {
	if n <= 0 {
		return true
	}
	c.mu.Lock()
	c.connRecvWin += n
	if s := c.streams[id]; id != 0 && s != nil {
		s.recvWin += n
	} else {
		id = 0
	}
	c.mu.Unlock()
	return c.write(func() error {
		if err := c.fr.WriteWindowUpdate(0, uint32(n)); err != nil {
			return err
		}
		if id != 0 {
			return c.fr.WriteWindowUpdate(id, uint32(n))
		}
		return nil
	}) == nil
}

// complete hands a finished request to the handler.
func (c *Conn) complete(id uint32) {
	c.mu.Lock()
	s := c.streams[id]
	if s == nil || s.complete || s.done {
		c.mu.Unlock()
		return
	}
	s.complete = true
	r := &Request{
		Conn: c, StreamID: id, Method: s.method, Path: s.path, Scheme: s.scheme, Authority: s.authority,
		Header: s.header, Body: s.body, ApnsID: s.header["apns-id"],
	}
	c.mu.Unlock()
	c.s.st.requests.Add(1)
	if tok, ok := strings.CutPrefix(r.Path, "/3/device/"); ok && tok != "" && !strings.Contains(tok, "/") {
		r.DeviceToken = tok
	}
	if r.Method != "POST" || r.Scheme != "https" || r.DeviceToken == "" || r.Header["apns-topic"] == "" && r.Header["authorization"] != "" {
		c.s.st.badRequests.Add(1)
	}
	if h := c.s.o.Handler; h != nil {
		h(r)
		return
	}
	r.Respond(Reply{})
}

// finish marks s done and stops counting it against the client's limit.
// c.mu is held.
func (c *Conn) finish(s *stream) {
	s.done = true
	if s.counted {
		s.counted = false
		c.open--
	}
	c.cond.Broadcast()
}

func (c *Conn) lastID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastClientID
}

func (c *Conn) markClosed() {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
}

// write runs f under the write lock with a write deadline, so a client that
// stops reading cannot wedge the server.
func (c *Conn) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := f()
	if err != nil {
		c.nc.Close()
	}
	return err
}

// Pending returns the ids of complete requests not yet answered or reset,
// ascending.
func (c *Conn) Pending() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint32
	for id, s := range c.streams {
		if s.complete && !s.done {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Open is the number of streams the client has open on this connection as
// the server counts them (against SETTINGS_MAX_CONCURRENT_STREAMS).
func (c *Conn) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// ErrStreamDone is returned by Respond for a stream that was already
// answered or reset, or that the server does not know.
var ErrStreamDone = errors.New("h2test: stream already answered, reset or unknown")

// Respond answers stream id. It returns once the headers (and, where the
// client's window allows, the body) are written; the rest of a body is
// written by a goroutine of the connection.
func (c *Conn) Respond(id uint32, rep Reply) error {
	c.mu.Lock()
	s := c.streams[id]
	if s == nil || s.done {
		c.mu.Unlock()
		return ErrStreamDone
	}
	var body []byte
	if rep.Reason != "" {
		if rep.Timestamp != 0 {
			body = fmt.Appendf(nil, `{"reason":%q,"timestamp":%d}`, rep.Reason, rep.Timestamp)
		} else {
			body = fmt.Appendf(nil, `{"reason":%q}`, rep.Reason)
		}
	}
	endHeaders := len(body) == 0 && !rep.EndlessBody
	if endHeaders {
		c.finish(s) // before the write, so the count never runs behind the client's
	}
	apnsID := rep.ApnsID
	if apnsID == "" {
		apnsID = s.header["apns-id"]
	}
	c.mu.Unlock()
	if apnsID == "" {
		apnsID = newUUID()
	}
	status := rep.Status
	if status == 0 {
		status = 200
	}
	fields := []hpack.HeaderField{{Name: ":status", Value: fmt.Sprint(status)}, {Name: "apns-id", Value: apnsID, Sensitive: true}}
	if len(body) > 0 {
		fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "application/json"})
	}
	if rep.PadHeaders > 0 {
		v := strings.Repeat("p", 4096)
		for i := 0; i*4096 < rep.PadHeaders; i++ {
			fields = append(fields, hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", i), Value: v, Sensitive: true})
		}
	}
	if err := c.writeHeaders(id, fields, endHeaders, rep.Fragment); err != nil {
		return err
	}
	c.s.st.responses.Add(1)
	switch {
	case rep.EndlessBody:
		c.wg.Add(1)
		go c.endless(id)
	case len(body) > 0:
		c.sendBody(id, body)
	}
	return nil
}

// writeHeaders encodes fields and writes them as HEADERS plus, beyond the
// client's frame size or frag bytes, CONTINUATION frames. Encoding and
// writing happen under the write lock, so the HPACK state follows wire
// order.
func (c *Conn) writeHeaders(id uint32, fields []hpack.HeaderField, end bool, frag int) error {
	c.mu.Lock()
	max := int(c.peerMaxFrame)
	c.mu.Unlock()
	if frag <= 0 || frag > max {
		frag = max
	}
	return c.write(func() error {
		c.hbuf.Reset()
		for _, f := range fields {
			if err := c.henc.WriteField(f); err != nil {
				return err
			}
		}
		block := c.hbuf.Bytes()
		first := min(frag, len(block))
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: id, BlockFragment: block[:first], EndStream: end, EndHeaders: first == len(block),
		}); err != nil {
			return err
		}
		for rest := block[first:]; len(rest) > 0; {
			k := min(frag, len(rest))
			if err := c.fr.WriteContinuation(id, k == len(rest), rest[:k]); err != nil {
				return err
			}
			rest = rest[k:]
		}
		return nil
	})
}

// take reserves up to want bytes of send window on stream id. With wait
// it blocks until some is available; it returns 0 when the stream or the
// connection is gone (or, without wait, when no window is available).
func (c *Conn) take(id uint32, want int, wait bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		s := c.streams[id]
		if c.closed || s == nil || s.done {
			return 0
		}
		n := min(int64(want), c.connSendWin, s.sendWin, int64(c.peerMaxFrame))
		if n > 0 {
			c.connSendWin -= n
			s.sendWin -= n
			return int(n)
		}
		if !wait {
			return 0
		}
		c.cond.Wait()
	}
}

// sendBody writes body on stream id with END_STREAM. What the window allows
// now is written at once; the rest by a goroutine that waits for
// WINDOW_UPDATE (Respond may run on the reader goroutine, which must not
// wait for a frame it is the one to read).
func (c *Conn) sendBody(id uint32, body []byte) {
	for len(body) > 0 {
		n := c.take(id, len(body), false)
		if n == 0 {
			break
		}
		if !c.writeData(id, body[:n], n == len(body)) {
			return
		}
		body = body[n:]
	}
	if len(body) == 0 {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for len(body) > 0 {
			n := c.take(id, len(body), true)
			if n == 0 || !c.writeData(id, body[:n], n == len(body)) {
				return
			}
			body = body[n:]
		}
	}()
}

// writeData writes one DATA frame; with end, the stream is done first.
func (c *Conn) writeData(id uint32, p []byte, end bool) bool {
	if end {
		c.mu.Lock()
		if s := c.streams[id]; s != nil {
			c.finish(s)
		}
		c.mu.Unlock()
	}
	return c.write(func() error { return c.fr.WriteData(id, end, p) }) == nil
}

func (c *Conn) endless(id uint32) {
	defer c.wg.Done()
	chunk := bytes.Repeat([]byte("x"), 16384)
	var sent int64
	for sent < c.s.o.EndlessLimit {
		n := c.take(id, len(chunk), true)
		if n == 0 {
			return
		}
		if !c.writeData(id, chunk[:n], false) {
			return
		}
		sent += int64(n)
		c.s.st.endless.Add(int64(n))
	}
	c.Reset(id, http2.ErrCodeCancel)
}

// WriteSettings sends a SETTINGS frame. Changes that allow the client more
// (a higher stream limit, a bigger window or frame) are in force at once;
// the others once the client ACKs this frame. A new
// SETTINGS_INITIAL_WINDOW_SIZE adjusts the windows of open streams.
func (c *Conn) WriteSettings(s ...http2.Setting) error {
	// Under the write lock throughout, so that the order of c.pending is
	// the order on the wire (the ACKs come back in that order).
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.pending = append(c.pending, s)
	for _, x := range s {
		c.applyOwn(x.ID)
	}
	c.mu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := c.fr.WriteSettings(s...)
	if err != nil {
		c.nc.Close()
	}
	if err == nil {
		c.s.st.settingsSent.Add(1)
	}
	return err
}

// GoAway sends GOAWAY. Streams above lastID that the client opens
// afterwards are ignored (their frames too; nothing is sent on them) and
// counted in Stats.StreamsAfterGoAway; the connection stays open (close it
// with Close).
//
// The write lock is held from the moment the streams above lastID start
// being ignored until the GOAWAY frame is written, so nothing the server
// writes because of that decision can reach the wire before the GOAWAY.
func (c *Conn) GoAway(lastID uint32, code http2.ErrCode, debug []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if !c.goAwaySent || lastID < c.goAwayID {
		c.goAwayID = lastID
	}
	c.goAwaySent = true
	c.mu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := c.fr.WriteGoAway(lastID, code, debug)
	if err != nil {
		c.nc.Close()
		return err
	}
	c.s.st.goAwaysSent.Add(1)
	return nil
}

// Reset sends RST_STREAM with code on stream id.
func (c *Conn) Reset(id uint32, code http2.ErrCode) error {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		c.finish(s)
	}
	c.mu.Unlock()
	err := c.write(func() error { return c.fr.WriteRSTStream(id, code) })
	if err == nil {
		c.s.st.resetsSent.Add(1)
	}
	return err
}

// PingFlood sends n PINGs back to back (each with its own payload) and
// returns how many were written.
func (c *Conn) PingFlood(n int) int {
	sent := 0
	for range n {
		var b [8]byte
		rand.Read(b[:])
		c.mu.Lock()
		c.pings[binary.BigEndian.Uint64(b[:])] = true
		c.mu.Unlock()
		if c.write(func() error { return c.fr.WritePing(false, b) }) != nil {
			break
		}
		c.s.st.pingsSent.Add(1)
		sent++
	}
	return sent
}

// WriteFrame writes a raw frame as given: any type (unknown types
// included), flags, stream and payload, with no checks and no state
// change (DATA written this way takes no flow-control window).
func (c *Conn) WriteFrame(t http2.FrameType, flags http2.Flags, streamID uint32, payload []byte) error {
	return c.write(func() error { return c.fr.WriteRawFrame(t, flags, streamID, payload) })
}

// WriteBytes writes b to the connection as is (garbage, or a partial
// frame).
func (c *Conn) WriteBytes(b []byte) error {
	return c.write(func() error { _, err := c.nc.Write(b); return err })
}

// CutMidFrame writes the first part of a frame (a 9-byte HEADERS frame
// header announcing 64 bytes, then 5 of them) and closes the TCP
// connection without a TLS close_notify.
func (c *Conn) CutMidFrame() {
	c.write(func() error {
		hdr := []byte{0, 0, 64, byte(http2.FrameHeaders), byte(http2.FlagHeadersEndHeaders), 0, 0, 0, 1, 0x88, 0, 0, 0, 0}
		_, err := c.nc.Write(hdr)
		return err
	})
	c.Close()
}

// Close closes the TCP connection abruptly (no GOAWAY, no close_notify).
func (c *Conn) Close() {
	c.markClosed()
	c.nc.NetConn().Close()
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
