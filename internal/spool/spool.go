package spool

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// MaxRecordBytes is the largest record Append accepts (a notification is at
// most 5 KiB of payload plus a few headers).
const MaxRecordBytes = 1 << 20

// Defaults for Options.
const (
	DefaultMaxBytes     = 64 << 20
	DefaultSegmentBytes = 4 << 20
)

// Errors returned by the spool. Callers branch on them with errors.Is.
var (
	// ErrFull: accepting the record would take the bytes of not-done records
	// over Options.MaxBytes. Nothing was written; the daemon answers queue_full.
	ErrFull = errors.New("spool: full")
	// ErrTooLarge: the record is larger than MaxRecordBytes or Options.MaxBytes.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrClosed: Close has been called.
	ErrClosed = errors.New("spool: closed")
	// ErrFailed wraps the write or fsync error after which the spool stopped
	// accepting records (after a failed fsync the kernel may have dropped the
	// data, so retrying on the same file cannot be trusted). Reopen to recover.
	ErrFailed = errors.New("spool: failed")
	// ErrLocked: another process (or another Spool) holds the state directory.
	ErrLocked = errors.New("spool: state directory in use")
)

// Options configure Open. Only Dir is required.
type Options struct {
	// Dir is the state directory (the daemon's state_dir, /var/lib/apnsd under
	// systemd; the spool keeps its files directly in it). It is created 0700
	// if missing; an existing one that is group-writable or open to others is
	// tightened to at most 0750.
	Dir string
	// MaxBytes bounds the bytes of records not yet Done, counting 20 bytes of
	// framing per record. Append beyond it fails with ErrFull. Disk use stays
	// below about 2*MaxBytes + 3*SegmentBytes. Default DefaultMaxBytes.
	MaxBytes int64
	// SegmentBytes is the size at which the active segment file is sealed and a
	// new one started. Default DefaultSegmentBytes.
	SegmentBytes int64
	// Logger receives recovery reports and failures. Default: discard.
	Logger *slog.Logger
}

// Record is a record not yet Done, as returned by Open for replay.
type Record struct {
	ID   uint64
	Data []byte // owned by the caller
}

// Corruption describes one damaged byte range found by Open.
type Corruption struct {
	File   string // segment file name (no directory)
	Offset int64  // first damaged byte
	Length int64  // damaged bytes skipped
	Reason string // e.g. "bad entry checksum", "partial entry (truncated body)"
	// Truncated is true when the range was a torn tail, cut off the file.
	// Otherwise valid entries followed it and were kept.
	Truncated bool
}

// Recovery is what Open found in the state directory.
type Recovery struct {
	// Records are the records not Done, in Append (id) order.
	Records []Record
	// Segments is the number of segment files read.
	Segments int
	// Corruptions lists every damaged range, in file order; each is also
	// logged at Warn.
	Corruptions []Corruption
	// SkippedBytes is the sum of the Corruptions' lengths.
	SkippedBytes int64
}

// Stats is a snapshot of the spool's counters.
type Stats struct {
	PendingRecords int    // records appended and not Done
	PendingBytes   int64  // their bytes, including framing (bounded by MaxBytes)
	DiskBytes      int64  // bytes in segment files
	Segments       int    // segment files, including the active one
	Appends        uint64 // records accepted since Open
	Dones          uint64 // Done calls that finished a record
	Commits        uint64 // batches written
	Syncs          uint64 // fdatasync calls on segment files
	BytesWritten   uint64 // bytes written to segment files
	Reclaimed      uint64 // segment files deleted since Open
	Copied         uint64 // live records copied forward by compaction
}

