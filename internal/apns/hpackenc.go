package apns

import (
	"strconv"

	"golang.org/x/net/http2/hpack"
)

// headerEncoder is a connection's HPACK encoder for request headers: x/net's
// hpack.Encoder, with two short cuts for the fields every push repeats.
//
//   - A field the encoder found whole in its tables comes out as an
//     "indexed" representation (one to three bytes) that stays the same
//     for as long as the dynamic table does not change. Those bytes are
//     kept (cache) and reused without searching the tables again: that is
//     :method, :scheme, :authority, apns-topic, apns-push-type,
//     apns-priority, content-type and the authorization bearer, on every
//     push after the first. The table changes only when the encoder
//     inserts a field (a literal with incremental indexing) or its size
//     changes; gen counts those changes, and an entry from an earlier gen
//     is not used.
//   - A never-indexed field (a device token path, apns-id) is written as a
//     never-indexed literal directly: it leaves the table alone, so the
//     encoder's search for its name buys nothing.
//
// The output is valid HPACK whatever the order of calls; a pending dynamic
// table size update (after the peer's SETTINGS_HEADER_TABLE_SIZE) is
// written by the encoder at the start of the next block (resize). Guarded
// by conn.mu.
type headerEncoder struct {
	out   *writeBuf
	enc   *hpack.Encoder
	gen   uint64
	cache [10]cachedField
	next  int  // the cache entry to replace next
	slow  bool // every field of the next block goes through enc (a size update is pending)
}

type cachedField struct {
	name, value string
	gen         uint64 // 0: empty
	n           uint8
	b           [6]byte
}

func newHeaderEncoder(out *writeBuf) *headerEncoder {
	return &headerEncoder{out: out, enc: hpack.NewEncoder(out), gen: 1}
}

// setMaxTableSize applies the peer's SETTINGS_HEADER_TABLE_SIZE.
func (h *headerEncoder) setMaxTableSize(v uint32) {
	h.enc.SetMaxDynamicTableSizeLimit(v)
	h.slow = true // the encoder may owe a size update at the next block's start
	h.gen++
}

// startBlock begins a header block (one request's HEADERS).
func (h *headerEncoder) startBlock() { h.out.b = h.out.b[:0] }

// endBlock ends a block.
func (h *headerEncoder) endBlock() { h.slow = false }

// field appends one header field.
func (h *headerEncoder) field(name, value string, sensitive bool) {
	if h.slow {
		h.enc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: sensitive})
		h.gen++ // whatever it did to the table, start afresh
		return
	}
	if sensitive {
		h.neverIndexed(name, value)
		return
	}
	for i := range h.cache {
		if e := &h.cache[i]; e.gen == h.gen && e.name == name && e.value == value {
			h.out.b = append(h.out.b, e.b[:e.n]...)
			return
		}
	}
	start := len(h.out.b)
	h.enc.WriteField(hpack.HeaderField{Name: name, Value: value})
	b := h.out.b[start:]
	switch {
	case b[0]&0x80 != 0 && len(b) <= len(cachedField{}.b): // indexed: cache it
		e := &h.cache[h.next]
		h.next = (h.next + 1) % len(h.cache)
		*e = cachedField{name: name, value: value, gen: h.gen, n: uint8(len(b))}
		copy(e.b[:], b)
	case b[0]&0xc0 == 0x40 || b[0]&0xe0 == 0x20: // inserted, or a size update
		h.gen++
	}
}

// staticNames are the HPACK static table indexes of the names this client
// sends as never-indexed literals (RFC 7541 appendix A).
func staticNameIndex(name string) uint64 {
	switch name {
	case ":path":
		return 4
	case "content-length":
		return 28
	}
	return 0
}

// neverIndexed appends a literal header field never indexed (RFC 7541
// 6.2.3), its name by static index where there is one.
func (h *headerEncoder) neverIndexed(name, value string) {
	b := h.out.b
	if i := staticNameIndex(name); i != 0 {
		b = appendVarInt(b, 4, 0x10, i)
	} else {
		b = append(b, 0x10)
		b = appendHpackString(b, name)
	}
	h.out.b = appendHpackString(b, value)
}

// contentLength appends content-length: n as a never-indexed literal (it
// differs per request), its digits as a raw string.
func (h *headerEncoder) contentLength(n int) {
	if h.slow {
		h.field("content-length", strconv.Itoa(n), true)
		return
	}
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], int64(n), 10)
	b := appendVarInt(h.out.b, 4, 0x10, staticNameIndex("content-length"))
	b = appendVarInt(b, 7, 0, uint64(len(d)))
	h.out.b = append(b, d...)
}

// appendVarInt appends i as an HPACK integer with an n-bit prefix, the
// first byte's other bits set to first (RFC 7541 5.1).
func appendVarInt(b []byte, n uint, first byte, i uint64) []byte {
	k := uint64(1)<<n - 1
	if i < k {
		return append(b, first|byte(i))
	}
	b = append(b, first|byte(k))
	i -= k
	for ; i >= 128; i >>= 7 {
		b = append(b, byte(0x80|(i&0x7f)))
	}
	return append(b, byte(i))
}

// appendHpackString appends s as an HPACK string literal, Huffman-coded
// when that is shorter (RFC 7541 5.2). A string shorter than 127 bytes (a
// path, an apns-id) is coded in one pass: its length prefix is one byte
// either way, so the coded bytes go straight after it and the prefix is
// filled in, or the raw bytes put back, once their length is known.
func appendHpackString(b []byte, s string) []byte {
	if len(s) < 127 {
		at := len(b)
		b = hpack.AppendHuffmanString(append(b, 0), s)
		if n := len(b) - at - 1; n < len(s) {
			b[at] = 0x80 | byte(n)
			return b
		}
		b = append(b[:at], byte(len(s)))
		return append(b, s...)
	}
	if n := hpack.HuffmanEncodeLength(s); n < uint64(len(s)) {
		b = appendVarInt(b, 7, 0x80, n)
		return hpack.AppendHuffmanString(b, s)
	}
	b = appendVarInt(b, 7, 0, uint64(len(s)))
	return append(b, s...)
}
