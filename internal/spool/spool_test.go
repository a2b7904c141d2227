package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testLogger collects log output so tests can assert on reports.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func mustOpen(t *testing.T, opts Options) (*Spool, *Recovery) {
	t.Helper()
	s, rec, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Dir, err)
	}
	return s, rec
}

// appendWait appends and waits for durability.
func appendWait(t *testing.T, s *Spool, data []byte) uint64 {
	t.Helper()
	ch := make(chan error, 1)
	id, err := s.Append(data, func(_ uint64, err error) { ch <- err })
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("durability callback for %d: %v", id, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no durability callback for %d", id)
	}
	return id
}

func payload(i int) []byte {
	return []byte(fmt.Sprintf(`{"n":%d,"aps":{"alert":"%s"}}`, i, strings.Repeat("x", i%97)))
}

func TestAppendReplayDone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, rec := mustOpen(t, Options{Dir: dir})
	if len(rec.Records) != 0 || len(rec.Corruptions) != 0 {
		t.Fatalf("fresh dir: recovery %+v, want empty", rec)
	}
	ids := make([]uint64, 100)
	for i := range ids {
		ids[i] = appendWait(t, s, payload(i))
		if i > 0 && ids[i] <= ids[i-1] {
			t.Fatalf("ids not increasing: %d after %d", ids[i], ids[i-1])
		}
	}
	for i := 0; i < len(ids); i += 2 {
		s.Done(ids[i])
	}
	s.Done(ids[0])  // repeated: no effect
	s.Done(1 << 60) // unknown: no effect
	if st := s.Stats(); st.PendingRecords != 50 {
		t.Fatalf("PendingRecords = %d, want 50", st.PendingRecords)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Append([]byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}

	s, rec = mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if len(rec.Records) != 50 {
		t.Fatalf("replayed %d records, want 50", len(rec.Records))
	}
	for k, r := range rec.Records {
		i := 2*k + 1
		if r.ID != ids[i] || !bytes.Equal(r.Data, payload(i)) {
			t.Fatalf("record %d = {%d %q}, want {%d %q}", k, r.ID, r.Data, ids[i], payload(i))
		}
	}
	if st := s.Stats(); st.PendingRecords != 50 || st.PendingBytes != int64(50*entHeaderSize+totalLen(rec.Records)) {
		t.Fatalf("stats after reopen %+v", st)
	}
	id := appendWait(t, s, []byte("new"))
	if id <= ids[len(ids)-1] {
		t.Fatalf("id after reopen %d, want > %d", id, ids[len(ids)-1])
	}
}

func totalLen(rs []Record) int {
	n := 0
	for _, r := range rs {
		n += len(r.Data)
	}
	return n
}