// Spool is a durable, bounded queue of opaque records. All methods are safe
// for concurrent use. Append and Done never wait for the disk: one commit
// goroutine writes every record and done marker that arrived since its last
// write with one write and one fdatasync (group commit), then signals each
// record's durability through its callback.
type Spool struct {
	dir      string
	maxBytes int64
	segBytes int64
	log      *slog.Logger
	lock     *os.File

	// mu guards the fields that follow, and the accounting fields of every
	// segment and batch. The commit goroutine never holds it during I/O or
	// while running callbacks.
	mu           sync.Mutex
	wake         *sync.Cond // signalled when buf gains entries or on Close
	idle         bool       // the commit goroutine waits on wake
	buf          []byte     // entries of the batch being filled
	cbs          []callback // durability callbacks of buf's records, in order
	cur          *batch     // accounting of buf's records
	needSync     bool       // buf holds records (not only done markers)
	live         map[uint64]liveRec
	pendingBytes int64
	diskBytes    int64
	nextID       uint64
	segs         []*segment // oldest first; the last one is active
	closing      bool
	err          error // sticky: wraps ErrFailed
	appends      uint64
	dones        uint64
	reclaimed    uint64
	copied       uint64

	// Owned by the commit goroutine.
	active    *os.File
	spareBuf  []byte
	spareCBs  []callback
	commitSeq uint64 // batches committed
	syncedSeq uint64 // commits made durable by an fdatasync
	unsynced  bool   // data written to active without fdatasync
	nextSeq   uint64 // sequence number of the next segment
	closed    chan struct{}

	commits, syncs, written atomic.Uint64
}

type callback struct {
	id uint64
	fn func(id uint64, err error)
}

// liveRec locates a record not yet Done.
type liveRec struct {
	size uint32
	b    *batch
}

// batch accounts for the records of one commit before its segment is known.
type batch struct {
	seg   *segment // set when the batch is handed to the commit goroutine
	bytes int64
	count int
}

type segment struct {
	seq       uint64
	name      string
	size      int64
	liveBytes int64
	liveCount int
	// drainAt > 0: live records were copied forward in commit drainAt; the
	// file is deleted once that commit is durable.
	drainAt uint64
}

// syncHook, when set (by tests, before Open), replaces fdatasync for batch
// commits.
var syncHook func(*os.File) error

func segName(seq uint64) string { return fmt.Sprintf("%016x.seg", seq) }

// Open opens (creating if needed) the spool in opts.Dir, recovers it and
// starts its commit goroutine. The returned Recovery lists the records to
// replay. Damaged data is skipped and reported, never fatal; Open fails only
// on bad options, I/O errors, or a directory locked by another process.
func Open(opts Options) (*Spool, *Recovery, error) {
	if opts.Dir == "" {
		return nil, nil, errors.New("spool: Options.Dir is empty")
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.SegmentBytes == 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	if opts.MaxBytes < entHeaderSize+1 || opts.SegmentBytes < segHeaderSize+entHeaderSize {
		return nil, nil, fmt.Errorf("spool: MaxBytes %d or SegmentBytes %d too small", opts.MaxBytes, opts.SegmentBytes)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "spool")
	if err := prepareDir(opts.Dir, log); err != nil {
		return nil, nil, err
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, nil, err
	}
	s := &Spool{
		dir:      opts.Dir,
		maxBytes: opts.MaxBytes,
		segBytes: opts.SegmentBytes,
		log:      log,
		lock:     lock,
		live:     make(map[uint64]liveRec),
		cur:      &batch{},
		nextID:   1,
		closed:   make(chan struct{}),
	}
	s.wake = sync.NewCond(&s.mu)
	rec, err := s.recover()
	if err == nil {
		err = s.roll()
	}
	if err != nil {
		s.closeFiles()
		return nil, nil, err
	}
	s.reclaim()
	go s.run()
	return s, rec, nil
}

// prepareDir creates dir 0700, or tightens an existing one to at most 0750.
func prepareDir(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("spool: creating state directory: %w", err)
		}
		// MkdirAll's mode is filtered by the umask; set it exactly.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("spool: setting mode of state directory: %w", err)
		}
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool: state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("spool: state directory %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o027 != 0 {
		want := perm &^ 0o027
		if err := os.Chmod(dir, want); err != nil {
			return fmt.Errorf("spool: state directory %s has mode %04o (want 0700 or 0750) and chmod failed: %w", dir, perm, err)
		}
		log.Warn("state directory was group-writable or open to others; tightened",
			"dir", dir, "old_mode", fmt.Sprintf("%04o", perm), "new_mode", fmt.Sprintf("%04o", want))
	}
	return nil
}

