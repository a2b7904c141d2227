package spool

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// On-disk format (all integers little endian).
//
// A segment file is named %016x.seg after its sequence number and starts with
// a 32-byte header:
//
//	0  magic "APNSSPL1"
//	8  seq     u64  the sequence number (also in the file name)
//	16 baseID  u64  the next record id when the segment was created
//	24 reserved u32 (zero)
//	28 crc32c  u32  of bytes 0..28
//
// followed by entries, each a 20-byte header and a body:
//
//	0  magic 0xA7
//	1  kind  1 = record (body = the caller's bytes), 2 = done marker (no body)
//	2  reserved u16 (zero)
//	4  bodyLen u32
//	8  id u64
//	16 crc32c u32 of header bytes 0..16 and the body
//
// A record's id is unique for the life of the state directory; a done marker
// names a record id that is finished. Both live in the same append-only
// stream, so one write and one fdatasync commit a whole batch.
const (
	segMagic      = "APNSSPL1"
	segHeaderSize = 32
	entMagic      = 0xA7
	entHeaderSize = 20

	kindRecord = 1
	kindDone   = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendEntry encodes one entry at the end of buf.
func appendEntry(buf []byte, kind byte, id uint64, body []byte) []byte {
	off := len(buf)
	var h [entHeaderSize]byte
	h[0] = entMagic
	h[1] = kind
	binary.LittleEndian.PutUint32(h[4:], uint32(len(body)))
	binary.LittleEndian.PutUint64(h[8:], id)
	buf = append(buf, h[:]...)
	buf = append(buf, body...)
	c := crc32.Update(0, castagnoli, buf[off:off+16])
	c = crc32.Update(c, castagnoli, buf[off+entHeaderSize:])
	binary.LittleEndian.PutUint32(buf[off+16:], c)
	return buf
}

func encodeSegHeader(seq, baseID uint64) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, segMagic)
	binary.LittleEndian.PutUint64(h[8:], seq)
	binary.LittleEndian.PutUint64(h[16:], baseID)
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h
}

// decodeSegHeader returns the header's fields, or a reason it is invalid.
func decodeSegHeader(b []byte) (seq, baseID uint64, reason string) {
	if len(b) < segHeaderSize {
		return 0, 0, "segment header is short"
	}
	if string(b[:8]) != segMagic {
		return 0, 0, "segment header has a bad magic"
	}
	if crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:]) {
		return 0, 0, "segment header has a bad checksum"
	}
	return binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]), ""
}

// entry is one decoded entry; body aliases the scanned buffer.
type entry struct {
	kind byte
	id   uint64
	off  int // offset of the header in the scanned buffer
	raw  []byte
	body []byte
}

// parseEntry decodes the entry at b[off:]. It returns the entry, or a reason
// why no valid entry starts there.
func parseEntry(b []byte, off int) (entry, string) {
	rest := b[off:]
	if len(rest) < entHeaderSize {
		return entry{}, "partial entry header"
	}
	if rest[0] != entMagic {
		return entry{}, "bad entry magic"
	}
	kind := rest[1]
	if (kind != kindRecord && kind != kindDone) || rest[2] != 0 || rest[3] != 0 {
		return entry{}, "bad entry kind"
	}
	n := binary.LittleEndian.Uint32(rest[4:])
	if n > MaxRecordBytes || (kind == kindDone && n != 0) {
		return entry{}, "bad entry length"
	}
	end := entHeaderSize + int(n)
	if len(rest) < end {
		return entry{}, "partial entry (truncated body)"
	}
	c := crc32.Update(0, castagnoli, rest[:16])
	c = crc32.Update(c, castagnoli, rest[entHeaderSize:end])
	if c != binary.LittleEndian.Uint32(rest[16:]) {
		return entry{}, "bad entry checksum"
	}
	return entry{
		kind: kind,
		id:   binary.LittleEndian.Uint64(rest[8:]),
		off:  off,
		raw:  rest[:end],
		body: rest[entHeaderSize:end],
	}, ""
}

// badRegion is a byte range of a segment that holds no valid entry.
type badRegion struct {
	off, n int
	reason string
}

// scanEntries walks b from start, calling fn for each valid entry. After an
// invalid entry it resynchronises: it looks for the next offset at which a
// complete entry with a valid checksum starts and goes on from there, so one
// damaged entry in the middle costs only that entry. It returns the damaged
// regions in order; the last one reaches len(b) when the segment ends in a
// torn tail (a partial entry, garbage or zeros).
func scanEntries(b []byte, start int, fn func(entry)) []badRegion {
	var bad []badRegion
	off := start
	for off < len(b) {
		e, reason := parseEntry(b, off)
		if reason == "" {
			fn(e)
			off += len(e.raw)
			continue
		}
		next := resync(b, off+1)
		if next < 0 {
			if allZero(b[off:]) {
				reason = "zero-filled tail"
			}
			bad = append(bad, badRegion{off, len(b) - off, reason})
			break
		}
		bad = append(bad, badRegion{off, next - off, reason})
		off = next
	}
	return bad
}

// resync returns the first offset >= from at which a valid entry starts, or -1.
func resync(b []byte, from int) int {
	for from < len(b) {
		i := bytes.IndexByte(b[from:], entMagic)
		if i < 0 {
			return -1
		}
		p := from + i
		if _, reason := parseEntry(b, p); reason == "" {
			return p
		}
		from = p + 1
	}
	return -1
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