func TestBound(t *testing.T) {
	dir := t.TempDir()
	rec := make([]byte, 80) // 100 bytes with framing
	s, _ := mustOpen(t, Options{Dir: dir, MaxBytes: 1000})
	defer s.Close()
	var ids []uint64
	for range 10 {
		ids = append(ids, appendWait(t, s, rec))
	}
	called := false
	if _, err := s.Append(rec, func(uint64, error) { called = true }); !errors.Is(err, ErrFull) {
		t.Fatalf("Append over MaxBytes: %v, want ErrFull", err)
	}
	if _, err := s.Append(nil, nil); !errors.Is(err, ErrFull) {
		t.Fatalf("empty Append over MaxBytes: %v, want ErrFull", err)
	}
	s.Done(ids[3])
	appendWait(t, s, rec) // room again
	if _, err := s.Append(make([]byte, 1000), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("record above MaxBytes: %v, want ErrTooLarge", err)
	}
	if called {
		t.Fatal("durability callback of a refused record was called")
	}
	if st := s.Stats(); st.PendingBytes != 1000 || st.PendingRecords != 10 {
		t.Fatalf("stats %+v, want 10 records, 1000 bytes", st)
	}
	s2, _ := mustOpen(t, Options{Dir: t.TempDir(), MaxBytes: 4 * MaxRecordBytes})
	defer s2.Close()
	if _, err := s2.Append(make([]byte, MaxRecordBytes+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("record above MaxRecordBytes: %v, want ErrTooLarge", err)
	}
	appendWait(t, s2, make([]byte, MaxRecordBytes))
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diskUse(t *testing.T, dir string) int64 {
	var n int64
	for _, p := range segFiles(t, dir) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // reclaimed since the Glob
		}
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestReclaim churns many times MaxBytes through the spool while a few
// records stay pending forever: disk use must stay bounded, the stuck records
// must be copied forward (not pin their segments), and survive a reopen.
func TestReclaim(t *testing.T) {
	dir := t.TempDir()
	const maxBytes, segBytes = 64 << 10, 8 << 10
	s, _ := mustOpen(t, Options{Dir: dir, MaxBytes: maxBytes, SegmentBytes: segBytes})
	stuck := map[uint64][]byte{}
	var maxDisk int64
	data := make([]byte, 200)
	const rounds = 4000 // ~900 KiB through, 14x MaxBytes
	for i := range rounds {
		copy(data, payload(i))
		id := appendWait(t, s, data)
		if i%500 == 7 {
			stuck[id] = bytes.Clone(data)
		} else {
			s.Done(id)
		}
		if d := diskUse(t, dir); i%50 == 0 && d > maxDisk {
			maxDisk = d
		}
	}
	st := s.Stats()
	if st.Reclaimed == 0 || st.Copied == 0 {
		t.Fatalf("nothing reclaimed or copied: %+v", st)
	}
	if limit := int64(2*maxBytes + 3*segBytes); maxDisk > limit || st.DiskBytes > limit {
		t.Fatalf("disk use %d (max seen %d), want <= %d", st.DiskBytes, maxDisk, limit)
	}
	if n := len(segFiles(t, dir)); n > 6 {
		t.Fatalf("%d segment files, want few", n)
	}
	t.Logf("after %d records: %+v, max disk seen %d", rounds, st, maxDisk)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Done is asynchronous: the commit goroutine may still be rolling or
	// deleting a segment until Close. Compare the files with the stats
	// once it has stopped.
	if d, sd := diskUse(t, dir), s.Stats().DiskBytes; d != sd {
		t.Fatalf("disk use %d, Stats().DiskBytes %d", d, sd)
	}
	if n, sn := len(segFiles(t, dir)), s.Stats().Segments; n != sn {
		t.Fatalf("%d segment files, stats say %d", n, sn)
	}
	s, rec := mustOpen(t, Options{Dir: dir, MaxBytes: maxBytes, SegmentBytes: segBytes})
	defer s.Close()
	if len(rec.Records) != len(stuck) || len(rec.Corruptions) != 0 {
		t.Fatalf("replayed %d records (corruptions %v), want %d", len(rec.Records), rec.Corruptions, len(stuck))
	}
	for _, r := range rec.Records {
		if !bytes.Equal(stuck[r.ID], r.Data) {
			t.Fatalf("record %d: %q, want %q", r.ID, r.Data, stuck[r.ID])
		}
	}
}

// writeRecords fills a fresh spool with n records and closes it.
func writeRecords(t *testing.T, dir string, n int) []uint64 {
	t.Helper()
	s, _ := mustOpen(t, Options{Dir: dir})
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = appendWait(t, s, payload(i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func lastSeg(t *testing.T, dir string) string {
	m := segFiles(t, dir)
	if len(m) == 0 {
		t.Fatal("no segment files")
	}
	return m[len(m)-1]
}

func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tail   func(valid []byte) []byte
		reason string
	}{
		{"partial header", func(v []byte) []byte { return v[:7] }, "partial entry header"},
		{"partial body", func(v []byte) []byte { return v[:len(v)-3] }, "partial entry (truncated body)"},
		{"bad crc", func(v []byte) []byte { v = bytes.Clone(v); v[len(v)-1] ^= 0xff; return v }, "bad entry checksum"},
		{"garbage", func([]byte) []byte { return []byte("\xa7\x01garbage garbage garbage") }, ""},
		{"zeros", func([]byte) []byte { return make([]byte, 4096) }, "zero-filled tail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ids := writeRecords(t, dir, 20)
			path := lastSeg(t, dir)
			// The last segment written holds the 20 records (Close leaves no
			// newer one): damage its end as a crash mid-write would.
			valid := appendEntry(nil, kindRecord, ids[len(ids)-1]+1, []byte("the torn one"))
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := f.Seek(0, 2)
			tail := tc.tail(valid)
			if _, err := f.Write(tail); err != nil {
				t.Fatal(err)
			}
			f.Close()

			log, lb := newLogger()
			s, rec := mustOpen(t, Options{Dir: dir, Logger: log})
			if len(rec.Records) != 20 {
				t.Fatalf("replayed %d records, want 20", len(rec.Records))
			}
			if len(rec.Corruptions) != 1 {
				t.Fatalf("corruptions %+v, want one", rec.Corruptions)
			}
			c := rec.Corruptions[0]
			if c.File != filepath.Base(path) || c.Offset != before || c.Length != int64(len(tail)) || !c.Truncated ||
				(tc.reason != "" && c.Reason != tc.reason) || rec.SkippedBytes != c.Length {
				t.Fatalf("corruption %+v (skipped %d), want %s at %d, %d bytes, truncated, reason %q",
					c, rec.SkippedBytes, filepath.Base(path), before, len(tail), tc.reason)
			}
			if !strings.Contains(lb.String(), "damaged spool data skipped") {
				t.Fatalf("no warning logged: %s", lb)
			}
			if fi, err := os.Stat(path); err != nil || fi.Size() != before {
				t.Fatalf("torn tail not cut: size %v (%v), want %d", fi.Size(), err, before)
			}
			// The spool works on, and a second reopen finds nothing to report.
			id := appendWait(t, s, []byte("after"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, rec = mustOpen(t, Options{Dir: dir})
			defer s.Close()
			if len(rec.Corruptions) != 0 || len(rec.Records) != 21 || rec.Records[20].ID != id {
				t.Fatalf("second reopen: %d records, corruptions %+v", len(rec.Records), rec.Corruptions)
			}
		})
	}
}

// TestCorruptMiddle damages one record in the middle of a segment: only that
// record is lost (and reported); the ones after it are found again.
func TestCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	ids := writeRecords(t, dir, 30)
	path := lastSeg(t, dir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	scanEntries(b, segHeaderSize, func(e entry) { offs = append(offs, e.off) })
	if len(offs) != 30 {
		t.Fatalf("%d entries in segment, want 30", len(offs))
	}
	b[offs[10]+entHeaderSize+2] ^= 0x55 // a byte of record 10's body
	b[offs[20]+7] = 0x7f                // record 20's length: 2 GiB
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, rec := mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if len(rec.Records) != 28 {
		t.Fatalf("replayed %d, want 28", len(rec.Records))
	}
	got := map[uint64]bool{}
	for _, r := range rec.Records {
		got[r.ID] = true
	}
	for i, id := range ids {
		if got[id] == (i == 10 || i == 20) {
			t.Fatalf("record %d (id %d) replayed=%v", i, id, got[id])
		}
	}
	if len(rec.Corruptions) != 2 {
		t.Fatalf("corruptions %+v, want 2", rec.Corruptions)
	}
	for k, i := range []int{10, 20} {
		c := rec.Corruptions[k]
		if c.Offset != int64(offs[i]) || c.Length != int64(offs[i+1]-offs[i]) || c.Truncated {
			t.Fatalf("corruption %d = %+v, want offset %d length %d, not truncated", k, c, offs[i], offs[i+1]-offs[i])
		}
	}
	if c := rec.Corruptions[1]; c.Reason != "bad entry length" {
		t.Fatalf("reason %q", c.Reason)
	}
}

func TestBadSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	writeRecords(t, dir, 5)
	path := lastSeg(t, dir)
	b, _ := os.ReadFile(path)
	b[3] = 'X'
	os.WriteFile(path, b, 0o600)
	// A file cut inside its header (a crash while rolling) holds nothing.
	short := filepath.Join(dir, segName(0xffff))
	os.WriteFile(short, []byte("APNS"), 0o600)
	s, rec := mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if len(rec.Records) != 5 || len(rec.Corruptions) != 2 {
		t.Fatalf("%d records, corruptions %+v; want 5 records, 2 reports", len(rec.Records), rec.Corruptions)
	}
	if _, err := os.Stat(short); !os.IsNotExist(err) {
		t.Fatalf("short segment not removed: %v", err)
	}
	if id := appendWait(t, s, []byte("x")); id <= 5 {
		t.Fatalf("new id %d reuses an old one", id)
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, Options{Dir: dir, SegmentBytes: 64 << 10})
	const workers, per = 32, 300
	var (
		mu     sync.Mutex
		lastCB uint64
		order  = true
		seen   = map[uint64]int{}
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ch := make(chan uint64, 1)
				id, err := s.Append(payload(w*per+i), func(id uint64, err error) {
					if err != nil {
						t.Errorf("callback %d: %v", id, err)
					}
					mu.Lock()
					if id <= lastCB {
						order = false
					}
					lastCB = id
					seen[id]++
					mu.Unlock()
					ch <- id
				})
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				if i%3 == 0 {
					s.Done(id) // before durability: allowed
				}
				if got := <-ch; got != id {
					t.Errorf("callback id %d, want %d", got, id)
				}
				if i%3 == 1 {
					s.Done(id)
				}
				if i%50 == 0 {
					_ = s.Stats()
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !order {
		t.Error("durability callbacks not in id order")
	}
	if len(seen) != workers*per {
		t.Fatalf("%d callbacks, want %d", len(seen), workers*per)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("callback for %d ran %d times", id, n)
		}
	}
	if st.Appends != workers*per || st.PendingRecords != workers*per/3 {
		t.Fatalf("stats %+v", st)
	}
	if st.Syncs >= st.Appends {
		t.Logf("no group commit happened: %d syncs for %d appends", st.Syncs, st.Appends)
	}
	t.Logf("%d appends in %d commits, %d syncs", st.Appends, st.Commits, st.Syncs)
	s, rec := mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if len(rec.Records) != workers*per/3 {
		t.Fatalf("replayed %d, want %d", len(rec.Records), workers*per/3)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, Options{Dir: dir})
	if _, _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	s, _ = mustOpen(t, Options{Dir: dir})
	s.Close()
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Dir: t.TempDir(), MaxBytes: 5},
		{Dir: t.TempDir(), SegmentBytes: 10},
	} {
		if _, _, err := Open(o); err == nil {
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, _, err := Open(Options{Dir: f}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Open on a file: %v", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

// TestPermissions: not parallel (umask is process-wide).
func TestPermissions(t *testing.T) {
	for _, mask := range []int{0, 0o077, 0o777} {
		t.Run(fmt.Sprintf("umask%04o", mask), func(t *testing.T) {
			old := syscall.Umask(mask)
			defer syscall.Umask(old)
			dir := filepath.Join(t.TempDir(), "a", "state")
			s, _ := mustOpen(t, Options{Dir: dir, SegmentBytes: 1024})
			for i := range 20 { // several segments
				appendWait(t, s, payload(i+100))
			}
			s.Close()
			checkMode(t, dir, 0o700)
			checkMode(t, filepath.Join(dir, "LOCK"), 0o600)
			segs := segFiles(t, dir)
			if len(segs) < 2 {
				t.Fatalf("%d segments", len(segs))
			}
			for _, p := range segs {
				checkMode(t, p, 0o600)
			}
		})
	}
	t.Run("existing open dir is tightened", func(t *testing.T) {
		for _, tc := range []struct{ have, want os.FileMode }{{0o777, 0o750}, {0o755, 0o750}, {0o700, 0o700}, {0o750, 0o750}} {
			dir := filepath.Join(t.TempDir(), "state")
			os.Mkdir(dir, 0o700)
			os.Chmod(dir, tc.have)
			log, lb := newLogger()
			s, _ := mustOpen(t, Options{Dir: dir, Logger: log})
			s.Close()
			checkMode(t, dir, tc.want)
			if warned := strings.Contains(lb.String(), "tightened"); warned != (tc.have != tc.want) {
				t.Errorf("mode %04o: warned=%v: %s", tc.have, warned, lb)
			}
		}
	})
}

// TestSyncFailure: after a failed fdatasync the batch's callbacks get the
// error, the spool refuses further records with ErrFailed, Close reports it,
// and what was durable before is replayed by the next Open.
func TestSyncFailure(t *testing.T) {
	var failing atomic.Bool
	syncHook = func(f *os.File) error {
		if failing.Load() {
			return syscall.EIO
		}
		return fdatasync(f)
	}
	defer func() { syncHook = nil }()
	dir := t.TempDir()
	log, lb := newLogger()
	s, _ := mustOpen(t, Options{Dir: dir, Logger: log})
	var ids []uint64
	for i := range 5 {
		ids = append(ids, appendWait(t, s, payload(i)))
	}
	failing.Store(true)
	ch := make(chan error, 1)
	if _, err := s.Append([]byte("doomed"), func(_ uint64, err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	err := <-ch
	if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("callback error %v, want ErrFailed wrapping EIO", err)
	}
	if _, err := s.Append([]byte("after"), nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after failure: %v, want ErrFailed", err)
	}
	s.Done(ids[0]) // ignored, must not panic or write
	if err := s.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close: %v, want ErrFailed", err)
	}
	if !strings.Contains(lb.String(), "stopped accepting") {
		t.Fatalf("failure not logged: %s", lb)
	}
	syncHook = nil
	s, rec := mustOpen(t, Options{Dir: dir})
	defer s.Close()
	if len(rec.Records) < 5 {
		t.Fatalf("replayed %d, want the 5 durable records", len(rec.Records))
	}
	for i, id := range ids {
		if rec.Records[i].ID != id {
			t.Fatalf("record %d: id %d, want %d", i, rec.Records[i].ID, id)
		}
	}
}

// TestReplayCopiesAndMarkers builds segments by hand: a record copied forward
// by compaction is replayed once (the newest copy), a done marker anywhere
// finishes its record, ids continue after the largest seen, and files that
// are not segments are left alone.
func TestReplayCopiesAndMarkers(t *testing.T) {
	dir := t.TempDir()
	seg1 := encodeSegHeader(1, 1)
	seg1 = appendEntry(seg1, kindRecord, 1, []byte("one"))
	seg1 = appendEntry(seg1, kindRecord, 2, []byte("two"))
	seg1 = appendEntry(seg1, kindRecord, 3, []byte("three"))
	seg1 = appendEntry(seg1, kindDone, 2, nil)
	seg1 = appendEntry(seg1, kindRecord, 4, []byte("four"))
	seg2 := encodeSegHeader(2, 5)
	seg2 = appendEntry(seg2, kindRecord, 1, []byte("one")) // copy of 1
	seg2 = appendEntry(seg2, kindDone, 3, nil)
	seg2 = appendEntry(seg2, kindRecord, 5, []byte("five"))
	seg3 := encodeSegHeader(3, 9) // an Open's empty segment: ids 6..8 were used and done elsewhere
	for name, b := range map[string][]byte{segName(1): seg1, segName(2): seg2, segName(3): seg3,
		"0000000000000004.SEG": []byte("x"), "000000000000000A.seg": []byte("x"), "notes.txt": []byte("x")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, rec := mustOpen(t, Options{Dir: dir})
	defer s.Close()
	var got []string
	for _, r := range rec.Records {
		got = append(got, fmt.Sprintf("%d:%s", r.ID, r.Data))
	}
	if want := "1:one 4:four 5:five"; strings.Join(got, " ") != want || len(rec.Corruptions) != 0 || rec.Segments != 3 {
		t.Fatalf("replayed %v (corruptions %v, %d segments), want %s", got, rec.Corruptions, rec.Segments, want)
	}
	if id := appendWait(t, s, []byte("x")); id != 9 {
		t.Fatalf("next id %d, want 9", id)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Fatalf("foreign file touched: %v", err)
	}
}