// recover reads every segment, truncates torn tails and rebuilds the
// in-memory index. It runs before the commit goroutine starts.
func (s *Spool) recover() (*Recovery, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("spool: reading state directory: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		name := e.Name()
		hex, ok := strings.CutSuffix(name, ".seg")
		if !ok || len(hex) != 16 || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || segName(seq) != name {
			continue // not ours
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)

	type found struct {
		b    *batch
		data []byte
	}
	rec := &Recovery{}
	records := make(map[uint64]found)
	done := make(map[uint64]struct{})
	var maxID, maxSeq uint64
	report := func(name string, r badRegion, truncated bool) {
		c := Corruption{File: name, Offset: int64(r.off), Length: int64(r.n), Reason: r.reason, Truncated: truncated}
		rec.Corruptions = append(rec.Corruptions, c)
		rec.SkippedBytes += c.Length
		s.log.Warn("damaged spool data skipped", "file", filepath.Join(s.dir, name),
			"offset", c.Offset, "bytes", c.Length, "reason", c.Reason, "truncated", truncated)
	}
	for _, seq := range seqs {
		name := segName(seq)
		path := filepath.Join(s.dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("spool: reading segment: %w", err)
		}
		rec.Segments++
		maxSeq = max(maxSeq, seq)
		if len(data) < segHeaderSize {
			// Created but its header never fully written (a crash during a
			// roll): it holds nothing.
			if len(data) > 0 {
				report(name, badRegion{0, len(data), "partial segment header"}, true)
			}
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("spool: removing empty segment: %w", err)
			}
			continue
		}
		hseq, baseID, reason := decodeSegHeader(data)
		if reason == "" && hseq != seq {
			reason = fmt.Sprintf("segment header names sequence %d", hseq)
		}
		if reason != "" {
			// Keep going: entries are self-checking, and the resync finds them.
			report(name, badRegion{0, min(len(data), segHeaderSize), reason}, false)
		} else if baseID > 0 {
			maxID = max(maxID, baseID-1)
		}
		seg := &segment{seq: seq, name: name, size: int64(len(data))}
		b := &batch{seg: seg}
		bad := scanEntries(data, min(len(data), segHeaderSize), func(e entry) {
			maxID = max(maxID, e.id)
			switch e.kind {
			case kindRecord:
				// A later copy (compaction) supersedes an earlier one.
				records[e.id] = found{b, e.body}
			case kindDone:
				done[e.id] = struct{}{}
			}
		})
		for i, r := range bad {
			tail := i == len(bad)-1 && r.off+r.n == len(data) && r.off >= segHeaderSize
			report(name, r, tail)
			if tail {
				if err := truncateFile(path, int64(r.off)); err != nil {
					return nil, err
				}
				seg.size = int64(r.off)
			}
		}
		s.segs = append(s.segs, seg)
		s.diskBytes += seg.size
	}
	for id, f := range records {
		if _, ok := done[id]; ok {
			continue
		}
		size := int64(entHeaderSize + len(f.data))
		s.live[id] = liveRec{size: uint32(size), b: f.b}
		f.b.seg.liveBytes += size
		f.b.seg.liveCount++
		s.pendingBytes += size
		rec.Records = append(rec.Records, Record{ID: id, Data: f.data})
	}
	slices.SortFunc(rec.Records, func(a, b Record) int { return cmp.Compare(a.ID, b.ID) })
	s.nextID = maxID + 1
	s.nextSeq = maxSeq + 1
	if len(rec.Records) > 0 || len(rec.Corruptions) > 0 {
		s.log.Info("spool recovered", "dir", s.dir, "records", len(rec.Records),
			"bytes", s.pendingBytes, "segments", rec.Segments,
			"damaged_ranges", len(rec.Corruptions), "skipped_bytes", rec.SkippedBytes)
	}
	return rec, nil
}

