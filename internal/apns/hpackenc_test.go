package apns

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestHeaderEncoderRoundTrip encodes many blocks of push-like fields, with
// the peer's table size changing now and then, and decodes each block with
// x/net's decoder, which keeps its own table: every field must come back
// as sent, never-indexed where asked, and the table size updates must
// only ever open a block (the decoder refuses them elsewhere).
func TestHeaderEncoderRoundTrip(t *testing.T) {
	var out writeBuf
	e := newHeaderEncoder(&out)
	var got []hpack.HeaderField
	d := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
	rnd := rand.New(rand.NewPCG(1, 2))
	topics := []string{"com.example.app", "com.example.other", "com.example.app.voip"}
	type field struct {
		name, value string
		sensitive   bool
	}
	for block := range 3000 {
		if block%250 == 249 {
			size := []uint32{0, 64, 256, 4096, 100}[rnd.IntN(5)]
			e.setMaxTableSize(size)
			d.SetAllowedMaxDynamicTableSize(size)
		}
		fields := []field{
			{":method", "POST", false}, {":scheme", "https", false}, {":authority", "api.push.apple.com", false},
			{":path", "/3/device/" + strconv.Itoa(rnd.IntN(1e9)), true},
			{"apns-topic", topics[rnd.IntN(len(topics))], false},
			{"apns-push-type", "alert", false},
			{"apns-priority", strconv.Itoa([]int{5, 10}[rnd.IntN(2)]), false},
			{"apns-id", NewUUID(), true},
			{"authorization", "bearer " + strconv.Itoa(block/500), false},
		}
		if rnd.IntN(3) == 0 { // any field may open a block, a never-indexed one too
			rnd.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
		}
		e.startBlock()
		for _, f := range fields {
			e.field(f.name, f.value, f.sensitive)
		}
		e.contentLength(100 + block)
		e.endBlock()
		fields = append(fields, field{"content-length", strconv.Itoa(100 + block), true})
		got = got[:0]
		if _, err := d.Write(out.b); err != nil {
			t.Fatalf("block %d: decoder: %v", block, err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("block %d: decoder: %v", block, err)
		}
		if len(got) != len(fields) {
			t.Fatalf("block %d: decoded %d fields, sent %d: %v", block, len(got), len(fields), got)
		}
		for i, f := range fields {
			if g := got[i]; g.Name != f.name || g.Value != f.value || g.Sensitive != f.sensitive {
				t.Fatalf("block %d field %d: decoded %+v, sent %+v", block, i, g, f)
			}
		}
	}
}

// TestHeaderEncoderReusesIndexed: once the stable fields are in the table,
// a block is the indexed bytes plus the never-indexed literals, and the
// cache (not the encoder's search) produced them.
func TestHeaderEncoderReusesIndexed(t *testing.T) {
	var out writeBuf
	e := newHeaderEncoder(&out)
	enc := func() []byte {
		e.startBlock()
		e.field(":method", "POST", false)
		e.field("apns-topic", "com.example.app", false)
		e.field("apns-id", "x", true)
		e.endBlock()
		return append([]byte(nil), out.b...)
	}
	first, second, third := enc(), enc(), enc()
	if len(second) >= len(first) {
		t.Errorf("second block %d bytes, first %d: apns-topic not indexed", len(second), len(first))
	}
	if string(second) != string(third) {
		t.Errorf("blocks differ with nothing changed: % x vs % x", second, third)
	}
	hits := 0
	for _, c := range e.cache {
		if c.gen == e.gen {
			hits++
		}
	}
	if hits != 2 {
		t.Errorf("%d current cache entries, want 2 (:method, apns-topic)", hits)
	}
}

// appendHpackString gives the shorter of the raw and the Huffman-coded
// literal (raw on a tie), with a correct length prefix, on both sides of
// its one-pass limit of 127 bytes and for strings Huffman makes longer.
func TestAppendHpackString(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabets := []string{"0123456789abcdef", "0123456789abcdef-/", "\x00\x01\xfe\xff{}\\", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"}
	for _, alpha := range alphabets {
		for n := 0; n <= 300; n++ {
			var sb strings.Builder
			for range n {
				sb.WriteByte(alpha[rng.IntN(len(alpha))])
			}
			s := sb.String()
			prefix := []byte{0xaa} // bytes before it stay
			b := appendHpackString(append([]byte(nil), prefix...), s)
			if b[0] != 0xaa {
				t.Fatalf("len %d: the byte before the literal changed", n)
			}
			b = b[1:]
			huff := b[0]&0x80 != 0
			// The 7-bit prefix integer (RFC 7541 5.1).
			l, i := uint64(b[0]&0x7f), 1
			if l == 0x7f {
				var m uint
				for {
					c := b[i]
					i++
					l += uint64(c&0x7f) << m
					m += 7
					if c&0x80 == 0 {
						break
					}
				}
			}
			body := b[i:]
			if uint64(len(body)) != l {
				t.Fatalf("len %d (%q): prefix says %d bytes, %d follow", n, alpha, l, len(body))
			}
			got := string(body)
			if huff {
				var err error
				if got, err = hpack.HuffmanDecodeToString(body); err != nil {
					t.Fatalf("len %d: %v", n, err)
				}
			}
			if got != s {
				t.Fatalf("len %d (%q): decodes to %q", n, alpha, got)
			}
			if hl := hpack.HuffmanEncodeLength(s); huff != (hl < uint64(len(s))) {
				t.Errorf("len %d (%q): Huffman %v, but Huffman is %d bytes against %d raw", n, alpha, huff, hl, len(s))
			}
		}
	}
}