// Append queues data as a new record and returns its id at once; it never
// waits for the disk. data is copied before Append returns. Once the record
// is on disk (written and fdatasync'ed, together with every record that
// arrived meanwhile), durable is called with err == nil; if the write fails
// it is called with an error wrapping ErrFailed, and the record must be
// treated as not stored. durable may be nil. Callbacks run one after another,
// in id order, on the spool's commit goroutine: they must not block (hand the
// answer to a channel or queue); they may call Append, Done and Stats, but
// not Close.
//
// Append fails at once, without calling durable, with ErrFull (the bound
// MaxBytes would be exceeded), ErrTooLarge, ErrClosed or ErrFailed.
func (s *Spool) Append(data []byte, durable func(id uint64, err error)) (uint64, error) {
	size := int64(entHeaderSize + len(data))
	if len(data) > MaxRecordBytes || size > s.maxBytes {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	s.mu.Lock()
	switch {
	case s.err != nil:
		err := s.err
		s.mu.Unlock()
		return 0, err
	case s.closing:
		s.mu.Unlock()
		return 0, ErrClosed
	case s.pendingBytes+size > s.maxBytes:
		s.mu.Unlock()
		return 0, ErrFull
	}
	id := s.nextID
	s.nextID++
	s.buf = appendEntry(s.buf, kindRecord, id, data)
	if durable != nil {
		s.cbs = append(s.cbs, callback{id, durable})
	}
	s.live[id] = liveRec{size: uint32(size), b: s.cur}
	s.cur.bytes += size
	s.cur.count++
	s.pendingBytes += size
	s.appends++
	s.needSync = true
	if s.idle {
		s.idle = false
		s.wake.Signal()
	}
	s.mu.Unlock()
	return id, nil
}

// Done marks record id finished (APNs answered it, or it was refused for
// good): it will not be replayed, and its space is reclaimed. It never waits
// for the disk; the done marker is written with the next commit, and is
// fdatasync'ed with the next batch of records (or at Close), so after a power
// loss (not after a process crash) a finished record can come back once:
// delivery is at least once. Done of an unknown or already done id, or after
// Close, does nothing. Done may be called before the record's durability
// callback has run.
func (s *Spool) Done(id uint64) {
	s.mu.Lock()
	r, ok := s.live[id]
	if !ok || s.closing || s.err != nil {
		s.mu.Unlock()
		return
	}
	delete(s.live, id)
	size := int64(r.size)
	if seg := r.b.seg; seg != nil {
		seg.liveBytes -= size
		seg.liveCount--
	} else {
		r.b.bytes -= size
		r.b.count--
	}
	s.pendingBytes -= size
	s.dones++
	s.buf = appendEntry(s.buf, kindDone, id, nil)
	if s.idle {
		s.idle = false
		s.wake.Signal()
	}
	s.mu.Unlock()
}

// Close stops accepting records, commits (and fdatasyncs) everything already
// accepted, runs the remaining durability callbacks and releases the state
// directory. Records not Done stay on disk and are replayed by the next Open:
// at the daemon's drain deadline, undelivered notifications are simply left
// in the spool. Close is idempotent; it returns the error that failed the
// spool, if any.
func (s *Spool) Close() error {
	s.mu.Lock()
	first := !s.closing
	s.closing = true
	s.idle = false
	s.wake.Signal()
	s.mu.Unlock()
	<-s.closed
	if first {
		s.closeFiles()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stats returns a snapshot of the counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		PendingRecords: len(s.live),
		PendingBytes:   s.pendingBytes,
		DiskBytes:      s.diskBytes,
		Segments:       len(s.segs),
		Appends:        s.appends,
		Dones:          s.dones,
		Commits:        s.commits.Load(),
		Syncs:          s.syncs.Load(),
		BytesWritten:   s.written.Load(),
		Reclaimed:      s.reclaimed,
		Copied:         s.copied,
	}
}

func (s *Spool) closeFiles() {
	if s.active != nil {
		if s.unsynced {
			if err := fdatasync(s.active); err != nil {
				s.log.Error("spool: final fdatasync failed", "err", err)
			}
			s.syncs.Add(1)
			s.unsynced = false
		}
		s.active.Close()
		s.active = nil
	}
	if s.lock != nil {
		unlockDir(s.lock)
		s.lock = nil
	}
}

// run is the commit goroutine: it swaps out the batch being filled, writes it
// with one write, fdatasyncs it if it holds records, runs the callbacks, and
// then rolls and reclaims segments.
func (s *Spool) run() {
	defer close(s.closed)
	for {
		s.mu.Lock()
		for len(s.buf) == 0 && !s.closing {
			s.idle = true
			s.wake.Wait()
		}
		if len(s.buf) == 0 { // closing, nothing left
			s.mu.Unlock()
			return
		}
		buf, cbs, b, needSync := s.buf, s.cbs, s.cur, s.needSync
		s.buf, s.cbs, s.cur, s.needSync = s.spareBuf[:0], s.spareCBs[:0], &batch{}, false
		seg := s.segs[len(s.segs)-1]
		b.seg = seg
		seg.liveBytes += b.bytes
		seg.liveCount += b.count
		seg.size += int64(len(buf))
		s.diskBytes += int64(len(buf))
		failed := s.err
		s.mu.Unlock()

		var err error
		if failed != nil {
			err = failed
		} else {
			err = s.commit(buf, needSync)
		}
		if err != nil {
			s.fail(err) // before the callbacks: an Append they cause must fail
		}
		for _, c := range cbs {
			c.fn(c.id, err)
		}
		clear(cbs) // drop the closures
		if cap(buf) <= 4<<20 {
			s.spareBuf = buf[:0]
		}
		s.spareCBs = cbs[:0]
		if err != nil {
			continue
		}
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing {
			continue // leave rolling and reclaiming to the next Open
		}
		if seg.size >= s.segBytes {
			if err := s.roll(); err != nil {
				s.fail(err)
				continue
			}
		}
		s.reclaim()
	}
}

// commit writes buf to the active segment and, if sync, fdatasyncs it.
func (s *Spool) commit(buf []byte, sync bool) error {
	if _, err := s.active.Write(buf); err != nil {
		return fmt.Errorf("%w: writing segment: %w", ErrFailed, err)
	}
	s.written.Add(uint64(len(buf)))
	s.commits.Add(1)
	s.commitSeq++
	s.unsynced = true
	if sync {
		s.syncs.Add(1)
		syncf := fdatasync
		if syncHook != nil {
			syncf = syncHook
		}
		if err := syncf(s.active); err != nil {
			return fmt.Errorf("%w: fdatasync: %w", ErrFailed, err)
		}
		s.unsynced = false
		s.syncedSeq = s.commitSeq
	}
	return nil
}

// fail makes the spool refuse further records after an I/O error.
func (s *Spool) fail(err error) {
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
	}
	s.mu.Unlock()
	if first {
		s.log.Error("spool stopped accepting notifications after a disk error; "+
			"records already stored are kept and replayed at the next start", "dir", s.dir, "err", err)
	}
}

// roll seals the active segment (if any) and starts a new one. Commit
// goroutine (or Open) only.
func (s *Spool) roll() error {
	if s.active != nil && s.unsynced {
		if err := fdatasync(s.active); err != nil {
			return fmt.Errorf("%w: fdatasync: %w", ErrFailed, err)
		}
		s.syncs.Add(1)
		s.unsynced = false
		s.syncedSeq = s.commitSeq
	}
	s.mu.Lock()
	seq, baseID := s.nextSeq, s.nextID
	s.mu.Unlock()
	name := segName(seq)
	f, err := createFile(filepath.Join(s.dir, name))
	if err != nil {
		return fmt.Errorf("%w: creating segment: %w", ErrFailed, err)
	}
	hdr := encodeSegHeader(seq, baseID)
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		return fmt.Errorf("%w: writing segment header: %w", ErrFailed, err)
	}
	if err := fdatasync(f); err != nil {
		f.Close()
		return fmt.Errorf("%w: fdatasync: %w", ErrFailed, err)
	}
	s.syncs.Add(1)
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	if s.active != nil {
		s.active.Close()
	}
	s.active = f
	s.nextSeq = seq + 1
	s.mu.Lock()
	s.segs = append(s.segs, &segment{seq: seq, name: name, size: segHeaderSize})
	s.diskBytes += segHeaderSize
	s.mu.Unlock()
	return nil
}

// reclaim deletes sealed segments oldest first: a segment with no live
// record at once; one whose live records were copied forward once that copy
// is durable. It starts a copy (compaction) of the oldest sealed segment when
// that segment is mostly dead (live bytes under a quarter of its size) or
// when dead bytes overall exceed live bytes plus two segments, which bounds
// disk use. Segments are only ever deleted oldest first, so a done marker is
// never deleted while a copy of the record it finishes survives.
// Commit goroutine (or Open) only.
func (s *Spool) reclaim() {
	removed := false
	for {
		s.mu.Lock()
		if len(s.segs) < 2 {
			s.mu.Unlock()
			break
		}
		o := s.segs[0]
		var act int // 0 stop, 1 delete, 2 copy forward
		switch {
		case o.drainAt > 0:
			if o.drainAt <= s.syncedSeq {
				act = 1
			}
		case o.liveCount == 0:
			act = 1
		default:
			dead := s.diskBytes - s.pendingBytes
			if o.liveBytes*4 < o.size || dead > s.pendingBytes+2*s.segBytes {
				act = 2
			}
		}
		if act == 1 {
			s.segs = s.segs[1:]
			s.diskBytes -= o.size
			s.reclaimed++
		}
		s.mu.Unlock()
		switch act {
		case 0:
			if removed {
				s.syncDirLogged()
			}
			return
		case 1:
			if err := os.Remove(filepath.Join(s.dir, o.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Error("removing reclaimed spool segment", "file", o.name, "err", err)
			}
			removed = true
		case 2:
			if removed {
				s.syncDirLogged()
			}
			s.copyForward(o)
			return // the copies are committed by the next batch
		}
	}
	if removed {
		s.syncDirLogged()
	}
}

func (s *Spool) syncDirLogged() {
	if err := syncDir(s.dir); err != nil {
		s.log.Warn("fsync of state directory after deleting segments failed", "err", err)
	}
}

// copyForward re-appends the live records of sealed segment o to the batch
// being filled and marks o for deletion once that batch is durable.
func (s *Spool) copyForward(o *segment) {
	data, err := os.ReadFile(filepath.Join(s.dir, o.name))
	if err != nil {
		s.fail(fmt.Errorf("%w: reading segment for compaction: %w", ErrFailed, err))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	scanEntries(data, min(len(data), segHeaderSize), func(e entry) {
		if e.kind != kindRecord {
			return
		}
		r, ok := s.live[e.id]
		if !ok || r.b.seg != o {
			return
		}
		s.buf = append(s.buf, e.raw...)
		s.live[e.id] = liveRec{size: r.size, b: s.cur}
		s.cur.bytes += int64(r.size)
		s.cur.count++
		o.liveBytes -= int64(r.size)
		o.liveCount--
		s.copied++
	})
	if o.liveCount != 0 {
		// The file no longer holds records we wrote to it: count them lost.
		var lost []uint64
		for id, r := range s.live {
			if r.b.seg == o {
				lost = append(lost, id)
				delete(s.live, id)
				s.pendingBytes -= int64(r.size)
			}
		}
		s.log.Error("spool segment lost records it was given; they will not be replayed",
			"file", o.name, "records", len(lost))
		o.liveBytes, o.liveCount = 0, 0
	}
	s.needSync = true
	// The copies go out in the next commit, number commitSeq+1 (if nothing
	// is waiting at all, the commits so far cover everything).
	o.drainAt = s.commitSeq + 1
	if len(s.buf) == 0 {
		o.drainAt = max(1, s.syncedSeq)
	}
	if len(s.buf) > 0 && s.idle {
		s.idle = false
		s.wake.Signal()
	}
}
